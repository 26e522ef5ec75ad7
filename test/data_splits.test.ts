// Splits and samples on tiny synthetic sequences: S3-Rec leave-one-out, pretraining prefixes and the
// pretraining sample (masking, negatives, segments), AttRec windows.
import { describe, it, expect } from 'vitest';
import {
  pySlice, s3recTrainExample, s3recEvalExample, pretrainPrefixes, prefixItems, longSequence, makePretrainSample,
  attrecWindows, attrecTestInputs,
} from '../models/data/splits.js';
import { Rng, ItemSet } from '../models/data/sampling.js';

const arr = (a: ArrayLike<number>): number[] => Array.from(a);
const seq = (...v: number[]): Int32Array => Int32Array.from(v);

describe('pySlice follows Python slicing', () => {
  const a = seq(10, 11, 12, 13, 14);
  it.each([
    [undefined, -3, [10, 11]],
    [1, -2, [11, 12]],
    [-52, -2, [10, 11, 12]],
    [0, -7, []],
    [3, 1, []],
    [-2, undefined, [13, 14]],
  ] as const)('a[%s:%s]', (lo, hi, want) => {
    expect(arr(pySlice(a, lo, hi))).toEqual(want);
  });
});

describe('S3-Rec leave-one-out (S3REC_SPEC §2)', () => {
  const s = seq(11, 12, 13, 14, 15, 16, 17, 18);
  it('train: items[:-3] -> items[1:-2]', () => {
    const { input, target } = s3recTrainExample(s);
    expect(arr(input)).toEqual([11, 12, 13, 14, 15]);
    expect(arr(target)).toEqual([12, 13, 14, 15, 16]);
  });
  it('valid: items[:-2] -> items[-2]; test: items[:-1] -> items[-1]; history = input', () => {
    const v = s3recEvalExample(s, 'valid');
    expect(arr(v.input)).toEqual([11, 12, 13, 14, 15, 16]);
    expect(v.answer).toBe(17);
    expect(arr(v.history)).toEqual(arr(v.input));
    const t = s3recEvalExample(s, 'test');
    expect(arr(t.input)).toEqual([11, 12, 13, 14, 15, 16, 17]);
    expect(t.answer).toBe(18);
  });
  it('a 3-item sequence has an empty training input', () => {
    expect(arr(s3recTrainExample(seq(1, 2, 3)).input)).toEqual([]);
    expect(() => s3recEvalExample(seq(1, 2), 'valid')).toThrow(/need >= 3/);
  });
});

describe('pretraining prefixes', () => {
  it('one sample per prefix of items[-(L+2):-2], users in order', () => {
    const seqs = [seq(11, 12, 13, 14, 15, 16, 17, 18), seq(1, 2), seq(5, 6, 7)];
    const p = pretrainPrefixes(seqs, 50);
    expect(p.count).toBe(6 + 0 + 1);
    expect(Array.from({ length: p.count }, (_, k) => arr(prefixItems(seqs, p, k)))).toEqual([
      [11], [11, 12], [11, 12, 13], [11, 12, 13, 14], [11, 12, 13, 14, 15], [11, 12, 13, 14, 15, 16], [5],
    ]);
    expect(arr(p.user)).toEqual([0, 0, 0, 0, 0, 0, 2]);
  });
  it('the window keeps the last maxLen items before the validation item', () => {
    const seqs = [seq(11, 12, 13, 14, 15, 16, 17, 18)];
    const p = pretrainPrefixes(seqs, 3);
    expect(Array.from({ length: p.count }, (_, k) => arr(prefixItems(seqs, p, k)))).toEqual([[14], [14, 15], [14, 15, 16]]);
  });
  it('long_sequence concatenates the FULL sequences (valid/test items included)', () => {
    expect(arr(longSequence([seq(1, 2, 3), seq(4, 5)]))).toEqual([1, 2, 3, 4, 5]);
  });
});

