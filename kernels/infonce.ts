// infonce: fused batched InfoNCE (softmax cross-entropy over sampled or dense candidates), forward + backward,
// plus the deterministic row index / row scatter that every id-based loss here uses for table gradients.
//
// Computes (per valid row n, w_n = mask[n], default 1; rows with w_n == 0 contribute nothing):
//   s[n, c] = <q[n], table[id(n, c)]> / tau           id(n, c) = clamp(cand[n, c], 0, V-1)   (ids form)
//                                                      id(n, c) = c, C = M                     (dense form)
//   lse[n]  = logsumexp_c s[n, c]
//   loss    = sum_n w_n (lse[n] - s[n, pos_n]) / den   pos_n = clamp(pos[n], 0, C-1), default 0 (ids form);
//                                                      pos_n = clamp(targets[n], 0, M-1)   (dense form)
//   den     = sum_n w_n for reduction 'mean' (1 when that is 0: the loss is then 0), 1 for 'sum'.
// Shapes: q [N, D], table [V, D] (or cands [M, D]), cand [N, C] i32, pos/targets [N] i32, mask [N] f32 -> loss [].
// Backward (saves lse as (max, log-sum) [2, N], w [N], den [1]; never the [N, C] probabilities): g_n = gy * w_n / den,
//   coef[n, c] = g_n (softmax(s[n])_c - 1[c == pos_n]) / tau   (logits recomputed from q and the table),
//   dq[n]      = sum_c coef[n, c] table[id(n, c)],
//   dtable[v]  = sum_{(n, c): id(n, c) = v} coef[n, c] q[n]  -- a deterministic segment sum (row index below),
//   dcands[m]  = sum_n coef[n, m] q[n]                       -- dense form: a column sum, no index needed.
// Parallel strategy (llvmpipe runs a workgroup as SIMD fibers on one core; barriers are expensive and every
//   storage load is a per-lane scalar loop, so the kernels are barrier-free and keep rows in registers; the same
//   shapes are ordinary register-blocked kernels on a real GPU): one thread per row with q[n] in registers for
//   the logits (online max/sum over C, no barriers); one thread per row for the backward, which reloads each
//   candidate row once, recomputes its logit, writes coef and accumulates dq in registers; one thread per table
//   row for the scatter (the row's sum in registers). The row width D is baked into each kernel as a WGSL const
//   (kernels named `_d64`), vec4 loads when D % 4 == 0. Masked rows cost one weight read and their stores.
// Memory traffic: forward reads N*C*D (gathered rows) + N*D + N*C ids, writes 4N floats; backward reads the
//   gathered rows once more, writes N*C coefs and N*D (dq); the scatter reads M valid entries' q rows and writes
//   V*D (dtable, every row written). Random row gathers from the [V, D] table dominate on llvmpipe.
// Row index (`buildRowIndex`): the entries e (entry e belongs to row e / K) grouped by table id in ascending e,
//   so the scatter sums every table row's contributions in a fixed order (bit-reproducible, no float atomics).
//   rowidx_keys writes clamp(id) for entries of valid rows and V (dropped) for masked rows, then kernels/scatter.ts
//   builds the CSR with its stable GPU radix sort (linear in M for any id distribution, e.g. padding ids
//   repeated 10^5 times). An earlier version here (atomic histogram + atomic placement + per-segment rank sort)
//   was quadratic in a segment's length. Kernels: rowidx_keys, scatter.ts's csr_*, rows_scatter_dD.
// Kernels are generated per row width D (`_d64`: D baked in as a WGSL const so rows live in registers; vec4
//   loads when D % 4 == 0): infonce_fwd_dD, infonce_bwd_dD, rows_scatter_dD; infonce_dense_dk_v4 / _v1.
// Other kernels: loss_reduce (one workgroup, fixed order: per-row losses -> scalar, and the denominator).
// llvmpipe's loop budget (65,535 iterations per invocation, shared by all loops): loops over D4 <= 16 are written
// out; at D = 150 (scalar rows) each candidate costs a thread ~153 iterations, so the candidate loop is cut into
// ranges per dispatch (online state carried in lse / rowLoss / dq); the scatter takes segments in pieces, the
// dense candidate gradient rows in ranges, loss_reduce elements in ranges. All bit-identical to one dispatch.
import { ceilDiv, checkIds, chunkRanges as ranges, defineKernel, defineOp, loopBudget, loopCost, maxLoopIterations, ref, rt, Tensor, type Kernel } from '../engine/index.js';
import { buildInverseIndex } from './scatter.js';

