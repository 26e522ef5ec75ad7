// attention_masked (kernels/attention_masked.ts) at the S3-Rec shapes, forward + backward (one training step's
// attention):
//   fused       kernels/attention_masked.ts: 1 forward dispatch, 2 backward dispatches
//   composed    the same math from this engine's unfused ops: matmul(q, kᵀ), mul(scale), add(additive mask
//               [B, 1, L, L], built once from the ids as the official code does), softmax, dropout, matmul(P, v);
//               autograd backward
//   tfjs        @tensorflow/tfjs-backend-webgpu composing the same math (tf.dropout draws its mask on the host),
//               tf.valueAndGrads, on the same adapter; validated without dropout (its mask comes from its own RNG)
//   *_fwd       forward only, no dropout (evaluation)
// Shapes: fine-tuning B=256 H=2 L=50 D=32, causal, fill -1e4, attention dropout 0.5; pretraining B=100,
// bidirectional, fill -1e8. Ids (padding) are generated with Beauty's measured length distribution (common.ts):
// fine-tuning inputs, and for pretraining a uniform prefix of them, left padded. The upstream gradient is a real
// step's (zero on pad rows: S3-Rec's losses read real positions only and every op after attention is per-token)
// except in the "dense dO" rows (random everywhere). Every variant is checked (output and dq, dk, dv) against the
// float64 reference with the same dropout mask.
// Encoder rows (varlen vs padded): one S3-Rec encoder layer (QKV, attention, out-projection, residual + LayerNorm,
// FFN 64->256->64 GELU, residual + LayerNorm), forward + backward, on packed tokens vs the padded [B*50] tokens,
// validated (dropout off) against a float64 reference of the layer built from the kernels' references (output on
// the real rows, every parameter gradient). fused_varlen / fused_padded: the kernel alone on that batch, validated
// with dropout against the padded reference (the varlen kernel draws the same mask: padded-slot RNG index).
import { backward, manualSeed, noGrad, ref, reshape, Tensor } from '../engine/index.js';
import {
  add, attentionMasked, attentionVarlen, dropout, gelu, matmul, mul, packBatch, packRows, permute, refAttentionMasked,
  refAttentionMaskedGrad, refAttentionVarlen, refAttentionVarlenGrad, refLayerNorm, refLayerNormGrad, refMatmul, refMatmulGrad,
  refUnary, refUnaryGrad, softmax, type AttentionOptions, type PackedBatch,
} from '../kernels/index.js';
import { Dropout, LayerNorm, Linear, Module } from '../models/nn.js';
import { beautyLikeBatch, engineVariant, GRAD_TOL, maxAbs, tfjsVariant, validateClose, type HostTensor, type TfT } from './common.js';
import type { Tfjs } from './tfjs.js';
import type { BenchEntry, BenchSize, Instance, Outputs, Reference, Tol } from './types.js';

type F64 = ref.F64;

// ------------------------------------------------------------------ the kernel: fused vs composed vs tfjs
interface Cfg {
  /** 'real' = zero upstream gradient on pad rows, 'dense' = random everywhere. */
  grad: 'real' | 'dense';
  B: number;
  H: number;
  L: number;
  D: number;
  mode: 'finetune' | 'pretrain';
  causal: boolean;
  fill: number;
  p: number;
  /** Forward only (no grads, no dropout). */
  fwdOnly: boolean;
}

const SEED = 1234;
const DROP = { seed: 99, offset: 7 };
const TOL = { atol: 1e-5, rtol: 1e-4 };
// The composition (like the official code and tfjs) adds the fill in f32: in a row whose keys are all masked
// (the pad rows of causal fine-tuning batches) s - 10000 keeps only ~1e-3 of each score, so those rows differ
// from the exact value by ~1e-4 (the fused kernel removes the common shift first: see its header).
const ROUNDED = { atol: 1e-3, rtol: 1e-3 };

const shapeStr = (c: Cfg): string =>
  `B${c.B} H${c.H} L${c.L} D${c.D} ${c.causal ? 'causal' : 'bidir'} fill${c.fill} p${c.p}${c.fwdOnly ? ' fwd' : ` fwd+bwd (${c.grad} dO)`}`;

