// Seeded PRNG and negative samplers: determinism, bounds, uniformity, and the official exclusion rules
// checked over many seeded draws; the 99-negatives generator and its atomic writer.
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Rng, ItemSet, negSample, attrecNegatives, generateSampleNegatives, formatSampleFile, writeSampleFile,
} from '../models/data/sampling.js';
import { loadS3RecSequences, loadS3RecSample } from '../models/data/s3rec.js';
import { DataError } from '../models/data/errors.js';

const created: string[] = [];
afterAll(() => created.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'seqrec-sampling-'));
  created.push(d);
  return d;
};

describe('Rng (sfc32)', () => {
  it('is deterministic per seed and differs between seeds', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const xa = Array.from({ length: 8 }, () => a.nextU32());
    expect(Array.from({ length: 8 }, () => b.nextU32())).toEqual(xa);
    expect(Array.from({ length: 8 }, () => c.nextU32())).not.toEqual(xa);
    for (const x of xa) expect(Number.isInteger(x) && x >= 0 && x < 2 ** 32).toBe(true);
  });

  it('state() / fromState() continue the same stream', () => {
    const a = new Rng(9);
    a.nextU32();
    const b = Rng.fromState(a.state());
    expect(Array.from({ length: 5 }, () => b.nextU32())).toEqual(Array.from({ length: 5 }, () => a.nextU32()));
  });

  it('derive() gives independent, reproducible streams per key', () => {
    const e0 = Rng.derive(42, 0).nextU32();
    expect(Rng.derive(42, 0).nextU32()).toBe(e0);
    expect(Rng.derive(42, 1).nextU32()).not.toBe(e0);
    expect(Rng.derive(43, 0).nextU32()).not.toBe(e0);
  });

  it('nextFloat is in [0, 1) and randint is inclusive on both ends', () => {
    const r = new Rng(3);
    const hits = new Set<number>();
    for (let i = 0; i < 3000; i++) {
      const f = r.nextFloat();
      expect(f >= 0 && f < 1).toBe(true);
      const k = r.randint(1, 3);
      expect(k >= 1 && k <= 3).toBe(true);
      hits.add(k);
    }
    expect([...hits].sort()).toEqual([1, 2, 3]);
    expect(r.randint(5, 5)).toBe(5);
    expect(() => r.randint(3, 2)).toThrow(RangeError);
    const big = r.randint(0, 2 ** 32 - 1);
    expect(big >= 0 && big < 2 ** 32).toBe(true);
  });

  it('randint is uniform (chi-square over 100k draws, 10 buckets)', () => {
    const r = new Rng(123);
    const counts = new Array<number>(10).fill(0);
    const N = 100_000;
    for (let i = 0; i < N; i++) counts[r.randint(0, 9)]!++;
    const chi2 = counts.reduce((s, c) => s + (c - N / 10) ** 2 / (N / 10), 0);
    expect(chi2).toBeLessThan(27.9); // p = 0.001 at 9 degrees of freedom
  });

  it('shuffle gives every permutation of 3 with probability ~1/6', () => {
    const r = new Rng(11);
    const counts = new Map<string, number>();
    for (let i = 0; i < 12000; i++) {
      const k = r.shuffle([0, 1, 2]).join('');
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect(counts.size).toBe(6);
    for (const c of counts.values()) expect(Math.abs(c - 2000)).toBeLessThan(200);
    const p = r.permutation(50);
    expect(Array.from(p).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });
});

describe('ItemSet', () => {
  it('resets in O(1) and counts distinct ids', () => {
    const s = new ItemSet(10);
    s.reset([1, 2, 2, 9]);
    expect(s.size).toBe(3);
    expect([s.has(1), s.has(2), s.has(3), s.has(9), s.has(10), s.has(-1)]).toEqual([true, true, false, true, false, false]);
    s.reset([3]);
    expect([s.has(1), s.has(3), s.size]).toEqual([false, true, 1]);
    expect(() => s.add(10)).toThrow(RangeError);
  });
});

describe('negative samplers (official exclusion rules)', () => {
  it('S3-Rec neg_sample: 1..itemSize-1 (mask id included), never an excluded item', () => {
    const itemSize = 12; // items 1..10, mask 11
    const seen = new Set<number>();
    const bad: number[] = [];
    for (let seed = 0; seed < 200; seed++) {
      const rng = new Rng(seed);
      const excl = new ItemSet(itemSize).reset([1 + (seed % 10), 1 + ((seed * 3) % 10), 4]);
      for (let k = 0; k < 50; k++) {
        const v = negSample(rng, excl, itemSize);
        if (!(v >= 1 && v <= itemSize - 1) || excl.has(v)) bad.push(v);
        seen.add(v);
      }
    }
    expect(bad).toEqual([]);
    expect(seen.has(11)).toBe(true); // mask_id is reachable, as with random.randint(1, item_size - 1)
    expect(seen.has(0)).toBe(false);
  });

  it('accepts a plain Set and fails loudly when everything is excluded', () => {
    expect(negSample(new Rng(1), new Set([1, 2]), 4)).toBe(3);
    expect(() => negSample(new Rng(1), new Set([1, 2, 3]), 4)).toThrow(/every id/);
  });

  it('AttRec: with replacement from 1..numItems-1 minus the instance targets only', () => {
    const out = new Int32Array(3);
    const seen = new Set<number>();
    for (let seed = 0; seed < 500; seed++) {
      const targets = [2, 3, 5];
      attrecNegatives(new Rng(seed), targets, 7, out); // candidates {1, 4, 6}
      for (const v of out) {
        expect([1, 4, 6]).toContain(v);
        seen.add(v);
      }
    }
    expect([...seen].sort()).toEqual([1, 4, 6]);
    // draws are independent: duplicates within an instance happen
    let dup = 0;
    for (let seed = 0; seed < 200; seed++) {
      attrecNegatives(new Rng(seed), [2, 3, 5], 7, out);
      if (new Set(out).size < 3) dup++;
    }
    expect(dup).toBeGreaterThan(0);
  });
});

describe('99-negatives sample file (generate_test.py semantics)', () => {
  // 30 users over items 1..400 (item 400 never used -> not in the pool).
  const seqs = Array.from({ length: 30 }, (_, u) => Int32Array.from({ length: 5 + (u % 7) }, (_, i) => 1 + ((u * 37 + i * 11) % 399)));
  const pool = new Set(seqs.flatMap((s) => Array.from(s)));

  it('99 distinct negatives per user, from the dataset items, outside the user sequence', () => {
    const neg = generateSampleNegatives(seqs, { seed: 12345 });
    expect(neg.length).toBe(30 * 99);
    seqs.forEach((s, u) => {
      const row = Array.from(neg.subarray(u * 99, (u + 1) * 99));
      expect(new Set(row).size).toBe(99);
      for (const v of row) {
        expect(pool.has(v)).toBe(true);
        expect(Array.from(s)).not.toContain(v);
      }
    });
    expect(Array.from(neg)).not.toContain(400);
    expect(generateSampleNegatives(seqs, { seed: 12345 })).toEqual(neg);
    expect(generateSampleNegatives(seqs, { seed: 1 })).not.toEqual(neg);
  });

  it('small pools use the explicit path and still satisfy the rules', () => {
    // pool = 1..104; every user owns <= 5 items, so each has 99 or 100 candidates (explicit path);
    // user 0 owns 1..5 and has exactly 99: its row must be a permutation of 6..104.
    const users = [Int32Array.from([1, 2, 3, 4, 5])];
    for (let start = 6; start <= 104; start += 5) users.push(Int32Array.from({ length: Math.min(5, 105 - start) }, (_, i) => start + i));
    const neg = generateSampleNegatives(users, { seed: 3 });
    expect(Array.from(neg.subarray(0, 99)).sort((a, b) => a - b)).toEqual(Array.from({ length: 99 }, (_, i) => i + 6));
    users.forEach((s, u) => {
      const row = Array.from(neg.subarray(u * 99, (u + 1) * 99));
      expect(new Set(row).size).toBe(99);
      for (const v of row) expect(Array.from(s)).not.toContain(v);
    });
    const small2 = [Int32Array.from([1, 2, 3, 4, 5]), Int32Array.from([6, 7, 8, 9, 10, 104])];
    expect(() => generateSampleNegatives(small2, { seed: 3, sourceFile: 'tiny.txt' })).toThrow(DataError);
    expect(() => generateSampleNegatives(small2, { seed: 3, sourceFile: 'tiny.txt' })).toThrow(
      "tiny.txt:1: user has only 6 candidate negatives (items of the dataset not in the user's sequence); 99 are needed",
    );
  });

  it('writes atomically, refuses to overwrite without force, and round-trips through the loader', async () => {
    const dir = tmp();
    const text = seqs.map((s, u) => `${u + 1} ${Array.from(s).join(' ')}`).join('\n') + '\n';
    writeFileSync(join(dir, 'D.txt'), text);
    const loaded = await loadS3RecSequences(join(dir, 'D.txt'));
    const neg = generateSampleNegatives(loaded.sequences, { seed: 12345 });
    const file = join(dir, 'D_sample.txt');
    await writeSampleFile(file, loaded.userIds, neg);
    expect(readFileSync(file, 'utf8')).toBe(formatSampleFile(loaded.userIds, neg));
    expect(readFileSync(file, 'utf8').split('\n')[0]!.split(' ').length).toBe(100);
    expect(await loadS3RecSample(file, loaded)).toEqual(neg);

    const other = generateSampleNegatives(loaded.sequences, { seed: 7 });
    await expect(writeSampleFile(file, loaded.userIds, other)).rejects.toThrow(`${file}: already exists (pass --force to overwrite)`);
    expect(await loadS3RecSample(file, loaded)).toEqual(neg); // untouched
    await writeSampleFile(file, loaded.userIds, other, { force: true });
    expect(await loadS3RecSample(file, loaded)).toEqual(other);
    expect(readdirSync(dir).sort()).toEqual(['D.txt', 'D_sample.txt']); // no temp files left behind
  });
});
