// The harness must be able to fail: a wrong forward, a wrong reference gradient, a kernel that leaves an output
// unwritten (poisoning) and a wrong GPU backward are all caught.
import { expect, it } from 'vitest';
import { ceilDiv, defineKernel, defineOp, Tensor } from '../engine/index.js';
import * as F from '../kernels/index.js';
import { checkOp, describeGpu } from './harness.js';

const skipLast = defineKernel({
  name: 'test_copy_skip_last',
  wgsl: /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x + 1u < p.n) { out[gid.x] = x[gid.x]; } // bug on purpose: the last element is never written
}`,
  grid: ({ n }) => [ceilDiv(n!, 64)],
});

const badBackward = defineOp({
  name: 'test_bad_backward',
  forward(ctx, [x]) {
    return F.mul(x!, 2);
  },
  backward(_ctx, gy) {
    return [F.mul(gy, 3)]; // wrong on purpose (should be 2)
  },
});

describeGpu('harness honesty', () => {
  it('catches a wrong forward', async () => {
    await expect(
      checkOp({ name: 'add-vs-sub', inputs: [{ shape: [5] }, { shape: [5] }], run: ([a, b]) => F.add(a!, b!), ref: ([a, b]) => F.refBinary('sub', a!, b!) }),
    ).rejects.toThrow(/forward .* out of tolerance/);
  });
  it('catches a wrong reference gradient by finite differences', async () => {
    await expect(
      checkOp({
        name: 'bad-ref-grad',
        inputs: [{ shape: [4] }],
        run: ([x]) => F.square(x!),
        ref: ([x]) => F.refUnary('square', x!),
        refGrad: ([x], gy) => [{ data: x!.data.map((v, i) => v * gy.data[i]!), shape: x!.shape }],
      }),
    ).rejects.toThrow(/finite differences/);
  });
  it('catches an unwritten output (outputs are poisoned)', async () => {
    await expect(
      checkOp({
        name: 'skip-last',
        inputs: [{ shape: [65] }],
        run: ([x]) => {
          const out = Tensor.empty(x!.shape);
          skipLast.run({ x: x!, out }, { n: 65 });
          return out;
        },
        ref: ([x]) => x!,
      }),
    ).rejects.toThrow(/\[64\] got NaN/);
  });
  it('catches a wrong GPU backward', async () => {
    await expect(
      checkOp({
        name: 'bad-backward',
        inputs: [{ shape: [6] }],
        run: ([x]) => badBackward.apply([x!], {}),
        ref: ([x]) => ({ data: x!.data.map((v) => 2 * v), shape: x!.shape }),
        refGrad: (_xs, gy) => [{ data: gy.data.map((v) => 2 * v), shape: gy.shape }],
      }),
    ).rejects.toThrow(/grad\[0\].*out of tolerance/);
  });
});
