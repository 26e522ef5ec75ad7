// kernels/attrec_step.ts — attrec_step: one whole AttRec training step (forward, hinge loss, backward, the L2
// terms and the Adagrad update of every table) in 12 dispatches (13 when it packs the parameters) and no tape, for
// the authors' default model (models/attrec.ts: shared ReLU projection, diagonal zeroed after the softmax, no
// projection dropout). The autograd path runs ~100 dispatches for the same step; this is the trainer's default
// wherever it applies (models/attrec.ts AttRecFusedStep, models/attrec_train.ts `fusedStep`).
//
// Math (B windows, L inputs, K = 2T candidates: T targets then T negatives; D, computed at Dp = 4*DW >= D with
// zero columns, exact): the notation of models/attrec.ts. The projection runs on the batch's distinct input
// items only (u = their list, slot(s) = the position of item s in it): (E_i + TS_i) @ W = (Q @ W)[s_i] + TS_i @ W.
//   Zu  = [TS; Q[u]] @ W                      [L + |u|, Dp]
//   z_i = relu(Zu[L + slot(s_i)] + Zu[i])
//   S~  = softmax(z z^T / sqrt(D) + pad)      row i over keys j; pad = -1e4 on keys with id 0 (left padding)
//   c_j = sum_{i != j} w_i S~_ij              w_i = 1/n for the n real rows (n = L without padding), else 0
//   m   = sum_j c_j Q[s_j]
//   y_k = alpha ||P[u] - X[c_k]||^2 + (1-alpha) ||m - Q[c_k]||^2
//   loss = sum_b sum_{k<T} max(0, y_k - y_{T+k} + margin) + regW/2 |W|^2 + regEmb/2 (|P|^2 + |V|^2 + |X|^2 + |Q|^2)
//   backward: gy_k = +-[hinge k active]; du, dm, dX[c_k], dQ[c_k]; dc_j = dm . Q[s_j], dQ[s_j] += c_j dm;
//   dS~_ij = [i != j] w_i dc_j; dlogit = S~ (dS~ - rowsum(S~ dS~)); dz_i = sum_j (dl_ij + dl_ji) z_j / sqrt(D);
//   dpre_i = dz_i [z_i > 0] -> dZu[L + slot(s_i)] and dZu[i]; dW = [TS; Q[u]]^T dZu; dQ[u] += dZu[L:] W^T.
//
// Dispatches (one step; 12, or 13 with the pack):
//   attrec_step_pack       the parameters at the compute width: Q -> QT, X and P -> XP, W -> Wp [Dp, Dp] and its
//                          transpose WpT (zero rows/columns past D), one vec4 per thread, the tables read as vecW.
//                          (matmul reads Wp and WpT as uniform arrays on llvmpipe: MATMUL_TUNING.uniformB.)
//                          Only when the copies are not current: the updates below write them too, so the pack
//                          runs at the first step and after anything else wrote P, Q, X or W (their write
//                          versions, engine/versions.ts: a host write, a kernel, a copy; invalidate() forces it).
//   attrec_step_gather     QU[L + j] = QT[u_j] after the L time-signal rows (written once).
//   matmul                 Zu = QU @ Wp.
//   attrec_step_window     one thread per window: the forward and backward of everything above between Zu and
//                          the table gradients (the time-signal rows of Zu read as a uniform array). Writes the
//                          window's rows into `rows`: dpre [L], m, dm, du, and the coefficients of its rank-one
//                          table gradients (dQ[s_j] += c_j dm, dQ[c_k] = -cm_k (m - Q[c_k]), dX[c_k] = -cu_k
//                          (P[u] - X[c_k])), not 2K + L gradient rows: 8 row stores per window instead of 23, and the
//                          updates read rows the window wrote once (m, dm) or the tables' own rows (P[u]); adds
//                          its hinge loss to hingeAcc[b]. No atomics: a table row hit by several windows is summed
//                          by the next kernels over a CSR built on the host.
//   attrec_step_segsum     dZu[r] = the dpre rows of the input slot r (r >= L) or of position r (r < L), summed
//                          (4 vec4s of a row per thread: one CSR walk feeds them; the update kernels too).
//   matmul x2 (+ split-K)  dWp = QU^T @ dZu, dQmm = dZu @ WpT.
//   attrec_step_update x5  per table (Q, X, P, V, W): g = (its CSR terms summed: Q and X form each rank-one term
//                          from a coefficient and the m / dm / P[u] row, exactly the value the window would have
//                          stored; P sums du rows) + (dQmm via slot, or dWp) + reg p;
//                          the Adagrad update of the optimizer's own state (acc += g'^2, p -= lr g' / (sqrt(acc) +
//                          eps), g' = g + wd p), the parameter and accumulator as vecW; reg/2 p^2 of the
//                          pre-update p added to lossAcc (the L2 loss terms); the new rows into QT / XP / Wp + WpT.
// The loss is never formed per step: hingeAcc [B] and lossAcc (one slot per update thread) accumulate across steps
// and are summed when the trainer reads the epoch's loss (lossSum), so a step reads nothing back.
// Sums run in a fixed order (CSR segments ascending by row), so a step is bit-reproducible.
// llvmpipe's loop budget: the window kernel's loops are fixed by DW (four passes); a CSR segment holds at most
// B*(L+K) rows, so attrecStepUnsupported() refuses batches whose longest segment could pass the budget, and a time
// signal over the uniform-binding limit (the trainer then runs the autograd path and says why).
// Speed (one ML-100k step, B 1000, d 150): `npm run bench -- attrec_step` (fused vs the autograd step) and
// `seqrec train --model attrec --profile` (per kernel); figures in docs/BENCHMARKS.md.
// Reference: refAttRecStep (float64, below). test/attrec_step.test.ts compares steps with it (odd sizes, padding,
// large magnitudes, poisoned buffers), with the numpy fixtures of test/fixtures/attrec and with the autograd path.
import { ceilDiv, defineKernel, loopBudget, loopCost, noGrad, rt, scope, Tensor, untracked, type Bindable } from '../engine/index.js';
import { add } from './elementwise.js';
import { sum } from './reduce.js';
import { foldedIndex, kernelFamily, main1d, unroll, vecType, vecWidth, type VecWidth } from './common.js';
import { matmul as mm } from './matmul.js';

const WG = 64;

/** Sizes of one fused step: items N (table rows), users U, width D, inputs L, targets T, batch B. */
export interface AttRecStepDims {
  N: number;
  U: number;
  D: number;
  L: number;
  T: number;
  B: number;
}

export interface AttRecStepHyper {
  alpha: number;
  margin: number;
  regW: number;
  regEmb: number;
  /** Adagrad: learning rate, eps (TF: 0), weight decay (0). */
  lr: number;
  eps: number;
  weightDecay: number;
}

/** The parameters (updated in place) and, for each, the optimizer's accumulator region (floats from `offset`). */
export interface AttRecStepParams {
  P: Tensor;
  V: Tensor;
  Q: Tensor;
  X: Tensor;
  W: Tensor;
  acc: Record<'P' | 'V' | 'Q' | 'X' | 'W', { arena: Bindable; offset: number }>;
}

