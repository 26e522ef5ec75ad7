// The optimizer update kernels (kernels/optim.ts) against their float64 references: fresh random parameters,
// gradients and state per case (seeded from the test's name), odd sizes (1, primes, the workgroup size 256 +- 1 and
// its vec4 span 1024 +- 1), large magnitudes, several steps (Adam's bias corrections, SGD's first momentum step),
// the scalar and the vec4 kernels; and multi-parameter launches whose state arenas are poisoned (NaN) around each
// parameter's region, so every element of a region must be updated and nothing outside it written.
// (test/optim.test.ts covers the optimizer classes: grouping, skipping, state dicts.)
import { expect, it } from 'vitest';
import { ref, sync, Tensor, type Bindable } from '../engine/index.js';
import {
  adagradUniforms,
  adagradUpdate,
  adamCoef,
  adamUniforms,
  adamUpdate,
  OPTIM_RULES,
  optimUpdate,
  refAdagrad,
  refAdam,
  refSgd,
  sgdCoef,
  sgdUniforms,
  sgdUpdate,
  vec4View,
  type AdagradHyper,
  type AdamHyper,
  type SgdHyper,
} from '../kernels/optim.js';
import { caseSeed, describeGpu, expectClose, FWD_TOL, ODD_SIZES, type Tol } from './harness.js';

const SIZES = [...ODD_SIZES, 1023, 1024, 1025];
const STEPS = 3;

/** Random f32 values in [-r, r] (or [0, r] for nonnegative state), as float64. */
function draw(rnd: () => number, n: number, r: number, nonneg = false): Float64Array {
  return Float64Array.from({ length: n }, () => Math.fround(nonneg ? rnd() * r : (rnd() * 2 - 1) * r));
}

const upload = (x: Float64Array): Tensor => Tensor.from(Float32Array.from(x), [x.length]); // [n]

interface Case {
  n: number;
  /** Magnitude of the parameters and gradients. */
  scale: number;
  vec4: boolean;
}

/** Tolerance of a few f32 steps; large magnitudes are compared relative to the values. */
const tolFor = (scale: number): Tol => (scale > 1 ? { atol: 1e-5 * scale, rtol: 1e-4 } : FWD_TOL);

async function adamCase(c: Case): Promise<void> {
  const rnd = ref.mulberry32(caseSeed(`adam n${c.n} s${c.scale} v${c.vec4}`));
  const h: AdamHyper = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
  const p = draw(rnd, c.n, c.scale);
  const m = draw(rnd, c.n, 0.1 * c.scale);
  const v = draw(rnd, c.n, 0.01 * c.scale * c.scale, true);
  const [pt, mt, vt] = [upload(p), upload(m), upload(v)];
  for (let t = 1; t <= STEPS; t++) {
    const g = draw(rnd, c.n, c.scale);
    const gt = upload(g);
    adamUpdate(pt, gt, mt, vt, t, h, { vec4: c.vec4 });
    refAdam(p, g, m, v, t, h);
    gt.dispose();
  }
  const what = `adam n=${c.n} scale=${c.scale}${c.vec4 ? ' vec4' : ''}`;
  expectClose(`${what} p`, await pt.toArray(), p, tolFor(c.scale));
  expectClose(`${what} exp_avg`, await mt.toArray(), m, tolFor(c.scale));
  expectClose(`${what} exp_avg_sq`, await vt.toArray(), v, tolFor(c.scale * c.scale));
  for (const x of [pt, mt, vt]) x.dispose();
}

async function adagradCase(c: Case): Promise<void> {
  const rnd = ref.mulberry32(caseSeed(`adagrad n${c.n} s${c.scale} v${c.vec4}`));
  const h: AdagradHyper = { lr: 0.05, eps: 1e-10, weightDecay: 0.001 };
  const p = draw(rnd, c.n, c.scale);
  const acc = Float64Array.from(draw(rnd, c.n, c.scale * c.scale, true), (x) => x + 0.05); // TF's initial value > 0
  const [pt, at] = [upload(p), upload(acc)];
  for (let t = 1; t <= STEPS; t++) {
    const g = draw(rnd, c.n, c.scale);
    const gt = upload(g);
    adagradUpdate(pt, gt, at, h, { vec4: c.vec4 });
    refAdagrad(p, g, acc, h);
    gt.dispose();
  }
  const what = `adagrad n=${c.n} scale=${c.scale}${c.vec4 ? ' vec4' : ''}`;
  expectClose(`${what} p`, await pt.toArray(), p, tolFor(c.scale));
  expectClose(`${what} accumulator`, await at.toArray(), acc, tolFor(c.scale * c.scale));
  for (const x of [pt, at]) x.dispose();
}

