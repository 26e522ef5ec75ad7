// Helpers for bench/*.bench.ts files:
// - host data: seeded uniform arrays (rounded to f32, what the GPU sees), HostTensor records, f64 views;
// - comparison: the test harness's tolerance rule (|got - want| <= atol + rtol·|want|, first mismatches and the
//   max error on failure), sampled checks for outputs too large for a full float64 reference;
// - variants: engineVariant (this engine: upload, forward, optional backward, read back) and tfjsVariant (the same
//   on tfjs-backend-webgpu, tf.valueAndGrads for gradients), so that an entry is its math plus a few lines;
// - throughput arithmetic.
import { backward, noGrad, ref, scope, Tensor, type Shape } from '../engine/index.js';
import { MATMUL_TUNING } from '../kernels/index.js';
import { getTfjs, tfjsSubmit, type Tfjs } from './tfjs.js';
import type { Instance, Outputs, Reference, Tol, Variant, VariantKind } from './types.js';

export type { Tol } from './types.js';
type F64 = ref.F64;

export const DEFAULT_TOL: Tol = { atol: 1e-5, rtol: 1e-4 };
export const GRAD_TOL: Tol = { atol: 1e-4, rtol: 1e-3 };

// ------------------------------------------------------------------ host data
/** A host array with its shape: f32 data, or i32 ids. */
export interface HostTensor {
  data: Float32Array | Int32Array;
  shape: number[];
}

/** Seeded uniform host data in [lo, hi), rounded to f32 (what the GPU sees). */
export function randHost(shape: Shape, seed: number, lo = -1, hi = 1): Float32Array {
  const rnd = ref.mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rnd();
  return out;
}

/** A seeded uniform f32 HostTensor. */
export function rand(shape: number[], seed: number, lo = -1, hi = 1): HostTensor {
  return { data: randHost(shape, seed, lo, hi), shape: [...shape] };
}

/** Seeded integer ids in [lo, hi) as an i32 HostTensor. */
export function randIds(shape: number[], seed: number, lo: number, hi: number): HostTensor {
  const rnd = ref.mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return { data: Int32Array.from({ length: n }, () => lo + Math.floor(rnd() * (hi - lo))), shape: [...shape] };
}

/** A tensor with seeded uniform values, and its host copy for references. */
export function randTensor(shape: Shape, seed: number, lo = -1, hi = 1): { host: Float32Array; t: Tensor } {
  const host = randHost(shape, seed, lo, hi);
  return { host, t: Tensor.from(host, shape) };
}

/** The float64 view of a host array (for the kernels' ref* functions). */
export function f64(x: HostTensor | Float32Array, shape?: number[]): F64 {
  if (x instanceof Float32Array) return { data: Float64Array.from(x), shape: shape ?? [x.length] };
  return { data: Float64Array.from(x.data), shape: [...x.shape] };
}

const isHost = (v: unknown): v is HostTensor =>
  typeof v === 'object' && v !== null && ((v as HostTensor).data instanceof Float32Array || (v as HostTensor).data instanceof Int32Array) && Array.isArray((v as HostTensor).shape);

/** Upload every HostTensor field of an inputs record. */
export function uploadAll(inp: unknown): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(inp as Record<string, unknown>)) if (isHost(v)) out[k] = Tensor.from(v.data, v.shape);
  return out;
}

/**
 * Lengths of left-padded sequences drawn from Beauty's measured fine-tuning lengths (items[:-3] truncated to 50;
 * counts for lengths 2..50 over its 22,363 users): 11.5% of a batch's slots are real, 0.6% of rows full.
 * The benches use generated data only; this table is the one thing taken from the dataset.
 */
const BEAUTY_FT_LENGTHS = [
  7162, 4221, 2680, 1811, 1366, 881, 695, 558, 439, 361, 262, 207, 213, 141, 118, 112, 117, 84, 66, 73, 74, 61, 54, 44, 44,
  38, 30, 38, 20, 19, 21, 19, 23, 24, 22, 15, 17, 7, 10, 10, 15, 7, 11, 8, 4, 8, 9, 8, 136,
];
const BEAUTY_CDF = (() => {
  const total = BEAUTY_FT_LENGTHS.reduce((a, b) => a + b, 0);
  let acc = 0;
  return BEAUTY_FT_LENGTHS.map((c) => (acc += c) / total);
})();

/** One Beauty-like fine-tuning input length in [2, 50] (scaled to maxLen when it is not 50). */
export function beautyLength(rnd: () => number, maxLen = 50): number {
  const u = rnd();
  let k = 0;
  while (k < BEAUTY_CDF.length - 1 && BEAUTY_CDF[k]! < u) k++;
  const len = k + 2;
  return maxLen === 50 ? len : Math.max(1, Math.min(maxLen, Math.round((len * maxLen) / 50)));
}