/**
 * What the window kernel writes into `rows` (offsets in rows of Dp): dpre [B*L] | m [B] | dm [B] | du [B], then
 * from vec4 `cf` the coefficients, CQ vec4s per window: c_j (j < L), -cm_k, -cu_k (k < K), zero-padded. The table
 * gradients of the inputs and candidates are rank one per window (c_j dm, -cm_k (m - Q_k), -cu_k (u - X_k)): the
 * updates form them from these rows and coefficients (codes b * SL + slot in CSR B) instead of the window kernel
 * writing 2K + L rows per window.
 */
function rowLayout(d: AttRecStepDims): { dpre: number; m: number; dm: number; du: number; cf: number; CQ: number; SL: number; rows: number } {
  const { B, L } = d;
  const SL = L + 4 * d.T; // coefficient slots per window
  const CQ = Math.ceil(SL / 4);
  const DW = Math.ceil(d.D / 4);
  const dpre = 0;
  const m = B * L;
  const dm = m + B;
  const du = dm + B;
  const cf = (du + B) * DW; // vec4 offset
  return { dpre, m, dm, du, cf, CQ, SL, rows: du + B + Math.ceil((B * CQ) / DW) };
}

/** Longest CSR segment a batch can produce (a row hit by every input and candidate slot). */
const maxSegment = (d: AttRecStepDims): number => d.B * (d.L + 2 * d.T);

/**
 * Why a batch of these sizes does not fit the kernels on this device, or null: the loop budget bounds a CSR
 * segment, and the window kernel reads the L time-signal rows of the projection as one uniform array.
 */
export function attrecStepUnsupported(d: AttRecStepDims): string | null {
  if (loopCost(maxSegment(d)) + 4 > loopBudget()) return `a batch of ${d.B} windows can put ${maxSegment(d)} rows into one table row, past this adapter's loop budget (${loopBudget()})`;
  const ts = d.L * Math.ceil(d.D / 4) * 16;
  const lim = rt().device.limits.maxUniformBufferBindingSize;
  if (ts > lim) return `the time signal at the compute width (L ${d.L} x D ${d.D}: ${ts} bytes) is over this device's maxUniformBufferBindingSize (${lim})`;
  return null;
}

/** Whether a batch of these sizes fits the kernels (attrecStepUnsupported gives the reason when not). */
export function attrecStepSupported(d: AttRecStepDims): boolean {
  return attrecStepUnsupported(d) === null;
}

// ------------------------------------------------------------------ host: ids, the batch's input items and the two CSRs
/**
 * One batch for attrecStep, in one i32 buffer (`meta`) built on the host (the trainer builds the next batch while
 * the GPU runs this one): ids [B, 1 + 2L + K] (user, inputs oldest first, the inputs' slots in the batch's input
 * item list, targets, negatives), that list (the distinct input items, ascending: the rows projected this step),
 * the slot of every item row (-1: not an input of this batch), and the two CSRs.
 */
export interface AttRecStepBatch {
  dims: AttRecStepDims;
  meta: Tensor;
  /** Distinct input items of the batch (rows of the step's projection besides the L time-signal rows). */
  inputs: number;
  /** Section offsets in `meta` (elements). */
  at: AttRecStepSections;
  dispose(): void;
}

export interface AttRecStepSections {
  uniq: number;
  slot: number;
  csrA: number;
  permA: number;
  csrB: number;
  permB: number;
}

/** Host side of attrecStepBatch: the meta array, its sections and the number of distinct inputs (exported for the tests). */
export function attrecStepMeta(users: Int32Array, seq: Int32Array, targets: Int32Array, negatives: Int32Array, d: AttRecStepDims): { meta: Int32Array; at: AttRecStepSections; inputs: number } {
  const { N, U, L, T, B } = d;
  const K = 2 * T;
  const where = 'attrecStepBatch';
  if (users.length !== B || seq.length !== B * L || targets.length !== B * T || negatives.length !== B * T) {
    throw new Error(`${where}: users [${users.length}], seq [${seq.length}], targets [${targets.length}], negatives [${negatives.length}] do not hold B=${B} windows of L=${L}, T=${T}`);
  }
  const check = (v: number, n: number, what: string, b: number): number => {
    if (!(v >= 0 && v < n)) throw new Error(`${where}: ${what} id ${v} of window ${b} is outside [0, ${n})`); // Int32Array: integers
    return v;
  };
  // The distinct input items, ascending, and each item's slot among them.
  const slotOf = new Int32Array(N).fill(-1);
  for (let k = 0; k < B * L; k++) slotOf[check(seq[k]!, N, 'input', Math.floor(k / L))] = 0;
  let Ub = 0;
  for (let r = 0; r < N; r++) if (slotOf[r] === 0) slotOf[r] = Ub++;
  const S = 1 + 2 * L + K;
  const lay = rowLayout(d);
  // Destinations: CSR A over the step's projection rows [TS L | inputs Ub]; CSR B over [Q N | X N | P U].
  const nA = 2 * B * L;
  const nB = B * L + 2 * B * K + B;
  const VA = L + Ub;
  const VB = 2 * N + U;
  const at: AttRecStepSections = { uniq: B * S, slot: 0, csrA: 0, permA: 0, csrB: 0, permB: 0 };
  at.slot = at.uniq + Ub;
  at.csrA = at.slot + N;
  at.permA = at.csrA + VA + 1;
  at.csrB = at.permA + nA;
  at.permB = at.csrB + VB + 1;
  const meta = new Int32Array(at.permB + nB);
  meta.set(slotOf, at.slot);
  for (let r = 0; r < N; r++) if (slotOf[r]! >= 0) meta[at.uniq + slotOf[r]!] = r;
  const destA = new Int32Array(nA);
  const srcA = new Int32Array(nA);
  const destB = new Int32Array(nB);
  const srcB = new Int32Array(nB);
  let a = 0;
  let e = 0;
  // Sources in ascending row order per kind, kinds in row order: each segment comes out ascending by row.
  for (let b = 0; b < B; b++) {
    meta[b * S] = check(users[b]!, U, 'user', b);
    for (let i = 0; i < L; i++) {
      const s = seq[b * L + i]!;
      meta[b * S + 1 + i] = s;
      meta[b * S + 1 + L + i] = slotOf[s]!;
      const row = lay.dpre + b * L + i;
      destA[a] = i, srcA[a++] = row;
      destA[a] = L + slotOf[s]!, srcA[a++] = row;
    }
    for (let k = 0; k < K; k++) meta[b * S + 1 + 2 * L + k] = check(k < T ? targets[b * T + k]! : negatives[b * T + k - T]!, N, k < T ? 'target' : 'negative', b);
  }
  // CSR B: Q rows get the codes b * SL + j (c_j dm) and b * SL + L + k (-cm_k (m - Q)), X rows b * SL + L + K + k
  // (-cu_k (u - X)), P rows the du row of the window.
  const SL = lay.SL;
  for (let b = 0; b < B; b++) for (let j = 0; j < L; j++) (destB[e] = meta[b * S + 1 + j]!), (srcB[e++] = b * SL + j);
  for (let b = 0; b < B; b++) for (let k = 0; k < K; k++) (destB[e] = meta[b * S + 1 + 2 * L + k]!), (srcB[e++] = b * SL + L + k);
  for (let b = 0; b < B; b++) for (let k = 0; k < K; k++) (destB[e] = N + meta[b * S + 1 + 2 * L + k]!), (srcB[e++] = b * SL + L + K + k);
  for (let b = 0; b < B; b++) (destB[e] = 2 * N + meta[b * S]!), (srcB[e++] = lay.du + b);
  csrInto(destA, srcA, VA, meta, at.csrA, at.permA);
  csrInto(destB, srcB, VB, meta, at.csrB, at.permB);
  return { meta, at, inputs: Ub };
}