type F64 = ref.F64;
export type Reduction = 'mean' | 'sum';

const WG = 64;
const LINEAR = `let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid.x;`;
const ENTRY = `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u)`;

/** Lanes per storage element along D: 4 (vec4 loads) when D % 4 == 0, else 1. */
export type Lanes = 1 | 4;
export const lanesFor = (D: number): Lanes => (D % 4 === 0 ? 4 : 1);
export const vt = (l: Lanes): string => (l === 4 ? 'vec4<f32>' : 'f32');
export const dotFn = (l: Lanes): string =>
  l === 4 ? 'fn dotv(a: vec4<f32>, b: vec4<f32>) -> f32 { return dot(a, b); }' : 'fn dotv(a: f32, b: f32) -> f32 { return a * b; }';

/** Numerically stable sigmoid / softplus shared by the loss kernels. */
export const MATH_WGSL = /* wgsl */ `
fn sig(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}
// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|); log1p by series for tiny arguments.
fn softplus(x: f32) -> f32 {
  let e = exp(-abs(x));
  return max(x, 0.0) + select(log(1.0 + e), e * (1.0 - 0.5 * e), e < 1e-3);
}`;

const kernelCache = new Map<string, Kernel>();
/** One Kernel object per generated name (the engine caches the pipeline by name). */
export function cachedKernel(name: string, make: () => Kernel): Kernel {
  let k = kernelCache.get(name);
  if (!k) {
    k = make();
    if (k.name !== name) throw new Error(`cachedKernel: made '${k.name}' for '${name}'`);
    kernelCache.set(name, k);
  }
  return k;
}

// ------------------------------------------------------------------ loops and llvmpipe's loop budget
/**
 * Loops over a row's D4 storage elements are unrolled in the generated WGSL up to this length (Mesa unrolls
 * such loops itself; written out, they cost nothing of llvmpipe's per-invocation loop budget for certain).
 */
export const UNROLL_D4 = 16;

/** Statements `body(k)` for k in [0, n): unrolled (k a constant) when n <= UNROLL_D4, else a loop (`k` a var). */
export function forD4(n: number, body: (k: string) => string, v = 'k'): string {
  if (n <= UNROLL_D4) return Array.from({ length: n }, (_, j) => body(`${j}u`)).join(' ');
  return `for (var ${v} = 0u; ${v} < ${n}u; ${v} = ${v} + 1u) { ${body(v)} }`;
}

/** Loop cost of forD4(n, body) whose body costs `body`. */
export const d4Cost = (n: number, body = 0): number => (n <= UNROLL_D4 ? n * body : loopCost(n, body));

// ------------------------------------------------------------------ loss_reduce
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

/** loss [] = sum(part) / den and den [1] (see loss_reduce). */
export function reduceLoss(part: Region, w: Region, mean: boolean, scale = 1): { loss: Tensor; den: Tensor } {
  const loss = Tensor.empty([]); // []
  const den = Tensor.empty([1]); // [1]
  const partOff = part.off ?? 0;
  const wOff = w.off ?? 0;
  const nPart = part.n ?? part.t.size - partOff;
  const nW = w.n ?? w.t.size - wOff;
  // Elements per dispatch: 256 threads, two strided loops and the 256-step sum within the loop budget.
  const per = maxLoopIterations(loopBudget(), 1, loopCost(256) + 2) * 256;
  for (const [i0, i1] of ranges(Math.max(nPart, nW), per)) {
    lossReduce.run({ part: part.t, w: w.t, out: loss, den }, { nPart, partOff, nW, wOff, mean: mean ? 1 : 0, scale, i0, i1 });
  }
  return { loss, den };
}

// ------------------------------------------------------------------ deterministic row index (CSR by table id)
const IDX_PRELUDE = /* wgsl */ `
struct Params { M: u32, K: u32, V: u32, pair: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids0: array<i32>;  // [M] entry ids; pair mode: [M/2] ids of even entries
@group(0) @binding(2) var<storage, read> ids1: array<i32>;  // pair mode: [M/2] ids of odd entries (else unused)
@group(0) @binding(3) var<storage, read> w: array<f32>;     // [M/K] row weights: rows with w == 0 are left out
fn entry_id(e: u32) -> u32 {
  var id = ids0[e];
  if (p.pair == 1u) { id = select(ids0[e >> 1u], ids1[e >> 1u], (e & 1u) == 1u); }
  return u32(clamp(id, 0, i32(p.V) - 1));
}
fn entry_valid(e: u32) -> bool { return w[e / p.K] != 0.0; }`;

