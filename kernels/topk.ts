// kernels/topk.ts — topk: full-catalogue scoring with top-K on the GPU, for evaluation (HR/NDCG/MRR over all
// items) without reading back a [B, V] score matrix.
//
//   dot    (S3-Rec): score[b, i] = <query[b], table[i]>                                       higher is better
//   euclid (AttRec): score[b, i] = -(alpha ||u[b] - X[i]||^2 + (1 - alpha) ||m[b] - Q[i]||^2)  higher is better
//
//   query / u, m [B, D] f32; table / X, Q [V, D] f32; candidates are the ids 0..V-1 minus
//     - excludeIds (global, e.g. pad 0 and the mask id), and
//     - each user's history (CSR: offsets [B+1], items [nnz]) when historyMode = 'exclude'; with 'zero' the
//       history items stay candidates with score 0 (the official S3-Rec full-ranking quirk, S3REC_SPEC §6).
//   Outputs: ids [B, K] i32 and scores [B, K] f32, best first. Order: higher score first; equal scores -> smaller
//   id first (ties broken by the smaller item id). Slots beyond the number of candidates hold id -1 and score
//   -Infinity. NaN scores are never selected or counted. With answer [B] i32: rank [B] i32 = the 0-based rank
//   of the answer among the candidates = #candidates that come before it in that order (strictly higher
//   score, or an equal score and a smaller id); the answer is ranked even when it is itself excluded; -1 when
//   answer[b] is outside [0, V).
//
// Strategy: the [Bb, V] scores of a block of users go to a GPU scratch buffer that is never read back (at most
// 16M floats: users are processed in blocks of a multiple of 64), then one thread per (user, chunk of items)
// selects the top-K from it. Only [B, K] ids/scores and [B] ranks ever leave the GPU.
//   Scores, dot:     this engine's matmul (query [Bb, D] x table [V, D]^T; register-tiled, vec4 loads).
//   Scores, euclid:  topk_euclid_scores{w=W}: a register tile of 8 users x 8 items per thread, rows read as
//                    vecW<f32> (W = widest of 4, 2, 1 dividing D), differences taken before squaring (no
//                    |u|^2 - 2u.X + |X|^2 cancellation). Reads each u/m row ceil(V/64) times and each X/Q row
//                    ceil(Bb/64) times (from cache), writes Bb*V.
//   topk_exclude_bits    history CSR -> bit set hist [B, ceil(V/32)] u32. One thread per user (it alone writes its
//                        row: no atomics). The global excludeIds bit set [ceil(V/32)] is built on the host.
//   topk_select{K=k}     thread (user b, chunk c) reads its scores in increasing id order (one f32 load per item;
//                        the bit words once per 32 items), counts the candidates before the answer, and keeps the
//                        K best in an unordered buffer with its current worst entry: an item that beats the worst
//                        replaces it, then one straight-line pass over the K slots finds the new worst (no loop,
//                        constant indices). The buffer is sorted once at the end (odd-even transposition). The
//                        answer's score is read from the same scratch, so the rank is consistent with the order.
//                        Reads Bb*V scores + Bb*ceil(V/32) words, writes Bb*C*(2K + 1).
//   topk_merge           C > 1: merges each user's C sorted lists (one thread per user), sums the partial ranks.
// Why scratch and not scoring inside the selection thread (the first version, compared on llvmpipe at
// B=256 V=12103 D=64 K=20): a thread scoring its own user against 8 items per step issues 9 vector loads per 32
// products, the matmul's 16x16 register tile 32 per 1024, and on llvmpipe every storage load is a per-lane
// scalar loop whatever the address pattern. The in-kernel scan was slower than the matmul alone, before the
// selection pass over the scratch is added (small at K=1, growing with K). Selection by a sorted list with a
// straight-line insertion pass was slower at K=50 than the replace-the-worst buffer.
// On a real GPU this is the usual GEMM + top-k selection; the scratch costs Bb*V*8 bytes of traffic.
// llvmpipe caps the loop iterations of one invocation at 65,535 across all its loops (gallivm's
// LP_MAX_TGSI_LOOP_ITERATIONS) and silently stops the loops there: every kernel declares its loop cost
// (loopTrips), a selection chunk is at most maxChunkItems(K) items (the budget minus the list init, sort and
// write-out loops; more chunks otherwise), no kernel loops per insertion, and topk_exclude_bits takes long
// histories in pieces.
// Variants (bench/topk.bench.ts): chunks C (default 1 on a CPU adapter, more threads on a GPU; row
// topk.fused_chunks4) and the select workgroup size (override WG). The fused path is the default: the [B, V]
// scores never leave the GPU, where the composition (engine ops + [B, V] readback + host top-K) reads them back,
// and tfjs-webgpu (matMul + masks + tf.topk) is far behind both. Its lead over the composition is clear at
// AttRec's shape (B=943 V=1683 D=150 K=50, history excluded) and small at S3-Rec's (B=256 V=12103 D=64 K=20,
// 'zero'), whose time is mostly the matmul. Timings: `npm run bench -- topk` / docs/BENCHMARKS.md.
import { ceilDiv, defineKernel, loopBudget, loopCost, maxLoopIterations, noGrad, ref, rt, Tensor } from '../engine/index.js';
import { isCpuAdapter, kernelFamily, unroll, vecType, vecWidth, type VecWidth } from './common.js';
import { matmul } from './matmul.js';

