// topk: full-catalogue scoring with top-K on the GPU, for evaluation (HR/NDCG/MRR over all items) without
// reading back a [B, V] score matrix.
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
// Kernels:
//   topk_exclude_bits   history CSR -> bit set hist [B, ceil(V/32)] u32. One thread per user (it alone writes its
//                       row, so no atomics). Global excludeIds are a [ceil(V/32)] bit set built on the host.
//   topk_{dot|euclid}_k{K}
//                       One thread per (user, chunk of items); the items of a chunk are scored in increasing id
//                       order, 4 per step (one load of the query element serves 4 table rows; the table rows
//                       are the same for every thread of a workgroup, so they are broadcast/cached reads), and
//                       kept in a private sorted top-K list (insertion, rarely taken once the list is full). The
//                       score matrix is never written. The answer's score is computed by the same 4-wide step
//                       on its aligned tile, so it is bit-identical to the score the scan sees.
//                       Work: B*V*D multiply-adds (x3 for euclid's two tables); reads B*D + C*V*D per workgroup
//                       (table rows from cache), writes B*C*K*2 + B*C.
//   topk_merge          C > 1 chunks: merges each user's C sorted lists (one thread per user) and sums the
//                       partial ranks. Skipped when C = 1.
// Variants (chosen by bench/topk.bench.ts): chunks C (more threads for a real GPU; on llvmpipe 1-2 keep the
// insertion work lowest) and the workgroup size (override WG).
import { ceilDiv, defineKernel, ref, rt, Tensor, type Kernel } from '../engine/index.js';

type F64 = ref.F64;
const MAX_K = 128;
const MAX_CHUNKS = 64;

const BETTER = /* wgsl */ `
// (s, i) comes before (t, j): higher score, then smaller id. NaN never comes before anything.
fn better(s: f32, i: u32, t: f32, j: u32) -> bool { return s > t || (s == t && i < j); }`;

export type TopkMode = 'dot' | 'euclid';

/** WGSL of `score_tile(b, i0) -> array<vec4<f32>, T/4>`: the scores of items i0 .. i0+T-1 for user b. */
function scoreFn(mode: TopkMode, tile: number): string {
  const q = tile / 4;
  const G = Array.from({ length: q }, (_, g) => g);
  const rows = Array.from({ length: tile }, (_, t) => `  let r${t} = min(i0 + ${t}u, last) * p.D;`).join('\n');
  const vecOf = (tbl: string, g: number, d: string): string => `vec4<f32>(${[0, 1, 2, 3].map((j) => `${tbl}[r${4 * g + j} + ${d}]`).join(', ')})`;
  // One d step; the d loop runs 4 steps per iteration (llvmpipe's loop budget, see the header).
  const step =
    mode === 'dot'
      ? (d: string): string => `    { let x = query[qb + ${d}];\n${G.map((g) => `      acc${g} = acc${g} + x * ${vecOf('table', g, d)};`).join('\n')} }`
      : (d: string): string =>
          `    { let uu = u[qb + ${d}];\n      let mm = m[qb + ${d}];\n` +
          G.map((g) => `      let dl${g} = uu - ${vecOf('X', g, d)};\n      let ds${g} = mm - ${vecOf('Q', g, d)};\n      sl${g} = sl${g} + dl${g} * dl${g};\n      ss${g} = ss${g} + ds${g} * ds${g};`).join('\n') +
          ' }';
  const init = mode === 'dot' ? G.map((g) => `  var acc${g} = vec4<f32>(0.0);`).join('\n') : G.map((g) => `  var sl${g} = vec4<f32>(0.0);\n  var ss${g} = vec4<f32>(0.0);`).join('\n');
  const result = mode === 'dot' ? G.map((g) => `acc${g}`).join(', ') : G.map((g) => `-(p.alpha * sl${g} + (1.0 - p.alpha) * ss${g})`).join(', ');
  return `// Scores of items i0 .. i0+${tile - 1} (rows past V-1 repeat the last row; the caller ignores them). The table
// addresses are the same for every thread of a workgroup (uniform loads); the query element is loaded once
// per d for ${tile} items.
fn score_tile(b: u32, i0: u32) -> array<vec4<f32>, ${q}> {
  let last = p.V - 1u;
${rows}
  let qb = b * p.D;
${init}
  let D4 = p.D & ~3u;
  for (var d = 0u; d < D4; d = d + 4u) {
${[0, 1, 2, 3].map((j) => step(j ? `d + ${j}u` : 'd')).join('\n')}
  }
  for (var d = D4; d < p.D; d = d + 1u) {
${step('d')}
  }
  return array<vec4<f32>, ${q}>(${result});
}`;
}

