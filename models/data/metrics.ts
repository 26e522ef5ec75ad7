// Ranking metrics on the CPU (plain arrays; the GPU top-K / score kernels feed them and test against them).
//  - Sampled protocol (S3REC_SPEC §6, run_finetune_sample.py `get_sample_scores`): scores `[B, 100]` in the
//    official layout `[answer] + 99 negatives`; rank = 0-based position of column 0;
//    HR@k = rank < k, NDCG@k = 1/log2(rank+2) if rank < k, MRR = 1/(rank+1) over all candidates.
//  - Full ranking (run_finetune_full.py `get_full_sort_score`): HR@k (= recall with one answer) and NDCG@k
//    for k in {5,10,20}. Default `compat: 'exclude'`: candidates are 1..itemSize-1 minus mask_id minus the
//    user's history (the answer itself always stays a candidate). `compat: 'official'` reproduces the
//    script: every id 0..itemSize-1 (pad 0 and mask_id included) is a candidate and history scores are SET
//    TO 0, not excluded (an answer that is in the history therefore scores 0 too).
//  - AttRec (ATTREC_SPEC §5, SeqRecMetrics.evaluate1): candidates {1..num_item-1} minus the user's training
//    items; HR@50, MRR over the whole list, AUC = (|cands|-1-rank)/(|cands|-1).
// Ties (a candidate with exactly the answer's score) are resolved by a fixed rule, never by sort order:
//   'pessimistic' (default): every tied candidate ranks AHEAD of the answer;
//   'optimistic': tied candidates rank behind it.
// numpy's argsort in the official scripts is not guaranteed stable; for a 100-wide row with ties it put the
// answer (column 0) first in our checks, i.e. it behaves like 'optimistic'. The default is 'pessimistic' so
// that a degenerate model (constant or NaN scores) gets the worst rank, not HR@1 = 1.
// NaN scores count as -Infinity (so a NaN answer ties with every NaN / -Infinity candidate).

export type TieRule = 'pessimistic' | 'optimistic';

const clean = (x: number): number => (Number.isNaN(x) ? -Infinity : x);

/** 0-based rank of column 0 in each row of `scores` (`[batch, numCandidates]`, row-major). */
export function sampledRanks(scores: ArrayLike<number>, batch: number, numCandidates = 100, ties: TieRule = 'pessimistic'): Int32Array {
  if (scores.length !== batch * numCandidates) throw new RangeError(`sampledRanks: ${scores.length} scores for ${batch}x${numCandidates}`);
  const pess = ties === 'pessimistic';
  const ranks = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    const base = b * numCandidates;
    const p = clean(scores[base]!);
    let r = 0;
    for (let j = 1; j < numCandidates; j++) {
      const s = clean(scores[base + j]!);
      if (s > p || (pess && s === p)) r++;
    }
    ranks[b] = r;
  }
  return ranks;
}

export interface FullRankOptions {
  /** 'exclude' (default) or 'official' (run_finetune_full.py quirks, see the header). */
  compat?: 'exclude' | 'official';
  /** The mask token id (S3-Rec: maxItem+1), excluded in 'exclude' mode; null when the catalogue has none. */
  maskId: number | null;
  ties?: TieRule;
}

let histMark = new Uint8Array(0);

/**
 * CPU reference: 0-based rank of `answer` among the full catalogue `scores` (one row, length itemSize),
 * with the user's `history` handled per `opts.compat`.
 */
export function rankFullCatalogue(scores: ArrayLike<number>, history: ArrayLike<number>, answer: number, opts: FullRankOptions): number {
  const V = scores.length;
  const official = (opts.compat ?? 'exclude') === 'official';
  const pess = (opts.ties ?? 'pessimistic') === 'pessimistic';
  if (!Number.isInteger(answer) || answer < 0 || answer >= V) throw new RangeError(`rankFullCatalogue: answer ${answer} outside 0..${V - 1}`);
  if (!official && (answer === 0 || answer === opts.maskId)) throw new RangeError(`rankFullCatalogue: answer ${answer} is not a candidate (pad or mask id)`);
  if (histMark.length < V) histMark = new Uint8Array(V);
  for (let i = 0; i < history.length; i++) {
    const h = history[i]!;
    if (h >= 0 && h < V) histMark[h] = 1;
  }
  let r = 0;
  if (official) {
    const a = histMark[answer] ? 0 : clean(scores[answer]!);
    for (let j = 0; j < V; j++) {
      if (j === answer) continue;
      const s = histMark[j] ? 0 : clean(scores[j]!);
      if (s > a || (pess && s === a)) r++;
    }
  } else {
    const a = clean(scores[answer]!);
    const mask = opts.maskId ?? -1;
    for (let j = 1; j < V; j++) {
      if (j === answer || j === mask || histMark[j]) continue;
      const s = clean(scores[j]!);
      if (s > a || (pess && s === a)) r++;
    }
  }
  for (let i = 0; i < history.length; i++) {
    const h = history[i]!;
    if (h >= 0 && h < V) histMark[h] = 0;
  }
  return r;
}

