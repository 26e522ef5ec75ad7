// test/softmax.test.ts — softmax / log_softmax (last axis) forward and backward against the float64 reference.
import { expect, it } from 'vitest';
import { Tensor } from '../engine/index.js';
import { logSoftmax, refSoftmax, refSoftmaxGrad, rowConfig, softmax, softmaxBackward, softmaxForward, type RowVariant } from '../kernels/softmax.js';
import { checkOp, describeGpu, type InputSpec, type Tol } from './harness.js';

interface Case {
  shape: number[];
  variant?: RowVariant;
  wg?: number;
  range?: [number, number];
  values?: number[];
  tol?: Tol;
  gradTol?: Tol;
  gradcheck?: { eps: number };
}

async function check(log: boolean, name: string, c: Case): Promise<void> {
  const x: InputSpec = { shape: c.shape, ...(c.range ? { range: c.range } : {}), ...(c.values ? { values: c.values } : {}) };
  const o = { ...(c.variant ? { variant: c.variant } : {}), ...(c.wg ? { wg: c.wg } : {}) };
  await checkOp({
    name: `${log ? 'log_softmax' : 'softmax'} ${name}`,
    inputs: [x],
    run: ([x]) => (log ? logSoftmax(x!, o) : softmax(x!, o)),
    ref: ([x]) => refSoftmax(x!, log),
    refGrad: ([x], gy) => [refSoftmaxGrad(x!, gy, log)],
    ...(c.tol ? { tol: c.tol } : {}),
    ...(c.gradTol ? { gradTol: c.gradTol } : {}),
    ...(c.gradcheck ? { gradcheck: c.gradcheck } : {}),
  });
}

// Row lengths 1, 7, 63/64/65 (workgroup +-1), 1000, 12103 (the item count of the full-softmax case).
const SHAPES: number[][] = [[1, 1], [5, 1], [3, 7], [2, 63], [2, 64], [3, 65], [2, 3, 5], [4, 1000], [2, 12103], [300, 50]];
const CONFIGS: Array<{ variant: RowVariant; wg?: number }> = [{ variant: 'row' }, { variant: 'wg', wg: 16 }, { variant: 'wg', wg: 64 }];

describeGpu('softmax', () => {
  for (const log of [false, true]) {
    const op = log ? 'log_softmax' : 'softmax';
    for (const shape of SHAPES) {
      it(`${op} [${shape}]`, async () => {
        for (const cfg of CONFIGS) await check(log, `[${shape}] ${cfg.variant}${cfg.wg ?? ''}`, { shape, ...cfg });
        await check(log, `[${shape}] auto`, { shape });
      });
    }

    it(`${op} inputs of +-1000 (no overflow)`, async () => {
      for (const cfg of CONFIGS) {
        await check(log, `+-1000 ${cfg.variant}`, {
          shape: [9, 65],
          range: [-1000, 1000],
          ...cfg,
          // log-softmax values reach -2000; x - max is exact-ish in f32 but carries ~1e-4 absolute rounding.
          ...(log ? { tol: { atol: 3e-4, rtol: 1e-4 } } : {}),
        });
      }
    });

    it(`${op} rows with -1e8 / -10000 mask fills, and a fully filled row`, async () => {
      const C = 13;
      const values: number[] = [];
      // row 0: last 5 slots -1e8; row 1: first 4 slots -10000; row 2: all -1e8 (uniform, as PyTorch);
      // row 3: all -10000; row 4: one real value among -1e8 fills.
      for (let c = 0; c < C; c++) values.push(c < 8 ? Math.sin(c) : -1e8);
      for (let c = 0; c < C; c++) values.push(c < 4 ? -10000 : Math.cos(c));
      for (let c = 0; c < C; c++) values.push(-1e8);
      for (let c = 0; c < C; c++) values.push(-10000);
      for (let c = 0; c < C; c++) values.push(c === 6 ? 0.5 : -1e8);
      for (const cfg of CONFIGS) {
        await check(log, `mask fills ${cfg.variant}`, {
          shape: [5, C],
          values,
          ...cfg,
          // Finite differences of the float64 reference: a 1e-6 step on an input of -1e8 is resolved only to
          // ~1.5e-8 (the f64 ulp there), a 1.5% error; a 1e-3 step is exact enough (curvature error ~1e-6).
          gradcheck: { eps: 1e-3 },
        });
      }
    });
  }

  it('a fully -1e8 row is exactly uniform; softmax rows sum to 1; log_softmax is finite at +-1000', async () => {
    const C = 1000;
    const x = Tensor.from(Float32Array.from({ length: 3 * C }, (_, i) => (i < C ? -1e8 : i < 2 * C ? (i % 2 ? 1000 : -1000) : Math.sin(i) * 50)), [3, C]);
    for (const variant of ['row', 'wg'] as const) {
      const y = await softmax(x, { variant }).toArray();
      for (let c = 0; c < C; c++) expect(y[c]).toBeCloseTo(1 / C, 9);
      for (let r = 0; r < 3; r++) {
        let s = 0;
        for (let c = 0; c < C; c++) s += y[r * C + c]!;
        expect(Math.abs(s - 1)).toBeLessThan(1e-5);
      }
      const ly = await logSoftmax(x, { variant }).toArray();
      expect(ly.every((v) => Number.isFinite(v))).toBe(true);
    }
    x.dispose();
  });

  it('the raw launchers: softmaxForward, and softmaxBackward from the output y and gy (both forms, both variants)', async () => {
    for (const log of [false, true]) {
      for (const variant of ['row', 'wg'] as const) {
        await checkOp({
          name: `${log ? 'log_' : ''}softmaxForward [7, 65] ${variant}`,
          inputs: [{ shape: [7, 65], grad: false }],
          run: ([x]) => softmaxForward(x!, log, { variant }),
          ref: ([x]) => refSoftmax(x!, log),
        });
        await checkOp({
          name: `${log ? 'log_' : ''}softmaxBackward [7, 65] ${variant}`,
          inputs: [{ shape: [7, 65], grad: false }, { shape: [7, 65], grad: false }],
          run: ([x, gy]) => {
            const y = softmaxForward(x!, log, { variant });
            const dx = softmaxBackward(y, gy!, log, { variant });
            y.dispose();
            return dx;
          },
          ref: ([x, gy]) => refSoftmaxGrad(x!, gy!, log),
        });
      }
    }
  });

  it('picks a variant per adapter and shape', () => {
    const long = rowConfig(4, 12103);
    expect(long.variant).toBe('wg');
    const many = rowConfig(25600, 50);
    expect(many.variant).toBe('row');
  });

  it('rejects a scalar and non-f32 input', () => {
    const s = Tensor.from(new Float32Array([1]), []);
    expect(() => softmax(s)).toThrow(/at least one dimension/);
    const i = Tensor.from(new Int32Array([1, 2]), [2]);
    expect(() => logSoftmax(i)).toThrow(/not f32/);
    s.dispose();
    i.dispose();
  });
});