async function sgdCase(c: Case, momentum: number, nesterov: boolean): Promise<void> {
  const rnd = ref.mulberry32(caseSeed(`sgd n${c.n} s${c.scale} v${c.vec4} m${momentum} ${nesterov}`));
  const h: SgdHyper = { lr: 0.1, momentum, dampening: nesterov ? 0 : 0.1, nesterov, weightDecay: 0.01 };
  const p = draw(rnd, c.n, c.scale);
  const buf = draw(rnd, c.n, c.scale); // overwritten by the first momentum step (buf = d)
  const pt = upload(p);
  const bt = momentum !== 0 ? upload(buf) : null;
  for (let t = 1; t <= STEPS; t++) {
    const g = draw(rnd, c.n, c.scale);
    const gt = upload(g);
    sgdUpdate(pt, gt, bt, t, h, { vec4: c.vec4 });
    refSgd(p, g, buf, t, h);
    gt.dispose();
  }
  const what = `sgd momentum=${momentum}${nesterov ? ' nesterov' : ''} n=${c.n} scale=${c.scale}${c.vec4 ? ' vec4' : ''}`;
  expectClose(`${what} p`, await pt.toArray(), p, tolFor(c.scale));
  if (bt) expectClose(`${what} momentum_buffer`, await bt.toArray(), buf, tolFor(c.scale));
  pt.dispose();
  bt?.dispose();
}

