// models/attrec.ts — AttRec ("Next Item Recommendation with Self-Attention", Zhang, Tay, Yao, Sun 2018) as the
// authors' code runs it by default (cheungdaven/DeepRec models/seq_rec/AttRec.py at 67a1198; the reference is
// /work/shared/docs/ATTREC_SPEC.md §2 and §13), with the paper's variants as named options.
//
// Parameters (state-dict name = the authors' TF variable; the paper's letter in brackets):
//   P                      [numUsers, D]  user long-term embedding                  (paper U)
//   V                      [numUsers, D]  the authors' second user table: ONLY L2-regularised, never in a score
//                                         (dead in their code; kept so the loss value and the update match)
//   Q                      [numItems, D]  item embedding of the input sequence AND of the short-term target
//                                         (paper X)
//   X                      [numItems, D]  item long-term (metric) embedding           (paper V)
//   linear_project.kernel  [D, D]         the shared ReLU projection of query and key, no bias, TF [in, out]
//                                         layout: Z = relu(Ein @ kernel)              (paper W_Q = W_K)
//   linear_project_key.kernel [D, D]      only with `sharedQK: false` (paper: separate W_Q, W_K); then
//                                         linear_project.kernel is W_Q
// The authors' A, W, b tables are never used in a score or a loss and are not created.
// Item ids 0..numItems-1, 0 never a real item (padding of short sequences); user ids = rows 0..numUsers-1.
//
// Forward (default = the authors' code; B batch, L = 5 inputs, D = 150):
//   E   = Q[seq]                                   [B, L, D]  oldest item first
//   Z   = relu((E + TS) @ W)                       [B, L, D]  TS = time signal [L, D] (tensor2tensor: sin | cos
//                                                             halves, timescales 1..1e4 geometric, zero column
//                                                             when D is odd)
//   S   = softmax(Z Z^T / sqrt(D)) * (1 - I)       [B, L, L]  Q' = K' = Z; diagonal zeroed AFTER the softmax,
//                                                             rows not renormalised
//   m   = mean_i (S @ E)_i                         [B, D]     value = raw embeddings (no time signal)
//   y(u, j) = alpha ||P[u] - X[j]||^2 + (1 - alpha) ||m - Q[j]||^2      alpha (omega) = 0.2; smaller = better
//   loss = sum_b sum_k max(0, y(u_b, t_bk) - y(u_b, n_bk) + margin)      margin 0.5, k <-> k pairing (T = 3)
//        + regW/2 sum(W^2) + regEmb/2 (sum P^2 + sum V^2 + sum X^2 + sum Q^2)   whole tables, every step
//                                                                        (regW 0.01, regEmb 0.001)
// Kernels: the projection is `matmul` (see below); the scores of the 3 targets and 3 negatives are ONE fused
// `euclidScore` call over [B, 2T] ids; L2 is `sumSquares` (kernels/loss.ts) on each table; the attention is
// composed by default (`attention`):
//   'composed'  the mean over query rows commutes with the value product: m = sum_j c_j E_j, c_j = mean_i S_ij, so
//               only [B, L, L] weights are formed: G = Z Z^T (kernels/small_bmm.ts, one thread per (b, i, j)),
//               softmax, * (1 - I), column means, m = c . E (small_bmm again).
//   'fused'     kernels/attention_masked.ts in its AttRec mode (zeroDiagonal, q and k the same tensor, H = 1), then
//               the mean over rows.
// Why composed is the default: the fused kernel's D > 32 path runs one row per thread with a loop over d and
// Dp-float private accumulators, slower on llvmpipe than small_bmm's three tiny products; the tiled `matmul` is no
// substitute either (its batched [5 x 152] x [152 x 5] products run one 8x8 tile per batch entry). The AttRec
// step's per-kernel profile: `seqrec train --model attrec --profile`; step timings: `npm run bench -- e2e`.
// Compute width (`padDim`, default on): D = 150 is computed at Dp = 152 with zero columns (exact: the extra
// columns of E, Z, m are 0 and receive no gradient), so every kernel reads vec4 rows (the projection's matmuls run
// the a4b4c4 kernels instead of the scalar a1b1c1 ones, about half the time). Parameters keep their [., D] shapes.
// Projection of the whole table (`projectTable`, math-identical): (E + TS) @ W = (Q @ W)[seq] + TS @ W, so with
// fewer item rows than batch positions (ML-100k: 1683 < 5000) the matmul runs on the table [numItems, Dp] and the
// batch gathers its rows: 3x fewer FLOPs forward and backward ('auto', the default, picks it when
// numItems < B*L).
// Variants (each a named option; defaults = the authors' code):
//   sharedQK: false            separate W_Q / W_K (paper eq. "respectively")
//   diagonal: 'mask'           diagonal masked BEFORE the softmax (logit -1e9: rows renormalised, paper); always
//                              runs the composed attention (the fused kernel has no pre-softmax diagonal)
//   timeSignal: 'interleaved'  paper / Transformer: TE(t, 2i) = sin(t / 1e4^(2i/D)), TE(t, 2i+1) = cos(...);
//                              'none' adds nothing
//   projDropout: p             inverted dropout on the ReLU projection (Q' and K' alike) while training
//   clip (trainer option)      rows of P, X, Q clipped to the unit ball after each step (clipToUnitBall(); the
//                              authors built these ops but never ran them)
//   alpha, margin, regW, regEmb, initStd: the constants above
// Training step: the trainer (models/attrec_train.ts) runs AttRecFusedStep (kernels/attrec_step.ts: forward,
// backward, L2 and the Adagrad update in 12 dispatches, no tape; the batch's distinct input items are the only rows
// projected) wherever it applies (fusedStepBlocker: the authors' model, any timeSignal / padDim / projectTable);
// the paper variants and `fusedStep: false` run the autograd path below (model.loss, backward, Adagrad.step).
// Short sequences (datasets other than ML-100k): inputs are left-padded with id 0 (`padded` batches); pad keys
// are masked in the attention (additive -1e4, the kernel's ids mask) and m is the mean over the real rows only.
// A batch without padding runs exactly the authors' math.
import { reshape, scope, noGrad, Tensor, copyInto, keep, zeros } from '../engine/index.js';
import {
  add, attentionMasked, clamp, concat, div, dropout, embedding, euclidScore, matmul, mean, mul, relu, slice, softmax, sqrt, sub, sum,
  sumSquares, square,
} from '../kernels/index.js';
import { smallBmmNN, smallBmmNT } from '../kernels/small_bmm.js';
import { attrecStepBatch, attrecStepUnsupported, AttRecStepWorkspace, type AttRecStepBatch, type AttRecStepDims } from '../kernels/attrec_step.js';
import { Module } from './nn.js';
import type { Adagrad } from './optim.js';
import { truncatedNormal_, xavierUniform_ } from './init.js';

