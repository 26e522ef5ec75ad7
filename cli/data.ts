// `seqrec data ...`: dataset statistics and sample-file generation with the same loaders training uses
// (models/data). Errors in the data are printed as ONE line (`error: <file>:<line>: <problem>`) with a
// non-zero exit code and no stack trace; nothing is written partially (sample files are written atomically).
//
//   seqrec data stats --data-dir DIR --dataset NAME [--json] [--max-length 50] [--format s3rec|interactions|attrec-split]
//                     [--sep auto|tab|comma|space|STR] [--min-length N]
//   seqrec data gen-sample --data-dir DIR --dataset NAME [--seed 12345] [--count 99] [--out FILE] [--force]
//                          [--min-length N]
//   seqrec data help

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import {
  DataError, attrecSplitStats, fileExists, pathExists, formatStats, generateSampleNegatives, interactionStats, loadAttRecSplit,
  loadInteractionLog, loadS3RecDataset, loadS3RecSequences, s3recStats, writeSampleFile,
} from '../models/data/index.js';
import type { DatasetFormat, DatasetStats } from '../models/data/index.js';

export const DATA_USAGE = `usage: seqrec data <command> [options]

commands:
  stats       print users, items, attributes, interactions and sequence-length statistics
              --data-dir DIR --dataset NAME [--json] [--max-length 50]
              [--format s3rec|interactions|attrec-split]   (default: detected from the files)
              [--sep auto|tab|comma|space|STR]              (interaction logs; default auto)
              [--min-length N]                              (shortest accepted S3-Rec sequence; default 5)
  gen-sample  write <NAME>_sample.txt: 99 negatives per user (generate_test.py semantics)
              --data-dir DIR --dataset NAME [--seed 12345] [--count 99] [--out FILE] [--force]
              [--min-length N]
  help        print this text

formats (detected in this order):
  s3rec         DIR/NAME.txt + DIR/NAME_item2attributes.json (+ DIR/NAME_sample.txt, validated when present)
  attrec-split  DIR/NAME/train.dat + DIR/NAME/test.dat
  interactions  DIR/NAME, or DIR/NAME.{dat,data,csv,tsv,inter}: 'user item rating timestamp' lines`;

export interface DataCommandIO {
  out: (text: string) => void;
  err: (text: string) => void;
}

const defaultIO: DataCommandIO = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
};

class UsageError extends Error {}

interface Spec {
  values: readonly string[];
  flags: readonly string[];
}

