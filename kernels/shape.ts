// kernels/shape.ts — data movement: transpose / permute, slice, concat, indexSelect / gatherRows, gather.
//
// Shapes: any rank up to 8 (after merging dims that stay adjacent), any 4-byte dtype (f32, i32, u32): every
// kernel here moves bits through u32 views, so one pipeline serves all dtypes and values are copied exactly.
//   permute(x [d0..dn-1], dims) -> [d_dims[0], ...]; transpose = permute with two dims swapped.
//   slice(x, axis, start, end) -> x with shape[axis] = end - start (negative start/end count from the end).
//   concat(xs, axis) -> the inputs joined along axis (all other dims equal).
//   indexSelect(x, axis, idx [...]) -> x.shape[:axis] + idx.shape + x.shape[axis+1:] (numpy `take`; torch's
//     index_select when idx is 1-D); gatherRows(table [V, D], idx [...]) -> [..., D] is indexSelect(table, 0, idx).
//   gather(x, axis, idx) -> idx.shape, out[.., j, ..] = x[.., idx[.., j, ..], ..] (torch.gather; here idx must
//     match x in every dim but axis).
//   Index tensors are i32 or u32. An index outside [0, A) (negative included) reads 0 and gets no gradient
//   (a GPU kernel cannot raise; torch raises). Index tensors never get gradients.
//
// Kernels (all grids are 1-D and fold into 2-D beyond 65535 workgroups):
//   strided_copy_rows{w=1,2,4}      dst[dst_off + sum c_k*ds_k] = src[src_off + sum c_k*ss_k] over an iteration
//                       shape: permute, slice and concat. Dims adjacent in both src and dst are merged on the host
//                       first; a copy that is one contiguous range becomes copyBufferToBuffer (slice/concat on
//                       axis 0). Otherwise a workgroup of TX x TY threads handles TY rows (outer coordinates decoded
//                       once per row), TX lanes walking the innermost dim; vectors when that run is contiguous on
//                       both sides. On llvmpipe it beats one thread per element (strided_copy, kept for innermost
//                       dims shorter than 4) by a wide margin on the attention head split ([256,50,2,32] by
//                       [0,2,1,3]), AttRec's [1000,5,3,50] permute, a [256,50,64] axis-1 slice, and even a permute
//                       with no contiguous run ([256,50,64] by [0,2,1]): the row decode is paid once per row, not
//                       per element (`copyVariant.mode = 'elements'` forces the per-element kernel, for benchmarks).
//   pad_axis            slice's backward: zeros outside [start, end) along the axis, one pass (no fill + copy);
//                       one thread per element, as gather_axis / gather_targets below.
//   index_select{w=1,2,4}      out[o, m, :] = x[o, idx[m], :]: a 16x16 workgroup copies 16 rows, 16 lanes across
//                       each row, widest vector dividing the row. On llvmpipe, D=64 with vec4 rows: the tile and
//                       one thread per vec4 about tie; with f32 rows and at D=150 (vec2) the tile is clearly ahead:
//                       one thread per element pays integer div/mod, scalarised on CPU SIMD. A thread-per-row loop
//                       was no faster and is uncoalesced on a real GPU.
//   gather_axis         torch.gather; gather_targets computes its backward's flat target index per element.
// Backward: permute -> inverse permute; slice -> pad_axis; concat -> slices; indexSelect / gather -> the
// deterministic segment-sum of kernels/scatter.ts (inverse index built on the GPU from idx, or on the host
// when the caller passes the host copy of idx, `hostIdx`).
// Memory traffic: each op reads and writes its output size once (4 bytes per element) plus the indices.
// Timings: `npm run bench -- shape` / docs/BENCHMARKS.md (rows shape.permute.*, shape.gather_rows.*).
import { ceilDiv, chunkRanges, defineKernel, defineOp, fillInPlace, loopBudget, loopCost, maxLoopIterations, ref, rt, shapeStr, Tensor, vec4Count, type Shape } from '../engine/index.js';
import { asU32, bcastIndex2Wgsl, DIMS_T, foldedIndex, kernelFamily, main1d, MAX_BCAST_DIMS, vecType, vecWidth, type VecWidth } from './common.js';
import { buildInverseIndex, scatterAddRows, segmentSumRows } from './scatter.js';

// vecWidth and VecWidth moved to common.ts; re-exported here for imports written before the move.
export { vecWidth, type VecWidth } from './common.js';

