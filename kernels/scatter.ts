// kernels/scatter.ts — deterministic segment-sum of rows by index (no float atomics; WGSL has none).
//
// Computes, for row ids idx [M] (values in 0..V-1) and rows src [outer, M, D]:
//   out[o, v, :] = sum over positions m with idx[m] == v of src[o, m, :], added in ASCENDING m
// so the result is bit-reproducible (and bit-equal to a sequential f32 sum on the host, see refSegmentSumF32).
// Every embedding-style backward (embedding, indexSelect, gather) goes through it, and so do the table gradients
// of the fused id losses (infonce, pairwise_sigmoid, bce_neg_sampling) through buildRowIndex / scatterRows: the
// entries of their id lists grouped by id, then rows_scatter{D} sums coef[e] * x[e / K] per table row (below).
//
// Two steps:
//  1. an inverse index (CSR): offsets [V+1] and perm [M]; the positions of id v are
//     perm[offsets[v] .. offsets[v+1]), ascending. Ids outside [0, V) (negative i32 included) and the
//     `exclude` id (padding) fall into a sink segment after offsets[V]: they contribute to no row.
//     Built either
//       - on the host from the ids array (counting sort, O(M + V), then two uploads) when the ids are host
//         data (the data loader has them): `buildInverseIndex(hostIds, V)`; or
//       - on the GPU from an ids tensor, without any readback: a stable LSD radix sort of the keys
//         min(id, V) with the positions as values, ceil(bits(V+1)/8) passes of <= 8-bit digits (2 passes for
//         V = 12,103). Each pass: csr_rank (one workgroup per block of BLOCK=256 positions: the digits go to
//         workgroup memory, then one lane walks the block in order: each position's stable rank among equal
//         digits and the block's per-digit counts), csr_scan (one workgroup: exclusive scan of the digit-major
//         [bins, blocks] count table), csr_scatter (dst = scanned[digit, block] + rank). Then csr_offsets turns
//         the sorted keys into offsets (thread s writes offsets[v] = s for v in (key[s-1], key[s]]).
//         3 * passes + 1 dispatches, integer-only, no atomics. On llvmpipe this build costs well more than the
//         host one (bench rows scatter.fused vs scatter.hostcsr time the whole segment sum with each): pass host
//         ids when you have them.
//         Rejected by benchmark: a parallel rank (each lane compares against the earlier digits, O(BLOCK^2) per
//         block) and workgroup atomic<u32> counts (atomics are slow on llvmpipe), both slower than the one-lane walk.
//         Rejected: a histogram with atomic<u32> counts + atomic placement (the order inside a segment then
//         depends on scheduling and needs a segmented sort afterwards, O(len^2) on a padding-sized segment);
//         one thread per output row scanning all ids (O(V*M) = 3e8 compares at S3-Rec shapes).
//  2. segment_sum_rows{w=1,2,4}: a 16x16 workgroup handles 16 output rows, 16 lanes across each row with
//     the widest vector dividing D; each lane loops over the row's segment (src rows gathered through perm).
//     Compared on llvmpipe at V=12,103 D=64 M=12,800: with vec4 rows the tile and one thread per vec4 tie; with
//     f32 rows the tile is well ahead of one thread per f32 (per-element integer div/mod is scalarised on CPU
//     SIMD). The vector width matters most; the tile also coalesces on GPUs. Timings: `npm run bench -- scatter`
//     / docs/BENCHMARKS.md. Modes: dense (writes every row, empty segments give 0),
//     touched (writes only rows with a non-empty segment, into a caller-supplied out), accumulate
//     (out[v] += segment sum, touched rows only).
//     llvmpipe's loop budget (65,535 iterations per invocation, all loops together): a segment can hold all M
//     positions (a padding id), so past the budget each segment is summed in pieces of `len` positions per
//     dispatch (running sums in a scratch, the mode applied by the last piece: bit-identical); the GPU build's
//     scan runs in ordered dispatches with a carry, and csr_offsets (whose thread may fill a gap of V ids) gives
//     way to a binary search (csr_offsets_search) when V passes the budget.
//
// Memory traffic: GPU CSR ~ (4 + 16*passes) * M bytes + the count tables; segment sum reads M*D*outer floats
// (+ M + V ids), writes V*D*outer floats (dense) or only the touched rows.
import { ceilDiv, chunkRanges, defineKernel, fillInPlace, loopBudget, loopCost, maxLoopIterations, ref, shapeStr, Tensor, type Bindable } from '../engine/index.js';
import { asU32, FOLDED_GROUP, foldedIndex, forSlots, kernelFamily, lanesFor, main1d, slotsCost, slotsConst, vecType, vecWidth, type VecWidth } from './common.js';

// asU32 moved to common.ts; re-exported here for imports written before the move.
export { asU32 } from './common.js';

type F64 = ref.F64;

