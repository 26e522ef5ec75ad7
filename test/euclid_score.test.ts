// euclid_score: forward, backward (du, dm, dX, dQ) against the float64 reference, the reference backward
// against finite differences, bit-identical repeated backward, and ids outside [0, V).
import { expect, it } from 'vitest';
import { backward, flags, ref, Tensor } from '../engine/index.js';
import { euclidScore, euclidScoreOp, refEuclidScore, refEuclidScoreGrad } from '../kernels/euclid_score.js';
import { checkOp, describeGpu, expectClose, upload, type F64, type Tol } from './harness.js';

interface Case {
  B: number;
  N: number;
  D: number;
  V: number;
  alpha?: number;
  range?: [number, number];
  /** Which of u, m, X, Q require grad (default all). */
  grads?: [boolean, boolean, boolean, boolean];
  /** Apply euclidScoreOp directly instead of the euclidScore wrapper. */
  viaOp?: boolean;
  tol?: Tol;
  gradTol?: Tol;
}

function run(c: Case): Promise<void> {
  const { B, N, D, V } = c;
  const alpha = c.alpha ?? 0.2;
  const g = c.grads ?? [true, true, true, true];
  const range = c.range ?? [-2, 2];
  return checkOp({
    name: `euclid_score B=${B} N=${N} D=${D} V=${V} alpha=${alpha}`,
    inputs: [
      { shape: [B, D], range, grad: g[0] },
      { shape: [B, D], range, grad: g[1] },
      { shape: [V, D], range, grad: g[2] },
      { shape: [V, D], range, grad: g[3] },
      { shape: [B, N], dtype: 'i32', range: [0, V - 1] },
    ],
    run: ([u, m, X, Q, idx]) => (c.viaOp ? euclidScoreOp.apply([u!, m!, X!, Q!, idx!], { alpha }) : euclidScore(u!, m!, X!, Q!, idx!, { alpha })),
    ref: ([u, m, X, Q, idx]) => refEuclidScore(u!, m!, X!, Q!, idx!, alpha),
    refGrad: ([u, m, X, Q, idx], gy) => [...refEuclidScoreGrad(u!, m!, X!, Q!, idx!, alpha, gy), null],
    ...(c.tol ? { tol: c.tol } : {}),
    ...(c.gradTol ? { gradTol: c.gradTol } : {}),
  });
}