/** CSR of (dest, src) pairs (every dest in [0, V)) into out: offsets [V+1] at o, the srcs grouped by dest at p (a stable counting sort). */
function csrInto(dest: Int32Array, src: Int32Array, V: number, out: Int32Array, o: number, p: number): void {
  const next = new Int32Array(V + 1);
  for (let m = 0; m < dest.length; m++) next[dest[m]! + 1]!++;
  for (let v = 0; v < V; v++) next[v + 1]! += next[v]!;
  out.set(next, o);
  for (let m = 0; m < dest.length; m++) out[p + next[dest[m]!]!++] = src[m]!;
}

/** Upload a batch (ids in range are checked here, on the host). */
export function attrecStepBatch(users: Int32Array, seq: Int32Array, targets: Int32Array, negatives: Int32Array, d: AttRecStepDims): AttRecStepBatch {
  const { meta, at, inputs } = attrecStepMeta(users, seq, targets, negatives, d);
  const t = untracked(() => Tensor.from(meta, [meta.length], 'i32'));
  return { dims: d, meta: t, inputs, at, dispose: () => t.dispose() };
}

// ------------------------------------------------------------------ kernels
/** The parameters at the compute width, one vec4 of columns per thread, read as vecW (W = 4, 2, 1 dividing D). */
const packKernel = kernelFamily('attrec_step_pack', ({ w }: { w: VecWidth }) => {
  const T = vecType(w);
  const n = 4 / w;
  const put = (k: number): string => (w === 4 ? 'v = src;' : w === 2 ? `v.${k === 0 ? 'xy' : 'zw'} = src;` : `v[${k}] = src;`);
  const read = (tbl: string): string => Array.from({ length: n }, (_, k) => `if (c + ${k * w}u < p.D) { let src = ${tbl}[o + ${k}u]; ${put(k)} }`).join(' ');
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// The parameters at the compute width Dp = 4 DW (zero columns past D), one vec4 per thread over the rows
// [Q N | X N | P U | W D]: Q -> QT[r], X -> XP[r], P -> XP[N + r], W -> Wp[r] and its column r of WpT; the tables
// read as ${T}.
struct Params { total: u32, N: u32, U: u32, D: u32, DW: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> Q: array<${T}>;            // [N, D]
@group(0) @binding(2) var<storage, read> X: array<${T}>;            // [N, D]
@group(0) @binding(3) var<storage, read> P: array<${T}>;            // [U, D]
@group(0) @binding(4) var<storage, read> W: array<${T}>;            // [D, D]
@group(0) @binding(5) var<storage, read_write> QT: array<vec4<f32>>; // [N, DW]
@group(0) @binding(6) var<storage, read_write> XP: array<vec4<f32>>; // [N + U, DW]
@group(0) @binding(7) var<storage, read_write> Wp: array<vec4<f32>>; // [Dp, DW] (rows >= D: zero)
@group(0) @binding(8) var<storage, read_write> WpT: array<f32>;      // [Dp, Dp] Wp transposed (columns >= D: zero)
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.total) { return; }
  let r = t / p.DW;
  let c = (t - r * p.DW) * 4u;
  var v = vec4<f32>(0.0);
  if (r < p.N) {
    let o = (r * p.D + c) / ${w}u;
    ${read('Q')}
    QT[t] = v;
  } else if (r < 2u * p.N) {
    let o = ((r - p.N) * p.D + c) / ${w}u;
    ${read('X')}
    XP[t - p.N * p.DW] = v;
  } else if (r < 2u * p.N + p.U) {
    let o = ((r - 2u * p.N) * p.D + c) / ${w}u;
    ${read('P')}
    XP[t - p.N * p.DW] = v;
  } else {
    let wr = r - 2u * p.N - p.U;
    let o = (wr * p.D + c) / ${w}u;
    ${read('W')}
    Wp[wr * p.DW + (t - r * p.DW)] = v;
    let Dp = 4u * p.DW;
    WpT[c * Dp + wr] = v.x; WpT[(c + 1u) * Dp + wr] = v.y; WpT[(c + 2u) * Dp + wr] = v.z; WpT[(c + 3u) * Dp + wr] = v.w;
  }
}`,
    grid: ({ total }) => [ceilDiv(total!, WG)],
  };
});

/** Statements for every pair (i, j) with i <= j (`{i}`, `{j}` replaced), or every ordered pair with `all`. */
function pairs(L: number, text: string, all = false): string {
  const out: string[] = [];
  for (let i = 0; i < L; i++) for (let j = all ? 0 : i; j < L; j++) out.push(text.replace(/\{i\}/g, String(i)).replace(/\{j\}/g, String(j)));
  return out.join('\n');
}

/** A sum written out: terms(k) for k in [0, n), joined by ' + ' (`zero` when empty). */
const sumOf = (n: number, term: (k: number) => string, zero = '0.0'): string => (n ? Array.from({ length: n }, (_, k) => term(k)).join(' + ') : zero);

/**
 * The per-window forward + backward, one thread per window, L, T, DW baked in. Every loop over the L inputs and
 * the K candidates is written out (constant indices: the per-window scalars stay in registers; a private array
 * indexed in a loop would live in llvmpipe's slow scratch memory), and the four loops over the row's DW vec4s
 * recompute z and m from the tables instead of keeping [L, Dp] rows per thread:
 *   pass 1  Gram z_i . z_j (z recomputed from Zu)       -> logits, softmax, c (scalars)
 *   pass 2  m (from c and the E rows; its row), the K distances  -> hinge, gy; the coefficients c_j, -cm_k, -cu_k
 *   pass 3  m again, du, dm (their rows); dc_j = dm . E_j  -> the attention backward (scalars)
 *   pass 4  z again: dpre rows.
 */
const windowKernel = kernelFamily('attrec_step_window', ({ L, T, DW }: { L: number; T: number; DW: number }) => {
  const K = 2 * T;
  const forI = (text: string): string => unroll(L, text, 'i', '\n  ');
  const forJ = (text: string): string => unroll(L, text, 'j', '\n  ');
  const forK = (text: string, n = K): string => unroll(n, text, 'k', '\n  ');
  const both = (i: number, j: number): string => (i <= j ? `g${i}_${j}` : `g${j}_${i}`);
  const row = (i: number, f: (j: number) => string, sep = '\n  '): string => Array.from({ length: L }, (_, j) => f(j)).join(sep);
  const softmaxRows = Array.from({ length: L }, (_, i) => [
    row(i, (j) => `let l${i}_${j} = ${both(i, j)} * p.scale + select(0.0, -1.0e4, s${j} == 0u);`),
    `let mx${i} = ${Array.from({ length: L }, (_, j) => `l${i}_${j}`).reduce((x, y) => `max(${x}, ${y})`)};`,
    row(i, (j) => `let x${i}_${j} = exp(l${i}_${j} - mx${i});`),
    `let den${i} = ${sumOf(L, (j) => `x${i}_${j}`)};`,
    row(i, (j) => `let a${i}_${j} = x${i}_${j} / den${i};`),
  ].join('\n  ')).join('\n  ');
  const cOf = (j: number): string => sumOf(L - 1, (t) => { const i = t < j ? t : t + 1; return `w${i} * a${i}_${j}`; });
  const mOf = sumOf(L, (j) => `c${j} * E${j}`, 'vec4<f32>(0.0)');
  // The window's coefficient slots c_j, -cm_k, -cu_k as vec4s (zero past L + 2K).
  const slots = [...Array.from({ length: L }, (_, j) => `c${j}`), ...Array.from({ length: K }, (_, k) => `-cm${k}`), ...Array.from({ length: K }, (_, k) => `-cu${k}`)];
  while (slots.length % 4) slots.push('0.0');
  const coefStores = Array.from({ length: slots.length / 4 }, (_, q) => `rows[oc + ${q}u] = vec4<f32>(${slots.slice(4 * q, 4 * q + 4).join(', ')});`).join('\n  ');
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// One thread per window b: the forward and backward of the AttRec step between Zu and the table gradients (see
// the file header). L = ${L}, T = ${T}, K = ${K} candidates, rows of DW = ${DW} vec4s.
const L = ${L}u;
const K = ${K}u;
const DW = ${DW}u;
const S = ${1 + 2 * L + K}u; // ids per window: user, L inputs, their L slots, K candidates
struct Params { B: u32, N: u32, alpha: f32, margin: f32, scale: f32, dpre: u32, m: u32, dm: u32, du: u32, cf: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> QT: array<vec4<f32>>;         // [N, DW] Q
@group(0) @binding(2) var<storage, read> XP: array<vec4<f32>>;         // [N + U, DW] X, then P
@group(0) @binding(3) var<storage, read> Zu: array<vec4<f32>>;         // [L + inputs, DW] QU @ Wp
@group(0) @binding(4) var<storage, read> idx: array<i32>;              // ids [B, S] first
@group(0) @binding(5) var<storage, read_write> rows: array<vec4<f32>>; // gradient rows (see rowLayout)
@group(0) @binding(6) var<storage, read_write> hingeAcc: array<f32>;   // [B] running hinge sums
@group(0) @binding(7) var<uniform> ZT: array<vec4<f32>, ${L * DW}>;    // Zu's first L rows (the time signal's): the same for every window
${main1d(WG)} {
  let b = ${foldedIndex(WG)};
  if (b >= p.B) { return; }
  let ib = b * S;
  let ur = (p.N + u32(idx[ib])) * DW; // P row in XP
  ${forI('let s{i} = u32(idx[ib + 1u + {i}u]);')}
  ${forI('let zr{i} = (L + u32(idx[ib + 1u + L + {i}u])) * DW; // row of input i in Zu')}
  ${forK('let x{k} = u32(idx[ib + 1u + 2u * L + {k}u]) * DW; // candidate row (X in XP, Q in QT)')}
  let inv = 1.0 / f32(max(${sumOf(L, (i) => `select(0u, 1u, s${i} != 0u)`, '0u')}, 1u));
  ${forI('let w{i} = select(0.0, inv, s{i} != 0u);')}
  ${forI('let e{i} = s{i} * DW;')}
  ${forI('let t{i} = {i}u * DW;')}
  // pass 1: Gram matrix of z_i = relu(Zu[L + slot_i] + Zu[i])
  ${pairs(L, 'var g{i}_{j} = 0.0;').replace(/\n/g, '\n  ')}
  for (var d = 0u; d < DW; d = d + 1u) {
    ${forI('let z{i} = max(Zu[zr{i} + d] + ZT[t{i} + d], vec4<f32>(0.0));').replace(/\n  /g, '\n    ')}
    ${pairs(L, 'g{i}_{j} = g{i}_{j} + dot(z{i}, z{j});').replace(/\n/g, '\n    ')}
  }
  // logits (pad keys -1e4), softmax rows a_ij, column weights c_j = sum_{i != j} w_i a_ij
  ${softmaxRows}
  ${Array.from({ length: L }, (_, j) => `let c${j} = ${cOf(j)};`).join('\n  ')}
  // pass 2: m = sum_j c_j E_j (its row for the Q updates), the K distances
  ${forK('var sl{k} = 0.0;\n  var ss{k} = 0.0;')}
  let om = (p.m + b) * DW;
  for (var d = 0u; d < DW; d = d + 1u) {
    ${forJ('let E{j} = QT[e{j} + d];').replace(/\n  /g, '\n    ')}
    let m = ${mOf};
    rows[om + d] = m;
    let u = XP[ur + d];
    ${forK('let dl{k} = u - XP[x{k} + d];\n    let ds{k} = m - QT[x{k} + d];\n    sl{k} = sl{k} + dot(dl{k}, dl{k});\n    ss{k} = ss{k} + dot(ds{k}, ds{k});').replace(/\n  (?! )/g, '\n    ')}
  }
  ${forK('let y{k} = p.alpha * sl{k} + (1.0 - p.alpha) * ss{k};')}
  // hinge k <-> T + k, its gradient gy
  ${Array.from({ length: T }, (_, k) => `let v${k} = y${k} - y${T + k} + p.margin;\n  let on${k} = v${k} > 0.0;`).join('\n  ')}
  hingeAcc[b] = hingeAcc[b] + ${sumOf(T, (k) => `select(0.0, v${k}, on${k})`)};
  ${Array.from({ length: K }, (_, k) => `let gy${k} = select(0.0, ${k < T ? '1.0' : '-1.0'}, on${k < T ? k : k - T});`).join('\n  ')}
  ${forK('let cu{k} = 2.0 * p.alpha * gy{k};\n  let cm{k} = 2.0 * (1.0 - p.alpha) * gy{k};')}
  // the coefficients of the rank-one table gradients: dE_j = c_j dm, dQ_k = -cm_k (m - Q_k), dX_k = -cu_k (u - X_k)
  let oc = p.cf + b * ${Math.ceil((L + 2 * K) / 4)}u;
  ${coefStores}
  // pass 3: du, dm (their rows); dc_j = dm . E_j
  let ou = (p.du + b) * DW;
  let odm = (p.dm + b) * DW;
  ${forJ('var dc{j} = 0.0;')}
  for (var d = 0u; d < DW; d = d + 1u) {
    ${forJ('let E{j} = QT[e{j} + d];').replace(/\n  /g, '\n    ')}
    let m = ${mOf};
    let u = XP[ur + d];
    var du = vec4<f32>(0.0);
    var dm = vec4<f32>(0.0);
    ${forK('du = du + cu{k} * (u - XP[x{k} + d]);\n    dm = dm + cm{k} * (m - QT[x{k} + d]);').replace(/\n  (?! )/g, '\n    ')}
    rows[ou + d] = du;
    rows[odm + d] = dm;
    ${forJ('dc{j} = dc{j} + dot(dm, E{j});').replace(/\n  (?! )/g, '\n    ')}
  }
  // attention backward: dS~_ij = [i != j] w_i dc_j; q_ij = a_ij (dS~_ij - r_i), r_i = sum_j a_ij dS~_ij;
  // dz_i = scale sum_j (q_ij + q_ji) z_j
  ${Array.from({ length: L }, (_, i) => `let r${i} = w${i} * (${sumOf(L - 1, (t) => { const j = t < i ? t : t + 1; return `a${i}_${j} * dc${j}`; })});`).join('\n  ')}
  ${pairs(L, 'let q{i}_{j} = a{i}_{j} * (select(w{i} * dc{j}, 0.0, {i}u == {j}u) - r{i});', true).replace(/\n/g, '\n  ')}
  ${pairs(L, 'let h{i}_{j} = p.scale * (q{i}_{j} + q{j}_{i});', true).replace(/\n/g, '\n  ')}
  // pass 4: dpre_i = dz_i where z_i > 0
  ${forI('let op{i} = (p.dpre + b * L + {i}u) * DW;')}
  for (var d = 0u; d < DW; d = d + 1u) {
    ${forI('let z{i} = max(Zu[zr{i} + d] + ZT[t{i} + d], vec4<f32>(0.0));').replace(/\n  /g, '\n    ')}
    ${Array.from({ length: L }, (_, i) => `rows[op${i} + d] = select(vec4<f32>(0.0), ${sumOf(L, (j) => `h${i}_${j} * z${j}`)}, z${i} > vec4<f32>(0.0));`).join('\n    ')}
  }
}`,
    grid: ({ B }) => [ceilDiv(B!, WG)],
    loopTrips: 4 * loopCost(DW),
  };
});