type F64 = ref.F64;
const MAX_K = 128;
const MAX_CHUNKS = 64;
/** Scratch scores per block of users (floats): 64 MB (the storage binding cap here is 128 MB). */
const SCRATCH_FLOATS = 1 << 24;

const BETTER = /* wgsl */ `
// (s, i) comes before (t, j): higher score, then smaller id. NaN never comes before anything.
fn better(s: f32, i: u32, t: f32, j: u32) -> bool { return s > t || (s == t && i < j); }`;

export type TopkMode = 'dot' | 'euclid';

// vecWidth moved to common.ts; re-exported here for imports written before the move.
export { vecWidth } from './common.js';

// ------------------------------------------------------------------ euclid scores into the scratch
const TU = 8; // users per thread
const TI = 8; // items per thread (8 x 8: 128 accumulators; chosen over 4x4, 4x8, 8x4, 16x8, 8x16 on llvmpipe)
const EWX = 8; // threads across items
const EWY = 8; // threads across users

/** The euclid scores of a block of users into the scratch, rows read as vecW: `topk_euclid_scores{w=2}`. */
const euclidScoresKernel = kernelFamily('topk_euclid_scores', ({ w }: { w: VecWidth }) => {
  const T = vecType(w);
  const sq = (x: string): string => (w === 1 ? `${x} * ${x}` : `dot(${x}, ${x})`);
  return {
    wgsl: /* wgsl */ `
// S[b - b0, i] = -(alpha ||u[b] - X[i]||^2 + (1 - alpha) ||m[b] - Q[i]||^2) for users b0 .. b0+Bb-1.
// Each thread: ${TU} users (a) x ${TI} items (b) in registers; rows as ${T} (DW = D / ${w}). Edge rows are clamped
// on load and skipped on store.
struct Params { Bb: u32, b0: u32, V: u32, DW: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> u: array<${T}>;         // [B, D]
@group(0) @binding(2) var<storage, read> m: array<${T}>;         // [B, D]
@group(0) @binding(3) var<storage, read> X: array<${T}>;         // [V, D]
@group(0) @binding(4) var<storage, read> Q: array<${T}>;         // [V, D]
@group(0) @binding(5) var<storage, read_write> S: array<f32>;     // [Bb, V] scratch
@compute @workgroup_size(${EWX}, ${EWY})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let bl0 = (wid.y * ${EWY}u + lid.y) * ${TU}u; // first local user
  let i0 = (wid.x * ${EWX}u + lid.x) * ${TI}u;  // first item
${unroll(TU, '  let ub{a} = (p.b0 + min(bl0 + {a}u, p.Bb - 1u)) * p.DW;', 'a')}
${unroll(TI, '  let xr{b} = min(i0 + {b}u, p.V - 1u) * p.DW;', 'b')}
${unroll(TU, unroll(TI, '  var l{a}_{b} = 0.0;\n  var s{a}_{b} = 0.0;', 'b'), 'a')}
  for (var d = 0u; d < p.DW; d = d + 1u) {
${unroll(TU, '    let u{a} = u[ub{a} + d];\n    let m{a} = m[ub{a} + d];', 'a')}
${unroll(TI, `    { let x = X[xr{b} + d];
      let q = Q[xr{b} + d];
${unroll(TU, `      let dl{a} = u{a} - x;
      let ds{a} = m{a} - q;
      l{a}_{b} = l{a}_{b} + ${sq('dl{a}')};
      s{a}_{b} = s{a}_{b} + ${sq('ds{a}')};`, 'a')} }`, 'b')}
  }
${unroll(TU, `  if (bl0 + {a}u < p.Bb) {
${unroll(TI, '    if (i0 + {b}u < p.V) { S[(bl0 + {a}u) * p.V + i0 + {b}u] = -(p.alpha * l{a}_{b} + (1.0 - p.alpha) * s{a}_{b}); }', 'b')}
  }`, 'a')}
}`,
    grid: ({ Bb, V }) => [ceilDiv(V!, EWX * TI), ceilDiv(Bb!, EWY * TU)],
    minSizes: ({ Bb, V }) => ({ S: Bb! * V! }),
    loopTrips: ({ DW }) => loopCost(DW!),
  };
});

