// Seeded randomness and negative sampling.
//  - Rng: sfc32 ("Small Fast Counting", C. Doty-Humphrey, PractRand-clean, 128-bit state) seeded through
//    splitmix32. Exact Python/numpy random streams cannot be reproduced; what is reproduced are the
//    *distributions* and *exclusion rules* of the official code.
//  - negSample: S3-Rec `utils.neg_sample` (S3REC_SPEC §4.1, §5, §11): `random.randint(1, item_size-1)`,
//    inclusive on both ends (so it can return mask_id = item_size-1), re-drawn while in the excluded set.
//    Fine-tuning excludes the user's full sequence; pretraining excludes the prefix (`set(seq)`).
//  - attrecNegatives: AttRec (ATTREC_SPEC §2.6): T draws with replacement from {1..num_item-1} minus the
//    instance's own targets (history and inputs are NOT excluded).
//  - generateSampleNegatives / writeSampleFile: `data/generate_test.py` semantics (S3REC_SPEC §1): 99
//    negatives per user, uniform WITHOUT replacement from the items that appear in the dataset minus the
//    user's full sequence; written atomically as `user_id neg_1 ... neg_99`, same order as <name>.txt.
//    (generate_test.py's duplicate quirk - a str/int comparison bug - is not reproduced: no duplicates.)

import { DataError } from './errors.js';
import { writeFileAtomic } from './io.js';

const TWO_32 = 4294967296;

function splitmix32(state: number): [next: number, out: number] {
  const s = (state + 0x9e3779b9) | 0;
  let z = s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [s, (z ^ (z >>> 16)) >>> 0];
}

/**
 * Seeded PRNG (sfc32). `nextU32()` in [0, 2^32), `nextFloat()` in [0, 1) with 32 random bits,
 * `randint(lo, hi)` inclusive on both ends like Python's `random.randint` (unbiased, by rejection),
 * `shuffle` = Fisher-Yates in place. The same seed always gives the same stream on every platform.
 */
export class Rng {
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;

  constructor(seed: number) {
    let s = seed >>> 0;
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [next, out] = splitmix32(s);
      s = next;
      words.push(out);
    }
    [this.a, this.b, this.c, this.d] = words as [number, number, number, number];
    for (let i = 0; i < 12; i++) this.nextU32(); // mix the seed in (as the sfc reference does)
  }

  /** A generator for (seed, key1, key2, ...), e.g. `Rng.derive(seed, epoch)`: independent of how many draws
   *  other streams made, so epoch k's shuffle is the same whether or not epochs 0..k-1 ran. */
  static derive(seed: number, ...keys: number[]): Rng {
    let s = seed >>> 0;
    for (const k of keys) {
      const [, out] = splitmix32((s ^ Math.imul(k >>> 0, 0x27d4eb2d)) | 0);
      s = (out ^ (k >>> 0)) >>> 0;
      s = splitmix32(s)[1];
    }
    return new Rng(s);
  }

  /** The 128-bit state, for checkpoints; `Rng.fromState(rng.state())` continues the same stream. */
  state(): [number, number, number, number] {
    return [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0];
  }

  static fromState(state: readonly [number, number, number, number]): Rng {
    const r = new Rng(0);
    [r.a, r.b, r.c, r.d] = [state[0] | 0, state[1] | 0, state[2] | 0, state[3] | 0];
    return r;
  }

  nextU32(): number {
    const t0 = (this.a + this.b) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.d = (this.d + 1) | 0;
    const t = (t0 + this.d) | 0;
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1), 32-bit resolution (like `random.random() < p` tests need). */
  nextFloat(): number {
    return this.nextU32() / TWO_32;
  }

  /** Uniform integer in [lo, hi], both inclusive (Python `random.randint`). Requires hi - lo < 2^32. */
  randint(lo: number, hi: number): number {
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || hi < lo) throw new RangeError(`randint(${lo}, ${hi}): need integers lo <= hi`);
    const range = hi - lo + 1;
    if (range > TWO_32) throw new RangeError(`randint(${lo}, ${hi}): range larger than 2^32`);
    if (range === TWO_32) return lo + this.nextU32();
    const limit = TWO_32 - (TWO_32 % range); // reject the top sliver so every value is equally likely
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return lo + (x % range);
    }
  }

  /** Fisher-Yates shuffle in place; returns `arr`. */
  shuffle<T extends { length: number; [i: number]: unknown }>(arr: T): T {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.randint(0, i);
      const tmp = arr[i];
      arr[i] = arr[j];
      arr[j] = tmp;
    }
    return arr;
  }

  /** A random permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }
}

/** Anything with `has(id)`: a Set<number>, an ItemSet, ... */
export interface IdSet {
  has(id: number): boolean;
}