/** QU[L + j] = QT[uniq[j]] (one vec4 per thread). */
const gatherKernel = defineKernel({
  name: 'attrec_step_gather',
  foldable: true,
  wgsl: /* wgsl */ `
// QU[L + j] = QT[uniq[j]]: the batch's distinct input items, after the L time-signal rows (one vec4 per thread).
struct Params { total: u32, DW: u32, L: u32, uniq: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> QT: array<vec4<f32>>;       // [N, DW]
@group(0) @binding(2) var<storage, read> idx: array<i32>;            // the list at p.uniq
@group(0) @binding(3) var<storage, read_write> QU: array<vec4<f32>>; // [L + inputs, DW]
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.total) { return; }
  let j = t / p.DW;
  let d = t - j * p.DW;
  QU[(p.L + j) * p.DW + d] = QT[u32(idx[p.uniq + j]) * p.DW + d];
}`,
  grid: ({ total }) => [ceilDiv(total!, WG)],
});

// vec4s per thread in segsum and update: 1, 2, 4, 6, 8 and 10 were measured on llvmpipe, 4 fastest (one CSR walk
// feeds them; more spill). Figures in docs/BENCHMARKS.md.
const VPT = 4;
/**
 * A thread's vec4s of a row of DW: d0 + k for k < VPT, the index clamped into the row (the last chunk of a row
 * re-reads a valid vec4 and drops it: no branch in the CSR loop).
 */
