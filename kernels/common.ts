// kernels/common.ts — the toolkit the op files build their kernels with. It imports only the engine; every op
// file imports its shared pieces from here (and from the two builders next to it: common_rows.ts, the row
// programs; common_pairs.ts, the two-score row losses), never from another op file's internals.
//
//   WGSL snippets     main1d / foldedIndex (the entry point and thread index of a folded 1-D grid), the math
//                     helpers (sigmoid_, softplus, erf_ / gelu_), the broadcast stride walks (bidx_<strides>, bidx2).
//   WGSL templates    unroll / forSlots write repeated statements out from one line of WGSL text with a
//                     placeholder (`{k}`), so a kernel reads as WGSL in its source file, register tiles included.
//   kernel families   kernelFamily: the one keyed kernel cache of the library. Kernels generated per parameter
//                     set are built on first use and named `base{param=value,...}` (the engine's pipeline key,
//                     and the name in DEBUG lines, profiles and errors).
//   host helpers      vector widths, broadcast strides / patterns, u32 views and buffer regions, buffer concat,
//                     the CPU-adapter test, float64 sigmoid / softplus for the references.
//   loss_reduce       the final fixed-order reduction of the fused losses (infonce, pairwise_sigmoid,
//                     bce_neg_sampling, multilabel_bce): loss = sum(part) / den.
import { ceilDiv, chunkRanges, defineKernel, loopBudget, loopCost, maxLoopIterations, mesaSoftwareAdapter, rt, Tensor, type Bindable, type Kernel, type KernelSpec, type Shape } from '../engine/index.js';

// ================================================================== WGSL snippets
/**
 * The entry point of a kernel on a 1-D grid that may be folded into 2-D (KernelSpec.foldable):
 * `${main1d(WG)} { let i = ${foldedIndex(WG)}; ... }`. `wg` is a number or the name of an override.
 */
export function main1d(wg: number | string): string {
  return `@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u)`;
}

/** The linear workgroup index of a folded grid (one workgroup per row: `let row = ${FOLDED_GROUP};`). */
export const FOLDED_GROUP = 'wid.x + wid.y * nwg.x';

/**
 * The linear thread index on a folded grid of `wg`-thread workgroups (a number, or an override's name). For a
 * 2-D workgroup whose rows are the items (a TX x TY tile, TY rows per workgroup): foldedIndex(TY, 'lid.y').
 */
export function foldedIndex(wg: number | string, lane = 'lid.x'): string {
  return `(${FOLDED_GROUP}) * ${typeof wg === 'number' ? `${wg}u` : wg} + ${lane}`;
}

/** sigmoid without overflow (exp of a non-positive argument only). */
export const SIGMOID_WGSL = /* wgsl */ `
fn sigmoid_(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}`;

/** softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|); log1p by its series for tiny arguments. */
export const SOFTPLUS_WGSL = /* wgsl */ `
fn softplus(x: f32) -> f32 {
  let e = exp(-abs(x));
  return max(x, 0.0) + select(log(1.0 + e), e * (1.0 - 0.5 * e), e < 1e-3);
}`;

/** erf for WGSL (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7) — WGSL has no erf. */
export const ERF_WGSL = /* wgsl */ `
fn erf_(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
  return select(-y, y, x >= 0.0);
}`;

/** GELU (erf form) and its derivative; includes ERF_WGSL. */
export const GELU_WGSL = /* wgsl */ `${ERF_WGSL}
fn gelu_(x: f32) -> f32 { return 0.5 * x * (1.0 + erf_(x * 0.7071067811865476)); }
fn gelu_grad_(x: f32) -> f32 {
  return 0.5 * (1.0 + erf_(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}`;

/** A quiet NaN read at run time (WGSL's constant evaluation rejects a NaN literal or a constant bitcast). */
export const NAN_WGSL = 'var<private> NAN_BITS: u32 = 0x7fc00000u;';

// ------------------------------------------------------------------ broadcasting
/** Most dims a broadcasting kernel takes (the uniform holds two vec4s per shape). */
export const MAX_BCAST_DIMS = 8;