type F64 = ref.F64;
const WG = 256;
const MAX_DIMS = MAX_BCAST_DIMS;

function prod(s: readonly number[]): number {
  return s.reduce((a, b) => a * b, 1);
}

function normAxis(op: string, shape: Shape, axis: number, what = 'axis'): number {
  const a = axis < 0 ? axis + shape.length : axis;
  if (!Number.isInteger(axis) || a < 0 || a >= shape.length) throw new Error(`${op}: ${what} ${axis} is out of range for shape ${shapeStr(shape)}`);
  return a;
}

/** [outer, A, inner] around `axis`. */
function split3(shape: Shape, axis: number): [number, number, number] {
  return [prod(shape.slice(0, axis)), shape[axis]!, prod(shape.slice(axis + 1))];
}

function checkIdx(op: string, idx: Tensor): void {
  if (idx.dtype === 'f32') throw new Error(`${op}: index ${idx.describe()} must be i32 or u32`);
}

// ------------------------------------------------------------------------------------------ strided copy
const stridedCopy = defineKernel({
  name: 'strided_copy',
  foldable: true,
  wgsl: /* wgsl */ `
// dst[dst_off + sum_k c_k*ds[k]] = src[src_off + sum_k c_k*ss[k]] for every coordinate c of shape (row-major
// linear index i over n = prod(shape)). Bit copy (u32 views of any 4-byte dtype). Up to 8 dims.
struct Params { n: u32, ndim: u32, src_off: u32, dst_off: u32, shape: ${DIMS_T}, ss: ${DIMS_T}, ds: ${DIMS_T} }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;        // strided view, any size
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;  // strided view, any size
${bcastIndex2Wgsl('ss', 'ds')}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.n) { return; }
  let at = bidx2(i);
  dst[p.dst_off + at.y] = src[p.src_off + at.x];
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  loopTrips: loopCost(MAX_DIMS),
});

/** The same copy by rows (outer coordinates decoded once per row), rows read as vecW: `strided_copy_rows{w=4}`. */
const stridedRows = kernelFamily('strided_copy_rows', ({ w }: { w: VecWidth }) => {
  const T = vecType(w, 'u32');
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// The same copy by rows: each of the TY rows of a workgroup decodes its outer coordinates once, then TX lanes
// walk the innermost dim (R ${T}, strides sin / din; both 1 for the vector kernels). Bit copy.
override TX: u32 = 16u;
override TY: u32 = 16u;
struct Params { rows: u32, R: u32, sin: u32, din: u32, ndim: u32, src_off: u32, dst_off: u32, shape: ${DIMS_T}, ss: ${DIMS_T}, ds: ${DIMS_T} }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<${T}>;        // strided rows of R
@group(0) @binding(2) var<storage, read_write> dst: array<${T}>;  // strided rows of R
${bcastIndex2Wgsl('ss', 'ds')}
${main1d('TX, TY')} {
  let r = ${foldedIndex('TY', 'lid.y')};
  if (r >= p.rows) { return; }
  let at = bidx2(r);
  let si = p.src_off + at.x;
  let di = p.dst_off + at.y;
  for (var c = lid.x; c < p.R; c = c + TX) { dst[di + c * p.din] = src[si + c * p.sin]; }
}`,
    grid: ({ rows }, wg) => [ceilDiv(rows!, wg[1])],
    loopTrips: ({ R }, { TX }) => loopCost(MAX_DIMS) + loopCost(ceilDiv(R!, TX!)),
  };
});

/** Copy-kernel choice (benchmarks): 'auto' uses the row kernel when the innermost run is contiguous. */
export const copyVariant: { mode: 'auto' | 'elements' } = { mode: 'auto' };

function contiguousStrides(shape: readonly number[]): number[] {
  return ref.strides(shape);
}

/**
 * Copy the elements of an iteration `shape` from src (strides ss, offset srcOff, in elements) to dst (strides
 * ds, offset dstOff). Merges dims, and uses a buffer copy when the whole move is one contiguous range.
 */
