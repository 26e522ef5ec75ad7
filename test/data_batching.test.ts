// Batching: left padding / truncation, per-protocol batch builders, packed (varlen) layout, seeded
// shuffles and the one-step-ahead prefetcher.
import { describe, it, expect } from 'vitest';
import {
  leftPad, leftPadInto, buildFinetuneTrainBatch, buildSampledEvalBatch, buildFullEvalBatch, buildPretrainBatch,
  attributeMultiHot, itemAttributeMatrix, buildAttRecBatch, attrecEpochNegatives, packedLayout, packPadded, packBatch,
  epochOrder, numBatches, batchIndices, prefetch,
} from '../models/data/batching.js';
import { pretrainPrefixes, longSequence, attrecWindows, prefixItems } from '../models/data/splits.js';
import { Rng } from '../models/data/sampling.js';

const arr = (a: ArrayLike<number>): number[] => Array.from(a);
const seq = (...v: number[]): Int32Array => Int32Array.from(v);
const row = (a: Int32Array, b: number, L: number): number[] => arr(a.subarray(b * L, (b + 1) * L));

describe('left padding', () => {
  it('pads with 0 on the left and keeps the last L items', () => {
    const { ids, lengths } = leftPad([seq(1, 2, 3), seq(1, 2, 3, 4, 5, 6, 7), seq()], 5);
    expect(row(ids, 0, 5)).toEqual([0, 0, 1, 2, 3]);
    expect(row(ids, 1, 5)).toEqual([3, 4, 5, 6, 7]);
    expect(row(ids, 2, 5)).toEqual([0, 0, 0, 0, 0]);
    expect(arr(lengths)).toEqual([3, 5, 0]);
  });
  it('overwrites stale data in a reused buffer', () => {
    const out = new Int32Array(4).fill(9);
    expect(leftPadInto(out, 0, 4, [5])).toBe(1);
    expect(arr(out)).toEqual([0, 0, 0, 5]);
  });
});

