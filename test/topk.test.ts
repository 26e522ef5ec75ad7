// topk: full-catalogue top-K (dot and euclid) against the float64 reference: ties (smaller id first),
// exclusions (history CSR + global ids), the S3-Rec 'zero' history mode, K = 1, K > #candidates, prime V,
// the answer's rank, chunked selection + merge, users in several scratch blocks, llvmpipe's loop budget, and
// large magnitudes (tolerance-aware: near-ties may swap).
import { expect, it } from 'vitest';
import { flags, ref, Tensor } from '../engine/index.js';
import { defaultChunks, refTopkScores, topkScores, type RefTopkResult, type TopkOptions } from '../kernels/topk.js';
import { checkOp, describeGpu, upload, type F64 } from './harness.js';

interface Data {
  mode: 'dot' | 'euclid';
  tensors: F64[];
  B: number;
  V: number;
}

/** Random data; `ints` draws integers in [-r, r] so every f32 score is exact (ties are real ties). */
function makeData(mode: 'dot' | 'euclid', B: number, V: number, D: number, seed: number, opts: { ints?: number; range?: number; dupRows?: boolean } = {}): Data {
  const rnd = ref.mulberry32(seed);
  const draw = (n: number): Float64Array =>
    Float64Array.from({ length: n }, () =>
      opts.ints !== undefined ? Math.floor(rnd() * (2 * opts.ints + 1)) - opts.ints : Math.fround((rnd() * 2 - 1) * (opts.range ?? 1)),
    );
  const mk = (rows: number): F64 => ({ data: draw(rows * D), shape: [rows, D] });
  const tensors = mode === 'dot' ? [mk(B), mk(V)] : [mk(B), mk(B), mk(V), mk(V)];
  if (opts.dupRows) {
    // Every 5th item copies item 1 (exact ties between different ids).
    for (const t of tensors.slice(mode === 'dot' ? 1 : 2)) for (let i = 5; i < V; i += 5) t.data.copyWithin(i * D, D, 2 * D);
  }
  return { mode, tensors, B, V };
}

function makeHistory(B: number, V: number, seed: number, maxLen: number): { offsets: number[]; items: number[] } {
  const rnd = ref.mulberry32(seed);
  const offsets = [0];
  const items: number[] = [];
  for (let b = 0; b < B; b++) {
    const n = Math.floor(rnd() * (maxLen + 1));
    for (let k = 0; k < n; k++) items.push(Math.floor(rnd() * V)); // duplicates allowed
    offsets.push(items.length);
  }
  return { offsets, items };
}

type Extra = Omit<TopkOptions, 'mode' | 'query' | 'table' | 'answer' | 'exclude'> & {
  exclude?: { offsets: number[]; items: number[] };
  answer?: number[];
  excludeAsTensors?: boolean;
};

async function runGpu(d: Data, x: Extra): Promise<{ ids: Int32Array; scores: Float32Array; rank: Int32Array | null }> {
  const ts = d.tensors.map((t) => upload(t));
  const extra: Tensor[] = [];
  let exclude: TopkOptions['exclude'];
  if (x.exclude) {
    exclude = x.excludeAsTensors
      ? {
          offsets: Tensor.from(Int32Array.from(x.exclude.offsets), [d.B + 1], 'i32'),
          items: Tensor.from(Int32Array.from(x.exclude.items.length ? x.exclude.items : [0]), [Math.max(1, x.exclude.items.length)], 'i32'),
        }
      : x.exclude;
    if (x.excludeAsTensors) extra.push(exclude!.offsets as Tensor, exclude!.items as Tensor);
  }
  const r = topkScores({
    ...x,
    mode: d.mode,
    query: d.mode === 'dot' ? ts[0]! : { u: ts[0]!, m: ts[1]! },
    table: d.mode === 'dot' ? ts[1]! : { X: ts[2]!, Q: ts[3]! },
    ...(exclude ? { exclude } : {}),
    ...(x.answer ? { answer: x.answer } : {}),
  });
  const out = {
    ids: (await r.ids.toArray()) as Int32Array,
    scores: (await r.scores.toArray()) as Float32Array,
    rank: r.rank ? ((await r.rank.toArray()) as Int32Array) : null,
  };
  for (const t of [...ts, ...extra, r.ids, r.scores]) t.dispose();
  r.rank?.dispose();
  return out;
}

