// test/layernorm.test.ts — layer_norm forward/backward against the float64 reference (kernels/layernorm.ts).
import { expect, it } from 'vitest';
import { Tensor } from '../engine/index.js';
import { layerNorm, layerNormBackward, layerNormForward, refLayerNorm, refLayerNormGrad } from '../kernels/layernorm.js';
import type { RowVariant } from '../kernels/softmax.js';
import { checkOp, describeGpu, expectClose, sumTol, type F64, type InputSpec, type Tol } from './harness.js';

interface Case {
  shape: number[];
  variant?: RowVariant;
  eps?: number;
  range?: [number, number];
  values?: number[];
  tol?: Tol;
  gradTol?: Tol;
  gradcheck?: false;
  /** Which of x, w, b get a gradient (default all). */
  grads?: [boolean, boolean, boolean];
}

async function check(name: string, c: Case): Promise<void> {
  const D = c.shape[c.shape.length - 1]!;
  const g = c.grads ?? [true, true, true];
  const x: InputSpec = { shape: c.shape, grad: g[0], ...(c.range ? { range: c.range } : {}), ...(c.values ? { values: c.values } : {}) };
  const eps = c.eps ?? 1e-12;
  await checkOp({
    name: `layernorm ${name}`,
    inputs: [x, { shape: [D], grad: g[1] }, { shape: [D], grad: g[2] }],
    run: ([x, w, b]) => layerNorm(x!, w!, b!, { eps, ...(c.variant ? { variant: c.variant } : {}) }),
    ref: ([x, w, b]) => refLayerNorm(x!, w!, b!, eps),
    refGrad: ([x, w, b], gy) => refLayerNormGrad(x!, w!, b!, gy, eps),
    ...(c.tol ? { tol: c.tol } : {}),
    ...(c.gradTol ? { gradTol: c.gradTol } : {}),
    ...(c.gradcheck === false ? { gradcheck: false as const } : {}),
  });
}

// Rows: 1, primes, the backward's 64-row block +-1 (1 vs 2 blocks), many blocks; D: 1, primes, the models' 64,
// and D > 64 (phase 2 of the backward loops over columns).
const SHAPES: number[][] = [
  [1, 2],
  [1, 64],
  [7, 13],
  [63, 64],
  [64, 64],
  [65, 64],
  [3, 5, 64],
  [13, 257],
  [1031, 64],
  [300, 7],
  [70, 520], // 130 vec4 columns: the backward's partials loop past one workgroup of columns
];

describeGpu('layernorm', () => {
  for (const shape of SHAPES) {
    for (const variant of ['row', 'wg'] as const) {
      it(`[${shape}] ${variant}`, () => check(`[${shape}] ${variant}`, { shape, variant }));
    }
  }
  it('automatic variant, eps 1e-5', () => check('auto eps 1e-5', { shape: [129, 64], eps: 1e-5 }));

  it('large magnitudes: +-1000 and a common offset of 1000', async () => {
    for (const variant of ['row', 'wg'] as const) {
      await check(`+-1000 ${variant}`, { shape: [70, 64], range: [-1000, 1000], variant });
      // Rows around 1000 with spread 10: the shifted mean keeps the variance accurate. f32 inputs near 1000
      // carry 6e-5 absolute rounding, which the normalisation scales by rstd ~ 0.17: gradients checked at 1e-3.
      await check(`offset 1000 ${variant}`, { shape: [70, 64], range: [990, 1010], variant, gradTol: { atol: 1e-3, rtol: 1e-3 } });
    }
  });

  it('constant rows give y = b exactly and finite gradients (eps 1e-12)', async () => {
    const D = 64;
    const rows = [0.1, 1000, -3, 0, 1 / 3];
    const values: number[] = [];
    for (const v of rows) for (let c = 0; c < D; c++) values.push(Math.fround(v));
    for (let c = 0; c < D; c++) values.push(Math.sin(c)); // one ordinary row
    for (const variant of ['row', 'wg'] as const) {
      await check(`constant rows ${variant}`, {
        shape: [rows.length + 1, D],
        values,
        variant,
        // dx of a constant row is rstd * (g*w - mean(g*w)) with rstd = 1e6: values ~1e6, f32 relative error.
        gradTol: { atol: 1e-2, rtol: 1e-3 },
        // The reference's finite differences cannot see this point: a 1e-6 step makes the variance ~1e-12,
        // comparable to eps, so the function is not locally linear there. The GPU is compared to the analytic
        // reference gradient instead.
        gradcheck: false,
      });
    }
    // D = 1: every row is constant.
    await check('D=1', { shape: [5, 1], gradcheck: false });
    // And the forward output is b exactly, never NaN.
    const x = Tensor.from(Float32Array.from(values), [rows.length + 1, D]);
    const w = Tensor.from(Float32Array.from({ length: D }, (_, c) => 1 + c / 10));
    const b = Tensor.from(Float32Array.from({ length: D }, (_, c) => c - 20));
    const { y, mean, rstd } = layerNormForward(x, w, b);
    const got = await y.toArray();
    const rs = await rstd.toArray();
    const mu = await mean.toArray();
    for (let r = 0; r < rows.length; r++) {
      expect(mu[r]).toBe(Math.fround(rows[r]!));
      expect(Number.isFinite(rs[r]!)).toBe(true);
      for (let c = 0; c < D; c++) expect(got[r * D + c]).toBe(c - 20);
    }
    for (const t of [x, w, b, y, mean, rstd]) t.dispose();
  });

  it('only some gradients requested', async () => {
    await check('dx only', { shape: [130, 64], grads: [true, false, false] });
    await check('dw, db only', { shape: [130, 64], grads: [false, true, true] });
    await check('db only', { shape: [5, 13], grads: [false, false, true] });
  });

  it('the raw launchers: layerNormForward saves mean and rstd, layerNormBackward gives dx, dw and db', async () => {
    for (const [R, D] of [[67, 64], [3, 150]] as const) {
      let xs: F64[] = [];
      let dwdb: [Tensor, Tensor] | null = null;
      await checkOp({
        name: `layerNormBackward [${R}, ${D}]`,
        inputs: [{ shape: [R, D], grad: false }, { shape: [D], range: [0.5, 1.5], grad: false }, { shape: [D], grad: false }, { shape: [R, D], grad: false }],
        run: ([x, w, b, gy]) => {
          const f = layerNormForward(x!, w!, b!);
          const g = layerNormBackward(x!, w!, f.mean, f.rstd, gy!);
          for (const t of [f.y, f.mean, f.rstd]) t.dispose();
          dwdb = [g.dw!, g.db!];
          return g.dx!;
        },
        ref: (v) => {
          xs = v;
          return refLayerNormGrad(v[0]!, v[1]!, v[2]!, v[3]!)[0];
        },
      });
      const [, dw, db] = refLayerNormGrad(xs[0]!, xs[1]!, xs[2]!, xs[3]!);
      const [gw, gb] = dwdb!;
      const tol = { atol: 1e-4, rtol: Math.max(1e-3, sumTol(R).rtol) }; // sums over the R rows
      expectClose('layerNormBackward dw', await gw.toArray(), dw.data, tol);
      expectClose('layerNormBackward db', await gb.toArray(), db.data, tol);
      gw.dispose();
      gb.dispose();
    }
  });

  it('rejects mismatched weight shapes', () => {
    const x = Tensor.empty([3, 4]);
    const w = Tensor.empty([5]);
    expect(() => layerNorm(x, w, w)).toThrow(/weight .* must be \[4\]/);
    x.dispose();
    w.dispose();
  });
});
