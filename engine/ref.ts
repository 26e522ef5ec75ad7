// Float64 reference helpers: every kernel's reference is written with these in plain TypeScript.
import type { Shape } from './tensor.js';

/** A float64 host tensor (also used for integer inputs, holding exact integers). */
export interface F64 {
  data: Float64Array;
  shape: number[];
}

export function f64(data: ArrayLike<number>, shape: Shape): F64 {
  const d = Float64Array.from(data);
  const n = shape.reduce((a, b) => a * b, 1);
  if (d.length !== n) throw new Error(`f64: ${d.length} values for shape [${shape.join(', ')}]`);
  return { data: d, shape: [...shape] };
}

export function zerosF64(shape: Shape): F64 {
  return { data: new Float64Array(shape.reduce((a, b) => a * b, 1)), shape: [...shape] };
}

export function size(shape: Shape): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function strides(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** numpy broadcasting of two shapes; throws naming both shapes when incompatible. */
export function broadcastShapes(a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`shapes [${a.join(', ')}] and [${b.join(', ')}] do not broadcast`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Index of the element of `shape` (broadcast into `out`) that output index `i` reads. */
export function broadcastIndex(i: number, out: Shape, shape: Shape): number {
  let idx = 0;
  let mul = 1;
  let rem = i;
  for (let d = out.length - 1; d >= 0; d--) {
    const od = out[d]!;
    const c = rem % od;
    rem = Math.floor(rem / od);
    const sd = d - (out.length - shape.length);
    if (sd >= 0) {
      const dim = shape[sd]!;
      if (dim !== 1) idx += c * mul;
      mul *= dim;
    }
  }
  return idx;
}

/** Sum a broadcast gradient back to `shape`. */
export function sumTo(g: F64, shape: Shape): F64 {
  const out = zerosF64(shape);
  for (let i = 0; i < g.data.length; i++) out.data[broadcastIndex(i, g.shape, shape)]! += g.data[i]!;
  return out;
}

/** erf to ~1e-15 (Taylor series near 0, continued fraction for the tail). */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 80; n++) {
      term *= -x2 / n;
      const c = term / (2 * n + 1);
      sum += c;
      if (Math.abs(c) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  return Math.sign(x) * (1 - erfcTail(ax));
}

function erfcTail(x: number): number {
  // Lentz continued fraction for erfc(x), x >= 2.5.
  let f = x;
  let C = x;
  let D = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    D = x + an * D;
    D = 1 / D;
    C = x + an / C;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-x * x) / (f * Math.sqrt(Math.PI));
}

/** mulberry32: the tests' seeded host PRNG. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Round to float32 (what the GPU sees of an input). */
export function roundF32(a: F64): F64 {
  return { data: Float64Array.from(Float32Array.from(a.data)), shape: [...a.shape] };
}

export interface GradcheckResult {
  ok: boolean;
  maxErr: number;
  message: string;
}

/**
 * Central finite differences of f(x) = <ref(inputs), gy> against refGrad, in float64.
 * Inputs with at most `fullMax` elements are checked element by element, larger ones along 3 random directions
 * (jax's check_grads style).
 */
export function gradcheck(
  ref: (xs: F64[]) => F64,
  refGrad: (xs: F64[], gy: F64) => Array<F64 | null>,
  xs: F64[],
  gy: F64,
  opts: { eps?: number; atol?: number; rtol?: number; which?: number[]; seed?: number; fullMax?: number } = {},
): GradcheckResult {
  const eps = opts.eps ?? 1e-6;
  const atol = opts.atol ?? 1e-5;
  const rtol = opts.rtol ?? 1e-3;
  const fullMax = opts.fullMax ?? 64;
  const rnd = mulberry32(opts.seed ?? 1234);
  // <ref(ys), gy> with Neumaier's compensated sum, and sum |terms|: the rounding error of a value is then about
  // 2^-52 * sum|terms| whatever the length (a plain sum of 1.4M terms erred by ~sqrt(n) times that, which the
  // central difference divides by 2 eps: a 0.2% "disagreement" on a linear op).
  const f = (ys: F64[]): { s: number; abs: number } => {
    const y = ref(ys);
    let s = 0;
    let c = 0;
    let abs = 0;
    for (let i = 0; i < y.data.length; i++) {
      const v = y.data[i]! * gy.data[i]!;
      const t = s + v;
      c += Math.abs(s) >= Math.abs(v) ? s - t + v : v - t + s;
      s = t;
      abs += Math.abs(v);
    }
    return { s: s + c, abs };
  };
  const grads = refGrad(xs, gy);
  let maxErr = 0;
  const bad: string[] = [];
  const which = opts.which ?? xs.map((_, i) => i);
  for (const k of which) {
    const g = grads[k];
    if (!g) {
      bad.push(`input ${k}: reference gradient is null`);
      continue;
    }
    const x = xs[k]!;
    const dirs: Float64Array[] = [];
    if (x.data.length <= fullMax) {
      for (let i = 0; i < x.data.length; i++) {
        const d = new Float64Array(x.data.length);
        d[i] = 1;
        dirs.push(d);
      }
    } else {
      for (let r = 0; r < 3; r++) dirs.push(Float64Array.from({ length: x.data.length }, () => rnd() * 2 - 1));
    }
    for (const [di, d] of dirs.entries()) {
      const plus = xs.map((y, j) => (j === k ? { data: y.data.map((v, i) => v + eps * d[i]!), shape: y.shape } : y));
      const minus = xs.map((y, j) => (j === k ? { data: y.data.map((v, i) => v - eps * d[i]!), shape: y.shape } : y));
      const fp = f(plus);
      const fm = f(minus);
      const num = (fp.s - fm.s) / (2 * eps);
      // The rounding error of the two values (products and compensated sums, a few ulps of sum|terms| each)
      // divided by 2 eps: derived from the data, added to atol.
      const roundoff = (8 * 2 ** -53 * (fp.abs + fm.abs)) / (2 * eps);
      let ana = 0;
      for (let i = 0; i < d.length; i++) ana += g.data[i]! * d[i]!;
      const err = Math.abs(num - ana);
      maxErr = Math.max(maxErr, err);
      if (err > atol + roundoff + rtol * Math.abs(num) && bad.length < 5) bad.push(`input ${k} dir ${di}: numeric ${num} vs analytic ${ana}`);
    }
  }
  return { ok: bad.length === 0, maxErr, message: bad.join('\n') };
}
