// The bench registry (bench/registry.ts) without timing anything:
//   - every bench file is bench/<family>.bench.ts for a kernels/<family>.ts (or a non-kernel family: engine,
//     e2e), and every full-size entry's declared metadata is well-formed (op = the file's family, lower_snake row
//     names, positive integer dims, non-negative FLOP and byte counts, kinds, no duplicate rows);
//   - benchOps() lists the kernel families with entries; filters pick files before importing them;
//   - every entry of every file validates at its tiny size (the runner's own validateEntry: inputs, the float64
//     reference, every variant set up, run, read back, compared), so a broken reference or entry fails here;
//   - a wrong reference is caught (the check is not vacuous);
//   - the engine queue's timestamp-query timing (the bench runner's GPU clock) where the device has the feature.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { benchFiles, benchOps, checkEntry, entriesOf, loadEntries, NON_KERNEL_FAMILIES, rowName, selectFiles } from '../bench/registry.js';
import { adapterSlug, parseBenchArgs, validateEntry } from '../bench/run.js';
import { renderSection, replaceSection, BEGIN, END } from '../bench/report.js';
import { benchBarGroups } from '../bench/plot.js';
import { engineVariant, rand } from '../bench/common.js';
import type { BenchEntry, BenchRow } from '../bench/types.js';
import { rt, Tensor } from '../engine/index.js';
import { mul } from '../kernels/index.js';
import { describeGpu } from './harness.js';

const KERNELS = join(import.meta.dirname, '..', 'kernels');
const families = benchFiles().map((f) => f.family);

describe('bench registry (no GPU)', () => {
  it('each bench file is named after a kernel file (or engine / e2e)', () => {
    expect(families.length).toBeGreaterThan(10);
    const kernelFile = (f: string): boolean => existsSync(join(KERNELS, `${f}.ts`));
    for (const f of families) if (!NON_KERNEL_FAMILIES.includes(f)) expect(kernelFile(f), `kernels/${f}.ts for bench/${f}.bench.ts`).toBe(true);
  });

  it('full-size entries are well-formed, rows unique, names prefixed by the family', async () => {
    const all = await loadEntries([], 'full'); // throws on a malformed entry or a duplicate row
    expect(new Set(all.map((e) => e.op))).toEqual(new Set(families));
    for (const e of all) {
      expect(checkEntry(e)).toEqual([]);
      for (const v of e.variants) expect(rowName(e, v.name).startsWith(`${e.op}.`)).toBe(true);
    }
    const kinds = new Set(all.flatMap((e) => e.variants.map((v) => v.kind)));
    for (const k of ['fused', 'composed', 'tfjs', 'step']) expect(kinds.has(k as never), k).toBe(true);
  });

  it('benchOps() lists the kernel families that have entries', async () => {
    const ops = await benchOps();
    expect(ops).toEqual([...ops].sort());
    for (const op of ['attention_masked', 'euclid_score', 'infonce', 'layernorm', 'matmul', 'scale_shift', 'softmax', 'topk']) expect(ops).toContain(op);
    for (const op of NON_KERNEL_FAMILIES) expect(ops).not.toContain(op);
  });

  it('a filter picks files by its first word before importing; one naming no family loads all', () => {
    const pick = (...f: string[]): string[] => selectFiles(f).map((x) => x.family);
    expect(pick('matmul.reg8x16 512^3')).toEqual(['matmul']);
    expect(pick('attention')).toEqual(['attention_masked']);
    expect(pick('scale_shift', 'e2e')).toEqual(['e2e', 'scale_shift']);
    expect(pick('fused')).toEqual(families);
    expect(pick()).toEqual(families);
  });

  it('checkEntry names what is wrong', () => {
    const bad = { op: 'Matmul', name: 'other.x', shape: ' ', dims: { M: 0, N: 2.5 }, flops: -1, inputs: () => 0, reference: () => ({}), variants: [] } as unknown as BenchEntry;
    const p = checkEntry(bad, 'matmul').join('\n');
    for (const s of ['lower_snake', "family 'matmul'", 'name', 'empty shape', 'dim M', 'dim N', 'flops', 'no variants']) expect(p).toContain(s);
  });

  it('options, adapter slug, report section, plot groups', () => {
    expect(parseBenchArgs(['matmul', '--json', '--reps', '3', '--plot', 'x.svg'])).toMatchObject({ filters: ['matmul'], json: true, reps: 3, plot: 'x.svg' });
    expect(() => parseBenchArgs(['--bogus'])).toThrow(/unknown option '--bogus'/);
    expect(() => parseBenchArgs(['--reps', 'x'])).toThrow(/--reps needs a non-negative number/);
    const llvm = { vendor: '', architecture: '', device: 'llvmpipe-llvm-15-0-6-256-bits-', description: 'OpenGL ES 3.2 Mesa', backend: 'opengles', featureLevel: 'compatibility' as const };
    expect(adapterSlug(llvm)).toBe('llvmpipe-opengles-compat');
    expect(adapterSlug({ ...llvm, device: 'swiftshader-device-subzero-', backend: 'vulkan', featureLevel: 'core' })).toBe('swiftshader-vulkan-core');
    const row = (name: string, kind: BenchRow['kind'], ms: number): BenchRow => ({
      op: 'x', name: `x.${name}`, variant: name, kind, shape: 's', dims: { n: 1 }, ms, minMs: ms, runs: 3, clock: 'host', hostMs: ms,
      gflops: null, gbps: null, vsTfjs: null, adapter: 'a', date: '2026-01-01T00:00:00Z',
    });
    const rows = [row('fused', 'fused', 1), row('alt', 'alt', 2), row('composed', 'composed', 3), row('tfjs', 'tfjs', 4)];
    expect(benchBarGroups(rows)).toEqual([{ label: 'x s', bars: [{ name: 'fused', value: 1 }, { name: 'composed', value: 3 }, { name: 'tfjs', value: 4 }] }]);
    const res = { adapter: { slug: 'a-b-core', name: 'A', backend: 'b', featureLevel: 'core', features: [] }, clock: 'host' as const, settings: { reps: 3, warmup: 1, budget: 1 }, rows };
    const doc = replaceSection(`# T\n\n${BEGIN}\nold\n${END}\n\ntail\n`, renderSection([{ res, source: 'bench/results/a-b-core.json' }]));
    expect(doc).toContain('### a-b-core');
    expect(doc).toContain('| `x.fused` | s | 1.000 |');
    expect(doc).not.toContain('old');
    expect(doc.endsWith('\n\ntail\n')).toBe(true);
  });
});