/** An inverse index of M row ids over V rows (see the header). The owner disposes it. */
export interface Csr {
  readonly V: number;
  /** Number of positions (ids) indexed, sink positions included. */
  readonly M: number;
  /** [V+1] u32: positions of id v are perm[offsets[v] .. offsets[v+1]); offsets[V] = number of counted ids. */
  readonly offsets: Tensor;
  /** [max(M, 1)] u32: positions sorted by (id, position); the dropped ones (sink) last. */
  readonly perm: Tensor;
  readonly builtOn: 'host' | 'gpu';
  dispose(): void;
}

export interface CsrOptions {
  /** An id that contributes to no row (a padding index): its positions go to the sink. */
  exclude?: number | null;
}

const NONE = 0xffffffff;
const BLOCK = 256; // positions per csr_rank workgroup (64 was slower at V=12,103 M=12,800, 128 and 256 alike; see the header)
const SCAN_WG = 256;

function excludeValue(V: number, exclude: number | null | undefined): number {
  if (exclude === null || exclude === undefined) return NONE;
  if (!Number.isInteger(exclude)) throw new Error(`buildInverseIndex: exclude=${exclude} is not an integer`);
  return exclude >= 0 && exclude < V ? exclude : NONE; // an id outside [0, V) is dropped anyway
}

// ------------------------------------------------------------------------------------------ host build
/** Counting sort on the host: the CSR as typed arrays (the float64 reference of the GPU build, bit-equal). */
export function inverseIndexHost(ids: ArrayLike<number>, V: number, opts: CsrOptions = {}): { offsets: Uint32Array; perm: Uint32Array } {
  checkV('buildInverseIndex', V);
  const ex = excludeValue(V, opts.exclude);
  const M = ids.length;
  const key = new Uint32Array(M);
  const count = new Uint32Array(V + 2);
  for (let m = 0; m < M; m++) {
    const id = ids[m]!;
    const k = Number.isInteger(id) && id >= 0 && id < V && id !== ex ? id : V;
    key[m] = k;
    count[k + 1]!++;
  }
  for (let v = 0; v <= V; v++) count[v + 1]! += count[v]!;
  const offsets = count.slice(0, V + 1); // [V+1]
  const next = count.slice(0, V + 1);
  const perm = new Uint32Array(M); // [M]
  for (let m = 0; m < M; m++) perm[next[key[m]!]!++] = m;
  return { offsets, perm };
}

function checkV(op: string, V: number): void {
  if (!Number.isInteger(V) || V < 1 || V >= NONE) throw new Error(`${op}: V=${V} must be an integer in [1, 2^32-1)`);
}

function csrFrom(V: number, M: number, offsets: Tensor, perm: Tensor, builtOn: 'host' | 'gpu'): Csr {
  return {
    V,
    M,
    offsets,
    perm,
    builtOn,
    dispose() {
      offsets.dispose();
      perm.dispose();
    },
  };
}

// ------------------------------------------------------------------------------------------ GPU build
const rankKernel = defineKernel({
  name: 'csr_rank',
  foldable: true,
  wgsl: /* wgsl */ `
// One radix pass, step 1, per block of ${BLOCK} positions (one workgroup): the digits go to workgroup memory,
// then ONE lane walks the block in order, giving each position its stable rank among the equal digits before
// it and counting every digit (O(BLOCK) serial work per block; the parallel O(BLOCK^2) compare loop and
// workgroup atomics were both slower on llvmpipe). All other lanes zero and write the counts.
// key = min(id, V), or V for 'exclude' (ids read as u32: negative i32 ids are >= V).
struct Params { M: u32, V: u32, exclude: u32, shift: u32, mask: u32, nb: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> keys_in: array<u32>;      // [M] ids (first pass) or sorted keys
@group(0) @binding(2) var<storage, read_write> rank: array<u32>;   // [M]
@group(0) @binding(3) var<storage, read_write> hist: array<u32>;   // [bins, nb] digit-major
var<workgroup> dig: array<u32, ${BLOCK}>;
var<workgroup> rk: array<u32, ${BLOCK}>;
var<workgroup> cnt: array<u32, 256>;
fn key_of(raw: u32) -> u32 { return select(raw, p.V, raw >= p.V || raw == p.exclude); }
${main1d(BLOCK)} {
  let b = ${FOLDED_GROUP};
  let i = b * ${BLOCK}u + lid.x;
  for (var k = lid.x; k <= p.mask; k = k + ${BLOCK}u) { cnt[k] = 0u; }
  if (i < p.M) { dig[lid.x] = (key_of(keys_in[i]) >> p.shift) & p.mask; }
  workgroupBarrier();
  if (lid.x == 0u && b < p.nb) {
    let n = min(${BLOCK}u, p.M - b * ${BLOCK}u);
    for (var q = 0u; q < n; q = q + 1u) {
      let d = dig[q];
      rk[q] = cnt[d];
      cnt[d] = cnt[d] + 1u;
    }
  }
  workgroupBarrier();
  if (i < p.M) { rank[i] = rk[lid.x]; }
  if (b < p.nb) {
    for (var k = lid.x; k <= p.mask; k = k + ${BLOCK}u) { hist[k * p.nb + b] = cnt[k]; }
  }
}`,
  grid: ({ M }) => [ceilDiv(M!, BLOCK)],
  minSizes: ({ M }) => ({ keys_in: M!, rank: M! }),
  // the two count loops run once per lane (bins <= 256 = BLOCK), lane 0 walks the block
  loopTrips: 2 * loopCost(1) + loopCost(BLOCK),
});

