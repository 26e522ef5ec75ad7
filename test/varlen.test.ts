// varlen (kernels/varlen.ts): packing left-padded batches into real tokens and back, the last real row of each
// sequence, and their gradients. The attention over packed tokens is tested in test/attention_masked.test.ts.
import { expect, it } from 'vitest';
import { lastRows, packBatch, packRows, planPack, refInjectiveGather, unpackRows } from '../kernels/varlen.js';
import { checkOp, describeGpu } from './harness.js';
import { leftPadded } from './ids.js';

describeGpu('varlen', () => {
  it('pack / unpack / last rows and their gradients (3 and 8 columns: the f32 and vec4 gathers)', async () => {
    for (const C of [3, 8]) await packCase(C);
  });
});

async function packCase(C: number): Promise<void> {
  const [B, L] = [4, 5];
  const ids = leftPadded([5, 0, 2, 1], L);
  const pb = packBatch(ids, B, L);
  expect(Array.from(pb.plan.offsets)).toEqual([0, 5, 5, 7, 8]);
  expect(Array.from(pb.plan.positions)).toEqual([0, 1, 2, 3, 4, 3, 4, 4]);
  expect(Array.from(pb.plan.last)).toEqual([4, -1, 6, 7]);
  await checkOp({
    name: 'varlen pack then unpack',
    inputs: [{ shape: [B, L, C] }],
    run: ([x]) => unpackRows(packRows(x!, pb), pb),
    ref: ([x]) => {
      const out = { data: new Float64Array(B * L * C), shape: [B, L, C] };
      for (let r = 0; r < B * L; r++) if (pb.plan.tokenOf[r]! >= 0) for (let c = 0; c < C; c++) out.data[r * C + c] = x!.data[r * C + c]!;
      return out;
    },
    refGrad: (_xs, gy) => [{ data: gy.data.map((g, i) => (pb.plan.tokenOf[Math.floor(i / C)]! >= 0 ? g : 0)), shape: gy.shape }],
  });
  await checkOp({
    name: 'varlen last rows',
    inputs: [{ shape: [pb.T, C] }],
    run: ([x]) => lastRows(x!, pb),
    ref: ([x]) => refInjectiveGather(x!, pb.plan.last, [B, C]),
    refGrad: (_xs, gy) => [refInjectiveGather(gy, pb.plan.lastInverse, [pb.T, C])],
  });
  expect(() => planPack([0, 1, 0, 2], 1, 4)).toThrow(/left padding/);
  pb.dispose();
}