interface In {
  q: HostTensor;
  k: HostTensor;
  v: HostTensor;
  gy: HostTensor;
  ids: HostTensor;
  /** The additive mask [B, 1, L, L] exactly as the official code builds it: (1 - pad*causal) * fill. */
  mask: HostTensor;
}

function inputs(c: Cfg): In {
  const rnd = ref.mulberry32(SEED);
  const shape = [c.B, c.H, c.L, c.D];
  const mk = (): HostTensor => ({ data: Float32Array.from({ length: c.B * c.H * c.L * c.D }, () => rnd() * 2 - 1), shape: [...shape] });
  const ids = beautyLikeBatch(c.B, c.L, SEED, c.mode);
  const gy = mk();
  if (c.grad === 'real') {
    for (let r = 0; r < c.B * c.H * c.L; r++) {
      const b = Math.floor(r / (c.H * c.L));
      if (ids[b * c.L + (r % c.L)] === 0) gy.data.fill(0, r * c.D, (r + 1) * c.D);
    }
  }
  const m = new Float32Array(c.B * c.L * c.L);
  for (let b = 0; b < c.B; b++) {
    for (let i = 0; i < c.L; i++) {
      for (let j = 0; j < c.L; j++) m[(b * c.L + i) * c.L + j] = ids[b * c.L + j]! > 0 && (!c.causal || j <= i) ? 0 : c.fill;
    }
  }
  return { q: mk(), k: mk(), v: mk(), gy, ids: { data: ids, shape: [c.B, c.L] }, mask: { data: m, shape: [c.B, 1, c.L, c.L] } };
}

const f64 = (x: HostTensor): F64 => ({ data: Float64Array.from(x.data), shape: [...x.shape] });

function reference(c: Cfg, h: In, p: number): Reference {
  const ids = f64(h.ids);
  const o = { causal: c.causal, fill: c.fill, dropout: p, ...DROP };
  const out = refAttentionMasked(f64(h.q), f64(h.k), f64(h.v), ids, o).data;
  if (c.fwdOnly) return { out };
  const [dq, dk, dv] = refAttentionMaskedGrad(f64(h.q), f64(h.k), f64(h.v), ids, f64(h.gy), o);
  return { out, dq: dq.data, dk: dk.data, dv: dv.data };
}

