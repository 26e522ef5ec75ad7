// Interaction logs (`user item rating timestamp` per line, e.g. MovieLens u.data) turned into time-ordered
// sequences with contiguous ids, and the AttRec authors' pre-split `train.dat` / `test.dat`
// (ATTREC_SPEC §3: cheungdaven/DeepRec `utils/load_data/load_data_seq.py`, `DataSet` and `data_preprocess`).
//
// Log -> sequences (loadInteractionLog):
//  - users are numbered 1..U in ascending raw id (numeric order for integer ids, code-unit order for string
//    ids); row i of `sequences` is user id i+1 (0 = padding);
//  - each user's interactions are sorted by timestamp with a STABLE rule: equal timestamps keep file order
//    (as the authors' `sorted(..., key=ts)` does, ATTREC_SPEC §3.2);
//  - items are numbered 1..N in order of first appearance when walking the users in id order and each
//    sequence oldest first (the authors' item_map rule applied to the sorted data); 0 = padding.
//  `userIdToRaw` / `itemIdToRaw` (index 0 = '') and `rawToUserId` / `rawToItemId` keep the maps.
// AttRec split (loadAttRecSplit): the authors' maps exactly: users by first appearance in train.dat, items by
// first appearance in train.dat then +1; training sequences in train.dat order. Test items never seen in
// training get their OWN new ids after the training items (the authors' code gives them colliding ids,
// ATTREC_SPEC §3.3; we do not reproduce that bug).
// leaveLastOut reproduces `data_preprocess` (ATTREC_SPEC §3.2) from a raw log.

import { DataError, badIdProblem, parseNonNegInt } from './errors.js';
import { forEachLine } from './io.js';

export interface InteractionLogOptions {
  /** Field separator: 'auto' (default: tab if the first line has one, else '::', else ',', else runs of
   *  spaces), 'tab', 'comma', 'space', or a literal string such as '::'. */
  sep?: string;
  /** Whether line 1 is a header; 'auto' (default) = line 1 is a header when its rating and timestamp
   *  fields are both non-numeric (e.g. `userId,movieId,rating,timestamp`). */
  header?: boolean | 'auto';
  /** 'integer' (default): user and item ids must be non-negative integers; 'string': any non-empty token. */
  idKind?: 'integer' | 'string';
  /** Users with fewer interactions are an error (default 1: no check). */
  minLength?: number;
}

/** Time-ordered sequences with contiguous ids (row i = user id i+1). */
export interface SequenceDataset {
  file: string;
  /** Item ids (1..maxItem) per user, oldest first. */
  sequences: Int32Array[];
  /** Timestamps aligned with `sequences`. */
  timestamps: Float64Array[];
  /** Ratings aligned with `sequences`. */
  ratings: Float32Array[];
  /** Raw user id of row i (= userIdToRaw[i + 1]). */
  userIds: string[];
  /** userIdToRaw[id] for id 1..U; [0] = '' (padding). */
  userIdToRaw: string[];
  rawToUserId: Map<string, number>;
  /** itemIdToRaw[id] for id 1..maxItem; [0] = '' (padding). */
  itemIdToRaw: string[];
  rawToItemId: Map<string, number>;
  maxItem: number;
  numItems: number;
  interactions: number;
}

interface Sep {
  name: string;
  split: (line: string) => string[];
}

function resolveSep(sep: string | undefined, firstLine: string): Sep {
  const s = sep ?? 'auto';
  if (s === 'auto') {
    if (firstLine.includes('\t')) return resolveSep('tab', firstLine);
    if (firstLine.includes('::')) return resolveSep('::', firstLine);
    if (firstLine.includes(',')) return resolveSep('comma', firstLine);
    return resolveSep('space', firstLine);
  }
  if (s === 'tab' || s === '\t') return { name: 'tabs', split: (l) => l.split('\t') };
  if (s === 'comma' || s === ',') return { name: 'commas', split: (l) => l.split(',') };
  if (s === 'space' || s === ' ') return { name: 'spaces', split: (l) => l.trim().split(/\s+/) };
  return { name: `'${s}'`, split: (l) => l.split(s) };
}

