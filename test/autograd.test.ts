import { expect, it } from 'vitest';
import { accumulateInPlace, backward, BackwardNotSupported, defineOp, freeGraph, noGrad, reshape, rt, scope, sync, Tensor, keep } from '../engine/index.js';
import * as F from '../kernels/index.js';
import { describeGpu, expectClose } from './harness.js';

const arr = async (t: Tensor): Promise<number[]> => Array.from(await t.toArray());

describeGpu('autograd', () => {
  it('shared inputs and reuse accumulate (micrograd-style graph)', async () => {
    // f(a, b) = (a*b + a)^2 summed, a used three times, b once.
    const av = [0.5, -1.5, 2];
    const bv = [3, 0.25, -1];
    const a = Tensor.from(av).requireGrad();
    const b = Tensor.from(bv).requireGrad();
    const loss = scope(() => F.sum(F.square(F.add(F.mul(a, b), a))));
    backward(loss);
    // d/da = 2(ab+a)(b+1), d/db = 2(ab+a)a
    const ga = av.map((x, i) => 2 * (x * bv[i]! + x) * (bv[i]! + 1));
    const gb = av.map((x, i) => 2 * (x * bv[i]! + x) * x);
    expectClose('da', await arr(a.grad!), ga, { atol: 1e-5, rtol: 1e-5 });
    expectClose('db', await arr(b.grad!), gb, { atol: 1e-5, rtol: 1e-5 });
    expectClose('loss', [await loss.item()], [av.reduce((s, x, i) => s + (x * bv[i]! + x) ** 2, 0)], { atol: 1e-5, rtol: 1e-5 });
    for (const t of [a, b, loss, a.grad!, b.grad!]) t.dispose();
  });

  it('accumulation in place, f32 and vec4 kernels (sizes around a multiple of 4 and the workgroup), large magnitudes', async () => {
    for (const n of [1, 3, 4, 7, 8, 1023, 1024, 1028, 1029]) {
      const dv = Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1) * 1e4);
      const sv = Float32Array.from({ length: n }, (_, i) => Math.cos(3 * i) * 1e4);
      const dst = Tensor.from(dv);
      const src = Tensor.from(sv);
      accumulateInPlace(dst, src);
      expect(Array.from(await dst.toArray()), `n=${n}`).toEqual(Array.from(dv, (x, i) => Math.fround(x + sv[i]!)));
      expect(Array.from(await src.toArray()), `n=${n}: src unchanged`).toEqual(Array.from(sv));
      dst.dispose();
      src.dispose();
    }
    // An input used twice with 8 elements: its gradient is summed by the vec4 kernel.
    const x = Tensor.from([1, 2, 3, 4, 5, 6, 7, 8]).requireGrad();
    backward(scope(() => F.sum(F.add(F.mul(x, 3), F.mul(x, x)))));
    expect(await arr(x.grad!)).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((v) => 3 + 2 * v));
    x.grad!.dispose();
    x.dispose();
  });

  it('gradients accumulate across backward calls until cleared', async () => {
    const x = Tensor.from([1, 2, 3]).requireGrad();
    for (let k = 0; k < 3; k++) backward(scope(() => F.sum(F.mul(x, 2))));
    expect(await arr(x.grad!)).toEqual([6, 6, 6]);
    x.grad!.dispose();
    x.grad = null;
    backward(scope(() => F.sum(x)));
    expect(await arr(x.grad!)).toEqual([1, 1, 1]);
    x.grad!.dispose();
    x.dispose();
  });

  it('noGrad records nothing and keeps no saved tensors', async () => {
    const x = Tensor.from([1, 2]).requireGrad();
    const y = noGrad(() => F.exp(x));
    expect(y.requiresGrad).toBe(false);
    expect(y.node).toBeNull();
    expect(() => backward(F.sum(y))).toThrow(/does not require grad/);
    x.dispose();
    y.dispose();
  });

  it('only needed gradients are computed (no grad for a constant input)', async () => {
    const x = Tensor.from([1, 2, 3]).requireGrad();
    const c = Tensor.from([4, 5, 6]);
    const loss = F.sum(F.mul(x, c));
    const before = rt().queue.stats.dispatches;
    backward(loss);
    const used = rt().queue.stats.dispatches - before;
    expect(c.grad).toBeNull();
    expect(await arr(x.grad!)).toEqual([4, 5, 6]);
    // seed fill, sum backward (broadcast), mul backward for x only (one mul kernel): 3 dispatches.
    expect(used).toBe(3);
    for (const t of [x, c, loss, x.grad!]) t.dispose();
  });

  it('an op without backward fails loudly, naming the op', async () => {
    const noBwd = defineOp({ name: 'my_forward_only', forward: (_ctx, [x]) => F.mul(x!, 1) });
    const x = Tensor.from([1, 2]).requireGrad();
    const y = F.sum(noBwd.apply([x], {}));
    expect(() => backward(y)).toThrow(BackwardNotSupported);
    expect(() => backward(F.sum(noBwd.apply([x], {})))).toThrow(/my_forward_only/);
    x.dispose();
  });

  it('a gradient of the wrong shape is rejected, naming the op', async () => {
    const wrong = defineOp({
      name: 'wrong_shape_grad',
      forward: (_ctx, [x]) => F.mul(x!, 1),
      backward: (_ctx, gy) => [gy.view([1, gy.size])],
    });
    const x = Tensor.from([1, 2, 3]).requireGrad();
    expect(() => backward(F.sum(wrong.apply([x], {})))).toThrow(/wrong_shape_grad: backward returned a gradient of shape \[1, 3\] for input 0 of shape \[3\]/);
    x.dispose();
  });

  it('backward needs a scalar, or an explicit gradOutput', async () => {
    const x = Tensor.from([1, 2, 3]).requireGrad();
    const y = F.mul(x, 2);
    expect(() => backward(y)).toThrow(/not a scalar/);
    backward(y, Tensor.from([1, 0, 2]));
    expect(await arr(x.grad!)).toEqual([2, 0, 4]);
    x.dispose();
  });

  it('saved tensors are freed when their node is done (pool returns to its idle level)', async () => {
    const x = Tensor.from(new Float32Array(4096).fill(0.5), [64, 64]).requireGrad();
    const step = (): void => {
      const loss = scope(() => F.sum(F.gelu(F.mul(F.sigmoid(x), x))));
      backward(loss);
      loss.dispose();
    };
    step();
    await sync();
    const inUse = rt().pool.stats().inUseBytes;
    for (let k = 0; k < 5; k++) step();
    await sync();
    expect(rt().pool.stats().inUseBytes).toBe(inUse); // x and x.grad only, as after the first step
    x.grad!.dispose();
    x.dispose();
  });

  it('freeGraph releases a graph that is never backpropagated', async () => {
    const x = Tensor.from(new Float32Array(1000).fill(1)).requireGrad();
    await sync();
    const base = rt().pool.stats().inUseBytes;
    const y = scope(() => keep(F.sum(F.exp(F.mul(x, 2)))));
    expect(rt().pool.stats().inUseBytes).toBeGreaterThan(base);
    freeGraph(y);
    y.dispose();
    await sync(); // this batch's uniform memory returns at the flush
    expect(rt().pool.stats().inUseBytes).toBe(base);
    x.dispose();
  });

  it('reshape is a view and passes gradients through', async () => {
    const x = Tensor.from([1, 2, 3, 4, 5, 6]).requireGrad();
    const y = reshape(x, [2, -1]);
    expect(y.shape).toEqual([2, 3]);
    expect(y.buffer).toBe(x.buffer);
    backward(F.sum(F.mul(y, Tensor.from([1, 2, 3], [1, 3]))));
    expect(await arr(x.grad!)).toEqual([1, 2, 3, 1, 2, 3]);
    expect(() => reshape(x, [4, -1])).toThrow(/cannot reshape 6 elements into \[4, -1\]/);
    x.dispose();
  });
});
