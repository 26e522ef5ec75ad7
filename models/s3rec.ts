// models/s3rec.ts — S3-Rec (Zhou et al., CIKM 2020) on the engine, as the official code runs it
// (RUCAIBox/CIKM2020-S3Rec models.py + modules.py; ../shared/docs/S3REC_SPEC.md §3-§5, §11).
//
// Parameters (state-dict names = the official ones, so the released checkpoints load strictly):
//   item_embeddings.weight [V, H] (V = max_item + 2: pad 0 .. max_item, mask_id), attribute_embeddings.weight
//   [A, H], position_embeddings.weight [L, H], LayerNorm.{weight,bias} [H],
//   item_encoder.layer.{i}.attention.{query,key,value,dense}.{weight [H, H], bias [H]},
//   item_encoder.layer.{i}.attention.LayerNorm, item_encoder.layer.{i}.intermediate.dense_1 [4H, H] / dense_2 [H, 4H],
//   item_encoder.layer.{i}.intermediate.LayerNorm, {aap,mip,map,sp}_norm.{weight [H, H], bias [H]}.
// Encoder (post-LN): E = dropout(LN(item_emb[ids] + pos_emb[slot])); per layer
//   a = LN(dropout(dense(MHA(E))) + E), E' = LN(dropout(dense_2(act(dense_1(a)))) + a); act = GELU (erf) or ReLU.
//   MHA: softmax(Q K^T / sqrt(H / heads) + mask) (dropout on the probabilities) V, masks built in the fused kernel:
//   fine-tuning/eval causal + padding with additive -10000, pretraining padding only with -1e8.
// Two execution paths, same parameters:
//   'varlen' (default): padding-free. The left-padded [B, L] batch is packed into its T real tokens
//     (kernels/varlen.ts); every per-token op runs on [T, H] and attention runs over each sequence's own tokens.
//     Exact: in the official padded run a real query never sees a pad key (its weight exp(-1e4) underflows to 0
//     in f32) and every other op is per token, so real rows are identical; pad rows are never computed (their
//     outputs are never read by any loss or by the read-out at slot L-1).
//   'padded': the official layout [B, L, H], every slot computed (pad rows attend as the official code does).
// Read-out: the last slot (L-1), which is the most recent item thanks to left padding.
// Losses: fine-tuning = SASRec BCE with one sampled negative per real position, mean over real positions (fused
//   kernels/pairwise.ts bceNegSampling); pretraining = 0.2 AAP + MIP + MAP + 0.5 SP (official weights and sums;
//   AAP/MAP as the fused sparse multi-label BCE over all attributes, MIP/SP as the fused double-sigmoid pairwise
//   loss). The four pretraining encoder passes (masked items, masked segments, positive and negative segments)
//   run as ONE packed batch of 4B sequences: same kernels, a quarter of the dispatches.
// Paper variants (named options): hiddenAct 'relu' (paper Eq. 8); pretraining `objective: 'infonce'` (paper
//   Eq. 10-12: InfoNCE over sampled negatives through the fused InfoNCE kernel) and `headBias: false` (bilinear
//   heads without bias) live in models/s3rec_pretrain.ts.
import { noGrad, reshape, scope, Tensor } from '../engine/index.js';
import {
  add, attentionMasked, attentionVarlen, bceNegSampling, gatherDot, gelu, lastRows, multiLabelBce, mul, packBatch,
  pairwiseSigmoidLoss, pairwiseSigmoidLossIds, permute, relu, slice, concat, csrTargets, type PackedBatch,
} from '../kernels/index.js';
import { Dropout, Embedding, LayerNorm, Linear, Module, ModuleList } from './nn.js';
import { normal_, zeros_, ones_ } from './init.js';

export type Activation = 'gelu' | 'relu';
export type EncoderPath = 'varlen' | 'padded';