const idxKeys = defineKernel({
  name: 'rowidx_keys',
  foldable: true,
  wgsl: /* wgsl */ `
// keys[e] = clamp(id(e), 0, V-1) for entries of rows with w != 0, V (out of range: dropped by the index) else.
${IDX_PRELUDE}
@group(0) @binding(4) var<storage, read_write> keys: array<u32>; // [M]
${ENTRY} {
  ${LINEAR}
  if (i >= p.M) { return; }
  keys[i] = select(p.V, entry_id(i), entry_valid(i));
}`,
  grid: ({ M }) => [ceilDiv(M!, WG)],
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
 * are left out. One key kernel, then kernels/scatter.ts's GPU radix sort (stable, linear in M whatever the id
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

/** WGSL constants baking the row width in: D4 storage elements of `lanes` floats per row. */
export const dConsts = (D: number): string => `const D4 = ${D / lanesFor(D)}u;`;

function scatterKernel(D: number): Kernel {
  const l = lanesFor(D);
  const name = `rows_scatter_d${D}`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
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
@group(0) @binding(4) var<storage, read> x: array<${vt(l)}>;         // [M / K, D]
@group(0) @binding(5) var<storage, read_write> out: array<${vt(l)}>; // [V, D]
${dConsts(D)}
${ENTRY} {
  ${LINEAR}
  if (i >= p.V) { return; }
  let a = offsets[i];
  let b = offsets[i + 1u];
  let j0 = a + min(p.s0, b - a);
  let j1 = j0 + min(p.len, b - j0);
  if (p.s0 != 0u && j0 == j1) { return; }
  var acc: array<${vt(l)}, D4>;
  if (p.s0 != 0u) { ${forD4(D / l, (k) => `acc[${k}] = out[i * D4 + ${k}];`)} }
  for (var j = j0; j < j1; j = j + 1u) {
    let e = entries[j];
    let cf = coef[e];
    let xr = (e / p.K) * D4;
    ${forD4(D / l, (k) => `acc[${k}] = acc[${k}] + cf * x[xr + ${k}];`)}
  }
  ${forD4(D / l, (k) => `out[i * D4 + ${k}] = acc[${k}];`)}
}`,
      grid: ({ V }) => [ceilDiv(V!, WG)],
      minSizes: ({ V }) => ({ offsets: V! + 1, out: V! * (D / l) }),
      loopTrips: ({ len }) => 3 * d4Cost(D / l) + loopCost(len!, d4Cost(D / l)),
    }),
  );
}

/** out [V, D]: out[v] = sum over the index's entries e with id v (ascending e) of coef[e] * x[e / K]. */
export function scatterRows(index: RowIndex, coef: Tensor, x: Tensor, D: number): Tensor {
  if (coef.size < index.M || x.size < (index.M / index.K) * D) throw new Error(`scatterRows: coef ${coef.describe()} / x ${x.describe()} too small for ${index.M} entries`);
  const out = Tensor.empty([index.V, D]); // [V, D]
  const d4 = D / lanesFor(D);
  // A segment can hold every entry (a padding id repeated M times): pieces of `len` entries per dispatch.
  const len = Math.min(index.M, maxLoopIterations(loopBudget(), d4Cost(d4), 3 * d4Cost(d4)));
  for (const [s0, s1] of ranges(index.M, len)) {
    scatterKernel(D).run({ offsets: index.offsets, entries: index.entries, coef, x, out }, { V: index.V, K: index.K, s0, len: Math.max(s1 - s0, 0) });
  }
  return out;
}

// ------------------------------------------------------------------ infonce kernels
// Candidates [c0, c1) per dispatch: more candidates than one invocation's loop budget allows (D = 150 rows loop
// over D inside the candidate loop) take several dispatches; the online state (max, sum, positive logit; dq)
// is carried in the outputs between them, in the same order as one dispatch (bit-identical).
const INFONCE_PARAMS = 'struct Params { N: u32, C: u32, V: u32, invTau: f32, dense: u32, hasPos: u32, hasMask: u32, c0: u32, c1: u32 }';
const INFONCE_FNS = (l: Lanes): string => /* wgsl */ `
${dotFn(l)}
fn cand_id(n: u32, c: u32) -> u32 {
  if (p.dense == 1u) { return c; }
  return u32(clamp(cand[n * p.C + c], 0, i32(p.V) - 1));
}
fn pos_col(n: u32) -> u32 {
  if (p.hasPos == 0u) { return 0u; }
  return u32(clamp(pos[n], 0, i32(p.C) - 1));
}`;

function infonceFwdKernel(D: number): Kernel {
  const l = lanesFor(D);
  const name = `infonce_fwd_d${D}`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// One thread per row, q[n] in registers: online max/sum over the C logits (no barriers), lse and the
// weighted row loss.
${INFONCE_PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<${vt(l)}>;      // [N, D]
@group(0) @binding(2) var<storage, read> table: array<${vt(l)}>;  // [V, D] (dense: [C, D])
@group(0) @binding(3) var<storage, read> cand: array<i32>;        // [N, C] (dense: unused)
@group(0) @binding(4) var<storage, read> pos: array<i32>;         // [N] positive column (hasPos)
@group(0) @binding(5) var<storage, read> mask: array<f32>;        // [N] row weights (hasMask)
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;     // [2, N]: row max m, then log sum exp(s - m)
@group(0) @binding(7) var<storage, read_write> rowLoss: array<f32>; // [N] w * (lse - s_pos)
@group(0) @binding(8) var<storage, read_write> rowW: array<f32>;    // [N] w
${dConsts(D)}
${INFONCE_FNS(l)}
${ENTRY} {
  ${LINEAR}
  if (i >= p.N) { return; }
  var w = 1.0;
  if (p.hasMask == 1u) { w = mask[i]; }
  rowW[i] = w;
  if (w == 0.0) { lse[i] = 0.0; lse[p.N + i] = 0.0; rowLoss[i] = 0.0; return; }
  var qr: array<${vt(l)}, D4>;
  ${forD4(D / l, (k) => `qr[${k}] = q[i * D4 + ${k}];`)}
  let pc = pos_col(i);
  var m = -3.4028234663852886e38;
  var s = 0.0;
  var sp = 0.0;
  if (p.c0 != 0u) { m = lse[i]; s = lse[p.N + i]; sp = rowLoss[i]; }
  for (var c = p.c0; c < p.c1; c = c + 1u) {
    let tr = cand_id(i, c) * D4;
    var a = 0.0;
    ${forD4(D / l, (k) => `a = a + dotv(qr[${k}], table[tr + ${k}]);`)}
    let x = a * p.invTau;
    if (c == pc) { sp = x; }
    if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s = s + exp(x - m); }
  }
  if (p.c1 < p.C) { lse[i] = m; lse[p.N + i] = s; rowLoss[i] = sp; return; }
  // lse is kept as (m, log s): m + log(s) would round log(s) to the ulp of m (0.5 at |m| ~ 4e6), which
  // breaks the probabilities of tied or near-tied logits at large magnitudes.
  let ls = log(s);
  lse[i] = m;
  lse[p.N + i] = ls;
  rowLoss[i] = w * ((m - sp) + ls);
}`,
      grid: ({ N }) => [ceilDiv(N!, WG)],
      minSizes: ({ N }) => ({ q: N! * (D / l), pos: N!, mask: N!, lse: 2 * N!, rowLoss: N!, rowW: N! }),
      loopTrips: ({ c0, c1 }) => infonceFwdTrips(D, c1! - c0!),
    }),
  );
}