function copyStrided(src: Tensor, dst: Tensor, shape: readonly number[], ss: readonly number[], ds: readonly number[], srcOff: number, dstOff: number): void {
  const n = prod(shape);
  if (n === 0) return;
  const dims: Array<[number, number, number]> = []; // [size, ss, ds], outermost first
  for (let k = 0; k < shape.length; k++) if (shape[k] !== 1) dims.push([shape[k]!, ss[k]!, ds[k]!]);
  const merged: Array<[number, number, number]> = [];
  for (const d of dims) {
    const last = merged[merged.length - 1];
    if (last && last[1] === d[1] * d[0] && last[2] === d[2] * d[0]) merged[merged.length - 1] = [last[0] * d[0], d[1], d[2]];
    else merged.push([...d]);
  }
  if (merged.length === 0 || (merged.length === 1 && merged[0]![1] === 1 && merged[0]![2] === 1)) {
    rt().queue.copy(src.buffer, src.byteOffset + srcOff * 4, dst.buffer, dst.byteOffset + dstOff * 4, n * 4);
    return;
  }
  if (merged.length > MAX_DIMS) throw new Error(`strided_copy: ${merged.length} dims after merging; at most ${MAX_DIMS}`);
  const pad = (xs: number[], v: number): number[] => [...xs, ...new Array<number>(MAX_DIMS - xs.length).fill(v)];
  const inner = merged[merged.length - 1]!;
  if (copyVariant.mode === 'auto' && inner[0] >= 4) {
    // Rows: the outer dims; vectors when the run is contiguous on both sides and strides and offsets stay
    // multiples of the vector width.
    const outerDims = merged.slice(0, -1);
    const all = [inner[0], srcOff, dstOff, ...outerDims.flatMap((d) => [d[1], d[2]])];
    const contiguous = inner[1] === 1 && inner[2] === 1;
    const w: VecWidth = !contiguous ? 1 : all.every((v) => v % 4 === 0) ? 4 : all.every((v) => v % 2 === 0) ? 2 : 1;
    const R = inner[0] / w;
    const tx = R >= 16 ? 16 : R >= 8 ? 8 : 4;
    // A row longer than one invocation's loop budget allows (R / TX iterations per lane) takes the element kernel.
    const rowsFit = ceilDiv(R, tx) <= maxLoopIterations(loopBudget(), 0, loopCost(MAX_DIMS));
    if (rowsFit) {
    stridedRows({ w }).run(
      { src: asU32(src), dst: asU32(dst) },
      {
        rows: n / inner[0],
        R,
        sin: contiguous ? 1 : inner[1],
        din: contiguous ? 1 : inner[2],
        ndim: outerDims.length,
        src_off: srcOff / w,
        dst_off: dstOff / w,
        shape: pad(outerDims.map((d) => d[0]), 1),
        ss: pad(outerDims.map((d) => d[1] / w), 0),
        ds: pad(outerDims.map((d) => d[2] / w), 0),
      },
      { overrides: { TX: tx, TY: 256 / tx } },
    );
    return;
    }
  }
  stridedCopy.run(
    { src: asU32(src), dst: asU32(dst) },
    {
      n,
      ndim: merged.length,
      src_off: srcOff,
      dst_off: dstOff,
      shape: pad(merged.map((d) => d[0]), 1),
      ss: pad(merged.map((d) => d[1]), 0),
      ds: pad(merged.map((d) => d[2]), 0),
    },
  );
}

// ------------------------------------------------------------------------------------------ permute / transpose
function permuteRaw(x: Tensor, dims: readonly number[]): Tensor {
  const outShape = dims.map((d) => x.shape[d]!);
  const out = Tensor.empty(outShape, x.dtype); // x.shape permuted by dims
  const sx = contiguousStrides(x.shape);
  copyStrided(x, out, outShape, dims.map((d) => sx[d]!), contiguousStrides(outShape), 0, 0);
  return out;
}

function checkPerm(op: string, shape: Shape, dims: readonly number[]): number[] {
  const nd = shape.length;
  const norm = dims.map((d) => (d < 0 ? d + nd : d));
  const ok = dims.length === nd && norm.every((d) => Number.isInteger(d) && d >= 0 && d < nd) && new Set(norm).size === nd;
  if (!ok) throw new Error(`${op}: dims [${dims.join(', ')}] are not a permutation of the ${nd} dims of shape ${shapeStr(shape)}`);
  return norm;
}

const permuteOp = defineOp<{ dims: readonly number[] }>({
  name: 'permute',
  forward(_ctx, [x], { dims }) {
    return permuteRaw(x!, dims);
  },
  backward(ctx, gy) {
    const inv = new Array<number>(ctx.attrs.dims.length);
    ctx.attrs.dims.forEach((d, k) => (inv[d] = k));
    return [permuteRaw(gy, inv)];
  },
});

