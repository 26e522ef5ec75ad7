// topk (kernels/topk.ts): full-catalogue evaluation (top-K ids + scores per user and the rank of the held-out item)
// at the two evaluation protocols:
//   AttRec ML-100k   euclid, B=943 users, V=1683 items, D=150, K=50 (HR@50), each user's training items excluded
//                    (~100 per user), id 0 excluded (ATTREC_SPEC §5)
//   S3-Rec Beauty    dot, B=256 users (one eval batch), V=12103 items, D=64, K=20, historyMode 'zero' (history
//                    scores set to 0, pad and mask ids kept: S3REC_SPEC §6 full ranking)
// Variants:
//   fused          kernels/topk.ts: block scores into a GPU scratch (dot: the engine's matmul; euclid: the
//                  register-tiled distance kernel), then the selection kernel (chunks by defaultChunks(): 1 on
//                  llvmpipe); reads back nothing while timed
//   fused_chunks4  4 item chunks per user + the merge kernel (what a real GPU gets)
//   composed       this engine's unfused ops build the [B, V] score matrix (matmul + elementwise; the euclid
//                  distances by expansion), read it back, top-K + exclusions + rank on the host (host clock always)
//   tfjs           tfjs-backend-webgpu: the same [B, V] scores, masks (uploaded once), tf.topk, and the rank as a
//                  masked count, all on the GPU; reads back nothing while timed
// Validation checks every variant on a sample of users (every 37th, and the last) against the float64 reference
// (refTopkScores), allowing near-ties (within an f32 tolerance) to swap.
import { noGrad, ref, Tensor } from '../engine/index.js';
import { add, matmul, mul, refTopkScores, square, sub, sum, topkScores, type TopkOptions, type TopkResult } from '../kernels/index.js';
import { getTfjs, tfjsSubmit } from './tfjs.js';
import type { TfT } from './common.js';
import type { BenchEntry, BenchSize, Instance, Outputs, Reference, Variant } from './types.js';

type F64 = ref.F64;

interface Cfg {
  tag: string;
  mode: 'dot' | 'euclid';
  B: number;
  V: number;
  D: number;
  K: number;
  alpha: number;
  historyMode: 'exclude' | 'zero';
  /** Mean history length per user. */
  hist: number;
  excludeIds: number[];
  /** Value ranges of the query rows and the table rows. */
  qScale: number;
  tScale: number;
}

const label = (c: Cfg): string => `${c.tag} ${c.mode} B${c.B} V${c.V} D${c.D} K${c.K}${c.historyMode === 'zero' ? ' zero' : ''}`;

interface In {
  tensors: F64[]; // dot: [q, E]; euclid: [u, m, X, Q]
  offsets: Int32Array; // [B + 1]
  items: Int32Array; // [nnz]
  answer: Int32Array; // [B]
}

function inputs(c: Cfg): In {
  const rnd = ref.mulberry32(77);
  const mk = (rows: number, s: number): F64 => ({ data: Float64Array.from({ length: rows * c.D }, () => Math.fround((rnd() * 2 - 1) * s)), shape: [rows, c.D] });
  const tensors = c.mode === 'dot' ? [mk(c.B, c.qScale), mk(c.V, c.tScale)] : [mk(c.B, c.qScale), mk(c.B, c.qScale), mk(c.V, c.tScale), mk(c.V, c.tScale)];
  const offsets = new Int32Array(c.B + 1);
  const items: number[] = [];
  for (let b = 0; b < c.B; b++) {
    const n = 1 + Math.floor(rnd() * 2 * c.hist);
    for (let k = 0; k < n; k++) items.push(1 + Math.floor(rnd() * (c.V - 1)));
    offsets[b + 1] = items.length;
  }
  const answer = Int32Array.from({ length: c.B }, () => 1 + Math.floor(rnd() * (c.V - 1)));
  return { tensors, offsets, items: Int32Array.from(items), answer };
}

/** Every 37th user (and the last): the float64 reference over all of them would take seconds. */
function sampleUsers(B: number): number[] {
  const us: number[] = [];
  for (let b = 0; b < B; b += 37) us.push(b);
  if (us[us.length - 1] !== B - 1) us.push(B - 1);
  return us;
}