const scanKernel = defineKernel({
  name: 'csr_scan',
  wgsl: /* wgsl */ `
// Exclusive prefix sum of data [n] in place, one workgroup: each thread sums a contiguous chunk, a
// Hillis-Steele scan over the ${SCAN_WG} chunk sums (16 barriers), then each thread rewrites its chunk.
// Elements [i0, i1) per dispatch (more than one invocation's loop budget allows: several dispatches in order),
// starting from carry[0] (the sum of the earlier elements) when i0 > 0; carry[0] = the sum through i1 after.
struct Params { n: u32, i0: u32, i1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> data: array<u32>; // [n]
@group(0) @binding(2) var<storage, read_write> carry: array<u32>; // [1]
var<workgroup> part: array<u32, ${SCAN_WG}>;
@compute @workgroup_size(${SCAN_WG})
fn main(@builtin(local_invocation_id) lid: vec3u) {
  let chunk = (p.i1 - p.i0 + ${SCAN_WG - 1}u) / ${SCAN_WG}u;
  let start = min(p.i0 + lid.x * chunk, p.i1);
  let end = min(start + chunk, p.i1);
  var cin = 0u;
  if (p.i0 != 0u) { cin = carry[0]; }
  var s = 0u;
  for (var i = start; i < end; i = i + 1u) { s = s + data[i]; }
  part[lid.x] = s;
  workgroupBarrier();
  for (var off = 1u; off < ${SCAN_WG}u; off = off << 1u) {
    var v = part[lid.x];
    if (lid.x >= off) { v = v + part[lid.x - off]; }
    workgroupBarrier();
    part[lid.x] = v;
    workgroupBarrier();
  }
  var run = cin;
  if (lid.x > 0u) { run = cin + part[lid.x - 1u]; }
  for (var i = start; i < end; i = i + 1u) {
    let v = data[i];
    data[i] = run;
    run = run + v;
  }
  if (lid.x == 0u) { carry[0] = cin + part[${SCAN_WG - 1}u]; }
}`,
  grid: () => [1],
  loopTrips: ({ i0, i1 }) => 2 * loopCost(ceilDiv(i1! - i0!, SCAN_WG)) + loopCost(Math.log2(SCAN_WG)),
});

/** Exclusive scan of `data` [n] in place (several ordered dispatches when n passes the loop budget). */
function scanInPlace(data: Bindable, n: number, carry: Tensor): void {
  const per = maxLoopIterations(loopBudget(), 1, loopCost(Math.log2(SCAN_WG)) + 2) * SCAN_WG;
  const step = Number.isFinite(per) ? Math.max(SCAN_WG, per) : Math.max(n, 1);
  for (let i0 = 0; i0 < n; i0 += step) scanKernel.run({ data, carry }, { n, i0, i1: Math.min(n, i0 + step) });
}

const scatterKernel = defineKernel({
  name: 'csr_scatter',
  foldable: true,
  wgsl: /* wgsl */ `
// One radix pass, step 3: stable placement. dst = (scanned count of this digit in earlier blocks and smaller
// digits) + rank inside the block. First pass: the value is the position itself.
struct Params { M: u32, V: u32, exclude: u32, shift: u32, mask: u32, nb: u32, first: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> keys_in: array<u32>;        // [M]
@group(0) @binding(2) var<storage, read> vals_in: array<u32>;        // [M] (ignored on the first pass)
@group(0) @binding(3) var<storage, read> rank: array<u32>;           // [M]
@group(0) @binding(4) var<storage, read> hist: array<u32>;           // [bins, nb] scanned
@group(0) @binding(5) var<storage, read_write> keys_out: array<u32>; // [M]
@group(0) @binding(6) var<storage, read_write> vals_out: array<u32>; // [M]
fn key_of(raw: u32) -> u32 { return select(raw, p.V, raw >= p.V || raw == p.exclude); }
${main1d(BLOCK)} {
  let i = ${foldedIndex(BLOCK)};
  if (i >= p.M) { return; }
  let key = key_of(keys_in[i]);
  var val = i;
  if (p.first == 0u) { val = vals_in[i]; }
  let d = (key >> p.shift) & p.mask;
  let dst = hist[d * p.nb + i / ${BLOCK}u] + rank[i];
  keys_out[dst] = key;
  vals_out[dst] = val;
}`,
  grid: ({ M }) => [ceilDiv(M!, BLOCK)],
  minSizes: ({ M }) => ({ keys_in: M!, vals_in: M!, rank: M!, keys_out: M!, vals_out: M! }),
});