/** WGSL type of a shape or strides uniform member (MAX_BCAST_DIMS u32s). */
export const DIMS_T = 'array<vec4<u32>, 2>';

/**
 * WGSL `fn bidx_<st>(i: u32) -> u32`: the flat index of a broadcast operand whose strides (0 on broadcast dims)
 * are the uniform member p.<st>, from the output index i: one loop over the dims, innermost first. Needs uniform
 * members `ndim: u32` and `shape: ${DIMS_T}`. (The strides are read from the uniform in place: an array passed by
 * value would be copied into a private array, which Mesa indexes dynamically through slow scratch memory.)
 */
export function bcastIndexWgsl(st: string): string {
  return /* wgsl */ `
fn bidx_${st}(i: u32) -> u32 {
  var rem = i;
  var k = 0u;
  for (var d = i32(p.ndim) - 1; d >= 0; d = d - 1) {
    let dd = u32(d);
    let dim = p.shape[dd / 4u][dd % 4u];
    k = k + (rem % dim) * p.${st}[dd / 4u][dd % 4u];
    rem = rem / dim;
  }
  return k;
}`;
}

/** WGSL `fn bidx2(i: u32) -> vec2<u32>`: bidx for two operands (strides p.<sa>, p.<sb>) in one walk over the dims. */
export function bcastIndex2Wgsl(sa: string, sb: string): string {
  return /* wgsl */ `
fn bidx2(i: u32) -> vec2<u32> {
  var rem = i;
  var ia = 0u;
  var ib = 0u;
  for (var d = i32(p.ndim) - 1; d >= 0; d = d - 1) {
    let dd = u32(d);
    let dim = p.shape[dd / 4u][dd % 4u];
    let c = rem % dim;
    rem = rem / dim;
    ia = ia + c * p.${sa}[dd / 4u][dd % 4u];
    ib = ib + c * p.${sb}[dd / 4u][dd % 4u];
  }
  return vec2<u32>(ia, ib);
}`;
}

/** Strides of `shape` broadcast into `out` (0 on broadcast dims), padded to MAX_BCAST_DIMS. */
export function broadcastStrides(shape: Shape, out: Shape): number[] {
  const s = new Array<number>(MAX_BCAST_DIMS).fill(0);
  let acc = 1;
  for (let d = out.length - 1; d >= 0; d--) {
    const sd = d - (out.length - shape.length);
    if (sd < 0) continue;
    const dim = shape[sd]!;
    s[d] = dim === 1 ? 0 : acc;
    acc *= dim;
  }
  return s;
}

/** A shape padded with 1s to MAX_BCAST_DIMS (for the kernels' shape uniforms). */
export function padDims(shape: Shape): number[] {
  return [...shape, ...new Array<number>(MAX_BCAST_DIMS - shape.length).fill(1)];
}

/**
 * The cheap index forms of a broadcast of `x` into `out`: block (mode 1: x's non-1 dims are a contiguous run of
 * out's — bias rows, per-row masks — ix = (i / inner) % size) or gap (mode 2: x equals out but for one contiguous
 * run of size-1 dims — the backward of a sum over middle axes — ix = (i / (R * inner)) * inner + i % inner).
 * Mode 0 is the general stride walk (bidx).
 */
export function broadcastPattern(x: Shape, out: Shape): { mode: number; inner: number; size: number; R: number } {
  const xs = out.map((_, d) => x[d - (out.length - x.length)] ?? 1);
  const real = xs.map((v, d) => v !== 1 || out[d] === 1);
  const first = real.indexOf(true);
  const last = real.lastIndexOf(true);
  const prod = (a: number, b: number): number => out.slice(a, b).reduce((p, v) => p * v, 1);
  if (first < 0) return { mode: 1, inner: 1, size: 1, R: 1 }; // x is one element
  if (real.slice(first, last + 1).every(Boolean)) return { mode: 1, inner: prod(last + 1, out.length), size: prod(first, last + 1), R: 1 };
  const gapStart = real.indexOf(false, first);
  const gapEnd = real.indexOf(true, gapStart);
  if (real.slice(0, gapStart).every(Boolean) && real.slice(gapEnd).every(Boolean)) {
    return { mode: 2, inner: prod(gapEnd, out.length), size: 1, R: prod(gapStart, gapEnd) };
  }
  return { mode: 0, inner: 1, size: 1, R: 1 };
}