/** refTopkScores over the sampled users (their query rows and histories). */
function reference(c: Cfg, h: In): Reference {
  const users = sampleUsers(c.B);
  const rows = (t: F64, rs: number[]): F64 => ({ data: Float64Array.from(rs.flatMap((r) => Array.from(t.data.subarray(r * c.D, (r + 1) * c.D)))), shape: [rs.length, c.D] });
  const nq = c.mode === 'dot' ? 1 : 2;
  const offsets = [0];
  const items: number[] = [];
  for (const b of users) {
    items.push(...h.items.subarray(h.offsets[b]!, h.offsets[b + 1]!));
    offsets.push(items.length);
  }
  const want = refTopkScores({
    mode: c.mode,
    tensors: h.tensors.map((t, k) => (k < nq ? rows(t, users) : t)),
    k: c.K,
    alpha: c.alpha,
    exclude: { offsets, items },
    excludeIds: c.excludeIds,
    historyMode: c.historyMode,
    answer: users.map((b) => h.answer[b]!),
  });
  return { users: Int32Array.from(users), ids: want.ids, scores: want.scores, rank: want.rank!, all: want.all, candidate: want.candidate };
}

/** Checks the sampled users: each slot's id is a candidate whose f64 score is the true slot score (near-ties may swap), the rank is within the tie range. */
function check(c: Cfg) {
  return (what: string, got: Outputs, want: Reference, h: In): void => {
    const users = want.users as Int32Array;
    const [wIds, wScores, all, cand] = [want.ids, want.scores, want.all, want.candidate] as ArrayLike<number>[];
    let scale = 0;
    for (let i = 0; i < wScores!.length; i++) if (Number.isFinite(wScores![i]!)) scale = Math.max(scale, Math.abs(wScores![i]!));
    const tol = 1e-5 * Math.max(1, scale);
    const V = c.V;
    users.forEach((b, u) => {
      const fail = (msg: string): never => {
        throw new Error(`${what}: user ${b}: ${msg}`);
      };
      const seen = new Set<number>();
      for (let r = 0; r < c.K; r++) {
        const id = got.ids![b * c.K + r]!;
        const s = got.scores![b * c.K + r]!;
        const ws = wScores![u * c.K + r]!;
        if (wIds![u * c.K + r] === -1) {
          if (id !== -1) fail(`slot ${r}: id ${id}, want -1 (fewer candidates than K)`);
          continue;
        }
        if (id < 0 || id >= V || seen.has(id) || !cand![u * V + id]) fail(`slot ${r}: id ${id} is not a new candidate`);
        seen.add(id);
        const f = all![u * V + id]!;
        if (Math.abs(f - ws) > tol || Math.abs(s - f) > tol) fail(`slot ${r}: id ${id} scores ${s} (f64 ${f}), the true slot-${r} score is ${ws} (tol ${tol})`);
      }
      const sa = all![u * V + h.answer[b]!]!;
      let lo = 0;
      let hi = 0;
      for (let i = 0; i < V; i++) {
        if (i === h.answer[b] || !cand![u * V + i]) continue;
        const s = all![u * V + i]!;
        if (s > sa + tol) lo++;
        if (s >= sa - tol) hi++;
      }
      const rk = got.rank![b]!;
      if (rk < lo || rk > hi) fail(`rank ${rk} outside [${lo}, ${hi}] (f64 rank ${(want.rank as Int32Array)[u]})`);
    });
  };
}

const upload = (x: F64): Tensor => Tensor.from(Float32Array.from(x.data), x.shape);

function fusedVariant(c: Cfg, name: string, variant: { chunks?: number } = {}): Variant<In> {
  return {
    name,
    kind: variant.chunks ? 'alt' : 'fused',
    setup(h): Instance {
      const ts = h.tensors.map(upload); // dot: q [B, D], E [V, D]; euclid: u, m [B, D], X, Q [V, D]
      const offsets = Tensor.from(h.offsets, [c.B + 1], 'i32'); // [B + 1]
      const items = Tensor.from(h.items, [h.items.length], 'i32'); // [nnz]
      const answer = Tensor.from(h.answer, [c.B], 'i32'); // [B]
      const opts: TopkOptions = {
        mode: c.mode,
        query: c.mode === 'dot' ? ts[0]! : { u: ts[0]!, m: ts[1]! },
        table: c.mode === 'dot' ? ts[1]! : { X: ts[2]!, Q: ts[3]! },
        k: c.K,
        alpha: c.alpha,
        exclude: { offsets, items },
        excludeIds: c.excludeIds,
        historyMode: c.historyMode,
        answer,
        ...variant,
      };
      let out: TopkResult | null = null;
      const free = (): void => {
        out?.ids.dispose();
        out?.scores.dispose();
        out?.rank?.dispose();
        out = null;
      };
      const run = (): void => {
        free();
        out = topkScores(opts);
      };
      return {
        run,
        async outputs() {
          run();
          return { ids: await out!.ids.toArray(), scores: await out!.scores.toArray(), rank: await out!.rank!.toArray() };
        },
        dispose() {
          free();
          for (const t of [...ts, offsets, items, answer]) t.dispose();
        },
      };
    },
  };
}