/** out = x with its dims reordered: out.shape[k] = x.shape[dims[k]] (a copy). Negative dims count from the end. */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  return permuteOp.apply([x], { dims: checkPerm('permute', x.shape, dims) });
}

/** Swap two dims (a copy). */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  const a = normAxis('transpose', x.shape, dim0, 'dim0');
  const b = normAxis('transpose', x.shape, dim1, 'dim1');
  const dims = x.shape.map((_, i) => i);
  dims[a] = b;
  dims[b] = a;
  return permuteOp.apply([x], { dims });
}

// ------------------------------------------------------------------------------------------ slice
// pad_axis{vec4} (inner a multiple of 4): n and inner count vec4s of 4 adjacent elements (llvmpipe loads and
// stores per instruction, so vec4 runs faster there).
const padAxisKernels = [false, true].map((v) => defineKernel({
  name: v ? 'pad_axis{vec4}' : 'pad_axis',
  foldable: true,
  wgsl: /* wgsl */ `
// out[o, a, i] = g[o, a - start, i] for start <= a < start + len, else 0 (slice's backward). Bit copy.
struct Params { n: u32, A: u32, inner: u32, start: u32, len: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<${v ? 'vec4<u32>' : 'u32'}>;          // [outer, len, inner]
@group(0) @binding(2) var<storage, read_write> out: array<${v ? 'vec4<u32>' : 'u32'}>;  // [outer, A, inner]
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.n) { return; }
  let i = t % p.inner;
  let a = (t / p.inner) % p.A;
  let o = t / (p.inner * p.A);
  var v = ${v ? 'vec4<u32>(0u)' : '0u'};
  if (a >= p.start && a < p.start + p.len) { v = g[(o * p.len + a - p.start) * p.inner + i]; }
  out[t] = v;
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ out: n! }),
}));

function sliceRaw(x: Tensor, axis: number, start: number, end: number): Tensor {
  const [outer, A, inner] = split3(x.shape, axis);
  const len = end - start;
  const out = Tensor.empty(x.shape.map((d, k) => (k === axis ? len : d)), x.dtype); // x.shape with [axis] = len
  copyStrided(x, out, [outer, len, inner], [A * inner, inner, 1], [len * inner, inner, 1], start * inner, 0);
  return out;
}

const sliceOp = defineOp<{ axis: number; start: number; end: number }>({
  name: 'slice',
  forward(ctx, [x], { axis, start, end }) {
    ctx.extra.inShape = x!.shape;
    return sliceRaw(x!, axis, start, end);
  },
  backward(ctx, gy) {
    const inShape = ctx.extra.inShape as Shape;
    const { axis, start, end } = ctx.attrs;
    const [, A, inner] = split3(inShape, axis);
    const gx = Tensor.empty(inShape); // x.shape
    if (gx.size === 0) return [gx];
    if (end === start) fillInPlace(gx, 0); // an empty slice: nothing flows back
    else {
      const v = vec4Count(inner, gy, gx); // vec4s per row
      padAxisKernels[v ? 1 : 0]!.run({ g: asU32(gy), out: asU32(gx) }, { n: v ? gx.size / 4 : gx.size, A, inner: v || inner, start, len: end - start });
    }
    return [gx];
  },
});

/** x[..., start:end, ...] along `axis` (a copy). Negative start/end count from the end; 0 <= start <= end <= n. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const a = normAxis('slice', x.shape, axis);
  const n = x.shape[a]!;
  const s = start < 0 ? start + n : start;
  const e = end < 0 ? end + n : end;
  if (!Number.isInteger(start) || !Number.isInteger(end) || s < 0 || e > n || s > e) {
    throw new Error(`slice: [${start}, ${end}) is not a valid range of axis ${axis} (length ${n}) of shape ${shapeStr(x.shape)}`);
  }
  return sliceOp.apply([x], { axis: a, start: s, end: e });
}

// ------------------------------------------------------------------------------------------ concat
const concatOp = defineOp<{ axis: number }>({
  name: 'concat',
  forward(ctx, xs, { axis }) {
    const first = xs[0]!;
    const total = xs.reduce((s, x) => s + x.shape[axis]!, 0);
    const outShape = first.shape.map((d, k) => (k === axis ? total : d));
    const out = Tensor.empty(outShape, first.dtype); // inputs joined along axis
    const [outer, , inner] = split3(outShape, axis);
    let at = 0;
    for (const x of xs) {
      const A = x.shape[axis]!;
      copyStrided(x, out, [outer, A, inner], [A * inner, inner, 1], [total * inner, inner, 1], 0, at * inner);
      at += A;
    }
    ctx.extra.sizes = xs.map((x) => x.shape[axis]!);
    return out;
  },
  backward(ctx, gy) {
    const sizes = ctx.extra.sizes as number[];
    let at = 0;
    return sizes.map((A, i) => {
      const g = ctx.needsGrad[i] ? sliceRaw(gy, ctx.attrs.axis, at, at + A) : null;
      at += A;
      return g;
    });
  },
});

/** Join tensors along `axis` (all other dims and the dtype equal). */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors given');
  const first = xs[0]!;
  const a = normAxis('concat', first.shape, axis);
  for (const x of xs) {
    const ok = x.ndim === first.ndim && x.dtype === first.dtype && x.shape.every((d, k) => k === a || d === first.shape[k]);
    if (!ok) throw new Error(`concat: shapes ${xs.map((t) => `${t.dtype}${shapeStr(t.shape)}`).join(', ')} do not match outside axis ${axis}`);
  }
  return concatOp.apply(xs, { axis: a });
}

// ------------------------------------------------------------------------------------------ indexSelect / gatherRows
const TX = 16; // lanes across a row (coalesced on a GPU); TY rows per workgroup
const TY = 16;

/** out[o, m, :] = x[o, idx[m], :], rows moved as vecW: `index_select{w=4}`. */
const indexSelectKernel = kernelFamily('index_select', ({ w }: { w: VecWidth }) => {
  const T = vecType(w, 'u32');
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// out[o, m, :] = x[o, idx[m], :], zeros when idx[m] is outside [0, A). A ${TX}x${TY} workgroup copies ${TY} rows:
// ${TX} lanes stride across a row (inner counted in ${T}), so there is no per-element div/mod. Bit copy.
// Columns [c0, c1) per dispatch (all of them, unless a lane's loop would pass llvmpipe's loop budget).
struct Params { rows: u32, A: u32, M: u32, inner: u32, c0: u32, c1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${T}>;          // [outer, A, inner]
@group(0) @binding(2) var<storage, read> idx: array<u32>;         // [M] (i32 ids read as u32)
@group(0) @binding(3) var<storage, read_write> out: array<${T}>;  // [outer, M, inner]
${main1d(`${TX}, ${TY}`)} {
  let r = ${foldedIndex(TY, 'lid.y')}; // output row = o * M + m
  if (r >= p.rows) { return; }
  let o = r / p.M;
  let a = idx[r - o * p.M];
  let dst = r * p.inner;
  if (a < p.A) {
    let src = (o * p.A + a) * p.inner;
    for (var c = p.c0 + lid.x; c < p.c1; c = c + ${TX}u) { out[dst + c] = x[src + c]; }
  } else {
    for (var c = p.c0 + lid.x; c < p.c1; c = c + ${TX}u) { out[dst + c] = ${T}(0u); }
  }
}`,
    grid: ({ rows }) => [ceilDiv(rows!, TY)],
    minSizes: ({ rows, M, inner }) => ({ out: rows! * inner!, idx: M! }),
    loopTrips: ({ c0, c1 }) => loopCost(ceilDiv(c1! - c0!, TX)),
  };
});

