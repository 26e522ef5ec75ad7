// kernels/reduce.ts — reductions over one axis: sum, mean, max (with first-argmax for backward); sumTo (the
// broadcast-gradient reduction) and broadcastTo (its adjoint).
// The input is viewed as [outer, R, inner]. Two kernels:
//   reduce_rows    (inner == 1): one workgroup of 64 threads per output, strided loop then a tree reduction
//                  (6 barriers) — for row sums such as losses and full reductions;
//   reduce_cols    (inner > 1): one thread per output, a serial loop over R reading coalesced columns.
// When few outputs face a long R (e.g. a bias gradient, [12800, 64] -> [64]), R is first split into chunks
// (two passes, fixed order: deterministic). Memory traffic: reads the input once per pass, writes the outputs.
// llvmpipe's loop budget (65,535 iterations per invocation, all loops together): a serial column loop covers at
// most 32,768 elements and a row workgroup's strided loop 32,768 x 64; longer axes are chunked the same way, for
// max too (chunk maxima with their local argmax, then the max of those: the first global argmax).
import { ceilDiv, defineKernel, defineOp, loopBudget, loopCost, maxLoopIterations, ref, sameShape, shapeStr, Tensor, vec4Count, type Shape } from '../engine/index.js';
import { bcastIndexWgsl, broadcastPattern, broadcastStrides, DIMS_T, FOLDED_GROUP, foldedIndex, kernelFamily, main1d, MAX_BCAST_DIMS, padDims } from './common.js';

// The broadcast helpers moved to common.ts; re-exported here for imports written before the move.
export { broadcastPattern, broadcastStrides, MAX_BCAST_DIMS, padDims } from './common.js';

type F64 = ref.F64;
type ReduceKind = 'sum' | 'max';
const ROW_WG = 64;
const COL_WG = 64;