function isNumeric(tok: string): boolean {
  return tok.trim() !== '' && Number.isFinite(Number(tok));
}

/** Parses one log line into its 4 fields, or throws DataError naming the line. */
class LogLineParser {
  private sep: Sep | undefined;
  constructor(private readonly file: string, private readonly opts: InteractionLogOptions) {}

  /** Returns undefined for a header line. */
  parse(line: string, lineNo: number): [user: string, item: string, rating: number, ts: number] | undefined {
    this.sep ??= resolveSep(this.opts.sep, line);
    const f = this.sep.split(line).map((t) => t.trim());
    if (lineNo === 1 && this.opts.header === true) return undefined;
    if (f.length !== 4) {
      throw new DataError(this.file, lineNo, `malformed line: expected 4 fields 'user item rating timestamp' separated by ${this.sep.name}, found ${f.length}`);
    }
    const [user, item, rating, ts] = f as [string, string, string, string];
    if (lineNo === 1 && (this.opts.header ?? 'auto') === 'auto' && !isNumeric(rating) && !isNumeric(ts)) return undefined;
    const kind = this.opts.idKind ?? 'integer';
    if (kind === 'integer') {
      if (parseNonNegInt(user) < 0) throw new DataError(this.file, lineNo, badIdProblem('user id', user));
      if (parseNonNegInt(item) < 0) throw new DataError(this.file, lineNo, badIdProblem('item id', item));
    } else {
      if (user === '') throw new DataError(this.file, lineNo, 'user id is empty');
      if (item === '') throw new DataError(this.file, lineNo, 'item id is empty');
    }
    if (!isNumeric(rating)) throw new DataError(this.file, lineNo, `rating '${rating}' is not a number`);
    if (!isNumeric(ts)) throw new DataError(this.file, lineNo, `timestamp '${ts}' is not a number`);
    return [user, item, Number(rating), Number(ts)];
  }
}

/** Growable columns for streamed records. */
class Columns {
  user = new Int32Array(1024);
  item = new Int32Array(1024);
  rating = new Float32Array(1024);
  ts = new Float64Array(1024);
  line = new Int32Array(1024);
  n = 0;
  push(u: number, i: number, r: number, t: number, l: number): void {
    if (this.n === this.user.length) {
      const grow = <T extends Int32Array | Float32Array | Float64Array>(a: T): T => {
        const b = new (a.constructor as new (n: number) => T)(a.length * 2);
        b.set(a);
        return b;
      };
      this.user = grow(this.user);
      this.item = grow(this.item);
      this.rating = grow(this.rating);
      this.ts = grow(this.ts);
      this.line = grow(this.line);
    }
    const k = this.n++;
    this.user[k] = u;
    this.item[k] = i;
    this.rating[k] = r;
    this.ts[k] = t;
    this.line[k] = l;
  }
}

function compareRawIds(kind: 'integer' | 'string'): (a: string, b: string) => number {
  if (kind === 'integer') return (a, b) => parseNonNegInt(a) - parseNonNegInt(b) || (a < b ? -1 : a > b ? 1 : 0);
  return (a, b) => (a < b ? -1 : a > b ? 1 : 0);
}