export type TimeSignalLayout = 'concat' | 'interleaved' | 'none';
export type DiagonalMode = 'zero' | 'mask';

export interface AttRecConfig {
  numUsers: number;
  /** Rows of the item tables (max item id + 1; id 0 is padding). */
  numItems: number;
  /** d (num_factor). Default 150. */
  dim?: number;
  /** L, input items per window. Default 5. */
  seqLen?: number;
  /** omega: weight of the long-term term. Default 0.2. */
  alpha?: number;
  /** Hinge margin gamma. Default 0.5. */
  margin?: number;
  /** L2 scale of the projection kernel(s): regW * sum(W^2) / 2. Default 0.01. */
  regW?: number;
  /** L2 scale of P, V, X, Q: regEmb * sum(.^2) / 2 over the whole tables. Default 0.001. */
  regEmb?: number;
  /** Std of the truncated-normal embedding init. Default 0.001. */
  initStd?: number;
  /** One projection for query and key (authors). Default true. */
  sharedQK?: boolean;
  /** 'zero': zero the diagonal after the softmax (authors); 'mask': mask it before (paper). Default 'zero'. */
  diagonal?: DiagonalMode;
  /** Default 'concat' (tensor2tensor, authors). */
  timeSignal?: TimeSignalLayout;
  /** Dropout on the projection output while training. Default 0. */
  projDropout?: number;
  /** Project the whole item table instead of the batch positions (math-identical; the autograd path: the fused step projects the batch's distinct inputs). Default 'auto'. */
  projectTable?: boolean | 'auto';
  /**
   * Attention implementation (math-identical): 'composed' (default: kernels/small_bmm.ts Z Z^T -> softmax ->
   * column means -> weights . E; always used for diagonal 'mask') or 'fused' (kernels/attention_masked.ts in its
   * AttRec mode, diagonal 'zero' only). Why composed is the default: see the header.
   */
  attention?: 'composed' | 'fused';
  /**
   * Compute at a width Dp = D rounded up to a multiple of 4, with zero columns (math-identical: the extra
   * columns of E, the projection, Z and m are exactly 0 and get no gradient): every kernel then reads rows as
   * vec4 (matmul a1b1c1 -> a4b4c4 halves the projection's time at D = 150). Parameters keep their [., D] shapes.
   * Default true.
   */
  padDim?: boolean;
}