/** out[o] = op over r of x[o, r] (inner == 1): one workgroup of ROW_WG threads per output row. */
const rowKernel = kernelFamily('reduce_rows', ({ op }: { op: ReduceKind }) => {
  const init = op === 'sum' ? '0.0' : '-3.4028234663852886e38';
  const max = op === 'max';
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// out[o] = ${op} over r of x[o, r] (inner == 1). One workgroup per output row.${max ? ' idx[o] = first argmax.' : ''}
struct Params { outer: u32, R: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [outer, R]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [outer]
${max ? '@group(0) @binding(3) var<storage, read_write> idx: array<u32>;  // [outer]' : ''}
var<workgroup> sv: array<f32, ${ROW_WG}>;
var<workgroup> si: array<u32, ${ROW_WG}>;
fn comb(a: f32, b: f32) -> f32 { return ${max ? 'max(a, b)' : 'a + b'}; }
${main1d(ROW_WG)} {
  let o = ${FOLDED_GROUP};
  if (o >= p.outer) { return; }
  let base = o * p.R;
  var acc = ${init};
  var arg = 0xffffffffu;
  for (var r = lid.x; r < p.R; r = r + ${ROW_WG}u) {
    let v = x[base + r];
    ${max ? 'if (v > acc || arg == 0xffffffffu) { acc = v; arg = r; }' : 'acc = acc + v;'}
  }
  sv[lid.x] = acc;
  si[lid.x] = arg;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid.x < s) {
      ${max ? MAX_TREE_STEP : 'sv[lid.x] = sv[lid.x] + sv[lid.x + s];'}
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    out[o] = sv[0];
    ${max ? 'idx[o] = si[0];' : ''}
  }
}`,
    grid: ({ outer }) => [outer!],
    minSizes: ({ outer, R }) => ({ x: outer! * R!, out: outer! }),
    loopTrips: ({ R }) => loopCost(ceilDiv(R!, ROW_WG)) + TREE_TRIPS,
  };
});

/** One step of the max tree: the larger value, the smaller index among equal values (first argmax). */
const MAX_TREE_STEP = /* wgsl */ `let a = sv[lid.x]; let b = sv[lid.x + s]; let ia = si[lid.x]; let ib = si[lid.x + s];
      if (ib != 0xffffffffu && (ia == 0xffffffffu || b > a || (b == a && ib < ia))) { sv[lid.x] = b; si[lid.x] = ib; }`;

/** out[o, i] = op over r of x[o, r, i] (or chunk partials): one thread per output, a serial loop over R. */
const colKernel = kernelFamily('reduce_cols', ({ op, vec4 }: { op: ReduceKind; vec4?: boolean }) => {
  const max = op === 'max';
  const T = vec4 ? 'vec4<f32>' : 'f32'; // vec4 (sums with inner % 4 == 0): inner and every index count vec4s
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// out[o, i] = ${op} over r of x[o, r, i]. One thread per output${vec4 ? ' vec4 (4 adjacent columns, the same order of adds)' : ''}.${max ? ' idx = first argmax.' : ''}
// The axis may be cut into C chunks of \`chunk\` (the last one shorter): then out is [outer, C, inner] partial sums
// (llvmpipe silently ends the loops of an invocation after 65,535 iterations in all: chunk <= maxColChunk()).
struct Params { outer: u32, R: u32, inner: u32, chunk: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${T}>;          // [outer, R, inner]
@group(0) @binding(2) var<storage, read_write> out: array<${T}>;  // [outer, C, inner]
${max ? '@group(0) @binding(3) var<storage, read_write> idx: array<u32>;  // [outer, inner]' : ''}
${main1d(COL_WG)} {
  let t = ${foldedIndex(COL_WG)};
  if (t >= p.outer * p.C * p.inner) { return; }
  let i = t % p.inner;
  let c = (t / p.inner) % p.C;
  let o = t / (p.inner * p.C);
  let r0 = c * p.chunk;
  let r1 = min(p.R, r0 + p.chunk);
  var base = (o * p.R + r0) * p.inner + i;
  var acc = x[base];
  var arg = 0u;
  for (var r = 1u; r < r1 - r0; r = r + 1u) {
    let v = x[base + r * p.inner];
    ${max ? 'if (v > acc) { acc = v; arg = r; }' : 'acc = acc + v;'}
  }
  out[t] = acc;
  ${max ? 'idx[t] = arg;' : ''}
}`,
    grid: ({ outer, inner, C }) => [ceilDiv(outer! * C! * inner!, COL_WG)],
    minSizes: ({ outer, R, inner, C }) => ({ x: outer! * R! * inner!, out: outer! * C! * inner! }),
    loopTrips: ({ chunk }) => loopCost(chunk! - 1),
  };
});

function normAxis(op: string, shape: Shape, axis: number): number {
  const a = axis < 0 ? axis + shape.length : axis;
  if (!Number.isInteger(a) || a < 0 || a >= shape.length) throw new Error(`${op}: axis ${axis} is out of range for shape ${shapeStr(shape)}`);
  return a;
}

function split3(shape: Shape, axis: number): [number, number, number] {
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  return [outer, shape[axis]!, inner];
}

/** Raw sum over the middle axis of [outer, R, inner] -> [outer * inner] (no autograd). */
function sumRaw(x: Tensor, outer: number, R: number, inner: number): Tensor {
  const outputs = outer * inner;
  if (R === 0) throw new Error('sum: cannot reduce an axis of length 0');
  if (R === 1) return x.view([outputs]);
  // Few outputs facing a long axis, or an axis longer than a serial loop may run on llvmpipe: pass 1 sums
  // chunks of the axis into [outer, C, inner] (fixed order: deterministic), then the partials are reduced.
  const rowPath = useRowKernel(outer, R, inner);
  const maxChunk = maxColChunk();
  const limit = rowPath ? maxRowAxis() : maxChunk;
  if ((outputs < 2048 && R > 256 && !rowPath) || R > limit) {
    const target = Math.max(Math.ceil(R / maxChunk), Math.min(Math.ceil(R / 64), Math.max(2, Math.ceil(8192 / outputs))));
    const chunk = Math.ceil(R / target);
    const C = Math.ceil(R / chunk);
    const part = Tensor.empty([outer * C * inner]); // [outer, C, inner]
    colSum(x, part, { outer, R, inner, chunk, C });
    const out = sumRaw(part, outer, C, inner);
    if (out !== part) part.dispose();
    return out;
  }
  return singlePass(x, outer, R, inner);
}