const IN_ROW = 'min(d0 + {k}u, DW - 1u)';

/** dZu[r] = sum of the rows of CSR A's segment r, VPT vec4s of the row per thread (DW baked). */
const segsumKernel = kernelFamily('attrec_step_segsum', ({ DW }: { DW: number }) => ({
  foldable: true,
  wgsl: /* wgsl */ `
const DW = ${DW}u;
const C = ${Math.ceil(DW / VPT)}u; // threads per row
struct Params { total: u32, csr: u32, perm: u32, maxSeg: u32 } // total: rows * C; maxSeg: the longest segment (loop budget)
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rows: array<vec4<f32>>;      // window gradient rows
@group(0) @binding(2) var<storage, read> idx: array<i32>;            // offsets at p.csr, rows at p.perm
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // [L + inputs, DW]
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.total) { return; }
  let r = t / C;
  let d0 = (t - r * C) * ${VPT}u;
  let a = u32(idx[p.csr + r]);
  let e = u32(idx[p.csr + r + 1u]);
  ${unroll(VPT, 'var g{k} = vec4<f32>(0.0);', 'k', ' ')}
  for (var k = a; k < e; k = k + 1u) {
    let src = u32(idx[p.perm + k]) * DW;
    ${unroll(VPT, `g{k} = g{k} + rows[src + ${IN_ROW}];`, 'k', '\n    ')}
  }
  ${unroll(VPT, 'if (d0 + {k}u < DW) { out[r * DW + d0 + {k}u] = g{k}; }', 'k', '\n  ')}
}`,
  grid: ({ total }) => [ceilDiv(total!, WG)],
  loopTrips: ({ maxSeg }) => loopCost(maxSeg!),
}));

/**
 * One table's gradient (CSR rows + matmul rows + L2) and its Adagrad update, in place: VPT vec4s of a row's
 * columns per thread (one CSR walk feeds all of them), the parameter and its accumulator read and written as vecW
 * (W = 4, 2, 1: the widest dividing D; rows of a [R, D] table start at multiples of D floats).
 */