/** rankFullCatalogue over a batch: `scores [B*V]`, histories as CSR (`offsets [B+1]`, `items`). */
export function rankFullCatalogueBatch(scores: Float32Array | Float64Array, V: number, historyOffsets: Int32Array, historyItems: Int32Array, answers: Int32Array, opts: FullRankOptions): Int32Array {
  const B = answers.length;
  if (scores.length !== B * V) throw new RangeError(`rankFullCatalogueBatch: ${scores.length} scores for ${B}x${V}`);
  if (historyOffsets.length !== B + 1) throw new RangeError(`rankFullCatalogueBatch: ${historyOffsets.length} history offsets for ${B} rows`);
  const ranks = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    const hist = historyItems.subarray(historyOffsets[b]!, historyOffsets[b + 1]!);
    ranks[b] = rankFullCatalogue(scores.subarray(b * V, (b + 1) * V), hist, answers[b]!, opts);
  }
  return ranks;
}

/** Rank of `answer` in a top-K id list (best first): its index, or Infinity when it is not in the list. */
export function rankFromTopK(topIds: ArrayLike<number>, answer: number): number {
  for (let i = 0; i < topIds.length; i++) if (topIds[i] === answer) return i;
  return Infinity;
}

/** rankFromTopK over `topIds [B*K]`. Ranks beyond K are Infinity: HR/NDCG@k<=K are exact, MRR is not. */
export function ranksFromTopK(topIds: ArrayLike<number>, K: number, answers: ArrayLike<number>): Float64Array {
  const B = answers.length;
  if (topIds.length !== B * K) throw new RangeError(`ranksFromTopK: ${topIds.length} ids for ${B}x${K}`);
  const out = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    out[b] = Infinity;
    for (let i = 0; i < K; i++) {
      if (topIds[b * K + i] === answers[b]) {
        out[b] = i;
        break;
      }
    }
  }
  return out;
}

/**
 * AttRec evaluation of one user (ATTREC_SPEC §5): rank of `answer` among {1..numItems-1} minus the
 * training items (the answer stays a candidate). `scores` has one value per item id (length numItems);
 * AttRec's model outputs a distance, so pass `higherIsBetter: false` (or negated distances).
 */
export function rankAttRec(scores: ArrayLike<number>, trainItems: ArrayLike<number>, answer: number, opts: { higherIsBetter?: boolean; ties?: TieRule } = {}): { rank: number; candidates: number } {
  const V = scores.length;
  let s: ArrayLike<number> = scores;
  if (opts.higherIsBetter === false) {
    const neg = new Float64Array(V);
    for (let j = 0; j < V; j++) neg[j] = -scores[j]!;
    s = neg;
  }
  const rank = rankFullCatalogue(s, trainItems, answer, { compat: 'exclude', maskId: null, ties: opts.ties ?? 'pessimistic' });
  const seen = new Set<number>();
  for (let i = 0; i < trainItems.length; i++) {
    const t = trainItems[i]!;
    if (t >= 1 && t < V && t !== answer) seen.add(t);
  }
  return { rank, candidates: V - 1 - seen.size };
}

// ---------------------------------------------------------------------------------------------------------
// Per-user values and accumulation

export interface RankMetricSpec {
  /** Cut-offs: HR@k for each k, NDCG@k for each k > 1 (NDCG@1 = HR@1) unless `ndcgAt1`. */
  ks: readonly number[];
  mrr: boolean;
  ndcgAt1?: boolean;
}

/** Sampled protocol: HR@1, HR@5, NDCG@5, HR@10, NDCG@10, MRR (the official print order). */
export const SAMPLED_METRICS: RankMetricSpec = { ks: [1, 5, 10], mrr: true };
/** Full ranking: HR@5, NDCG@5, HR@10, NDCG@10, HR@20, NDCG@20. */
export const FULL_METRICS: RankMetricSpec = { ks: [5, 10, 20], mrr: false };