function singlePass(x: Tensor, outer: number, R: number, inner: number): Tensor {
  const out = Tensor.empty([outer * inner]); // [outer, inner]
  runSum(x, out, outer, R, inner);
  return out;
}

/**
 * Many short rows: one thread per row (the cols kernel with inner = 1) beats a 64-thread workgroup with barriers
 * per row on llvmpipe (compared at [204800, 64]), and on a GPU the rows are short anyway. Timings:
 * `npm run bench -- reduce` / docs/BENCHMARKS.md.
 */
function useRowKernel(outer: number, R: number, inner: number): boolean {
  return inner === 1 && (outer < 256 || R > 1024);
}

function runSum(x: Tensor, out: Tensor, outer: number, R: number, inner: number): void {
  if (useRowKernel(outer, R, inner)) rowKernel({ op: 'sum' }).run({ x, out }, { outer, R });
  else colSum(x, out, { outer, R, inner, chunk: R, C: 1 });
}

/**
 * The column sums through reduce_cols, as vec4s of 4 adjacent columns when inner is a multiple of 4 (the same
 * adds in the same order; llvmpipe loads per instruction, so vec4 runs faster there).
 */
function colSum(x: Tensor, out: Tensor, p: { outer: number; R: number; inner: number; chunk: number; C: number }): void {
  const v = vec4Count(p.inner, x, out);
  colKernel(v ? { op: 'sum', vec4: true } : { op: 'sum' }).run({ x, out }, v ? { ...p, inner: v } : p);
}

/**
 * Mesa llvmpipe ends the loops of an invocation after 65,535 iterations in all, without an error (loopBudget()):
 * a serial column loop covers at most maxColChunk() elements (32,768, or less under a smaller budget), a row
 * workgroup's strided loop at most maxRowAxis().
 */
const MAX_LOOP = 32768;
const TREE_TRIPS = loopCost(Math.log2(ROW_WG));
const maxColChunk = (): number => Math.max(2, Math.min(MAX_LOOP, maxLoopIterations(loopBudget()) + 1));
const maxRowAxis = (): number => Math.max(ROW_WG, Math.min(MAX_LOOP, maxLoopIterations(loopBudget(), 0, TREE_TRIPS)) * ROW_WG);

const maxCombine = defineKernel({
  name: 'max_idx_combine',
  foldable: true,
  wgsl: /* wgsl */ `
// Argmax of a chunked max: idx[o, i] = c * chunk + local[o, c, i] with c = cidx[o, i] (the best chunk).
struct Params { outer: u32, C: u32, inner: u32, chunk: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cidx: array<u32>;      // [outer, inner] best chunk
@group(0) @binding(2) var<storage, read> local: array<u32>;     // [outer, C, inner] argmax inside each chunk
@group(0) @binding(3) var<storage, read_write> idx: array<u32>; // [outer, inner]
${main1d(256)} {
  let t = ${foldedIndex(256)};
  if (t >= p.outer * p.inner) { return; }
  let o = t / p.inner;
  let i = t - o * p.inner;
  let c = cidx[t];
  idx[t] = c * p.chunk + local[(o * p.C + c) * p.inner + i];
}`,
  grid: ({ outer, inner }) => [ceilDiv(outer! * inner!, 256)],
  minSizes: ({ outer, C, inner }) => ({ cidx: outer! * inner!, local: outer! * C! * inner!, idx: outer! * inner! }),
});

/**
 * Max and first argmax over the middle axis of [outer, R, inner] into out [outer * inner] and idx. An axis
 * longer than one loop may run is cut into chunks (per-chunk max and local argmax, then the max of the chunk
 * maxima, recursively; the first maximal chunk and its first maximal element: the global first argmax).
 */