export interface S3RecConfig {
  /** max_item + 2 (ids 0 = pad .. max_item, mask_id = itemSize - 1). */
  itemSize: number;
  /** max_attr + 1. */
  attributeSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxSeqLength: number;
  hiddenDropoutProb: number;
  attentionProbsDropoutProb: number;
  initializerRange: number;
  /** Official: GELU (erf). Paper Eq. 8: ReLU. */
  hiddenAct: Activation;
  layerNormEps: number;
}

/** Official defaults (run_finetune_sample.py / run_pretrain.py). */
export const S3REC_DEFAULTS: Omit<S3RecConfig, 'itemSize' | 'attributeSize'> = {
  hiddenSize: 64,
  numHiddenLayers: 2,
  numAttentionHeads: 2,
  maxSeqLength: 50,
  hiddenDropoutProb: 0.5,
  attentionProbsDropoutProb: 0.5,
  initializerRange: 0.02,
  hiddenAct: 'gelu',
  layerNormEps: 1e-12,
};

export interface PretrainWeights {
  aap: number;
  mip: number;
  map: number;
  sp: number;
}
/** Pretraining loss weights (official and paper: AAP 0.2, MIP 1.0, MAP 1.0, SP 0.5). */
export const PRETRAIN_WEIGHTS: Readonly<PretrainWeights> = { aap: 0.2, mip: 1.0, map: 1.0, sp: 0.5 };

export function s3recConfig(c: Partial<S3RecConfig> & Pick<S3RecConfig, 'itemSize' | 'attributeSize'>): S3RecConfig {
  const cfg = { ...S3REC_DEFAULTS, ...c } as S3RecConfig;
  const int = (k: keyof S3RecConfig, min: number): void => {
    const v = cfg[k] as number;
    if (!Number.isInteger(v) || v < min) throw new Error(`S3RecModel: ${k} must be an integer >= ${min}, got ${v}`);
  };
  int('itemSize', 3);
  int('attributeSize', 1);
  int('hiddenSize', 1);
  int('numHiddenLayers', 0);
  int('numAttentionHeads', 1);
  int('maxSeqLength', 1);
  if (cfg.hiddenSize % cfg.numAttentionHeads) {
    throw new Error(`S3RecModel: hiddenSize ${cfg.hiddenSize} is not a multiple of numAttentionHeads ${cfg.numAttentionHeads}`);
  }
  for (const k of ['hiddenDropoutProb', 'attentionProbsDropoutProb'] as const) {
    if (!(cfg[k] >= 0 && cfg[k] < 1)) throw new Error(`S3RecModel: ${k} must be in [0, 1), got ${cfg[k]}`);
  }
  if (cfg.hiddenAct !== 'gelu' && cfg.hiddenAct !== 'relu') throw new Error(`S3RecModel: hiddenAct must be 'gelu' or 'relu', got '${String(cfg.hiddenAct)}'`);
  return cfg;
}

// ------------------------------------------------------------------------------------------------ modules
class SelfAttention extends Module {
  readonly query: Linear;
  readonly key: Linear;
  readonly value: Linear;
  readonly dense: Linear;
  readonly norm: LayerNorm;
  readonly outDropout: Dropout;
  constructor(readonly cfg: S3RecConfig) {
    super();
    const H = cfg.hiddenSize;
    this.query = this.registerModule('query', new Linear(H, H));
    this.key = this.registerModule('key', new Linear(H, H));
    this.value = this.registerModule('value', new Linear(H, H));
    this.dense = this.registerModule('dense', new Linear(H, H));
    this.norm = this.registerModule('LayerNorm', new LayerNorm(H, { eps: cfg.layerNormEps }));
    this.outDropout = this.registerModule('out_dropout', new Dropout(cfg.hiddenDropoutProb));
  }