function refOf(d: Data, x: Extra): RefTopkResult {
  return refTopkScores({ ...x, mode: d.mode, tensors: d.tensors });
}

/**
 * tol = 0: ids, scores and ranks must match exactly (data with exact f32 scores). tol > 0: every returned id
 * is a distinct candidate whose f64 score is within tol of the f64 score at that position of the true order
 * and of the GPU's score, and the rank lies between the counts of candidates beating the answer by more than
 * tol and within tol.
 */
function check(what: string, d: Data, x: Extra, got: Awaited<ReturnType<typeof runGpu>>, want: RefTopkResult, tol: number): void {
  const { B, V } = d;
  const K = x.k;
  const fail = (msg: string): never => {
    throw new Error(`${what}: ${msg}`);
  };
  for (let b = 0; b < B; b++) {
    const seen = new Set<number>();
    for (let r = 0; r < K; r++) {
      const o = b * K + r;
      const gi = got.ids[o]!;
      const gs = got.scores[o]!;
      const wi = want.ids[o]!;
      if (wi === -1 || gi === -1) {
        if (gi !== wi || gs !== -Infinity) fail(`user ${b} slot ${r}: got id ${gi} score ${gs}, want id ${wi} (-1 and -Infinity past the candidates)`);
        continue;
      }
      if (tol === 0) {
        if (gi !== wi || gs !== want.scores[o]) fail(`user ${b} slot ${r}: got id ${gi} score ${gs}, want id ${wi} score ${want.scores[o]}`);
        continue;
      }
      if (seen.has(gi)) fail(`user ${b}: id ${gi} returned twice`);
      seen.add(gi);
      if (!want.candidate[b * V + gi]) fail(`user ${b} slot ${r}: id ${gi} is not a candidate`);
      const f = want.all[b * V + gi]!;
      if (Math.abs(f - want.scores[o]!) > tol) fail(`user ${b} slot ${r}: id ${gi} scores ${f} in f64, the true slot-${r} score is ${want.scores[o]} (tol ${tol})`);
      if (Math.abs(f - gs) > tol) fail(`user ${b} slot ${r}: GPU score ${gs} vs f64 ${f} (tol ${tol})`);
      if (r > 0 && gs > got.scores[o - 1]!) fail(`user ${b}: scores not sorted at slot ${r}`);
    }
  }
  if (!want.rank) {
    expect(got.rank).toBeNull();
    return;
  }
  for (let b = 0; b < B; b++) {
    const g = got.rank![b]!;
    const w = want.rank[b]!;
    if (tol === 0 || w === -1) {
      if (g !== w) fail(`user ${b}: rank ${g}, want ${w}`);
      continue;
    }
    const ans = x.answer![b]!;
    const hist = new Set<number>();
    if (x.exclude) for (let k = x.exclude.offsets[b]!; k < x.exclude.offsets[b + 1]!; k++) hist.add(x.exclude.items[k]!);
    const sa = x.historyMode === 'zero' && hist.has(ans) ? 0 : want.all[b * V + ans]!;
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < V; i++) {
      if (i === ans || !want.candidate[b * V + i]) continue;
      const s = want.all[b * V + i]!;
      if (s > sa + tol) lo++;
      if (s >= sa - tol) hi++;
    }
    if (g < lo || g > hi) fail(`user ${b}: rank ${g} outside [${lo}, ${hi}] (f64 rank ${w}, tol ${tol})`);
  }
}

async function compare(what: string, d: Data, x: Extra, tol = 0): Promise<void> {
  const got = await runGpu(d, x);
  check(what, d, x, got, refOf(d, x), tol);
}

