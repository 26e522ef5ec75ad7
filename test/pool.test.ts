import { expect, it } from 'vitest';
import { backward, flags, flush, rt, scope, sizeClass, sync, Tensor, zeros } from '../engine/index.js';
import * as F from '../kernels/index.js';
import { describeGpu } from './harness.js';

it('size classes are at most 25% larger than the request and 16-byte aligned', () => {
  for (const b of [1, 15, 16, 17, 255, 256, 257, 1000, 4097, 123457, 1 << 20]) {
    const c = sizeClass(b);
    expect(c).toBeGreaterThanOrEqual(b);
    expect(c % 16).toBe(0);
    if (b > 256) expect(c / b).toBeLessThanOrEqual(1.25 + 1e-9);
  }
});

describeGpu('buffer pool', () => {
  it('does not grow over repeated training-like steps', async () => {
    const w = F.mul(zeros([64, 64]), 1).requireGrad();
    const step = (): void => {
      const loss = scope(() => {
        const x = Tensor.from(new Float32Array(32 * 64).fill(0.1), [32, 64]);
        return F.mean(F.square(F.gelu(F.add(x, F.sum(w, 0)))));
      });
      backward(loss);
      loss.dispose();
      w.grad!.dispose();
      w.grad = null;
      flush(); // a training loop submits once per step
    };
    for (let k = 0; k < 3; k++) step();
    await sync();
    const s1 = rt().pool.stats();
    for (let k = 0; k < 20; k++) step();
    await sync();
    const s2 = rt().pool.stats();
    expect(s2.allocatedBytes).toBe(s1.allocatedBytes);
    expect(s2.buffers).toBe(s1.buffers);
    expect(s2.inUseBytes).toBe(s1.inUseBytes);
    expect(s2.hits).toBeGreaterThan(s1.hits);
    w.dispose();
  });

  it('released buffers are reused only after a flush', async () => {
    const shape = [12347]; // a size class no other test uses
    const a = Tensor.empty(shape);
    const buf = a.buffer;
    a.dispose();
    const b = Tensor.empty(shape); // same batch: must not get a's buffer (work using it may be unsubmitted)
    expect(b.buffer).not.toBe(buf);
    await sync();
    const c = Tensor.empty(shape);
    expect(c.buffer).toBe(buf); // a's buffer is free again after the flush
    b.dispose();
    c.dispose();
  });

  it('views share storage and the buffer returns only when the last view is disposed', async () => {
    await sync();
    const base = rt().pool.stats().inUseBytes;
    const a = Tensor.from(new Float32Array(12), [3, 4]);
    const v = a.view([12]);
    a.dispose();
    expect(rt().pool.stats().inUseBytes).toBeGreaterThan(base);
    expect(Array.from(await v.toArray())).toEqual(new Array(12).fill(0));
    v.dispose();
    await sync();
    expect(rt().pool.stats().inUseBytes).toBe(base);
  });

  it('POOL=0 disables reuse', async () => {
    const prev = flags.pool;
    flags.pool = false;
    try {
      const a = Tensor.empty([100]);
      const buf = a.buffer;
      a.dispose();
      await sync();
      const b = Tensor.empty([100]);
      expect(b.buffer).not.toBe(buf);
      b.dispose();
      await sync();
    } finally {
      flags.pool = prev;
    }
  });

  it('scope disposes everything but the result; peak and in-use stats are tracked', async () => {
    await sync();
    const s0 = rt().pool.stats();
    const kept = scope(() => {
      const a = Tensor.from(new Float32Array(256).fill(1));
      const b = F.exp(a);
      return { out: F.add(a, b), n: 3 };
    });
    await sync();
    const s1 = rt().pool.stats();
    expect(s1.inUseBytes - s0.inUseBytes).toBe(1024); // only the result
    expect(s1.peakBytes).toBeGreaterThanOrEqual(s1.allocatedBytes);
    kept.out.dispose();
  });
});