/**
 * A reusable set of item ids in [0, capacity) with O(1) add/has and O(1) clear (generation stamps), so
 * per-user exclusion sets cost no allocation in the batch builders.
 */
export class ItemSet implements IdSet {
  private stamps: Uint32Array;
  private gen = 1;
  private n = 0;

  constructor(readonly capacity: number) {
    this.stamps = new Uint32Array(capacity);
  }

  /** Empties the set, then adds `items`. */
  reset(items?: ArrayLike<number>): this {
    this.gen++;
    if (this.gen === 0xffffffff) {
      this.stamps.fill(0);
      this.gen = 1;
    }
    this.n = 0;
    if (items) for (let i = 0; i < items.length; i++) this.add(items[i]!);
    return this;
  }

  add(id: number): void {
    if (id < 0 || id >= this.capacity) throw new RangeError(`ItemSet: id ${id} outside [0, ${this.capacity})`);
    if (this.stamps[id] !== this.gen) {
      this.stamps[id] = this.gen;
      this.n++;
    }
  }

  has(id: number): boolean {
    return id >= 0 && id < this.capacity && this.stamps[id] === this.gen;
  }

  /** Number of distinct ids in the set. */
  get size(): number {
    return this.n;
  }
}

/** Counts the ids of [lo, hi] that `exclude` contains, when that can be known cheaply (ItemSet / Set). */
function excludedInRange(exclude: IdSet, lo: number, hi: number): number | undefined {
  if (exclude instanceof Set) {
    let k = 0;
    for (const v of exclude as Set<number>) if (v >= lo && v <= hi) k++;
    return k;
  }
  if (exclude instanceof ItemSet && hi - lo < 4096) {
    let k = 0;
    for (let v = lo; v <= hi; v++) if (exclude.has(v)) k++;
    return k;
  }
  return undefined;
}

/**
 * S3-Rec `neg_sample(item_set, item_size)`: `randint(1, item_size - 1)` re-drawn while in `exclude`.
 * The range includes mask_id = item_size - 1, as in the official code (S3REC_SPEC §4.1, §11).
 */
export function negSample(rng: Rng, exclude: IdSet, itemSize: number): number {
  for (let tries = 0; ; tries++) {
    const item = rng.randint(1, itemSize - 1);
    if (!exclude.has(item)) return item;
    if (tries === 4096) {
      const k = excludedInRange(exclude, 1, itemSize - 1);
      if (k !== undefined && k >= itemSize - 1) throw new Error(`negSample: every id in 1..${itemSize - 1} is excluded`);
    }
    if (tries === 1e8) throw new Error(`negSample: no id of 1..${itemSize - 1} outside the excluded set after 1e8 draws`);
  }
}

/**
 * AttRec negatives for one training instance (ATTREC_SPEC §2.6): `count` independent draws (with
 * replacement) from {1..numItems-1} minus the instance's `targets`. Writes into `out[offset..]`.
 */
export function attrecNegatives(rng: Rng, targets: ArrayLike<number>, numItems: number, out: Int32Array, offset = 0, count = targets.length): void {
  attrecNegativesAt(rng, targets, 0, targets.length, numItems, out, offset, count);
}

/** attrecNegatives against targets[from, from + n) (no subarray per window in the batch builders). */
export function attrecNegativesAt(rng: Rng, targets: ArrayLike<number>, from: number, n: number, numItems: number, out: Int32Array, offset: number, count: number): void {
  for (let k = 0; k < count; k++) {
    let item: number;
    let tries = 0;
    do {
      item = rng.randint(1, numItems - 1);
      if (++tries > 1e7) throw new Error('attrecNegatives: every candidate is a target');
    } while (containsAt(targets, from, n, item));
    out[offset + k] = item;
  }
}

