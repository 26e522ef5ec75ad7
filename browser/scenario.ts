// What the browser page runs, shared with Node: the browser test (test/browser/run.ts) runs `runTraining()` in its
// own process on Node's adapter and compares the losses with the page's, so both sides execute this same code.
//  - kernel checks: a modest set of ops (forward and backward) against their float64 references, with inputs from a
//    seeded generator (the scheme of test/harness.ts, without vitest);
//  - tiny training runs with a fixed seed on synthetic data: S3-Rec (pretraining steps of the four objectives, then
//    fine-tuning steps) and AttRec, recording the loss of every step.
// Everything is imported from the package root ('../index.js'): the page bundle maps that import to the library
// bundle dist/browser/seqrec.js, so the page exercises the published browser bundle itself.
import { backward, F, flags, getGpu, manualSeed, models, ref, scope, sync, Tensor, zeros, type GpuInfo } from '../index.js';
import type { InputSpec, OpCase } from '../test/harness.js';

type F64 = ref.F64;
const { data } = models;

// ------------------------------------------------------------------------------------------------ kernel checks
export interface Tol {
  atol: number;
  rtol: number;
}
const FWD_TOL: Tol = { atol: 1e-5, rtol: 1e-4 };
const GRAD_TOL: Tol = { atol: 1e-4, rtol: 1e-3 };
const U = 2 ** -24;
/** Dot products of length L over values bounded by ma, mb (Higham's gamma_L bound, as test/matmul.test.ts). */
const dotTol = (L: number, ma: number, mb: number): Tol => ({ atol: Math.max(1e-5, 4 * U * L * ma * mb), rtol: 1e-4 });

/** The harness's case types (test/harness.ts; a type-only import: nothing of vitest reaches the bundle). */
type OpCheck = Pick<OpCase, 'name' | 'inputs' | 'run' | 'ref' | 'refGrad' | 'tol' | 'gradTol'>;

export interface KernelCheckResult {
  name: string;
  ok: boolean;
  /** Largest |gpu - reference| over the forward and every gradient. */
  maxErr: number;
  ms: number;
  error?: string;
}

/** FNV-1a of the case name: each case draws the same inputs wherever it runs. */
function seedOf(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return (h >>> 0) % 1_000_000_007;
}

function draw(spec: InputSpec, rnd: () => number): F64 {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const out = new Float64Array(n);
  if (spec.values) out.set(spec.values);
  else if ((spec.dtype ?? 'f32') === 'f32') {
    const [lo, hi] = spec.range ?? [-2, 2];
    for (let i = 0; i < n; i++) out[i] = Math.fround(lo + (hi - lo) * rnd());
  } else {
    const [lo, hi] = spec.range ?? [0, 9];
    for (let i = 0; i < n; i++) out[i] = lo + Math.floor((hi - lo + 1) * rnd());
  }
  return { data: out, shape: [...spec.shape] };
}

function upload(x: F64, dtype: 'f32' | 'i32' | 'u32' = 'f32'): Tensor {
  const arr = dtype === 'f32' ? Float32Array.from(x.data) : dtype === 'i32' ? Int32Array.from(x.data) : Uint32Array.from(x.data);
  return Tensor.from(arr, x.shape, dtype);
}

