// Hand-computed cases for models/data/metrics.ts (sampled protocol, full ranking incl. the official compat
// quirks, AttRec, tie rules, accumulation, table formatting).
import { describe, it, expect } from 'vitest';
import {
  sampledRanks, sampledMetrics, fullRankingMetrics, rankFullCatalogue, rankFullCatalogueBatch, rankFromTopK,
  ranksFromTopK, rankAttRec, attrecUserMetrics, MetricAccumulator, userRankMetrics, formatMetricsTable, FULL_METRICS,
} from '../models/data/metrics.js';

describe('sampled protocol ranks', () => {
  // Row: answer 0.5; negatives 0.9 (ahead), 0.5 (tie), 0.1, -1 (behind).
  const row = [0.5, 0.9, 0.5, 0.1, -1];

  it('counts strictly greater negatives and resolves ties by the rule', () => {
    expect(Array.from(sampledRanks(row, 1, 5, 'pessimistic'))).toEqual([2]);
    expect(Array.from(sampledRanks(row, 1, 5, 'optimistic'))).toEqual([1]);
    expect(Array.from(sampledRanks(row, 1, 5))).toEqual([2]); // default = pessimistic
  });

  it('handles several rows and the answer in column 0 only', () => {
    const scores = Float32Array.from([
      3, 1, 2, 0, // best -> rank 0
      0, 1, 2, 3, // worst -> rank 3
      2, 3, 1, 2, // one ahead, one tie
    ]);
    expect(Array.from(sampledRanks(scores, 3, 4, 'pessimistic'))).toEqual([0, 3, 2]);
    expect(Array.from(sampledRanks(scores, 3, 4, 'optimistic'))).toEqual([0, 3, 1]);
  });

  it('a constant row gets the worst rank by default (no free HR@1 for a degenerate model)', () => {
    const flat = new Float32Array(100);
    expect(sampledRanks(flat, 1)[0]).toBe(99);
    expect(sampledRanks(flat, 1, 100, 'optimistic')[0]).toBe(0);
  });

  it('treats NaN as -Infinity', () => {
    expect(sampledRanks([NaN, 0, 0], 1, 3)[0]).toBe(2);
    expect(sampledRanks([NaN, NaN, -Infinity], 1, 3, 'pessimistic')[0]).toBe(2);
    expect(sampledRanks([NaN, NaN, -Infinity], 1, 3, 'optimistic')[0]).toBe(0);
    expect(sampledRanks([1, NaN, 0], 1, 3)[0]).toBe(0);
  });

  it('rejects a score array of the wrong size', () => {
    expect(() => sampledRanks(new Float32Array(99), 1, 100)).toThrow(/99 scores for 1x100/);
  });
});

describe('HR / NDCG / MRR from ranks', () => {
  it('single user, rank 2 (pessimistic tie case above)', () => {
    const m = sampledMetrics([2]);
    expect(Object.keys(m)).toEqual(['HR@1', 'HR@5', 'NDCG@5', 'HR@10', 'NDCG@10', 'MRR']);
    expect(m['HR@1']).toBe(0);
    expect(m['HR@5']).toBe(1);
    expect(m['NDCG@5']).toBeCloseTo(0.5, 12); // 1/log2(4)
    expect(m['NDCG@10']).toBeCloseTo(0.5, 12);
    expect(m['MRR']).toBeCloseTo(1 / 3, 12);
  });

  it('averages over users: ranks 0, 2, 7, 12', () => {
    const m = sampledMetrics(Int32Array.from([0, 2, 7, 12]));
    expect(m['HR@1']).toBeCloseTo(0.25, 12);
    expect(m['HR@5']).toBeCloseTo(0.5, 12);
    expect(m['NDCG@5']).toBeCloseTo((1 + 0.5) / 4, 12);
    expect(m['HR@10']).toBeCloseTo(0.75, 12);
    // 1/log2(9) = 0.31546487678572877
    expect(m['NDCG@10']).toBeCloseTo((1 + 0.5 + 0.31546487678572877) / 4, 12);
    expect(m['MRR']).toBeCloseTo((1 + 1 / 3 + 1 / 8 + 1 / 13) / 4, 12);
  });

  it('K list is configurable; rank exactly K is a miss', () => {
    const m = sampledMetrics([3, 4], [4]);
    expect(m).toEqual({ 'HR@4': 0.5, 'NDCG@4': expect.closeTo(0.5 * (1 / Math.log2(5)), 12), MRR: expect.closeTo((1 / 4 + 1 / 5) / 2, 12) });
  });

  it('full-ranking keys and values', () => {
    const m = fullRankingMetrics([0, 9, 15, 30]);
    expect(Object.keys(m)).toEqual(['HR@5', 'NDCG@5', 'HR@10', 'NDCG@10', 'HR@20', 'NDCG@20']);
    expect(m['HR@5']).toBe(0.25);
    expect(m['HR@10']).toBe(0.5);
    expect(m['HR@20']).toBe(0.75);
    // NDCG@20 = (1 + 1/log2(11) + 1/log2(17)) / 4 = (1 + 0.28906482631788782 + 0.24465054211822601) / 4
    expect(m['NDCG@20']).toBeCloseTo((1 + 0.28906482631788782 + 0.24465054211822601) / 4, 12);
  });

  it('Infinity (not in a top-K list) counts as a miss with MRR 0', () => {
    expect(userRankMetrics(Infinity)).toEqual({ 'HR@1': 0, 'HR@5': 0, 'NDCG@5': 0, 'HR@10': 0, 'NDCG@10': 0, MRR: 0 });
  });
});