function kernelEntry(c: Cfg, suffix = '', withTfjs = true): BenchEntry<In> {
  const grads = c.fwdOnly ? [] : ['q', 'k', 'v'];
  const tensors = (h: In): Record<string, Tensor> => ({
    q: Tensor.from(h.q.data, h.q.shape), // [B, H, L, D]
    k: Tensor.from(h.k.data, h.k.shape),
    v: Tensor.from(h.v.data, h.v.shape),
    gy: Tensor.from(h.gy.data, h.gy.shape),
    ids: Tensor.from(h.ids.data, h.ids.shape, 'i32'), // [B, L]
    mask: Tensor.from(h.mask.data, h.mask.shape), // [B, 1, L, L] (composed only)
  });
  const tfAttn =
    (p: number) =>
    (tf: Tfjs, t: Record<string, TfT>): TfT => {
      const z = tf.add(tf.mul(tf.matMul(t.q!, t.k!, false, true), 1 / Math.sqrt(c.D)), t.mask!); // [B, H, L, L]
      const pr = tf.softmax(z); // [B, H, L, L]
      return tf.matMul(p > 0 ? tf.dropout(pr, p) : pr, t.v!); // [B, H, L, D]
    };
  const gradTol = (t: Tol): Record<string, Tol> => ({ out: t, dq: t === TOL ? GRAD_TOL : t, dk: t === TOL ? GRAD_TOL : t, dv: t === TOL ? GRAD_TOL : t });
  return {
    op: 'attention_masked',
    shape: shapeStr(c),
    dims: { B: c.B, H: c.H, L: c.L, D: c.D },
    flops: (c.fwdOnly ? 4 : 12) * c.B * c.H * c.L * c.L * c.D, // forward QKᵀ, PV; backward dQ, dK, dV, dP
    bytes: 4 * c.B * c.H * c.L * c.D * (c.fwdOnly ? 4 : 8), // q, k, v, out (+ dout, dq, dk, dv) once
    inputs: () => inputs(c),
    reference: (h, key) => reference(c, h, key === 'p0' ? 0 : c.p),
    tol: gradTol(TOL),
    variants: [
      engineVariant(`fused${suffix}`, 'fused', {
        tensors,
        grads,
        gy: 'gy',
        forward: ({ q, k, v, ids }) => attentionMasked(q!, k!, v!, ids!, { causal: c.causal, fill: c.fill, dropout: c.p, ...DROP }), // [B, H, L, D]
      }),
      engineVariant(`composed${suffix}`, 'composed', {
        tensors,
        grads,
        gy: 'gy',
        tol: gradTol(ROUNDED),
        forward: ({ q, k, v, mask }) => {
          const z = add(mul(matmul(q!, k!, { transB: true }), 1 / Math.sqrt(c.D)), mask!); // [B, H, L, L]
          const pr = softmax(z); // [B, H, L, L]
          const pd = c.p > 0 ? dropout(pr, { p: c.p, ...DROP }) : pr; // [B, H, L, L] (the fused kernel's mask)
          return matmul(pd, v!); // [B, H, L, D]
        },
      }),
      ...(withTfjs
        ? [tfjsVariant<In>({ grads, gy: 'gy', forward: tfAttn(c.p), validateForward: tfAttn(0), refKey: 'p0', tol: gradTol(ROUNDED) }, `tfjs${suffix}`)]
        : []),
    ],
  };
}

// ------------------------------------------------------------------ encoder layer: varlen vs padded
const HID = 64;
const FFN = 256;

/** One S3-Rec encoder layer (modules.Layer: post-LN attention block + FFN), hidden 64, 2 heads, FFN 256. */
class EncoderLayer extends Module {
  readonly query = this.registerModule('query', new Linear(HID, HID));
  readonly key = this.registerModule('key', new Linear(HID, HID));
  readonly value = this.registerModule('value', new Linear(HID, HID));
  readonly dense = this.registerModule('dense', new Linear(HID, HID));
  readonly ln1 = this.registerModule('ln1', new LayerNorm(HID));
  readonly dense1 = this.registerModule('dense1', new Linear(HID, FFN));
  readonly dense2 = this.registerModule('dense2', new Linear(FFN, HID));
  readonly ln2 = this.registerModule('ln2', new LayerNorm(HID));
  readonly drop = this.registerModule('drop', new Dropout(0.5));

  /** x [N, 64] tokens (padded N = B*L or packed N = T); attn maps q, k, v [N, 64] to the context [N, 64]. */
  forward(x: Tensor, attn: (q: Tensor, k: Tensor, v: Tensor) => Tensor): Tensor {
    const ctx = attn(this.query.forward(x), this.key.forward(x), this.value.forward(x)); // [N, 64]
    const a = this.ln1.forward(add(this.drop.forward(this.dense.forward(ctx)), x)); // [N, 64]
    const f = this.dense2.forward(gelu(this.dense1.forward(a))); // [N, 64]
    return this.ln2.forward(add(this.drop.forward(f), a)); // [N, 64]
  }
}

/** Parameter names and shapes of EncoderLayer (its stateDict order). */
const ENC_PARAMS: Array<[string, number[]]> = [
  ...['query', 'key', 'value', 'dense'].flatMap((n): Array<[string, number[]]> => [[`${n}.weight`, [HID, HID]], [`${n}.bias`, [HID]]]),
  ['ln1.weight', [HID]], ['ln1.bias', [HID]],
  ['dense1.weight', [FFN, HID]], ['dense1.bias', [FFN]],
  ['dense2.weight', [HID, FFN]], ['dense2.bias', [HID]],
  ['ln2.weight', [HID]], ['ln2.bias', [HID]],
];

interface Enc {
  B: number;
  L: number;
  H: number;
  D: number;
}