export type ResolvedAttRecConfig = Required<AttRecConfig>;

export const ATTREC_DEFAULTS = {
  dim: 150, seqLen: 5, alpha: 0.2, margin: 0.5, regW: 0.01, regEmb: 0.001, initStd: 0.001,
  sharedQK: true, diagonal: 'zero', timeSignal: 'concat', projDropout: 0, projectTable: 'auto', attention: 'composed', padDim: true,
} as const satisfies Omit<ResolvedAttRecConfig, 'numUsers' | 'numItems'>;

export function resolveAttRecConfig(c: AttRecConfig): ResolvedAttRecConfig {
  // Only the model's own keys (callers may pass a larger options object, e.g. the trainer's).
  const given = stripUndefined(c) as Record<string, unknown>;
  const r = { numUsers: c.numUsers, numItems: c.numItems } as ResolvedAttRecConfig;
  for (const k of Object.keys(ATTREC_DEFAULTS) as Array<keyof typeof ATTREC_DEFAULTS>) (r as Record<string, unknown>)[k] = given[k] ?? ATTREC_DEFAULTS[k];
  const int = (k: keyof ResolvedAttRecConfig, min: number): void => {
    const v = r[k] as number;
    if (!Number.isInteger(v) || v < min) throw new Error(`AttRec: ${k} must be an integer >= ${min}, got ${v}`);
  };
  int('numUsers', 1);
  int('numItems', 2);
  int('dim', 1);
  int('seqLen', 1);
  if (!(r.alpha >= 0 && r.alpha <= 1)) throw new Error(`AttRec: alpha must be in [0, 1], got ${r.alpha}`);
  if (!(r.projDropout >= 0 && r.projDropout < 1)) throw new Error(`AttRec: projDropout must be in [0, 1), got ${r.projDropout}`);
  for (const k of ['margin', 'regW', 'regEmb', 'initStd'] as const) if (!(r[k] >= 0) || !Number.isFinite(r[k])) throw new Error(`AttRec: ${k} must be a finite number >= 0, got ${r[k]}`);
  if (r.diagonal !== 'zero' && r.diagonal !== 'mask') throw new Error(`AttRec: diagonal must be 'zero' or 'mask', got '${String(r.diagonal)}'`);
  if (r.attention !== 'composed' && r.attention !== 'fused') throw new Error(`AttRec: attention must be 'composed' or 'fused', got '${String(r.attention)}'`);
  if (!['concat', 'interleaved', 'none'].includes(r.timeSignal)) throw new Error(`AttRec: timeSignal must be concat, interleaved or none, got '${String(r.timeSignal)}'`);
  return r;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * The fixed time signal [L, D] in float64, position p = 0 the oldest input item.
 *  'concat' (tensor2tensor `get_timing_signal_1d`, the authors' add_timing_signal): n = floor(D/2),
 *    inv[k] = exp(-k ln(1e4) / max(n - 1, 1)), row p = [sin(p inv[0..n-1]), cos(p inv[0..n-1])] (+ a 0 if D is odd).
 *  'interleaved' (paper): TE(p, 2i) = sin(p / 1e4^(2i/D)), TE(p, 2i+1) = cos(p / 1e4^(2i/D)).
 *  'none': zeros.
 */
export function timeSignal(L: number, D: number, layout: TimeSignalLayout = 'concat'): Float64Array {
  const out = new Float64Array(L * D);
  if (layout === 'none') return out;
  if (layout === 'concat') {
    const n = Math.floor(D / 2);
    const inc = Math.log(1e4 / 1) / Math.max(n - 1, 1);
    for (let p = 0; p < L; p++) {
      for (let k = 0; k < n; k++) {
        const x = p * Math.exp(-k * inc);
        out[p * D + k] = Math.sin(x);
        out[p * D + n + k] = Math.cos(x);
      }
    }
    return out;
  }
  for (let p = 0; p < L; p++) {
    for (let c = 0; c < D; c++) {
      const i = Math.floor(c / 2);
      const x = p / Math.pow(1e4, (2 * i) / D);
      out[p * D + c] = c % 2 === 0 ? Math.sin(x) : Math.cos(x);
    }
  }
  return out;
}

/** One training batch on the GPU. */
export interface AttRecGpuBatch {
  size: number;
  /** [B] i32 user rows. */
  users: Tensor;
  /** [B, L] i32 input items, oldest first (0 = left padding). */
  seq: Tensor;
  /** [B, 2T] i32: the T targets, then the T negatives (negative k pairs with target k). */
  cands: Tensor;
  T: number;
  hostUsers: Int32Array;
  hostSeq: Int32Array;
  /** Present when some row of seq is left-padded: [B, L, 1] f32 real-row mask and [B, 1] real-row counts. */
  rowMask?: Tensor;
  rowCount?: Tensor;
}

/** Host arrays -> GPU batch (the real-row mask only when some input is 0). */
export function uploadAttRecBatch(users: Int32Array, seq: Int32Array, targets: Int32Array, negatives: Int32Array, L: number, T: number): AttRecGpuBatch {
  const B = users.length;
  const cands = new Int32Array(B * 2 * T);
  for (let b = 0; b < B; b++) {
    cands.set(targets.subarray(b * T, (b + 1) * T), b * 2 * T);
    cands.set(negatives.subarray(b * T, (b + 1) * T), b * 2 * T + T);
  }
  const batch: AttRecGpuBatch = {
    size: B, T, hostUsers: users, hostSeq: seq,
    users: Tensor.from(users, [B], 'i32'), // [B]
    seq: Tensor.from(seq, [B, L], 'i32'), // [B, L]
    cands: Tensor.from(cands, [B, 2 * T], 'i32'), // [B, 2T]
  };
  const pads = padInfo(seq, B, L);
  if (pads) {
    batch.rowMask = Tensor.from(pads.mask, [B, L, 1]); // [B, L, 1]
    batch.rowCount = Tensor.from(pads.count, [B, 1]); // [B, 1]
  }
  return batch;
}

export function disposeAttRecBatch(b: AttRecGpuBatch): void {
  for (const t of [b.users, b.seq, b.cands, b.rowMask, b.rowCount]) t?.dispose();
}

/** Real-row mask and counts of a left-padded [B, L] id array, or null when nothing is padded. */
export function padInfo(seq: Int32Array, B: number, L: number): { mask: Float32Array; count: Float32Array } | null {
  let any = false;
  for (let i = 0; i < seq.length; i++) if (seq[i] === 0) any = true;
  if (!any) return null;
  const mask = new Float32Array(B * L);
  const count = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let i = 0; i < L; i++) if (seq[b * L + i] !== 0) (mask[b * L + i] = 1), n++;
    count[b] = Math.max(1, n);
  }
  return { mask, count };
}