/** Host top-K over a read-back [B, V] score matrix, with the same exclusions, ties and rank as topkScores. */
function hostTopk(c: Cfg, h: In, S: Float32Array): Outputs {
  const { B, V, K } = c;
  const ids = new Int32Array(B * K).fill(-1);
  const scores = new Float32Array(B * K).fill(-Infinity);
  const rank = new Int32Array(B);
  const glob = new Set(c.excludeIds);
  const mark = new Uint8Array(V);
  for (let b = 0; b < B; b++) {
    for (let k = h.offsets[b]!; k < h.offsets[b + 1]!; k++) mark[h.items[k]!] = 1;
    const row = b * V;
    const ans = h.answer[b]!;
    const adj = (i: number): number => (mark[i] && c.historyMode === 'zero' ? 0 : S[row + i]!);
    const sa = adj(ans);
    let cnt = 0;
    let n = 0; // filled slots
    const o = b * K;
    for (let i = 0; i < V; i++) {
      if (glob.has(i) || (mark[i] && c.historyMode === 'exclude')) continue;
      const s = adj(i);
      if (s > sa || (s === sa && i < ans)) cnt++;
      if (n === K && !(s > scores[o + K - 1]!)) continue; // ids ascend: an equal score never displaces
      let j = n < K ? n++ : K - 1;
      while (j > 0 && s > scores[o + j - 1]!) {
        scores[o + j] = scores[o + j - 1]!;
        ids[o + j] = ids[o + j - 1]!;
        j--;
      }
      scores[o + j] = s;
      ids[o + j] = i;
    }
    rank[b] = cnt;
    for (let k = h.offsets[b]!; k < h.offsets[b + 1]!; k++) mark[h.items[k]!] = 0;
  }
  return { ids, scores, rank };
}

/** [B, V] scores from unfused engine ops (euclid: -(alpha (|u|^2 + |X|^2 - 2 u.X) + (1-alpha) (...))). */
function engineScores(c: Cfg, ts: Tensor[]): Tensor {
  return noGrad(() => {
    if (c.mode === 'dot') return matmul(ts[0]!, ts[1]!, { transB: true }); // [B, V]
    const dist = (a: Tensor, t: Tensor): Tensor => {
      const aa = sum(square(a), -1, true); // [B, 1]
      const tt = sum(square(t), -1); // [V]
      const at = matmul(a, t, { transB: true }); // [B, V]
      return sub(add(aa, tt), mul(at, 2)); // [B, V]
    };
    return mul(add(mul(dist(ts[0]!, ts[2]!), c.alpha), mul(dist(ts[1]!, ts[3]!), 1 - c.alpha)), -1); // [B, V]
  });
}

function composedVariant(c: Cfg): Variant<In> {
  return {
    name: 'composed',
    kind: 'composed',
    hostWork: true,
    setup(h): Instance {
      const ts = h.tensors.map(upload);
      let res: Outputs | null = null;
      const run = async (): Promise<void> => {
        const S = engineScores(c, ts); // [B, V]: intermediates freed by hand below
        const data = (await S.toArray()) as Float32Array;
        S.dispose();
        res = hostTopk(c, h, data);
      };
      return {
        run,
        async outputs() {
          await run();
          return res!;
        },
        dispose() {
          for (const t of ts) t.dispose();
        },
      };
    },
  };
}