// ================================================================== WGSL templates
/**
 * A WGSL template with named substitutions: every `{NAME}` whose NAME is a key of `values` is replaced by its
 * value, in one pass (other braces are WGSL and stay). For a piece of WGSL written once and used several times
 * (a reduction pass per row-program pass, a loss per kernel variant).
 */
export function fill(template: string, values: Readonly<Record<string, string | number>>): string {
  return template.replace(/\{(\w+)\}/g, (m, name: string) => (Object.hasOwn(values, name) ? String(values[name]) : m));
}

/**
 * `text` written out once per k in [0, n) (or in [from, to) for a pair), every `{key}` replaced by k as a bare
 * integer (`x{r}` -> `x0`, `{r}u` -> `0u`), joined by `sep`. Nest with distinct keys:
 * unroll(TR, unroll(G, 'var z{r}_{g} = vec4<f32>(0.0);', 'g'), 'r').
 */
export function unroll(n: number | readonly [number, number], text: string, key = 'k', sep = '\n'): string {
  const [from, to] = typeof n === 'number' ? [0, n] : n;
  const re = new RegExp(`\\{${key}\\}`, 'g');
  return Array.from({ length: Math.max(0, to - from) }, (_, j) => text.replace(re, String(from + j))).join(sep);
}

/** Loops over a row's storage slots are written out up to this length (see forSlots). */
export const UNROLL_SLOTS = 16;

export interface SlotsOptions {
  /** Placeholder and loop variable (default 'k'). */
  key?: string;
  /** Longest run written out (default UNROLL_SLOTS); longer ones become a WGSL loop. */
  limit?: number;
  /** Separator of the written-out statements (default ' '). */
  sep?: string;
}

/**
 * Statements over the slots k in [0, n) of a row, from one line of WGSL text: written out with `{key}` = `0u`,
 * `1u`, ... when n <= limit (constant indices keep private arrays in registers, and a written-out loop costs
 * nothing of llvmpipe's per-invocation loop budget), else `for (var k = 0u; k < nu; k = k + 1u) { text }`.
 */
export function forSlots(n: number, text: string, o: SlotsOptions = {}): string {
  const key = o.key ?? 'k';
  const re = new RegExp(`\\{${key}\\}`, 'g');
  if (n <= (o.limit ?? UNROLL_SLOTS)) return Array.from({ length: n }, (_, j) => text.replace(re, `${j}u`)).join(o.sep ?? ' ');
  return `for (var ${key} = 0u; ${key} < ${n}u; ${key} = ${key} + 1u) { ${text.replace(re, key)} }`;
}

/** Loop cost of forSlots(n, ...) whose body costs `body` (written out: only the body's own loops). */
export const slotsCost = (n: number, body = 0, limit = UNROLL_SLOTS): number => (n <= limit ? n * body : loopCost(n, body));

// ================================================================== kernel families
/** `base{k=v,...}` with the keys sorted; a true flag is written by its name alone, false / undefined left out. */
export function familyName(base: string, p: object): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(p).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (v === false || v === undefined) continue;
    parts.push(v === true ? k : `${k}=${String(v)}`);
  }
  return parts.length ? `${base}{${parts.join(',')}}` : base;
}

const familyKernels = new Map<string, { family: symbol; kernel: Kernel }>();

/**
 * A family of kernels generated per parameter set: `family(p)` returns THE Kernel for p, built by `make` on first
 * use and cached under its name familyName(base, p). The engine caches pipelines by kernel name, so the name must
 * determine the WGSL: every parameter that changes the generated code goes into p. A name generated by two
 * families throws.
 */