/** Streams an interaction log into time-ordered sequences (see the header for the id and tie rules). */
export async function loadInteractionLog(file: string, opts: InteractionLogOptions = {}): Promise<SequenceDataset> {
  const parser = new LogLineParser(file, opts);
  const userTmp = new Map<string, number>();
  const itemTmp = new Map<string, number>();
  const cols = new Columns();
  await forEachLine(file, (line, lineNo) => {
    const rec = parser.parse(line, lineNo);
    if (!rec) return;
    const [user, item, rating, ts] = rec;
    let u = userTmp.get(user);
    if (u === undefined) userTmp.set(user, (u = userTmp.size));
    let i = itemTmp.get(item);
    if (i === undefined) itemTmp.set(item, (i = itemTmp.size));
    cols.push(u, i, rating, ts, lineNo);
  });
  if (cols.n === 0) throw new DataError(file, undefined, 'file is empty (no interactions)');

  // Users in ascending raw id.
  const rawUsers = [...userTmp.keys()];
  const order = rawUsers.map((_, k) => k);
  const cmp = compareRawIds(opts.idKind ?? 'integer');
  order.sort((a, b) => cmp(rawUsers[a]!, rawUsers[b]!));
  const finalOfTmp = new Int32Array(rawUsers.length);
  order.forEach((tmp, rank) => (finalOfTmp[tmp] = rank));

  // Group records by final user (counting sort keeps file order inside a user).
  const U = rawUsers.length;
  const start = new Int32Array(U + 1);
  for (let k = 0; k < cols.n; k++) start[finalOfTmp[cols.user[k]!]! + 1]!++;
  for (let u = 0; u < U; u++) start[u + 1]! += start[u]!;
  const fill = start.slice(0, U);
  const byUser = new Int32Array(cols.n);
  for (let k = 0; k < cols.n; k++) byUser[fill[finalOfTmp[cols.user[k]!]!]!++] = k;

  const rawItems = [...itemTmp.keys()];
  const itemIdOfTmp = new Int32Array(rawItems.length); // 0 = not numbered yet
  const itemIdToRaw: string[] = [''];
  const rawToItemId = new Map<string, number>();
  const sequences: Int32Array[] = [];
  const timestamps: Float64Array[] = [];
  const ratings: Float32Array[] = [];
  const userIds: string[] = [];
  const minLength = opts.minLength ?? 1;
  for (let u = 0; u < U; u++) {
    const recs = Array.from(byUser.subarray(start[u]!, start[u + 1]!));
    // Stable by timestamp: ties keep file order (record index = file order).
    recs.sort((a, b) => cols.ts[a]! - cols.ts[b]! || a - b);
    const raw = rawUsers[order[u]!]!;
    if (recs.length < minLength) {
      throw new DataError(file, cols.line[recs[0]!]!, `user '${raw}' has ${recs.length} interaction${recs.length === 1 ? '' : 's'}, at least ${minLength} required`);
    }
    const seq = new Int32Array(recs.length);
    const tss = new Float64Array(recs.length);
    const rs = new Float32Array(recs.length);
    recs.forEach((k, j) => {
      const tmp = cols.item[k]!;
      let id = itemIdOfTmp[tmp]!;
      if (id === 0) {
        id = itemIdToRaw.length;
        itemIdOfTmp[tmp] = id;
        itemIdToRaw.push(rawItems[tmp]!);
        rawToItemId.set(rawItems[tmp]!, id);
      }
      seq[j] = id;
      tss[j] = cols.ts[k]!;
      rs[j] = cols.rating[k]!;
    });
    sequences.push(seq);
    timestamps.push(tss);
    ratings.push(rs);
    userIds.push(raw);
  }
  const userIdToRaw = ['', ...userIds];
  const rawToUserId = new Map(userIds.map((r, i) => [r, i + 1] as [string, number]));
  const maxItem = itemIdToRaw.length - 1;
  return { file, sequences, timestamps, ratings, userIds, userIdToRaw, rawToUserId, itemIdToRaw, rawToItemId, maxItem, numItems: maxItem, interactions: cols.n };
}

/**
 * The authors' leave-last-one-out split (`data_preprocess`, ATTREC_SPEC §3.2) on a loaded log: per user,
 * the test item is the interaction with the largest timestamp, ties -> the FIRST such line in file order;
 * training = every other interaction in time order (stable). Like the authors' code, a training record
 * identical to the test record (same item, rating and timestamp) is dropped too.
 */
export function leaveLastOut(log: SequenceDataset): { train: Int32Array[]; testItems: Int32Array } {
  const train: Int32Array[] = [];
  const testItems = new Int32Array(log.sequences.length);
  log.sequences.forEach((seq, u) => {
    const ts = log.timestamps[u]!;
    const rs = log.ratings[u]!;
    const n = seq.length;
    // Sequences are stably time-sorted, so the max-timestamp group is the tail and its first element is
    // the first such line in the file.
    let g = n - 1;
    while (g > 0 && ts[g - 1] === ts[n - 1]) g--;
    const item = seq[g]!;
    testItems[u] = item;
    const keep: number[] = [];
    for (let j = 0; j < n; j++) {
      if (seq[j] === item && ts[j] === ts[g] && rs[j] === rs[g]) continue;
      keep.push(seq[j]!);
    }
    train.push(Int32Array.from(keep));
  });
  return { train, testItems };
}

