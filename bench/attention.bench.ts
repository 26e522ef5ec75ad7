// Masked multi-head attention at the S3-Rec shapes, forward + backward (one training step's attention):
//   attention.fused        kernels/attention_masked.ts: 1 forward dispatch, 2 backward dispatches
//   attention.composed     the same math from this engine's unfused ops: matmul(q, kᵀ), mul(scale), add(additive
//                          mask [B, 1, L, L], built once from the ids as the official code does), softmax,
//                          dropout, matmul(P, v); autograd backward
//   attention.tfjs         @tensorflow/tfjs-backend-webgpu composing the same math (tf.dropout draws its mask on
//                          the host, as tfjs does), tf.valueAndGrads, on the same adapter
//   *_fwd rows             forward only, no dropout (evaluation)
// Shapes: fine-tuning B=256 H=2 L=50 D=32, causal, fill -1e4, attention dropout 0.5; pretraining B=100,
// bidirectional, fill -1e8. Ids (padding) come from Beauty's real sequences (fine-tuning: items[:-3], last 50;
// pretraining: prefixes of them), left padded. validate() checks forward and dq, dk, dv against the float64
// reference (tfjs without dropout: its mask comes from its own RNG).
// The upstream gradient is a real step's (zero on pad rows: S3-Rec's losses read real positions only and every op
// after attention is per-token) except in the "dense dO" rows (random everywhere, pad rows included).
// Encoder rows (attention.varlen vs attention.padded): one S3-Rec encoder layer (QKV, attention, out-projection,
// residual + LayerNorm, FFN 64->256->64 GELU, residual + LayerNorm), forward + backward, on packed tokens vs
// the padded [B*50] tokens, on Beauty fine-tuning batches; validate() checks varlen == padded on real positions
// (output and every parameter gradient). attention.fused_varlen / fused_padded: the kernel alone on that batch.
// Measured numbers and the variant choices they drove: kernels/attention_masked.ts header.
import { readFileSync } from 'node:fs';
import { backward, manualSeed, noGrad, ref, reshape, scope, Tensor } from '../engine/index.js';
import { attentionMasked, attentionVarlen, refAttentionMasked, refAttentionMaskedGrad, type AttentionOptions } from '../kernels/attention_masked.js';
import { dropout } from '../kernels/dropout.js';
import { add, gelu, mul } from '../kernels/elementwise.js';
import { matmul } from '../kernels/matmul.js';
import { permute } from '../kernels/shape.js';
import { softmax } from '../kernels/softmax.js';
import { packBatch, packRows, type PackedBatch } from '../kernels/varlen.js';
import { Dropout, LayerNorm, Linear, Module } from '../models/nn.js';
import { validateClose } from './common.js';
import { getTfjs, type Tfjs } from './tfjs.js';
import type { BenchCase, BenchInstance } from './types.js';

type F64 = ref.F64;
type TfT = ReturnType<Tfjs['tensor']>;

// ------------------------------------------------------------------ Beauty batches
const BEAUTY = new URL('../../shared/data/s3rec/Beauty.txt', import.meta.url);
let beautyCache: number[][] | null = null;

/** Every user's item sequence (oldest first), from ../shared/data/s3rec/Beauty.txt. */
export function beautySequences(): number[][] {
  if (!beautyCache) {
    let text: string;
    try {
      text = readFileSync(BEAUTY, 'utf8');
    } catch (e) {
      throw new Error(`attention bench: cannot read Beauty's sequences at ${BEAUTY.pathname} (${(e as Error).message})`);
    }
    beautyCache = text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => l.trim().split(/\s+/).slice(1).map(Number));
  }
  return beautyCache;
}

/**
 * A seeded batch of left-padded ids [B*L]: fine-tuning inputs items[:-3] truncated to the last L (S3REC_SPEC §2),
 * or (pretraining) a random prefix of the last L items of items[:-2].
 */