interface EncIn {
  e: Enc;
  ids: Int32Array; // [B*L]
  x: Float32Array; // [B*L, 64] layer input; pad rows random too, as in the official code
  gy: Float32Array; // [B*L, 64] upstream gradient, 0 on pad rows (the loss reads real positions only)
  weights: Map<string, Float32Array>;
  /** Real lengths and the padded slot of each packed token. */
  lengths: number[];
  padIndex: Int32Array;
}

const encMemo = new Map<string, EncIn>();
function encInputs(e: Enc): EncIn {
  const key = JSON.stringify(e);
  let h = encMemo.get(key);
  if (h) return h;
  const { B, L } = e;
  const ids = beautyLikeBatch(B, L, SEED, 'finetune');
  const rnd = ref.mulberry32(SEED + 1);
  const x = Float32Array.from({ length: B * L * HID }, () => rnd() * 2 - 1);
  const gy = Float32Array.from({ length: B * L * HID }, (_, i) => (ids[Math.floor(i / HID)] !== 0 ? rnd() * 2 - 1 : 0));
  const wr = ref.mulberry32(7);
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of ENC_PARAMS) {
    const n = shape.reduce((a, b) => a * b, 1);
    const bound = 1 / Math.sqrt(shape.length === 2 ? shape[1]! : HID);
    const base = name.startsWith('ln') && name.endsWith('weight') ? 1 : 0;
    const s = name.startsWith('ln') ? 0.1 : bound;
    weights.set(name, Float32Array.from({ length: n }, () => base + (wr() * 2 - 1) * s));
  }
  const lengths: number[] = [];
  const pads: number[] = [];
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let s = 0; s < L; s++) {
      if (ids[b * L + s] !== 0) {
        n++;
        pads.push(b * L + s);
      }
    }
    lengths.push(n);
  }
  h = { e, ids, x, gy, weights, lengths, padIndex: Int32Array.from(pads) };
  encMemo.set(key, h);
  return h;
}

/** Rows [T, C] of a padded [B*L, C] host array at the real slots. */
const realRows = (a: ArrayLike<number>, padIndex: Int32Array, C: number): Float64Array => {
  const out = new Float64Array(padIndex.length * C);
  padIndex.forEach((s, t) => {
    for (let c = 0; c < C; c++) out[t * C + c] = a[s * C + c]!;
  });
  return out;
};

const refMemo = new Map<string, Reference>();
/**
 * The layer in float64 on the packed real rows (dropout off): the kernels' references composed (refMatmul,
 * refAttentionVarlen, refLayerNorm, refUnary gelu) and their gradients chained by hand. Pad rows contribute
 * nothing to either path (their upstream gradient is 0, masked keys underflow), so these are also the padded
 * layer's values on the real rows.
 */