describeGpu('euclid_score', () => {
  it('size 1 (B=N=D=V=1)', () => run({ B: 1, N: 1, D: 1, V: 1 }));
  it('AttRec training shape, primes (B=7, N=3, D=150, V=13)', () => run({ B: 7, N: 3, D: 150, V: 13 }));
  it('workgroup +-1 (B*N = 63, 64, 65; B*D and V*D around 64)', async () => {
    await run({ B: 63, N: 1, D: 1, V: 65 });
    await run({ B: 1, N: 64, D: 64, V: 1 });
    await run({ B: 13, N: 5, D: 5, V: 13 });
  });
  it('N = 100, prime B and V (B=13, N=100, D=31, V=257)', () => run({ B: 13, N: 100, D: 31, V: 257 }));
  it('every pair hits one of two rows (long scatter segments: V=2, B=31, N=13; V=1, B=257, N=7)', async () => {
    await run({ B: 31, N: 13, D: 7, V: 2 });
    await run({ B: 257, N: 7, D: 3, V: 1 });
  });
  it('euclidScoreOp (the autograd op under euclidScore), alpha 0.3', () => run({ B: 5, N: 4, D: 12, V: 9, alpha: 0.3, viaOp: true }));
  it('alpha = 0 and alpha = 1 (one term only)', async () => {
    await run({ B: 5, N: 3, D: 11, V: 7, alpha: 0 });
    await run({ B: 5, N: 3, D: 11, V: 7, alpha: 1 });
  });
  it('gradient subsets (only X; only u and m; only m and Q) at each vector width (D = 17, 18, 20)', async () => {
    for (const D of [17, 18, 20]) {
      await run({ B: 11, N: 3, D, V: 23, grads: [false, false, true, false] });
      await run({ B: 11, N: 3, D, V: 23, grads: [true, true, false, false] });
      await run({ B: 11, N: 3, D, V: 23, grads: [false, true, false, true] });
    }
  });
  it('magnitudes +-1000 (B=17, N=3, D=150, V=31)', () =>
    run({
      B: 17,
      N: 3,
      D: 150,
      V: 31,
      range: [-1000, 1000],
      // Distances reach ~1e8 and gradients ~1e4: f32 keeps ~7 digits, so the absolute floor scales with them.
      tol: { atol: 1e-1, rtol: 1e-5 },
      gradTol: { atol: 5e-2, rtol: 1e-4 },
    }));

  it('backward is bit-identical run to run (many pairs per row)', async () => {
    const rnd = ref.mulberry32(5);
    const B = 97;
    const N = 7;
    const D = 9;
    const V = 3;
    const f = (n: number, s = 1): Float32Array => Float32Array.from({ length: n }, () => s * (rnd() * 2 - 1));
    const u = Tensor.from(f(B * D), [B, D]).requireGrad();
    const m = Tensor.from(f(B * D), [B, D]).requireGrad();
    const X = Tensor.from(f(V * D), [V, D]).requireGrad();
    const Q = Tensor.from(f(V * D), [V, D]).requireGrad();
    const idx = Tensor.from(Int32Array.from({ length: B * N }, () => Math.floor(rnd() * V)), [B, N]);
    const gy = f(B * N, 1000);
    const grads: Float32Array[][] = [];
    for (let r = 0; r < 3; r++) {
      const y = euclidScore(u, m, X, Q, idx);
      backward(y, Tensor.from(gy, [B, N]));
      y.dispose();
      const gs: Float32Array[] = [];
      for (const t of [u, m, X, Q]) {
        gs.push((await t.grad!.toArray()) as Float32Array);
        t.grad!.dispose();
        t.grad = null;
      }
      grads.push(gs);
    }
    for (let r = 1; r < 3; r++) for (let k = 0; k < 4; k++) expect(Buffer.from(grads[r]![k]!.buffer).equals(Buffer.from(grads[0]![k]!.buffer))).toBe(true);
    for (const t of [u, m, X, Q, idx]) t.dispose();
  });

  it('ids outside [0, V): NaN score and NaN du/dm for that user, no contribution to dX/dQ', async () => {
    const B = 3;
    const N = 2;
    const D = 4;
    const V = 5;
    const rnd = ref.mulberry32(9);
    const mk = (shape: number[]): F64 => ({ data: Float64Array.from({ length: shape[0]! * shape[1]! }, () => Math.fround(rnd() * 2 - 1)), shape });
    const xs = [mk([B, D]), mk([B, D]), mk([V, D]), mk([V, D])];
    const idxF: F64 = { data: Float64Array.from([0, 4, -1, 2, 5, 3]), shape: [B, N] };
    const gyF: F64 = { data: Float64Array.from([1, -2, 0.5, 3, -1, 2]), shape: [B, N] };
    const ts = xs.map((x) => upload(x).requireGrad());
    const idx = upload(idxF, 'i32');
    // With the engine's GPU range check on (default), the readback names the op, the id and its position.
    const checked = euclidScore(ts[0]!, ts[1]!, ts[2]!, ts[3]!, idx);
    await expect(checked.toArray()).rejects.toThrow(/euclidScore: candidate id -1 at position 2 is outside \[0, 5\)/);
    checked.dispose();
    const prevCheck = flags.checkIds;
    flags.checkIds = false; // the kernel's own semantics below
    const y = euclidScore(ts[0]!, ts[1]!, ts[2]!, ts[3]!, idx);
    flags.checkIds = prevCheck;
    const want = refEuclidScore(xs[0]!, xs[1]!, xs[2]!, xs[3]!, idxF, 0.2);
    expectClose('forward', await y.toArray(), want.data, { atol: 1e-5, rtol: 1e-4 });
    expect(Number.isNaN((await y.toArray())[2]!)).toBe(true);
    backward(y, upload(gyF));
    const wantG = refEuclidScoreGrad(xs[0]!, xs[1]!, xs[2]!, xs[3]!, idxF, 0.2, gyF);
    for (let k = 0; k < 4; k++) expectClose(`grad[${k}]`, await ts[k]!.grad!.toArray(), wantG[k]!.data, { atol: 1e-4, rtol: 1e-3 });
    for (const t of [...ts, idx]) {
      t.grad?.dispose();
      t.dispose();
    }
  });
});