function answers(B: number, V: number, seed: number): number[] {
  const rnd = ref.mulberry32(seed);
  return Array.from({ length: B }, () => Math.floor(rnd() * V));
}

describeGpu('topk', () => {
  it('dot, exact ties (integer data, duplicated rows), prime B and V, history + global exclusions', async () => {
    const B = 7;
    const V = 101;
    const d = makeData('dot', B, V, 13, 1, { ints: 2, dupRows: true });
    const x: Extra = { k: 10, exclude: makeHistory(B, V, 2, 20), excludeIds: [0, 100], answer: answers(B, V, 3) };
    await compare('dot exact', d, x);
  });

  it('euclid, exact ties (integer data, alpha = 0.25), prime B and V, exclusions', async () => {
    const B = 13;
    const V = 97;
    const d = makeData('euclid', B, V, 7, 4, { ints: 3, dupRows: true });
    await compare('euclid exact', d, { k: 17, alpha: 0.25, exclude: makeHistory(B, V, 5, 30), excludeIds: [0], answer: answers(B, V, 6) });
  });

  it('size 1: B = 1, V = 1, D = 1, K = 1', async () => {
    for (const mode of ['dot', 'euclid'] as const) {
      const d = makeData(mode, 1, 1, 1, 7, { ints: 3 });
      await compare(`${mode} size 1`, d, { k: 1, alpha: 0.5, answer: [0] });
    }
  });

  it('K = 1 and K > #candidates (-1 / -Infinity fill, empty candidate sets)', async () => {
    const B = 5;
    const V = 11;
    const d = makeData('dot', B, V, 3, 8, { ints: 2 });
    await compare('K=1', d, { k: 1, exclude: makeHistory(B, V, 9, 4), answer: answers(B, V, 10) });
    // User 0 has every item in its history: no candidates at all.
    const hist = makeHistory(B, V, 11, 6);
    const all = Array.from({ length: V }, (_, i) => i);
    const ex = { offsets: [0, ...hist.offsets.slice(1).map((o) => o + V)], items: [...all, ...hist.items] };
    await compare('K > candidates', d, { k: 20, exclude: ex, excludeIds: [3, 4], answer: answers(B, V, 12) });
  });

  it("historyMode 'zero' (S3-Rec full ranking: history scores 0, pad and mask ids stay candidates)", async () => {
    const B = 11;
    const V = 53;
    const d = makeData('dot', B, V, 8, 13, { ints: 2 });
    const hist = makeHistory(B, V, 14, 15);
    const ans = answers(B, V, 15);
    ans[0] = hist.items[hist.offsets[0]!] ?? ans[0]!; // an answer inside the history: ranked with score 0
    await compare('zero mode', d, { k: 12, exclude: hist, historyMode: 'zero', answer: ans });
    await compare('zero mode + global ids', d, { k: 12, exclude: hist, historyMode: 'zero', excludeIds: [0, 52], answer: ans });
  });

  it('answer outside [0, V) gives -1; an excluded answer is still ranked; history as GPU tensors', async () => {
    const B = 4;
    const V = 29;
    const d = makeData('euclid', B, V, 5, 16, { ints: 2 });
    const hist = makeHistory(B, V, 17, 8);
    const ans = [-1, V, hist.items[hist.offsets[2]!] ?? 1, 0];
    await compare('answers', d, { k: 5, alpha: 0.5, exclude: hist, excludeIds: [0], answer: ans });
    await compare('answers (tensors)', d, { k: 5, alpha: 0.5, exclude: hist, excludeIds: [0], answer: ans, excludeAsTensors: true });
  });

  it('chunked selection + merge give the same result for every chunk count (1, 2, 3, 7, 64)', async () => {
    const B = 31;
    const V = 257;
    const d = makeData('dot', B, V, 6, 18, { ints: 1, dupRows: true });
    const base: Extra = { k: 9, exclude: makeHistory(B, V, 19, 40), excludeIds: [0], answer: answers(B, V, 20) };
    for (const chunks of [1, 2, 3, 7, 64]) await compare(`chunks=${chunks}`, d, { ...base, chunks });
  });

  it('the top-K scores through the shared harness (dot and euclid, poisoned outputs)', async () => {
    const [B, V, D, K] = [13, 257, 16, 10];
    await checkOp({
      name: `topk dot scores B${B} V${V} D${D} K${K}`,
      inputs: [{ shape: [B, D], grad: false }, { shape: [V, D], grad: false }],
      run: ([q, t]) => {
        const r = topkScores({ mode: 'dot', query: q!, table: t!, k: K });
        r.ids.dispose();
        return r.scores;
      },
      ref: ([q, t]) => ({ data: refTopkScores({ mode: 'dot', tensors: [q!, t!], k: K }).scores, shape: [B, K] }),
    });
    await checkOp({
      name: `topk euclid scores B${B} V${V} D${D} K${K}`,
      inputs: [{ shape: [B, D], grad: false }, { shape: [B, D], grad: false }, { shape: [V, D], grad: false }, { shape: [V, D], grad: false }],
      run: ([u, m, X, Q]) => {
        const r = topkScores({ mode: 'euclid', query: { u: u!, m: m! }, table: { X: X!, Q: Q! }, k: K, alpha: 0.2 });
        r.ids.dispose();
        return r.scores;
      },
      ref: (xs) => ({ data: refTopkScores({ mode: 'euclid', tensors: xs, k: K, alpha: 0.2 }).scores, shape: [B, K] }),
    });
  });

  it('defaultChunks: one chunk once the users fill the adapter or the catalogue is short, more on a GPU', () => {
    expect(defaultChunks(256, 12103, 10, true)).toBe(1); // 256 users fill llvmpipe
    expect(defaultChunks(1, 100, 10, false)).toBe(1); // a chunk holds at least 64 items
    expect(defaultChunks(1, 12103, 10, true)).toBe(64); // one user, a long catalogue: the most chunks
    expect([defaultChunks(16, 12103, 10, true), defaultChunks(16, 12103, 10, false)]).toEqual([16, 64]); // a GPU wants more threads
  });

  it('users around the workgroup size (B = 63, 64, 65) and workgroup sizes 32 / 64 / 128', async () => {
    for (const B of [63, 64, 65]) {
      const d = makeData('euclid', B, 37, 4, 21 + B, { ints: 2 });
      for (const workgroupSize of [32, 64, 128]) await compare(`B=${B} wg=${workgroupSize}`, d, { k: 6, alpha: 0.75, answer: answers(B, 37, B), workgroupSize });
    }
  });

  it('magnitudes +-1000 (dot D=64 and euclid D=150, alpha 0.2; tolerance-aware order)', async () => {
    const dd = makeData('dot', 17, 211, 64, 30, { range: 1000 });
    // Dot products reach ~1e7; f32 accumulation over 64 terms keeps ~1e-6 relative.
    await compare('dot +-1000', dd, { k: 20, excludeIds: [0], exclude: makeHistory(17, 211, 31, 30), answer: answers(17, 211, 32) }, 1e2);
    const de = makeData('euclid', 13, 199, 150, 33, { range: 1000 });
    // Distances reach ~2e8 (150 terms of up to 4e6).
    await compare('euclid +-1000', de, { k: 50, alpha: 0.2, exclude: makeHistory(13, 199, 34, 30), answer: answers(13, 199, 35) }, 2e3);
  });

  it('catalogue sizes of the data sets: V = 12103 (Beauty, dot D=64, K=20) and V = 1683 (ML-100k, euclid D=150, K=50)', async () => {
    const db = makeData('dot', 5, 12103, 64, 40);
    await compare('Beauty', db, { k: 20, excludeIds: [0, 12102], exclude: makeHistory(5, 12103, 41, 50), answer: answers(5, 12103, 42) }, 1e-4);
    await compare('Beauty zero', db, { k: 20, historyMode: 'zero', exclude: makeHistory(5, 12103, 41, 50), answer: answers(5, 12103, 42) }, 1e-4);
    const dm = makeData('euclid', 7, 1683, 150, 43, { range: 0.05 });
    await compare('ML-100k', dm, { k: 50, alpha: 0.2, excludeIds: [0], exclude: makeHistory(7, 1683, 44, 200), answer: answers(7, 1683, 45) }, 1e-6);
  });

  it('users in several scratch blocks (B = 67, 16 per block; dot and euclid, chunked too)', async () => {
    for (const mode of ['dot', 'euclid'] as const) {
      const d = makeData(mode, 67, 131, mode === 'dot' ? 12 : 6, 60, { ints: 2, dupRows: true });
      const x: Extra = { k: 7, alpha: 0.5, exclude: makeHistory(67, 131, 61, 20), excludeIds: [0], answer: answers(67, 131, 62), blockUsers: 16 };
      await compare(`${mode} blocks`, d, x);
      await compare(`${mode} blocks chunked`, d, { ...x, chunks: 3 });
    }
  });

  it("long catalogues stay inside llvmpipe's loop budget (65,535 loop iterations per invocation)", async () => {
    // llvmpipe silently stops an invocation's loops after 65,535 iterations in total: one selection chunk of
    // 70,001 items would lose its tail, so the op splits it (2 chunks here although 1 is asked for).
    const d = makeData('dot', 3, 70001, 1, 63, { ints: 1000 });
    await compare('V=70001', d, { k: 5, chunks: 1, answer: [70000, 1, 65000], excludeIds: [0] });
  });

  it('a history longer than the loop budget (70,000 items for one user; host arrays and GPU tensors)', async () => {
    // topk_exclude_bits loops over a user's history: past llvmpipe's 65,535 iterations it is taken in pieces.
    const B = 2;
    const V = 100000;
    const d = makeData('dot', B, V, 4, 70, { ints: 2 });
    const rnd = ref.mulberry32(71);
    const items = Array.from({ length: 70000 }, () => Math.floor(rnd() * V));
    const hist = { offsets: [0, items.length, items.length + 3], items: [...items, 1, 2, 3] };
    const x: Extra = { k: 6, exclude: hist, excludeIds: [0], answer: [items[5]!, 4] };
    await compare('long history', d, x);
    await compare('long history (tensors)', d, { ...x, excludeAsTensors: true });
  });

  it('a forced small loop budget (LOOP_BUDGET=2000): more selection chunks, history pieces', async () => {
    const prev = flags.loopBudget;
    flags.loopBudget = 2000;
    try {
      const B = 5;
      const V = 9001;
      const d = makeData('euclid', B, V, 3, 72, { ints: 2, dupRows: true });
      const hist = makeHistory(B, V, 73, 4000);
      await compare('budget 2000', d, { k: 9, alpha: 0.5, exclude: hist, excludeIds: [0], answer: answers(B, V, 74), chunks: 1 });
      await compare('budget 2000 (tensors)', d, { k: 9, alpha: 0.5, exclude: hist, answer: answers(B, V, 74), excludeAsTensors: true });
    } finally {
      flags.loopBudget = prev;
    }
  });

  it('rejects bad arguments', () => {
    const q = Tensor.from(new Float32Array(4), [2, 2]);
    const t = Tensor.from(new Float32Array(6), [3, 2]);
    expect(() => topkScores({ mode: 'dot', query: q, table: t, k: 0 })).toThrow(/k = 0/);
    expect(() => topkScores({ mode: 'euclid', query: q, table: t, k: 1 })).toThrow(/euclid/);
    expect(() => topkScores({ mode: 'dot', query: q, table: t, k: 1, answer: [1] })).toThrow(/answer has 1/);
    q.dispose();
    t.dispose();
  });
});
