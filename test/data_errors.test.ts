// Every bad input of issue 5 item 7 gets a DataError `<file>:<line>: <problem>`, and the CLI prints it as one
// line on stderr with exit code 1 and writes nothing.
import { describe, it, expect, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataError } from '../models/data/errors.js';
import { loadS3RecDataset, loadS3RecSequences, loadItemAttributes, loadS3RecSample } from '../models/data/s3rec.js';
import { loadInteractionLog, loadAttRecSplit } from '../models/data/interactions.js';
import { runDataCommand } from '../cli/data.js';

const created: string[] = [];
afterAll(() => created.forEach((d) => rmSync(d, { recursive: true, force: true })));

function dirWith(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'seqrec-errors-'));
  created.push(dir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

/** Runs `load` and returns the DataError it throws (fails the test if it throws anything else or nothing). */
async function dataError(load: () => Promise<unknown>): Promise<DataError> {
  try {
    await load();
  } catch (e) {
    expect(e).toBeInstanceOf(DataError);
    return e as DataError;
  }
  throw new Error('expected a DataError, nothing was thrown');
}

const GOOD_SEQ = '1 1 2 3 4 5\n2 5 4 3 2 1\n3 2 3 4 5 6\n';
const GOOD_ATTR = '{"1": [1], "2": [2], "3": [1, 2], "4": [3], "5": [1], "6": [2]}';

describe('S3-Rec sequence file', () => {
  it.each([
    ['malformed line (commas)', '1 1 2 3 4 5\n2,5,4,3,2,1\n', 2, "malformed line: expected 'user_id item_id item_id ...' separated by spaces"],
    ['non-integer item id', '1 1 2 3 4 5\n2 5 4 3 2 1\n3 1 2 x3 4 5\n', 3, "item id 'x3' is not a non-negative integer"],
    ['negative item id', '1 1 2 -3 4 5\n', 1, "item id '-3' is not a non-negative integer"],
    ['fractional item id', '1 1 2 3.5 4 5\n', 1, "item id '3.5' is not a non-negative integer"],
    ['item id too large', '1 1 2 99999999999 4 5\n', 1, "item id '99999999999' is too large (ids must be at most 2147483647)"],
    ['item id 0', '1 1 2 0 4 5\n', 1, 'item id 0 is reserved for padding'],
    ['non-integer user id', '1 1 2 3 4 5\nu2 5 4 3 2 1\n', 2, "user id 'u2' is not a non-negative integer"],
    ['empty sequence', '1 1 2 3 4 5\n2\n', 2, "user '2' has an empty sequence"],
    ['too-short sequence', '1 1 2 3 4 5\n2 5 4\n', 2, "sequence of user '2' is too short: 2 items, at least 5 required"],
    ['empty line inside the file', '1 1 2 3 4 5\n\n2 5 4 3 2 1\n', 2, 'empty line'],
    ['duplicate user id', '1 1 2 3 4 5\n1 5 4 3 2 1\n', 2, "user id '1' already used on line 1"],
  ])('%s', async (_name, text, line, problem) => {
    const dir = dirWith({ 'Beauty.txt': text });
    const file = join(dir, 'Beauty.txt');
    const e = await dataError(() => loadS3RecSequences(file));
    expect([e.file, e.line, e.problem]).toEqual([file, line, problem]);
    expect(e.message).toBe(`${file}:${line}: ${problem}`);
  });

  it('empty file and missing file name the file without a line', async () => {
    const dir = dirWith({ 'E.txt': '\n\n' });
    expect((await dataError(() => loadS3RecSequences(join(dir, 'E.txt')))).message).toBe(`${join(dir, 'E.txt')}: file is empty (no users)`);
    expect((await dataError(() => loadS3RecSequences(join(dir, 'missing.txt')))).message).toBe(`${join(dir, 'missing.txt')}: file not found`);
    expect((await dataError(() => loadS3RecSequences(dir))).message).toBe(`${dir}: is a directory, expected a file`);
  });
});

describe('attribute JSON file', () => {
  it.each([
    ['malformed: missing bracket', '{"1": [1],\n "2": [2}', 2, "malformed JSON: expected ',' or ']' in the list of item 2, found '}'"],
    ['malformed: truncated', '{"1": [1],\n "2": [2]', 2, "malformed JSON: expected ',' or '}' after the entry of item 2, found end of file"],
    ['malformed: not an object', '[1, 2]', 1, "malformed JSON: expected '{' (an object {\"item_id\": [attribute ids], ...}), found '['"],
    ['malformed: trailing data', '{"1": [1]}\n{}', 2, "malformed JSON: unexpected '{' after the closing '}'"],
    ['non-integer key', '{"1": [1],\n"a": [2]}', 2, "item id key 'a' is not a non-negative integer"],
    ['non-integer attribute', '{"1": [1],\n\n"2": [2, 1.5]}', 3, "attribute id '1.5' is not a non-negative integer (in the list of item 2)"],
    ['attribute as string', '{"1": ["7"]}', 1, "malformed JSON: expected an attribute id in the list of item 1, found '\"'"],
    ['attribute 0', '{"1": [0]}', 1, 'attribute id 0 of item 1 is reserved for padding'],
    ['duplicate key', '{"1": [1],\n"1": [2]}', 2, 'item 1 has a second entry (first on line 1)'],
    ['empty file', '', 1, 'file is empty (expected a JSON object {"item_id": [attribute ids], ...})'],
  ])('%s', async (_name, text, line, problem) => {
    const dir = dirWith({ 'Beauty_item2attributes.json': text });
    const file = join(dir, 'Beauty_item2attributes.json');
    const e = await dataError(() => loadItemAttributes(file));
    expect(e.message).toBe(`${file}:${line}: ${problem}`);
  });

  it('an item of the sequences without an entry names the item and where it is used', async () => {
    const dir = dirWith({ 'B.txt': GOOD_SEQ, 'B_item2attributes.json': '{"1": [1], "2": [2], "3": [1], "4": [3], "5": [1]}' });
    const e = await dataError(() => loadS3RecDataset(dir, 'B'));
    expect(e.message).toBe(`${join(dir, 'B_item2attributes.json')}: no entry for item 6 (the item occurs at ${join(dir, 'B.txt')}:3)`);
    const missing = dirWith({ 'B.txt': GOOD_SEQ });
    expect((await dataError(() => loadS3RecDataset(missing, 'B'))).message).toBe(`${join(missing, 'B_item2attributes.json')}: file not found`);
  });
});

describe('sample file', () => {
  const neg = (u: number, count = 99, skip: number[] = []): string => {
    const out: number[] = [];
    for (let v = 7; out.length < count; v++) if (!skip.includes(v)) out.push(v);
    return `${u} ${out.join(' ')}`;
  };
  async function loadWith(sample: string): Promise<DataError> {
    // 3 users over items 1..120 so that 99 negatives exist
    const seq = '1 1 2 3 4 5\n2 5 4 3 2 1\n3 2 3 4 5 120\n';
    const dir = dirWith({ 'B.txt': seq, 'B_sample.txt': sample });
    const seqs = await loadS3RecSequences(join(dir, 'B.txt'));
    const e = await dataError(() => loadS3RecSample(join(dir, 'B_sample.txt'), seqs));
    expect(e.file).toBe(join(dir, 'B_sample.txt'));
    return e;
  }

  it('wrong count', async () => {
    const e = await loadWith([neg(1), neg(2, 98), neg(3)].join('\n'));
    expect([e.line, e.problem]).toEqual([2, 'expected 99 negative item ids after the user id, found 98']);
  });
  it('wrong order', async () => {
    const e = await loadWith([neg(1), neg(3), neg(2)].join('\n'));
    expect(e.line).toBe(2);
    expect(e.problem).toMatch(/^user id '3' does not match .*B\.txt:2 \(user '2'\): the sample file must list the same users in the same order$/);
  });
  it('too few lines', async () => {
    const e = await loadWith([neg(1), neg(2)].join('\n') + '\n');
    expect(e.line).toBe(3);
    expect(e.problem).toMatch(/^file ends after 2 users but .*B\.txt has 3: expected one line per user$/);
  });
  it('extra line', async () => {
    const e = await loadWith([neg(1), neg(2), neg(3), neg(4)].join('\n'));
    expect(e.line).toBe(4);
    expect(e.problem).toMatch(/^extra line: .*B\.txt has only 3 users$/);
  });
  it('a negative that is in the user sequence', async () => {
    const e = await loadWith([neg(1), neg(2), `3 ${neg(0, 98).split(' ').slice(1).join(' ')} 120`].join('\n'));
    expect(e.line).toBe(3);
    expect(e.problem).toMatch(/^negative item id 120 is in the user's own sequence \(.*B\.txt:3\)$/);
  });
  it('an out-of-range or non-integer negative', async () => {
    const e = await loadWith([neg(1), `2 121 ${neg(0, 98).split(' ').slice(1).join(' ')}`, neg(3)].join('\n'));
    expect(e.line).toBe(2);
    expect(e.problem).toMatch(/^negative item id 121 is outside 1\.\.120 \(the item ids of .*B\.txt\)$/);
    const e2 = await loadWith([neg(1), neg(2), `3 abc ${neg(0, 98).split(' ').slice(1).join(' ')}`].join('\n'));
    expect([e2.line, e2.problem]).toEqual([3, "negative item id 'abc' is not a non-negative integer"]);
  });
});

describe('interaction logs and the AttRec split', () => {
  it.each([
    ['malformed line', '1\t10\t5\t100\n1\t11\t5\n', 2, "malformed line: expected 4 fields 'user item rating timestamp' separated by tabs, found 3"],
    ['non-integer item id', '1\t10\t5\t100\n1\tabc\t5\t101\n', 2, "item id 'abc' is not a non-negative integer"],
    ['non-integer user id', '1\t10\t5\t100\nx\t11\t5\t101\n', 2, "user id 'x' is not a non-negative integer"],
    ['bad timestamp', '1\t10\t5\t100\n1\t11\t5\tyesterday\n', 2, "timestamp 'yesterday' is not a number"],
    ['bad rating', '1\t10\tgood\t100\n', 1, "rating 'good' is not a number"],
  ])('%s', async (_name, text, line, problem) => {
    const dir = dirWith({ 'u.data': text });
    const file = join(dir, 'u.data');
    expect((await dataError(() => loadInteractionLog(file))).message).toBe(`${file}:${line}: ${problem}`);
  });

  it('a too-short user sequence names the user\'s first line', async () => {
    const dir = dirWith({ 'u.data': '1\t10\t5\t100\n2\t10\t5\t100\n1\t11\t5\t101\n1\t12\t5\t102\n' });
    const file = join(dir, 'u.data');
    const e = await dataError(() => loadInteractionLog(file, { minLength: 3 }));
    expect(e.message).toBe(`${file}:2: user '2' has 1 interaction, at least 3 required`);
    expect((await dataError(() => loadInteractionLog(join(dir, 'nope.dat')))).message).toBe(`${join(dir, 'nope.dat')}: file not found`);
  });

  it('AttRec split: unknown test user, duplicate test line, missing test line', async () => {
    const train = '1\t10\t1\t1\n1\t11\t1\t2\n2\t10\t1\t1\n';
    const d1 = dirWith({ 'train.dat': train, 'test.dat': '1\t12\t1\t3\n3\t10\t1\t5\n' });
    expect((await dataError(() => loadAttRecSplit(join(d1, 'train.dat'), join(d1, 'test.dat')))).message).toBe(
      `${join(d1, 'test.dat')}:2: user '3' has no training interactions in ${join(d1, 'train.dat')}`,
    );
    const d2 = dirWith({ 'train.dat': train, 'test.dat': '1\t12\t1\t3\n1\t13\t1\t5\n' });
    expect((await dataError(() => loadAttRecSplit(join(d2, 'train.dat'), join(d2, 'test.dat')))).message).toBe(
      `${join(d2, 'test.dat')}:2: user '1' already has a test item (line 1)`,
    );
    const d3 = dirWith({ 'train.dat': train, 'test.dat': '1\t12\t1\t3\n' });
    expect((await dataError(() => loadAttRecSplit(join(d3, 'train.dat'), join(d3, 'test.dat')))).message).toBe(
      `${join(d3, 'test.dat')}: user '2' (${join(d3, 'train.dat')}:3) has no test item: expected one line per user`,
    );
  });
});

describe('CLI: one line on stderr, non-zero exit, nothing written', () => {
  async function run(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runDataCommand(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
    return { code, out, err };
  }

  it('stats on a bad sequence file', async () => {
    const dir = dirWith({ 'B.txt': '1 1 2 3 4 5\n2 1 2 x3 4 5\n', 'B_item2attributes.json': GOOD_ATTR });
    const r = await run(['stats', '--data-dir', dir, '--dataset', 'B']);
    expect(r.code).toBe(1);
    expect(r.out).toEqual([]);
    expect(r.err).toEqual([`error: ${join(dir, 'B.txt')}:2: item id 'x3' is not a non-negative integer`]);
  });

  it('stats on a bad sample file, a missing dataset and a missing directory', async () => {
    const dir = dirWith({ 'B.txt': GOOD_SEQ, 'B_item2attributes.json': GOOD_ATTR, 'B_sample.txt': '1 7 8\n' });
    const r = await run(['stats', '--data-dir', dir, '--dataset', 'B', '--json']);
    expect(r.code).toBe(1);
    expect(r.err).toEqual([`error: ${join(dir, 'B_sample.txt')}:1: expected 99 negative item ids after the user id, found 2`]);
    const r2 = await run(['stats', '--data-dir', dir, '--dataset', 'Nope']);
    expect(r2.code).toBe(1);
    expect(r2.err.length).toBe(1);
    expect(r2.err[0]).toMatch(/^error: .*Nope\.txt: file not found \(no S3-Rec Nope\.txt, AttRec split Nope\/train\.dat or interaction log/);
    const r3 = await run(['stats', '--data-dir', join(dir, 'no-such-dir'), '--dataset', 'B']);
    expect(r3.err).toEqual([`error: ${join(dir, 'no-such-dir')}: data directory not found`]);
  });

  it('gen-sample on bad input writes nothing', async () => {
    const dir = dirWith({ 'B.txt': '1 1 2 3 4 5\n2 1 2 3\n' });
    const r = await run(['gen-sample', '--data-dir', dir, '--dataset', 'B']);
    expect(r.code).toBe(1);
    expect(r.err).toEqual([`error: ${join(dir, 'B.txt')}:2: sequence of user '2' is too short: 3 items, at least 5 required`]);
    expect(readdirSync(dir)).toEqual(['B.txt']);
    // too few candidate negatives: the generator fails before anything is written
    const small = dirWith({ 'S.txt': GOOD_SEQ });
    const r2 = await run(['gen-sample', '--data-dir', small, '--dataset', 'S']);
    expect(r2.code).toBe(1);
    expect(r2.err).toEqual([`error: ${join(small, 'S.txt')}:1: user has only 1 candidate negative (items of the dataset not in the user's sequence); 99 are needed`]);
    expect(existsSync(join(small, 'S_sample.txt'))).toBe(false);
    expect(readdirSync(small)).toEqual(['S.txt']);
  });

  it('gen-sample refuses to overwrite without --force and leaves the old file intact', async () => {
    const seq = Array.from({ length: 4 }, (_, u) => `${u + 1} ${Array.from({ length: 6 }, (_, i) => 1 + u * 30 + i).join(' ')}`).join('\n') + '\n';
    const dir = dirWith({ 'B.txt': seq, 'B_sample.txt': 'old contents\n' });
    const r = await run(['gen-sample', '--data-dir', dir, '--dataset', 'B']);
    expect(r.code).toBe(1);
    expect(r.err).toEqual([`error: ${join(dir, 'B_sample.txt')}: already exists (pass --force to overwrite)`]);
    expect(readFileSync(join(dir, 'B_sample.txt'), 'utf8')).toBe('old contents\n');
  });

  it('usage errors exit 2 with one line', async () => {
    for (const argv of [['stats', '--data-dir', '/tmp'], ['stats', '--bogus'], ['frob'], ['stats', '--data-dir', '/tmp', '--dataset', 'x', '--max-length', 'ten']]) {
      const r = await run(argv);
      expect(r.code).toBe(2);
      expect(r.err.length).toBe(1);
      expect(r.err[0]).toMatch(/^error: .*\(see 'seqrec data help'\)$/);
    }
  });
});