function maxRaw(x: Tensor, out: Tensor, idx: Tensor, o: number, R: number, i: number): void {
  if (useRowKernel(o, R, i) && R <= maxRowAxis()) {
    rowKernel({ op: 'max' }).run({ x, out, idx }, { outer: o, R });
    return;
  }
  const maxChunk = maxColChunk();
  if (R <= maxChunk) {
    colKernel({ op: 'max' }).run({ x, out, idx }, { outer: o, R, inner: i, chunk: R, C: 1 });
    return;
  }
  const C = ceilDiv(R, maxChunk);
  const chunk = ceilDiv(R, C);
  const part = Tensor.empty([o * C * i]); // [outer, C, inner] chunk maxima
  const local = Tensor.empty([o * C * i], 'u32'); // [outer, C, inner] argmax inside the chunk
  const cidx = Tensor.empty([o * i], 'u32'); // [outer, inner] best chunk
  colKernel({ op: 'max' }).run({ x, out: part, idx: local }, { outer: o, R, inner: i, chunk, C });
  maxRaw(part, out, cidx, o, C, i);
  maxCombine.run({ cidx, local, idx }, { outer: o, C, inner: i, chunk });
  for (const t of [part, local, cidx]) t.dispose();
}

function reducedShape(shape: Shape, axis: number, keepdim: boolean): number[] {
  return keepdim ? shape.map((d, i) => (i === axis ? 1 : d)) : shape.filter((_, i) => i !== axis);
}

const sumOp = defineOp<{ axis: number | null; keepdim: boolean; scale: number }>({
  name: 'sum',
  forward(ctx, [x], { axis, keepdim, scale }) {
    ctx.extra.inShape = x!.shape;
    let out: Tensor;
    let shape: number[];
    if (axis === null) {
      out = sumRaw(x!, 1, x!.size, 1);
      shape = keepdim ? x!.shape.map(() => 1) : [];
    } else {
      const a = normAxis('sum', x!.shape, axis);
      const [o, R, i] = split3(x!.shape, a);
      out = sumRaw(x!, o, R, i);
      shape = reducedShape(x!.shape, a, keepdim);
    }
    let res = out.view(shape);
    out.dispose();
    if (scale !== 1) {
      const scaled = scaleRaw(res, scale);
      res.dispose();
      res = scaled;
    }
    return res;
  },
  backward(ctx, gy) {
    const inShape = ctx.extra.inShape as Shape;
    const { axis, scale } = ctx.attrs;
    const keepShape = axis === null ? inShape.map(() => 1) : reducedShape(inShape, normAxis('sum', inShape, axis), true);
    const g = gy.view(keepShape);
    const gx = broadcastRaw(g, inShape, scale);
    g.dispose();
    return [gx];
  },
});

/** Sum over `axis` (all elements when axis is null/undefined). */
export function sum(x: Tensor, axis: number | null = null, keepdim = false): Tensor {
  if (x.dtype !== 'f32') throw new Error(`sum: ${x.describe()} is not f32`);
  return sumOp.apply([x], { axis, keepdim, scale: 1 });
}

/** Mean over `axis` (all elements when null). */
export function mean(x: Tensor, axis: number | null = null, keepdim = false): Tensor {
  if (x.dtype !== 'f32') throw new Error(`mean: ${x.describe()} is not f32`);
  const n = axis === null ? x.size : x.shape[normAxis('mean', x.shape, axis)]!;
  return sumOp.apply([x], { axis, keepdim, scale: 1 / n });
}

const maxOp = defineOp<{ axis: number; keepdim: boolean }>({
  name: 'max',
  forward(ctx, [x], { axis, keepdim }) {
    const a = normAxis('max', x!.shape, axis);
    const [o, R, i] = split3(x!.shape, a);
    const out = Tensor.empty([o * i]); // [outer, inner]
    const idx = Tensor.empty([o * i], 'u32'); // argmax along the axis
    maxRaw(x!, out, idx, o, R, i);
    ctx.save(idx);
    ctx.extra.dims = [o, R, i];
    ctx.extra.inShape = x!.shape;
    idx.dispose();
    const res = out.view(reducedShape(x!.shape, a, keepdim));
    out.dispose();
    return res;
  },
  backward(ctx, gy) {
    const [o, R, i] = ctx.extra.dims as number[];
    const gx = Tensor.empty(ctx.extra.inShape as Shape); // [outer, R, inner]
    maxBwd.run({ gy, idx: ctx.saved[0]!, gx }, { outer: o!, R: R!, inner: i! });
    return [gx];
  },
});