/**
 * out [outer, M, inner] = rows of x [outer, A, inner] picked by idx [M] (raw, no autograd). Writes into `out`.
 * `width` forces the vector width (benchmarks); default the widest dividing inner.
 */
export function indexSelectInto(x: Tensor, idx: Tensor, out: Tensor, outer: number, A: number, inner: number, width?: VecWidth): void {
  const M = idx.size;
  if (outer * M * inner === 0) return;
  const w = width ?? vecWidth(inner);
  if (inner % w) throw new Error(`index_select: width ${w} does not divide inner ${inner}`);
  const iw = inner / w;
  for (const [c0, c1] of chunkRanges(iw, maxLoopIterations(loopBudget()) * TX)) {
    indexSelectKernel({ w }).run({ x: asU32(x), idx: asU32(idx), out: asU32(out) }, { rows: outer * M, A, M, inner: iw, c0, c1 });
  }
}

interface IndexSelectAttrs {
  axis: number;
  /** Host copy of idx (row-major), for a host-built inverse index in backward. */
  hostIdx: Int32Array | null;
}

const indexSelectOp = defineOp<IndexSelectAttrs>({
  name: 'index_select',
  forward(ctx, [x, idx], { axis }) {
    const [outer, A, inner] = split3(x!.shape, axis);
    const out = Tensor.empty([...x!.shape.slice(0, axis), ...idx!.shape, ...x!.shape.slice(axis + 1)], x!.dtype); // x.shape[:axis] + idx.shape + x.shape[axis+1:]
    indexSelectInto(x!, idx!, out, outer, A, inner);
    ctx.extra.dims = [outer, A, inner, idx!.size];
    ctx.extra.inShape = x!.shape;
    if (ctx.needsGrad[0] && !ctx.attrs.hostIdx) ctx.save(idx!);
    return out;
  },
  backward(ctx, gy) {
    if (!ctx.needsGrad[0]) return [null, null];
    const [outer, A, inner, M] = ctx.extra.dims as number[];
    const g3 = gy.view([outer!, M!, inner!]); // [outer, M, inner]
    const gx3 = scatterAddRows(g3, ctx.attrs.hostIdx ?? ctx.saved[0]!, A!); // [outer, A, inner]
    g3.dispose();
    const gx = gx3.view(ctx.extra.inShape as Shape); // x.shape
    gx3.dispose();
    return [gx, null];
  },
});

