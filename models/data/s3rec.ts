// Loaders for the S3-Rec data format (S3REC_SPEC §1), mirroring `utils.get_user_seqs*` and
// `get_item2attribute_json` of RUCAIBox/CIKM2020-S3Rec:
//  - `<name>.txt`: `user_id item item ...` per line, oldest first; item ids are kept as in the file
//    (1..max_item, 0 = padding), so `itemSize = maxItem + 2` and `maskId = maxItem + 1`.
//  - `<name>_item2attributes.json`: `{"<item>": [attr, ...], ...}`; `attributeSize = maxAttr + 1`.
//  - `<name>_sample.txt`: `user_id neg_1 .. neg_99`, one line per user in the same order.
// Unlike the official code every file is validated; problems raise DataError `<file>:<line>: <problem>`.
// Text files are streamed (io.forEachLine); the JSON file is read whole and parsed by a small parser for
// exactly this shape, so that errors carry a line number.

import { joinPath as join } from './paths.js';
import { DataError, badIdProblem, parseNonNegInt } from './errors.js';
import { fileExists, forEachLine, readTextFile } from './io.js';
import { ItemSet } from './sampling.js';

/** Sequences as loaded from `<name>.txt` (row i = line i+1 = the official 0-based user index i). */
export interface S3RecSequences {
  file: string;
  /** Raw user id token of each line (the official code ignores it; the sample file must repeat it). */
  userIds: string[];
  /** Items of each user, oldest first, ids as in the file. */
  sequences: Int32Array[];
  /** Largest item id (the official max_item). */
  maxItem: number;
  /** Number of distinct item ids that occur. */
  numItems: number;
  /** Total number of (user, item) entries. */
  interactions: number;
}

export interface ItemAttributes {
  file: string;
  /** attributes[item] = attribute ids of that item as listed (duplicates kept, as in LastFM); index 0 and
   *  ids without an entry get an empty array. Length = itemSize when loaded for a dataset. */
  attributes: Int32Array[];
  /** Largest attribute id over all entries (official: attribute_size = max + 1). */
  maxAttribute: number;
  attributeSize: number;
  /** Number of distinct attribute ids that occur. */
  numAttributes: number;
  /** Number of item entries in the file. */
  entries: number;
}

export interface S3RecDataset extends S3RecSequences {
  name: string;
  dir: string;
  /** maxItem + 2: ids 0 (pad) .. maxItem, plus maskId. */
  itemSize: number;
  /** maxItem + 1. */
  maskId: number;
  attributes: ItemAttributes;
  /** 99 negatives per user, `[U * sampleCount]`, or undefined when `<name>_sample.txt` is absent and not required. */
  sampleNegatives: Int32Array | undefined;
  sampleCount: number;
  files: { sequences: string; attributes: string; sample: string };
}

export interface SequenceLoadOptions {
  /** Shortest accepted sequence. Default 5: the official datasets are 5-core (S3REC_SPEC §2, §8), and
   *  leave-one-out needs at least 4 (one training pair, the validation and the test item). */
  minLength?: number;
}

const SEQ_FORMAT = "expected 'user_id item_id item_id ...' separated by spaces";