export function beautyBatch(B: number, L: number, seed: number, mode: 'finetune' | 'pretrain' = 'finetune'): Int32Array {
  const seqs = beautySequences();
  const rnd = ref.mulberry32(seed);
  const ids = new Int32Array(B * L);
  for (let b = 0; b < B; b++) {
    const items = seqs[Math.floor(rnd() * seqs.length)]!;
    let x = mode === 'finetune' ? items.slice(0, -3).slice(-L) : items.slice(0, -2).slice(-L);
    if (mode === 'pretrain') x = x.slice(0, 1 + Math.floor(rnd() * x.length));
    ids.set(x, b * L + L - x.length);
  }
  return ids;
}

// ------------------------------------------------------------------ cases
interface Cfg {
  /** Upstream gradient: 'real' = zero on pad rows (S3-Rec's losses read real positions only and every op after
   * attention is per-token, so pad rows never get gradient), 'dense' = random everywhere. */
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

const FT: Cfg = { grad: 'real', B: 256, H: 2, L: 50, D: 32, mode: 'finetune', causal: true, fill: -10000, p: 0.5, fwdOnly: false };
const PT: Cfg = { grad: 'real', B: 100, H: 2, L: 50, D: 32, mode: 'pretrain', causal: false, fill: -1e8, p: 0.5, fwdOnly: false };
const EVAL: Cfg = { ...FT, p: 0, fwdOnly: true };

const shapeStr = (c: Cfg): string =>
  `B${c.B} H${c.H} L${c.L} D${c.D} ${c.causal ? 'causal' : 'bidir'} fill${c.fill} p${c.p}${c.fwdOnly ? ' fwd' : ` fwd+bwd (${c.grad} dO)`}`;
/** Dense FLOPs: forward 4·B·H·L²·D (QKᵀ, PV), backward 8·B·H·L²·D (dQ, dK, dV, dP). */
const flops = (c: Cfg): number => (c.fwdOnly ? 4 : 12) * c.B * c.H * c.L * c.L * c.D;
/** Minimum traffic of the fused kernels: q, k, v, out (+ dout, dq, dk, dv) once. */
const bytes = (c: Cfg): number => 4 * c.B * c.H * c.L * c.D * (c.fwdOnly ? 4 : 8);

const SEED = 1234;
const DROP = { seed: 99, offset: 7 };

interface Host {
  q: F64;
  k: F64;
  v: F64;
  gy: F64;
  ids: Int32Array;
}

function host(c: Cfg): Host {
  const rnd = ref.mulberry32(SEED);
  const shape = [c.B, c.H, c.L, c.D];
  const mk = (): F64 => ({ data: Float64Array.from({ length: c.B * c.H * c.L * c.D }, () => Math.fround(rnd() * 2 - 1)), shape: [...shape] });
  const ids = beautyBatch(c.B, c.L, SEED, c.mode);
  const gy = mk();
  if (c.grad === 'real') {
    for (let r = 0; r < c.B * c.H * c.L; r++) {
      const b = Math.floor(r / (c.H * c.L));
      if (ids[b * c.L + (r % c.L)] === 0) gy.data.fill(0, r * c.D, (r + 1) * c.D);
    }
  }
  return { q: mk(), k: mk(), v: mk(), gy, ids };
}

const refOpts = (c: Cfg, p = c.p) => ({ causal: c.causal, fill: c.fill, dropout: p, ...DROP });
const f32 = (x: F64): Tensor => Tensor.from(Float32Array.from(x.data), x.shape);
const TOL = { atol: 1e-5, rtol: 1e-4 };
const GTOL = { atol: 1e-4, rtol: 1e-3 };

let refMemo: { key: string; out: F64; grads: F64[] } | null = null;
/** The float64 reference (memoised: fused and composed validate against the same one). */
function reference(c: Cfg, h: Host, p = c.p): { out: F64; grads: F64[] } {
  const key = `${shapeStr(c)} p${p}`;
  if (refMemo?.key !== key) {
    const ids = { data: Float64Array.from(h.ids), shape: [c.B, c.L] };
    const o = refOpts(c, p);
    refMemo = {
      key,
      out: refAttentionMasked(h.q, h.k, h.v, ids, o),
      grads: c.fwdOnly ? [] : refAttentionMaskedGrad(h.q, h.k, h.v, ids, h.gy, o),
    };
  }
  return refMemo;
}

/** The additive mask [B, 1, L, L] exactly as the official code builds it: (1 - pad*causal) * fill. */
function additiveMask(c: Cfg, ids: Int32Array): Float32Array {
  const m = new Float32Array(c.B * c.L * c.L);
  for (let b = 0; b < c.B; b++) {
    for (let i = 0; i < c.L; i++) {
      for (let j = 0; j < c.L; j++) {
        const keep = ids[b * c.L + j]! > 0 && (!c.causal || j <= i);
        m[(b * c.L + i) * c.L + j] = keep ? 0 : c.fill;
      }
    }
  }
  return m;
}

type Forward = (q: Tensor, k: Tensor, v: Tensor, ids: Tensor, mask: Tensor) => Tensor;

function engineCase(name: string, c: Cfg, forward: Forward, tol = TOL, gtol = GTOL): BenchCase {
  return {
    name,
    shape: shapeStr(c),
    flops: flops(c),
    bytes: bytes(c),
    setup(): BenchInstance {
      const h = host(c);
      const [q, k, v] = [f32(h.q), f32(h.k), f32(h.v)]; // [B, H, L, D]
      if (!c.fwdOnly) for (const t of [q, k, v]) t.requireGrad();
      const gy = f32(h.gy); // [B, H, L, D]
      const ids = Tensor.from(h.ids, [c.B, c.L], 'i32'); // [B, L]
      const mask = Tensor.from(additiveMask(c, h.ids), [c.B, 1, c.L, c.L]); // [B, 1, L, L] (composed only)
      let out: Tensor | null = null;
      const clear = (): void => {
        out?.dispose();
        out = null;
        for (const t of [q, k, v]) {
          t.grad?.dispose();
          t.grad = null;
        }
      };
      const run = (): void => {
        clear();
        if (c.fwdOnly) out = noGrad(() => forward(q, k, v, ids, mask));
        else {
          out = forward(q, k, v, ids, mask); // [B, H, L, D]
          backward(out, gy);
        }
      };
      return {
        run,
        async validate() {
          run();
          const want = reference(c, h);
          validateClose(`${name} forward`, await out!.toArray(), want.out.data, tol);
          if (!c.fwdOnly) {
            for (const [i, t] of [q, k, v].entries()) validateClose(`${name} grad ${'qkv'[i]}`, await t.grad!.toArray(), want.grads[i]!.data, gtol);
          }
        },
        dispose() {
          clear();
          for (const t of [q, k, v, gy, ids, mask]) t.dispose();
        },
      };
    },
  };
}

const fusedForward =
  (c: Cfg): Forward =>
  (q, k, v, ids) => {
    const o: AttentionOptions = { causal: c.causal, fill: c.fill, dropout: c.p, ...DROP };
    return attentionMasked(q, k, v, ids, o); // [B, H, L, D]
  };

const composedForward =
  (c: Cfg): Forward =>
  (q, k, v, _ids, mask) => {
    const s = matmul(q, k, { transB: true }); // [B, H, L, L]
    const z = add(mul(s, 1 / Math.sqrt(c.D)), mask); // [B, H, L, L]
    const pr = softmax(z); // [B, H, L, L]
    const pd = c.p > 0 ? dropout(pr, { p: c.p, ...DROP }) : pr; // [B, H, L, L] (same mask as the fused kernel)
    return matmul(pd, v); // [B, H, L, D]
  };

function tfjsCase(c: Cfg): BenchCase {
  return {
    name: c.fwdOnly ? 'attention.tfjs_fwd' : 'attention.tfjs',
    shape: shapeStr(c),
    flops: flops(c),
    bytes: bytes(c),
    async setup(): Promise<BenchInstance> {
      const tf = await getTfjs();
      const h = host(c);
      const shape = [c.B, c.H, c.L, c.D] as [number, number, number, number];
      const [q, k, v, gy] = [h.q, h.k, h.v, h.gy].map((x) => tf.tensor4d(Float32Array.from(x.data), shape)) as [TfT, TfT, TfT, TfT];
      const mask = tf.tensor4d(additiveMask(c, h.ids), [c.B, 1, c.L, c.L]); // [B, 1, L, L]
      const scale = 1 / Math.sqrt(c.D);
      const attn =
        (p: number) =>
        (...[qq, kk, vv]: TfT[]): TfT => {
          const z = tf.add(tf.mul(tf.matMul(qq!, kk!, false, true), scale), mask); // [B, H, L, L]
          const pr = tf.softmax(z); // [B, H, L, L]
          return tf.matMul(p > 0 ? tf.dropout(pr, p) : pr, vv!); // [B, H, L, D]
        };
      const mk = (p: number): (() => TfT[]) => {
        const f = attn(p);
        const vg = tf.valueAndGrads(f);
        return () => {
          if (c.fwdOnly) return [f(q, k, v)];
          const { value, grads } = vg([q, k, v], gy);
          return [value, ...grads];
        };
      };
      const step = mk(c.p);
      let outs: TfT[] = [];
      const runWith = async (f: () => TfT[]): Promise<void> => {
        for (const t of outs) t.dispose();
        outs = tf.tidy(f);
        // tfjs records lazily: reading one value forces the whole graph onto the GPU queue.
        await outs[outs.length - 1]!.data();
      };
      return {
        run: () => runWith(step),
        async validate() {
          await runWith(mk(0)); // tfjs's dropout mask comes from its own RNG: check the math without it
          const want = reference(c, h, 0);
          const vals = await Promise.all(outs.map(async (t) => await t.data()));
          validateClose('attention.tfjs forward', vals[0]!, want.out.data, ROUNDED);
          for (let i = 1; i < vals.length; i++) validateClose(`attention.tfjs grad ${'qkv'[i - 1]}`, vals[i]!, want.grads[i - 1]!.data, ROUNDED);
        },
        dispose() {
          for (const t of [...outs, q, k, v, gy, mask]) t.dispose();
        },
      };
    },
  };
}

// The composition (like the official code and tfjs) adds the fill in f32: in a row whose keys are all masked
// (the pad rows of causal fine-tuning batches) s - 10000 keeps only ~1e-3 of each score, so those rows differ
// from the exact value by ~1e-4 (the fused kernel removes the common shift first: see its header).
const ROUNDED = { atol: 1e-3, rtol: 1e-3 };

const trio = (c: Cfg, suffix = ''): BenchCase[] => [
  engineCase(`attention.fused${suffix}`, c, fusedForward(c)),
  engineCase(`attention.composed${suffix}`, c, composedForward(c), ROUNDED, ROUNDED),
  tfjsCase(c),
];

// ------------------------------------------------------------------ encoder layer: varlen vs padded
/** One S3-Rec encoder layer (modules.Layer: post-LN attention block + FFN), hidden 64, 2 heads, FFN 256. */
class EncoderLayer extends Module {
  readonly query = this.registerModule('query', new Linear(64, 64));
  readonly key = this.registerModule('key', new Linear(64, 64));
  readonly value = this.registerModule('value', new Linear(64, 64));
  readonly dense = this.registerModule('dense', new Linear(64, 64));
  readonly ln1 = this.registerModule('ln1', new LayerNorm(64));
  readonly dense1 = this.registerModule('dense1', new Linear(64, 256));
  readonly dense2 = this.registerModule('dense2', new Linear(256, 64));
  readonly ln2 = this.registerModule('ln2', new LayerNorm(64));
  readonly drop = this.registerModule('drop', new Dropout(0.5));