export class AttRec extends Module {
  readonly cfg: ResolvedAttRecConfig;
  readonly P: Tensor; // [U, D]
  readonly V: Tensor; // [U, D]
  readonly Q: Tensor; // [N, D]
  readonly X: Tensor; // [N, D]
  readonly W: Tensor; // [D, D]
  readonly WK: Tensor | null; // [D, D]
  /** Time signal [L, D] (fixed; not in the state dict). */
  readonly ts: Tensor;
  /** 1 - I [L, L] (the post-softmax diagonal zeroing of the composed path). */
  private readonly offDiag: Tensor;
  /** Compute width (padDim): D rounded up to a multiple of 4, or D. */
  readonly Dp: number;
  /** Zero blocks for the padding: [N, Dp-D], [D, Dp-D], [Dp-D, Dp] (null when Dp = D). */
  private readonly zeroPad: { q: Tensor; wc: Tensor; wr: Tensor } | null;

  constructor(config: AttRecConfig) {
    super();
    const c = (this.cfg = resolveAttRecConfig(config));
    const { numUsers: U, numItems: N, dim: D } = c;
    // Creation order fixes the RNG offsets: same seed -> same model.
    this.P = this.registerParameter('P', truncatedNormal_(Tensor.empty([U, D]), c.initStd)); // [U, D]
    this.V = this.registerParameter('V', truncatedNormal_(Tensor.empty([U, D]), c.initStd)); // [U, D]
    this.Q = this.registerParameter('Q', truncatedNormal_(Tensor.empty([N, D]), c.initStd)); // [N, D]
    this.X = this.registerParameter('X', truncatedNormal_(Tensor.empty([N, D]), c.initStd)); // [N, D]
    const proj = this.registerModule('linear_project', new Module());
    this.W = proj.registerParameter('kernel', xavierUniform_(Tensor.empty([D, D]))); // [D, D]
    if (!c.sharedQK) {
      const projK = this.registerModule('linear_project_key', new Module());
      this.WK = projK.registerParameter('kernel', xavierUniform_(Tensor.empty([D, D]))); // [D, D]
    } else this.WK = null;
    this.Dp = c.padDim ? Math.ceil(D / 4) * 4 : D;
    const Dp = this.Dp;
    const tsD = timeSignal(c.seqLen, D, c.timeSignal);
    const tsP = new Float32Array(c.seqLen * Dp);
    for (let p = 0; p < c.seqLen; p++) tsP.set(tsD.subarray(p * D, (p + 1) * D), p * Dp);
    this.ts = keep(Tensor.from(tsP, [c.seqLen, Dp])); // [L, Dp] (zero columns past D)
    this.zeroPad = Dp === D ? null : {
      q: keep(zeros([N, Dp - D])), // [N, Dp-D]
      wc: keep(zeros([D, Dp - D])), // [D, Dp-D]
      wr: keep(zeros([Dp - D, Dp])), // [Dp-D, Dp]
    };
    const L = c.seqLen;
    this.offDiag = keep(Tensor.from(Float32Array.from({ length: L * L }, (_, k) => (k % (L + 1) === 0 ? 0 : 1)), [L, L])); // [L, L]
  }

