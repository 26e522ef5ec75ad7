// Trust in training: memory stays flat over many steps (GPU pool bytes in use and the JS heap), `kill -9` during
// training and during a checkpoint write followed by `--resume` leaves no corrupt file and ends with the same
// metrics, bit for bit, as an uninterrupted run; the same seed twice gives identical results.
// Long (CI runs on 2 shared cores): each test has its own timeout.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, expect, it } from 'vitest';
import { readSafetensors, rt, sync, zeros } from '../engine/index.js';
import { buildFinetuneTrainBatch } from '../models/data/batching.js';
import { loadS3RecDataset } from '../models/data/s3rec.js';
import { ItemSet, Rng } from '../models/data/sampling.js';
import { Adam } from '../models/optim.js';
import { encoderBatch, S3RecModel } from '../models/s3rec.js';
import { trainStep } from '../models/s3rec_train.js';
import { loadAttRecData, trainAttRec } from '../models/attrec_train.js';
import { describeGpu } from './harness.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SAMPLE = join(ROOT, 'data', 'sample');
const tmpDirs: string[] = [];
const tmp = (tag: string): string => {
  const d = mkdtempSync(join(tmpdir(), `seqrec-trust-${tag}-`));
  tmpDirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

// A real forced GC even without --expose-gc on the fork's command line (V8 flag set at run time).
v8.setFlagsFromString('--expose_gc');
const gc = ((globalThis as { gc?: () => void }).gc ?? (vm.runInNewContext('gc') as (() => void) | undefined)) as (() => void) | undefined;
function heapUsed(): number {
  gc?.();
  return process.memoryUsage().heapUsed;
}

/** Least-squares slope of ys over xs. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return num / den;
}

describeGpu('memory stays flat over many training steps', () => {
  it('S3-Rec fine-tuning: 2,000 trainStep calls (hidden 16, 1 layer, L 20, batch 32)', { timeout: 240_000 }, async () => {
    const ds = await loadS3RecDataset(SAMPLE, 'Beauty', { sample: 'optional' });
    const L = 20;
    const B = 32;
    const model = new S3RecModel({ itemSize: ds.itemSize, attributeSize: ds.attributes.attributeSize, hiddenSize: 16, numHiddenLayers: 1, maxSeqLength: L });
    const opt = new Adam(model, { lr: 1e-3 });
    const lossSum = zeros([]);
    const rng = new Rng(7);
    const scratch = new ItemSet(ds.itemSize);
    const users = ds.sequences.length;
    const STEPS = 2000;
    const WARMUP = 200;
    const every = 100;
    const pool: number[] = [];
    const heap: number[] = [];
    const at: number[] = [];
    const t0 = performance.now();
    for (let s = 0; s < STEPS; s++) {
      const idx = Int32Array.from({ length: B }, (_, i) => (s * B + i) % users);
      const b = buildFinetuneTrainBatch(ds.sequences, idx, { maxLen: L, itemSize: ds.itemSize, rng, scratch });
      const eb = encoderBatch(b.inputIds, B, L, 'varlen');
      trainStep(model, opt, eb, b.targetPos, b.targetNeg, lossSum);
      rt().queue.flush();
      eb.dispose();
      if ((s + 1) % every === 0) {
        expect(Number.isFinite(await lossSum.item())).toBe(true); // a readback (the GPU caught up)
        await sync();
        if (s + 1 >= WARMUP) {
          at.push(s + 1);
          pool.push(rt().pool.stats().inUseBytes);
          heap.push(heapUsed());
        }
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const st = rt().pool.stats();
    console.log(
      `[trust_training] S3-Rec ${STEPS} steps in ${seconds.toFixed(1)} s; pool in use ${pool[0]} -> ${pool.at(-1)} bytes (allocated ${st.allocatedBytes}, peak ${st.peakBytes}); ` +
        `heap ${(heap[0]! / 2 ** 20).toFixed(1)} -> ${(heap.at(-1)! / 2 ** 20).toFixed(1)} MiB (gc ${gc ? 'forced' : 'not exposed'}); heap slope ${(slope(at, heap) / 1024).toFixed(2)} KiB/step`,
    );
    // GPU: bytes in use are exactly constant after warm-up (the pool is deterministic per step shape).
    expect(new Set(pool).size, `pool inUseBytes over steps: ${pool.join(', ')}`).toBe(1);
    // Heap: with forced GC flat to within 1 MiB end to end; without, a slope under 2 KiB/step (a leak of one
    // small object per step shows; V8's lazy collection does not).
    if (gc) expect(Math.abs(heap.at(-1)! - heap[0]!)).toBeLessThan(1 << 20);
    expect(slope(at, heap)).toBeLessThan(2048);
    lossSum.dispose();
    opt.dispose();
    model.dispose();
  });

  it('AttRec: 2,000 training steps through trainAttRec (dim 16, batch 16 on the ml-100k sample)', { timeout: 240_000 }, async () => {
    const data = await loadAttRecData(join(SAMPLE, 'ml-100k-sample'));
    const pool: number[] = [];
    const heap: number[] = [];
    const at: number[] = [];
    let steps = 0;
    let done = 0; // steps of finished epochs
    let perEpoch = 0;
    const t0 = performance.now();
    // Sampled every 50 steps (the loop reads its loss back there) after the first epoch (warm-up: optimizer
    // state, evaluation caches); the evaluation between epochs is part of the loop being checked.
    const ctrl = new AbortController();
    const r = await trainAttRec(data, {
      dim: 16, batchSize: 16, epochs: 200, patience: 0, seed: 3, readEvery: 50,
      hooks: {
        onProgress: (e) => {
          if (e.phase !== 'train' || e.step === 0) return;
          perEpoch = e.steps;
          steps = done + e.step;
          if (done > 0 && e.step % 50 === 0) {
            at.push(steps);
            pool.push(rt().pool.stats().inUseBytes);
            heap.push(heapUsed());
          }
          if (steps >= 2000) ctrl.abort();
        },
        onEpoch: () => {
          done += perEpoch;
        },
        signal: ctrl.signal,
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    console.log(
      `[trust_training] AttRec ${steps} steps (${perEpoch}/epoch, evaluation after each epoch) in ${seconds.toFixed(1)} s; pool in use ${pool[0]} -> ${pool.at(-1)} bytes (${new Set(pool).size} distinct over ${pool.length} samples); ` +
        `heap ${(heap[0]! / 2 ** 20).toFixed(1)} -> ${(heap.at(-1)! / 2 ** 20).toFixed(1)} MiB (gc ${gc ? 'forced' : 'not exposed'}); heap slope ${(slope(at, heap) / 1024).toFixed(2)} KiB/step`,
    );
    expect(steps).toBeGreaterThanOrEqual(2000);
    expect(new Set(pool).size, `pool inUseBytes every 50 steps after epoch 1: ${pool.join(', ')}`).toBe(1);
    if (gc) expect(Math.abs(heap.at(-1)! - heap[0]!)).toBeLessThan(1 << 20);
    expect(slope(at, heap)).toBeLessThan(2048);
    r.optimizer.dispose();
    r.model.dispose();
  });
});

// ------------------------------------------------------------------------------------------------ kill -9 + resume
const FT_ARGS = ['--data-dir', SAMPLE, '--dataset', 'Beauty', '--epochs', '6', '--hidden-size', '16', '--layers', '1', '--max-len', '20', '--batch-size', '64', '--seed', '11', '--json'];

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], opts: { killWhen?: (stderr: string, child: ChildProcess) => boolean; pollDir?: string; killOnTmp?: boolean; env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve) => {
    // One process (node with tsx's loader), not tsx's CLI: that one runs the script in a child process, which a
    // SIGKILL of the parent would leave running.
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'cli', 'seqrec.ts'), 'finetune', ...args], {
      cwd: ROOT,
      env: { ...process.env, EGL_PLATFORM: 'surfaceless', NODEVICE_SELECT: '1', ...(opts.env ?? {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const kill = (): void => {
      if (!killed) {
        killed = true;
        child.kill('SIGKILL');
      }
    };
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (opts.killWhen?.(stderr, child)) kill();
    });
    // Poll the run folder for the checkpoint's temp file (engine/safetensors.ts: `.last.safetensors.<pid>.*.tmp`)
    // and kill the moment one exists: a kill in the middle of a checkpoint write.
    let timer: NodeJS.Timeout | null = null;
    if (opts.killOnTmp && opts.pollDir) {
      const dir = opts.pollDir;
      const poll = (): void => {
        if (killed) return;
        try {
          // A write that REPLACES an existing last.safetensors (epoch >= 1): the old file must survive intact.
          const files = readdirSync(dir);
          if (files.includes('last.safetensors') && files.some((f) => f.startsWith('.last.safetensors.') && f.endsWith('.tmp'))) {
            kill();
            return;
          }
        } catch {
          /* not created yet */
        }
        timer = setTimeout(poll, 0);
      };
      poll();
    }
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function summary(r: Run): Record<string, unknown> {
  const last = r.stdout.trim().split('\n').at(-1)!;
  const j = JSON.parse(last) as Record<string, unknown>;
  // Everything but wall-clock numbers and the folder name.
  return { epochs: j.epochs, bestEpoch: j.bestEpoch, stoppedEarly: j.stoppedEarly, valid: j.valid, metrics: j.metrics };
}

