// Untrusted files: safetensors headers and offsets (sizes past the file, overlaps, shapes whose byte count
// overflows, negative dims, dtype/shape vs byte length), `__proto__` keys in any JSON we parse (safetensors
// header, checkpoint metadata, run state, the attribute JSON), and whole-file reads over the size cap.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tensor } from '../engine/index.js';
import { parseJsonSafe, parseSafetensors, SafetensorsError } from '../engine/safetensors.js';
import { applyCheckpoint, checkpointBytes } from '../models/checkpoint.js';
import { loadItemAttributes } from '../models/data/s3rec.js';
import { readTextFile } from '../models/data/io.js';
import { Linear } from '../models/nn.js';
import { Adam } from '../models/optim.js';
import { RunDir } from '../models/run.js';
import { runDataCommand } from '../cli/data.js';
import { spawnSync } from 'node:child_process';
import { describeGpu } from './harness.js';

function craft(headerText: string, data: Uint8Array = new Uint8Array(0), lenOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}
const f32 = (...v: number[]): Uint8Array => new Uint8Array(Float32Array.from(v).buffer);
const entry = (dtype: string, shape: unknown, offs: unknown): string => JSON.stringify({ dtype, shape, data_offsets: offs });

function rejects(bytes: Uint8Array, msg: RegExp): void {
  let err: unknown;
  try {
    parseSafetensors(bytes, 'evil.st');
  } catch (e) {
    err = e;
  }
  expect(err, String(msg)).toBeInstanceOf(SafetensorsError);
  expect((err as Error).message).toMatch(msg);
}

const PROTO_CLEAN = (): void => {
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.prototype).not.toHaveProperty('polluted');
};