describe('full ranking (rankFullCatalogue)', () => {
  // ids 0..5, maskId 5. history [2], answer 4 (score 0.5).
  const scores = Float32Array.from([9, 0.3, 0.8, -0.2, 0.5, 7]);

  it("'exclude' drops pad 0, mask id and history", () => {
    // candidates {1, 3, 4}: nothing beats 0.5
    expect(rankFullCatalogue(scores, [2], 4, { maskId: 5 })).toBe(0);
    // without the history exclusion item 2 (0.8) is ahead
    expect(rankFullCatalogue(scores, [], 4, { maskId: 5 })).toBe(1);
  });

  it("'official' keeps pad and mask as candidates and zeroes history scores", () => {
    // s' = [9, 0.3, 0, -0.2, 0.5, 7]: ids 0 and 5 are ahead
    expect(rankFullCatalogue(scores, [2], 4, { maskId: 5, compat: 'official' })).toBe(2);
  });

  it('ties with zeroed history scores follow the tie rule', () => {
    const s = Float32Array.from([0.1, -1, 0.7, 0, 0, -3]);
    // official: s' = [0.1, -1, 0, 0(answer), 0, -3]: id0 ahead; ids 2 (zeroed) and 4 tie
    expect(rankFullCatalogue(s, [2], 3, { maskId: 5, compat: 'official', ties: 'pessimistic' })).toBe(3);
    expect(rankFullCatalogue(s, [2], 3, { maskId: 5, compat: 'official', ties: 'optimistic' })).toBe(1);
    // exclude: candidates {1, 3, 4}: only id 4 ties
    expect(rankFullCatalogue(s, [2], 3, { maskId: 5, ties: 'pessimistic' })).toBe(1);
    expect(rankFullCatalogue(s, [2], 3, { maskId: 5, ties: 'optimistic' })).toBe(0);
  });

  it('an answer that is also in the history: official scores it 0, exclude keeps it as a candidate', () => {
    const s = Float32Array.from([0, 0.2, 0.9, 0.1, 0.4, 0]);
    // official: s' = [0, 0 (history), 0 (answer 2, in history), 0.1, 0.4, 0] -> 3 and 4 ahead; 0, 1, 5 tie
    expect(rankFullCatalogue(s, [2, 1], 2, { maskId: 5, compat: 'official', ties: 'optimistic' })).toBe(2);
    expect(rankFullCatalogue(s, [2, 1], 2, { maskId: 5, compat: 'official' })).toBe(5);
    // exclude: candidates {2 (answer), 3, 4}: 0.9 beats both
    expect(rankFullCatalogue(s, [2, 1], 2, { maskId: 5 })).toBe(0);
  });

  it('rejects an answer that cannot be a candidate', () => {
    expect(() => rankFullCatalogue(scores, [], 5, { maskId: 5 })).toThrow(/not a candidate/);
    expect(() => rankFullCatalogue(scores, [], 0, { maskId: 5 })).toThrow(/not a candidate/);
    expect(() => rankFullCatalogue(scores, [], 6, { maskId: 5 })).toThrow(/outside/);
  });

  it('batch version matches per-row calls and leaves no state behind', () => {
    const V = 6;
    const s = Float32Array.from([...scores, 1, 2, 3, 4, 5, 6]);
    const ranks = rankFullCatalogueBatch(s, V, Int32Array.from([0, 1, 3]), Int32Array.from([2, 1, 3]), Int32Array.from([4, 2]), { maskId: 5 });
    // row 1: scores [1..6], history {1,3}, answer 2 (3): candidates {2, 4(5)} -> rank 1
    expect(Array.from(ranks)).toEqual([0, 1]);
    // the history marks of previous calls must not leak
    expect(rankFullCatalogue(scores, [], 4, { maskId: 5 })).toBe(1);
  });

  it('top-K lists', () => {
    expect(rankFromTopK([7, 3, 9], 9)).toBe(2);
    expect(rankFromTopK([7, 3, 9], 4)).toBe(Infinity);
    const r = ranksFromTopK(Int32Array.from([7, 3, 9, 1, 2, 3]), 3, [3, 5]);
    expect(Array.from(r)).toEqual([1, Infinity]);
    const m = fullRankingMetrics(r, [1, 2]);
    expect(m['HR@1']).toBe(0);
    expect(m['HR@2']).toBe(0.5);
    expect(FULL_METRICS.ks).toEqual([5, 10, 20]);
  });
});

