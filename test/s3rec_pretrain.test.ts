// S3-Rec pretraining (models/s3rec_pretrain.ts, cli/s3rec_pretrain.ts) on the bundled Beauty sample (400 users,
// 2,825 pretraining samples) with a small model (hidden 16, 1 layer) for speed:
//   - the reused-buffer host builder equals buildPretrainBatch(makePretrainSample) draw for draw; InfoNCE
//     candidates respect their exclusion rules (the sample invariants themselves: test/data_splits.test.ts);
//   - the pruned-last-layer pass (S3RecModel.encodePretrain) equals the rows of the full encoder pass (rows and
//     every gradient, dropout off), on both encoder paths (the losses themselves: test/s3rec_parity.test.ts);
//   - training: the losses decrease; checkpoints load strictly into a fresh model with the official names;
//     2 epochs straight == 1 + resume + 1 (losses and weights bit for bit); one log line per epoch;
//   - the InfoNCE variant runs and decreases; heads without bias stay exactly 0;
//   - the CLI: --json output, and errors that name the option or the file.
// Every file is written under os.tmpdir().
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { backward, manualSeed, readSafetensors, scope, sync, Tensor } from '../engine/index.js';
import { concat, mul, slice, sum } from '../kernels/index.js';
import {
  buildPretrainBatch, epochOrder, ItemSet, loadS3RecDataset, longSequence, pretrainPrefixes, Rng, type S3RecDataset,
} from '../models/data/index.js';
import { S3RecModel, pretrainBatch, PRETRAIN_WEIGHTS } from '../models/s3rec.js';
import { loadS3RecModel } from '../models/s3rec_train.js';
import {
  PretrainBatcher, pretrainCheckpointName, pretrainS3Rec, resolvePretrainOptions, type PretrainOptions,
} from '../models/s3rec_pretrain.js';
import { runPretrain } from '../cli/s3rec_pretrain.js';
import { describeGpu, expectClose } from './harness.js';

const SAMPLE = join(import.meta.dirname, '..', 'data', 'sample');
const created: string[] = [];
afterAll(() => created.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'seqrec-pretrain-'));
  created.push(d);
  return d;
};