describe('S3-Rec batches', () => {
  const seqs = [seq(1, 2, 3, 4, 5, 6, 7, 8), seq(11, 12, 13, 14, 15)];
  const itemSize = 17; // maxItem 15, mask 16

  it('fine-tuning: inputs items[:-3], targets items[1:-2], one negative per real position', () => {
    const b = buildFinetuneTrainBatch(seqs, [0, 1], { maxLen: 4, itemSize, rng: new Rng(1) });
    expect(b.size).toBe(2);
    expect(row(b.inputIds, 0, 4)).toEqual([2, 3, 4, 5]); // [1..5] truncated to the last 4
    expect(row(b.targetPos, 0, 4)).toEqual([3, 4, 5, 6]);
    expect(row(b.inputIds, 1, 4)).toEqual([0, 0, 11, 12]);
    expect(row(b.targetPos, 1, 4)).toEqual([0, 0, 12, 13]);
    expect(arr(b.lengths)).toEqual([4, 2]);
    expect(row(b.targetNeg, 1, 4).slice(0, 2)).toEqual([0, 0]);
    const bad: number[] = [];
    const seen = new Set<number>();
    for (let t = 0; t < 2000; t++) {
      const bb = buildFinetuneTrainBatch(seqs, [1, 0], { maxLen: 4, itemSize, rng: new Rng(t) });
      for (const v of row(bb.targetNeg, 0, 4).slice(2)) if (!(v >= 1 && v <= 16) || arr(seqs[1]!).includes(v)) bad.push(v);
      // the FULL sequence is excluded (valid/test items 7 and 8 too)
      for (const v of row(bb.targetNeg, 1, 4)) {
        if (!(v >= 1 && v <= 16) || arr(seqs[0]!).includes(v)) bad.push(v);
        seen.add(v);
      }
    }
    expect(bad).toEqual([]);
    expect([...seen].sort((a, b) => a - b)).toEqual([9, 10, 11, 12, 13, 14, 15, 16]); // mask id 16 included
  });

  it('sampled evaluation: [answer] + 99 negatives, the same negatives for valid and test', () => {
    const neg = Int32Array.from({ length: 2 * 99 }, (_, i) => 100 + i);
    const v = buildSampledEvalBatch(seqs, neg, [1], 'valid', { maxLen: 5 });
    expect(row(v.inputIds, 0, 5)).toEqual([0, 0, 11, 12, 13]);
    expect(arr(v.answers)).toEqual([14]);
    expect(v.numCandidates).toBe(100);
    expect(arr(v.candidates)).toEqual([14, ...arr(neg.subarray(99, 198))]);
    const t = buildSampledEvalBatch(seqs, neg, [1, 0], 'test', { maxLen: 5 });
    expect(arr(t.answers)).toEqual([15, 8]);
    expect(row(t.inputIds, 1, 5)).toEqual([3, 4, 5, 6, 7]);
    expect(arr(t.candidates.subarray(100, 200))).toEqual([8, ...arr(neg.subarray(0, 99))]);
  });

  it('full ranking: the whole history (not only the last L) as CSR', () => {
    const f = buildFullEvalBatch(seqs, [0, 1], 'valid', { maxLen: 3 });
    expect(row(f.inputIds, 0, 3)).toEqual([4, 5, 6]);
    expect(arr(f.answers)).toEqual([7, 14]);
    expect(arr(f.historyOffsets)).toEqual([0, 6, 9]);
    expect(arr(f.historyItems)).toEqual([1, 2, 3, 4, 5, 6, 11, 12, 13]);
  });

  it('pretraining: six left-padded sequences per prefix sample', () => {
    const prefixes = pretrainPrefixes(seqs, 50);
    const idx = [5, 0, 7]; // [1..6], [1], [11, 12]
    const b = buildPretrainBatch(seqs, prefixes, idx, { itemSize, maskId: 16, longSequence: longSequence(seqs), rng: new Rng(2), maxLen: 8 });
    expect(arr(b.lengths)).toEqual([6, 1, 2]);
    expect(row(b.pos, 0, 8)).toEqual([0, 0, 1, 2, 3, 4, 5, 6]);
    expect(row(b.pos, 1, 8)).toEqual([0, 0, 0, 0, 0, 0, 0, 1]);
    expect(row(b.pos, 2, 8)).toEqual([0, 0, 0, 0, 0, 0, 11, 12]);
    expect(row(b.masked, 1, 8)).toEqual([0, 0, 0, 0, 0, 0, 0, 16]);
    expect(arr(prefixItems(seqs, prefixes, 7))).toEqual([11, 12]);
    for (const f of ['masked', 'neg', 'maskedSegment', 'posSegment', 'negSegment'] as const) {
      for (let r = 0; r < 3; r++) {
        const pad = 8 - b.lengths[r]!;
        expect(row(b[f], r, 8).slice(0, pad).every((v) => v === 0)).toBe(true);
        expect(row(b[f], r, 8).slice(pad).every((v) => v > 0)).toBe(true);
      }
    }
  });

  it('attribute multi-hot targets (pad -> zeros) and the per-item matrix', () => {
    const attrs = [seq(), seq(1, 3), seq(2), seq()];
    const m = attributeMultiHot(seq(0, 1, 2), attrs, 4);
    expect(arr(m)).toEqual([0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0]);
    expect(arr(itemAttributeMatrix(attrs, 4))).toEqual([0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]);
  });
});

describe('AttRec batches', () => {
  it('copies windows and pairs each target with a negative that is not one of the targets', () => {
    const w = attrecWindows([seq(1, 2, 3, 4, 5, 6, 7, 8, 9), seq(3, 4, 5, 6, 7, 8, 9, 10)], 5, 3);
    for (let s = 0; s < 300; s++) {
      const b = buildAttRecBatch(w, [2, 0], { numItems: 12, rng: new Rng(s) });
      expect(arr(b.users)).toEqual([1, 0]);
      expect(row(b.inputs, 0, 5)).toEqual([3, 4, 5, 6, 7]);
      expect(row(b.targets, 0, 3)).toEqual([8, 9, 10]);
      for (let r = 0; r < 2; r++) for (const v of row(b.negatives, r, 3)) {
        expect(v >= 1 && v <= 11).toBe(true);
        expect(row(b.targets, r, 3)).not.toContain(v);
      }
    }
    const all = attrecEpochNegatives(w, 12, new Rng(0));
    expect(all.length).toBe(w.count * 3);
  });
});