describe('safetensors: untrusted headers', () => {
  it('header length past the end of the file, or absurd', () => {
    rejects(craft(`{"w":${entry('F32', [1], [0, 4])}}`, f32(1), 10_000n), /evil.st: truncated or corrupt: header length 10000 runs past the end/);
    rejects(craft('{}', new Uint8Array(0), 1n << 62n), /evil.st: header length \d+ is over the 100000000-byte limit/);
  });

  it('offsets past the end, overlapping, end before begin, not a pair', () => {
    rejects(craft(`{"w":${entry('F32', [2], [4, 12])}}`, f32(1, 2)), /tensor 'w': data_offsets \[4, 12\] are out of range: the data section has 8 bytes/);
    rejects(craft(`{"a":${entry('F32', [2], [0, 8])},"b":${entry('F32', [1], [4, 8])}}`, f32(1, 2)), /tensor 'b': data_offsets \[4, 8\] overlap those of 'a' \[0, 8\]/);
    rejects(craft(`{"w":${entry('F32', [0], [8, 4])}}`, f32(1, 2)), /end before they begin/);
    rejects(craft(`{"w":${entry('F32', [2], [0, 8, 12])}}`, f32(1, 2)), /data_offsets \[0,8,12\] is not \[begin, end\]/);
    rejects(craft(`{"w":${entry('F32', [2], [-8, 0])}}`, f32(1, 2)), /data_offsets \[-8,0\] is not \[begin, end\]/);
    rejects(craft(`{"w":${entry('F32', [2], [0, 1e300])}}`, f32(1, 2)), /data_offsets .* is not \[begin, end\]/);
  });

  it('huge shapes whose byte count overflows, negative / fractional dims, dtype x shape vs byte length', () => {
    // 2^31 * 2^31 * 2^31 elements: the product is not a safe integer; must not wrap around to a "matching" size.
    rejects(craft(`{"w":${entry('F32', [2 ** 31, 2 ** 31, 2 ** 31], [0, 8])}}`, f32(1, 2)), /tensor 'w': shape \[2147483648, 2147483648, 2147483648\] of F32 needs .* bytes, more than the data section's 8 \(corrupt shape\)/);
    rejects(craft(`{"w":${entry('F64', [2 ** 40, 0], [0, 0])},"v":${entry('F32', [2 ** 30], [0, 8])}}`, f32(1, 2)), /tensor 'v': data_offsets \[0, 8\] hold 8 bytes, but F32 \[1073741824\] needs 4294967296/);
    rejects(craft(`{"w":${entry('F32', [-1, -2], [0, 8])}}`, f32(1, 2)), /tensor 'w': shape \[-1,-2\] is not a list of non-negative integers/);
    rejects(craft(`{"w":${entry('F32', [1.5], [0, 8])}}`, f32(1, 2)), /shape \[1.5\] is not a list of non-negative integers/);
    rejects(craft(`{"w":${entry('F32', '2', [0, 8])}}`, f32(1, 2)), /shape "2" is not a list/);
    rejects(craft(`{"w":${entry('I64', [2], [0, 8])}}`, f32(1, 2)), /I64 \[2\] needs 16/);
    rejects(craft(`{"w":${entry('F32', [3], [0, 8])}}`, f32(1, 2)), /hold 8 bytes, but F32 \[3\] needs 12/);
    rejects(craft(`{"w":${entry('U8', [8], [0, 8])}}`, f32(1, 2)), /unsupported dtype U8/);
  });

  it('`__proto__` keys anywhere in the header are refused and pollute nothing', () => {
    rejects(craft(`{"__proto__":{"polluted":1},"w":${entry('F32', [2], [0, 8])}}`, f32(1, 2)), /malformed header JSON .*'__proto__' is not allowed/);
    rejects(craft(`{"__metadata__":{"__proto__":{"polluted":"1"}},"w":${entry('F32', [2], [0, 8])}}`, f32(1, 2)), /'__proto__' is not allowed/);
    rejects(craft(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"__proto__":{"polluted":1}}}`, f32(1, 2)), /'__proto__' is not allowed/);
    PROTO_CLEAN();
    expect(() => parseJsonSafe('{"a":{"b":[{"__proto__":{"polluted":1}}]}}')).toThrow(/'__proto__' is not allowed/);
    expect(parseJsonSafe('{"constructor":{"prototype":{"x":1}},"ok":[1,2]}')).toEqual({ constructor: { prototype: { x: 1 } }, ok: [1, 2] });
    PROTO_CLEAN();
  });
});

describe('data files', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'seqrec-trust-files-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the attribute JSON loader refuses a `__proto__` key (item ids only) and pollutes nothing', async () => {
    const f = join(dir, 'X_item2attributes.json');
    await writeFile(f, '{"1": [1, 2], "__proto__": [3]}');
    await expect(loadItemAttributes(f)).rejects.toThrow(/X_item2attributes\.json.*item id key/);
    await writeFile(f, '{"__proto__": {"polluted": 1}}');
    await expect(loadItemAttributes(f)).rejects.toThrow(/X_item2attributes\.json/);
    PROTO_CLEAN();
  });

  it('a whole-file read over the size cap is refused with a clear message (line files are streamed)', async () => {
    const f = join(dir, 'big.json');
    await writeFile(f, 'x'.repeat(5000));
    await expect(readTextFile(f, 4096)).rejects.toThrow(/big\.json.*file is 5000 bytes, over the 4096-byte limit for a file read whole/);
    await expect(readTextFile(f, 5000)).resolves.toHaveLength(5000);
  });
});

describe('CLI options', () => {
  const data = async (argv: string[]): Promise<{ code: number; err: string }> => {
    const err: string[] = [];
    const code = await runDataCommand(argv, { out: () => undefined, err: (t) => err.push(t) });
    return { code, err: err.join('\n') };
  };
  it('`seqrec data` and `seqrec info` refuse unknown options and bad values, naming the option', async () => {
    const base = ['stats', '--data-dir', 'data/sample', '--dataset', 'Beauty'];
    for (const [argv, msg] of [
      [[...base, '--bogus'], /unknown option '--bogus'/],
      [[...base, '--max-length', '-3'], /--max-length must be an integer >= 1, got '-3'/],
      [[...base, '--max-length', '1e3'], /--max-length must be an integer >= 1, got '1e3'/],
      [[...base, '--format', 'xml'], /--format must be s3rec, interactions or attrec-split, got 'xml'/],
      [['gen-sample', '--data-dir', 'data/sample', '--dataset', 'Beauty', '--seed', 'abc'], /--seed must be an integer/],
      [['stats', '--data-dir'], /option --data-dir needs a value/],
      [['bogus-cmd'], /unknown command 'bogus-cmd'/],
    ] as const) {
      const r = await data([...argv]);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toMatch(msg);
    }
    const info = spawnSync(process.execPath, ['node_modules/tsx/dist/cli.mjs', 'cli/seqrec.ts', 'info', '--jsn'], { encoding: 'utf8' });
    expect(info.status).toBe(2);
    expect(info.stderr).toMatch(/seqrec info: unknown option '--jsn'/);
  }, 60_000);
});

describeGpu('checkpoint metadata', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'seqrec-trust-ckpt-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A real checkpoint image with one metadata value replaced (header rebuilt). */
  async function withMeta(key: string, value: string): Promise<Uint8Array> {
    const m = new Linear(2, 2);
    const opt = new Adam([...m.parameters()], { lr: 0.1 });
    const bytes = await checkpointBytes({ model: m, optimizer: opt, step: 1, metadata: { run: '{"epoch":1,"history":[]}' } });
    const f = parseSafetensors(bytes);
    f.metadata[key] = value;
    const { serializeSafetensors } = await import('../engine/safetensors.js');
    return serializeSafetensors(f.tensors, f.metadata);
  }

  it('`__proto__` in the optimizer / rng metadata is refused with the file name; nothing is polluted', async () => {
    const m = new Linear(2, 2);
    const opt = new Adam([...m.parameters()], { lr: 0.1 });
    const evilOpt = await withMeta('optimizer', '{"kind":"adam","hyper":{"__proto__":{"polluted":1},"lr":0.1},"steps":{}}');
    expect(() => applyCheckpoint(parseSafetensors(evilOpt), { model: m, optimizer: opt }, 'evil.ckpt')).toThrow(/evil\.ckpt: metadata "optimizer" is not valid JSON .*'__proto__' is not allowed/);
    const evilRng = await withMeta('rng', '{"seed":1,"offset":2,"__proto__":{"polluted":1}}');
    expect(() => applyCheckpoint(parseSafetensors(evilRng), { model: m, restoreRng: true }, 'evil.ckpt')).toThrow(/evil\.ckpt: metadata "rng" is not valid JSON/);
    const badRng = await withMeta('rng', '{"seed":"x"}');
    expect(() => applyCheckpoint(parseSafetensors(badRng), { model: m, restoreRng: true }, 'evil.ckpt')).toThrow(/evil\.ckpt: metadata "rng" is not \{seed, offset\} integers/);
    PROTO_CLEAN();
    for (const p of m.parameters()) p.dispose();
  });

  it('`__proto__` in a run state (RunDir.loadLast) is refused', async () => {
    const m = new Linear(2, 2);
    const run = new RunDir(dir);
    await run.saveLast(m, undefined, JSON.parse('{"epoch":1,"history":[],"__proto__":{"polluted":1}}'));
    await expect(run.loadLast(m, undefined)).rejects.toThrow(/run state is not valid JSON .*'__proto__' is not allowed/);
    PROTO_CLEAN();
    for (const p of m.parameters()) p.dispose();
    void Tensor;
  });
});