/** Max error; throws naming the first mismatch unless |got - want| <= atol + rtol |want| everywhere. */
function compare(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: Tol): number {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} values, the reference has ${want.length}`);
  let maxErr = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const err = Math.abs(g - w);
    if (!(err <= tol.atol + tol.rtol * Math.abs(w))) throw new Error(`${what}: [${i}] got ${g}, want ${w} (atol ${tol.atol}, rtol ${tol.rtol})`);
    maxErr = Math.max(maxErr, err);
  }
  return maxErr;
}

/** Forward against the reference (outputs poisoned with NaN first), then every gradient against refGrad. */
async function checkOp(c: OpCheck): Promise<number> {
  const rnd = ref.mulberry32(seedOf(c.name) * 7919 + 17);
  const xs = c.inputs.map((s) => draw(s, rnd));
  const wantsGrad = (s: InputSpec): boolean => (s.dtype ?? 'f32') === 'f32' && (s.grad ?? true) && !!c.refGrad;
  const ts = c.inputs.map((s, i) => {
    const t = upload(xs[i]!, s.dtype ?? 'f32');
    if (wantsGrad(s)) t.requireGrad();
    return t;
  });
  const poison = flags.poison;
  flags.poison = true;
  try {
    const want = c.ref(xs);
    const y = c.run(ts);
    if (y.shape.join() !== want.shape.join()) throw new Error(`output shape [${y.shape}], the reference's [${want.shape}]`);
    let maxErr = compare('forward', await y.toArray(), want.data, c.tol ?? FWD_TOL);
    if (c.refGrad) {
      const gy = draw({ shape: want.shape }, rnd);
      const wantG = c.refGrad(xs, gy);
      backward(y, upload(gy));
      for (const [i, s] of c.inputs.entries()) {
        if (!wantsGrad(s)) continue;
        const g = ts[i]!.grad;
        if (!g) throw new Error(`no gradient reached input ${i}`);
        maxErr = Math.max(maxErr, compare(`grad[${i}]`, await g.toArray(), wantG[i]!.data, c.gradTol ?? GRAD_TOL));
      }
    }
    y.dispose();
    return maxErr;
  } finally {
    flags.poison = poison;
    for (const t of ts) {
      t.grad?.dispose();
      t.dispose();
    }
    await sync();
  }
}

/** Left-padded ids [B, L]: row b has lens[b] real ids (1..9) in its last slots. */
function leftPadded(lens: number[], L: number, seed: number): number[] {
  const rnd = ref.mulberry32(seed);
  const ids: number[] = [];
  for (const n of lens) for (let s = 0; s < L; s++) ids.push(s >= L - n ? 1 + Math.floor(rnd() * 9) : 0);
  return ids;
}