describe('packed (varlen) layout', () => {
  it('offsets, positions (slots of the padded layout) and seqIndex', () => {
    const lay = packedLayout(Int32Array.from([2, 0, 3]), 4);
    expect(lay.total).toBe(5);
    expect(arr(lay.offsets)).toEqual([0, 2, 2, 5]);
    expect(arr(lay.positions)).toEqual([2, 3, 1, 2, 3]); // the last real token always sits at slot L-1
    expect(arr(lay.seqIndex)).toEqual([0, 0, 2, 2, 2]);
    const padded = Int32Array.from([0, 0, 7, 8, 0, 0, 0, 0, 0, 4, 5, 6]);
    expect(arr(packPadded(padded, lay))).toEqual([7, 8, 4, 5, 6]);
    expect(() => packedLayout(Int32Array.from([5]), 4)).toThrow(RangeError);
  });

  it('packBatch packs every requested field of a real batch consistently', () => {
    const seqs = [seq(1, 2, 3, 4, 5, 6, 7, 8, 9), seq(11, 12, 13, 14)];
    const b = buildFinetuneTrainBatch(seqs, [0, 1], { maxLen: 5, itemSize: 16, rng: new Rng(4) });
    const p = packBatch(b, ['inputIds', 'targetPos', 'targetNeg']);
    expect(arr(p.offsets)).toEqual([0, 5, 6]);
    expect(arr(p.inputIds)).toEqual([2, 3, 4, 5, 6, 11]);
    expect(arr(p.targetPos)).toEqual([3, 4, 5, 6, 7, 12]);
    expect(arr(p.positions)).toEqual([0, 1, 2, 3, 4, 4]);
    expect(arr(p.targetNeg).every((v) => v > 0)).toBe(true);
  });
});

describe('shuffling and batch order', () => {
  it('epochOrder is a seeded permutation, reproducible per (seed, epoch), different across epochs', () => {
    const a = epochOrder(100, 42, 0);
    expect(arr(a).sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(epochOrder(100, 42, 0)).toEqual(a);
    expect(epochOrder(100, 42, 1)).not.toEqual(a);
    expect(epochOrder(100, 43, 0)).not.toEqual(a);
  });

  it('batchIndices keeps or drops the last partial batch', () => {
    const order = Int32Array.from({ length: 10 }, (_, i) => i);
    expect([...batchIndices(order, 4)].map(arr)).toEqual([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);
    expect([...batchIndices(order, 4, true)].map(arr)).toEqual([[0, 1, 2, 3], [4, 5, 6, 7]]);
    expect([numBatches(10, 4), numBatches(10, 4, true), numBatches(150258, 100)]).toEqual([3, 2, 1503]);
  });
});

describe('prefetch', () => {
  function* source(n: number, log: string[]): Generator<number> {
    for (let i = 0; i < n; i++) {
      log.push(`build ${i}`);
      yield i;
    }
  }

  it('builds and uploads batch i+1 after step i is queued and before it is awaited', async () => {
    const log: string[] = [];
    const batches = prefetch(source(3, log), (i) => {
      log.push(`upload ${i}`);
      return { gpu: i };
    });
    for (const b of batches) {
      log.push(`submit ${b.gpu}`);
      const done = Promise.resolve().then(() => log.push(`done ${b.gpu}`)); // the "GPU" finishes later
      batches.prepareNext();
      expect(batches.hasPrepared).toBe(b.gpu < 2);
      await done;
    }
    expect(log).toEqual([
      'build 0', 'upload 0', 'submit 0', 'build 1', 'upload 1', 'done 0',
      'submit 1', 'build 2', 'upload 2', 'done 1',
      'submit 2', 'done 2',
    ]);
  });

  it('without prepareNext it still yields every batch once, in order', () => {
    const log: string[] = [];
    expect([...prefetch(source(4, log), (i) => i * 10)]).toEqual([0, 10, 20, 30]);
  });

  it('disposes a prepared batch that is never handed out (early break)', () => {
    const disposed: number[] = [];
    const batches = prefetch([1, 2, 3], (i) => i, (u) => disposed.push(u));
    for (const b of batches) {
      batches.prepareNext();
      if (b === 1) break;
    }
    expect(disposed).toEqual([2]);
    expect(() => [...batches]).toThrow(/only once/);
  });
});