// ------------------------------------------------------------------ selection
/** Loop cost of a select thread: list init and write-out (K each), its chunk of items, the sort (K passes of K/2). */
function selectTrips(K: number, chunk: number): number {
  return 2 * loopCost(K) + loopCost(chunk) + loopCost(K, loopCost(Math.ceil(K / 2)));
}

/**
 * Longest chunk (items) one select thread may scan: llvmpipe stops all loops of an invocation after 65,535
 * iterations in total (see the header): the loop budget minus the list init, write-out and sort loops
 * (60,000 at most, as before the budget was declared).
 */
export function maxChunkItems(K: number): number {
  return Math.max(1, Math.min(60000 - 2 * K - Math.ceil((K * K) / 2), maxLoopIterations(loopBudget(), 0, selectTrips(K, 0) - 2)));
}

/** The selection of the top K per (user, chunk of items): `topk_select{K=20}`. */
const selectKernel = kernelFamily('topk_select', ({ K }: { K: number }) => ({
  wgsl: /* wgsl */ `
// Top-${K} of the scratch scores per (user b of the block, chunk c of items), plus the partial rank of the answer.
// Thread (b, c) reads items [c*chunk, min(V, (c+1)*chunk)) in increasing order.
const K = ${K}u;
override WG: u32 = 64u;
struct Params { Bb: u32, b0: u32, V: u32, W: u32, C: u32, chunk: u32, ninf: f32, has_hist: u32, zero_hist: u32, has_answer: u32, direct: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> S: array<f32>;            // [Bb, V] scratch scores
@group(0) @binding(2) var<storage, read> hist: array<u32>;         // [B, W] history bit sets ([1] if none)
@group(0) @binding(3) var<storage, read> glob: array<u32>;         // [W] globally excluded ids
@group(0) @binding(4) var<storage, read> answer: array<i32>;       // [B] ([1] if none)
@group(0) @binding(5) var<storage, read_write> out_s: array<f32>;  // direct: [B, K] (rows b0..); else [Bb, C, K]
@group(0) @binding(6) var<storage, read_write> out_i: array<i32>;  // same layout as out_s
@group(0) @binding(7) var<storage, read_write> out_r: array<i32>;  // direct: [B]; else [Bb, C]
${BETTER}
fn bit(words: u32, i: u32) -> u32 { return (words >> (i & 31u)) & 1u; }
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  // No early return: threads past the block read its last user and skip the writes (uniform control flow).
  let bl0 = wid.x * WG + lid.x;
  let bl = min(bl0, p.Bb - 1u);
  let b = p.b0 + bl;
  let c = wid.y;
  let row = bl * p.V;
  let hb = b * p.W;
  var ts: array<f32, K>;   // the K best so far, unordered (sorted at the end)
  var ti: array<u32, K>;   // their ids (0xffffffff = empty slot)
  for (var r = 0u; r < K; r = r + 1u) { ts[r] = p.ninf; ti[r] = 0xffffffffu; }
  var ws = p.ninf;         // the worst of them (the one a better item replaces)
  var wi = 0xffffffffu;
  var wk = 0u;             // its slot
  var sa = 0.0;
  var ia = 0xffffffffu;
  if (p.has_answer != 0u) {
    let a = answer[b];
    if (a >= 0 && u32(a) < p.V) {
      ia = u32(a);
      sa = S[row + ia];
      if (p.has_hist != 0u && p.zero_hist != 0u && bit(hist[hb + (ia >> 5u)], ia) != 0u) { sa = 0.0; }
    }
  }
  var cnt = 0u;
  let start = c * p.chunk;
  let end = min(p.V, start + p.chunk);
  var gw = 0u;
  var hw = 0u;
  for (var i = start; i < end; i = i + 1u) {
    if (i == start || (i & 31u) == 0u) {
      gw = glob[i >> 5u];
      hw = select(0u, hist[hb + (i >> 5u)], p.has_hist != 0u);
    }
    if (bit(gw, i) != 0u) { continue; }
    var cs = S[row + i];
    if (bit(hw, i) != 0u) {
      if (p.zero_hist == 0u) { continue; }
      cs = 0.0;
    }
    if (better(cs, i, sa, ia)) { cnt = cnt + 1u; }
    if (better(cs, i, ws, wi)) {
      ts[wk] = cs;
      ti[wk] = i;
      ws = ts[0];
      wi = ti[0];
      wk = 0u;
      // The new worst entry (the one that comes last in the order): straight-line compares at constant
      // indices, no loop (llvmpipe's loop budget).
${unroll([1, K], '      { let s = ts[{j}]; let id = ti[{j}]; let wr = better(ws, wi, s, id); ws = select(ws, s, wr); wi = select(wi, id, wr); wk = select(wk, {j}u, wr); }', 'j')}
    }
  }
  // Sort the K entries best first: odd-even transposition sort, K passes (K^2/2 loop iterations).
  for (var ps = 0u; ps < K; ps = ps + 1u) {
    for (var j = ps & 1u; j + 1u < K; j = j + 2u) {
      let s0 = ts[j];
      let i0 = ti[j];
      let s1 = ts[j + 1u];
      let i1 = ti[j + 1u];
      let sw = better(s1, i1, s0, i0);
      ts[j] = select(s0, s1, sw);
      ti[j] = select(i0, i1, sw);
      ts[j + 1u] = select(s1, s0, sw);
      ti[j + 1u] = select(i1, i0, sw);
    }
  }
  if (bl0 < p.Bb) {
    let o = select((bl * p.C + c) * K, b * K, p.direct != 0u);
    for (var r = 0u; r < K; r = r + 1u) {
      out_s[o + r] = ts[r];
      out_i[o + r] = bitcast<i32>(ti[r]);
    }
    out_r[select(bl * p.C + c, b, p.direct != 0u)] = select(-1, i32(cnt), ia != 0xffffffffu);
  }
}`,
  grid: ({ Bb, C }, [wg]) => [ceilDiv(Bb!, wg), C!],
  minSizes: ({ Bb, V, W }) => ({ S: Bb! * V!, glob: W! }),
  loopTrips: ({ chunk }) => selectTrips(K, chunk!),
}));