  /**
   * x [N, H] (N = T packed tokens or B*L padded slots) -> [N, H]; with `pick` (the read-out of the last layer at
   * evaluation), the rows after the attention are reduced to pick's rows: -> [B, H].
   */
  forward(x: Tensor, ctx: EncoderContext, pick?: (t: Tensor) => Tensor): Tensor {
    const { hiddenSize: H, numAttentionHeads: nh } = this.cfg;
    const dh = H / nh;
    const N = x.shape[0]!;
    const q = this.query.forward(x); // [N, H]
    const k = this.key.forward(x); // [N, H]
    const v = this.value.forward(x); // [N, H]
    const opts = {
      causal: ctx.causal,
      fill: ctx.causal ? -10000 : -1e8,
      dropout: this.cfg.attentionProbsDropoutProb,
      training: this.training,
    };
    let c: Tensor;
    if (ctx.packed) {
      const o = attentionVarlen(reshape(q, [N, nh, dh]), reshape(k, [N, nh, dh]), reshape(v, [N, nh, dh]), ctx.packed, opts); // [T, nh, dh]
      c = reshape(o, [N, H]); // [T, H]
    } else {
      const { B, L } = ctx;
      const heads = (t: Tensor): Tensor => permute(reshape(t, [B, L, nh, dh]), [0, 2, 1, 3]); // [B, nh, L, dh]
      const o = attentionMasked(heads(q), heads(k), heads(v), ctx.ids!, opts); // [B, nh, L, dh]
      c = reshape(permute(o, [0, 2, 1, 3]), [N, H]); // [B*L, H]
    }
    if (pick) {
      c = pick(c); // [B, H]
      x = pick(x); // [B, H]
    }
    const h = this.outDropout.forward(this.dense.forward(c)); // [N, H]
    return this.norm.forward(add(h, x)); // [N, H]
  }
}

class Intermediate extends Module {
  readonly dense1: Linear;
  readonly dense2: Linear;
  readonly norm: LayerNorm;
  readonly dropout: Dropout;
  constructor(readonly cfg: S3RecConfig) {
    super();
    const H = cfg.hiddenSize;
    this.dense1 = this.registerModule('dense_1', new Linear(H, 4 * H));
    this.dense2 = this.registerModule('dense_2', new Linear(4 * H, H));
    this.norm = this.registerModule('LayerNorm', new LayerNorm(H, { eps: cfg.layerNormEps }));
    this.dropout = this.registerModule('dropout', new Dropout(cfg.hiddenDropoutProb));
  }

  forward(x: Tensor): Tensor {
    const h1 = this.dense1.forward(x); // [N, 4H]
    const a = this.cfg.hiddenAct === 'gelu' ? gelu(h1) : relu(h1); // [N, 4H]
    const h2 = this.dropout.forward(this.dense2.forward(a)); // [N, H]
    return this.norm.forward(add(h2, x)); // [N, H]
  }
}

class Layer extends Module {
  readonly attention: SelfAttention;
  readonly intermediate: Intermediate;
  constructor(cfg: S3RecConfig) {
    super();
    this.attention = this.registerModule('attention', new SelfAttention(cfg));
    this.intermediate = this.registerModule('intermediate', new Intermediate(cfg));
  }
  forward(x: Tensor, ctx: EncoderContext, pick?: (t: Tensor) => Tensor): Tensor {
    return this.intermediate.forward(this.attention.forward(x, ctx, pick)); // [N, H] ([B, H] with pick)
  }
}

class Encoder extends Module {
  readonly layer: ModuleList<Layer>;
  constructor(cfg: S3RecConfig) {
    super();
    this.layer = this.registerModule('layer', new ModuleList(Array.from({ length: cfg.numHiddenLayers }, () => new Layer(cfg))));
  }
  /** x [N, H] -> [N, H]; with `pick`, the last layer computes only pick's rows after its attention -> [B, H]. */
  forward(x: Tensor, ctx: EncoderContext, pick?: (t: Tensor) => Tensor): Tensor {
    let h = x;
    const n = this.layer.length;
    for (let i = 0; i < n; i++) h = this.layer.at(i).forward(h, ctx, i === n - 1 ? pick : undefined); // [N, H]
    return h;
  }
}

