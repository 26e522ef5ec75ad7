// Helpers for bench/*.bench.ts files: seeded host data uploaded as tensors, a validate helper with the test
// harness's tolerance rule (|got - want| <= atol + rtol·|want|, first mismatches and the max error on failure),
// sampled checks for outputs too large for a full float64 reference, and throughput arithmetic.
import { ref, Tensor, type Shape } from '../engine/index.js';

export interface Tol {
  atol: number;
  rtol: number;
}

/** Seeded uniform host data in [lo, hi), rounded to f32 (what the GPU sees). */
export function randHost(shape: Shape, seed: number, lo = -1, hi = 1): Float32Array {
  const rnd = ref.mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rnd();
  return out;
}

/** A tensor with seeded uniform values, and its host copy for references. */
export function randTensor(shape: Shape, seed: number, lo = -1, hi = 1): { host: Float32Array; t: Tensor } {
  const host = randHost(shape, seed, lo, hi);
  return { host, t: Tensor.from(host, shape) };
}

/** Throws with the first 5 mismatches and the max error unless every value is within tolerance. */
export function validateClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: Tol): void {
  if (got.length !== want.length) throw new Error(`${what}: got ${got.length} values, want ${want.length}`);
  let maxErr = 0;
  let nBad = 0;
  const bad: string[] = [];
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const err = Math.abs(g - w);
    if (Number.isNaN(err) || err > maxErr) maxErr = Number.isNaN(err) ? Infinity : err;
    if (!(err <= tol.atol + tol.rtol * Math.abs(w))) {
      nBad++;
      if (bad.length < 5) bad.push(`  [${i}] got ${g}, want ${w} (err ${err.toExponential(3)})`);
    }
  }
  if (nBad) {
    throw new Error(`${what}: ${nBad} of ${want.length} values out of tolerance (atol ${tol.atol}, rtol ${tol.rtol}); max error ${maxErr.toExponential(3)}\n${bad.join('\n')}`);
  }
}

/**
 * Check `count` seeded random positions of a large output against a float64 function of the position
 * (a full reference of, say, a 12800 x 12103 product would take minutes on the host).
 */
export function validateSampled(what: string, got: ArrayLike<number>, refAt: (i: number) => number, tol: Tol, count = 256, seed = 7): void {
  const rnd = ref.mulberry32(seed);
  const idx = got.length <= count ? [...Array(got.length).keys()] : Array.from({ length: count }, () => Math.floor(rnd() * got.length));
  validateClose(`${what} (${idx.length} sampled values)`, idx.map((i) => got[i]!), idx.map(refAt), tol);
}

/** Matmul tolerance for K-term dot products of values in [-1, 1]: f32 rounding grows ~sqrt(K)·eps. */
export function dotTol(K: number): Tol {
  return { atol: 1e-5 * Math.max(1, Math.sqrt(K)), rtol: 1e-4 };
}

export const gflops = (flops: number | undefined, ms: number): number | null => (flops === undefined ? null : flops / ms / 1e6);
export const gbps = (bytes: number | undefined, ms: number): number | null => (bytes === undefined ? null : bytes / ms / 1e6);

/** 2·batch·M·N·K. */
export const matmulFlops = (M: number, N: number, K: number, batch = 1): number => 2 * batch * M * N * K;
/** Bytes of one read of A and B and one write of C (the minimum traffic). */
export const matmulBytes = (M: number, N: number, K: number, batch = 1, sharedB = false): number =>
  4 * (batch * M * K + (sharedB ? 1 : batch) * K * N + batch * M * N);
