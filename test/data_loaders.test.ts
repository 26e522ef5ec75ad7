// Loaders on well-formed inputs: the S3-Rec format, interaction logs (id maps, the stable tie rule, separators,
// headers), the AttRec split, and the sample datasets shipped in data/sample.
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadS3RecDataset, loadS3RecSequences, loadItemAttributes } from '../models/data/s3rec.js';
import { loadInteractionLog, leaveLastOut, loadAttRecSplit } from '../models/data/interactions.js';
import { s3recStats, attrecSplitStats, sequenceStats } from '../models/data/stats.js';
import { attrecWindows, pretrainPrefixes } from '../models/data/splits.js';

const arr = (a: ArrayLike<number>): number[] => Array.from(a);
const SAMPLE = fileURLToPath(new URL('../data/sample', import.meta.url));

const created: string[] = [];
afterAll(() => created.forEach((d) => rmSync(d, { recursive: true, force: true })));

function dirWith(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'seqrec-loaders-'));
  created.push(dir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

describe('S3-Rec format', () => {
  const files = {
    'T.txt': '1 1 2 3 4 5\n2 6 2 7 3 8 1\n3 9 8 7 6 5\n',
    'T_item2attributes.json': '{"1": [1, 2], "2": [3], "3": [1], "4": [4, 4], "5": [2], "6": [5], "7": [1], "8": [6], "9": [2, 3]}',
  };

  it('keeps item ids as in the file and derives itemSize / maskId / attributeSize', async () => {
    const dir = dirWith({ ...files, 'T_sample.txt': '1 6 7 8\n2 4 5 9\n3 1 2 3\n' });
    const ds = await loadS3RecDataset(dir, 'T', { sampleCount: 3 });
    expect(ds.userIds).toEqual(['1', '2', '3']);
    expect(ds.sequences.map(arr)).toEqual([[1, 2, 3, 4, 5], [6, 2, 7, 3, 8, 1], [9, 8, 7, 6, 5]]);
    expect([ds.maxItem, ds.itemSize, ds.maskId, ds.numItems, ds.interactions]).toEqual([9, 11, 10, 9, 16]);
    expect([ds.attributes.maxAttribute, ds.attributes.attributeSize, ds.attributes.numAttributes]).toEqual([6, 7, 6]);
    expect(ds.attributes.attributes.length).toBe(11);
    expect(arr(ds.attributes.attributes[4]!)).toEqual([4, 4]); // duplicates kept as listed (LastFM has them)
    expect(arr(ds.attributes.attributes[0]!)).toEqual([]);
    expect(arr(ds.attributes.attributes[10]!)).toEqual([]); // mask id
    expect(arr(ds.sampleNegatives!)).toEqual([6, 7, 8, 4, 5, 9, 1, 2, 3]);
    const st = s3recStats(ds, 5);
    expect(st).toMatchObject({ users: 3, items: 9, attributes: 6, interactions: 16, minLength: 5, maxLength: 6, medianLength: 5, usersLongerThanMaxLength: 1 });
    expect(st.meanLength).toBeCloseTo(16 / 3, 12);
  });

  it('the sample file is optional unless required, and accepts CRLF, a BOM, tabs and trailing blank lines', async () => {
    const dir = dirWith({ 'T.txt': '\ufeff1 1 2 3 4 5\r\n2\t5 4 3 2 1\r\n\r\n\n', 'T_item2attributes.json': '{ "1":[1],"2":[1],"3":[1],"4":[1],"5":[] }\n' });
    const ds = await loadS3RecDataset(dir, 'T');
    expect(ds.sampleNegatives).toBeUndefined();
    expect(ds.sequences.map(arr)).toEqual([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]);
    await expect(loadS3RecDataset(dir, 'T', { sample: 'require' })).rejects.toThrow(`${join(dir, 'T_sample.txt')}: file not found`);
  });

  it('minLength is configurable', async () => {
    const dir = dirWith({ 'S.txt': '1 1 2 3\n' });
    expect((await loadS3RecSequences(join(dir, 'S.txt'), { minLength: 3 })).interactions).toBe(3);
  });

  it('attribute table without sequences is sized by the largest key', async () => {
    const dir = dirWith({ 'a.json': '{"3": [2, 5]}' });
    const a = await loadItemAttributes(join(dir, 'a.json'));
    expect(a.attributes.length).toBe(4);
    expect([a.maxAttribute, a.attributeSize, a.entries]).toEqual([5, 6, 1]);
  });
});

describe('interaction logs', () => {
  it('orders users by raw id, sorts by time with ties in file order, numbers items by first appearance', async () => {
    const dir = dirWith({
      'log.dat': [
        '10\t500\t4\t300',
        '9\t700\t3\t200',
        '10\t600\t5\t100',
        '10\t700\t1\t300', // same timestamp as the first line: stays after it
        '9\t500\t2\t100',
        '10\t800\t2\t300',
      ].join('\n'),
    });
    const log = await loadInteractionLog(join(dir, 'log.dat'));
    expect(log.userIds).toEqual(['9', '10']); // numeric order, not string order
    expect(log.userIdToRaw).toEqual(['', '9', '10']);
    expect(log.rawToUserId.get('10')).toBe(2);
    // user 9: 500 (t100), 700 (t200); user 10: 600 (t100), 500, 700, 800 (all t300, file order)
    expect(log.itemIdToRaw).toEqual(['', '500', '700', '600', '800']);
    expect(log.sequences.map(arr)).toEqual([[1, 2], [3, 1, 2, 4]]);
    expect(log.sequences.map((s) => arr(s).map((i) => log.itemIdToRaw[i]))).toEqual([['500', '700'], ['600', '500', '700', '800']]);
    expect(arr(log.timestamps[1]!)).toEqual([100, 300, 300, 300]);
    expect([log.maxItem, log.numItems, log.interactions]).toEqual([4, 4, 6]);

    // leave-last-out: the max-timestamp group of user 10 is 500, 700, 800 -> the FIRST line (500) is the test item
    const split = leaveLastOut(log);
    expect(arr(split.testItems).map((i) => log.itemIdToRaw[i])).toEqual(['700', '500']);
    expect(split.train.map((s) => arr(s).map((i) => log.itemIdToRaw[i]))).toEqual([['500'], ['600', '700', '800']]);
  });

  it('comma-separated with a header, "::" separated, and string ids', async () => {
    const dir = dirWith({
      'r.csv': 'userId,movieId,rating,timestamp\n2,31,2.5,1260759144\n1,1029,3.0,1260759179\n1,1061,3.0,1260759182\n',
      'r.dat': '1::1193::5::978300760\n1::661::3::978302109\n',
      's.tsv': 'A1\tB00X\t5\t3\nA1\tB00Y\t4\t1\n',
    });
    const csv = await loadInteractionLog(join(dir, 'r.csv'));
    expect(csv.userIds).toEqual(['1', '2']);
    expect(csv.sequences.map((s) => arr(s).map((i) => csv.itemIdToRaw[i]))).toEqual([['1029', '1061'], ['31']]);
    expect(arr(csv.ratings[1]!)).toEqual([2.5]);
    const ml1m = await loadInteractionLog(join(dir, 'r.dat'));
    expect(ml1m.itemIdToRaw).toEqual(['', '1193', '661']);
    const str = await loadInteractionLog(join(dir, 's.tsv'), { idKind: 'string' });
    expect(str.sequences.map((s) => arr(s).map((i) => str.itemIdToRaw[i]))).toEqual([['B00Y', 'B00X']]);
    expect(sequenceStats(str.sequences).users).toBe(1);
  });
});

describe('AttRec split (authors\' id maps)', () => {
  it('maps users and items by first appearance in train.dat (+1 for items); unseen test items get new ids', async () => {
    const dir = dirWith({
      'train.dat': '5\t50\t1\t1\n5\t40\t1\t2\n3\t40\t1\t1\n3\t60\t1\t5\n',
      'test.dat': '3\t99\t1\t9\n5\t60\t1\t3\n',
    });
    const s = await loadAttRecSplit(join(dir, 'train.dat'), join(dir, 'test.dat'));
    expect(s.userIds).toEqual(['5', '3']);
    expect(s.itemIdToRaw).toEqual(['', '50', '40', '60', '99']);
    expect(s.sequences.map(arr)).toEqual([[1, 2], [2, 3]]);
    expect(arr(s.testItems)).toEqual([3, 4]);
    expect([s.numTrainItems, s.maxItem, s.unseenTestItems, s.interactions]).toEqual([3, 4, 1, 6]);
  });
});

describe('shipped sample datasets (data/sample)', () => {
  it('Beauty sample is a valid S3-Rec dataset with a validated 99-negatives file', async () => {
    const ds = await loadS3RecDataset(SAMPLE, 'Beauty', { sample: 'require' });
    const st = s3recStats(ds);
    expect(st.users).toBeGreaterThanOrEqual(300);
    expect(st.users).toBeLessThanOrEqual(500);
    expect(st.minLength).toBeGreaterThanOrEqual(5);
    expect(st.items).toBe(ds.maxItem); // contiguous ids 1..n
    expect(st.attributes).toBe(ds.attributes.maxAttribute); // contiguous attribute ids
    expect(ds.userIds).toEqual(ds.userIds.map((_, i) => String(i + 1)));
    expect(ds.sampleNegatives!.length).toBe(st.users * 99);
    expect(pretrainPrefixes(ds.sequences).count).toBeGreaterThan(st.users);
  });

  it('MovieLens slice loads as an AttRec split with windows for every user', async () => {
    const s = await loadAttRecSplit(join(SAMPLE, 'ml-100k-sample', 'train.dat'), join(SAMPLE, 'ml-100k-sample', 'test.dat'));
    expect(s.userIds.length).toBe(100);
    expect(s.userIds).toEqual(Array.from({ length: 100 }, (_, i) => String(i + 1)));
    const w = attrecWindows(s.sequences, 5, 3);
    expect(w.count).toBe(s.sequences.reduce((a, q) => a + q.length - 7, 0));
    expect(attrecSplitStats('ml', s).interactions).toBe(s.interactions);
  });
});