  /**
   * Why a training step of B windows with T targets cannot run fused (kernels/attrec_step.ts), or null when it
   * can: the fused step covers the authors' model (shared projection, diagonal zeroed after the softmax, no
   * projection dropout). It projects the batch's distinct input items (never more rows than either projectTable
   * strategy), so projectTable does not apply to it.
   */
  fusedStepBlocker(B: number, T: number): string | null {
    const c = this.cfg;
    if (!c.sharedQK) return 'separate W_Q / W_K (sharedQK false)';
    if (c.diagonal !== 'zero') return "the diagonal masked before the softmax (diagonal 'mask')";
    if (c.projDropout > 0) return 'projection dropout';
    return attrecStepUnsupported(this.stepDims(B, T));
  }

  /** The fused step's sizes for B windows of T targets. */
  stepDims(B: number, T: number): AttRecStepDims {
    return { N: this.cfg.numItems, U: this.cfg.numUsers, D: this.cfg.dim, L: this.cfg.seqLen, T, B };
  }

  private useTable(B: number): boolean {
    const p = this.cfg.projectTable;
    return p === 'auto' ? this.cfg.numItems < B * this.cfg.seqLen : p;
  }

  /** A table [R, D] padded to [R, Dp] with zero columns (the table itself when Dp = D). */
  private padCols(t: Tensor): Tensor {
    return this.zeroPad ? concat([t, t === this.Q || t === this.X ? this.zeroPad.q : this.zeroPad.wc], 1) : t; // [R, Dp]
  }

  /** A kernel [D, D] padded to [Dp, Dp] with zeros. */
  private padSquare(W: Tensor): Tensor {
    return this.zeroPad ? concat([concat([W, this.zeroPad.wc], 1), this.zeroPad.wr], 0) : W; // [Dp, Dp]
  }