/** The CSR offsets from the sorted keys: the uniform and bindings of csr_offsets and csr_offsets_search. */
const OFFSETS_DECLS = /* wgsl */ `struct Params { M: u32, V: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> keys: array<u32>;            // [M] sorted
@group(0) @binding(2) var<storage, read_write> offsets: array<u32>;   // [V+1]`;

const offsetsKernel = defineKernel({
  name: 'csr_offsets',
  foldable: true,
  wgsl: /* wgsl */ `
// offsets[v] = first s with key[s] >= v (keys sorted, in [0, V]). Thread s in [0, M] writes the v in
// (key[s-1], key[s]] (key[-1] = -1, key[M] = V): every v in [0, V] exactly once, no atomics.
${OFFSETS_DECLS}
${main1d(256)} {
  let s = ${foldedIndex(256)};
  if (s > p.M) { return; }
  var lo = 0u;
  if (s > 0u) { lo = keys[s - 1u] + 1u; }
  var hi = p.V;
  if (s < p.M) { hi = keys[s]; }
  for (var v = lo; v <= hi; v = v + 1u) { offsets[v] = s; }
}`,
  grid: ({ M }) => [ceilDiv(M! + 1, 256)],
  minSizes: ({ M, V }) => ({ keys: M!, offsets: V! + 1 }),
  loopTrips: ({ V }) => loopCost(V! + 1), // one thread may fill every v (a gap in the sorted keys)
});

const offsetsSearchKernel = defineKernel({
  name: 'csr_offsets_search',
  foldable: true,
  wgsl: /* wgsl */ `
// offsets[v] = first s with key[s] >= v (keys sorted, in [0, V]), by binary search: one thread per v in [0, V].
// Used when V is too large for csr_offsets' gap loop under the loop budget.
${OFFSETS_DECLS}
${main1d(256)} {
  let v = ${foldedIndex(256)};
  if (v > p.V) { return; }
  var lo = 0u;
  var hi = p.M;
  while (lo < hi) {
    let mid = lo + (hi - lo) / 2u;
    if (keys[mid] < v) { lo = mid + 1u; } else { hi = mid; }
  }
  offsets[v] = lo;
}`,
  grid: ({ V }) => [ceilDiv(V! + 1, 256)],
  minSizes: ({ M, V }) => ({ keys: M!, offsets: V! + 1 }),
  loopTrips: ({ M }) => loopCost(Math.ceil(Math.log2(M! + 1)) + 1),
});

/** Radix passes and digit width for keys in [0, V]. */
export function radixPlan(V: number): { passes: number; bits: number } {
  const keyBits = Math.max(1, Math.ceil(Math.log2(V + 1)));
  const passes = Math.ceil(keyBits / 8);
  return { passes, bits: Math.ceil(keyBits / passes) };
}

function buildGpu(ids: Tensor, V: number, ex: number): Csr {
  const M = ids.size;
  const offsets = Tensor.empty([V + 1], 'u32'); // [V+1]
  if (M === 0) {
    fillInPlace(offsets, 0);
    return csrFrom(V, 0, offsets, Tensor.empty([1], 'u32'), 'gpu'); // perm [1]: bindings cannot be empty
  }
  const { passes, bits } = radixPlan(V);
  const bins = 1 << bits;
  const nb = ceilDiv(M, BLOCK);
  // One count table for all passes (csr_rank writes every entry); each pass binds its 256-byte aligned region.
  const region = ceilDiv(bins * nb, 64) * 64;
  const hist = Tensor.empty([region * passes], 'u32'); // [passes, bins, nb] (+ alignment padding)
  const rank = Tensor.empty([M], 'u32'); // [M]
  const bufs = [Tensor.empty([M], 'u32'), Tensor.empty([M], 'u32'), Tensor.empty([M], 'u32'), Tensor.empty([M], 'u32')]; // keys/vals x2, [M] each
  const carry = Tensor.empty([1], 'u32'); // [1] the scan's running sum
  let keysIn: Bindable = asU32(ids);
  let valsIn: Bindable = keysIn;
  for (let k = 0; k < passes; k++) {
    const h: Bindable = { buffer: hist.buffer, byteOffset: k * region * 4, byteLength: bins * nb * 4, dtype: 'u32' };
    const keysOut = bufs[(k % 2) * 2]!;
    const valsOut = bufs[(k % 2) * 2 + 1]!;
    const prm = { M, V, exclude: ex, shift: k * bits, mask: bins - 1, nb };
    rankKernel.run({ keys_in: keysIn, rank, hist: h }, prm);
    scanInPlace(h, bins * nb, carry);
    scatterKernel.run({ keys_in: keysIn, vals_in: valsIn, rank, hist: h, keys_out: keysOut, vals_out: valsOut }, { ...prm, first: k === 0 ? 1 : 0 });
    keysIn = keysOut;
    valsIn = valsOut;
  }
  const last = ((passes - 1) % 2) * 2;
  if (offsetsKernel.fitsLoopBudget({ M, V })) offsetsKernel.run({ keys: bufs[last]!, offsets }, { M, V });
  else offsetsSearchKernel.run({ keys: bufs[last]!, offsets }, { M, V });
  carry.dispose();
  const perm = bufs[last + 1]!;
  for (const [i, b] of bufs.entries()) if (i !== last + 1) b.dispose();
  rank.dispose();
  hist.dispose();
  return csrFrom(V, M, offsets, perm, 'gpu');
}