export interface IndexOptions {
  /** The host copy of idx (same order as the tensor): backward then builds its inverse index on the host. */
  hostIdx?: ArrayLike<number>;
}

function hostCopy(op: string, idx: Tensor, host: ArrayLike<number> | undefined): Int32Array | null {
  if (!host) return null;
  if (host.length !== idx.size) throw new Error(`${op}: hostIdx has ${host.length} values, idx ${idx.describe()} has ${idx.size}`);
  return Int32Array.from(host); // a snapshot: the loader may reuse its array before backward runs
}

/** x.shape[:axis] + idx.shape + x.shape[axis+1:]: slices of x along axis picked by idx (numpy take). */
export function indexSelect(x: Tensor, axis: number, idx: Tensor, opts: IndexOptions = {}): Tensor {
  const a = normAxis('indexSelect', x.shape, axis);
  checkIdx('indexSelect', idx);
  return indexSelectOp.apply([x, idx], { axis: a, hostIdx: hostCopy('indexSelect', idx, opts.hostIdx) });
}

/** table [V, D], idx [...] -> [..., D]: row lookup (an embedding without padding semantics). */
export function gatherRows(table: Tensor, idx: Tensor, opts: IndexOptions = {}): Tensor {
  if (table.ndim !== 2) throw new Error(`gatherRows: table ${shapeStr(table.shape)} must be [V, D]`);
  checkIdx('gatherRows', idx);
  return indexSelectOp.apply([table, idx], { axis: 0, hostIdx: hostCopy('gatherRows', idx, opts.hostIdx) });
}

// ------------------------------------------------------------------------------------------ gather (torch.gather)
/** Where output t of gather reads: the flat index into x [outer, A, inner], 0xffffffff when idx[t] is out of range. */
const GATHER_SOURCE_WGSL = /* wgsl */ `
fn gather_source(t: u32) -> u32 {
  let i = t % p.inner;
  let o = t / (p.inner * p.J);
  let a = idx[t];
  return select(0xffffffffu, (o * p.A + a) * p.inner + i, a < p.A);
}`;

const gatherKernel = defineKernel({
  name: 'gather_axis',
  foldable: true,
  wgsl: /* wgsl */ `
// out[o, j, i] = x[o, idx[o, j, i], i], 0 when the index is outside [0, A). One thread per output element. Bit copy.
struct Params { n: u32, A: u32, J: u32, inner: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;          // [outer, A, inner]
@group(0) @binding(2) var<storage, read> idx: array<u32>;        // [outer, J, inner]
@group(0) @binding(3) var<storage, read_write> out: array<u32>;  // [outer, J, inner]
${GATHER_SOURCE_WGSL}
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.n) { return; }
  let s = gather_source(t);
  var v = 0u;
  if (s != 0xffffffffu) { v = x[s]; }
  out[t] = v;
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ idx: n!, out: n! }),
});

const gatherTargets = defineKernel({
  name: 'gather_targets',
  foldable: true,
  wgsl: /* wgsl */ `
// tgt[t] = flat index into x [outer, A, inner] that output t of gather read (0xffffffff when out of range):
// the row ids of gather's backward segment-sum.
struct Params { n: u32, A: u32, J: u32, inner: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> idx: array<u32>;         // [outer, J, inner]
@group(0) @binding(2) var<storage, read_write> tgt: array<u32>;   // [outer, J, inner]
${GATHER_SOURCE_WGSL}
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t < p.n) { tgt[t] = gather_source(t); }
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ idx: n!, tgt: n! }),
});