/** Scan-kernel variants (bench/topk.bench.ts): items scored per step. */
export const TOPK_TILES = [4, 8] as const;
export type TopkTile = (typeof TOPK_TILES)[number];
const DEFAULT_TILE: TopkTile = 8;

/**
 * Longest chunk (items) one scan thread may take: llvmpipe stops every loop of an invocation once the loops
 * together have run 65,535 iterations (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS, shared by all loops) and the
 * results are silently truncated. A thread runs 2K (list init and write-out) + (chunk/tile + 1) * (D/4 + 3)
 * iterations; keep that under 60,000.
 */
export function maxChunkItems(D: number, K: number, tile: number): number {
  const perTile = Math.floor(D / 4) + (D % 4) + 1;
  return Math.max(0, Math.floor((60000 - 2 * K) / perTile) - 1) * tile;
}

const scanKernels = new Map<string, Kernel>();
function scanKernel(mode: TopkMode, K: number, tile: TopkTile): Kernel {
  const name = tile === DEFAULT_TILE ? `topk_${mode}_k${K}` : `topk_${mode}_k${K}_t${tile}`;
  let k = scanKernels.get(name);
  if (k) return k;
  const inputs =
    mode === 'dot'
      ? `@group(0) @binding(1) var<storage, read> query: array<f32>;   // [B, D]
@group(0) @binding(2) var<storage, read> table: array<f32>;   // [V, D]`
      : `@group(0) @binding(1) var<storage, read> u: array<f32>;       // [B, D]
@group(0) @binding(2) var<storage, read> m: array<f32>;       // [B, D]
@group(0) @binding(3) var<storage, read> X: array<f32>;       // [V, D]
@group(0) @binding(4) var<storage, read> Q: array<f32>;       // [V, D]`;
  // Insertion of (cs, ci) into the sorted list as straight-line compare-and-swap steps (a bubble pass): no
  // loop (llvmpipe's loop budget), constant indices (the list stays in registers), no divergent branches.
  const insert = Array.from(
    { length: K },
    (_, r) =>
      `  { let os = ts[${r}]; let oi = ti[${r}]; let bt = better(cs, ci, os, oi);\n    ts[${r}] = select(os, cs, bt); ti[${r}] = select(oi, ci, bt); cs = select(cs, os, bt); ci = select(ci, oi, bt); }`,
  ).join('\n');
  const slots = Array.from({ length: tile }, (_, t) => `    consider(st[${t >> 2}][${t & 3}], i0 + ${t}u, end, hb);`).join('\n');
  k = defineKernel({
    name,
    wgsl: /* wgsl */ `
// Top-${K} of ${mode} scores per (user b, chunk c of items), plus the partial rank of the answer.
// Thread (b, c) scans items [c*chunk, min(V, (c+1)*chunk)) in increasing order, ${tile} per step.
const K = ${K}u;
override WG: u32 = 64u;
struct Params { B: u32, V: u32, D: u32, W: u32, C: u32, chunk: u32, alpha: f32, ninf: f32, has_hist: u32, zero_hist: u32, has_answer: u32 }
@group(0) @binding(0) var<uniform> p: Params;
${inputs}
@group(0) @binding(5) var<storage, read> hist: array<u32>;         // [B, W] history bit sets ([1] if none)
@group(0) @binding(6) var<storage, read> glob: array<u32>;         // [W] globally excluded ids
@group(0) @binding(7) var<storage, read> answer: array<i32>;       // [B] ([1] if none)
@group(0) @binding(8) var<storage, read_write> out_s: array<f32>;  // [B, C, K]
@group(0) @binding(9) var<storage, read_write> out_i: array<i32>;  // [B, C, K]
@group(0) @binding(10) var<storage, read_write> out_r: array<i32>; // [B, C]
var<private> ts: array<f32, K>;   // this thread's top-K scores, best first
var<private> ti: array<u32, K>;   // their ids (0xffffffff = empty slot)
var<private> sa: f32;             // the answer's score
var<private> ia: u32;             // the answer's id (0xffffffff = no answer)
var<private> cnt: u32;            // candidates before the answer
${BETTER}
${scoreFn(mode, tile)}
fn bit(words: u32, i: u32) -> u32 { return (words >> (i & 31u)) & 1u; }
fn consider(s0: f32, i: u32, end: u32, hb: u32) {
  if (i >= end) { return; }
  let w = i >> 5u;
  if (bit(glob[w], i) != 0u) { return; }
  var cs = s0;
  if (p.has_hist != 0u && bit(hist[hb + w], i) != 0u) {
    if (p.zero_hist == 0u) { return; }
    cs = 0.0;
  }
  if (better(cs, i, sa, ia)) { cnt = cnt + 1u; }
  if (!better(cs, i, ts[K - 1u], ti[K - 1u])) { return; }
  var ci = i;
${insert}
}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  // No early return: threads past B compute user B-1 and skip the writes, so control flow (and the table
  // addresses) stay uniform across the workgroup.
  let b0 = wid.x * WG + lid.x;
  let b = min(b0, p.B - 1u);
  let c = wid.y;
  for (var r = 0u; r < K; r = r + 1u) { ts[r] = p.ninf; ti[r] = 0xffffffffu; }
  let hb = b * p.W;
  // The answer's score, from the same step the scan uses on the answer's aligned tile (bit-identical).
  ia = 0xffffffffu;
  sa = 0.0;
  cnt = 0u;
  if (p.has_answer != 0u) {
    let a = answer[b];
    if (a >= 0 && u32(a) < p.V) {
      ia = u32(a);
      let t0 = ia & ~${tile - 1}u;
      let st = score_tile(b, t0);
      let k = ia - t0;
      sa = st[k >> 2u][k & 3u];
      if (p.has_hist != 0u && p.zero_hist != 0u && bit(hist[hb + (ia >> 5u)], ia) != 0u) { sa = 0.0; }
    }
  }
  let start = c * p.chunk;
  let end = min(p.V, start + p.chunk);
  for (var i0 = start; i0 < end; i0 = i0 + ${tile}u) {
    let st = score_tile(b, i0);
${slots}
  }
  if (b0 < p.B) {
    let o = (b * p.C + c) * K;
    for (var r = 0u; r < K; r = r + 1u) {
      out_s[o + r] = ts[r];
      out_i[o + r] = bitcast<i32>(ti[r]);
    }
    out_r[b * p.C + c] = select(-1, i32(cnt), ia != 0xffffffffu);
  }
}`,
    grid: ({ B, C }, [wg]) => [ceilDiv(B!, wg), C!],
    minSizes: ({ B, C, W }) => ({ glob: W!, out_s: B! * C! * K, out_i: B! * C! * K, out_r: B! * C! }),
  });
  scanKernels.set(name, k);
  return k;
}