/** Loads `<name>.txt` (streamed). */
export async function loadS3RecSequences(file: string, opts: SequenceLoadOptions = {}): Promise<S3RecSequences> {
  const minLength = opts.minLength ?? 5;
  const userIds: string[] = [];
  const sequences: Int32Array[] = [];
  const seenUsers = new Map<string, number>();
  let maxItem = 0;
  let interactions = 0;
  await forEachLine(file, (line, lineNo) => {
    const tokens = line.trim().split(/\s+/);
    const user = tokens[0]!;
    if (parseNonNegInt(user) < 0) {
      if (/[,;|:]/.test(line)) throw new DataError(file, lineNo, `malformed line: ${SEQ_FORMAT}`);
      throw new DataError(file, lineNo, badIdProblem('user id', user));
    }
    const prev = seenUsers.get(user);
    if (prev !== undefined) throw new DataError(file, lineNo, `user id '${user}' already used on line ${prev}`);
    seenUsers.set(user, lineNo);
    const n = tokens.length - 1;
    if (n === 0) throw new DataError(file, lineNo, `user '${user}' has an empty sequence`);
    const seq = new Int32Array(n);
    for (let k = 0; k < n; k++) {
      const tok = tokens[k + 1]!;
      const v = parseNonNegInt(tok);
      if (v < 0) {
        if (/[,;|:]/.test(tok)) throw new DataError(file, lineNo, `malformed line: ${SEQ_FORMAT}`);
        throw new DataError(file, lineNo, badIdProblem('item id', tok));
      }
      if (v === 0) throw new DataError(file, lineNo, 'item id 0 is reserved for padding');
      seq[k] = v;
      if (v > maxItem) maxItem = v;
    }
    if (n < minLength) {
      throw new DataError(file, lineNo, `sequence of user '${user}' is too short: ${n} item${n === 1 ? '' : 's'}, at least ${minLength} required`);
    }
    userIds.push(user);
    sequences.push(seq);
    interactions += n;
  });
  if (sequences.length === 0) throw new DataError(file, undefined, 'file is empty (no users)');
  const present = new Uint8Array(maxItem + 1);
  let numItems = 0;
  for (const s of sequences) {
    for (let i = 0; i < s.length; i++) {
      if (!present[s[i]!]) {
        present[s[i]!] = 1;
        numItems++;
      }
    }
  }
  return { file, userIds, sequences, maxItem, numItems, interactions };
}

/** A tiny JSON reader for `{"<int>": [<int>, ...], ...}` that reports line numbers. */
class AttrJsonParser {
  private pos = 0;
  private line = 1;
  constructor(private readonly text: string, private readonly file: string) {}

  fail(problem: string): never {
    throw new DataError(this.file, this.line, problem);
  }

  private ws(): void {
    const t = this.text;
    while (this.pos < t.length) {
      const c = t.charCodeAt(this.pos);
      if (c === 10) this.line++;
      else if (c !== 32 && c !== 9 && c !== 13) break;
      this.pos++;
    }
  }

  private describeHere(): string {
    if (this.pos >= this.text.length) return 'end of file';
    const ch = this.text[this.pos]!;
    return `'${ch === '\n' ? '\\n' : ch}'`;
  }

  private expect(ch: string, what: string): void {
    this.ws();
    if (this.text[this.pos] !== ch) this.fail(`malformed JSON: expected ${what}, found ${this.describeHere()}`);
    this.pos++;
  }

  /** Reads a run of number-ish characters (digits, sign, '.', exponent) so errors can quote the token. */
  private numberToken(): string {
    const start = this.pos;
    while (this.pos < this.text.length && /[0-9eE+\-.]/.test(this.text[this.pos]!)) this.pos++;
    return this.text.slice(start, this.pos);
  }