function opChecks(packed: Array<{ dispose(): void }>): OpCheck[] {
  const att = { B: 2, H: 2, L: 7, D: 8 };
  const attShape = [att.B, att.H, att.L, att.D];
  const attOpts = { causal: true, fill: -10000 };
  const vl = { lens: [7, 1, 0, 3], L: 7, H: 2, D: 8 };
  const vlShape = [vl.lens.reduce((a, b) => a + b, 0), vl.H, vl.D];
  const vlPacked = (): ReturnType<typeof F.packBatch> => {
    const pb = F.packBatch(leftPadded(vl.lens, vl.L, 2), vl.lens.length, vl.L);
    packed.push(pb);
    return pb;
  };
  const nce = { N: 7, C: 5, D: 16, V: 20, temperature: 0.5 };
  const ec = { B: 5, N: 3, D: 9, V: 13, alpha: 0.2 };
  return [
    {
      name: 'matmul [13,24] x [11,24]^T',
      inputs: [{ shape: [13, 24] }, { shape: [11, 24] }],
      run: ([a, b]) => F.matmul(a!, b!, { transB: true }),
      ref: ([a, b]) => F.refMatmul(a!, b!, { transB: true }),
      refGrad: ([a, b], gy) => F.refMatmulGrad(a!, b!, gy, { transB: true }),
      tol: dotTol(24, 2, 2),
      gradTol: dotTol(13, 2, 2),
    },
    {
      name: 'softmax [5,37]',
      inputs: [{ shape: [5, 37] }],
      run: ([x]) => F.softmax(x!),
      ref: ([x]) => F.refSoftmax(x!),
      refGrad: ([x], gy) => [F.refSoftmaxGrad(x!, gy)],
    },
    {
      name: 'layerNorm [6,33]',
      inputs: [{ shape: [6, 33] }, { shape: [33] }, { shape: [33] }],
      run: ([x, w, b]) => F.layerNorm(x!, w!, b!, { eps: 1e-12 }),
      ref: ([x, w, b]) => F.refLayerNorm(x!, w!, b!, 1e-12),
      refGrad: ([x, w, b], gy) => F.refLayerNormGrad(x!, w!, b!, gy, 1e-12),
    },
    {
      name: 'gelu [300]',
      inputs: [{ shape: [300], range: [-4, 4] }],
      run: ([x]) => F.gelu(x!),
      ref: ([x]) => F.refUnary('gelu', x!),
      refGrad: ([x], gy) => [F.refUnaryGrad('gelu', x!, gy)],
    },
    {
      name: `attentionMasked B${att.B} H${att.H} L${att.L} D${att.D} causal, padded`,
      inputs: [{ shape: attShape }, { shape: attShape }, { shape: attShape }, { shape: [att.B, att.L], dtype: 'u32', values: leftPadded([7, 3], att.L, 1) }],
      run: ([q, k, v, ids]) => F.attentionMasked(q!, k!, v!, ids!, attOpts),
      ref: ([q, k, v, ids]) => F.refAttentionMasked(q!, k!, v!, ids!, { ...attOpts, dropout: 0 }),
      refGrad: ([q, k, v, ids], gy) => [...F.refAttentionMaskedGrad(q!, k!, v!, ids!, gy, { ...attOpts, dropout: 0 }), null],
    },
    {
      // The S3-Rec encoder's default path (packed sequences); like every kernel it binds at most 8 storage buffers
      // (WebGPU's guaranteed minimum; Chromium's adapter allows 10).
      name: `attentionVarlen lengths [${vl.lens}] H${vl.H} D${vl.D} causal`,
      inputs: [{ shape: vlShape }, { shape: vlShape }, { shape: vlShape }],
      run: ([q, k, v]) => F.attentionVarlen(q!, k!, v!, vlPacked(), attOpts),
      ref: ([q, k, v]) => F.refAttentionVarlen(q!, k!, v!, vl.lens, vl.L, attOpts),
      refGrad: ([q, k, v], gy) => F.refAttentionVarlenGrad(q!, k!, v!, vl.lens, vl.L, gy, attOpts),
    },
    {
      name: `infonce N${nce.N} C${nce.C} D${nce.D} V${nce.V}`,
      inputs: [{ shape: [nce.N, nce.D] }, { shape: [nce.V, nce.D] }, { shape: [nce.N, nce.C], dtype: 'i32', range: [0, nce.V - 1] }],
      run: ([q, t, c]) => F.infonce(q!, t!, c!, { temperature: nce.temperature }),
      ref: ([q, t, c]) => F.refInfonce(q!, t!, c!, { temperature: nce.temperature }),
      refGrad: ([q, t, c], gy) => [...F.refInfonceGrad(q!, t!, c!, { temperature: nce.temperature }, gy.data[0]!), null],
    },
    {
      name: `euclidScore B${ec.B} N${ec.N} D${ec.D} V${ec.V}`,
      inputs: [{ shape: [ec.B, ec.D] }, { shape: [ec.B, ec.D] }, { shape: [ec.V, ec.D] }, { shape: [ec.V, ec.D] }, { shape: [ec.B, ec.N], dtype: 'i32', range: [0, ec.V - 1] }],
      run: ([u, m, X, Q, idx]) => F.euclidScore(u!, m!, X!, Q!, idx!, { alpha: ec.alpha }),
      ref: ([u, m, X, Q, idx]) => F.refEuclidScore(u!, m!, X!, Q!, idx!, ec.alpha),
      refGrad: ([u, m, X, Q, idx], gy) => [...F.refEuclidScoreGrad(u!, m!, X!, Q!, idx!, ec.alpha, gy), null],
    },
  ];
}

