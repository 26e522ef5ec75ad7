// The shared op harness: every op's forward and backward on the GPU against its float64 reference, with
// |gpu - ref| <= atol + rtol*|ref|, the output shape, random inputs seeded from the test's name, poisoned outputs, and the reference backward
// checked by central finite differences. On failure it prints the first mismatches and the max error.
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { backward, destroyGpu, flags, initGpu, ref, sync, Tensor } from '../engine/index.js';

type F64 = ref.F64;
export type { F64 };

export interface Tol {
  atol: number;
  rtol: number;
}

export const FWD_TOL: Tol = { atol: 1e-5, rtol: 1e-4 };
export const GRAD_TOL: Tol = { atol: 1e-4, rtol: 1e-3 };

/** f32 unit roundoff. */
export const F32_U = 2 ** -24;

/**
 * Tolerance of an f32 sum of n terms of one sign (relative to the sum), derived from the reduction length: each
 * term and each addition rounds once (error <= u relative); the rounding errors of a sum behave like a random walk,
 * so the total is about u * sqrt(n) relative (Higham, "Accuracy and Stability", section 4.2), taken `k` times
 * (default 4 sigma), plus 2u for the final scale/store.
 */
export function sumTol(n: number, k = 4): Tol {
  return { atol: 0, rtol: k * F32_U * Math.sqrt(n) + 2 * F32_U };
}

/** Sizes every op sees somewhere: 1, primes, the workgroup size (64/256) +-1, and an irregular large one. */
export const ODD_SIZES = [1, 2, 3, 7, 13, 31, 63, 64, 65, 97, 255, 256, 257] as const;

export interface InputSpec {
  shape: readonly number[];
  dtype?: 'f32' | 'i32' | 'u32';
  /** Uniform range for floats (default [-2, 2]); inclusive integer range for ints (default [0, 9]). */
  range?: readonly [number, number];
  /** Explicit values (overrides the random draw). */
  values?: ArrayLike<number>;
  /** Whether the gradient of this input is checked (default: true for f32). */
  grad?: boolean;
}

export interface OpCase {
  name: string;
  inputs: InputSpec[];
  /** The GPU op under test. */
  run: (xs: Tensor[]) => Tensor;
  ref: (xs: F64[]) => F64;
  /** Reference gradients (null for inputs without one). Omit for ops without a backward. */
  refGrad?: (xs: F64[], gy: F64) => Array<F64 | null>;
  tol?: Tol;
  gradTol?: Tol;
  /** Finite-difference check of refGrad (default on; set false only with a reason in a comment). */
  gradcheck?: false | { eps?: number; atol?: number; rtol?: number };
  seed?: number;
}

/**
 * A seed from a string (FNV-1a): the harness seeds each case from the running test's full name and the case's
 * name, so `vitest -t '<test>'` alone draws the same inputs as the whole suite (no shared counter).
 */
export function seedFromName(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return (h >>> 0) % 1_000_000_007;
}

/** The seed of a case: explicit, else from the current test's name + the case name. */
export function caseSeed(caseName: string, seed?: number): number {
  if (seed !== undefined) return seed;
  const test = (expect.getState().currentTestName as string | undefined) ?? '';
  return seedFromName(`${test}\u0000${caseName}`);
}

function draw(spec: InputSpec, rnd: () => number): F64 {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  if (spec.values) {
    if (spec.values.length !== n) throw new Error(`input values: ${spec.values.length} for shape [${spec.shape.join(', ')}]`);
    for (let i = 0; i < n; i++) data[i] = spec.values[i]!;
  } else if ((spec.dtype ?? 'f32') === 'f32') {
    const [lo, hi] = spec.range ?? [-2, 2];
    for (let i = 0; i < n; i++) data[i] = Math.fround(lo + (hi - lo) * rnd());
  } else {
    const [lo, hi] = spec.range ?? [0, 9];
    for (let i = 0; i < n; i++) data[i] = lo + Math.floor((hi - lo + 1) * rnd());
  }
  return { data, shape: [...spec.shape] };
}

export function upload(x: F64, dtype: 'f32' | 'i32' | 'u32' = 'f32'): Tensor {
  const arr = dtype === 'f32' ? Float32Array.from(x.data) : dtype === 'i32' ? Int32Array.from(x.data) : Uint32Array.from(x.data);
  return Tensor.from(arr, x.shape, dtype);
}

