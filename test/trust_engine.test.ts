// Trust in the engine: GPU errors of a batch are thrown (naming its kernels) at the next sync / readback and the
// engine works on afterwards; a lost device gives a clear error, not a hang; NaN/Inf checks name the parameter /
// op and step; disposed tensors are refused by every op with its name.
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import {
  backward, ceilDiv, checkFinite, defineKernel, DeviceLostError, finiteReport, flags, getGpu, GpuError, initGpu, NonFiniteError, rt,
  sync, Tensor,
} from '../engine/index.js';
import * as F from '../kernels/index.js';
import { describeGpu } from './harness.js';

const copyK = defineKernel({
  name: 'test_trust_copy',
  wgsl: /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [n]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [n]
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < p.n) { out[g.x] = x[g.x]; }
}`,
  grid: ({ n }) => [ceilDiv(n!, 64)],
  minSizes: ({ n }) => ({ x: n!, out: n! }),
});

/** The engine still computes a right answer. */
async function stillWorks(): Promise<void> {
  const a = Tensor.from(Float32Array.of(1, 2, 3));
  const b = Tensor.from(Float32Array.of(10, 20, 30));
  const c = F.add(a, b);
  expect(Array.from(await c.toArray())).toEqual([11, 22, 33]);
  await sync();
  for (const t of [a, b, c]) t.dispose();
}

describeGpu('GPU errors throw at the next sync / readback', () => {
  it('a buffer destroyed while in use: the next sync() throws naming the kernel; the engine works on', async () => {
    const raw = rt().device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    raw.destroy();
    const out = Tensor.empty([8]);
    // Other kernels in the same batch are listed too.
    const a = F.add(Tensor.from(new Float32Array(8)), 1);
    copyK.run({ x: { buffer: raw, byteOffset: 0, byteLength: 32, dtype: 'f32' }, out }, { n: 8 });
    const err = await sync().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(GpuError);
    expect((err as Error).message).toMatch(/GPU validation error in a batch with kernels \[.*test_trust_copy.*\]: .*destroyed/s);
    expect((err as GpuError).kernels.some((k) => k.startsWith('test_trust_copy'))).toBe(true);
    await sync(); // reported once
    await stillWorks();
    out.dispose();
    a.dispose();
  });

  it('a binding larger than its buffer (bind-group validation): the readback throws naming the kernel', async () => {
    const small = rt().device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
    const out = Tensor.empty([16]);
    await sync();
    copyK.run({ x: { buffer: small, byteOffset: 0, byteLength: 64, dtype: 'f32' }, out }, { n: 16 });
    await expect(out.toArray()).rejects.toThrow(/GPU validation error in kernel test_trust_copy: .*Binding size \(64\) is larger than the size \(16\)/s);
    small.destroy();
    out.dispose();
    await stillWorks();
  });

  it('SYNC=1 makes each dispatch its own batch: only the failing kernel is named', async () => {
    const prev = flags.sync;
    flags.sync = true;
    try {
      const raw = rt().device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE });
      raw.destroy();
      const x = Tensor.from(new Float32Array(8));
      const y = F.mul(x, 2);
      copyK.run({ x: { buffer: raw, byteOffset: 0, byteLength: 32, dtype: 'f32' }, out: y }, { n: 8 });
      const z = F.add(y, 1);
      const err = (await sync().then(() => null, (e: unknown) => e)) as GpuError;
      expect(err).toBeInstanceOf(GpuError);
      expect(err.kernels).toEqual(['test_trust_copy']);
      expect(err.message).toMatch(/GPU validation error in kernel test_trust_copy:/);
      for (const t of [x, y, z]) t.dispose();
    } finally {
      flags.sync = prev;
    }
    await stillWorks();
  });

  it('a write into a destroyed buffer outside any batch is thrown at the next sync, not only printed', async () => {
    await sync();
    const raw = rt().device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST });
    raw.destroy();
    rt().device.queue.writeBuffer(raw, 0, new Float32Array(4));
    await expect(sync()).rejects.toThrow(/GPU validation error.*destroyed/s);
    await stillWorks();
  });
});

describeGpu('ops refuse disposed tensors, naming the op', () => {
  it('elementwise, reductions, matmul, embedding, layernorm, softmax, backward of a disposed input', async () => {
    const mk = (shape: number[]): Tensor => Tensor.from(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => i / 7), shape);
    const cases: Array<[RegExp, (d: Tensor) => unknown]> = [
      [/add: input 0 is a disposed tensor/, (d) => F.add(d, 1)],
      [/mul|disposed/, (d) => F.mul(mk([2, 3]), d)],
      [/exp: input 0 is a disposed tensor|exp.*disposed/, (d) => F.exp(d)],
      [/sum.*disposed/, (d) => F.sum(d)],
      [/matmul.*disposed/, (d) => F.matmul(d, mk([3, 2]))],
      [/softmax.*disposed/, (d) => F.softmax(d)],
      [/layer_norm.*disposed/, (d) => F.layerNorm(d, mk([3]), mk([3]))],
      [/embedding.*disposed/, (d) => F.embedding(d, Tensor.from(Int32Array.of(0, 1), [2], 'i32'))],
      [/reshape.*disposed|disposed/, (d) => F.transpose(d, 0, 1)],
    ];
    for (const [re, f] of cases) {
      const d = mk([2, 3]);
      d.dispose();
      expect(() => f(d), String(re)).toThrow(re);
      expect(() => f(d)).toThrow(/disposed/);
    }
    const d = mk([2, 3]);
    d.dispose();
    await expect(d.toArray()).rejects.toThrow(/disposed tensor f32\[2, 3\]/);
    expect(() => checkFinite([d], 'params')).toThrow(/checkFinite: 'params\/#0' is a disposed tensor/);
    await stillWorks();
  });
});

describeGpu('non-finite checks', () => {
  it('checkFinite + finiteReport: names the label, the tensor and the first step that had a NaN/Inf', async () => {
    const w = Tensor.from(Float32Array.of(1, 2, 3, 4));
    w.name = 'encoder.weight';
    const b = Tensor.from(Float32Array.of(0, 0, 0, 0));
    b.name = 'encoder.bias';
    for (let step = 1; step <= 3; step++) checkFinite([w, b], 'param', step);
    await finiteReport(); // all finite
    const inf = F.div(w, Tensor.from(Float32Array.of(1, 1, 0, 1))); // 4 / 0 = Inf at [2]
    inf.name = 'ratio';
    const nan = F.log(F.sub(b, 1)); // log(-1) = NaN everywhere
    nan.name = 'lognan';
    checkFinite({ w, b }, 'param', 4);
    checkFinite([w, inf], 'param', 5);
    checkFinite(new Map([['x', nan]]), 'param', 6);
    const err = await finiteReport().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect((err as Error).message).toBe('non-finite value (NaN or Inf) in param/ratio at step 5');
    await finiteReport(); // reset after the report
    // A large tensor (several workgroups, 2-D folded grid not needed): one Inf near the end.
    const big = new Float32Array(300_001);
    big[299_999] = -Infinity;
    const bt = Tensor.from(big);
    checkFinite(bt, 'big');
    await expect(sync()).rejects.toThrow(/non-finite value \(NaN or Inf\) in big\/f32\[300001\]/);
    for (const t of [w, b, inf, nan, bt]) t.dispose();
    await stillWorks();
  });

  it('CHECK_FINITE=1 (flags.checkFinite) names the first op whose output is non-finite, forward and backward', async () => {
    const prev = flags.checkFinite;
    flags.checkFinite = true;
    try {
      const x = Tensor.from(Float32Array.of(1, 2, 3)).requireGrad();
      const y = F.mul(F.sqrt(F.sub(x, 2)), 3); // sqrt(-1) = NaN: sqrt is first, mul inherits it
      await expect(y.toArray()).rejects.toThrow(/non-finite value \(NaN or Inf\) in op sqrt \(call #\d+\)\/output/);
      // backward: d sqrt(u)/du = 1/(2 sqrt(u)) is Inf at u = 0.
      const z = F.sum(F.sqrt(F.sub(x, 1)));
      await expect(z.item()).resolves.toBeCloseTo(1 + Math.SQRT2, 5);
      backward(z);
      await expect(sync()).rejects.toThrow(/non-finite value \(NaN or Inf\) in op sqrt\.backward\/grad\[0\]/);
      x.grad?.dispose();
      x.dispose();
    } finally {
      flags.checkFinite = prev;
    }
    await stillWorks();
  });
});

describeGpu('--check-finite N (models/run.ts watchFinite)', () => {
  it('reports every N steps, naming the loss / parameter and the first step with a NaN/Inf', async () => {
    const { watchFinite } = await import('../models/run.js');
    const w = Tensor.from(Float32Array.of(1, 2));
    const params = new Map([['layer.weight', w]]);
    const watch = watchFinite(4, params);
    for (let step = 1; step <= 4; step++) await watch.afterStep(step, F.sum(w));
    // step 5: the loss becomes Inf; step 6: the parameter too. Reported at step 8 as the loss at step 5.
    await watch.afterStep(5, F.div(F.sum(w), 0));
    const bad = F.div(w, 0);
    await watch.afterStep(6, F.sum(bad));
    params.set('layer.weight', bad);
    await watch.afterStep(7);
    await expect(watch.afterStep(8)).rejects.toThrow('non-finite value (NaN or Inf) in loss/loss at step 5');
    expect(() => watchFinite(-1, params)).toThrow(/--check-finite must be an integer >= 0/);
    await watchFinite(0, params).afterStep(1); // off
    w.dispose();
    bad.dispose();
  });
});

// Last: it destroys the device.
describeGpu('device loss', () => {
  it('device.destroy() then an op: a clear DeviceLostError at the readback, no hang; initGpu() gives a working device', { timeout: 15_000 }, async () => {
    const a = Tensor.from(Float32Array.of(1, 2, 3));
    await sync();
    getGpu().device.destroy();
    const t0 = performance.now();
    const err = await Promise.resolve()
      .then(() => F.add(a, 1).toArray())
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(DeviceLostError);
    expect((err as Error).message).toMatch(/GPU device lost \(destroyed\)/);
    expect(performance.now() - t0).toBeLessThan(5_000);
    // Once the loss is known, ops refuse at once, and sync() throws instead of waiting.
    expect(() => F.add(a, 1)).toThrow(DeviceLostError);
    await expect(sync()).rejects.toThrow(DeviceLostError);
    await initGpu(); // replaces the lost device
    await stillWorks();
  });
});

describeGpu('Mesa software adapters: worker threads (LP_NUM_THREADS)', () => {
  // `seqrec info --json` in a child: Mesa reads LP_NUM_THREADS once, when the engine's first requestAdapter() loads it.
  const infoWith = (lp: string | undefined): { description: string; device: string; softwareThreads?: number } => {
    const env: Record<string, string | undefined> = { ...process.env, EGL_PLATFORM: 'surfaceless' };
    delete env.LP_NUM_THREADS;
    if (lp !== undefined) env.LP_NUM_THREADS = lp;
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'cli', 'seqrec.ts'), 'info', '--json'], { encoding: 'utf8', env });
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { description: string; device: string; softwareThreads?: number };
  };

  it('4 per core when unset (at most 32), the user\'s value when set; nothing on other adapters', { timeout: 60_000 }, () => {
    const unset = infoWith(undefined);
    const mesa = /llvmpipe|lavapipe|softpipe/i.test(`${unset.device} ${unset.description}`);
    expect(unset.softwareThreads).toBe(mesa ? Math.min(32, 4 * availableParallelism()) : undefined);
    expect(infoWith('3').softwareThreads).toBe(mesa ? 3 : undefined);
  });
});