function encReference(h: EncIn): Reference {
  const key = JSON.stringify(h.e);
  const memo = refMemo.get(key);
  if (memo) return memo;
  const { H, D, L } = h.e;
  const T = h.padIndex.length;
  const W = (n: string): F64 => ({ data: Float64Array.from(h.weights.get(n)!), shape: ENC_PARAMS.find(([k]) => k === n)![1] });
  const mat = (data: Float64Array, cols: number): F64 => ({ data, shape: [data.length / cols, cols] });
  const linear = (x: F64, n: string): F64 => {
    const y = refMatmul(x, W(`${n}.weight`), { transB: true }); // [T, out]
    const b = W(`${n}.bias`).data;
    for (let i = 0; i < y.data.length; i++) y.data[i]! += b[i % b.length]!;
    return y;
  };
  const linearGrad = (x: F64, n: string, g: F64): { dx: F64; dw: Float64Array; db: Float64Array } => {
    const [dx, dw] = refMatmulGrad(x, W(`${n}.weight`), g, { transB: true });
    const cols = g.shape[1]!;
    const db = new Float64Array(cols);
    for (let i = 0; i < g.data.length; i++) db[i % cols]! += g.data[i]!;
    return { dx, dw: dw.data, db };
  };
  const addF = (a: F64, b: F64): F64 => ({ data: a.data.map((v, i) => v + b.data[i]!), shape: [...a.shape] });
  const heads = (x: F64): F64 => ({ data: x.data, shape: [T, H, D] });
  const o = { causal: true, fill: -10000, dropout: 0 };
  const x = mat(realRows(h.x, h.padIndex, HID), HID);
  const gy = mat(realRows(h.gy, h.padIndex, HID), HID);
  // forward
  const q = linear(x, 'query');
  const k = linear(x, 'key');
  const v = linear(x, 'value');
  const ctx = mat(refAttentionVarlen(heads(q), heads(k), heads(v), h.lengths, L, o).data, HID);
  const aPre = addF(linear(ctx, 'dense'), x);
  const a = refLayerNorm(aPre, W('ln1.weight'), W('ln1.bias'));
  const f1 = linear(a, 'dense1');
  const g1 = refUnary('gelu', f1);
  const zPre = addF(linear(g1, 'dense2'), a);
  const y = refLayerNorm(zPre, W('ln2.weight'), W('ln2.bias'));
  // backward
  const grads = new Map<string, Float64Array>();
  const [dz, dln2w, dln2b] = refLayerNormGrad(zPre, W('ln2.weight'), W('ln2.bias'), gy);
  grads.set('ln2.weight', dln2w.data).set('ln2.bias', dln2b.data);
  const l2 = linearGrad(g1, 'dense2', dz);
  grads.set('dense2.weight', l2.dw).set('dense2.bias', l2.db);
  const df1 = refUnaryGrad('gelu', f1, l2.dx);
  const l1 = linearGrad(a, 'dense1', df1);
  grads.set('dense1.weight', l1.dw).set('dense1.bias', l1.db);
  const da = addF(dz, l1.dx);
  const [daPre, dln1w, dln1b] = refLayerNormGrad(aPre, W('ln1.weight'), W('ln1.bias'), da);
  grads.set('ln1.weight', dln1w.data).set('ln1.bias', dln1b.data);
  const ld = linearGrad(ctx, 'dense', daPre);
  grads.set('dense.weight', ld.dw).set('dense.bias', ld.db);
  const [dq, dk, dv] = refAttentionVarlenGrad(heads(q), heads(k), heads(v), h.lengths, L, heads(ld.dx), o);
  for (const [n, g] of [['query', dq], ['key', dk], ['value', dv]] as const) {
    const lg = linearGrad(x, n, mat(g.data, HID));
    grads.set(`${n}.weight`, lg.dw).set(`${n}.bias`, lg.db);
  }
  const r: Reference = { out: y.data };
  for (const [n] of ENC_PARAMS) r[`g:${n}`] = grads.get(n)!;
  refMemo.set(key, r);
  return r;
}

/**
 * Output on the real rows and every parameter gradient. A gradient's absolute tolerance scales with its own size
 * plus 1e-5 of the largest gradient (the key bias's gradient is exactly 0 in theory: f32 leaves ~1e-7 of noise).
 */
function encCheck(what: string, got: Outputs, want: Reference): void {
  validateClose(`${what} output (real rows)`, got.out!, want.out as Float64Array, { atol: 2e-4, rtol: 1e-3 });
  const G = Math.max(...ENC_PARAMS.map(([n]) => maxAbs(want[`g:${n}`] as Float64Array)));
  for (const [n] of ENC_PARAMS) {
    const w = want[`g:${n}`] as Float64Array;
    validateClose(`${what} gradient ${n}`, got[`g:${n}`]!, w, { atol: 2e-4 * maxAbs(w) + 1e-5 * G, rtol: 2e-3 });
  }
}

type AttnMode = 'padded' | 'varlen';