const mergeKernel = defineKernel({
  name: 'topk_merge',
  wgsl: /* wgsl */ `
// Merge each user's C sorted top-K lists into one; rank = sum of the partial ranks (-1 stays -1).
// One thread per user of the block (B here = the block's users); C <= ${MAX_CHUNKS}.
struct Params { B: u32, C: u32, K: u32, b0: u32, ninf: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in_s: array<f32>;         // [Bb, C, K] (users b0 .. b0+Bb-1)
@group(0) @binding(2) var<storage, read> in_i: array<i32>;         // [Bb, C, K]
@group(0) @binding(3) var<storage, read> in_r: array<i32>;         // [Bb, C]
@group(0) @binding(4) var<storage, read_write> out_s: array<f32>;  // [B, K] (rows b0 ..)
@group(0) @binding(5) var<storage, read_write> out_i: array<i32>;  // [B, K]
@group(0) @binding(6) var<storage, read_write> out_r: array<i32>;  // [B]
${BETTER}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let b = gid.x;
  if (b >= p.B) { return; }
  var pos: array<u32, ${MAX_CHUNKS}>;
  for (var r = 0u; r < p.K; r = r + 1u) {
    var bc = 0u;
    var bs = p.ninf;
    var bi = 0xffffffffu;
    var found = false;
    for (var c = 0u; c < p.C; c = c + 1u) {
      if (pos[c] >= p.K) { continue; }
      let o = (b * p.C + c) * p.K + pos[c];
      let s = in_s[o];
      let i = bitcast<u32>(in_i[o]);
      if (!found || better(s, i, bs, bi)) { found = true; bc = c; bs = s; bi = i; }
    }
    out_s[(p.b0 + b) * p.K + r] = bs;
    out_i[(p.b0 + b) * p.K + r] = bitcast<i32>(bi);
    pos[bc] = pos[bc] + 1u;
  }
  var rank = 0;
  for (var c = 0u; c < p.C; c = c + 1u) {
    let v = in_r[b * p.C + c];
    if (v < 0) { rank = -1; break; }
    rank = rank + v;
  }
  out_r[p.b0 + b] = rank;
}`,
  grid: ({ B }) => [ceilDiv(B!, 64)],
  minSizes: ({ B, C, K, b0 }) => ({ in_s: B! * C! * K!, in_i: B! * C! * K!, in_r: B! * C!, out_s: (b0! + B!) * K!, out_i: (b0! + B!) * K! }),
  loopTrips: ({ K, C }) => loopCost(K!, loopCost(C!)) + loopCost(C!), // K <= 128, C <= 64: at most 8,580
});