function parseArgs(args: readonly string[], spec: Spec): Map<string, string | true> {
  const out = new Map<string, string | true>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument '${a}'`);
    const eq = a.indexOf('=');
    const key = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (spec.flags.includes(key)) {
      if (eq >= 0) throw new UsageError(`option --${key} takes no value`);
      out.set(key, true);
    } else if (spec.values.includes(key)) {
      const v = eq >= 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined || (eq < 0 && v.startsWith('--'))) throw new UsageError(`option --${key} needs a value`);
      out.set(key, v);
    } else {
      throw new UsageError(`unknown option '${a}'`);
    }
  }
  return out;
}

function req(opts: Map<string, string | true>, key: string): string {
  const v = opts.get(key);
  if (typeof v !== 'string' || v === '') throw new UsageError(`missing --${key}`);
  return v;
}

function intOpt(opts: Map<string, string | true>, key: string, dflt: number, min: number): number {
  const v = opts.get(key);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min) throw new UsageError(`--${key} must be an integer >= ${min}, got '${String(v)}'`);
  return n;
}

async function assertDir(dir: string): Promise<void> {
  try {
    if ((await fsp.stat(dir)).isDirectory()) return;
  } catch {
    throw new DataError(dir, undefined, 'data directory not found');
  }
  throw new DataError(dir, undefined, 'is not a directory');
}

const LOG_EXTS = ['', '.dat', '.data', '.csv', '.tsv', '.inter'];

async function detectFormat(dir: string, name: string): Promise<DatasetFormat> {
  if (await fileExists(join(dir, `${name}.txt`))) return 's3rec';
  if (await fileExists(join(dir, name, 'train.dat'))) return 'attrec-split';
  for (const ext of LOG_EXTS) if (await fileExists(join(dir, name + ext))) return 'interactions';
  throw new DataError(join(dir, `${name}.txt`), undefined,
    `file not found (no S3-Rec ${name}.txt, AttRec split ${name}/train.dat or interaction log ${name}[.dat|.data|.csv|.tsv|.inter] in ${dir})`);
}

async function logPath(dir: string, name: string): Promise<string> {
  for (const ext of LOG_EXTS) if (await fileExists(join(dir, name + ext))) return join(dir, name + ext);
  return join(dir, name);
}

async function statsCommand(args: readonly string[], io: DataCommandIO): Promise<number> {
  const o = parseArgs(args, { values: ['data-dir', 'dataset', 'max-length', 'format', 'sep', 'min-length'], flags: ['json'] });
  const dir = req(o, 'data-dir');
  const name = req(o, 'dataset');
  const maxLen = intOpt(o, 'max-length', 50, 1);
  const minLength = intOpt(o, 'min-length', 5, 1);
  const fmtOpt = o.get('format');
  if (fmtOpt !== undefined && fmtOpt !== 's3rec' && fmtOpt !== 'interactions' && fmtOpt !== 'attrec-split') {
    throw new UsageError(`--format must be s3rec, interactions or attrec-split, got '${String(fmtOpt)}'`);
  }
  const sep = o.get('sep');
  await assertDir(dir);
  const format: DatasetFormat = fmtOpt ?? (await detectFormat(dir, name));
  let stats: DatasetStats;
  if (format === 's3rec') {
    stats = s3recStats(await loadS3RecDataset(dir, name, { minLength, sample: 'optional' }), maxLen);
  } else if (format === 'attrec-split') {
    const split = await loadAttRecSplit(join(dir, name, 'train.dat'), join(dir, name, 'test.dat'), { sep: typeof sep === 'string' ? sep : undefined });
    stats = attrecSplitStats(name, split, maxLen);
  } else {
    const log = await loadInteractionLog(await logPath(dir, name), { sep: typeof sep === 'string' ? sep : undefined });
    stats = interactionStats(name, log, maxLen);
  }
  io.out(o.has('json') ? JSON.stringify(stats, null, 2) : formatStats(stats));
  return 0;
}

async function genSampleCommand(args: readonly string[], io: DataCommandIO): Promise<number> {
  const o = parseArgs(args, { values: ['data-dir', 'dataset', 'seed', 'count', 'out', 'min-length'], flags: ['force'] });
  const dir = req(o, 'data-dir');
  const name = req(o, 'dataset');
  const seed = intOpt(o, 'seed', 12345, 0);
  if (seed > 0xffffffff) throw new UsageError('--seed must be < 2^32');
  const count = intOpt(o, 'count', 99, 1);
  const minLength = intOpt(o, 'min-length', 5, 1);
  const outOpt = o.get('out');
  const out = typeof outOpt === 'string' ? outOpt : join(dir, `${name}_sample.txt`);
  const force = o.has('force');
  await assertDir(dir);
  if (!force && (await pathExists(out))) throw new DataError(out, undefined, 'already exists (pass --force to overwrite)');
  const seqs = await loadS3RecSequences(join(dir, `${name}.txt`), { minLength });
  const negatives = generateSampleNegatives(seqs.sequences, { seed, count, sourceFile: seqs.file });
  await writeSampleFile(out, seqs.userIds, negatives, { count, force });
  io.out(`wrote ${out}: ${seqs.userIds.length} users x ${count} negatives (seed ${seed})`);
  return 0;
}

/**
 * Runs `seqrec data <argv...>` and returns the exit code: 0 ok, 1 bad data (one-line DataError message),
 * 2 bad usage. Unexpected errors (bugs) are re-thrown.
 */
export async function runDataCommand(argv: string[], io: DataCommandIO = defaultIO): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'stats':
        return await statsCommand(rest, io);
      case 'gen-sample':
        return await genSampleCommand(rest, io);
      case 'help':
      case '--help':
      case '-h':
        io.out(DATA_USAGE);
        return 0;
      case undefined:
        io.err(DATA_USAGE);
        return 2;
      default:
        throw new UsageError(`unknown command '${cmd}'`);
    }
  } catch (e) {
    if (e instanceof DataError) {
      io.err(`error: ${e.message}`);
      return 1;
    }
    if (e instanceof UsageError) {
      io.err(`error: ${e.message} (see 'seqrec data help')`);
      return 2;
    }
    throw e;
  }
}