function infonceBwdKernel(D: number): Kernel {
  const l = lanesFor(D);
  const name = `infonce_bwd_d${D}`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// One thread per row; q[n], the current candidate row and dq[n] in registers. For each candidate: reload its
// row once, recompute the logit (same code as the forward), coef = g_n (exp((s - m) - logsum) - 1[c == pos])
// / tau (written for the table scatter), dq += coef * row.
${INFONCE_PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<${vt(l)}>;      // [N, D]
@group(0) @binding(2) var<storage, read> table: array<${vt(l)}>;  // [V, D]
@group(0) @binding(3) var<storage, read> cand: array<i32>;        // [N, C]
@group(0) @binding(4) var<storage, read> pos: array<i32>;         // [N]
@group(0) @binding(5) var<storage, read> saved: array<f32>;       // [3N + 1]: w [N], m [N], logsum [N], den
@group(0) @binding(6) var<storage, read> gy: array<f32>;          // [1]
@group(0) @binding(7) var<storage, read_write> coef: array<f32>;  // [N, C]
@group(0) @binding(8) var<storage, read_write> dq: array<${vt(l)}>; // [N, D]
${dConsts(D)}
${INFONCE_FNS(l)}
${ENTRY} {
  ${LINEAR}
  if (i >= p.N) { return; }
  let w = saved[i];
  var acc: array<${vt(l)}, D4>;
  if (w == 0.0) {
    for (var c = p.c0; c < p.c1; c = c + 1u) { coef[i * p.C + c] = 0.0; }
    ${forD4(D / l, (k) => `dq[i * D4 + ${k}] = acc[${k}];`)}
    return;
  }
  if (p.c0 != 0u) { ${forD4(D / l, (k) => `acc[${k}] = dq[i * D4 + ${k}];`)} }
  let g = gy[0] * w / saved[3u * p.N] * p.invTau;
  let pc = pos_col(i);
  let m = saved[p.N + i];
  let ls = saved[2u * p.N + i];
  var qr: array<${vt(l)}, D4>;
  ${forD4(D / l, (k) => `qr[${k}] = q[i * D4 + ${k}];`)}
  for (var c = p.c0; c < p.c1; c = c + 1u) {
    let tr = cand_id(i, c) * D4;
    var row: array<${vt(l)}, D4>;
    var a = 0.0;
    ${forD4(D / l, (k) => `row[${k}] = table[tr + ${k}]; a = a + dotv(qr[${k}], row[${k}]);`)}
    let cf = g * (exp((a * p.invTau - m) - ls) - select(0.0, 1.0, c == pc));
    coef[i * p.C + c] = cf;
    ${forD4(D / l, (k) => `acc[${k}] = acc[${k}] + cf * row[${k}];`)}
  }
  ${forD4(D / l, (k) => `dq[i * D4 + ${k}] = acc[${k}];`)}
}`,
      grid: ({ N }) => [ceilDiv(N!, WG)],
      minSizes: ({ N, C }) => ({ q: N! * (D / l), pos: N!, saved: 3 * N! + 1, gy: 1, coef: N! * C!, dq: N! * (D / l) }),
      loopTrips: ({ c0, c1 }) => infonceBwdTrips(D, c1! - c0!),
    }),
  );
}

function infonceDenseDkKernel(l: Lanes): Kernel {
  const name = `infonce_dense_dk_v${l}`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// dcands[m, k] = sum_n coef[n, m] * q[n, k] (rows in ascending order). One thread per (candidate, chunk of D).
// Rows [n0, n1) per dispatch (past the loop budget: several, continuing from dk; bit-identical).
struct Params { N: u32, M: u32, D4: u32, n0: u32, n1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<${vt(l)}>;          // [N, D]
@group(0) @binding(2) var<storage, read> coef: array<f32>;            // [N, M]
@group(0) @binding(3) var<storage, read_write> dk: array<${vt(l)}>;    // [M, D]
${ENTRY} {
  ${LINEAR}
  if (i >= p.M * p.D4) { return; }
  let m = i / p.D4;
  let k = i % p.D4;
  var acc = ${vt(l)}(0.0);
  if (p.n0 != 0u) { acc = dk[i]; }
  for (var n = p.n0; n < p.n1; n = n + 1u) { acc = acc + coef[n * p.M + m] * q[n * p.D4 + k]; }
  dk[i] = acc;
}`,
      grid: ({ M, D4 }) => [ceilDiv(M! * D4!, WG)],
      minSizes: ({ N, M, D4 }) => ({ q: N! * D4!, coef: N! * M!, dk: M! * D4! }),
      loopTrips: ({ n0, n1 }) => loopCost(n1! - n0!),
    }),
  );
}