const maxBwd = defineKernel({
  name: 'max_bwd',
  foldable: true,
  wgsl: /* wgsl */ `
// gx[o, r, i] = gy[o, i] if r == argmax[o, i] else 0. One thread per input element.
struct Params { outer: u32, R: u32, inner: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gy: array<f32>;        // [outer, inner]
@group(0) @binding(2) var<storage, read> idx: array<u32>;       // [outer, inner]
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;  // [outer, R, inner]
${main1d(256)} {
  let t = ${foldedIndex(256)};
  if (t >= p.outer * p.R * p.inner) { return; }
  let i = t % p.inner;
  let r = (t / p.inner) % p.R;
  let o = t / (p.inner * p.R);
  let k = o * p.inner + i;
  gx[t] = select(0.0, gy[k], idx[k] == r);
}`,
  grid: ({ outer, R, inner }) => [ceilDiv(outer! * R! * inner!, 256)],
});

/** Max over `axis`; the gradient goes to the first maximal element. */
export function max(x: Tensor, axis = -1, keepdim = false): Tensor {
  if (x.dtype !== 'f32') throw new Error(`max: ${x.describe()} is not f32`);
  return maxOp.apply([x], { axis, keepdim });
}

// ------------------------------------------------------------------ broadcastTo / sumTo (raw, for backward)
const bcastKernel = defineKernel({
  name: 'broadcast_to',
  foldable: true,
  wgsl: /* wgsl */ `
// out[i] = scale * x[bidx_sx(i)], x broadcast (numpy rules) to out's shape (up to 8 dims; strides 0 on broadcast dims).
// mode 1 (block): x's non-1 dims are one contiguous run of out's dims: ix = (i / inner) % size.
// mode 2 (gap): x = out with one contiguous run of dims broadcast: ix = (i / (R*inner)) * inner + i % inner.
struct Params { n: u32, ndim: u32, scale: f32, mode: u32, inner: u32, size: u32, R: u32, shape: ${DIMS_T}, sx: ${DIMS_T} }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // broadcastable to out
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [n]
${bcastIndexWgsl('sx')}
${main1d(256)} {
  let i = ${foldedIndex(256)};
  if (i >= p.n) { return; }
  var ix = 0u;
  if (p.mode == 1u) {
    ix = (i / p.inner) % p.size;
  } else if (p.mode == 2u) {
    ix = (i / (p.R * p.inner)) * p.inner + i % p.inner;
  } else {
    ix = bidx_sx(i);
  }
  out[i] = p.scale * x[ix];
}`,
  grid: ({ n }) => [ceilDiv(n!, 256)],
  loopTrips: loopCost(MAX_BCAST_DIMS), // mode 0: one loop over at most 8 dims
});

function broadcastRaw(x: Tensor, shape: Shape, scale = 1): Tensor {
  ref.broadcastShapes(x.shape, shape); // validates
  if (shape.length > MAX_BCAST_DIMS) throw new Error(`broadcastTo: ${shape.length} dims; at most ${MAX_BCAST_DIMS}`);
  const out = Tensor.empty(shape); // shape
  const n = out.size;
  if (n) {
    const fast = broadcastPattern(x.shape, shape);
    bcastKernel.run(
      { x, out },
      { n, ndim: shape.length, scale, ...fast, shape: padDims(shape), sx: broadcastStrides(x.shape, shape) },
    );
  }
  return out;
}

function scaleRaw(x: Tensor, scale: number): Tensor {
  return broadcastRaw(x, x.shape, scale);
}

/** Broadcast x to `shape` (a copy; gradient: sumTo). */
export const broadcastTo = defineOp<{ shape: Shape }>({
  name: 'broadcast_to',
  forward(ctx, [x], { shape }) {
    ctx.extra.inShape = x!.shape;
    return broadcastRaw(x!, shape);
  },
  backward(ctx, gy) {
    return [sumTo(gy, ctx.extra.inShape as Shape)];
  },
});