const bitsKernel = defineKernel({
  name: 'topk_exclude_bits',
  wgsl: /* wgsl */ `
// bits[b, w] bit (i & 31) set for every history item i of user b (items[offsets[b] .. offsets[b+1]), ids outside
// [0, V) ignored). One thread per user: it alone writes its row. Piece [s0, s0 + len) of each history per
// dispatch (a history longer than one invocation's loop budget takes several; the first piece clears the row).
struct Params { B: u32, V: u32, W: u32, s0: u32, len: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> offsets: array<i32>;     // [B + 1]
@group(0) @binding(2) var<storage, read> items: array<i32>;       // [nnz] ([1] if nnz = 0)
@group(0) @binding(3) var<storage, read_write> bits: array<u32>;  // [B, W]
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let b = gid.x;
  if (b >= p.B) { return; }
  let row = b * p.W;
  if (p.s0 == 0u) {
    for (var w = 0u; w < p.W; w = w + 1u) { bits[row + w] = 0u; }
  }
  let a = offsets[b];
  let e = max(offsets[b + 1u], a);
  let k0 = a + min(i32(p.s0), e - a);
  let k1 = k0 + min(i32(p.len), e - k0);
  for (var k = k0; k < k1; k = k + 1) {
    let i = items[k];
    if (i >= 0 && u32(i) < p.V) {
      let w = row + (u32(i) >> 5u);
      bits[w] = bits[w] | (1u << (u32(i) & 31u));
    }
  }
}`,
  grid: ({ B }) => [ceilDiv(B!, 64)],
  minSizes: ({ B, W }) => ({ offsets: B! + 1, bits: B! * W! }),
  loopTrips: ({ W, len }) => loopCost(W!) + loopCost(len!),
});

type IntArray = Int32Array | Uint32Array | readonly number[];


export interface TopkOptions {
  /** 'dot' (S3-Rec) or 'euclid' (AttRec); must match the query/table forms. */
  mode: TopkMode;
  /** dot: h [B, D]; euclid: { u [B, D], m [B, D] }. */
  query: Tensor | { u: Tensor; m: Tensor };
  /** dot: item embeddings [V, D]; euclid: { X [V, D], Q [V, D] }. */
  table: Tensor | { X: Tensor; Q: Tensor };
  k: number;
  /** euclid: weight of the long-term term (AttRec: 0.2). */
  alpha?: number;
  /** Per-user history, CSR: offsets [B + 1] into items [nnz] (host arrays or i32 tensors). */
  exclude?: { offsets: IntArray | Tensor; items: IntArray | Tensor };
  /** Ids excluded for every user (e.g. pad 0 and the mask id). */
  excludeIds?: readonly number[];
  /** 'exclude' (default): history items are not candidates; 'zero': they stay, with score 0 (S3-Rec full). */
  historyMode?: 'exclude' | 'zero';
  /** [B] i32: the held-out item per user; gives `rank`. */
  answer?: Tensor | IntArray;
  /** Item chunks per user (parallelism; default from the adapter, see defaultChunks). */
  chunks?: number;
  /** Workgroup size of the select kernel (default 64). */
  workgroupSize?: number;
  /** Users per scratch block (default: as many as fit 16M scores, a multiple of 64). */
  blockUsers?: number;
}

export interface TopkResult {
  /** [B, K] i32, best first; -1 past the number of candidates. */
  ids: Tensor;
  /** [B, K] f32 (dot product, or minus the distance); -Infinity past the number of candidates. */
  scores: Tensor;
  /** [B] i32 0-based rank of the answer among the candidates, or null without answer. */
  rank: Tensor | null;
}

/**
 * Item chunks per user for the selection: enough (user, chunk) threads to fill the device, but chunks of at
 * least 4K items so the top-K insertions stay rare. A CPU adapter (llvmpipe) runs 8-lane SIMD per core and is
 * full with a few hundred threads.
 */
export function defaultChunks(B: number, V: number, K: number, cpu: boolean): number {
  const targetThreads = cpu ? 256 : 16384;
  const byThreads = Math.ceil(targetThreads / Math.max(B, 1));
  const byLength = Math.max(1, Math.floor(V / Math.max(4 * K, 64)));
  return Math.max(1, Math.min(MAX_CHUNKS, byThreads, byLength));
}