const gatherOp = defineOp<{ axis: number }>({
  name: 'gather',
  forward(ctx, [x, idx], { axis }) {
    const [, A, inner] = split3(x!.shape, axis);
    const J = idx!.shape[axis]!;
    const out = Tensor.empty(idx!.shape, x!.dtype); // idx.shape
    if (out.size) gatherKernel.run({ x: asU32(x!), idx: asU32(idx!), out: asU32(out) }, { n: out.size, A, J, inner });
    ctx.extra.inShape = x!.shape;
    if (ctx.needsGrad[0]) ctx.save(idx!);
    return out;
  },
  backward(ctx, gy) {
    if (!ctx.needsGrad[0]) return [null, null];
    const inShape = ctx.extra.inShape as Shape;
    const axis = ctx.attrs.axis;
    const [, A, inner] = split3(inShape, axis);
    const idx = ctx.saved[0]!;
    const V = prod(inShape);
    const gx = Tensor.empty(inShape); // x.shape
    if (V === 0) return [gx, null];
    const tgt = Tensor.empty([idx.size], 'u32'); // [M] flat targets
    if (idx.size) gatherTargets.run({ idx: asU32(idx), tgt }, { n: idx.size, A, J: idx.shape[axis]!, inner });
    const csr = buildInverseIndex(tgt, V);
    const g2 = gy.view([gy.size, 1]); // [M, 1]
    const flat = gx.view([V, 1]); // [V, 1]
    segmentSumRows(g2, csr, { out: flat });
    for (const t of [g2, flat, tgt]) t.dispose();
    csr.dispose();
    return [gx, null];
  },
});

/** torch.gather: out = idx.shape, out[.., j, ..] = x[.., idx[.., j, ..], ..] along axis; idx matches x elsewhere. */
export function gather(x: Tensor, axis: number, idx: Tensor): Tensor {
  const a = normAxis('gather', x.shape, axis);
  checkIdx('gather', idx);
  if (idx.ndim !== x.ndim || idx.shape.some((d, k) => k !== a && d !== x.shape[k])) {
    throw new Error(`gather: index ${shapeStr(idx.shape)} must match x ${shapeStr(x.shape)} in every dim but axis ${axis}`);
  }
  return gatherOp.apply([x, idx], { axis: a });
}