function containsAt(a: ArrayLike<number>, from: number, n: number, v: number): boolean {
  for (let i = from; i < from + n; i++) if (a[i] === v) return true;
  return false;
}

export interface SampleFileOptions {
  /** Seed of the generator (generate_test.py uses np.random.seed(12345)). */
  seed?: number;
  /** Negatives per user (99 in every S3-Rec dataset). */
  count?: number;
  /** File to name in a DataError (a user with too few candidates). */
  sourceFile?: string;
}

/**
 * `generate_test.py` semantics: for every user (in order) `count` distinct negatives drawn uniformly
 * without replacement from the items that appear anywhere in `sequences`, minus the user's full sequence.
 * Returns the negatives row-major, `[U * count]`, in draw order.
 */
export function generateSampleNegatives(sequences: readonly Int32Array[], opts: SampleFileOptions = {}): Int32Array {
  const count = opts.count ?? 99;
  const rng = new Rng(opts.seed ?? 12345);
  let maxItem = 0;
  for (const s of sequences) for (let i = 0; i < s.length; i++) if (s[i]! > maxItem) maxItem = s[i]!;
  const inData = new Uint8Array(maxItem + 1);
  for (const s of sequences) for (let i = 0; i < s.length; i++) inData[s[i]!] = 1;
  const pool: number[] = [];
  for (let v = 1; v <= maxItem; v++) if (inData[v]) pool.push(v);
  const poolArr = Int32Array.from(pool);

  const out = new Int32Array(sequences.length * count);
  const userItems = new ItemSet(maxItem + 1);
  const chosen = new ItemSet(maxItem + 1);
  const scratch = new Int32Array(poolArr.length);
  for (let u = 0; u < sequences.length; u++) {
    const seq = sequences[u]!;
    userItems.reset(seq);
    const available = poolArr.length - userItems.size;
    if (available < count) {
      throw new DataError(opts.sourceFile ?? '<sequences>', u + 1,
        `user has only ${available} candidate negative${available === 1 ? '' : 's'} (items of the dataset not in the user's sequence); ${count} are needed`);
    }
    const base = u * count;
    if (available >= 4 * count) {
      // Rejection sampling: cheap when the pool is much larger than what is excluded or taken.
      chosen.reset();
      let k = 0;
      while (k < count) {
        const item = poolArr[rng.randint(0, poolArr.length - 1)]!;
        if (userItems.has(item) || chosen.has(item)) continue;
        chosen.add(item);
        out[base + k++] = item;
      }
    } else {
      // Small pool: partial Fisher-Yates over the explicit candidate list.
      let m = 0;
      for (let i = 0; i < poolArr.length; i++) if (!userItems.has(poolArr[i]!)) scratch[m++] = poolArr[i]!;
      for (let k = 0; k < count; k++) {
        const j = rng.randint(k, m - 1);
        const t = scratch[j]!;
        scratch[j] = scratch[k]!;
        scratch[k] = t;
        out[base + k] = t;
      }
    }
  }
  return out;
}

/** Formats a sample file: one line per user, `user_id neg_1 ... neg_count`, '\n' line ends. */
export function formatSampleFile(userIds: readonly string[], negatives: Int32Array, count = 99): string {
  if (negatives.length !== userIds.length * count) throw new Error(`formatSampleFile: ${negatives.length} negatives for ${userIds.length} users x ${count}`);
  const lines: string[] = new Array(userIds.length);
  for (let u = 0; u < userIds.length; u++) {
    lines[u] = `${userIds[u]} ${Array.prototype.join.call(negatives.subarray(u * count, (u + 1) * count), ' ')}`;
  }
  return lines.join('\n') + '\n';
}

/** Writes a sample file atomically (temp file + rename); refuses to overwrite unless `force`. */
export async function writeSampleFile(file: string, userIds: readonly string[], negatives: Int32Array, opts: { count?: number; force?: boolean } = {}): Promise<void> {
  await writeFileAtomic(file, formatSampleFile(userIds, negatives, opts.count ?? 99), { force: opts.force ?? false });
}