export function kernelFamily<P extends object>(base: string, make: (p: P, name: string) => Omit<KernelSpec, 'name'>): (p: P) => Kernel {
  const family = Symbol(base);
  return (p: P): Kernel => {
    const name = familyName(base, p);
    const hit = familyKernels.get(name);
    if (hit) {
      if (hit.family !== family) throw new Error(`kernelFamily: two kernel families generate '${name}'`);
      return hit.kernel;
    }
    const kernel = defineKernel({ name, ...make(p, name) });
    familyKernels.set(name, { family, kernel });
    return kernel;
  };
}

// ================================================================== vectors and lanes
export type VecWidth = 1 | 2 | 4;

/** The widest vector width (4, 2, 1) dividing n: rows of n 4-byte elements read as vecW (fewer, wider loads). */
export function vecWidth(n: number): VecWidth {
  return n % 4 === 0 ? 4 : n % 2 === 0 ? 2 : 1;
}

/** WGSL type of a W-wide element: `f32`, `vec2<f32>`, `vec4<f32>` (or of another scalar). */
export const vecType = (w: number, scalar = 'f32'): string => (w === 1 ? scalar : `vec${w}<${scalar}>`);

/** Lanes per storage element along a row of D: 4 (vec4 loads) when D % 4 == 0, else 1. */
export type Lanes = 1 | 4;
export const lanesFor = (D: number): Lanes => (D % 4 === 0 ? 4 : 1);

/** WGSL `const D4`: the number of storage slots of `lanesFor(D)` floats in a row of D (baked into a kernel). */
export const slotsConst = (D: number): string => `const D4 = ${D / lanesFor(D)}u;`;

/** WGSL `dotv(a, b)` for one storage element of `l` lanes. */
export const dotvWgsl = (l: Lanes): string =>
  l === 4 ? 'fn dotv(a: vec4<f32>, b: vec4<f32>) -> f32 { return dot(a, b); }' : 'fn dotv(a: f32, b: f32) -> f32 { return a * b; }';

// ================================================================== host helpers
/** A u32 view of a 4-byte tensor for bit moves (i32 ids read as u32: negative ids become >= 2^31, i.e. out of range). */
export function asU32(t: Tensor): Bindable {
  return { buffer: t.buffer, byteOffset: t.byteOffset, byteLength: t.byteLength, dtype: 'u32' };
}

/** A raw f32 region of a tensor's buffer (byte offsets), e.g. row chunks over the storage-binding size limit. */
export function bufferRegion(t: Tensor, byteOffset: number, byteLength: number): Bindable {
  return { buffer: t.buffer, byteOffset, byteLength, dtype: 'f32' };
}

/** Concatenate flat tensors into one new f32 buffer (buffer copies, no kernel). */
export function concatFlat(parts: Tensor[]): Tensor {
  const out = Tensor.empty([parts.reduce((s, t) => s + t.size, 0)]); // [sum of sizes]
  let at = 0;
  for (const t of parts) {
    rt().queue.copy(t.buffer, t.byteOffset, out.buffer, out.byteOffset + 4 * at, t.byteLength);
    at += t.size;
  }
  return out;
}

let cpuCache: { device: unknown; cpu: boolean; mesa: boolean } | null = null;
/**
 * Whether the adapter is a CPU rasteriser (Mesa llvmpipe / lavapipe / softpipe, SwiftShader, anything naming a
 * CPU): it runs a workgroup as SIMD fibers on one core, so barriers are expensive and a few hundred threads fill it.
 */
export function isCpuAdapter(): boolean {
  return adapterKind().cpu;
}

/** Whether the adapter is one of Mesa's CPU rasterisers (llvmpipe / lavapipe / softpipe): choices measured there only. */
export function isMesaAdapter(): boolean {
  return adapterKind().mesa;
}

function adapterKind(): { cpu: boolean; mesa: boolean } {
  const g = rt().gpu;
  if (cpuCache?.device !== g.device) {
    const s = `${g.info.vendor} ${g.info.architecture} ${g.info.device} ${g.info.description}`.toLowerCase();
    cpuCache = { device: g.device, cpu: /llvmpipe|lavapipe|softpipe|swiftshader|cpu/.test(s), mesa: mesaSoftwareAdapter(g.info) };
  }
  return cpuCache!;
}