describeGpu('optim', () => {
  for (const vec4 of [true, false]) {
    it(`adam, ${vec4 ? 'vec4' : 'scalar'} kernel: odd sizes, 3 steps`, async () => {
      for (const n of SIZES) await adamCase({ n, scale: 2, vec4 });
    });
    it(`adagrad, ${vec4 ? 'vec4' : 'scalar'} kernel: odd sizes, 3 steps`, async () => {
      for (const n of SIZES) await adagradCase({ n, scale: 2, vec4 });
    });
    it(`sgd (plain, momentum, nesterov), ${vec4 ? 'vec4' : 'scalar'} kernel: odd sizes, 3 steps`, async () => {
      for (const n of SIZES) {
        await sgdCase({ n, scale: 2, vec4 }, 0, false);
        await sgdCase({ n, scale: 2, vec4 }, 0.9, false);
        await sgdCase({ n, scale: 2, vec4 }, 0.9, true);
      }
    });
  }

  it('large magnitudes: parameters and gradients of +-1000 (every rule, both kernels)', async () => {
    for (const vec4 of [true, false]) {
      for (const n of [1, 257, 1025]) {
        await adamCase({ n, scale: 1000, vec4 });
        await adagradCase({ n, scale: 1000, vec4 });
        await sgdCase({ n, scale: 1000, vec4 }, 0.9, true);
      }
    }
  });

  it('a multi-parameter launch (K = 4, one slot unused) updates exactly each parameter region of the poisoned arenas', async () => {
    const sizes = [5, 1, 257, 64];
    const unused = 1;
    const h: AdamHyper = { lr: 0.02, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0 };
    for (const vec4 of [true, false]) {
      const rnd = ref.mulberry32(caseSeed(`multi ${vec4}`));
      // Arena layout: each region 4-aligned, 4 NaN guard floats before and after it.
      const offsets: number[] = [];
      let at = 4;
      for (const n of sizes) {
        offsets.push(at);
        at += Math.ceil(n / 4) * 4 + 4;
      }
      const arena = () => new Float64Array(at + 4).fill(NaN);
      const [m, v] = [arena(), arena()];
      const params = sizes.map((n) => draw(rnd, n, 2));
      const grads = sizes.map((n) => draw(rnd, n, 2));
      sizes.forEach((n, q) => {
        m.set(draw(rnd, n, 0.2), offsets[q]!);
        v.set(draw(rnd, n, 0.05, true), offsets[q]!);
      });
      const [mt, vt] = [upload(m), upload(v)];
      const pt = params.map(upload);
      const gt = grads.map(upload);
      const spare = { p: sizes.map(() => Tensor.from(new Float32Array(4).fill(7), [4])), g: Tensor.from(new Float32Array(4).fill(7), [4]) };
      const view = (t: Tensor): Bindable => (vec4 ? vec4View(t)! : t);
      const unit = vec4 ? 4 : 1;
      const t = 2;
      optimUpdate(
        OPTIM_RULES.adam,
        [mt, vt],
        sizes.map((n, q) =>
          q === unused ? null : { p: view(pt[q]!), g: view(gt[q]!), n: Math.ceil(n / unit), offset: offsets[q]! / unit, coef: adamCoef(h, t) },
        ),
        adamUniforms(h),
        vec4,
        spare,
      );
      const [mg, vg] = [await mt.toArray(), await vt.toArray()];
      for (const [q, n] of sizes.entries()) {
        const o = offsets[q]!;
        const mq = m.slice(o, o + n);
        const vq = v.slice(o, o + n);
        const pq = Float64Array.from(params[q]!);
        if (q !== unused) refAdam(pq, grads[q]!, mq, vq, t, h);
        const what = `K=4 ${vec4 ? 'vec4' : 'scalar'} slot ${q} (n=${n}${q === unused ? ', unused' : ''})`;
        expectClose(`${what} p`, await pt[q]!.toArray(), pq, FWD_TOL);
        expectClose(`${what} exp_avg`, mg.slice(o, o + n), mq, FWD_TOL);
        expectClose(`${what} exp_avg_sq`, vg.slice(o, o + n), vq, FWD_TOL);
      }
      // Guards: everything outside the regions [offset, offset + ceil4(n)) is still NaN.
      const inside = new Uint8Array(at + 4);
      sizes.forEach((n, q) => inside.fill(1, offsets[q]!, offsets[q]! + Math.ceil(n / 4) * 4));
      for (const [name, got] of [['exp_avg', mg], ['exp_avg_sq', vg]] as const) {
        const written = [...got.keys()].filter((i) => !inside[i] && !Number.isNaN(got[i]!));
        expect(written, `${name}: arena cells written outside the regions`).toEqual([]);
      }
      for (const s of [...spare.p, spare.g]) expect([...(await s.toArray())]).toEqual([7, 7, 7, 7]); // the unused slot's spares
      for (const x of [mt, vt, ...pt, ...gt, ...spare.p, spare.g]) x.dispose();
    }
    await sync();
  });

  it('uniforms and coefficients: what the optimizer classes send', () => {
    const h: AdamHyper = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.5 };
    expect(adamUniforms(h)).toEqual({ beta1: 0.9, one_minus_beta1: 1 - 0.9, beta2: 0.999, one_minus_beta2: 1 - 0.999, eps: 1e-8, weight_decay: 0.5 });
    expect(adamCoef(h, 2)).toEqual([0.1 / (1 - 0.9 ** 2), Math.sqrt(1 - 0.999 ** 2), 0, 0]);
    expect(adagradUniforms({ lr: 0.05, eps: 0, weightDecay: 0 })).toEqual({ lr: 0.05, eps: 0, weight_decay: 0 });
    expect(sgdUniforms({ lr: 1, momentum: 0, dampening: 0, nesterov: false, weightDecay: 0 })).toEqual({ lr: 1, weight_decay: 0 });
    expect(sgdUniforms({ lr: 1, momentum: 0.5, dampening: 0.25, nesterov: true, weightDecay: 0 })).toMatchObject({ momentum: 0.5, one_minus_dampening: 0.75, nesterov: 1 });
    expect(sgdCoef(1)[0]).toBe(1);
    expect(sgdCoef(2)[0]).toBe(0);
    expect(() => sgdUpdate(Tensor.from(new Float32Array(1), [1]), Tensor.from(new Float32Array(1), [1]), null, 1, { lr: 1, momentum: 0.9, dampening: 0, nesterov: false, weightDecay: 0 })).toThrow(/momentum buffer/);
  });
});