  /** relu((Qw[seq] + TS) @ Ww) [B, L, Dp] (through the table when projectTable says so); Qw, Ww padded. */
  private project(Ww: Tensor, Qw: Tensor, seq: Tensor, hostSeq: ArrayLike<number> | undefined, E: Tensor): Tensor {
    const [B, L] = seq.shape as [number, number];
    const Dp = this.Dp;
    const hasTs = this.cfg.timeSignal !== 'none';
    let z: Tensor;
    if (this.useTable(B)) {
      const zt = matmul(Qw, Ww); // [N, Dp]
      const zg = embedding(zt, seq, hostSeq ? { hostIds: hostSeq } : {}); // [B, L, Dp]
      z = hasTs ? add(zg, matmul(this.ts, Ww)) : zg; // [B, L, Dp] + [L, Dp]
    } else {
      const ein = hasTs ? add(E, this.ts) : E; // [B, L, Dp]
      z = reshape(matmul(reshape(ein, [B * L, Dp]), Ww), [B, L, Dp]); // [B, L, Dp]
    }
    const r = relu(z); // [B, L, Dp]
    return this.training && this.cfg.projDropout > 0 ? dropout(r, { p: this.cfg.projDropout, training: true }) : r; // [B, L, Dp]
  }

  /**
   * Short-term intent m [B, D] from the input ids seq [B, L] (i32, oldest first, 0 = left padding). rowMask
   * [B, L, 1] / rowCount [B, 1] are required when seq has padding (see uploadAttRecBatch).
   */
  shortTerm(seq: Tensor, o: { hostSeq?: ArrayLike<number>; rowMask?: Tensor; rowCount?: Tensor } = {}): Tensor {
    const [B, L] = seq.shape as [number, number];
    const D = this.cfg.dim;
    if (L !== this.cfg.seqLen) throw new Error(`AttRec: input windows have ${L} items, the model was built for seqLen ${this.cfg.seqLen}`);
    const padded = o.rowMask !== undefined;
    const Dp = this.Dp;
    const Qw = this.padCols(this.Q); // [N, Dp]
    const E = embedding(Qw, seq, o.hostSeq ? { hostIds: o.hostSeq } : {}); // [B, L, Dp]
    const zq = this.project(this.padSquare(this.W), Qw, seq, o.hostSeq, E); // [B, L, Dp]
    const zk = this.WK ? this.project(this.padSquare(this.WK), Qw, seq, o.hostSeq, E) : zq; // [B, L, Dp] (shared: the same tensor, Q' = K')
    const unpad = (m: Tensor): Tensor => (Dp === D ? m : slice(m, 1, 0, D)); // [B, D]
    if (this.cfg.attention === 'fused' && this.cfg.diagonal === 'zero') {
      const q4 = reshape(zq, [B, 1, L, Dp]); // [B, 1, L, Dp]
      const k4 = zk === zq ? q4 : reshape(zk, [B, 1, L, Dp]); // [B, 1, L, Dp]
      const v4 = reshape(E, [B, 1, L, Dp]); // [B, 1, L, Dp]
      const a4 = attentionMasked(q4, k4, v4, padded ? seq : null, { zeroDiagonal: true, scale: 1 / Math.sqrt(D) }); // [B, 1, L, Dp]
      const A = reshape(a4, [B, L, Dp]); // [B, L, Dp]
      if (!padded) return unpad(reshape(mean(A, 1), [B, Dp])); // [B, D]
      return unpad(div(sum(mul(A, o.rowMask!), 1), o.rowCount!)); // [B, D] mean over real rows
    }
    // Composed: the mean over query rows commutes with the value product, m = sum_j c_j E_j with c_j = mean_i S_ij,
    // so only the [B, L, L] weights are formed (no [B, L, D] attention output).
    let logits = mul(smallBmmNT(zq, zk), 1 / Math.sqrt(D)); // [B, L, L]
    if (this.cfg.diagonal === 'mask' || padded) {
      if (padded && !o.hostSeq) throw new Error('AttRec: padded inputs need hostSeq (the pad mask is built on the host)');
      const maskAdd = Tensor.from(additiveMask(o.hostSeq, B, L, padded, this.cfg.diagonal === 'mask'), [padded ? B : 1, L, L]); // [B|1, L, L]
      logits = add(logits, maskAdd); // [B, L, L]
    }
    let S = softmax(logits); // [B, L, L] rows i over keys j
    if (this.cfg.diagonal === 'zero') S = mul(S, this.offDiag); // [B, L, L] diagonal zeroed, rows not renormalised
    const c = padded ? div(sum(mul(S, o.rowMask!), 1), o.rowCount!) : mean(S, 1); // [B, L] mean over (real) query rows
    return unpad(reshape(smallBmmNN(reshape(c, [B, 1, L]), E), [B, Dp])); // [B, D]
  }