describe('pretraining sample (S3REC_SPEC §4.1)', () => {
  const maxItem = 30;
  const itemSize = maxItem + 2;
  const maskId = maxItem + 1;
  const long = Int32Array.from({ length: 200 }, (_, i) => 1 + ((i * 7) % maxItem));

  it('masking, negatives and segments satisfy the official rules over many draws', () => {
    const rng = new Rng(7);
    const scratch = new ItemSet(itemSize);
    const longStr = `,${arr(long).join(',')},`;
    const bad: string[] = []; // plain checks in the hot loop, one expect at the end
    const check = (ok: boolean, what: string): void => {
      if (!ok && bad.length < 10) bad.push(what);
    };
    let maskable = 0;
    let masked = 0;
    const lengths = new Set<number>();
    for (let trial = 0; trial < 3000; trial++) {
      const n = 1 + (trial % 12);
      const prefix = Int32Array.from({ length: n }, (_, i) => 1 + ((trial + i * 5) % maxItem));
      const set = new Set(prefix);
      const s = makePretrainSample(prefix, { itemSize, maskId, longSequence: long, rng, scratch });
      const tag = `trial ${trial}`;
      for (const a of [s.masked, s.pos, s.neg, s.maskedSegment, s.posSegment, s.negSegment]) check(a.length === n, `${tag}: length`);
      check(arr(s.pos).join() === arr(prefix).join(), `${tag}: pos != prefix`);
      check(s.masked[n - 1] === maskId, `${tag}: last item not masked`);
      for (let i = 0; i < n; i++) {
        if (s.masked[i] === maskId) {
          check(!set.has(s.neg[i]!) && s.neg[i]! >= 1 && s.neg[i]! <= maskId, `${tag}: bad negative ${s.neg[i]} at ${i}`);
        } else {
          check(s.masked[i] === prefix[i] && s.neg[i] === prefix[i], `${tag}: unmasked position ${i} changed`);
        }
        if (i < n - 1) {
          maskable++;
          if (s.masked[i] === maskId) masked++;
        }
      }
      if (n < 2) {
        check([s.maskedSegment, s.posSegment, s.negSegment].every((a) => arr(a).join() === arr(prefix).join()), `${tag}: n=1 segments`);
      } else {
        const inSeg = arr(s.posSegment).map((v) => v !== maskId);
        const start = inSeg.indexOf(true);
        const L = inSeg.filter(Boolean).length;
        lengths.add(L);
        check(L >= 1 && L <= n >> 1, `${tag}: segment length ${L}`);
        for (let i = 0; i < n; i++) {
          const inside = i >= start && i < start + L;
          check(inSeg[i] === inside, `${tag}: segment not contiguous`);
          check(s.maskedSegment[i] === (inside ? maskId : prefix[i]), `${tag}: maskedSegment at ${i}`);
          check(inside ? s.posSegment[i] === prefix[i] : s.negSegment[i] === maskId, `${tag}: pos/negSegment at ${i}`);
        }
        // the negative segment is a contiguous slice of long_sequence
        check(longStr.includes(`,${arr(s.negSegment.subarray(start, start + L)).join(',')},`), `${tag}: negSegment not a slice of long_sequence`);
      }
    }
    expect(bad).toEqual([]);
    expect(masked / maskable).toBeGreaterThan(0.17);
    expect(masked / maskable).toBeLessThan(0.23);
    expect(lengths.has(1) && lengths.has(6)).toBe(true); // L ranges over 1..n//2
  });

  it('neg_sample can return mask_id (randint is inclusive)', () => {
    // itemSize 5: real items 1..3, mask 4; prefix {1,2} -> negatives in {3, 4}
    const rng = new Rng(1);
    const seen = new Set<number>();
    for (let t = 0; t < 200; t++) {
      const s = makePretrainSample(seq(1, 2), { itemSize: 5, maskId: 4, longSequence: seq(1, 2, 3), rng, maskP: 0.2 });
      seen.add(s.neg[1]!);
    }
    expect([...seen].sort()).toEqual([3, 4]);
  });

  it('maskP 0 masks only the last item; the same seed gives the same sample', () => {
    const p = seq(3, 4, 5, 6);
    const a = makePretrainSample(p, { itemSize, maskId, longSequence: long, rng: new Rng(5), maskP: 0 });
    expect(arr(a.masked)).toEqual([3, 4, 5, maskId]);
    const b = makePretrainSample(p, { itemSize, maskId, longSequence: long, rng: new Rng(5), maskP: 0 });
    expect(b).toEqual(a);
  });
});

describe('AttRec windows (ATTREC_SPEC §3.4)', () => {
  it('windows of L+T from the end backwards, input first L, targets last T', () => {
    const w = attrecWindows([seq(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), seq(21, 22, 23, 24, 25, 26)], 5, 3);
    expect(w.count).toBe(3 + 1);
    const rows = Array.from({ length: w.count }, (_, k) => [arr(w.inputs.subarray(k * 5, k * 5 + 5)), arr(w.targets.subarray(k * 3, k * 3 + 3)), w.user[k]]);
    expect(rows).toEqual([
      [[3, 4, 5, 6, 7], [8, 9, 10], 0],
      [[2, 3, 4, 5, 6], [7, 8, 9], 0],
      [[1, 2, 3, 4, 5], [6, 7, 8], 0],
      // shorter than L+T: one window, input = first L, targets = last T (overlapping, as the authors' code)
      [[21, 22, 23, 24, 25], [24, 25, 26], 1],
    ]);
  });
  it('test inputs are the last L training items; too-short sequences are rejected', () => {
    expect(arr(attrecTestInputs([seq(1, 2, 3, 4, 5, 6, 7)], 5))).toEqual([3, 4, 5, 6, 7]);
    expect(() => attrecWindows([seq(1, 2, 3, 4)], 5, 3)).toThrow(/fewer than/);
  });
});