/**
 * Sum g (of a broadcast shape) back down to `shape` (numpy broadcasting in reverse). Returns a tensor the caller
 * owns (a view of g when the shapes are equal). Not recorded on the tape: used inside backward functions.
 */
export function sumTo(g: Tensor, shape: Shape): Tensor {
  if (sameShape(g.shape, shape)) return g.detach();
  const lead = g.shape.length - shape.length;
  if (lead < 0) throw new Error(`sumTo: cannot sum ${shapeStr(g.shape)} to ${shapeStr(shape)}`);
  let cur = g.detach();
  // Leading dims: one pass over [1, prod(lead), rest].
  if (lead > 0) {
    const R = g.shape.slice(0, lead).reduce((a, b) => a * b, 1);
    const inner = g.size / Math.max(R, 1);
    const s = sumRaw(cur, 1, R, inner);
    cur.dispose();
    cur = s.view(g.shape.slice(lead));
    s.dispose();
  }
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1 && cur.shape[d] !== 1) {
      const [o, R, i] = split3(cur.shape, d);
      const s = sumRaw(cur, o, R, i);
      const next = s.view(cur.shape.map((v, k) => (k === d ? 1 : v)));
      s.dispose();
      cur.dispose();
      cur = next;
    } else if (shape[d] !== cur.shape[d]) {
      cur.dispose();
      throw new Error(`sumTo: cannot sum ${shapeStr(g.shape)} to ${shapeStr(shape)}`);
    }
  }
  return cur;
}

// ------------------------------------------------------------------ references
export function refSum(x: F64, axis: number | null, keepdim = false, scale = 1): F64 {
  if (axis === null) {
    let s = 0;
    for (const v of x.data) s += v;
    return { data: Float64Array.of(s * scale), shape: keepdim ? x.shape.map(() => 1) : [] };
  }
  const a = normAxis('sum', x.shape, axis);
  const [o, R, i] = split3(x.shape, a);
  const out = new Float64Array(o * i);
  for (let oo = 0; oo < o; oo++) for (let r = 0; r < R; r++) for (let ii = 0; ii < i; ii++) out[oo * i + ii]! += x.data[(oo * R + r) * i + ii]!;
  return { data: out.map((v) => v * scale), shape: reducedShape(x.shape, a, keepdim) };
}

export function refSumGrad(x: F64, axis: number | null, gy: F64, scale = 1): F64 {
  if (axis === null) return { data: x.data.map(() => gy.data[0]! * scale), shape: [...x.shape] };
  const a = normAxis('sum', x.shape, axis);
  const [o, R, i] = split3(x.shape, a);
  const out = new Float64Array(x.data.length);
  for (let oo = 0; oo < o; oo++) for (let r = 0; r < R; r++) for (let ii = 0; ii < i; ii++) out[(oo * R + r) * i + ii] = gy.data[oo * i + ii]! * scale;
  return { data: out, shape: [...x.shape] };
}

export function refMax(x: F64, axis: number, keepdim = false): { out: F64; arg: number[] } {
  const a = normAxis('max', x.shape, axis);
  const [o, R, i] = split3(x.shape, a);
  const out = new Float64Array(o * i);
  const arg: number[] = [];
  for (let oo = 0; oo < o; oo++)
    for (let ii = 0; ii < i; ii++) {
      let best = -Infinity;
      let bi = 0;
      for (let r = 0; r < R; r++) {
        const v = x.data[(oo * R + r) * i + ii]!;
        if (v > best) {
          best = v;
          bi = r;
        }
      }
      out[oo * i + ii] = best;
      arg.push(bi);
    }
  return { out: { data: out, shape: reducedShape(x.shape, a, keepdim) }, arg };
}

export function refMaxGrad(x: F64, axis: number, gy: F64): F64 {
  const a = normAxis('max', x.shape, axis);
  const [o, R, i] = split3(x.shape, a);
  const { arg } = refMax(x, axis);
  const out = new Float64Array(x.data.length);
  for (let oo = 0; oo < o; oo++) for (let ii = 0; ii < i; ii++) out[(oo * R + arg[oo * i + ii]!) * i + ii] = gy.data[oo * i + ii]!;
  return { data: out, shape: [...x.shape] };
}