let dsCache: S3RecDataset | null = null;
const sample = async (): Promise<S3RecDataset> => (dsCache ??= await loadS3RecDataset(SAMPLE, 'Beauty', { sample: 'optional' }));
const SMALL = { hiddenSize: 16, numHiddenLayers: 1 } as const;
const smallModel = (ds: S3RecDataset, seed = 42, extra: Record<string, unknown> = {}): S3RecModel => {
  manualSeed(seed);
  return new S3RecModel({ ...SMALL, ...extra, itemSize: ds.itemSize, attributeSize: ds.attributes.attributeSize });
};
const weightsOf = async (m: S3RecModel): Promise<Map<string, Float32Array>> => {
  const out = new Map<string, Float32Array>();
  for (const [k, t] of m.stateDict()) out.set(k, (await t.toArray()) as Float32Array);
  return out;
};
const sameBits = (a: Float32Array, b: Float32Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

// ------------------------------------------------------------------------------------------------ host side
describe('pretraining batches (host)', () => {
  it('PretrainBatcher == buildPretrainBatch(makePretrainSample), draw for draw, over a whole epoch', async () => {
    const ds = await sample();
    const pre = pretrainPrefixes(ds.sequences, 50);
    expect(pre.count).toBe(2825);
    const long = longSequence(ds.sequences);
    const bt = new PretrainBatcher(ds.sequences, pre, { itemSize: ds.itemSize, maskId: ds.maskId, longSequence: long, maskP: 0.2, maxLen: 50, batchSize: 100 });
    const ra = new Rng(11);
    const rb = new Rng(11);
    const order = epochOrder(pre.count, 42, 3);
    const scratch = new ItemSet(ds.itemSize);
    for (let i = 0; i < order.length; i += 100) {
      const idx = order.subarray(i, i + 100);
      const want = buildPretrainBatch(ds.sequences, pre, idx, { itemSize: ds.itemSize, maskId: ds.maskId, longSequence: long, rng: ra, scratch, maxLen: 50 });
      const got = bt.build(idx, rb);
      expect(got.B).toBe(idx.length);
      expect(Array.from(got.lengths)).toEqual(Array.from(want.lengths));
      for (const k of ['masked', 'pos', 'neg', 'maskedSegment', 'posSegment', 'negSegment'] as const) {
        expect(Buffer.from(got[k].buffer, got[k].byteOffset, got[k].byteLength).equals(Buffer.from(want[k].buffer)), k).toBe(true);
      }
    }
    expect(rb.state()).toEqual(ra.state());
  });

  it('InfoNCE candidates: item negatives outside the prefix (column 0 = the official negative), attribute positive in A_i, negatives outside A_i', async () => {
    const ds = await sample();
    const pre = pretrainPrefixes(ds.sequences, 50);
    const K = 7;
    const A = ds.attributes.attributeSize;
    const bt = new PretrainBatcher(ds.sequences, pre, {
      itemSize: ds.itemSize, maskId: ds.maskId, longSequence: longSequence(ds.sequences), maskP: 0.2, maxLen: 50, batchSize: 64,
      infonce: { K, attributes: ds.attributes.attributes, attributeSize: A },
    });
    const idx = epochOrder(pre.count, 1, 0).subarray(0, 64);
    const b = bt.build(idx, new Rng(1), new Rng(2));
    const x = b.infonce!;
    let masked = 0;
    for (let r = 0; r < b.B; r++) {
      const n = b.lengths[r]!;
      const prefix = new Set(Array.from(b.pos.subarray(r * 50 + 50 - n, r * 50 + 50)));
      for (let s = r * 50 + 50 - n; s < r * 50 + 50; s++) {
        if (b.masked[s] === ds.maskId) {
          masked++;
          expect(x.itemNeg[s * K]).toBe(b.neg[s]);
          for (let j = 0; j < K; j++) {
            const v = x.itemNeg[s * K + j]!;
            expect(v >= 1 && v < ds.itemSize && !prefix.has(v)).toBe(true);
          }
        }
        const attrs = new Set(Array.from(ds.attributes.attributes[b.pos[s]!] ?? []));
        if (attrs.size === 0) expect(x.attrPos[s]).toBe(0);
        else {
          expect(attrs.has(x.attrPos[s]!)).toBe(true);
          for (let j = 0; j < K; j++) {
            const a = x.attrNeg[s * K + j]!;
            expect(a >= 1 && a < A && !attrs.has(a)).toBe(true);
          }
        }
      }
    }
    expect(masked).toBeGreaterThanOrEqual(b.B); // the last item of every prefix is masked
  });

  it('options: official defaults, the paper preset, explicit options win, bad values are named', () => {
    const d = resolvePretrainOptions();
    expect([d.batchSize, d.epochs, d.lr, d.maskP, d.objective, d.headBias, d.saveEvery, d.seed]).toEqual([100, 300, 1e-3, 0.2, 'official', true, 10, 42]);
    expect(d.weights).toEqual(PRETRAIN_WEIGHTS);
    const p = resolvePretrainOptions({ preset: 'paper', epochs: 5 });
    expect([p.batchSize, p.epochs, p.objective, p.headBias]).toEqual([200, 5, 'infonce', false]);
    expect(() => resolvePretrainOptions({ batchSize: 0 })).toThrow(/batchSize must be an integer >= 1, got 0/);
    expect(() => resolvePretrainOptions({ maskP: 1.5 })).toThrow(/maskP must be in \[0, 1\]/);
    expect(pretrainCheckpointName('LastFM', 150)).toBe('LastFM-epochs-150.safetensors');
  });
});

describe('seqrec pretrain: usage errors (no GPU needed)', () => {
  it('rejects an unknown option, a bad value and a missing dataset with a message naming it', async () => {
    await expect(runPretrain(['--bogus'])).rejects.toThrow(/seqrec pretrain: unknown option '--bogus'/);
    await expect(runPretrain(['--epochs', 'ten'])).rejects.toThrow(/seqrec pretrain: --epochs must be an integer >= 0, got 'ten'/);
    await expect(runPretrain(['--objective', 'bpr'])).rejects.toThrow(/--objective must be one of official, infonce, got 'bpr'/);
    await expect(runPretrain(['--mask-p', '2'])).rejects.toThrow(/--mask-p must be a number >= 0 and <= 1, got '2'/);
    await expect(runPretrain(['--data-dir', SAMPLE, '--dataset', 'Nope'])).rejects.toThrow(/Nope\.txt/);
    const help = await (async () => {
      const log = console.log;
      const lines: string[] = [];
      console.log = (s: string) => void lines.push(s);
      try {
        expect(await runPretrain(['--help'])).toBe(0);
      } finally {
        console.log = log;
      }
      return lines.join('\n');
    })();
    for (const k of ['--save-every', '--resume', '--out', '--preset', '--objective', '--head-bias', '--json']) expect(help).toContain(k);
  });
});

// ------------------------------------------------------------------------------------------------ GPU
describeGpu('S3-Rec pretraining: pruned encoder pass', () => {
  for (const path of ['varlen', 'padded'] as const) {
    it(`pruned last layer (encodePretrain) == the full encoder pass's rows (dropout 0, ${path}): rows and every gradient`, async () => {
      const ds = await sample();
      const model = smallModel(ds, 3, { numHiddenLayers: 2, hiddenDropoutProb: 0, attentionProbsDropoutProb: 0 });
      try {
        const pre = pretrainPrefixes(ds.sequences, 50);
        const bt = new PretrainBatcher(ds.sequences, pre, { itemSize: ds.itemSize, maskId: ds.maskId, longSequence: longSequence(ds.sequences), maskP: 0.2, maxLen: 50, batchSize: 32 });
        const b = bt.build(epochOrder(pre.count, 5, 0).subarray(0, 32), new Rng(9));
        const eb = pretrainBatch(b, path);
        const B = 32;
        const grads = async (): Promise<Map<string, Float32Array>> => {
          const g = new Map<string, Float32Array>();
          for (const [k, t] of model.namedParameters()) if (t.grad) g.set(k, (await t.grad.toArray()) as Float32Array);
          model.zeroGrad();
          return g;
        };
        // A fixed random readout weight R so that every row and column of h gets a distinct upstream gradient.
        const run = async (pruned: boolean): Promise<{ h: Float32Array; g: Map<string, Float32Array> }> => {
          model.zeroGrad();
          const { h, loss } = scope(() => {
            let rows: Tensor;
            if (pruned) rows = model.encodePretrain(eb, B).h; // [N + 3B, H]
            else {
              const full = model.encode(eb, false); // [N4, H]
              const N = eb.packed ? eb.packed.plan.offsets[B]! : B * eb.L;
              rows = concat([slice(full, 0, 0, N), slice(model.lastRows(eb, full), 0, B, 4 * B)], 0); // [N + 3B, H]
            }
            const R = Tensor.from(Float32Array.from({ length: rows.size }, (_, i) => Math.sin(i * 0.37)), rows.shape);
            return { h: rows, loss: sum(mul(rows, R)) };
          });
          backward(loss);
          const out = { h: (await h.toArray()) as Float32Array, g: await grads() };
          h.dispose();
          loss.dispose();
          return out;
        };
        const want = await run(false);
        const got = await run(true);
        expectClose('rows', got.h, want.h, { atol: 1e-5, rtol: 1e-4 });
        expect([...got.g.keys()].sort()).toEqual([...want.g.keys()].sort());
        for (const [k, g] of want.g) expectClose(`grad ${k}`, got.g.get(k)!, g, { atol: 1e-4, rtol: 1e-4 });
        eb.dispose();
      } finally {
        model.dispose();
        await sync();
      }
    });
  }
});

describeGpu('S3-Rec pretraining: training, checkpoints, resume', () => {
  it('the losses decrease over 3 epochs; one log line per epoch with the 4 losses; checkpoints (every 2 epochs and the last) load strictly', async () => {
    const ds = await sample();
    const dir = tempDir();
    const model = smallModel(ds);
    const epochs: number[] = [];
    try {
      const r = await pretrainS3Rec(model, ds, { epochs: 3, saveEvery: 2, outDir: dir, hooks: { onEpoch: (e) => epochs.push(e.epoch) } });
      expect(epochs).toEqual([0, 1, 2]);
      const h = r.history;
      for (const e of h) for (const k of ['aap', 'mip', 'map', 'sp', 'total'] as const) expect(Number.isFinite(e[k]), `${k} epoch ${e.epoch}`).toBe(true);
      expect(h[2]!.total).toBeLessThan(h[1]!.total);
      expect(h[1]!.total).toBeLessThan(h[0]!.total);
      expect(h[2]!.aap).toBeLessThan(h[0]!.aap);
      expect(h[2]!.map).toBeLessThan(h[0]!.map);
      expect(h[2]!.mip).toBeLessThan(h[0]!.mip);
      // the official average: summed loss / (num_batches * batch_size); MIP per masked position is in [0.3133, 1.3133]
      expect(h[0]!.steps).toBe(29);
      expect(h[0]!.mip).toBeGreaterThan(0.3133 * 0.2);
      // log.jsonl: one line per epoch with the four losses
      const lines = readFileSync(join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
      expect(lines.map((l) => l.epoch)).toEqual([0, 1, 2]);
      for (const l of lines) for (const k of ['aap', 'mip', 'map', 'sp', 'total', 'seconds', 'cpuSeconds']) expect(typeof l[k]).toBe('number');
      // checkpoints every 2 epochs and after the last, official names only, strict load into a fresh model
      const files = readdirSync(dir).sort();
      expect(files).toEqual(['Beauty-epochs-2.safetensors', 'Beauty-epochs-3.safetensors', 'last.safetensors', 'log.jsonl']);
      expect(r.checkpoints).toEqual([join(dir, 'Beauty-epochs-2.safetensors'), join(dir, 'Beauty-epochs-3.safetensors')]);
      const f = await readSafetensors(join(dir, 'Beauty-epochs-3.safetensors'));
      expect([...f.tensors.keys()].sort()).toEqual([...model.stateDict().keys()].sort());
      expect([...f.tensors.keys()]).toContain('item_encoder.layer.0.attention.query.weight');
      expect([...f.tensors.keys()].some((k) => k.startsWith('optimizer.'))).toBe(false);
      const fresh = await loadS3RecModel(join(dir, 'Beauty-epochs-3.safetensors'), {}, ds);
      try {
        const wa = await weightsOf(model);
        const wb = await weightsOf(fresh);
        for (const [k, v] of wa) expect(sameBits(wb.get(k)!, v), k).toBe(true);
        expect(fresh.cfg.hiddenSize).toBe(16);
      } finally {
        fresh.dispose();
      }
    } finally {
      model.dispose();
      await sync();
    }
  });

  it('resume: 2 epochs straight == 1 epoch + resume + 1 epoch (losses and weights bit for bit)', async () => {
    const ds = await sample();
    const dir = tempDir();
    const opts: PretrainOptions = { epochs: 2, saveEvery: 1, stepsPerEpoch: 12, progressEvery: 5 };
    const a = smallModel(ds);
    const straight = await pretrainS3Rec(a, ds, { ...opts, outDir: join(dir, 'a') });
    const wa = await weightsOf(a);
    a.dispose();
    const b1 = smallModel(ds);
    await pretrainS3Rec(b1, ds, { ...opts, epochs: 1, outDir: join(dir, 'b') });
    b1.dispose();
    const b2 = smallModel(ds, 1234); // a different init: every weight must come from last.safetensors
    manualSeed(999); // and nothing from the engine RNG state before the resume
    const resumed = await pretrainS3Rec(b2, ds, { ...opts, outDir: join(dir, 'b'), resume: true });
    try {
      expect(resumed.history.map((h) => h.epoch)).toEqual([0, 1]);
      const pick = (h: typeof straight.history) => h.map((e) => [e.aap, e.mip, e.map, e.sp, e.total, e.steps, e.samples]);
      expect(pick(resumed.history)).toEqual(pick(straight.history));
      const wb = await weightsOf(b2);
      for (const [k, v] of wa) expect(sameBits(wb.get(k)!, v), k).toBe(true);
      expect(readFileSync(join(dir, 'b', 'log.jsonl'), 'utf8').trim().split('\n')).toHaveLength(2);
      expect(resumed.checkpoints).toEqual([join(dir, 'b', 'Beauty-epochs-1.safetensors'), join(dir, 'b', 'Beauty-epochs-2.safetensors')]);
    } finally {
      b2.dispose();
      await sync();
    }
  });

  it('abort inside an epoch: the model goes back to the last finished epoch, which gets its checkpoint', async () => {
    const ds = await sample();
    const dir = tempDir();
    const opts: PretrainOptions = { epochs: 3, saveEvery: 0, stepsPerEpoch: 8, progressEvery: 4 };
    const a = smallModel(ds);
    await pretrainS3Rec(a, ds, { ...opts, epochs: 1 });
    const wa = await weightsOf(a);
    a.dispose();
    const b = smallModel(ds);
    const ac = new AbortController();
    try {
      const r = await pretrainS3Rec(b, ds, {
        ...opts, outDir: dir,
        hooks: { signal: ac.signal, onProgress: (e) => void (e.epoch === 1 && e.step === 4 && ac.abort()) },
      });
      expect([r.aborted, r.epochs, r.history.length]).toEqual([true, 1, 1]);
      expect(r.checkpoints).toEqual([join(dir, 'Beauty-epochs-1.safetensors')]);
      const wb = await weightsOf(b);
      for (const [k, v] of wa) expect(sameBits(wb.get(k)!, v), k).toBe(true);
      expect(readFileSync(join(dir, 'log.jsonl'), 'utf8').trim().split('\n')).toHaveLength(1);
    } finally {
      b.dispose();
      await sync();
    }
  });

  it('InfoNCE objective (paper) runs and decreases; heads without bias stay exactly 0', async () => {
    const ds = await sample();
    const model = smallModel(ds);
    try {
      const r = await pretrainS3Rec(model, ds, { objective: 'infonce', headBias: false, negatives: 15, epochs: 3 });
      const h = r.history;
      for (const e of h) for (const k of ['aap', 'mip', 'map', 'sp', 'total'] as const) expect(Number.isFinite(e[k])).toBe(true);
      expect(h[2]!.total).toBeLessThan(h[0]!.total);
      expect(h[2]!.mip).toBeLessThan(h[0]!.mip);
      for (const m of [model.aapNorm, model.mipNorm, model.mapNorm, model.spNorm]) {
        expect(Array.from((await m.bias!.toArray()) as Float32Array).every((v) => v === 0)).toBe(true);
        expect(m.bias!.requiresGrad).toBe(true); // restored after pretraining
      }
    } finally {
      model.dispose();
      await sync();
    }
  });
});

describeGpu('seqrec pretrain CLI (child process)', () => {
  it('--json: the only stdout line is one JSON object with the final losses and the checkpoints', () => {
    const dir = tempDir();
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, '..', 'cli', 'seqrec.ts'), 'pretrain', '--data-dir', SAMPLE, '--dataset', 'Beauty', '--hidden-size', '16', '--layers', '1',
        '--epochs', '1', '--steps-per-epoch', '5', '--out', dir, '--json'],
      { encoding: 'utf8', env: { ...process.env, EGL_PLATFORM: 'surfaceless' } },
    );
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const out = JSON.parse(lines[0]!) as { epochs: number; final: Record<string, number>; checkpoints: string[]; peakGpuBytes: number; secondsPerEpoch: number };
    expect(out.epochs).toBe(1);
    for (const k of ['aap', 'mip', 'map', 'sp', 'total']) expect(Number.isFinite(out.final[k])).toBe(true);
    expect(out.checkpoints).toEqual([join(dir, 'Beauty-epochs-1.safetensors')]);
    expect(out.peakGpuBytes).toBeGreaterThan(0);
    expect(r.stderr).toMatch(/epoch 1\/1 pretrain/);
  });
});