/** What the attention of one encoder pass needs to know about the batch. */
interface EncoderContext {
  causal: boolean;
  /** Packed (varlen) layout, or null for the padded path. */
  packed: PackedBatch | null;
  /** Padded path: ids [B, L] i32 on the GPU (padding mask) and the sizes. */
  ids: Tensor | null;
  B: number;
  L: number;
}

/** A batch of left-padded sequences ready for the encoder: host ids, and their packing when varlen. */
export interface EncoderBatch {
  /** [B*L] left-padded ids (0 = padding). */
  ids: Int32Array;
  B: number;
  L: number;
  path: EncoderPath;
  /** varlen: the packing (kernels/varlen.ts); dispose() with the batch. */
  packed: PackedBatch | null;
  /** padded: the ids on the GPU. */
  idsTensor: Tensor | null;
  /** Host ids of each encoder row (packed tokens, or the padded slots) and each row's slot 0..L-1. */
  rowIds: Int32Array;
  rowPos: Int32Array;
  /** The same on the GPU ([max(1, N)] i32), uploaded with the batch (off the training step when prefetched). */
  rowIdsT: Tensor;
  rowPosT: Tensor;
  dispose(): void;
}

/** Prepare a left-padded [B, L] batch for the encoder (uploads what the chosen path needs). */
export function encoderBatch(ids: Int32Array, B: number, L: number, path: EncoderPath = 'varlen'): EncoderBatch {
  if (ids.length !== B * L) throw new Error(`S3RecModel: ${ids.length} ids for a [${B}, ${L}] batch`);
  if (path === 'varlen') {
    const packed = packBatch(ids, B, L); // uploads tokens and positions [max(1, T)] among the layout tensors
    return {
      ids, B, L, path, packed, idsTensor: null, rowIds: packed.plan.tokens, rowPos: packed.plan.positions,
      rowIdsT: packed.tokens, rowPosT: packed.positions, dispose: () => packed.dispose(),
    };
  }
  const idsTensor = Tensor.from(ids, [B, L], 'i32'); // [B, L] (attention padding mask)
  const rowPos = new Int32Array(B * L);
  for (let i = 0; i < B * L; i++) rowPos[i] = i % L;
  const rowIdsT = Tensor.from(ids.length ? ids : new Int32Array(1), [Math.max(1, B * L)], 'i32'); // [B*L]
  const rowPosT = Tensor.from(rowPos.length ? rowPos : new Int32Array(1), [Math.max(1, B * L)], 'i32'); // [B*L]
  return {
    ids, B, L, path, packed: null, idsTensor, rowIds: ids, rowPos, rowIdsT, rowPosT,
    dispose: () => {
      for (const t of [idsTensor, rowIdsT, rowPosT]) t.dispose();
    },
  };
}

/** The packed encoder batch of a pretraining batch: [masked; maskedSegment; posSegment; negSegment], 4B sequences. */
export function pretrainBatch(b: PretrainSequences, path: EncoderPath = 'varlen'): EncoderBatch {
  const { B, L } = b;
  const all = new Int32Array(4 * B * L);
  all.set(b.masked, 0);
  all.set(b.maskedSegment, B * L);
  all.set(b.posSegment, 2 * B * L);
  all.set(b.negSegment, 3 * B * L);
  return encoderBatch(all, 4 * B, L, path);
}

/** Map a per-slot host array [B*L] (aligned with the padded ids) to the encoder rows of `eb`. */
export function rowsOf(eb: EncoderBatch, slots: Int32Array, firstSeqs = eb.B): Int32Array {
  if (!eb.packed) return slots.subarray(0, firstSeqs * eb.L);
  const pi = eb.packed.plan.padIndex;
  const T = eb.packed.plan.offsets[firstSeqs]!;
  const out = new Int32Array(T);
  for (let t = 0; t < T; t++) out[t] = slots[pi[t]!]!;
  return out;
}