  /** x [N, 64] tokens (padded N = B*L or packed N = T); attn maps q, k, v [N, 64] to the context [N, 64]. */
  forward(x: Tensor, attn: (q: Tensor, k: Tensor, v: Tensor) => Tensor): Tensor {
    const ctx = attn(this.query.forward(x), this.key.forward(x), this.value.forward(x)); // [N, 64]
    const a = this.ln1.forward(add(this.drop.forward(this.dense.forward(ctx)), x)); // [N, 64]
    const f = this.dense2.forward(gelu(this.dense1.forward(a))); // [N, 64]
    return this.ln2.forward(add(this.drop.forward(f), a)); // [N, 64]
  }
}

const ENC = { B: 256, L: 50, H: 2, D: 32 };

interface EncHost {
  ids: Int32Array; // [B*L]
  x: Float32Array; // [B*L, 64] layer input (embedding output); pad rows random too, as in the official code
  gy: Float32Array; // [B*L, 64] upstream gradient, 0 on pad rows (the loss reads real positions only)
}

function encHost(seed: number): EncHost {
  const { B, L } = ENC;
  const ids = beautyBatch(B, L, seed, 'finetune');
  const rnd = ref.mulberry32(seed + 1);
  const x = Float32Array.from({ length: B * L * 64 }, () => rnd() * 2 - 1);
  const gy = Float32Array.from({ length: B * L * 64 }, (_, i) => (ids[Math.floor(i / 64)] !== 0 ? rnd() * 2 - 1 : 0));
  return { ids, x, gy };
}

type AttnMode = 'padded' | 'varlen';

/** The layer's attention on padded tokens ([B*L, 64] -> [B, H, L, D] and back) or packed ones ([T, 64] = [T, H, D]). */
function layerAttention(mode: AttnMode, ids: Tensor, pb: PackedBatch, p: number) {
  const { B, L, H, D } = ENC;
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

function encoderCase(mode: AttnMode): BenchCase {
  const { B, L } = ENC;
  const h0 = encHost(SEED);
  const T = h0.ids.reduce((n, id) => n + (id !== 0 ? 1 : 0), 0);
  const N = mode === 'varlen' ? T : B * L;
  // FLOPs of the layer's matmuls only (QKV + out 4·64·64, FFN 2·64·256 per token; x2 per MAC, x3 fwd+bwd)
  return {
    name: `attention.${mode}`,
    shape: `encoder layer B${B} L${L} H64 (${N} tokens of ${B * L}) p0.5 fwd+bwd`,
    flops: 3 * 2 * N * (4 * 64 * 64 + 2 * 64 * 256),
    setup(): BenchInstance {
      const h = h0;
      manualSeed(7);
      const layer = new EncoderLayer();
      const ids = Tensor.from(h.ids, [B, L], 'i32'); // [B, L]
      const pb = packBatch(h.ids, B, L);
      const padX = Tensor.from(h.x, [B * L, 64]); // [B*L, 64]
      const padGy = Tensor.from(h.gy, [B * L, 64]); // [B*L, 64]
      const x = mode === 'varlen' ? noGrad(() => packRows(padX, pb)) : padX; // [N, 64]
      const gy = mode === 'varlen' ? noGrad(() => packRows(padGy, pb)) : padGy; // [N, 64]
      let out: Tensor | null = null;
      const clear = (): void => {
        out?.dispose();
        out = null;
        layer.zeroGrad();
      };
      const step = (p: number): void => {
        clear();
        layer.train(p > 0);
        out = layer.forward(x, layerAttention(mode, ids, pb, p)); // [N, 64]
        backward(out, gy);
      };
      return {
        run: () => step(0.5),
        async validate() {
          // varlen == padded on the real positions (dropout off: the hidden dropout masks are indexed by row)
          const other = mode === 'varlen' ? 'padded' : 'varlen';
          step(0);
          const got = { out: (await out!.toArray()) as Float32Array, grads: await Promise.all(layer.parameters().map((t) => t.grad!.toArray())) };
          const ox = other === 'varlen' ? noGrad(() => packRows(padX, pb)) : padX;
          const og = other === 'varlen' ? noGrad(() => packRows(padGy, pb)) : padGy;
          clear();
          const o2 = layer.forward(ox, layerAttention(other, ids, pb, 0));
          backward(o2, og);
          const want = { out: (await o2.toArray()) as Float32Array, grads: await Promise.all(layer.parameters().map((t) => t.grad!.toArray())) };
          o2.dispose();
          if (other === 'varlen') {
            ox.dispose();
            og.dispose();
          }
          const [vOut, pOut] = mode === 'varlen' ? [got.out, want.out] : [want.out, got.out];
          const real = Float32Array.from({ length: pb.T * 64 }, (_, i) => pOut[pb.plan.padIndex[Math.floor(i / 64)]! * 64 + (i % 64)]!);
          validateClose(`attention.${mode}: varlen output == padded output on real rows`, vOut, real, TOL);
          // weight gradients: pad rows contribute exactly 0 (zero upstream gradient, masked keys underflow)
          got.grads.forEach((g, i) => validateClose(`attention.${mode}: parameter ${i} gradient, varlen == padded`, g, want.grads[i]!, { atol: 1e-4, rtol: 1e-3 }));
          layer.zeroGrad();
        },
        dispose() {
          clear();
          layer.dispose();
          for (const t of new Set([ids, padX, padGy, x, gy])) t.dispose();
          pb.dispose();
        },
      };
    },
  };
}

/** The fused kernel alone on the same Beauty batch: varlen vs padded (q, k, v from the packed / padded rows). */
function kernelVarlenCase(mode: AttnMode): BenchCase {
  const { B, L, H, D } = ENC;
  const h0 = encHost(SEED);
  return {
    name: mode === 'varlen' ? 'attention.fused_varlen' : 'attention.fused_padded',
    shape: `kernel only B${B} H${H} L${L} D${D} causal p0.5 fwd+bwd (real dO), Beauty lengths`,
    setup(): BenchInstance {
      const ids = Tensor.from(h0.ids, [B, L], 'i32'); // [B, L]
      const pb = packBatch(h0.ids, B, L);
      const N = mode === 'varlen' ? pb.T : B * L;
      const rnd = ref.mulberry32(5);
      const mk = (): Tensor => Tensor.from(Float32Array.from({ length: N * H * D }, () => rnd() * 2 - 1), mode === 'varlen' ? [N, H, D] : [B, H, L, D]).requireGrad();
      const [q, k, v] = [mk(), mk(), mk()];
      // upstream gradient of a real step: zero on the padded layout's pad rows (varlen has none)
      const g = Float32Array.from({ length: N * H * D }, (_, i) => {
        const r = Math.floor(i / D); // varlen: t*H + h; padded: (b*H + h)*L + s
        return mode === 'varlen' || h0.ids[Math.floor(r / (H * L)) * L + (r % L)] !== 0 ? rnd() * 2 - 1 : 0;
      });
      const gy = Tensor.from(g, q.shape); // [T, H, D] | [B, H, L, D]
      const o: AttentionOptions = { causal: true, fill: -10000, dropout: 0.5 };
      let out: Tensor | null = null;
      return {
        run() {
          out?.dispose();
          for (const t of [q, k, v]) {
            t.grad?.dispose();
            t.grad = null;
          }
          out = mode === 'varlen' ? attentionVarlen(q, k, v, pb, o) : attentionMasked(q, k, v, ids, o);
          backward(out, gy);
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
  };
}

export const cases: BenchCase[] = [
  ...trio(FT),
  engineCase('attention.fused', { ...FT, grad: 'dense' }, fusedForward(FT)),
  engineCase('attention.composed', { ...FT, grad: 'dense' }, composedForward(FT), ROUNDED, ROUNDED),
  ...trio(PT),
  ...trio(EVAL, '_fwd'),
  encoderCase('varlen'),
  encoderCase('padded'),
  kernelVarlenCase('varlen'),
  kernelVarlenCase('padded'),
];