/** A popularity-skewed item id in [1, V) (Zipf-like: rnd^3). */
export const skewedItem = (rnd: () => number, V: number): number => 1 + Math.floor((V - 1) * rnd() ** 3);

/**
 * A left-padded batch of ids [B*L] with Beauty-like lengths: fine-tuning inputs (length from the table), or
 * pretraining samples (a uniform prefix of items[:-2], one item longer than the fine-tuning input).
 */
export function beautyLikeBatch(B: number, L: number, seed: number, mode: 'finetune' | 'pretrain' = 'finetune', V = 12103): Int32Array {
  const rnd = ref.mulberry32(seed);
  const ids = new Int32Array(B * L);
  for (let b = 0; b < B; b++) {
    let n = beautyLength(rnd, L);
    if (mode === 'pretrain') n = 1 + Math.floor(rnd() * Math.min(L, n + 1));
    for (let j = L - n; j < L; j++) ids[b * L + j] = skewedItem(rnd, V);
  }
  return ids;
}

// ------------------------------------------------------------------ comparison
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

/** The tolerance of output `key`: a single Tol, or a per-output map (DEFAULT_TOL for missing names). */
export function tolFor(tol: Tol | Record<string, Tol> | undefined, key: string): Tol {
  if (!tol) return DEFAULT_TOL;
  if (typeof (tol as Tol).atol === 'number') return tol as Tol;
  return (tol as Record<string, Tol>)[key] ?? DEFAULT_TOL;
}

/** The default check: every reference output against the same-named output (sampled for function references). */
export function compareOutputs(what: string, got: Outputs, want: Reference, tol: Tol | Record<string, Tol> | undefined, sample = 256): void {
  for (const [k, w] of Object.entries(want)) {
    const g = got[k];
    if (!g) throw new Error(`${what}: no output '${k}' (got ${Object.keys(got).join(', ') || 'none'})`);
    if (typeof w === 'function') validateSampled(`${what} ${k}`, g, w, tolFor(tol, k), sample);
    else validateClose(`${what} ${k}`, g, w, tolFor(tol, k));
  }
}

/** Matmul tolerance for K-term dot products of values in [-1, 1]: f32 rounding grows ~sqrt(K)·eps. */
export function dotTol(K: number): Tol {
  return { atol: 1e-5 * Math.max(1, Math.sqrt(K)), rtol: 1e-4 };
}

/** Max |v| of an array (scales a gradient's absolute tolerance). */
export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

// ------------------------------------------------------------------ variants
type Named = Record<string, Tensor>;

export interface EngineSpec<In, Ctx = undefined> {
  /** Upload the inputs (default: every HostTensor field of the inputs). The helper disposes them. */
  tensors?(inp: In): Named;
  /** Per-setup state besides tensors (e.g. a packed layout), passed to forward; `release` frees it. */
  prepare?(inp: In, t: Named): Ctx;
  release?(ctx: Ctx): void;
  /** Inputs that get gradients: every run is forward + backward, and the outputs gain `d<key>`. */
  grads?: readonly string[];
  /** The key of the upstream gradient among the tensors (default: backward from the scalar output). */
  gy?: string;
  /** The op: its output (`out`), or named outputs (forward only). Intermediates are freed (scope). */
  forward(t: Named, inp: In, ctx: Ctx): Tensor | Named;
  /** Forward in the validation setting (default: forward). */
  validateForward?(t: Named, inp: In, ctx: Ctx): Tensor | Named;
  refKey?: string;
  tol?: Tol | Record<string, Tol>;
  hostWork?: boolean;
}

/** A variant running on this engine: upload once, then per run forward (+ backward), outputs read back. */
export function engineVariant<In, Ctx = undefined>(name: string, kind: VariantKind, spec: EngineSpec<In, Ctx>): Variant<In> {
  return {
    name,
    kind,
    ...(spec.refKey ? { refKey: spec.refKey } : {}),
    ...(spec.tol ? { tol: spec.tol } : {}),
    ...(spec.hostWork ? { hostWork: true } : {}),
    setup(inp: In): Instance {
      const t = spec.tensors ? spec.tensors(inp) : uploadAll(inp);
      const ctx = (spec.prepare ? spec.prepare(inp, t) : undefined) as Ctx;
      const g = spec.grads ?? [];
      for (const k of g) {
        if (!t[k]) throw new Error(`${name}: no input '${k}' to differentiate`);
        t[k].requireGrad();
      }
      let outs: Named = {};
      const clear = (): void => {
        for (const o of Object.values(outs)) o.dispose();
        outs = {};
        for (const k of g) {
          t[k]!.grad?.dispose();
          t[k]!.grad = null;
        }
      };
      const once = (fwd: EngineSpec<In, Ctx>['forward']): void => {
        clear();
        if (!g.length) {
          const y = noGrad(() => scope(() => fwd(t, inp, ctx)));
          outs = y instanceof Tensor ? { out: y } : y;
          return;
        }
        const y = scope(() => fwd(t, inp, ctx));
        if (!(y instanceof Tensor)) throw new Error(`${name}: a differentiated forward must return one tensor`);
        outs = { out: y };
        backward(y, spec.gy ? t[spec.gy] : undefined);
      };
      return {
        run: () => once(spec.forward),
        async outputs() {
          once(spec.validateForward ?? spec.forward);
          const r: Outputs = {};
          for (const [k, v] of Object.entries(outs)) r[k] = await v.toArray();
          for (const k of g) r[`d${k}`] = await t[k]!.grad!.toArray();
          return r;
        },
        dispose() {
          clear();
          if (spec.release) spec.release(ctx);
          for (const v of new Set(Object.values(t))) v.dispose();
        },
      };
    },
  };
}