// ------------------------------------------------------------------------------------------------ the model
export class S3RecModel extends Module {
  readonly cfg: S3RecConfig;
  readonly itemEmbeddings: Embedding;
  readonly attributeEmbeddings: Embedding;
  readonly positionEmbeddings: Embedding;
  readonly norm: LayerNorm;
  readonly embDropout: Dropout;
  readonly itemEncoder: Encoder;
  readonly aapNorm: Linear;
  readonly mipNorm: Linear;
  readonly mapNorm: Linear;
  readonly spNorm: Linear;

  constructor(config: Partial<S3RecConfig> & Pick<S3RecConfig, 'itemSize' | 'attributeSize'>) {
    super();
    const cfg = (this.cfg = s3recConfig(config));
    const H = cfg.hiddenSize;
    // Registration order = the official module order (models.py S3RecModel.__init__).
    this.itemEmbeddings = this.registerModule('item_embeddings', new Embedding(cfg.itemSize, H, { paddingIdx: 0 }));
    this.attributeEmbeddings = this.registerModule('attribute_embeddings', new Embedding(cfg.attributeSize, H, { paddingIdx: 0 }));
    this.positionEmbeddings = this.registerModule('position_embeddings', new Embedding(cfg.maxSeqLength, H));
    this.itemEncoder = this.registerModule('item_encoder', new Encoder(cfg));
    this.norm = this.registerModule('LayerNorm', new LayerNorm(H, { eps: cfg.layerNormEps }));
    this.embDropout = this.registerModule('dropout', new Dropout(cfg.hiddenDropoutProb));
    this.aapNorm = this.registerModule('aap_norm', new Linear(H, H));
    this.mipNorm = this.registerModule('mip_norm', new Linear(H, H));
    this.mapNorm = this.registerModule('map_norm', new Linear(H, H));
    this.spNorm = this.registerModule('sp_norm', new Linear(H, H));
    this.initWeights();
  }

  /**
   * The official init_weights (applied after construction): every Linear and Embedding weight ~ N(0, range)
   * (padding rows included: they are overwritten too), Linear biases 0, LayerNorm 1 / 0.
   */
  initWeights(): void {
    const std = this.cfg.initializerRange;
    this.apply((m) => {
      if (m instanceof Linear) {
        normal_(m.weight, std);
        if (m.bias) zeros_(m.bias);
      } else if (m instanceof Embedding) normal_(m.weight, std);
      else if (m instanceof LayerNorm) {
        ones_(m.weight);
        zeros_(m.bias);
      }
    });
  }

  get maskId(): number {
    return this.cfg.itemSize - 1;
  }

  /**
   * The encoder over a prepared batch: `causal` (fine-tuning, eval; fill -10000) or bidirectional (pretraining;
   * fill -1e8). Returns the rows [N, H]: the T packed tokens (varlen) or all B*L slots (padded); with
   * readoutOnly, only the read-out rows [B, H] (slot L-1 of each sequence); with `pick`, the rows pick selects (the
   * last layer then runs its out-projection and FFN on those rows only).
   */
  encode(eb: EncoderBatch, causal: boolean, o: { readoutOnly?: boolean; pick?: (rows: Tensor) => Tensor } = {}): Tensor {
    const one = new Int32Array(1); // an empty batch's ids are one dummy row (as the upload)
    const e = add(
      this.itemEmbeddings.forward(eb.rowIdsT, { hostIds: eb.rowIds.length ? eb.rowIds : one }), // [N, H]
      this.positionEmbeddings.forward(eb.rowPosT, { hostIds: eb.rowPos.length ? eb.rowPos : one }), // [N, H]
    );
    const x = this.embDropout.forward(this.norm.forward(e)); // [N, H]
    const ctx: EncoderContext = { causal, packed: eb.packed, ids: eb.idsTensor, B: eb.B, L: eb.L };
    const pick = o.pick ?? (o.readoutOnly ? (t: Tensor): Tensor => this.lastRows(eb, t) : undefined);
    if (pick && this.cfg.numHiddenLayers > 0) return this.itemEncoder.forward(x, ctx, pick); // picked rows
    const h = this.itemEncoder.forward(x, ctx); // [N, H]
    return pick ? pick(h) : h; // picked rows or [N, H]
  }