/**
 * The inverse index of `ids` over V rows. Host ids (an array the data loader already has): counting sort on
 * the host and two uploads. An i32/u32 tensor: built on the GPU, no readback. Ids outside [0, V) and
 * `opts.exclude` contribute to no row. The caller disposes the result.
 */
export function buildInverseIndex(ids: Tensor | ArrayLike<number>, V: number, opts: CsrOptions = {}): Csr {
  checkV('buildInverseIndex', V);
  const ex = excludeValue(V, opts.exclude);
  if (ids instanceof Tensor) {
    if (ids.dtype === 'f32') throw new Error(`buildInverseIndex: ids ${ids.describe()} must be i32 or u32`);
    return buildGpu(ids, V, ex);
  }
  const { offsets, perm } = inverseIndexHost(ids, V, opts);
  const M = perm.length;
  // offsets [V+1], perm [max(M, 1)] (bindings cannot be empty)
  return csrFrom(V, M, Tensor.from(offsets, [V + 1], 'u32'), Tensor.from(M ? perm : new Uint32Array(1), [Math.max(M, 1)], 'u32'), 'host');
}

// ------------------------------------------------------------------------------------------ segment sum
const TX = 16; // lanes across a row; TY rows (segments) per workgroup
const TY = 16;
const MODE = { dense: 0, touched: 1, accumulate: 2 } as const;
/** The segment sum, rows read as vecW (W = the widest vector dividing D): `segment_sum_rows{w=4}`. */
const segmentSumKernel = kernelFamily('segment_sum_rows', ({ w }: { w: VecWidth }) => {
  const T = vecType(w);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// out[o, v, :] = sum of src[o, perm[s], :] for s in [offsets[v], offsets[v+1]) in ascending s (= ascending
// position): deterministic. A ${TX}x${TY} workgroup handles ${TY} output rows, ${TX} lanes across each row
// (D counted in ${T}); no per-element div/mod.
// mode 0: write every row; 1: write rows with a non-empty segment only; 2: out += sum on those rows.
// Piece [s0, s0 + len) of each segment per dispatch: a hot id can own all M positions, more than one
// invocation's loop budget (llvmpipe: 65,535 iterations); the running sums of unfinished segments wait in
// part, and the last piece of a segment applies the mode (same order as one pass: bit-identical).
// Columns [c0, c1) per dispatch (all of them unless a row is too wide for the budget itself).
struct Params { rows: u32, M: u32, V: u32, D: u32, mode: u32, s0: u32, len: u32, c0: u32, c1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<${T}>;        // [outer, M, D]
@group(0) @binding(2) var<storage, read> perm: array<u32>;        // [M]
@group(0) @binding(3) var<storage, read> offsets: array<u32>;     // [V+1]
@group(0) @binding(4) var<storage, read_write> out: array<${T}>;  // [outer, V, D]
@group(0) @binding(5) var<storage, read_write> part: array<${T}>; // [outer, V, D] running sums ([1] when one piece)
${main1d(`${TX}, ${TY}`)} {
  let r = ${foldedIndex(TY, 'lid.y')}; // output row = o * V + v
  if (r >= p.rows) { return; }
  let o = r / p.V;
  let v = r - o * p.V;
  let a = offsets[v];
  let b = offsets[v + 1u];
  if (p.mode != 0u && a == b) { return; }
  let j0 = a + min(p.s0, b - a);
  let j1 = j0 + min(p.len, b - j0);
  if (p.s0 != 0u && j0 == j1) { return; }
  let last = j1 == b;
  let base = o * p.M;
  for (var c = p.c0 + lid.x; c < p.c1; c = c + ${TX}u) {
    var acc = ${T}(0.0);
    if (p.s0 != 0u) { acc = part[r * p.D + c]; }
    for (var s = j0; s < j1; s = s + 1u) { acc = acc + src[(base + perm[s]) * p.D + c]; }
    if (!last) { part[r * p.D + c] = acc; continue; }
    if (p.mode == 2u) { acc = out[r * p.D + c] + acc; }
    out[r * p.D + c] = acc;
  }
}`,
    grid: ({ rows }) => [ceilDiv(rows!, TY)],
    loopTrips: ({ c0, c1, len }) => loopCost(ceilDiv(c1! - c0!, TX), loopCost(len!)),
    minSizes: ({ rows, M, V, D }) => ({ src: (rows! / V!) * M! * D!, offsets: V! + 1, out: rows! * D! }),
  };
});

export interface SegmentSumOptions {
  /** Write into this tensor ([V, D] or [outer, V, D], f32) instead of a new one. */
  out?: Tensor;
  /** Only rows with at least one id are written (needs `out`); the others keep their values. */
  touchedOnly?: boolean;
  /** out[v] += segment sum on touched rows (needs `out`; implies touchedOnly). */
  accumulate?: boolean;
  /** Force the vector width (benchmarks); default the widest dividing D. */
  width?: VecWidth;
}

/**
 * out[v] = sum of src rows whose id is v, in ascending position (bit-reproducible). src is [M, D] or
 * [outer, M, D] (f32) with M = csr.M; returns [V, D] or [outer, V, D]. Not an autograd op: used inside
 * backward functions (the result is a fresh tensor the caller owns, or `opts.out`).
 */
export function segmentSumRows(src: Tensor, csr: Csr, opts: SegmentSumOptions = {}): Tensor {
  const op = 'segmentSumRows';
  if (src.dtype !== 'f32') throw new Error(`${op}: src ${src.describe()} must be f32`);
  if (src.ndim !== 2 && src.ndim !== 3) throw new Error(`${op}: src ${shapeStr(src.shape)} must be [M, D] or [outer, M, D]`);
  const [outer, M, D] = src.ndim === 2 ? [1, src.shape[0]!, src.shape[1]!] : [src.shape[0]!, src.shape[1]!, src.shape[2]!];
  if (M !== csr.M) throw new Error(`${op}: src ${shapeStr(src.shape)} has ${M} rows, the index was built from ${csr.M} ids`);
  const V = csr.V;
  const shape = src.ndim === 2 ? [V, D] : [outer, V, D];
  if ((opts.touchedOnly || opts.accumulate) && !opts.out) throw new Error(`${op}: touchedOnly/accumulate need opts.out`);
  if (opts.out && (opts.out.dtype !== 'f32' || opts.out.size !== outer * V * D)) {
    throw new Error(`${op}: out ${opts.out.describe()} does not hold ${shapeStr(shape)} f32`);
  }
  const out = opts.out ?? Tensor.empty(shape); // [outer, V, D]
  if (out.size === 0) return out;
  const mode = opts.accumulate ? MODE.accumulate : opts.touchedOnly ? MODE.touched : MODE.dense;
  if (M === 0) {
    if (mode === MODE.dense) fillInPlace(out, 0);
    return out;
  }
  const w = opts.width ?? vecWidth(D);
  if (D % w) throw new Error(`${op}: width ${w} does not divide D = ${D}`);
  // Positions per piece: a segment may hold all M (one piece unless M passes the loop budget); a lane loops over
  // ceil(D / TX) columns, so rows too wide for the budget are also cut into column chunks.
  const Dw = D / w;
  const budget = loopBudget();
  const lanes = Number.isFinite(budget) ? Math.max(1, Math.min(ceilDiv(Dw, TX), Math.floor((budget - 2) / 4))) : ceilDiv(Dw, TX);
  const len = Number.isFinite(budget) ? Math.max(1, Math.min(M, Math.floor((budget - 2) / lanes) - 3)) : M;
  const pieces = ceilDiv(M, len);
  const part = pieces > 1 ? Tensor.empty([outer * V * D]) : Tensor.empty([w]); // running sums | unused
  for (const [c0, c1] of chunkRanges(Dw, lanes * TX)) {
    for (let s0 = 0; s0 < M; s0 += len) {
      segmentSumKernel({ w }).run({ src, perm: csr.perm, offsets: csr.offsets, out, part }, { rows: outer * V, M, V, D: Dw, mode, s0, len, c0, c1 });
    }
  }
  part.dispose();
  return out;
}

/**
 * One call for a backward: the gradient of a row lookup, gTable [V, D] = segment sum of gRows [M, D] by ids.
 * `ids` is the host array when the caller has it (no GPU sort), else the ids tensor.
 */
export function scatterAddRows(gRows: Tensor, ids: Tensor | ArrayLike<number>, V: number, opts: CsrOptions & SegmentSumOptions = {}): Tensor {
  const csr = buildInverseIndex(ids, V, opts);
  try {
    return segmentSumRows(gRows, csr, opts);
  } finally {
    csr.dispose();
  }
}

// ------------------------------------------------------------------------------------------ row index + rows scatter
// The table gradient of the fused id losses (infonce, pairwise_sigmoid ids form, bce_neg_sampling): entries e
// (entry e belongs to row e / K) grouped by table id in ascending e (the CSR above, built by the GPU radix sort,
// so linear in M for any id distribution, e.g. a padding id repeated 10^5 times), then every table row's
// contributions coef[e] * x[e / K] summed in that fixed order (bit-reproducible, no float atomics).
// Kernels: rowidx_keys (the sort keys), the csr_* build, rows_scatter{D} (one thread per table row, the row in
// registers: D is baked in as a WGSL const, vec4 loads when D % 4 == 0; a segment is taken in pieces of at most
// the loop budget per dispatch, the running sum carried in out).
const RWG = 64;

const idxKeys = defineKernel({
  name: 'rowidx_keys',
  foldable: true,
  wgsl: /* wgsl */ `
// keys[e] = clamp(id(e), 0, V-1) for entries of rows with w != 0, V (out of range: dropped by the index) else.
// Entry e's id: ids0[e], or in pair mode ids0[e/2] for even e and ids1[e/2] for odd e.
struct Params { M: u32, K: u32, V: u32, pair: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids0: array<i32>;  // [M] entry ids; pair mode: [M/2] ids of even entries
@group(0) @binding(2) var<storage, read> ids1: array<i32>;  // pair mode: [M/2] ids of odd entries (else unused)
@group(0) @binding(3) var<storage, read> w: array<f32>;     // [M/K] row weights: rows with w == 0 are left out
@group(0) @binding(4) var<storage, read_write> keys: array<u32>; // [M]
fn entry_id(e: u32) -> u32 {
  var id = ids0[e];
  if (p.pair == 1u) { id = select(ids0[e >> 1u], ids1[e >> 1u], (e & 1u) == 1u); }
  return u32(clamp(id, 0, i32(p.V) - 1));
}
fn entry_valid(e: u32) -> bool { return w[e / p.K] != 0.0; }
${main1d(RWG)} {
  let i = ${foldedIndex(RWG)};
  if (i >= p.M) { return; }
  keys[i] = select(p.V, entry_id(i), entry_valid(i));
}`,
  grid: ({ M }) => [ceilDiv(M!, RWG)],
  minSizes: ({ M }) => ({ keys: M! }),
});

/** Entries grouped by table id: segment v is entries[offsets[v] .. offsets[v+1]), ascending. */
export interface RowIndex {
  offsets: Tensor; // [V + 1] u32
  entries: Tensor; // [M] u32 (dropped entries after offsets[V])
  M: number;
  K: number;
  V: number;
  dispose(): void;
}

/**
 * Build the row index of M entries into a table of V rows. Entry e has id clamp(ids0[e], 0, V-1), or in pair
 * mode (ids1 given, K = 2) ids0[e/2] for even e and ids1[e/2] for odd e. Entries of rows with w[e / K] == 0
 * are left out. One key kernel, then the GPU radix sort above (stable, linear in M whatever the id
 * distribution); no readback.
 */
export function buildRowIndex(ids0: Tensor, ids1: Tensor | null, K: number, V: number, w: Tensor): RowIndex {
  const M = ids1 ? 2 * ids0.size : ids0.size;
  if (ids1 && (K !== 2 || ids1.size !== ids0.size)) throw new Error(`buildRowIndex: pair mode needs K = 2 and equal id counts`);
  if (M % K !== 0 || w.size < M / K) throw new Error(`buildRowIndex: ${M} entries, K = ${K}, ${w.size} row weights`);
  const keys = Tensor.empty([M], 'u32'); // [M]
  idxKeys.run({ ids0, ids1: ids1 ?? ids0, w, keys }, { M, K, V, pair: ids1 ? 1 : 0 });
  const csr = buildInverseIndex(keys, V);
  keys.dispose();
  return { offsets: csr.offsets, entries: csr.perm, M, K, V, dispose: () => csr.dispose() };
}

/** out[v] = sum over the entries e of segment v (ascending) of coef[e] * x[e / K], D baked in. */
const rowsScatterKernel = kernelFamily('rows_scatter', ({ D }: { D: number }) => {
  const T = vecType(lanesFor(D));
  const D4 = D / lanesFor(D);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// out[v] = sum over the entries e of segment v (ascending) of coef[e] * x[e / K]. One thread per table row,
// the row accumulated in registers; every row is written (rows without entries get 0).
// Piece [s0, s0 + len) of each segment per dispatch (a hot id can own every entry, more than one invocation's
// loop budget): the first piece starts from 0, later ones continue from out[v] (same order: bit-identical).
struct Params { V: u32, K: u32, s0: u32, len: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> offsets: array<u32>;        // [V + 1]
@group(0) @binding(2) var<storage, read> entries: array<u32>;        // [M]
@group(0) @binding(3) var<storage, read> coef: array<f32>;           // [M]
@group(0) @binding(4) var<storage, read> x: array<${T}>;         // [M / K, D]
@group(0) @binding(5) var<storage, read_write> out: array<${T}>; // [V, D]
${slotsConst(D)}
${main1d(RWG)} {
  let i = ${foldedIndex(RWG)};
  if (i >= p.V) { return; }
  let a = offsets[i];
  let b = offsets[i + 1u];
  let j0 = a + min(p.s0, b - a);
  let j1 = j0 + min(p.len, b - j0);
  if (p.s0 != 0u && j0 == j1) { return; }
  var acc: array<${T}, D4>;
  if (p.s0 != 0u) { ${forSlots(D4, 'acc[{k}] = out[i * D4 + {k}];')} }
  for (var j = j0; j < j1; j = j + 1u) {
    let e = entries[j];
    let cf = coef[e];
    let xr = (e / p.K) * D4;
    ${forSlots(D4, 'acc[{k}] = acc[{k}] + cf * x[xr + {k}];')}
  }
  ${forSlots(D4, 'out[i * D4 + {k}] = acc[{k}];')}
}`,
    grid: ({ V }) => [ceilDiv(V!, RWG)],
    minSizes: ({ V }) => ({ offsets: V! + 1, out: V! * D4 }),
    loopTrips: ({ len }) => 3 * slotsCost(D4) + loopCost(len!, slotsCost(D4)),
  };
});

/** out [V, D]: out[v] = sum over the index's entries e with id v (ascending e) of coef[e] * x[e / K]. */
export function scatterRows(index: RowIndex, coef: Tensor, x: Tensor, D: number): Tensor {
  if (coef.size < index.M || x.size < (index.M / index.K) * D) throw new Error(`scatterRows: coef ${coef.describe()} / x ${x.describe()} too small for ${index.M} entries`);
  const out = Tensor.empty([index.V, D]); // [V, D]
  const d4 = D / lanesFor(D);
  // A segment can hold every entry (a padding id repeated M times): pieces of `len` entries per dispatch.
  const len = Math.min(index.M, maxLoopIterations(loopBudget(), slotsCost(d4), 3 * slotsCost(d4)));
  for (const [s0, s1] of chunkRanges(index.M, len)) {
    rowsScatterKernel({ D }).run({ offsets: index.offsets, entries: index.entries, coef, x, out }, { V: index.V, K: index.K, s0, len: Math.max(s1 - s0, 0) });
  }
  return out;
}

// ------------------------------------------------------------------------------------------ references
function keyOfRef(id: number, V: number, exclude: number | null | undefined): number {
  return Number.isInteger(id) && id >= 0 && id < V && id !== exclude ? id : -1;
}

/** Float64 reference: out[o, v, :] = sum of src[o, m, :] over m with ids[m] == v (ids out of range / exclude dropped). */
export function refSegmentSum(src: F64, ids: ArrayLike<number>, V: number, exclude: number | null = null): F64 {
  const three = src.shape.length === 3;
  const outer = three ? src.shape[0]! : 1;
  const M = src.shape[three ? 1 : 0]!;
  const D = src.shape[three ? 2 : 1]!;
  const out = new Float64Array(outer * V * D);
  for (let o = 0; o < outer; o++)
    for (let m = 0; m < M; m++) {
      const v = keyOfRef(ids[m]!, V, exclude);
      if (v < 0) continue;
      for (let d = 0; d < D; d++) out[(o * V + v) * D + d]! += src.data[(o * M + m) * D + d]!;
    }
  return { data: out, shape: three ? [outer, V, D] : [V, D] };
}

/** The exact f32 result the GPU must produce: sequential float32 sums from 0 in ascending position. */
export function refSegmentSumF32(src: Float32Array, shape: readonly number[], ids: ArrayLike<number>, V: number, exclude: number | null = null): Float32Array {
  const three = shape.length === 3;
  const outer = three ? shape[0]! : 1;
  const M = shape[three ? 1 : 0]!;
  const D = shape[three ? 2 : 1]!;
  const out = new Float32Array(outer * V * D);
  for (let o = 0; o < outer; o++)
    for (let m = 0; m < M; m++) {
      const v = keyOfRef(ids[m]!, V, exclude);
      if (v < 0) continue;
      for (let d = 0; d < D; d++) {
        const k = (o * V + v) * D + d;
        out[k] = Math.fround(out[k]! + src[(o * M + m) * D + d]!);
      }
    }
  return out;
}

/** Float64 rows scatter: out[v] = sum over entries e (ascending) with clamp(ids[e], 0, V-1) = v and w[e / K] != 0 of coef[e] x[e / K]. */
export function refScatterRows(ids: ArrayLike<number>, K: number, V: number, w: ArrayLike<number>, coef: ArrayLike<number>, x: F64): F64 {
  const D = x.shape[1]!;
  const out = ref.zerosF64([V, D]);
  for (let e = 0; e < ids.length; e++) {
    const n = Math.floor(e / K);
    if (w[n] === 0) continue;
    const v = Math.min(Math.max(Math.trunc(ids[e]!), 0), V - 1);
    for (let d = 0; d < D; d++) out.data[v * D + d]! += coef[e]! * x.data[n * D + d]!;
  }
  return out;
}