const updateKernel = kernelFamily('attrec_step_update', ({ w, DW, L, K }: { w: VecWidth; DW: number; L: number; K: number }) => {
  const T = vecType(w);
  const n = 4 / w; // parameter elements of width w per vec4
  const part = (g: string, k: number): string => (w === 4 ? g : w === 2 ? `${g}.${k === 0 ? 'xy' : 'zw'}` : `${g}[${k}]`);
  // One vec4 {k} of the thread: its matmul row, then the n parameter elements it covers, then (HAS_PACK) the new
  // values as the vec4 of the compute-width copy (zero past D) and, for W, its column of the transpose.
  const apply = unroll(VPT, `if (d0 + {k}u < DW) {
    let d = d0 + {k}u;
    var g = g{k};
    if (HAS_MM == 1u) { g = g + mmRows[r * DW + d]; }
    if (HAS_MM == 2u && sl >= 0) { g = g + mmRows[(p.mmBase + u32(sl)) * DW + d]; }
    let c0 = d * 4u;
    let i0 = (r * p.D + c0) / ${w}u;
    var nv = vec4<f32>(0.0);
${Array.from({ length: n }, (_, k) => `    if (c0 + ${k * w}u < p.D) { let u = update(i0 + ${k}u, ${part('g', k)}); l2 = l2 + u.l2; ${part('nv', k)} = u.y; }`).join('\n')}
    if (HAS_PACK != 0u) { pk[(p.pkRow + r) * DW + d] = nv; }
    if (HAS_PACK == 2u) { pkT[c0 * 4u * DW + r] = nv.x; pkT[(c0 + 1u) * 4u * DW + r] = nv.y; pkT[(c0 + 2u) * 4u * DW + r] = nv.z; pkT[(c0 + 3u) * 4u * DW + r] = nv.w; }
  }`, 'k', '\n  ');
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// g = CSR B's segment (base + r; HAS_CSR 1: window rows summed, 2 / 3: rank-one terms, below) + the matmul row
// (HAS_MM 1: mmRows[r]; 2: mmRows[mmBase + slot[r]], none when slot[r] < 0) + reg p;  g' = g + wd p;  acc += g'^2;  p -= lr g' / (sqrt(acc) + eps);
// lossAcc[lo + t] += reg/2 |p|^2 (pre-update). Thread t: row r, vec4s d0 .. d0 + ${VPT - 1} of its DW = ${DW}, each as ${n} x ${T}.
// HAS_PACK 1: the new row also into pk[pkRow + r] at the compute width (QT, XP: the next step's pack), 2: and its
// transpose into pkT (W: Wp and WpT).
// HAS_CSR 2 (Q) / 3 (X): an entry is a code b * SL + s of window b's coefficient slot s (cf at p.cf): with s < L,
// cf * dm_b (rows at p.dm); else cf * (v - the table's own row, from pk): v = m_b (rows at p.m, Q) or u_b (the
// window's user row in pk, X), the same values the window would have written as rows.
override HAS_CSR: u32 = 1u;
override HAS_MM: u32 = 0u;
override HAS_PACK: u32 = 0u;
const DW = ${DW}u;
const C = ${Math.ceil(DW / VPT)}u; // threads per row
const L = ${L}u;
const SL = ${L + 2 * K}u; // coefficient slots per window
const CQ = ${Math.ceil((L + 2 * K) / 4)}u; // their vec4s
const S = ${1 + 2 * L + K}u; // ids per window in idx
struct Params { total: u32, D: u32, csr: u32, perm: u32, base: u32, slot: u32, mmBase: u32, accOff: u32, lo: u32, pkRow: u32, maxSeg: u32, m: u32, dm: u32, cf: u32, uRow: u32, reg: f32, lr: f32, eps: f32, wd: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rows: array<vec4<f32>>;       // window gradient rows
@group(0) @binding(2) var<storage, read> idx: array<i32>;              // CSR B, the slot map
@group(0) @binding(3) var<storage, read> mmRows: array<vec4<f32>>;     // matmul rows (HAS_MM) else unused
@group(0) @binding(4) var<storage, read_write> param: array<${T}>;     // [R, D]
@group(0) @binding(5) var<storage, read_write> acc: array<${T}>;       // the optimizer's accumulator arena
@group(0) @binding(6) var<storage, read_write> lossAcc: array<f32>;    // running L2 partial sums
@group(0) @binding(7) var<storage, read_write> pk: array<vec4<f32>>;   // HAS_PACK: the compute-width copy [rows, DW]
@group(0) @binding(8) var<storage, read_write> pkT: array<f32>;        // HAS_PACK 2: its transpose [4 DW, 4 DW]
struct Upd { y: ${T}, l2: f32 } // the new value, |x|^2 of the old one
fn update(i: u32, gk: ${T}) -> Upd {
  let x = param[i];
  let g = gk + p.reg * x + p.wd * x;
  let s = acc[p.accOff / ${w}u + i] + g * g;
  acc[p.accOff / ${w}u + i] = s;
  let y = x - p.lr * g / (sqrt(s) + p.eps);
  param[i] = y;
  return Upd(y, ${w === 1 ? 'x * x' : 'dot(x, x)'});
}
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.total) { return; }
  let r = t / C;
  let d0 = (t - r * C) * ${VPT}u;
  ${unroll(VPT, 'var g{k} = vec4<f32>(0.0);', 'k', ' ')}
  if (HAS_CSR == 1u) {
    let a = u32(idx[p.csr + p.base + r]);
    let e = u32(idx[p.csr + p.base + r + 1u]);
    for (var k = a; k < e; k = k + 1u) {
      let src = u32(idx[p.perm + k]) * DW;
      ${unroll(VPT, `g{k} = g{k} + rows[src + ${IN_ROW}];`, 'k', '\n      ')}
    }
  }
  if (HAS_CSR >= 2u) {
    let own = (p.pkRow + r) * DW;
    ${unroll(VPT, `let own{k} = pk[own + ${IN_ROW}];`, 'k', '\n    ')}
    let a = u32(idx[p.csr + p.base + r]);
    let e = u32(idx[p.csr + p.base + r + 1u]);
    for (var k = a; k < e; k = k + 1u) {
      let code = u32(idx[p.perm + k]);
      let b = code / SL;
      let s = code - b * SL;
      let cf = rows[p.cf + b * CQ + s / 4u][s % 4u];
      if (HAS_CSR == 2u) {
        let rank = s >= L; // -cm (m - Q) else c dm
        let src = (select(p.dm, p.m, rank) + b) * DW;
        ${unroll(VPT, `let v{k} = rows[src + ${IN_ROW}];\n        g{k} = g{k} + cf * select(v{k}, v{k} - own{k}, rank);`, 'k', '\n        ')}
      } else {
        let src = (p.uRow + u32(idx[b * S])) * DW;
        ${unroll(VPT, `g{k} = g{k} + cf * (pk[src + ${IN_ROW}] - own{k});`, 'k', '\n        ')}
      }
    }
  }
  var sl = -1;
  if (HAS_MM == 2u) { sl = idx[p.slot + r]; }
  var l2 = 0.0;
  ${apply}
  lossAcc[p.lo + t] = lossAcc[p.lo + t] + 0.5 * p.reg * l2;
}`,
    grid: ({ total }) => [ceilDiv(total!, WG)],
    loopTrips: ({ maxSeg }) => loopCost(maxSeg!),
  };
});

// ------------------------------------------------------------------ the workspace and the step
/**
 * Buffers of the fused step for one set of sizes, kept across steps: the compute-width copies of the parameters,
 * the window gradient rows, and the two loss accumulators. `timeSignal` is [L, D] (float64 or f32 values).
 */
export class AttRecStepWorkspace {
  readonly dims: AttRecStepDims;
  readonly DW: number;
  private readonly QT: Tensor; // [N, Dp]
  private readonly QU: Tensor; // [L + min(N, B L), Dp] the time signal, then the batch's distinct input items
  private readonly XP: Tensor; // [N + U, Dp]
  private readonly Wp: Tensor; // [Dp, Dp]
  private readonly WpT: Tensor; // [Dp, Dp] Wp transposed: dQmm = dZu @ WpT reads an untransposed weight (uniform arrays on llvmpipe)
  private readonly rows: Tensor; // [rowLayout.rows, Dp]
  private readonly hingeAcc: Tensor; // [B]
  private readonly lossAcc: Tensor; // [(2N + 2U + D) * C], C = ceil(DW / VPT): one slot per update thread
  private readonly none: [Tensor, Tensor, Tensor]; // [4] each: bound where an optional input / output is off (no aliasing)
  /** The parameters QT, XP, Wp, WpT were last written from (by the updates) and their write versions then. */
  private packedFrom: { src: Tensor[]; versions: number[] } | null = null;
  private readonly tables: ReadonlyArray<{ key: 'Q' | 'X' | 'P' | 'V' | 'W'; R: number; base: number; lo: number; csr: boolean }>;

  constructor(dims: AttRecStepDims, timeSignal: ArrayLike<number>) {
    const { N, U, D, L, B } = dims;
    for (const [k, v] of Object.entries(dims)) if (!Number.isInteger(v) || v < 1) throw new Error(`AttRecStepWorkspace: ${k} = ${v} must be a positive integer`);
    if (timeSignal.length !== L * D) throw new Error(`AttRecStepWorkspace: the time signal has ${timeSignal.length} values, not L*D = ${L * D}`);
    const why = attrecStepUnsupported(dims);
    if (why) throw new Error(`AttRecStepWorkspace: ${why}`);
    this.dims = dims;
    const DW = (this.DW = Math.ceil(D / 4));
    const Dp = 4 * DW;
    const lay = rowLayout(dims);
    const ts = new Float32Array(L * Dp);
    for (let i = 0; i < L; i++) for (let c = 0; c < D; c++) ts[i * Dp + c] = timeSignal[i * D + c]!;
    const qu = new Float32Array((L + Math.min(N, B * L)) * Dp);
    const C = Math.ceil(DW / VPT); // update threads per table row
    qu.set(ts);
    ({ QT: this.QT, QU: this.QU, XP: this.XP, Wp: this.Wp, WpT: this.WpT, rows: this.rows, hingeAcc: this.hingeAcc, lossAcc: this.lossAcc, none: this.none } = untracked(() => ({
      QT: Tensor.empty([N, Dp]),
      QU: Tensor.from(qu, [L + Math.min(N, B * L), Dp]), // time-signal rows written once here
      XP: Tensor.empty([N + U, Dp]),
      Wp: Tensor.from(new Float32Array(Dp * Dp), [Dp, Dp]), // [Dp, Dp] zero rows/columns past D stay zero
      WpT: Tensor.from(new Float32Array(Dp * Dp), [Dp, Dp]),
      rows: Tensor.empty([lay.rows, Dp]),
      hingeAcc: Tensor.from(new Float32Array(B), [B]),
      lossAcc: Tensor.from(new Float32Array((2 * N + 2 * U + D) * C), [(2 * N + 2 * U + D) * C]),
      none: [0, 1, 2].map(() => Tensor.from(new Float32Array(4), [4])) as [Tensor, Tensor, Tensor],
    })));
    // Update order Q, X, P (CSR B's destination space [Q N | X N | P U]), then V and W (no CSR rows).
    this.tables = [
      { key: 'Q', R: N, base: 0, lo: 0, csr: true },
      { key: 'X', R: N, base: N, lo: N * C, csr: true },
      { key: 'P', R: U, base: 2 * N, lo: 2 * N * C, csr: true },
      { key: 'V', R: U, base: 0, lo: (2 * N + U) * C, csr: false },
      { key: 'W', R: D, base: 0, lo: (2 * N + 2 * U) * C, csr: false },
    ];
  }

  /** Zero the loss accumulators (start of an epoch). */
  resetLoss(): void {
    this.hingeAcc.write(new Float32Array(this.hingeAcc.size));
    this.lossAcc.write(new Float32Array(this.lossAcc.size));
  }

  /** The loss summed over the steps since resetLoss(): reduced on the GPU, one float read back. */
  async lossSum(): Promise<number> {
    const total = noGrad(() => scope(() => add(sum(this.hingeAcc), sum(this.lossAcc)))); // []
    try {
      return await total.item();
    } finally {
      total.dispose();
    }
  }

  /** Record one training step (no readback). */
  step(params: AttRecStepParams, batch: AttRecStepBatch, h: AttRecStepHyper): void {
    const d = this.dims;
    if (batch.dims !== d && JSON.stringify(batch.dims) !== JSON.stringify(d)) throw new Error(`attrecStep: the batch was built for ${JSON.stringify(batch.dims)}, the workspace for ${JSON.stringify(d)}`);
    const { N, U, D, L, T, B } = d;
    const DW = this.DW;
    for (const [k, R] of [['P', U], ['V', U], ['Q', N], ['X', N], ['W', D]] as const) {
      const t = params[k];
      if (t.dtype !== 'f32' || t.shape.length !== 2 || t.shape[0] !== R || t.shape[1] !== D) throw new Error(`attrecStep: ${k} is ${t.describe()}, expected f32[${R}, ${D}]`);
      const a = params.acc[k];
      if (!a || a.arena.dtype !== 'f32' || !Number.isInteger(a.offset) || a.offset < 0 || a.offset % 4 !== 0 || a.arena.byteLength < 4 * (a.offset + R * D)) {
        throw new Error(`attrecStep: the accumulator of ${k} must be f32 at a 4-aligned offset with ${R * D} floats from it (offset ${a?.offset}, ${a ? a.arena.byteLength / 4 : 0} floats)`);
      }
    }
    if (batch.meta.disposed) throw new Error('attrecStep: the batch was disposed');
    const lay = rowLayout(d);
    // The compute-width copies are current when the updates of the previous step wrote them and nothing has
    // written the parameters since (their write versions, engine/versions.ts); else pack them first.
    const src = [params.P, params.Q, params.X, params.W];
    const last = this.packedFrom;
    const current = last !== null && src.every((t, i) => t === last.src[i] && t.version === last.versions[i]);
    this.packedFrom = null; // until this step's updates are recorded
    noGrad(() => {
      if (!current) packKernel({ w: vecWidth(D) }).run({ Q: params.Q, X: params.X, P: params.P, W: params.W, QT: this.QT, XP: this.XP, Wp: this.Wp, WpT: this.WpT }, { total: (2 * N + U + D) * DW, N, U, D, DW });
      // The projection of the time signal and of the batch's distinct input items only.
      const M = L + batch.inputs;
      gatherKernel.run({ QT: this.QT, idx: batch.meta, QU: this.QU }, { total: batch.inputs * DW, DW, L, uniq: batch.at.uniq });
      const QU = this.QU.prefixView([M, 4 * DW]); // [L + inputs, Dp]
      const Zu = mm(QU, this.Wp); // [L + inputs, Dp]
      const ZT = Zu.prefixView([L, 4 * DW]); // its time-signal rows, read as a uniform array
      windowKernel({ L, T, DW }).run(
        { QT: this.QT, XP: this.XP, Zu, idx: batch.meta, rows: this.rows, hingeAcc: this.hingeAcc, ZT },
        { B, N, alpha: h.alpha, margin: h.margin, scale: 1 / Math.sqrt(D), dpre: lay.dpre, m: lay.m, dm: lay.dm, du: lay.du, cf: lay.cf },
      );
      ZT.dispose();
      Zu.dispose();
      const dZu = Tensor.empty([M, 4 * DW]); // [L + inputs, Dp]
      const C = Math.ceil(DW / VPT);
      segsumKernel({ DW }).run({ rows: this.rows, idx: batch.meta, out: dZu }, { total: M * C, csr: batch.at.csrA, perm: batch.at.permA, maxSeg: maxSegment(d) });
      const dWp = mm(QU, dZu, { transA: true }); // [Dp, Dp]
      const dQmm = mm(dZu, this.WpT); // [L + inputs, Dp] = dZu @ Wpᵀ
      dZu.dispose();
      QU.dispose();
      for (const tb of this.tables) {
        const mmRows = tb.key === 'Q' ? dQmm : tb.key === 'W' ? dWp : this.none[0]; // bound but unread (HAS_MM 0)
        const reg = tb.key === 'W' ? h.regW : h.regEmb;
        // The new rows also into the compute-width copies: Q -> QT, X -> XP, P -> XP after the N item rows, W -> Wp and WpT.
        const pk = tb.key === 'Q' ? this.QT : tb.key === 'X' || tb.key === 'P' ? this.XP : tb.key === 'W' ? this.Wp : this.none[1];
        updateKernel({ w: vecWidth(D), DW, L, K: 2 * T }).run(
          { rows: this.rows, idx: batch.meta, mmRows, param: params[tb.key], acc: params.acc[tb.key].arena, lossAcc: this.lossAcc, pk, pkT: tb.key === 'W' ? this.WpT : this.none[2] },
          { total: tb.R * C, D, csr: batch.at.csrB, perm: batch.at.permB, base: tb.base, slot: batch.at.slot, mmBase: L, accOff: params.acc[tb.key].offset, lo: tb.lo, pkRow: tb.key === 'P' ? N : 0, maxSeg: tb.csr ? maxSegment(d) : 0, m: lay.m, dm: lay.dm, cf: lay.cf, uRow: N, reg, lr: h.lr, eps: h.eps, wd: h.weightDecay },
          { overrides: { HAS_CSR: tb.key === 'Q' ? 2 : tb.key === 'X' ? 3 : tb.key === 'P' ? 1 : 0, HAS_MM: tb.key === 'Q' ? 2 : tb.key === 'W' ? 1 : 0, HAS_PACK: tb.key === 'V' ? 0 : tb.key === 'W' ? 2 : 1 } },
        );
      }
      dWp.dispose();
      dQmm.dispose();
    });
    this.packedFrom = { src, versions: src.map((t) => t.version) };
  }

  /** Forget the compute-width copies: the next step packs the parameters again (automatic after any engine write to them). */
  invalidate(): void {
    this.packedFrom = null;
  }

  dispose(): void {
    for (const t of [this.QT, this.QU, this.XP, this.Wp, this.WpT, this.rows, this.hingeAcc, this.lossAcc, ...this.none]) t.dispose();
  }
}

// ------------------------------------------------------------------ float64 reference
export interface RefAttRecStepInput {
  dims: AttRecStepDims;
  P: Float64Array; V: Float64Array; Q: Float64Array; X: Float64Array; W: Float64Array;
  acc: Record<'P' | 'V' | 'Q' | 'X' | 'W', Float64Array>;
  timeSignal: ArrayLike<number>; // [L, D]
  users: ArrayLike<number>; seq: ArrayLike<number>; targets: ArrayLike<number>; negatives: ArrayLike<number>;
}

/**
 * Float64 reference of one step, in place on the parameters and accumulators of `x`: returns the loss (hinge +
 * L2 at the pre-update parameters) and the gradients. Written from the formulas in the header, independently of
 * the kernels (direct loops, no table projection: (E + TS) @ W per position).
 */
export function refAttRecStep(x: RefAttRecStepInput, h: AttRecStepHyper): { loss: number; grads: Record<'P' | 'V' | 'Q' | 'X' | 'W', Float64Array> } {
  const { N, U, D, L, T, B } = x.dims;
  const K = 2 * T;
  const gP = new Float64Array(U * D), gV = new Float64Array(U * D), gQ = new Float64Array(N * D), gX = new Float64Array(N * D), gW = new Float64Array(D * D);
  const scale = 1 / Math.sqrt(D);
  let hinge = 0;
  for (let b = 0; b < B; b++) {
    const s = Array.from({ length: L }, (_, i) => x.seq[b * L + i]!);
    const u = x.users[b]!;
    const cand = Array.from({ length: K }, (_, k) => (k < T ? x.targets[b * T + k]! : x.negatives[b * T + k - T]!));
    const ein = s.map((id, i) => Float64Array.from({ length: D }, (_, c) => x.Q[id * D + c]! + Number(x.timeSignal[i * D + c])));
    const pre = ein.map((e) => Float64Array.from({ length: D }, (_, o) => { let a = 0; for (let c = 0; c < D; c++) a += e[c]! * x.W[c * D + o]!; return a; }));
    const z = pre.map((r) => r.map((v) => Math.max(v, 0)));
    const n = s.filter((id) => id !== 0).length;
    const w = s.map((id) => (id !== 0 ? 1 / Math.max(n, 1) : 0));
    const sm = z.map((zi) => z.map((zj, j) => { let a = 0; for (let c = 0; c < D; c++) a += zi[c]! * zj[c]!; return a * scale + (s[j] === 0 ? -1e4 : 0); }));
    for (const row of sm) {
      const mx = Math.max(...row);
      let den = 0;
      for (let j = 0; j < L; j++) den += (row[j] = Math.exp(row[j]! - mx));
      for (let j = 0; j < L; j++) row[j]! /= den;
    }
    const cj = s.map((_, j) => { let a = 0; for (let i = 0; i < L; i++) if (i !== j) a += w[i]! * sm[i]![j]!; return a; });
    const m = new Float64Array(D);
    for (let j = 0; j < L; j++) for (let c = 0; c < D; c++) m[c]! += cj[j]! * x.Q[s[j]! * D + c]!;
    const y = cand.map((id) => {
      let sl = 0, ss = 0;
      for (let c = 0; c < D; c++) {
        sl += (x.P[u * D + c]! - x.X[id * D + c]!) ** 2;
        ss += (m[c]! - x.Q[id * D + c]!) ** 2;
      }
      return h.alpha * sl + (1 - h.alpha) * ss;
    });
    const gy = new Array<number>(K).fill(0);
    for (let k = 0; k < T; k++) {
      const v = y[k]! - y[T + k]! + h.margin;
      if (v > 0) (hinge += v), (gy[k]! += 1), (gy[T + k]! -= 1);
    }
    const dm = new Float64Array(D);
    for (let k = 0; k < K; k++) {
      const id = cand[k]!;
      for (let c = 0; c < D; c++) {
        const dl = x.P[u * D + c]! - x.X[id * D + c]!;
        const ds = m[c]! - x.Q[id * D + c]!;
        gP[u * D + c]! += 2 * h.alpha * gy[k]! * dl;
        gX[id * D + c]! -= 2 * h.alpha * gy[k]! * dl;
        dm[c]! += 2 * (1 - h.alpha) * gy[k]! * ds;
        gQ[id * D + c]! -= 2 * (1 - h.alpha) * gy[k]! * ds;
      }
    }
    const dc = s.map((id, j) => { let a = 0; for (let c = 0; c < D; c++) { a += dm[c]! * x.Q[id * D + c]!; gQ[id * D + c]! += cj[j]! * dm[c]!; } return a; });
    const dl = sm.map((row, i) => {
      const dS = row.map((_, j) => (i !== j ? w[i]! * dc[j]! : 0));
      let r = 0;
      for (let j = 0; j < L; j++) r += row[j]! * dS[j]!;
      return row.map((v, j) => v * (dS[j]! - r));
    });
    for (let i = 0; i < L; i++) {
      const dpre = new Float64Array(D);
      for (let c = 0; c < D; c++) {
        let a = 0;
        for (let j = 0; j < L; j++) a += (dl[i]![j]! + dl[j]![i]!) * z[j]![c]!;
        dpre[c] = pre[i]![c]! > 0 ? a * scale : 0;
      }
      // pre_i = ein_i @ W: dW += ein_i^T dpre, dQ[s_i] += dpre @ W^T (the time signal is fixed)
      for (let c = 0; c < D; c++) {
        let a = 0;
        for (let o = 0; o < D; o++) {
          gW[c * D + o]! += ein[i]![c]! * dpre[o]!;
          a += dpre[o]! * x.W[c * D + o]!;
        }
        gQ[s[i]! * D + c]! += a;
      }
    }
  }
  let l2 = 0;
  const tables = [['P', gP, h.regEmb], ['V', gV, h.regEmb], ['Q', gQ, h.regEmb], ['X', gX, h.regEmb], ['W', gW, h.regW]] as const;
  for (const [k, g, reg] of tables) {
    const p = x[k];
    for (let i = 0; i < p.length; i++) (l2 += (reg / 2) * p[i]! ** 2), (g[i]! += reg * p[i]!);
  }
  for (const [k, g] of tables) {
    const p = x[k];
    const acc = x.acc[k];
    for (let i = 0; i < p.length; i++) {
      const gi = g[i]! + h.weightDecay * p[i]!;
      acc[i]! += gi * gi;
      p[i]! -= (h.lr * gi) / (Math.sqrt(acc[i]!) + h.eps);
    }
  }
  return { loss: hinge + l2, grads: { P: gP, V: gV, Q: gQ, X: gX, W: gW } };
}