  /** The read-out rows (slot L-1 of each sequence) of encoder rows [N, H] -> [B, H]. */
  lastRows(eb: EncoderBatch, rows: Tensor): Tensor {
    const H = this.cfg.hiddenSize;
    if (eb.packed) return lastRows(rows, eb.packed); // [B, H]
    const x = reshape(rows, [eb.B, eb.L, H]); // [B, L, H]
    return reshape(slice(x, 1, eb.L - 1, eb.L), [eb.B, H]); // [B, H]
  }

  /**
   * Official fine-tuning loss (models.py/trainers.py cross_entropy): for every position with target_pos > 0,
   * -log(sigmoid(<h_t, e_pos>) + 1e-24) - log(1 - sigmoid(<h_t, e_neg>) + 1e-24), mean over those positions.
   * inputIds, targetPos, targetNeg: [B*L] left padded, aligned.
   */
  finetuneLoss(eb: EncoderBatch, targetPos: Int32Array, targetNeg: Int32Array): Tensor {
    const h = this.encode(eb, true); // [N, H]
    const N = h.shape[0]!;
    const pos = Tensor.from(rowsOf(eb, targetPos), [N], 'i32'); // [N]
    const neg = Tensor.from(rowsOf(eb, targetNeg), [N], 'i32'); // [N]
    const loss = bceNegSampling(h, this.itemEmbeddings.weight, pos, neg); // []
    pos.dispose();
    neg.dispose();
    return loss;
  }

  /** Eval user states: causal encoder, read-out at slot L-1 -> [B, H]. Run under noGrad. */
  userStates(eb: EncoderBatch): Tensor {
    // Only the read-out rows are needed after the last layer's attention: its out-projection and FFN run on B
    // rows instead of N (every op there is per row, so the values are those of the full pass).
    return scope(() => this.encode(eb, true, { readoutOnly: true })); // [B, H]
  }

  /**
   * The four pretraining encoder passes [masked; maskedSegment; posSegment; negSegment] of a prepared 4B-sequence
   * batch (pretrainBatch) in ONE bidirectional pass, with the last layer's out-projection, FFN and LayerNorms
   * computed only for the rows a loss reads: every row of the masked-item pass (AAP/MIP/MAP) and the read-out row
   * (slot L-1) of each segment sequence (SP). Every op after the last attention is per row, so those rows equal
   * the full pass's. Returns h [N + 3B, H] (rows [0, N) = the masked pass in eb's row order, then B read-out rows
   * each of the masked, positive and negative segments) and N.
   */
  encodePretrain(eb: EncoderBatch, B: number): { h: Tensor; N: number } {
    const N = eb.packed ? eb.packed.plan.offsets[B]! : B * eb.L;
    const pick = (t: Tensor): Tensor => concat([slice(t, 0, 0, N), slice(this.lastRows(eb, t), 0, B, 4 * B)], 0); // [N + 3B, H]
    if (this.cfg.numHiddenLayers === 0) return { h: pick(this.encode(eb, false)), N };
    return { h: this.encode(eb, false, { pick }), N }; // [N + 3B, H]
  }