  parse(onEntry: (item: number, attrs: Int32Array, line: number) => void): void {
    if (this.text.trim() === '') this.fail('file is empty (expected a JSON object {"item_id": [attribute ids], ...})');
    this.ws();
    if (this.text[this.pos] !== '{') this.fail(`malformed JSON: expected '{' (an object {"item_id": [attribute ids], ...}), found ${this.describeHere()}`);
    this.pos++;
    this.ws();
    if (this.text[this.pos] === '}') {
      this.pos++;
    } else {
      for (;;) {
        this.ws();
        const keyLine = this.line;
        if (this.text[this.pos] !== '"') this.fail(`malformed JSON: expected an item id string key, found ${this.describeHere()}`);
        const end = this.text.indexOf('"', this.pos + 1);
        if (end < 0) this.fail('malformed JSON: unterminated string');
        const key = this.text.slice(this.pos + 1, end);
        if (key.includes('\n')) this.fail('malformed JSON: unterminated string');
        this.pos = end + 1;
        const item = parseNonNegInt(key);
        if (item < 0) this.fail(badIdProblem('item id key', key));
        if (item === 0) this.fail('item id key \'0\' is reserved for padding');
        this.expect(':', "':'");
        this.expect('[', `'[' (the attribute list of item ${item})`);
        const attrs: number[] = [];
        this.ws();
        if (this.text[this.pos] === ']') {
          this.pos++;
        } else {
          for (;;) {
            this.ws();
            const tok = this.numberToken();
            if (tok === '') this.fail(`malformed JSON: expected an attribute id in the list of item ${item}, found ${this.describeHere()}`);
            const a = parseNonNegInt(tok);
            if (a < 0) this.fail(`${badIdProblem('attribute id', tok)} (in the list of item ${item})`);
            if (a === 0) this.fail(`attribute id 0 of item ${item} is reserved for padding`);
            attrs.push(a);
            this.ws();
            const c = this.text[this.pos];
            if (c === ',') { this.pos++; continue; }
            if (c === ']') { this.pos++; break; }
            this.fail(`malformed JSON: expected ',' or ']' in the list of item ${item}, found ${this.describeHere()}`);
          }
        }
        onEntry(item, Int32Array.from(attrs), keyLine);
        this.ws();
        const c = this.text[this.pos];
        if (c === ',') { this.pos++; continue; }
        if (c === '}') { this.pos++; break; }
        this.fail(`malformed JSON: expected ',' or '}' after the entry of item ${item}, found ${this.describeHere()}`);
      }
    }
    this.ws();
    if (this.pos < this.text.length) this.fail(`malformed JSON: unexpected ${this.describeHere()} after the closing '}'`);
  }
}

export interface AttributeLoadOptions {
  /** When given, every item that occurs in these sequences must have an entry (the official code would
   *  silently give it no attributes: `try: item2attribute[str(item)] except: pass`). */
  sequences?: S3RecSequences;
  /** Length of the returned `attributes` table (default: largest item id seen + 1, or itemSize). */
  tableSize?: number;
}

/** Loads and validates `<name>_item2attributes.json`. */
export async function loadItemAttributes(file: string, opts: AttributeLoadOptions = {}): Promise<ItemAttributes> {
  const text = await readTextFile(file);
  const entries = new Map<number, Int32Array>();
  const entryLine = new Map<number, number>();
  let maxAttribute = 0;
  let maxKey = 0;
  new AttrJsonParser(text, file).parse((item, attrs, line) => {
    const prev = entryLine.get(item);
    if (prev !== undefined) throw new DataError(file, line, `item ${item} has a second entry (first on line ${prev})`);
    entryLine.set(item, line);
    entries.set(item, attrs);
    if (item > maxKey) maxKey = item;
    for (let i = 0; i < attrs.length; i++) if (attrs[i]! > maxAttribute) maxAttribute = attrs[i]!;
  });
  if (entries.size === 0) throw new DataError(file, undefined, 'no item entries');
  const seqs = opts.sequences;
  if (seqs) {
    for (let u = 0; u < seqs.sequences.length; u++) {
      const s = seqs.sequences[u]!;
      for (let i = 0; i < s.length; i++) {
        if (!entries.has(s[i]!)) {
          throw new DataError(file, undefined, `no entry for item ${s[i]} (the item occurs at ${seqs.file}:${u + 1})`);
        }
      }
    }
  }
  const size = opts.tableSize ?? (seqs ? seqs.maxItem + 2 : maxKey + 1);
  const empty = new Int32Array(0);
  const attributes: Int32Array[] = new Array<Int32Array>(size).fill(empty);
  const seenAttr = new Uint8Array(maxAttribute + 1);
  let numAttributes = 0;
  for (const [item, attrs] of entries) {
    if (item < size) attributes[item] = attrs;
    for (let i = 0; i < attrs.length; i++) {
      if (!seenAttr[attrs[i]!]) {
        seenAttr[attrs[i]!] = 1;
        numAttributes++;
      }
    }
  }
  return { file, attributes, maxAttribute, attributeSize: maxAttribute + 1, numAttributes, entries: entries.size };
}