export type TfT = ReturnType<Tfjs['tensor']>;
type TfNamed = Record<string, TfT>;

export interface TfjsSpec<In> {
  /** Upload the inputs (default: every HostTensor field; i32 data as int32). */
  tensors?(tf: Tfjs, inp: In): TfNamed;
  grads?: readonly string[];
  gy?: string;
  /** The same math in tfjs ops. */
  forward(tf: Tfjs, t: TfNamed, inp: In): TfT;
  validateForward?(tf: Tfjs, t: TfNamed, inp: In): TfT;
  refKey?: string;
  tol?: Tol | Record<string, Tol>;
}

/**
 * The tfjs-webgpu peer on the same device: per run tf.tidy(forward or tf.valueAndGrads), then its commands are
 * submitted (the runner's sync waits on the shared queue). Name: `tfjs` unless given.
 */
export function tfjsVariant<In>(spec: TfjsSpec<In>, name = 'tfjs'): Variant<In> {
  return {
    name,
    kind: 'tfjs',
    ...(spec.refKey ? { refKey: spec.refKey } : {}),
    ...(spec.tol ? { tol: spec.tol } : {}),
    async setup(inp: In): Promise<Instance> {
      const tf = await getTfjs();
      const t: TfNamed = spec.tensors
        ? spec.tensors(tf, inp)
        : Object.fromEntries(
            Object.entries(inp as Record<string, unknown>)
              .filter(([, v]) => isHost(v))
              .map(([k, v]) => {
                const h = v as HostTensor;
                return [k, tf.tensor(h.data, h.shape, h.data instanceof Int32Array ? 'int32' : 'float32')];
              }),
          );
      const g = spec.grads ?? [];
      let outs: TfT[] = [];
      const step = (fwd: TfjsSpec<In>['forward']): void => {
        for (const o of outs) o.dispose();
        outs = tf.tidy(() => {
          if (!g.length) return [fwd(tf, t, inp)];
          const f = (...xs: TfT[]): TfT => fwd(tf, { ...t, ...Object.fromEntries(g.map((k, i) => [k, xs[i]!])) }, inp);
          const { value, grads } = tf.valueAndGrads(f)(
            g.map((k) => t[k]!),
            spec.gy ? t[spec.gy] : undefined,
          );
          return [value, ...grads];
        });
      };
      return {
        run() {
          step(spec.forward);
          tfjsSubmit();
        },
        async gpuMs() {
          const info = await tf.time(() => step(spec.forward));
          return Number(info.kernelMs);
        },
        async outputs() {
          step(spec.validateForward ?? spec.forward);
          const vals = await Promise.all(outs.map(async (o) => await o.data()));
          const r: Outputs = { out: vals[0] as ArrayLike<number> };
          g.forEach((k, i) => (r[`d${k}`] = vals[i + 1] as ArrayLike<number>));
          return r;
        },
        dispose() {
          for (const o of [...outs, ...new Set(Object.values(t))]) o.dispose();
        },
      };
    },
  };
}

// ------------------------------------------------------------------ throughput
export const gflops = (flops: number | undefined, ms: number): number | null => (flops === undefined || !(ms > 0) ? null : flops / ms / 1e6);
export const gbps = (bytes: number | undefined, ms: number): number | null => (bytes === undefined || !(ms > 0) ? null : bytes / ms / 1e6);

/** 2·batch·M·N·K. */
export const matmulFlops = (M: number, N: number, K: number, batch = 1): number => 2 * batch * M * N * K;
/** Bytes of one read of A and B and one write of C (the minimum traffic). */
export const matmulBytes = (M: number, N: number, K: number, batch = 1, sharedB = false): number =>
  4 * (batch * M * K + (sharedB ? 1 : batch) * K * N + batch * M * N);

/** fn() with MATMUL_TUNING.uniformB off (kernels are chosen when recorded, so the flag is restored at once). */
export function storageB<T>(fn: () => T): T {
  const prev = MATMUL_TUNING.uniformB;
  MATMUL_TUNING.uniformB = false;
  try {
    return fn();
  } finally {
    MATMUL_TUNING.uniformB = prev;
  }
}