  /**
   * The four official pretraining losses (S3REC_SPEC §4.2) for a batch of B samples, all [B*L] left padded:
   * masked (masked_item_sequence), pos (pos_items = the original items), neg (neg_items), maskedSegment,
   * posSegment, negSegment; `attributes[item]` lists each item's attribute ids. Returns each loss (official
   * sums), total = 0.2 AAP + MIP + MAP + 0.5 SP (weights overridable), and the packed batch, which the caller
   * disposes after backward (intermediates are freed here).
   */
  pretrainLosses(b: PretrainInputs, o: { path?: EncoderPath; weights?: Partial<PretrainWeights> } = {}): PretrainLosses {
    const { B } = b;
    const w = { ...PRETRAIN_WEIGHTS, ...(o.weights ?? {}) };
    const maskId = this.maskId;
    const eb = pretrainBatch(b, o.path ?? 'varlen');
    let ok = false;
    try {
      const res = scope(() => {
        const { h, N } = this.encodePretrain(eb, B); // [N + 3B, H]
        const seq = slice(h, 0, 0, N); // [N, H] rows of the masked-item pass
        const maskedRows = rowsOf(eb, b.masked, B); // [N]
        const posRows = rowsOf(eb, b.pos, B); // [N]
        const negRows = rowsOf(eb, b.neg, B); // [N]
        const aapMask = new Float32Array(N);
        const mipMask = new Float32Array(N);
        const lists: Int32Array[] = new Array(N);
        const empty = new Int32Array(0);
        for (let n = 0; n < N; n++) {
          const m = maskedRows[n]!;
          aapMask[n] = m !== maskId && m !== 0 ? 1 : 0;
          mipMask[n] = m === maskId ? 1 : 0;
          lists[n] = posRows[n]! > 0 ? (b.attributes[posRows[n]!] ?? empty) : empty;
        }
        const targets = csrTargets(lists); // sparse AAP/MAP targets: offsets [N + 1], ids [nnz]
        const aapM = Tensor.from(aapMask, [N]); // [N]
        const mipM = Tensor.from(mipMask, [N]); // [N]
        const posT = Tensor.from(posRows, [N], 'i32'); // [N]
        const negT = Tensor.from(negRows, [N], 'i32'); // [N]
        const attrW = this.attributeEmbeddings.weight; // [A, H]
        const aap = multiLabelBce(this.aapNorm.forward(seq), attrW, targets, { mask: aapM }); // []
        const mip = pairwiseSigmoidLossIds(this.mipNorm.forward(seq), this.itemEmbeddings.weight, posT, negT, { mask: mipM }); // []
        const map = multiLabelBce(this.mapNorm.forward(seq), attrW, targets, { mask: mipM }); // []
        const ctxRows = slice(h, 0, N, N + B); // [B, H]
        const posSeg = slice(h, 0, N + B, N + 2 * B); // [B, H]
        const negSeg = slice(h, 0, N + 2 * B, N + 3 * B); // [B, H]
        const sp = pairwiseSigmoidLoss(this.spNorm.forward(ctxRows), posSeg, negSeg); // []
        const total = add(add(mul(aap, w.aap), mul(mip, w.mip)), add(mul(map, w.map), mul(sp, w.sp))); // []
        return { aap, mip, map, sp, total };
      });
      ok = true;
      return { ...res, batch: eb };
    } finally {
      if (!ok) eb.dispose();
    }
  }
}

/** Host inputs of one pretraining batch (models/data buildPretrainBatch gives all but `attributes`). */
export interface PretrainSequences {
  B: number;
  L: number;
  /** [B*L] each, left padded (S3REC_SPEC §4.1; models/data buildPretrainBatch builds them). */
  masked: Int32Array;
  pos: Int32Array;
  neg: Int32Array;
  maskedSegment: Int32Array;
  posSegment: Int32Array;
  negSegment: Int32Array;
}

export interface PretrainInputs extends PretrainSequences {
  /** attributes[item] = the item's attribute ids (index 0 unused). */
  attributes: readonly (Int32Array | undefined)[];
}

export interface PretrainLosses {
  aap: Tensor;
  mip: Tensor;
  map: Tensor;
  sp: Tensor;
  total: Tensor;
  /** The packed encoder batch: the backward pass needs it; dispose() it after backward (or after a no-grad pass). */
  batch: EncoderBatch;
}

/** Scores of candidates: h [B, H] against item rows cands [B, C] -> [B, C] (sampled protocol). */
export function scoreCandidates(model: S3RecModel, h: Tensor, cands: Tensor): Tensor {
  return noGrad(() =>
    scope(() => {
      return gatherDot(h, model.itemEmbeddings.weight, cands); // [B, C]: no [B, C, H] gathered rows
    }),
  );
}