/**
 * Loads `<name>_sample.txt` and checks it against the sequences: one line per user, same order and same
 * user id token, exactly `count` negatives, each an item id in 1..maxItem that is not in the user's
 * sequence. Duplicate negatives are accepted (the regenerated official files contain a few; S3REC_SPEC §1).
 * Returns `[U * count]` row-major.
 */
export async function loadS3RecSample(file: string, seqs: S3RecSequences, count = 99): Promise<Int32Array> {
  const U = seqs.sequences.length;
  const out = new Int32Array(U * count);
  const userItems = new ItemSet(seqs.maxItem + 1);
  let rows = 0;
  const last = await forEachLine(file, (line, lineNo) => {
    if (rows >= U) throw new DataError(file, lineNo, `extra line: ${seqs.file} has only ${U} users`);
    const tokens = line.trim().split(/\s+/);
    const user = tokens[0]!;
    if (parseNonNegInt(user) < 0) {
      if (/[,;|:]/.test(line)) throw new DataError(file, lineNo, "malformed line: expected 'user_id neg_1 ... neg_99' separated by spaces");
      throw new DataError(file, lineNo, badIdProblem('user id', user));
    }
    const expected = seqs.userIds[rows]!;
    if (user !== expected) {
      throw new DataError(file, lineNo, `user id '${user}' does not match ${seqs.file}:${rows + 1} (user '${expected}'): the sample file must list the same users in the same order`);
    }
    const n = tokens.length - 1;
    if (n !== count) throw new DataError(file, lineNo, `expected ${count} negative item ids after the user id, found ${n}`);
    const seq = seqs.sequences[rows]!;
    userItems.reset(seq);
    const base = rows * count;
    for (let k = 0; k < count; k++) {
      const tok = tokens[k + 1]!;
      const v = parseNonNegInt(tok);
      if (v < 0) throw new DataError(file, lineNo, badIdProblem('negative item id', tok));
      if (v < 1 || v > seqs.maxItem) throw new DataError(file, lineNo, `negative item id ${v} is outside 1..${seqs.maxItem} (the item ids of ${seqs.file})`);
      if (userItems.has(v)) throw new DataError(file, lineNo, `negative item id ${v} is in the user's own sequence (${seqs.file}:${rows + 1})`);
      out[base + k] = v;
    }
    rows++;
  });
  if (rows < U) {
    throw new DataError(file, last + 1, `file ends after ${rows} users but ${seqs.file} has ${U}: expected one line per user`);
  }
  return out;
}

export interface S3RecDatasetOptions extends SequenceLoadOptions {
  /** 'require': error when `<name>_sample.txt` is missing; 'optional' (default): load it when present;
   *  'skip': never read it. */
  sample?: 'require' | 'optional' | 'skip';
  /** Negatives per line of the sample file (99). */
  sampleCount?: number;
}

/** Loads `<dir>/<name>.txt`, `<dir>/<name>_item2attributes.json` and (see `sample`) `<dir>/<name>_sample.txt`. */
export async function loadS3RecDataset(dir: string, name: string, opts: S3RecDatasetOptions = {}): Promise<S3RecDataset> {
  const files = {
    sequences: join(dir, `${name}.txt`),
    attributes: join(dir, `${name}_item2attributes.json`),
    sample: join(dir, `${name}_sample.txt`),
  };
  const seqs = await loadS3RecSequences(files.sequences, opts);
  const itemSize = seqs.maxItem + 2;
  const attributes = await loadItemAttributes(files.attributes, { sequences: seqs, tableSize: itemSize });
  const sampleCount = opts.sampleCount ?? 99;
  const mode = opts.sample ?? 'optional';
  let sampleNegatives: Int32Array | undefined;
  if (mode === 'require' || (mode === 'optional' && (await fileExists(files.sample)))) {
    sampleNegatives = await loadS3RecSample(files.sample, seqs, sampleCount);
  }
  return { ...seqs, name, dir, itemSize, maskId: seqs.maxItem + 1, attributes, sampleNegatives, sampleCount, files };
}