/** An i32 tensor of `n` entries (n = -1: any) from a host array (uploaded; owned) or an i32 tensor (borrowed). */
function toI32(x: IntArray | Tensor, n: number, what: string): { t: Tensor; owned: boolean } {
  const len = x instanceof Tensor ? x.size : x.length;
  if (n >= 0 && len !== n) throw new Error(`topk: ${what} has ${len} entries, needs ${n}`);
  if (x instanceof Tensor) {
    if (x.dtype !== 'i32') throw new Error(`topk: ${what} must be i32, got ${x.describe()}`);
    return { t: x, owned: false };
  }
  const a = Int32Array.from(x as ArrayLike<number>);
  return { t: Tensor.from(a, [a.length], 'i32'), owned: true }; // [n]
}

/**
 * Full-catalogue top-K per user on the GPU (no [B, V] readback). See the file header for the order, ties,
 * exclusions, the rank definition and what fills slots past the number of candidates. Not differentiable.
 */
export function topkScores(opts: TopkOptions): TopkResult {
  const { mode, k: K } = opts;
  const q = opts.query;
  const tb = opts.table;
  let B: number;
  let D: number;
  let V: number;
  let inputs: Tensor[];
  if (mode === 'dot') {
    if (!(q instanceof Tensor) || !(tb instanceof Tensor)) throw new Error(`topk: mode 'dot' takes query: Tensor [B, D] and table: Tensor [V, D]`);
    if (q.ndim !== 2 || tb.ndim !== 2 || q.shape[1] !== tb.shape[1]) throw new Error(`topk: query ${q.describe()} and table ${tb.describe()} must be [B, D] and [V, D]`);
    [B, D] = q.shape as [number, number];
    V = tb.shape[0]!;
    inputs = [q, tb];
  } else if (mode === 'euclid') {
    if (q instanceof Tensor || tb instanceof Tensor) throw new Error(`topk: mode 'euclid' takes query: { u, m } and table: { X, Q }`);
    const { u, m } = q;
    const { X, Q } = tb;
    if (u.ndim !== 2 || m.shape.join() !== u.shape.join() || X.ndim !== 2 || Q.shape.join() !== X.shape.join() || X.shape[1] !== u.shape[1]) {
      throw new Error(`topk: u ${u.describe()}, m ${m.describe()} must be [B, D] and X ${X.describe()}, Q ${Q.describe()} [V, D]`);
    }
    [B, D] = u.shape as [number, number];
    V = X.shape[0]!;
    inputs = [u, m, X, Q];
  } else throw new Error(`topk: unknown mode '${String(mode)}'`);
  for (const t of inputs) if (t.dtype !== 'f32') throw new Error(`topk: inputs must be f32, got ${t.describe()}`);
  if (!Number.isInteger(K) || K < 1 || K > MAX_K) throw new Error(`topk: k = ${K} must be an integer in [1, ${MAX_K}]`);
  if (B === 0 || D === 0 || V === 0) throw new Error(`topk: empty input (B=${B}, D=${D}, V=${V})`);
  if (V > SCRATCH_FLOATS / 64) throw new Error(`topk: V = ${V} is over ${SCRATCH_FLOATS / 64} (64 users' scores must fit one scratch binding)`);
  const lengthOf = (x: IntArray | Tensor): number => (x instanceof Tensor ? x.size : x.length);
  if (opts.exclude && lengthOf(opts.exclude.offsets) !== B + 1) throw new Error(`topk: exclude.offsets has ${lengthOf(opts.exclude.offsets)} entries, needs B + 1 = ${B + 1}`);
  if (opts.answer !== undefined && lengthOf(opts.answer) !== B) throw new Error(`topk: answer has ${lengthOf(opts.answer)} entries, needs B = ${B}`);
  const minC = Math.ceil(V / maxChunkItems(K));
  const C0 = Math.max(opts.chunks ?? defaultChunks(B, V, K, isCpuAdapter()), minC);
  if (!Number.isInteger(C0) || C0 < 1 || C0 > MAX_CHUNKS) throw new Error(`topk: chunks = ${C0} must be an integer in [1, ${MAX_CHUNKS}]`);
  const chunk = Math.ceil(V / C0);
  const C = Math.ceil(V / chunk);
  // Users per block: the block's [Bb, V] scratch stays within one binding.
  const maxBb = Math.floor(SCRATCH_FLOATS / V / 64) * 64;
  const Bb = Math.min(B, maxBb, opts.blockUsers ?? maxBb);
  if (!Number.isInteger(Bb) || Bb < 1) throw new Error(`topk: blockUsers = ${opts.blockUsers} must be a positive integer`);
  const W = ceilDiv(V, 32);
  const owned: Tensor[] = [];
  const own = <T extends Tensor>(t: T): T => (owned.push(t), t);
  try {
    // Exclusions: global bit set (host), history bit set (GPU, from the CSR).
    const globWords = new Uint32Array(W);
    for (const id of opts.excludeIds ?? []) if (Number.isInteger(id) && id >= 0 && id < V) globWords[id >>> 5]! |= 1 << (id & 31);
    const glob = own(Tensor.from(globWords, [W], 'u32')); // [W]
    let hist: Tensor;
    if (opts.exclude) {
      const off = toI32(opts.exclude.offsets, B + 1, 'exclude.offsets');
      if (off.owned) owned.push(off.t);
      const items = toI32(opts.exclude.items, -1, 'exclude.items');
      if (items.owned) owned.push(items.t);
      const itemsT = items.t.size ? items.t : own(Tensor.from(new Int32Array(1), [1], 'i32')); // [1]
      hist = own(Tensor.empty([B, W], 'u32')); // [B, W]
      // Longest history: exact from host offsets, else every item (then pieces only past the loop budget).
      const o = opts.exclude.offsets;
      let longest = items.t.size;
      if (!(o instanceof Tensor)) {
        longest = 0;
        for (let b = 0; b < B; b++) longest = Math.max(longest, Number(o[b + 1]) - Number(o[b]));
        longest = Math.min(longest, items.t.size);
      }
      const len = Math.max(1, Math.min(longest, maxLoopIterations(loopBudget(), 0, loopCost(W))));
      for (let s0 = 0; s0 === 0 || s0 < longest; s0 += len) bitsKernel.run({ offsets: off.t, items: itemsT, bits: hist }, { B, V, W, s0, len });
    } else hist = own(Tensor.empty([1], 'u32')); // [1] unused
    let answer: Tensor;
    if (opts.answer !== undefined) {
      const a = toI32(opts.answer, B, 'answer');
      if (a.owned) owned.push(a.t);
      answer = a.t;
    } else answer = own(Tensor.empty([1], 'i32')); // [1] unused

    const ids = Tensor.empty([B, K], 'i32'); // [B, K]
    const scores = Tensor.empty([B, K]); // [B, K]
    const rank = opts.answer !== undefined ? Tensor.empty([B], 'i32') : null; // [B]
    const rankOut = rank ?? own(Tensor.empty([B], 'i32')); // [B]
    const direct = C === 1;
    const partS = direct ? null : own(Tensor.empty([Bb, C, K])); // [Bb, C, K]
    const partI = direct ? null : own(Tensor.empty([Bb, C, K], 'i32')); // [Bb, C, K]
    const partR = direct ? null : own(Tensor.empty([Bb, C], 'i32')); // [Bb, C]
    const w = vecWidth(D);
    for (let b0 = 0; b0 < B; b0 += Bb) {
      const nb = Math.min(Bb, B - b0);
      const S = blockScores(mode, inputs, b0, nb, B, D, V, w, opts.alpha ?? 0.2); // [nb, V] scratch
      selectKernel({ K }).run(
        { S, hist, glob, answer, out_s: partS ?? scores, out_i: partI ?? ids, out_r: partR ?? rankOut },
        {
          Bb: nb,
          b0,
          V,
          W,
          C,
          chunk,
          ninf: -Infinity,
          has_hist: opts.exclude ? 1 : 0,
          zero_hist: opts.historyMode === 'zero' ? 1 : 0,
          has_answer: rank ? 1 : 0,
          direct: direct ? 1 : 0,
        },
        opts.workgroupSize ? { overrides: { WG: opts.workgroupSize } } : {},
      );
      S.dispose();
      if (!direct) mergeKernel.run({ in_s: partS!, in_i: partI!, in_r: partR!, out_s: scores, out_i: ids, out_r: rankOut }, { B: nb, C, K, b0, ninf: -Infinity });
    }
    return { ids, scores, rank };
  } finally {
    for (const t of owned) t.dispose();
  }
}

