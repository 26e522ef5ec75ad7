// `seqrec data` happy paths on the shipped sample datasets and temp dirs (error paths: data_errors.test.ts).
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runDataCommand, DATA_USAGE } from '../cli/data.js';
import { loadS3RecSequences, loadS3RecSample } from '../models/data/s3rec.js';

const SAMPLE = fileURLToPath(new URL('../data/sample', import.meta.url));
const created: string[] = [];
afterAll(() => created.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'seqrec-cli-'));
  created.push(d);
  return d;
};

async function run(argv: string[]): Promise<{ code: number; out: string; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runDataCommand(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err };
}

describe('seqrec data stats', () => {
  it('--json on the Beauty sample has the documented keys and consistent values', async () => {
    const r = await run(['stats', '--data-dir', SAMPLE, '--dataset', 'Beauty', '--json']);
    expect(r.code).toBe(0);
    expect(r.err).toEqual([]);
    const s = JSON.parse(r.out) as Record<string, number | string | null>;
    for (const k of ['users', 'items', 'attributes', 'interactions', 'meanLength', 'maxLength', 'medianLength', 'usersLongerThanMaxLength']) {
      expect(typeof s[k]).toBe('number');
    }
    const seqs = await loadS3RecSequences(join(SAMPLE, 'Beauty.txt'));
    expect(s['users']).toBe(seqs.sequences.length);
    expect(s['interactions']).toBe(seqs.interactions);
    expect(s['meanLength']).toBeCloseTo(seqs.interactions / seqs.sequences.length, 12);
    expect(s['maxLength']).toBe(Math.max(...seqs.sequences.map((q) => q.length)));
    expect(s['usersLongerThanMaxLength']).toBe(seqs.sequences.filter((q) => q.length > 50).length);
    expect(s['format']).toBe('s3rec');
    expect(s['sampleNegatives']).toBe(99);
  });

  it('--max-length changes the "longer than" count; text output is a readable block', async () => {
    const r = await run(['stats', '--data-dir', SAMPLE, '--dataset', 'Beauty', '--max-length', '5', '--json']);
    const seqs = await loadS3RecSequences(join(SAMPLE, 'Beauty.txt'));
    expect(JSON.parse(r.out).usersLongerThanMaxLength).toBe(seqs.sequences.filter((q) => q.length > 5).length);
    const t = await run(['stats', '--data-dir', SAMPLE, '--dataset', 'Beauty']);
    expect(t.code).toBe(0);
    expect(t.out).toMatch(/^dataset +Beauty \(s3rec\)\nusers +\d+/);
    expect(t.out).toMatch(/\nlength > 50 +\d+ users\n/);
  });

  it('detects the AttRec split and interaction logs', async () => {
    const r = await run(['stats', '--data-dir', SAMPLE, '--dataset', 'ml-100k-sample', '--json']);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out);
    expect([s.format, s.users, s.attributes]).toEqual(['attrec-split', 100, 0]);
    const dir = tempDir();
    writeFileSync(join(dir, 'ratings.csv'), 'userId,movieId,rating,timestamp\n1,5,4,10\n1,6,4,11\n2,5,3,9\n');
    const l = await run(['stats', '--data-dir', dir, '--dataset', 'ratings', '--json']);
    expect(l.code).toBe(0);
    expect(JSON.parse(l.out)).toMatchObject({ format: 'interactions', users: 2, items: 2, interactions: 3, maxLength: 2, meanLength: 1.5 });
  });
});

describe('seqrec data gen-sample', () => {
  it('writes a valid 99-negatives file atomically, reproducibly, and overwrites only with --force', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'Beauty.txt'), readFileSync(join(SAMPLE, 'Beauty.txt')));
    const r = await run(['gen-sample', '--data-dir', dir, '--dataset', 'Beauty']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/: \d+ users x 99 negatives \(seed 12345\)$/);
    // same seed, same semantics as the shipped sample file
    expect(readFileSync(join(dir, 'Beauty_sample.txt'), 'utf8')).toBe(readFileSync(join(SAMPLE, 'Beauty_sample.txt'), 'utf8'));
    const seqs = await loadS3RecSequences(join(dir, 'Beauty.txt'));
    await loadS3RecSample(join(dir, 'Beauty_sample.txt'), seqs); // validates
    const out = join(dir, 'other.txt');
    expect((await run(['gen-sample', '--data-dir', dir, '--dataset', 'Beauty', '--seed', '7', '--out', out])).code).toBe(0);
    expect(readFileSync(out, 'utf8')).not.toBe(readFileSync(join(dir, 'Beauty_sample.txt'), 'utf8'));
    expect((await run(['gen-sample', '--data-dir', dir, '--dataset', 'Beauty', '--seed', '7', '--out', out])).code).toBe(1);
    expect((await run(['gen-sample', '--data-dir', dir, '--dataset', 'Beauty', '--out', out, '--force'])).code).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe(readFileSync(join(dir, 'Beauty_sample.txt'), 'utf8'));
    expect(readdirSync(dir).sort()).toEqual(['Beauty.txt', 'Beauty_sample.txt', 'other.txt']);
  });
});

describe('seqrec data help', () => {
  it('prints the usage', async () => {
    const r = await run(['help']);
    expect(r.code).toBe(0);
    expect(r.out).toBe(DATA_USAGE);
    expect(DATA_USAGE).toContain('stats');
    expect(DATA_USAGE).toContain('gen-sample');
  });
});