// ------------------------------------------------------------------------------------------ references
function unravel(i: number, shape: readonly number[]): number[] {
  const c = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    c[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return c;
}

function ravel(c: readonly number[], shape: readonly number[]): number {
  let i = 0;
  for (let d = 0; d < shape.length; d++) i = i * shape[d]! + c[d]!;
  return i;
}

export function refPermute(x: F64, dims: readonly number[]): F64 {
  const nd = x.shape.length;
  const dn = dims.map((d) => (d < 0 ? d + nd : d));
  const shape = dn.map((d) => x.shape[d]!);
  const out = new Float64Array(x.data.length);
  for (let i = 0; i < out.length; i++) {
    const c = unravel(i, shape);
    const src = new Array<number>(nd);
    dn.forEach((d, k) => (src[d] = c[k]!));
    out[i] = x.data[ravel(src, x.shape)]!;
  }
  return { data: out, shape };
}

export function refPermuteGrad(x: F64, dims: readonly number[], gy: F64): F64 {
  const nd = x.shape.length;
  const dn = dims.map((d) => (d < 0 ? d + nd : d));
  const inv = new Array<number>(nd);
  dn.forEach((d, k) => (inv[d] = k));
  return refPermute(gy, inv);
}

export function refTransposeDims(nd: number, d0: number, d1: number): number[] {
  const dims = Array.from({ length: nd }, (_, i) => i);
  const a = d0 < 0 ? d0 + nd : d0;
  const b = d1 < 0 ? d1 + nd : d1;
  dims[a] = b;
  dims[b] = a;
  return dims;
}

export function refSlice(x: F64, axis: number, start: number, end: number): F64 {
  const a = axis < 0 ? axis + x.shape.length : axis;
  const [outer, A, inner] = split3(x.shape, a);
  const len = end - start;
  const out = new Float64Array(outer * len * inner);
  for (let o = 0; o < outer; o++) for (let r = 0; r < len; r++) for (let i = 0; i < inner; i++) out[(o * len + r) * inner + i] = x.data[(o * A + start + r) * inner + i]!;
  return { data: out, shape: x.shape.map((d, k) => (k === a ? len : d)) };
}

export function refSliceGrad(x: F64, axis: number, start: number, gy: F64): F64 {
  const a = axis < 0 ? axis + x.shape.length : axis;
  const [outer, A, inner] = split3(x.shape, a);
  const len = gy.shape[a]!;
  const out = new Float64Array(x.data.length);
  for (let o = 0; o < outer; o++) for (let r = 0; r < len; r++) for (let i = 0; i < inner; i++) out[(o * A + start + r) * inner + i] = gy.data[(o * len + r) * inner + i]!;
  return { data: out, shape: [...x.shape] };
}

export function refConcat(xs: F64[], axis: number): F64 {
  const a = axis < 0 ? axis + xs[0]!.shape.length : axis;
  const total = xs.reduce((s, x) => s + x.shape[a]!, 0);
  const shape = xs[0]!.shape.map((d, k) => (k === a ? total : d));
  const [outer, , inner] = split3(shape, a);
  const out = new Float64Array(prod(shape));
  let at = 0;
  for (const x of xs) {
    const A = x.shape[a]!;
    for (let o = 0; o < outer; o++) for (let r = 0; r < A; r++) for (let i = 0; i < inner; i++) out[(o * total + at + r) * inner + i] = x.data[(o * A + r) * inner + i]!;
    at += A;
  }
  return { data: out, shape };
}

export function refConcatGrad(xs: F64[], axis: number, gy: F64): F64[] {
  const a = axis < 0 ? axis + xs[0]!.shape.length : axis;
  let at = 0;
  return xs.map((x) => {
    const g = refSlice(gy, a, at, at + x.shape[a]!);
    at += x.shape[a]!;
    return g;
  });
}

/** numpy take along axis; indices outside [0, A) read 0. */
export function refIndexSelect(x: F64, axis: number, idx: F64): F64 {
  const a = axis < 0 ? axis + x.shape.length : axis;
  const [outer, A, inner] = split3(x.shape, a);
  const M = idx.data.length;
  const out = new Float64Array(outer * M * inner);
  for (let o = 0; o < outer; o++)
    for (let m = 0; m < M; m++) {
      const r = idx.data[m]!;
      if (r < 0 || r >= A) continue;
      for (let i = 0; i < inner; i++) out[(o * M + m) * inner + i] = x.data[(o * A + r) * inner + i]!;
    }
  return { data: out, shape: [...x.shape.slice(0, a), ...idx.shape, ...x.shape.slice(a + 1)] };
}

export function refIndexSelectGrad(x: F64, axis: number, idx: F64, gy: F64): F64 {
  const a = axis < 0 ? axis + x.shape.length : axis;
  const [outer, A, inner] = split3(x.shape, a);
  const M = idx.data.length;
  const out = new Float64Array(x.data.length);
  for (let o = 0; o < outer; o++)
    for (let m = 0; m < M; m++) {
      const r = idx.data[m]!;
      if (r < 0 || r >= A) continue;
      for (let i = 0; i < inner; i++) out[(o * A + r) * inner + i]! += gy.data[(o * M + m) * inner + i]!;
    }
  return { data: out, shape: [...x.shape] };
}

/** torch.gather; indices outside [0, A) read 0. */
export function refGather(x: F64, axis: number, idx: F64): F64 {
  const a = axis < 0 ? axis + x.shape.length : axis;
  const out = new Float64Array(idx.data.length);
  for (let t = 0; t < out.length; t++) {
    const c = unravel(t, idx.shape);
    const r = idx.data[t]!;
    if (r < 0 || r >= x.shape[a]!) continue;
    c[a] = r;
    out[t] = x.data[ravel(c, x.shape)]!;
  }
  return { data: out, shape: [...idx.shape] };
}

export function refGatherGrad(x: F64, axis: number, idx: F64, gy: F64): F64 {
  const a = axis < 0 ? axis + x.shape.length : axis;
  const out = new Float64Array(x.data.length);
  for (let t = 0; t < idx.data.length; t++) {
    const c = unravel(t, idx.shape);
    const r = idx.data[t]!;
    if (r < 0 || r >= x.shape[a]!) continue;
    c[a] = r;
    out[ravel(c, x.shape)]! += gy.data[t]!;
  }
  return { data: out, shape: [...x.shape] };
}