/** Scores of users b0 .. b0+nb-1 against every item: a [nb, V] scratch tensor. */
function blockScores(mode: TopkMode, inputs: Tensor[], b0: number, nb: number, B: number, D: number, V: number, w: VecWidth, alpha: number): Tensor {
  if (mode === 'dot') {
    const [q, table] = inputs as [Tensor, Tensor];
    return noGrad(() => {
      if (nb === B) return matmul(q, table, { transB: true }); // [B, V]
      const qb = Tensor.empty([nb, D]); // [nb, D]: the block's query rows
      rt().queue.copy(q.buffer, q.byteOffset + b0 * D * 4, qb.buffer, 0, nb * D * 4);
      const S = matmul(qb, table, { transB: true }); // [nb, V]
      qb.dispose();
      return S;
    });
  }
  const [u, m, X, Q] = inputs as [Tensor, Tensor, Tensor, Tensor];
  const S = Tensor.empty([nb, V]); // [nb, V]
  euclidScoresKernel({ w }).run({ u, m, X, Q, S }, { Bb: nb, b0, V, DW: D / w, alpha });
  return S;
}

// ------------------------------------------------------------------ float64 reference
export interface RefTopkInput {
  mode: TopkMode;
  /** dot: [query, table]; euclid: [u, m, X, Q]. */
  tensors: F64[];
  k: number;
  alpha?: number;
  exclude?: { offsets: ArrayLike<number>; items: ArrayLike<number> };
  excludeIds?: readonly number[];
  historyMode?: 'exclude' | 'zero';
  answer?: ArrayLike<number>;
}