/** The AttRec authors' split: training sequences + one test item per user, in the authors' id maps. */
export interface AttRecSplit {
  trainFile: string;
  testFile: string;
  /** Training items per user row (row = the authors' 0-based user index, users by first appearance in
   *  train.dat), in train.dat order. */
  sequences: Int32Array[];
  /** Test item id per user row. */
  testItems: Int32Array;
  /** Raw user id per row. */
  userIds: string[];
  rawToUserRow: Map<string, number>;
  /** itemIdToRaw[id], [0] = ''. */
  itemIdToRaw: string[];
  rawToItemId: Map<string, number>;
  /** Ids 1..numTrainItems occur in train.dat (the authors' item_map + 1). */
  numTrainItems: number;
  /** numTrainItems + the number of test items never seen in training (they get ids after the train items). */
  maxItem: number;
  unseenTestItems: number;
  /** Train + test lines. */
  interactions: number;
}

/** Loads the authors' `train.dat` / `test.dat` (`user item rating timestamp`, tab-separated). */
export async function loadAttRecSplit(trainFile: string, testFile: string, opts: Pick<InteractionLogOptions, 'sep'> = {}): Promise<AttRecSplit> {
  const trainParser = new LogLineParser(trainFile, { sep: opts.sep, header: false });
  const rawToUserRow = new Map<string, number>();
  const userFirstLine: number[] = [];
  const rawToItemId = new Map<string, number>();
  const itemIdToRaw: string[] = [''];
  const seqs: number[][] = [];
  let interactions = 0;
  await forEachLine(trainFile, (line, lineNo) => {
    const [user, item] = trainParser.parse(line, lineNo)!;
    let row = rawToUserRow.get(user);
    if (row === undefined) {
      rawToUserRow.set(user, (row = seqs.length));
      seqs.push([]);
      userFirstLine.push(lineNo);
    }
    let id = rawToItemId.get(item);
    if (id === undefined) {
      rawToItemId.set(item, (id = itemIdToRaw.length));
      itemIdToRaw.push(item);
    }
    seqs[row]!.push(id);
    interactions++;
  });
  if (seqs.length === 0) throw new DataError(trainFile, undefined, 'file is empty (no interactions)');
  const numTrainItems = itemIdToRaw.length - 1;

  const testParser = new LogLineParser(testFile, { sep: opts.sep, header: false });
  const testItems = new Int32Array(seqs.length);
  const testLine = new Int32Array(seqs.length);
  let unseen = 0;
  await forEachLine(testFile, (line, lineNo) => {
    const [user, item] = testParser.parse(line, lineNo)!;
    const row = rawToUserRow.get(user);
    if (row === undefined) throw new DataError(testFile, lineNo, `user '${user}' has no training interactions in ${trainFile}`);
    if (testLine[row] !== 0) throw new DataError(testFile, lineNo, `user '${user}' already has a test item (line ${testLine[row]})`);
    let id = rawToItemId.get(item);
    if (id === undefined) {
      rawToItemId.set(item, (id = itemIdToRaw.length));
      itemIdToRaw.push(item);
      unseen++;
    }
    testItems[row] = id;
    testLine[row] = lineNo;
    interactions++;
  });
  const userIds = [...rawToUserRow.keys()];
  for (let r = 0; r < seqs.length; r++) {
    if (testLine[r] === 0) {
      throw new DataError(testFile, undefined, `user '${userIds[r]}' (${trainFile}:${userFirstLine[r]}) has no test item: expected one line per user`);
    }
  }
  return {
    trainFile,
    testFile,
    sequences: seqs.map((s) => Int32Array.from(s)),
    testItems,
    userIds,
    rawToUserRow,
    itemIdToRaw,
    rawToItemId,
    numTrainItems,
    maxItem: itemIdToRaw.length - 1,
    unseenTestItems: unseen,
    interactions,
  };
}