function tfjsVariant(c: Cfg): Variant<In> {
  return {
    name: 'tfjs',
    kind: 'tfjs',
    async setup(h): Promise<Instance> {
      const tf = await getTfjs();
      const { B, V } = c;
      const ts = h.tensors.map((x) => tf.tensor2d(Float32Array.from(x.data), x.shape as [number, number]));
      // Masks built once on the host and uploaded (not timed): history [B, V] and excluded [B, V].
      const histM = new Uint8Array(B * V);
      const exclM = new Uint8Array(B * V);
      for (let b = 0; b < B; b++) {
        for (let k = h.offsets[b]!; k < h.offsets[b + 1]!; k++) histM[b * V + h.items[k]!] = 1;
        for (const i of c.excludeIds) exclM[b * V + i] = 1;
        if (c.historyMode === 'exclude') for (let k = h.offsets[b]!; k < h.offsets[b + 1]!; k++) exclM[b * V + h.items[k]!] = 1;
      }
      const hist = tf.tensor2d(histM, [B, V], 'bool');
      const excl = tf.tensor2d(exclM, [B, V], 'bool');
      const ans = tf.tensor2d(h.answer, [B, 1], 'int32');
      const iota = tf.reshape(tf.range(0, V, 1, 'int32'), [1, V]); // [1, V]
      const ansHot = tf.tensor2d(Float32Array.from({ length: B * V }, (_, k) => (k % V === h.answer[Math.floor(k / V)] ? 1 : 0)), [B, V]);
      const step = (): TfT[] =>
        tf.tidy(() => {
          let s: TfT;
          if (c.mode === 'dot') s = tf.matMul(ts[0]!, ts[1]!, false, true); // [B, V]
          else {
            const dist = (a: TfT, t: TfT): TfT => tf.sub(tf.add(tf.sum(tf.square(a), -1, true), tf.sum(tf.square(t), -1)), tf.mul(tf.matMul(a, t, false, true), 2));
            s = tf.neg(tf.add(tf.mul(dist(ts[0]!, ts[2]!), c.alpha), tf.mul(dist(ts[1]!, ts[3]!), 1 - c.alpha))); // [B, V]
          }
          const adj = c.historyMode === 'zero' ? tf.where(hist, tf.zerosLike(s), s) : s; // [B, V]
          const masked = tf.where(excl, tf.fill([B, V], -Infinity), adj); // [B, V]
          const { values, indices } = tf.topk(masked, c.K); // [B, K]
          const sa = tf.sum(tf.mul(adj, ansHot), -1, true); // [B, 1]
          const before = tf.logicalOr(tf.greater(masked, sa), tf.logicalAnd(tf.equal(masked, sa), tf.less(iota, ans))); // [B, V]
          const rank = tf.sum(tf.cast(before, 'int32'), -1); // [B]
          return [indices, values, rank];
        });
      let outs: TfT[] = [];
      const once = (): void => {
        for (const t of outs) t.dispose();
        outs = step();
      };
      return {
        run() {
          once();
          tfjsSubmit(); // the runner's sync() then waits for tfjs's work on the shared queue
        },
        async gpuMs() {
          return Number((await tf.time(once)).kernelMs);
        },
        async outputs() {
          once();
          const [ids, scores, rank] = await Promise.all(outs.map((t) => t.data()));
          // tfjs's topk does not know about excluded slots: they come back as -Infinity with some id.
          const idsArr = Int32Array.from(ids as Int32Array);
          for (let k = 0; k < idsArr.length; k++) if ((scores as Float32Array)[k] === -Infinity) idsArr[k] = -1;
          return { ids: idsArr, scores: scores as Float32Array, rank: rank as Int32Array };
        },
        dispose() {
          for (const t of [...outs, ...ts, hist, excl, ans, iota, ansHot]) t.dispose();
        },
      };
    },
  };
}

function entry(c: Cfg): BenchEntry<In> {
  return {
    op: 'topk',
    shape: label(c),
    dims: { B: c.B, V: c.V, D: c.D, K: c.K },
    flops: (c.mode === 'dot' ? 2 : 6) * c.B * c.V * c.D,
    bytes: 4 * (c.mode === 'dot' ? 1 : 2) * (c.B + c.V) * c.D,
    inputs: () => inputs(c),
    reference: (h) => reference(c, h),
    check: check(c),
    variants: [fusedVariant(c, 'fused'), fusedVariant(c, 'fused_chunks4', { chunks: 4 }), composedVariant(c), tfjsVariant(c)],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  const tiny = size === 'tiny';
  const ATTREC: Cfg = { tag: 'AttRec', mode: 'euclid', B: tiny ? 40 : 943, V: tiny ? 90 : 1683, D: tiny ? 12 : 150, K: tiny ? 7 : 50, alpha: 0.2, historyMode: 'exclude', hist: tiny ? 6 : 100, excludeIds: [0], qScale: 0.1, tScale: 0.1 };
  const S3REC: Cfg = { tag: 'S3-Rec', mode: 'dot', B: tiny ? 38 : 256, V: tiny ? 120 : 12103, D: tiny ? 8 : 64, K: tiny ? 5 : 20, alpha: 0.2, historyMode: 'zero', hist: tiny ? 4 : 9, excludeIds: [], qScale: 1, tScale: 0.05 };
  return [entry(ATTREC), entry(S3REC)];
}