/** topkScores (dot) with history exclusion and the answer's rank; integer inputs make every score exact. */
async function checkTopk(): Promise<number> {
  const B = 4;
  const V = 37;
  const D = 6;
  const k = 5;
  const rnd = ref.mulberry32(seedOf('topk'));
  const ints = (n: number): Float64Array => Float64Array.from({ length: n }, () => Math.floor(rnd() * 5) - 2);
  const q: F64 = { data: ints(B * D), shape: [B, D] };
  const table: F64 = { data: ints(V * D), shape: [V, D] };
  const offsets = [0];
  const items: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < 3 + b; j++) items.push(Math.floor(rnd() * V));
    offsets.push(items.length);
  }
  const answer = Array.from({ length: B }, () => Math.floor(rnd() * V));
  const exclude = { offsets, items };
  const want = F.refTopkScores({ mode: 'dot', tensors: [q, table], k, exclude, answer });
  const tq = upload(q);
  const tt = upload(table);
  try {
    const r = F.topkScores({ mode: 'dot', query: tq, table: tt, k, exclude, answer });
    const ids = await r.ids.toArray();
    const scores = await r.scores.toArray();
    const rank = r.rank ? await r.rank.toArray() : null;
    for (const t of [r.ids, r.scores, r.rank]) t?.dispose();
    for (let i = 0; i < B * k; i++) {
      if (ids[i] !== want.ids[i] || scores[i] !== want.scores[i]) {
        throw new Error(`user ${Math.floor(i / k)} slot ${i % k}: got id ${ids[i]} score ${scores[i]}, want id ${want.ids[i]} score ${want.scores[i]}`);
      }
    }
    if (!rank || !want.rank) throw new Error('no rank returned');
    for (let b = 0; b < B; b++) if (rank[b] !== want.rank[b]) throw new Error(`user ${b}: rank ${rank[b]}, want ${want.rank[b]}`);
    return 0;
  } finally {
    tq.dispose();
    tt.dispose();
    await sync();
  }
}