const mergeKernel = defineKernel({
  name: 'topk_merge',
  wgsl: /* wgsl */ `
// Merge each user's C sorted top-K lists into one; rank = sum of the partial ranks (-1 stays -1).
// One thread per user; C <= ${MAX_CHUNKS}.
struct Params { B: u32, C: u32, K: u32, ninf: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in_s: array<f32>;         // [B, C, K]
@group(0) @binding(2) var<storage, read> in_i: array<i32>;         // [B, C, K]
@group(0) @binding(3) var<storage, read> in_r: array<i32>;         // [B, C]
@group(0) @binding(4) var<storage, read_write> out_s: array<f32>;  // [B, K]
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
    out_s[b * p.K + r] = bs;
    out_i[b * p.K + r] = bitcast<i32>(bi);
    pos[bc] = pos[bc] + 1u;
  }
  var rank = 0;
  for (var c = 0u; c < p.C; c = c + 1u) {
    let v = in_r[b * p.C + c];
    if (v < 0) { rank = -1; break; }
    rank = rank + v;
  }
  out_r[b] = rank;
}`,
  grid: ({ B }) => [ceilDiv(B!, 64)],
  minSizes: ({ B, C, K }) => ({ in_s: B! * C! * K!, in_i: B! * C! * K!, in_r: B! * C!, out_s: B! * K!, out_i: B! * K!, out_r: B! }),
});