/** Float64 sigmoid (no overflow) for the references. */
export const refSigmoid = (x: number): number => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
/** Float64 softplus log(1 + e^x), stable. */
export const refSoftplus = (x: number): number => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));

// ================================================================== loss_reduce
/** The reduction of the fused losses: 'mean' divides by the sum of the row weights, 'sum' does not. */
export type Reduction = 'mean' | 'sum';

const lossReduce = defineKernel({
  name: 'loss_reduce',
  wgsl: /* wgsl */ `
// out[0] = sum(part) / den, den[0] = mean ? (sum(w) * scale, or 1 when sum(w) == 0) : 1.
// part and w start at element offsets partOff / wOff of their buffers (they may be regions of one buffer).
// One workgroup; thread t sums part[t], part[t + 256], ... then thread 0 adds the 256 partials in order.
// Elements [i0, i1) per dispatch: longer inputs than one invocation's loop budget take several dispatches, the
// running sums carried in out[0] / den[0] until the last one (i1 >= max(nPart, nW)).
struct Params { nPart: u32, partOff: u32, nW: u32, wOff: u32, mean: u32, scale: f32, i0: u32, i1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;       // [partOff + nPart] weighted loss partials
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [wOff + nW] row weights
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [1] the loss
@group(0) @binding(4) var<storage, read_write> den: array<f32>;  // [1] the denominator (saved for backward)
var<workgroup> sl: array<f32, 256>;
var<workgroup> sw: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3u) {
  var a = 0.0;
  let ea = min(p.nPart, p.i1);
  for (var i = p.i0 + lid.x; i < ea; i = i + 256u) { a = a + part[p.partOff + i]; }
  var b = 0.0;
  let eb = min(p.nW, p.i1);
  for (var i = p.i0 + lid.x; i < eb; i = i + 256u) { b = b + w[p.wOff + i]; }
  sl[lid.x] = a;
  sw[lid.x] = b;
  workgroupBarrier();
  if (lid.x == 0u) {
    var L = 0.0;
    var W = 0.0;
    for (var t = 0u; t < 256u; t = t + 1u) { L = L + sl[t]; W = W + sw[t]; }
    if (p.i0 != 0u) { L = out[0] + L; W = den[0] + W; }
    if (p.i1 < max(p.nPart, p.nW)) { out[0] = L; den[0] = W; return; }
    var d = 1.0;
    if (p.mean == 1u && W != 0.0) { d = W * p.scale; }
    out[0] = L / d;
    den[0] = d;
  }
}`,
  grid: () => [1],
  minSizes: ({ nPart, partOff, nW, wOff }) => ({ part: partOff! + nPart!, w: wOff! + nW!, out: 1, den: 1 }),
  loopTrips: ({ i0, i1 }) => 2 * loopCost(ceilDiv(i1! - i0!, 256)) + loopCost(256),
});

/** A region [off, off + n) of a flat tensor, for reduceLoss. */
export interface Region {
  t: Tensor;
  off?: number;
  n?: number;
}

/** loss [] = sum(part) / den and den [1] (see loss_reduce): the last step of every fused loss. */
export function reduceLoss(part: Region, w: Region, mean: boolean, scale = 1): { loss: Tensor; den: Tensor } {
  const loss = Tensor.empty([]); // []
  const den = Tensor.empty([1]); // [1]
  const partOff = part.off ?? 0;
  const wOff = w.off ?? 0;
  const nPart = part.n ?? part.t.size - partOff;
  const nW = w.n ?? w.t.size - wOff;
  // Elements per dispatch: 256 threads, two strided loops and the 256-step sum within the loop budget.
  const per = maxLoopIterations(loopBudget(), 1, loopCost(256) + 2) * 256;
  for (const [i0, i1] of chunkRanges(Math.max(nPart, nW), per)) {
    lossReduce.run({ part: part.t, w: w.t, out: loss, den }, { nPart, partOff, nW, wOff, mean: mean ? 1 : 0, scale, i0, i1 });
  }
  return { loss, den };
}