  /** Distances y(u, j) [B, K] for ids [B, K] (smaller = more likely). */
  scores(users: Tensor, m: Tensor, ids: Tensor, hostUsers?: ArrayLike<number>): Tensor {
    const u = embedding(this.P, users, hostUsers ? { hostIds: hostUsers } : {}); // [B, D]
    return euclidScore(u, m, this.X, this.Q, ids, { alpha: this.cfg.alpha }); // [B, K]
  }

  /** Hinge part of the loss, summed over the batch: sum_bk max(0, y(t_bk) - y(n_bk) + margin) []. */
  hinge(b: AttRecGpuBatch): Tensor {
    const T = b.T;
    const m = this.shortTerm(b.seq, { hostSeq: b.hostSeq, ...(b.rowMask ? { rowMask: b.rowMask, rowCount: b.rowCount! } : {}) }); // [B, D]
    const y = this.scores(b.users, m, b.cands, b.hostUsers); // [B, 2T]
    const diff = sub(slice(y, 1, 0, T), slice(y, 1, T, 2 * T)); // [B, T]
    return sum(relu(add(diff, this.cfg.margin))); // []
  }

  /** The L2 terms: regW/2 sum W^2 (+ W_K) + regEmb/2 (sum P^2 + V^2 + X^2 + Q^2) []. */
  l2(): Tensor {
    const { regW, regEmb } = this.cfg;
    const terms: Tensor[] = [];
    for (const w of [this.W, this.WK]) if (w && regW > 0) terms.push(sumSquares(w, { scale: regW / 2 })); // []
    if (regEmb > 0) for (const t of [this.P, this.V, this.X, this.Q]) terms.push(sumSquares(t, { scale: regEmb / 2 })); // []
    if (terms.length === 0) return mul(sumSquares(this.W), 0); // [] (no L2 at all)
    return terms.reduce((a, t) => add(a, t)); // []
  }

  /** The training loss of a batch [] (hinge summed over the batch + L2). Call inside scope(). */
  loss(b: AttRecGpuBatch): Tensor {
    return add(this.hinge(b), this.l2()); // []
  }

  /** Rows of P, X and Q with norm > 1 scaled back to norm 1 (tf.clip_by_norm(Z, 1, axes=[1])), in place. */
  clipToUnitBall(): void {
    noGrad(() => {
      for (const t of [this.P, this.X, this.Q]) {
        scope(() => {
          const n = clamp(sqrt(sum(square(t), 1, true)), 1, null); // [R, 1] max(norm, 1)
          copyInto(t, div(t, n)); // [R, D]
        });
      }
    });
  }

  /** u = P[users] [B, D] and m [B, D] for evaluation (no graph). */
  userState(users: Tensor, seq: Tensor, o: { hostSeq?: ArrayLike<number>; rowMask?: Tensor; rowCount?: Tensor } = {}): { u: Tensor; m: Tensor } {
    return noGrad(() => {
      const wasTraining = this.training;
      this.eval();
      try {
        const m = this.shortTerm(seq, o); // [B, D]
        const u = embedding(this.P, users); // [B, D]
        return { u, m };
      } finally {
        this.train(wasTraining);
      }
    });
  }

  /**
   * What full-ranking scoring needs (no graph): u, m [B, Dp] and X, Q [N, Dp], at the compute width (zero columns
   * past D change no distance; the top-K kernel then reads vec4 rows). Call inside scope(): the padded copies are new.
   */
  rankingInputs(users: Tensor, seq: Tensor, o: { hostSeq?: ArrayLike<number>; rowMask?: Tensor; rowCount?: Tensor } = {}): { u: Tensor; m: Tensor; X: Tensor; Q: Tensor } {
    const { u, m } = this.userState(users, seq, o); // [B, D] each
    if (!this.zeroPad) return { u, m, X: this.X, Q: this.Q };
    return noGrad(() => {
      const B = u.shape[0]!;
      const zb = zeros([B, this.Dp - this.cfg.dim]); // [B, Dp-D]
      return { u: concat([u, zb], 1), m: concat([m, zb], 1), X: concat([this.X, this.zeroPad!.q], 1), Q: concat([this.Q, this.zeroPad!.q], 1) }; // [B, Dp] x2, [N, Dp] x2
    });
  }