describe('AttRec evaluation', () => {
  it('ranks distances among unseen items and computes AUC', () => {
    // ids 0..5; distances (smaller = better); training items {2, 3}; answer 4 (0.5)
    const dist = Float32Array.from([0, 1.0, 0.2, 3.0, 0.5, 0.4]);
    const { rank, candidates } = rankAttRec(dist, [2, 3], 4, { higherIsBetter: false });
    expect(rank).toBe(1); // item 5 (0.4) is closer
    expect(candidates).toBe(3); // {1, 4, 5}
    expect(attrecUserMetrics(rank, candidates)).toEqual({ 'HR@50': 1, MRR: 0.5, AUC: 0.5 });
  });

  it('AUC is 1 for rank 0 and 0 for the last rank; HR@50 misses at rank 50', () => {
    expect(attrecUserMetrics(0, 101)['AUC']).toBe(1);
    expect(attrecUserMetrics(100, 101)['AUC']).toBe(0);
    expect(attrecUserMetrics(50, 101)['HR@50']).toBe(0);
    expect(attrecUserMetrics(49, 101)['HR@50']).toBe(1);
  });

  it('accumulates means over users', () => {
    const acc = new MetricAccumulator().addAttRec([0, 3], [5, 5]);
    expect(acc.users).toBe(2);
    expect(acc.means()).toEqual({ 'HR@50': 1, MRR: (1 + 0.25) / 2, AUC: (1 + 0.25) / 2 });
  });
});

describe('MetricAccumulator and the table', () => {
  it('sums across batches exactly like one call over all users', () => {
    const acc = new MetricAccumulator();
    acc.addRanks([0, 2]);
    acc.addRanks(Int32Array.from([7, 12]));
    expect(acc.users).toBe(4);
    expect(acc.means()).toEqual(sampledMetrics([0, 2, 7, 12]));
    acc.reset();
    expect(acc.users).toBe(0);
    expect(acc.means()).toEqual({});
  });

  it('formats a fixed-width table', () => {
    const text = formatMetricsTable(
      [
        { name: 'valid', metrics: { 'HR@1': 0.21974, MRR: 0.339 } },
        { name: 'test', metrics: { 'HR@1': 0.2, MRR: 1 / 3, 'HR@10': 0.5 } },
      ],
      { title: 'stage' },
    );
    expect(text).toBe(['stage  HR@1    MRR     HR@10', 'valid  0.2197  0.3390  -', 'test   0.2000  0.3333  0.5000'].join('\n'));
  });
});