export interface RefTopkResult {
  ids: Int32Array; // [B, K]
  scores: Float64Array; // [B, K]
  rank: Int32Array | null; // [B]
  /** Per-user f64 scores of every item [B, V] and the candidate mask (for tolerance-aware checks). */
  all: Float64Array;
  candidate: Uint8Array;
}

/** Float64 reference of topkScores (same order, ties, exclusions and rank definition). */
export function refTopkScores(x: RefTopkInput): RefTopkResult {
  const [a, b2] = x.tensors as [F64, F64];
  const B = a.shape[0]!;
  const D = a.shape[1]!;
  const V = (x.mode === 'dot' ? b2 : x.tensors[2]!).shape[0]!;
  const alpha = x.alpha ?? 0.2;
  const all = new Float64Array(B * V);
  const candidate = new Uint8Array(B * V);
  const glob = new Set((x.excludeIds ?? []).filter((i) => i >= 0 && i < V));
  const K = x.k;
  const ids = new Int32Array(B * K).fill(-1);
  const scores = new Float64Array(B * K).fill(-Infinity);
  const rank = x.answer ? new Int32Array(B) : null;
  for (let b = 0; b < B; b++) {
    const hist = new Set<number>();
    if (x.exclude) for (let k = x.exclude.offsets[b]!; k < x.exclude.offsets[b + 1]!; k++) hist.add(x.exclude.items[k]!);
    const score = (i: number): number => {
      let s = 0;
      if (x.mode === 'dot') {
        for (let d = 0; d < D; d++) s += a.data[b * D + d]! * b2.data[i * D + d]!;
        return s;
      }
      const [u, m, X, Q] = x.tensors as [F64, F64, F64, F64];
      let sl = 0;
      let ss = 0;
      for (let d = 0; d < D; d++) {
        sl += (u.data[b * D + d]! - X.data[i * D + d]!) ** 2;
        ss += (m.data[b * D + d]! - Q.data[i * D + d]!) ** 2;
      }
      return -(alpha * sl + (1 - alpha) * ss);
    };
    const adjusted = (i: number): number => (x.historyMode === 'zero' && hist.has(i) ? 0 : score(i));
    const cands: number[] = [];
    for (let i = 0; i < V; i++) {
      all[b * V + i] = adjusted(i);
      const isCand = !glob.has(i) && (x.historyMode === 'zero' || !hist.has(i));
      candidate[b * V + i] = isCand ? 1 : 0;
      if (isCand && !Number.isNaN(all[b * V + i]!)) cands.push(i);
    }
    const before = (i: number, j: number): boolean => all[b * V + i]! > all[b * V + j]! || (all[b * V + i] === all[b * V + j] && i < j);
    cands.sort((i, j) => (before(i, j) ? -1 : before(j, i) ? 1 : 0));
    for (let r = 0; r < Math.min(K, cands.length); r++) {
      ids[b * K + r] = cands[r]!;
      scores[b * K + r] = all[b * V + cands[r]!]!;
    }
    if (rank) {
      const ans = x.answer![b]!;
      if (!(ans >= 0 && ans < V)) rank[b] = -1;
      else {
        const sa = adjusted(ans);
        let c = 0;
        for (const i of cands) if (all[b * V + i]! > sa || (all[b * V + i] === sa && i < ans)) c++;
        rank[b] = c;
      }
    }
  }
  return { ids, scores, rank, all, candidate };
}