describeGpu('bench entries validate at a tiny size', () => {
  for (const f of benchFiles()) {
    it(f.family, async () => {
      const es = await entriesOf(f, 'tiny');
      expect(es.length).toBeGreaterThan(0);
      for (const e of es) await validateEntry(e);
    });
  }

  it('queue timestamps: on where the device has timestamp-query (SwiftShader), off and refused elsewhere (llvmpipe)', async () => {
    const q = rt().queue;
    const has = rt().device.features.has('timestamp-query');
    expect(q.enableTimestamps()).toBe(has);
    try {
      if (!has) {
        await expect(q.takeGpuTime()).rejects.toThrow(/without enableTimestamps/);
        return;
      }
      await q.takeGpuTime();
      const x = Tensor.from(new Float32Array(1 << 16).fill(1));
      const y = mul(x, 2);
      const t = await q.takeGpuTime();
      expect(t.ms).toBeGreaterThan(0);
      expect(t.untimedPasses).toBe(0);
      expect((await y.toArray())[5]).toBe(2);
      x.dispose();
      y.dispose();
    } finally {
      q.enableTimestamps(false);
    }
  });

  it('a wrong reference fails validation, naming the row', async () => {
    const e: BenchEntry<{ x: ReturnType<typeof rand> }> = {
      op: 'scale_shift',
      shape: 'n10',
      dims: { n: 10 },
      inputs: () => ({ x: rand([10], 1) }),
      reference: ({ x }) => ({ out: Array.from(x.data, (v) => 2 * v + 1e-3) }),
      variants: [engineVariant('fused', 'fused', { forward: ({ x }) => mul(x!, 2) })],
    };
    await expect(validateEntry(e)).rejects.toThrow(/scale_shift\.fused n10: .*out: 10 of 10 values out of tolerance/);
  });
});