function losses(dir: string): Array<[number, number, unknown]> {
  return readFileSync(join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => {
    const r = JSON.parse(l) as { epoch: number; loss: number; valid: unknown };
    return [r.epoch, r.loss, r.valid];
  });
}

/** The run folder holds no corrupt checkpoint: every *.safetensors parses (temp files of a killed write may stay). */
async function checkFolder(dir: string): Promise<string[]> {
  const files = readdirSync(dir);
  for (const f of files.filter((x) => x.endsWith('.safetensors'))) await readSafetensors(join(dir, f));
  return files.filter((f) => f.endsWith('.tmp'));
}

describeGpu('crash safety and determinism of `seqrec finetune`', () => {
  let reference: Record<string, unknown> | null = null;
  let referenceLosses: Array<[number, number, unknown]> = [];

  it('the same seed twice: identical metrics and per-epoch losses, bit for bit', { timeout: 240_000 }, async () => {
    const a = tmp('det-a');
    const b = tmp('det-b');
    const [ra, rb] = [await cli([...FT_ARGS, '--out', a]), await cli([...FT_ARGS, '--out', b])];
    expect(ra.code, ra.stderr).toBe(0);
    expect(rb.code, rb.stderr).toBe(0);
    reference = summary(ra);
    referenceLosses = losses(a);
    expect(summary(rb)).toEqual(reference);
    expect(losses(b)).toEqual(referenceLosses);
    expect(readFileSync(join(a, 'best.safetensors')).equals(readFileSync(join(b, 'best.safetensors')))).toBe(true);
  });

  it('kill -9 after epoch 1 is logged, then --resume: the final metrics equal the uninterrupted run', { timeout: 240_000 }, async () => {
    expect(reference, 'needs the reference run of the test above').not.toBeNull();
    const dir = tmp('kill-epoch');
    const killed = await cli([...FT_ARGS, '--out', dir], { killWhen: (err) => /\bepoch 1: loss/.test(err) });
    expect(killed.signal).toBe('SIGKILL');
    const stray = await checkFolder(dir);
    const resumed = await cli([...FT_ARGS, '--out', dir, '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/resumed from/);
    expect(summary(resumed)).toEqual(reference);
    expect(losses(dir)).toEqual(referenceLosses);
    console.log(`[trust_training] killed after epoch 1 (stray temp files: ${stray.length}), resumed: metrics equal`);
  });

  it('kill -9 while last.safetensors is being written, then --resume: no corrupt file, same final metrics', { timeout: 300_000 }, async () => {
    expect(reference, 'needs the reference run of the test above').not.toBeNull();
    // The test hook SEQREC_TEST_SLOW_WRITE_MS makes the checkpoint writer pause half-way through the temp file, so
    // the kill lands in the middle of the write: the half-written temp file stays behind, and the files under
    // their final names must still parse.
    let caught = false;
    for (let attempt = 0; attempt < 3 && !caught; attempt++) {
      const dir = tmp(`kill-write-${attempt}`);
      const killed = await cli([...FT_ARGS, '--out', dir], { pollDir: dir, killOnTmp: true, env: { SEQREC_TEST_SLOW_WRITE_MS: '2000' } });
      if (killed.signal !== 'SIGKILL') continue; // finished before a temp file was seen
      const stray = await checkFolder(dir);
      expect(stray.length, 'the kill cut a checkpoint write: its half-written temp file is left').toBeGreaterThan(0);
      caught = true;
      const hasLast = existsSync(join(dir, 'last.safetensors'));
      const resumed = await cli([...FT_ARGS, '--out', dir, ...(hasLast ? ['--resume'] : [])]);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(summary(resumed)).toEqual(reference);
      expect(losses(dir)).toEqual(referenceLosses);
      expect(await checkFolder(dir), 'the resumed run removes the temp files of the killed write').toEqual([]);
      console.log(`[trust_training] killed during a checkpoint write (attempt ${attempt + 1}; stray temp files ${stray.join(', ') || 'none'}; last.safetensors ${hasLast ? 'present: --resume' : 'absent: fresh start'}): metrics equal`);
    }
    expect(caught, 'never saw the checkpoint temp file in 3 runs').toBe(true);
  });
});