export async function runKernelChecks(onResult?: (r: KernelCheckResult) => void): Promise<KernelCheckResult[]> {
  const packed: Array<{ dispose(): void }> = []; // packed-sequence layouts, disposed after their check
  const cases: Array<{ name: string; run: () => Promise<number> }> = [
    ...opChecks(packed).map((c) => ({ name: c.name, run: () => checkOp(c).finally(() => packed.splice(0).forEach((p) => p.dispose())) })),
    { name: `topkScores dot B4 V37 k5, history excluded, rank`, run: checkTopk },
  ];
  const out: KernelCheckResult[] = [];
  for (const c of cases) {
    const t0 = performance.now();
    let r: KernelCheckResult;
    try {
      const maxErr = await c.run();
      r = { name: c.name, ok: true, maxErr, ms: performance.now() - t0 };
    } catch (e) {
      r = { name: c.name, ok: false, maxErr: NaN, ms: performance.now() - t0, error: e instanceof Error ? e.message : String(e) };
    }
    out.push(r);
    onResult?.(r);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ tiny training
/** Sizes and steps of the tiny runs (the same on both sides of the comparison). */
export const TINY = {
  seed: 20240,
  s3rec: { users: 24, items: 30, attributes: 8, minLen: 4, maxLen: 12, hidden: 16, heads: 2, L: 12, lr: 1e-2, pretrainSteps: 3, finetuneSteps: 8 },
  attrec: { users: 20, items: 40, minLen: 8, maxLen: 15, dim: 16, L: 5, T: 3, batch: 48, lr: 0.05, steps: 8 },
} as const;

/** Synthetic sequences with structure to learn: each next item is near the previous one (ids 1..items). */
function synthSequences(rng: InstanceType<typeof data.Rng>, users: number, items: number, minLen: number, maxLen: number): Int32Array[] {
  return Array.from({ length: users }, () => {
    const n = rng.randint(minLen, maxLen);
    const s = new Int32Array(n);
    s[0] = rng.randint(1, items);
    for (let i = 1; i < n; i++) s[i] = ((s[i - 1]! - 1 + rng.randint(1, 3)) % items) + 1;
    return s;
  });
}

export interface PretrainStepLosses {
  aap: number;
  mip: number;
  map: number;
  sp: number;
}

export interface TrainingOptions {
  /** The S3-Rec encoder path (default 'varlen', the model's default: packed sequences; 'padded': [B, L] with masks). */
  path?: models.EncoderPath;
}

export interface TrainingResult {
  path: models.EncoderPath;
  /** null when the run threw (`errors.s3rec` says why). */
  s3rec: { pretrain: PretrainStepLosses[]; finetune: number[] } | null;
  attrec: number[] | null;
  errors: { s3rec?: string; attrec?: string };
  ms: { s3rec: number; attrec: number };
}

type S3RecLosses = NonNullable<TrainingResult['s3rec']>;

async function tinyS3Rec(path: models.EncoderPath): Promise<S3RecLosses> {
  const c = TINY.s3rec;
  const rng = new data.Rng(TINY.seed);
  const seqs = synthSequences(rng, c.users, c.items, c.minLen, c.maxLen);
  const itemSize = c.items + 2;
  const maskId = itemSize - 1;
  const attributes: Int32Array[] = Array.from({ length: itemSize }, (_, i) =>
    i === 0 || i === maskId ? new Int32Array(0) : Int32Array.from(new Set([1 + (i % c.attributes), rng.randint(1, c.attributes)])),
  );
  manualSeed(TINY.seed);
  const model = new models.S3RecModel({ itemSize, attributeSize: c.attributes + 1, hiddenSize: c.hidden, numHiddenLayers: 1, numAttentionHeads: c.heads, maxSeqLength: c.L });
  model.train();
  const out: S3RecLosses = { pretrain: [], finetune: [] };

  // Pretraining (official objective: AAP, MIP, MAP, SP), one batch of every prefix.
  const prefixes = data.pretrainPrefixes(seqs, c.L);
  const batcher = new models.PretrainBatcher(seqs, prefixes, {
    itemSize, maskId, longSequence: data.longSequence(seqs), maskP: 0.2, maxLen: c.L, batchSize: prefixes.count,
  });
  const all = Int32Array.from({ length: prefixes.count }, (_, i) => i);
  const popt = new models.Adam(model, { lr: c.lr });
  const sums = [zeros([]), zeros([]), zeros([]), zeros([])];
  try {
    for (let s = 0; s < c.pretrainSteps; s++) {
      for (const t of sums) t.write(new Float32Array([0]));
      const b = batcher.build(all, rng);
      models.pretrainStep(model, popt, b, attributes, { objective: 'official', path, weights: models.PRETRAIN_WEIGHTS, temperature: 1 }, sums);
      const [aap, mip, map, sp] = await Promise.all(sums.map((t) => t.item()));
      out.pretrain.push({ aap: aap! / b.B, mip: mip! / b.B, map: map! / b.B, sp: sp! / b.B });
    }
  } finally {
    for (const t of sums) t.dispose();
    popt.dispose();
  }

  // Fine-tuning (the pairwise BCE of the next item against a sampled negative), every user in one batch.
  const users = Int32Array.from({ length: seqs.length }, (_, i) => i);
  const fopt = new models.Adam(model, { lr: c.lr });
  try {
    for (let s = 0; s < c.finetuneSteps; s++) {
      const b = data.buildFinetuneTrainBatch(seqs, users, { maxLen: c.L, itemSize, rng });
      const eb = models.encoderBatch(b.inputIds, users.length, c.L, path);
      const loss = models.trainStep(model, fopt, eb, b.targetPos, b.targetNeg, undefined, true)!;
      out.finetune.push(await loss.item());
      loss.dispose();
      eb.dispose();
    }
  } finally {
    fopt.dispose();
    model.dispose();
  }
  return out;
}

async function tinyAttRec(): Promise<number[]> {
  const c = TINY.attrec;
  const rng = new data.Rng(TINY.seed + 1);
  const seqs = synthSequences(rng, c.users, c.items, c.minLen, c.maxLen);
  const windows = models.buildWindows(seqs, c.L, c.T);
  manualSeed(TINY.seed + 1);
  const model = new models.AttRec({ numUsers: c.users, numItems: c.items + 1, dim: c.dim, seqLen: c.L });
  model.train();
  const opt = new models.Adagrad(model, { lr: c.lr, initialAccumulatorValue: 0.05 });
  const idx = data.epochOrder(windows.count, TINY.seed, 0).subarray(0, Math.min(c.batch, windows.count));
  const losses: number[] = [];
  try {
    for (let s = 0; s < c.steps; s++) {
      const hb = data.buildAttRecBatch(windows, idx, { numItems: c.items + 1, rng });
      const b = models.uploadAttRecBatch(hb.users, hb.inputs, hb.targets, hb.negatives, c.L, c.T);
      const loss = scope(() => model.loss(b));
      backward(loss);
      opt.step();
      model.zeroGrad();
      losses.push(await loss.item());
      loss.dispose();
      models.disposeAttRecBatch(b);
    }
  } finally {
    opt.dispose();
    model.dispose();
  }
  return losses;
}

export async function runTraining(o: TrainingOptions = {}): Promise<TrainingResult> {
  const path = o.path ?? 'varlen';
  const errors: TrainingResult['errors'] = {};
  const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));
  // Each model on its own: one failing does not hide the other's result.
  const t0 = performance.now();
  const s3rec = await tinyS3Rec(path).catch((e: unknown) => ((errors.s3rec = message(e)), null));
  const t1 = performance.now();
  const attrec = await tinyAttRec().catch((e: unknown) => ((errors.attrec = message(e)), null));
  await sync().catch((e: unknown) => (errors.attrec ??= message(e)));
  return { path, s3rec, attrec, errors, ms: { s3rec: t1 - t0, attrec: performance.now() - t1 } };
}