  override dispose(): void {
    this.ts.dispose();
    this.offDiag.dispose();
    if (this.zeroPad) for (const t of Object.values(this.zeroPad)) t.dispose();
    super.dispose();
  }
}

/** Additive [1 or B, L, L] logit mask: -1e9 on the diagonal (pre-softmax masking), -1e4 on pad keys (the fused kernel's fill). */
function additiveMask(hostSeq: ArrayLike<number> | undefined, B: number, L: number, padded: boolean, diag: boolean): Float32Array {
  const rows = padded ? B : 1;
  const out = new Float32Array(rows * L * L);
  for (let b = 0; b < rows; b++) {
    for (let i = 0; i < L; i++) {
      for (let j = 0; j < L; j++) {
        let v = diag && i === j ? -1e9 : 0;
        if (padded && v === 0 && hostSeq![b * L + j] === 0) v = -1e4;
        out[(b * L + i) * L + j] = v;
      }
    }
  }
  return out;
}


/**
 * The fused training step of an AttRec model and its Adagrad optimizer (kernels/attrec_step.ts): 12 dispatches per
 * step instead of the tape's ~100, the same math (checked against the float64 reference, the numpy fixtures
 * and the autograd path). The optimizer's state is updated in place (its checkpoints and step counts stay valid);
 * the loss accumulates on the GPU across steps (resetLoss / lossSum).
 */
export class AttRecFusedStep {
  private readonly ws: AttRecStepWorkspace;
  readonly dims: AttRecStepDims;

  constructor(
    readonly model: AttRec,
    readonly opt: Adagrad,
    B: number,
    T: number,
  ) {
    const why = model.fusedStepBlocker(B, T);
    if (why) throw new Error(`AttRec: the fused training step does not cover ${why}`);
    this.dims = model.stepDims(B, T);
    this.ws = new AttRecStepWorkspace(this.dims, timeSignal(model.cfg.seqLen, model.cfg.dim, model.cfg.timeSignal));
  }

  /** Upload one batch: users [B], inputs [B, L] (oldest first, 0 = left padding), targets and negatives [B, T]. */
  batch(users: Int32Array, seq: Int32Array, targets: Int32Array, negatives: Int32Array): AttRecStepBatch {
    return attrecStepBatch(users, seq, targets, negatives, this.dims);
  }

  /** One training step: forward, backward and the Adagrad update of every table (records GPU work only). */
  step(b: AttRecStepBatch): void {
    const m = this.model;
    const c = m.cfg;
    const region = (t: Tensor): { arena: Tensor; offset: number } => {
      const r = this.opt.externalStep(t);
      return { arena: r.state[0]!, offset: r.offset };
    };
    const acc = { P: region(m.P), V: region(m.V), Q: region(m.Q), X: region(m.X), W: region(m.W) };
    this.ws.step({ P: m.P, V: m.V, Q: m.Q, X: m.X, W: m.W, acc }, b, {
      alpha: c.alpha, margin: c.margin, regW: c.regW, regEmb: c.regEmb, lr: this.opt.lr, eps: this.opt.eps, weightDecay: this.opt.weightDecay,
    });
  }

  resetLoss(): void {
    this.ws.resetLoss();
  }

  /**
   * Make the next step pack the parameters again. Only needed after writing a parameter's buffer behind the
   * engine's back (its own device.queue.writeBuffer): every engine write (kernels, Tensor.write, copies,
   * loadStateDict) is seen through the tensors' write versions.
   */
  invalidate(): void {
    this.ws.invalidate();
  }

  /** The training loss summed over the steps since resetLoss() (reads back). */
  lossSum(): Promise<number> {
    return this.ws.lossSum();
  }

  dispose(): void {
    this.ws.dispose();
  }
}