/** The layer's attention on padded tokens ([B*L, 64] -> [B, H, L, D] and back) or packed ones ([T, 64] = [T, H, D]). */
function layerAttention(e: Enc, mode: AttnMode, ids: Tensor, pb: PackedBatch, p: number) {
  const { B, L, H, D } = e;
  const o: AttentionOptions = { causal: true, fill: -10000, dropout: p };
  if (mode === 'varlen') {
    return (q: Tensor, k: Tensor, v: Tensor): Tensor => {
      const t = (z: Tensor): Tensor => reshape(z, [pb.T, H, D]); // [T, H, D]
      return reshape(attentionVarlen(t(q), t(k), t(v), pb, o), [pb.T, H * D]); // [T, 64]
    };
  }
  return (q: Tensor, k: Tensor, v: Tensor): Tensor => {
    const t = (z: Tensor): Tensor => permute(reshape(z, [B, L, H, D]), [0, 2, 1, 3]); // [B, H, L, D]
    const c = attentionMasked(t(q), t(k), t(v), ids, o); // [B, H, L, D]
    return reshape(permute(c, [0, 2, 1, 3]), [B * L, H * D]); // [B*L, 64]
  };
}

function encoderEntry(e: Enc, mode: AttnMode): BenchEntry<EncIn> {
  const { B, L } = e;
  const h0 = encInputs(e);
  const N = mode === 'varlen' ? h0.padIndex.length : B * L;
  return {
    op: 'attention_masked',
    shape: `encoder layer B${B} L${L} H${HID} (${N} tokens of ${B * L}) p0.5 fwd+bwd`,
    dims: { B, L, H: HID, tokens: N },
    // FLOPs of the layer's matmuls only (QKV + out 4·64·64, FFN 2·64·256 per token; x2 per MAC, x3 fwd+bwd)
    flops: 3 * 2 * N * (4 * HID * HID + 2 * HID * FFN),
    inputs: () => encInputs(e),
    reference: (h) => encReference(h),
    check: encCheck,
    variants: [
      {
        name: mode,
        kind: mode === 'varlen' ? 'fused' : 'alt',
        setup(h): Instance {
          manualSeed(7);
          const layer = new EncoderLayer();
          layer.loadStateDict(new Map([...h.weights].map(([k, v]) => [k, { dtype: 'f32' as const, shape: ENC_PARAMS.find(([n]) => n === k)![1], data: v }])));
          const ids = Tensor.from(h.ids, [B, L], 'i32'); // [B, L]
          const pb = packBatch(h.ids, B, L);
          const padX = Tensor.from(h.x, [B * L, HID]); // [B*L, 64]
          const padGy = Tensor.from(h.gy, [B * L, HID]); // [B*L, 64]
          const x = mode === 'varlen' ? noGrad(() => packRows(padX, pb)) : padX; // [N, 64]
          const gy = mode === 'varlen' ? noGrad(() => packRows(padGy, pb)) : padGy; // [N, 64]
          let out: Tensor | null = null;
          const step = (p: number): void => {
            out?.dispose();
            layer.zeroGrad();
            layer.train(p > 0);
            out = layer.forward(x, layerAttention(e, mode, ids, pb, p)); // [N, 64]
            backward(out, gy);
          };
          return {
            run: () => step(0.5),
            async outputs() {
              step(0); // the reference has dropout off (the hidden dropout masks are indexed by row)
              const y = await out!.toArray();
              const r: Outputs = { out: mode === 'varlen' ? y : realRows(y, h.padIndex, HID) };
              for (const [n, t] of layer.stateDict()) r[`g:${n}`] = await t.grad!.toArray();
              return r;
            },
            dispose() {
              out?.dispose();
              layer.zeroGrad();
              layer.dispose();
              for (const t of new Set([ids, padX, padGy, x, gy])) t.dispose();
              pb.dispose();
            },
          };
        },
      },
    ],
  };
}