/** Loop cost of the forward / backward kernels for `n` candidates of width D (the D4 loops nest in the candidate loop). */
function infonceFwdTrips(D: number, n: number): number {
  const d4 = D / lanesFor(D);
  return d4Cost(d4) + loopCost(n, d4Cost(d4));
}
function infonceBwdTrips(D: number, n: number): number {
  const d4 = D / lanesFor(D);
  return Math.max(loopCost(n) + d4Cost(d4), 3 * d4Cost(d4) + loopCost(n, 2 * d4Cost(d4)));
}
/** The most candidates one dispatch may take under the loop budget (Infinity: no limit). */
function candidatesPerDispatch(trips: (D: number, n: number) => number, D: number): number {
  const budget = loopBudget();
  if (!Number.isFinite(budget)) return Infinity;
  const per = trips(D, 1) - trips(D, 0); // cost per candidate
  let n = Math.max(1, Math.floor((budget - trips(D, 0)) / per));
  while (n > 1 && trips(D, n) > budget) n--;
  return n;
}

// ------------------------------------------------------------------ the op
interface InfonceAttrs {
  temperature: number;
  reduction: Reduction;
  dense: boolean;
  hasPos: boolean;
  hasMask: boolean;
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

const infonceOp = defineOp<InfonceAttrs>({
  name: 'infonce',
  forward(ctx, inputs, a) {
    const [q, table, cand] = inputs as [Tensor, Tensor, Tensor];
    const pos = a.hasPos ? inputs[3]! : null;
    const mask = a.hasMask ? inputs[a.hasPos ? 4 : 3]! : null;
    const what = a.dense ? 'infonceDense' : 'infonce';
    if (q.ndim !== 2 || table.ndim !== 2 || q.shape[1] !== table.shape[1]) throw new Error(`${what}: q ${q.describe()} and ${a.dense ? 'cands' : 'table'} ${table.describe()} must be [N, D] and [${a.dense ? 'M' : 'V'}, D]`);
    const [N, D] = q.shape as [number, number];
    const V = table.shape[0]!;
    if (N === 0 || D === 0 || V === 0) throw new Error(`${what}: empty input (q ${q.describe()}, ${table.describe()})`);
    const C = a.dense ? V : cand.shape[1]!;
    if (!a.dense && (cand.dtype !== 'i32' || cand.ndim !== 2 || cand.shape[0] !== N || C === 0)) throw new Error(`infonce: cand ${cand.describe()} must be i32 [${N}, C] with C >= 1`);
    if (pos && (pos.dtype !== 'i32' || pos.size !== N)) throw new Error(`${what}: ${a.dense ? 'targets' : 'pos'} ${pos.describe()} must be i32 [${N}]`);
    if (mask && (mask.dtype !== 'f32' || mask.size !== N)) throw new Error(`${what}: mask ${mask.describe()} must be f32 [${N}]`);
    if (q.dtype !== 'f32' || table.dtype !== 'f32') throw new Error(`${what}: q and table must be f32`);
    if (!(a.temperature > 0) || !Number.isFinite(a.temperature)) throw new Error(`${what}: temperature ${a.temperature} must be a positive number`);
    const params = { N, C, V, invTau: 1 / a.temperature, dense: a.dense ? 1 : 0, hasPos: pos ? 1 : 0, hasMask: mask ? 1 : 0 };
    const lse = Tensor.empty([2, N]); // [2, N]: row max, log-sum
    const rowLoss = Tensor.empty([N]); // [N]
    const rowW = Tensor.empty([N]); // [N]
    // Absent optional inputs bind another read-only tensor of the right dtype (never read: hasPos/hasMask = 0).
    const fwd = infonceFwdKernel(D);
    for (const [c0, c1] of ranges(C, candidatesPerDispatch(infonceFwdTrips, D))) {
      fwd.run({ q, table, cand, pos: pos ?? cand, mask: mask ?? q, lse, rowLoss, rowW }, { ...params, c0, c1 });
    }
    const { loss, den } = reduceLoss({ t: rowLoss }, { t: rowW }, a.reduction === 'mean');
    rowLoss.dispose();
    if (ctx.recording) {
      // [3N + 1]: w, m, logsum, den in one buffer (keeps the backward kernel within 9 bindings; w first so the
      // buffer doubles as the row-weight binding of the row index).
      const saved = concatFlat([rowW, lse, den]); // [3N + 1]
      ctx.save(q, table, cand, pos ?? cand, saved);
      saved.dispose();
      ctx.extra.dims = { N, C, V, D };
    }
    lse.dispose();
    rowW.dispose();
    den.dispose();
    return loss;
  },
  backward(ctx, gy) {
    const [q, table, cand, pos, saved] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
    const a = ctx.attrs;
    const { N, C, V, D } = ctx.extra.dims as { N: number; C: number; V: number; D: number };
    const l = lanesFor(D);
    const coef = Tensor.empty([N, C]); // [N, C]
    const dq = Tensor.empty([N, D]); // [N, D] (written even when q needs no gradient: it costs one store per row)
    const params = { N, C, V, invTau: 1 / a.temperature, dense: a.dense ? 1 : 0, hasPos: a.hasPos ? 1 : 0, hasMask: a.hasMask ? 1 : 0 };
    const bwd = infonceBwdKernel(D);
    for (const [c0, c1] of ranges(C, candidatesPerDispatch(infonceBwdTrips, D))) {
      bwd.run({ q, table, cand, pos, saved, gy, coef, dq }, { ...params, c0, c1 });
    }
    let dt: Tensor | null = null;
    if (ctx.needsGrad[1]) {
      if (a.dense) {
        dt = Tensor.empty([V, D]); // [M, D]
        for (const [n0, n1] of ranges(N, maxLoopIterations(loopBudget()))) {
          infonceDenseDkKernel(l).run({ q, coef, dk: dt }, { N, M: V, D4: D / l, n0, n1 });
        }
      } else {
        const index = buildRowIndex(cand, null, C, V, saved);
        dt = scatterRows(index, coef, q, D); // [V, D]
        index.dispose();
      }
    }
    coef.dispose();
    let dqOut: Tensor | null = dq;
    if (!ctx.needsGrad[0]) {
      dq.dispose();
      dqOut = null;
    }
    const grads: Array<Tensor | null> = [dqOut, dt, null];
    if (a.hasPos) grads.push(null);
    if (a.hasMask) grads.push(null);
    return grads;
  },
});

export interface InfonceOptions {
  /** Logits are divided by this (default 1). */
  temperature?: number;
  /** Column of cand holding the positive, per row: i32 [N] (default: column 0). Clamped to [0, C). */
  pos?: Tensor;
  /** Row weights f32 [N] (usually 0/1 validity); rows with 0 contribute nothing and get zero gradients. */
  mask?: Tensor;
  /** 'mean' (default): divide by the sum of the weights (loss 0 when it is 0); 'sum': no division. */
  reduction?: Reduction;
}

/**
 * InfoNCE over sampled candidates: q [N, D], table [V, D], cand [N, C] i32 ids in [0, V) (checked on the GPU; clamped
 * with CHECK_IDS=0) -> loss [].
 * Gradients to q and table (deterministic scatter into the table rows).
 */
export function infonce(q: Tensor, table: Tensor, cand: Tensor, opts: InfonceOptions = {}): Tensor {
  checkIds(cand, table.shape[0] ?? 0, 'infonce', 'candidate id'); // outside [0, V): an error at the next sync (CHECK_IDS=0: clamped)
  const inputs = [q, table, cand];
  if (opts.pos) inputs.push(opts.pos);
  if (opts.mask) inputs.push(opts.mask);
  return infonceOp.apply(inputs, {
    temperature: opts.temperature ?? 1,
    reduction: opts.reduction ?? 'mean',
    dense: false,
    hasPos: !!opts.pos,
    hasMask: !!opts.mask,
  });
}

export type InfonceDenseOptions = Omit<InfonceOptions, 'pos'>;

/**
 * InfoNCE against a shared dense candidate matrix (in-batch negatives): q [N, D], cands [M, D], targets [N] i32
 * (the positive's row of cands, clamped to [0, M)) -> loss []. Gradients to q and cands.
 */
export function infonceDense(q: Tensor, cands: Tensor, targets: Tensor, opts: InfonceDenseOptions = {}): Tensor {
  const inputs = [q, cands, targets, targets];
  if (opts.mask) inputs.push(opts.mask);
  return infonceOp.apply(inputs, {
    temperature: opts.temperature ?? 1,
    reduction: opts.reduction ?? 'mean',
    dense: true,
    hasPos: true,
    hasMask: !!opts.mask,
  });
}

// ------------------------------------------------------------------ float64 references
export interface RefInfonceOptions {
  temperature?: number;
  reduction?: Reduction;
  /** [N] positive column (ids form; default 0) or the targets (dense form). */
  pos?: F64 | null;
  mask?: F64 | null;
  /** cand is ignored and every row scores all table rows (infonceDense). */
  dense?: boolean;
}

const clampInt = (x: number, lo: number, hi: number): number => Math.min(Math.max(Math.trunc(x), lo), hi);

interface InfonceRows {
  N: number;
  C: number;
  D: number;
  id: (n: number, c: number) => number;
  pc: (n: number) => number;
  w: (n: number) => number;
  s: (n: number, c: number) => number;
}

function infonceRows(q: F64, table: F64, cand: F64 | null, o: RefInfonceOptions): InfonceRows {
  const [N, D] = q.shape as [number, number];
  const V = table.shape[0]!;
  const C = o.dense ? V : cand!.shape[1]!;
  const inv = 1 / (o.temperature ?? 1);
  const id = (n: number, c: number): number => (o.dense ? c : clampInt(cand!.data[n * C + c]!, 0, V - 1));
  return {
    N,
    C,
    D,
    id,
    pc: (n) => (o.pos ? clampInt(o.pos.data[n]!, 0, C - 1) : 0),
    w: (n) => (o.mask ? o.mask.data[n]! : 1),
    s: (n, c) => {
      const r = id(n, c);
      let acc = 0;
      for (let d = 0; d < D; d++) acc += q.data[n * D + d]! * table.data[r * D + d]!;
      return acc * inv;
    },
  };
}

function lseOf(xs: number[]): number {
  const m = Math.max(...xs);
  let s = 0;
  for (const x of xs) s += Math.exp(x - m);
  return m + Math.log(s);
}

/** Float64 InfoNCE loss (shape []): see the header. */
export function refInfonce(q: F64, table: F64, cand: F64 | null, o: RefInfonceOptions = {}): F64 {
  const R = infonceRows(q, table, cand, o);
  let L = 0;
  let W = 0;
  for (let n = 0; n < R.N; n++) {
    const w = R.w(n);
    W += w;
    if (w === 0) continue;
    const s = Array.from({ length: R.C }, (_, c) => R.s(n, c));
    L += w * (lseOf(s) - s[R.pc(n)]!);
  }
  const den = (o.reduction ?? 'mean') === 'mean' && W !== 0 ? W : 1;
  return { data: Float64Array.of(L / den), shape: [] };
}

/** Float64 gradients of refInfonce times gy: [dq, dtable]. */
export function refInfonceGrad(q: F64, table: F64, cand: F64 | null, o: RefInfonceOptions, gy: number): [F64, F64] {
  const R = infonceRows(q, table, cand, o);
  const inv = 1 / (o.temperature ?? 1);
  const dq = ref.zerosF64(q.shape);
  const dt = ref.zerosF64(table.shape);
  let W = 0;
  for (let n = 0; n < R.N; n++) W += R.w(n);
  const den = (o.reduction ?? 'mean') === 'mean' && W !== 0 ? W : 1;
  const D = R.D;
  for (let n = 0; n < R.N; n++) {
    const w = R.w(n);
    if (w === 0) continue;
    const s = Array.from({ length: R.C }, (_, c) => R.s(n, c));
    const l = lseOf(s);
    const g = (gy * w) / den;
    for (let c = 0; c < R.C; c++) {
      const cf = g * inv * (Math.exp(s[c]! - l) - (c === R.pc(n) ? 1 : 0));
      const r = R.id(n, c);
      for (let d = 0; d < D; d++) {
        dq.data[n * D + d]! += cf * table.data[r * D + d]!;
        dt.data[r * D + d]! += cf * q.data[n * D + d]!;
      }
    }
  }
  return [dq, dt];
}

/** Float64 segment sum: out[v] = sum over entries e (ascending) with id(e) = v and w[e / K] != 0 of coef[e] x[e / K]. */
export function refScatterRows(ids: ArrayLike<number>, K: number, V: number, w: ArrayLike<number>, coef: ArrayLike<number>, x: F64): F64 {
  const D = x.shape[1]!;
  const out = ref.zerosF64([V, D]);
  for (let e = 0; e < ids.length; e++) {
    const n = Math.floor(e / K);
    if (w[n] === 0) continue;
    const v = clampInt(ids[e]!, 0, V - 1);
    for (let d = 0; d < D; d++) out.data[v * D + d]! += coef[e]! * x.data[n * D + d]!;
  }
  return out;
}