/** Throws with the first 5 mismatches and the max error unless |got - want| <= atol + rtol*|want| everywhere. */
export function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: Tol): void {
  if (got.length !== want.length) throw new Error(`${what}: got ${got.length} values, want ${want.length}`);
  let maxErr = 0;
  let maxAt = -1;
  const bad: string[] = [];
  let nBad = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const err = Math.abs(g - w);
    const ok = Number.isNaN(w) ? Number.isNaN(g) : err <= tol.atol + tol.rtol * Math.abs(w) && !Number.isNaN(g);
    if (!(err <= maxErr) || Number.isNaN(err)) {
      maxErr = Number.isNaN(err) ? Infinity : Math.max(maxErr, err);
      maxAt = i;
    }
    if (!ok) {
      nBad++;
      if (bad.length < 5) bad.push(`  [${i}] got ${g}, want ${w} (err ${err.toExponential(3)})`);
    }
  }
  if (nBad) {
    throw new Error(
      `${what}: ${nBad} of ${want.length} values out of tolerance (atol ${tol.atol}, rtol ${tol.rtol}); ` +
        `max error ${maxErr.toExponential(3)} at [${maxAt}]\n${bad.join('\n')}`,
    );
  }
}

/** Forward, backward and reference gradcheck of one case. */
export async function checkOp(c: OpCase): Promise<void> {
  const seed = caseSeed(c.name, c.seed);
  const rnd = ref.mulberry32(seed * 7919 + 17);
  const xs = c.inputs.map((s) => draw(s, rnd));
  const tensors = c.inputs.map((s, i) => {
    const t = upload(xs[i]!, s.dtype ?? 'f32');
    if ((s.dtype ?? 'f32') === 'f32' && (s.grad ?? true) && c.refGrad) t.requireGrad();
    return t;
  });
  const prevPoison = flags.poison;
  flags.poison = true;
  try {
    const want = c.ref(xs);
    const y = c.run(tensors);
    if (y.shape.length !== want.shape.length || y.shape.some((d, i) => d !== want.shape[i])) {
      throw new Error(`${c.name} (seed ${seed}): output shape [${y.shape.join(', ')}], the reference's [${want.shape.join(', ')}]`);
    }
    const got = await y.toArray();
    expectClose(`${c.name} forward (seed ${seed})`, got, want.data, c.tol ?? FWD_TOL);
    if (!c.refGrad) {
      y.dispose();
      return;
    }
    const gy = draw({ shape: want.shape }, rnd);
    const wantG = c.refGrad(xs, gy);
    if (c.gradcheck !== false) {
      const gc = ref.gradcheck(c.ref, c.refGrad, xs, gy, {
        ...(c.gradcheck ?? {}),
        which: c.inputs.map((s, i) => ((s.dtype ?? 'f32') === 'f32' && (s.grad ?? true) ? i : -1)).filter((i) => i >= 0),
      });
      if (!gc.ok) throw new Error(`${c.name}: reference backward disagrees with finite differences (seed ${seed})\n${gc.message}`);
    }
    if (y.requiresGrad) {
      backward(y, upload(gy));
      for (const [i, s] of c.inputs.entries()) {
        if ((s.dtype ?? 'f32') !== 'f32' || !(s.grad ?? true)) continue;
        const w = wantG[i];
        if (!w) throw new Error(`${c.name}: reference gives no gradient for input ${i}`);
        const g = tensors[i]!.grad;
        if (!g) throw new Error(`${c.name}: no gradient reached input ${i}`);
        expectClose(`${c.name} grad[${i}] (seed ${seed})`, await g.toArray(), w.data, c.gradTol ?? GRAD_TOL);
      }
    } else if (c.inputs.some((s) => (s.dtype ?? 'f32') === 'f32' && (s.grad ?? true))) {
      throw new Error(`${c.name}: output does not require grad although an input does`);
    }
    y.dispose();
  } finally {
    flags.poison = prevPoison;
    for (const t of tensors) {
      t.grad?.dispose();
      t.dispose();
    }
    await sync();
  }
}

// ------------------------------------------------------------------ GPU availability
/**
 * A GPU adapter for this test file. When none is found: with REQUIRE_GPU=1 (CI) the suite fails; otherwise the
 * GPU suites are skipped with the printed reason.
 */
let gpuError: string | null = null;
try {
  await initGpu();
} catch (e) {
  gpuError = e instanceof Error ? e.message : String(e);
  if (process.env.REQUIRE_GPU === '1') throw new Error(`REQUIRE_GPU=1 but no WebGPU adapter: ${gpuError}`);
  console.warn(`[seqrec tests] GPU tests skipped: ${gpuError}`);
}

export const hasAdapter = gpuError === null;

/** describe() for suites that need the GPU: visible skip (with the reason) only when no adapter exists. */
export function describeGpu(name: string, fn: () => void): void {
  if (!hasAdapter) {
    describe.skip(`${name} [skipped: no WebGPU adapter]`, fn);
    return;
  }
  describe(name, () => {
    beforeAll(async () => {
      await initGpu();
    });
    afterAll(async () => {
      await sync();
    });
    fn();
  });
}

afterAll(async () => {
  await destroyGpu();
});