// ------------------------------------------------------------------------------------------------ the whole page
export interface PageResult {
  ok: boolean;
  adapter: GpuInfo | null;
  kernels: KernelCheckResult[];
  training: TrainingResult | null;
  error?: string;
  seconds: number;
}

/** Kernel checks then training on the current device (initGpu() done by the caller). */
export async function runAll(log: (line: string) => void = () => {}, o: TrainingOptions = {}): Promise<PageResult> {
  const t0 = performance.now();
  const res: PageResult = { ok: false, adapter: getGpu().info, kernels: [], training: null, seconds: 0 };
  try {
    res.kernels = await runKernelChecks((r) => log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (${r.ms.toFixed(0)} ms${r.ok ? `, max err ${r.maxErr.toExponential(2)}` : `: ${r.error}`})`));
    log(`training the tiny S3-Rec (encoder path ${o.path ?? 'varlen'}) and AttRec ...`);
    res.training = await runTraining(o);
    const t = res.training;
    if (t.s3rec) {
      log(`S3-Rec pretraining (aap, mip, map, sp per step): ${t.s3rec.pretrain.map((p) => `[${[p.aap, p.mip, p.map, p.sp].map((v) => v.toFixed(4)).join(', ')}]`).join(' ')}`);
      log(`S3-Rec fine-tuning loss per step: ${t.s3rec.finetune.map((v) => v.toFixed(5)).join(' ')}`);
    } else log(`S3-Rec training failed: ${t.errors.s3rec}`);
    if (t.attrec) log(`AttRec loss per step: ${t.attrec.map((v) => v.toFixed(5)).join(' ')}`);
    else log(`AttRec training failed: ${t.errors.attrec}`);
    res.ok = res.kernels.every((k) => k.ok) && !!t.s3rec && !!t.attrec;
  } catch (e) {
    res.error = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
    log(`error: ${res.error}`);
  }
  res.seconds = (performance.now() - t0) / 1000;
  return res;
}