/** Metric values of one user from a 0-based rank (Infinity = not ranked / beyond a top-K list). */
export function userRankMetrics(rank: number, spec: RankMetricSpec = SAMPLED_METRICS): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of spec.ks) {
    out[`HR@${k}`] = rank < k ? 1 : 0;
    if (k > 1 || spec.ndcgAt1) out[`NDCG@${k}`] = rank < k ? 1 / Math.log2(rank + 2) : 0;
  }
  if (spec.mrr) out['MRR'] = 1 / (rank + 1);
  return out;
}

/** AttRec values of one user: HR@k (k = 50), MRR over the whole list, AUC. */
export function attrecUserMetrics(rank: number, candidates: number, k = 50): Record<string, number> {
  return {
    [`HR@${k}`]: rank < k ? 1 : 0,
    MRR: 1 / (rank + 1),
    AUC: candidates > 1 ? (candidates - 1 - rank) / (candidates - 1) : 1,
  };
}

/** Sums per-user metric values across batches (float64) and returns the means over users. */
export class MetricAccumulator {
  private readonly sums = new Map<string, number>();
  private n = 0;

  /** Adds one user's values (every user must report the same keys). */
  add(values: Readonly<Record<string, number>>): this {
    for (const [k, v] of Object.entries(values)) this.sums.set(k, (this.sums.get(k) ?? 0) + v);
    this.n++;
    return this;
  }

  /** Adds one user per rank. */
  addRanks(ranks: ArrayLike<number>, spec: RankMetricSpec = SAMPLED_METRICS): this {
    for (let i = 0; i < ranks.length; i++) this.add(userRankMetrics(ranks[i]!, spec));
    return this;
  }

  /** Adds AttRec users (ranks and candidate counts aligned). */
  addAttRec(ranks: ArrayLike<number>, candidates: ArrayLike<number>, k = 50): this {
    for (let i = 0; i < ranks.length; i++) this.add(attrecUserMetrics(ranks[i]!, candidates[i]!, k));
    return this;
  }

  get users(): number {
    return this.n;
  }

  /** Means over the users added so far (keys in first-seen order); empty before any user. */
  means(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of this.sums) out[k] = v / this.n;
    return out;
  }

  reset(): void {
    this.sums.clear();
    this.n = 0;
  }
}

/** Sampled-protocol means (HR@1, HR@5, NDCG@5, HR@10, NDCG@10, MRR by default). */
export function sampledMetrics(ranks: ArrayLike<number>, ks: readonly number[] = SAMPLED_METRICS.ks): Record<string, number> {
  return new MetricAccumulator().addRanks(ranks, { ks, mrr: true }).means();
}

/** Full-ranking means (HR@5, NDCG@5, HR@10, NDCG@10, HR@20, NDCG@20 by default). */
export function fullRankingMetrics(ranks: ArrayLike<number>, ks: readonly number[] = FULL_METRICS.ks, opts: { mrr?: boolean } = {}): Record<string, number> {
  return new MetricAccumulator().addRanks(ranks, { ks, mrr: opts.mrr ?? false, ndcgAt1: false }).means();
}

/**
 * A fixed-width text table, one row per entry, columns in first-seen key order, values with `digits`
 * decimals ('-' when a row lacks a column).
 *
 *   stage  HR@1    HR@5    NDCG@5  HR@10   NDCG@10  MRR
 *   valid  0.2197  0.4626  0.3473  0.5687  0.3816   0.3390
 */
export function formatMetricsTable(rows: ReadonlyArray<{ name: string; metrics: Readonly<Record<string, number>> }>, opts: { digits?: number; title?: string } = {}): string {
  const digits = opts.digits ?? 4;
  const cols: string[] = [];
  for (const r of rows) for (const k of Object.keys(r.metrics)) if (!cols.includes(k)) cols.push(k);
  const first = opts.title ?? '';
  const nameW = Math.max(first.length, ...rows.map((r) => r.name.length));
  const cell = (v: number | undefined): string => (v === undefined ? '-' : Number.isFinite(v) ? v.toFixed(digits) : String(v));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r.metrics[c]).length)));
  const line = (name: string, cells: string[]): string => [name.padEnd(nameW), ...cells.map((c, i) => c.padEnd(widths[i]!))].join('  ').trimEnd();
  return [line(first, cols), ...rows.map((r) => line(r.name, cols.map((c) => cell(r.metrics[c]))))].join('\n');
}