const bitsKernel = defineKernel({
  name: 'topk_exclude_bits',
  wgsl: /* wgsl */ `
// bits[b, w] bit (i & 31) set for every history item i of user b (items[offsets[b] .. offsets[b+1]), ids outside
// [0, V) ignored). One thread per user: it alone writes its row.
struct Params { B: u32, V: u32, W: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> offsets: array<i32>;     // [B + 1]
@group(0) @binding(2) var<storage, read> items: array<i32>;       // [nnz] ([1] if nnz = 0)
@group(0) @binding(3) var<storage, read_write> bits: array<u32>;  // [B, W]
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let b = gid.x;
  if (b >= p.B) { return; }
  let row = b * p.W;
  for (var w = 0u; w < p.W; w = w + 1u) { bits[row + w] = 0u; }
  for (var k = offsets[b]; k < offsets[b + 1u]; k = k + 1) {
    let i = items[k];
    if (i >= 0 && u32(i) < p.V) {
      let w = row + (u32(i) >> 5u);
      bits[w] = bits[w] | (1u << (u32(i) & 31u));
    }
  }
}`,
  grid: ({ B }) => [ceilDiv(B!, 64)],
  minSizes: ({ B, W }) => ({ offsets: B! + 1, bits: B! * W! }),
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
  /** Workgroup size of the scan kernel (default 64). */
  workgroupSize?: number;
  /** Items scored per step of the scan kernel (variant; default 8). */
  tile?: TopkTile;
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
 * Item chunks per user: enough (user, chunk) threads to fill the device, but chunks of at least 4K items so
 * the private top-K insertions stay rare. A CPU adapter (llvmpipe) runs 8-lane SIMD per core and is full with
 * a few hundred threads.
 */
export function defaultChunks(B: number, V: number, K: number, cpu: boolean): number {
  const targetThreads = cpu ? 256 : 16384;
  const byThreads = Math.ceil(targetThreads / Math.max(B, 1));
  const byLength = Math.max(1, Math.floor(V / Math.max(4 * K, 64)));
  return Math.max(1, Math.min(MAX_CHUNKS, byThreads, byLength));
}

function isCpuAdapter(): boolean {
  const info = rt().gpu.info;
  const s = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  return /llvmpipe|swiftshader|lavapipe|cpu/.test(s);
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
  const bind: Record<string, Tensor> = {};
  let B: number;
  let D: number;
  let V: number;
  if (mode === 'dot') {
    if (!(q instanceof Tensor) || !(tb instanceof Tensor)) throw new Error(`topk: mode 'dot' takes query: Tensor [B, D] and table: Tensor [V, D]`);
    if (q.ndim !== 2 || tb.ndim !== 2 || q.shape[1] !== tb.shape[1]) throw new Error(`topk: query ${q.describe()} and table ${tb.describe()} must be [B, D] and [V, D]`);
    [B, D] = q.shape as [number, number];
    V = tb.shape[0]!;
    bind.query = q;
    bind.table = tb;
  } else if (mode === 'euclid') {
    if (q instanceof Tensor || tb instanceof Tensor) throw new Error(`topk: mode 'euclid' takes query: { u, m } and table: { X, Q }`);
    const { u, m } = q;
    const { X, Q } = tb;
    if (u.ndim !== 2 || m.shape.join() !== u.shape.join() || X.ndim !== 2 || Q.shape.join() !== X.shape.join() || X.shape[1] !== u.shape[1]) {
      throw new Error(`topk: u ${u.describe()}, m ${m.describe()} must be [B, D] and X ${X.describe()}, Q ${Q.describe()} [V, D]`);
    }
    [B, D] = u.shape as [number, number];
    V = X.shape[0]!;
    Object.assign(bind, { u, m, X, Q });
  } else throw new Error(`topk: unknown mode '${String(mode)}'`);
  for (const [n, t] of Object.entries(bind)) if (t.dtype !== 'f32') throw new Error(`topk: ${n} must be f32, got ${t.describe()}`);
  if (!Number.isInteger(K) || K < 1 || K > MAX_K) throw new Error(`topk: k = ${K} must be an integer in [1, ${MAX_K}]`);
  if (B === 0 || D === 0 || V === 0) throw new Error(`topk: empty input (B=${B}, D=${D}, V=${V})`);
  const lengthOf = (x: IntArray | Tensor): number => (x instanceof Tensor ? x.size : x.length);
  if (opts.exclude && lengthOf(opts.exclude.offsets) !== B + 1) throw new Error(`topk: exclude.offsets has ${lengthOf(opts.exclude.offsets)} entries, needs B + 1 = ${B + 1}`);
  if (opts.answer !== undefined && lengthOf(opts.answer) !== B) throw new Error(`topk: answer has ${lengthOf(opts.answer)} entries, needs B = ${B}`);
  const tile = opts.tile ?? DEFAULT_TILE;
  if (!TOPK_TILES.includes(tile)) throw new Error(`topk: tile = ${tile} must be one of ${TOPK_TILES.join(', ')}`);
  const maxChunk = maxChunkItems(D, K, tile);
  const minC = maxChunk > 0 ? Math.ceil(V / maxChunk) : Infinity;
  if (minC > MAX_CHUNKS) throw new Error(`topk: D = ${D} and V = ${V} need more than ${MAX_CHUNKS} item chunks under llvmpipe's loop budget`);
  const C0 = Math.max(opts.chunks ?? defaultChunks(B, V, K, isCpuAdapter()), minC);
  if (!Number.isInteger(C0) || C0 < 1 || C0 > MAX_CHUNKS) throw new Error(`topk: chunks = ${C0} must be an integer in [1, ${MAX_CHUNKS}]`);
  const chunk = Math.ceil(Math.ceil(V / C0) / tile) * tile; // a multiple of the tile: tiles stay aligned
  const C = Math.ceil(V / chunk);
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
      bitsKernel.run({ offsets: off.t, items: itemsT, bits: hist }, { B, V, W });
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
    const single = C === 1;
    const outS = single ? scores : own(Tensor.empty([B, C, K])); // [B, C, K]
    const outI = single ? ids : own(Tensor.empty([B, C, K], 'i32')); // [B, C, K]
    const outR = single && rank ? rank : own(Tensor.empty([B, C], 'i32')); // [B, C]
    scanKernel(mode, K, tile).run(
      { ...bind, hist, glob, answer, out_s: outS, out_i: outI, out_r: outR },
      {
        B,
        V,
        D,
        W,
        C,
        chunk,
        alpha: opts.alpha ?? 0.2,
        ninf: -Infinity,
        has_hist: opts.exclude ? 1 : 0,
        zero_hist: opts.historyMode === 'zero' ? 1 : 0,
        has_answer: rank ? 1 : 0,
      },
      opts.workgroupSize ? { overrides: { WG: opts.workgroupSize } } : {},
    );
    if (!single) {
      const r = rank ?? own(Tensor.empty([B], 'i32')); // [B] unused
      mergeKernel.run({ in_s: outS, in_i: outI, in_r: outR, out_s: scores, out_i: ids, out_r: r }, { B, C, K, ninf: -Infinity });
    }
    return { ids, scores, rank };
  } finally {
    for (const t of owned) t.dispose();
  }
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