/** The fused kernel alone on the same batch: varlen vs padded, q, k, v from the same padded rows. */
function kernelVarlenEntry(e: Enc): BenchEntry<In> {
  const { B, L, H, D } = e;
  const c: Cfg = { grad: 'real', B, H, L, D, mode: 'finetune', causal: true, fill: -10000, p: 0.5, fwdOnly: false };
  const o: AttentionOptions = { causal: true, fill: -10000, dropout: 0.5, ...DROP };
  const h0 = encInputs(e);
  /** Packed [T, H, D] rows of a padded [B, H, L, D] array (token order of packBatch: sequence, then slot). */
  const pack = (a: ArrayLike<number>): Float64Array => {
    const out = new Float64Array(h0.padIndex.length * H * D);
    h0.padIndex.forEach((s, t) => {
      const b = Math.floor(s / L);
      const slot = s % L;
      for (let hh = 0; hh < H; hh++) for (let d = 0; d < D; d++) out[(t * H + hh) * D + d] = a[((b * H + hh) * L + slot) * D + d]!;
    });
    return out;
  };
  const variant = (mode: AttnMode) => ({
    name: mode === 'varlen' ? 'fused_varlen' : 'fused_padded',
    kind: mode === 'varlen' ? ('fused' as const) : ('alt' as const),
    setup(h: In): Instance {
      const pb = packBatch(h.ids.data, B, L);
      const ids = Tensor.from(h.ids.data, [B, L], 'i32'); // [B, L]
      const shape = mode === 'varlen' ? [pb.T, H, D] : [B, H, L, D];
      const up = (x: HostTensor): Tensor => Tensor.from(mode === 'varlen' ? Float32Array.from(pack(x.data)) : x.data, shape);
      const [q, k, v] = [up(h.q).requireGrad(), up(h.k).requireGrad(), up(h.v).requireGrad()]; // [T, H, D] | [B, H, L, D]
      const gy = up(h.gy);
      let out: Tensor | null = null;
      const run = (): void => {
        out?.dispose();
        for (const t of [q, k, v]) {
          t.grad?.dispose();
          t.grad = null;
        }
        out = mode === 'varlen' ? attentionVarlen(q, k, v, pb, o) : attentionMasked(q, k, v, ids, o);
        backward(out, gy);
      };
      const read = async (t: Tensor): Promise<ArrayLike<number>> => (mode === 'varlen' ? await t.toArray() : pack(await t.toArray()));
      return {
        run,
        async outputs() {
          run();
          return { out: await read(out!), dq: await read(q.grad!), dk: await read(k.grad!), dv: await read(v.grad!) };
        },
        dispose() {
          out?.dispose();
          for (const t of [q, k, v, gy, ids]) {
            t.grad?.dispose();
            t.dispose();
          }
          pb.dispose();
        },
      };
    },
  });
  return {
    op: 'attention_masked',
    shape: `kernel only B${B} H${H} L${L} D${D} causal p0.5 fwd+bwd (real dO), Beauty-like lengths`,
    dims: { B, H, L, D, tokens: h0.padIndex.length },
    flops: 12 * B * H * L * L * D,
    inputs: () => inputs(c), // the layer batch's ids (same generator and seed), fresh q, k, v, dO (0 on pad rows)
    reference: (h) => {
      const r = reference({ ...c, grad: 'real' }, h, 0.5);
      return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, pack(v as Float64Array)]));
    },
    tol: { out: TOL, dq: GRAD_TOL, dk: GRAD_TOL, dv: GRAD_TOL },
    variants: [variant('varlen'), variant('padded')],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  const tiny = size === 'tiny';
  const FT: Cfg = { grad: 'real', B: tiny ? 6 : 256, H: 2, L: tiny ? 12 : 50, D: tiny ? 8 : 32, mode: 'finetune', causal: true, fill: -10000, p: 0.5, fwdOnly: false };
  const PT: Cfg = { ...FT, B: tiny ? 5 : 100, mode: 'pretrain', causal: false, fill: -1e8 };
  const EVAL: Cfg = { ...FT, p: 0, fwdOnly: true };
  const ENC: Enc = { B: tiny ? 6 : 256, L: tiny ? 12 : 50, H: 2, D: 32 };
  return [
    kernelEntry(FT),
    kernelEntry({ ...FT, grad: 'dense' }, '', false),
    kernelEntry(PT),
    kernelEntry(EVAL, '_fwd'),
    encoderEntry(ENC, 'varlen'),
    encoderEntry(ENC, 'padded'),
    kernelVarlenEntry({ ...ENC, D: tiny ? 8 : 32 }),
  ];
}
