// varlen (kernels/varlen.ts): packing padded rows into tokens, forward + backward (the backward scatters the token
// gradients back, zeros on the pad slots), at an S3-Rec fine-tuning batch (B 256, L 50, 64 columns, Beauty-like
// lengths: ~11% of the slots are real), against gatherRows by the padded-slot index (composed) and tf.gather.
import { Tensor } from '../engine/index.js';
import { gatherRows, packBatch, packRows, refInjectiveGather, type PackedBatch } from '../kernels/index.js';
import { beautyLikeBatch, engineVariant, f64, rand, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  ids: Int32Array;
  padIndex: Int32Array;
  x: HostTensor;
  gy: HostTensor;
  index: HostTensor; // padIndex as an i32 tensor (composed, tfjs)
}

function entry(B: number, L: number, C: number): BenchEntry<In> {
  const ids = beautyLikeBatch(B, L, 1234, 'finetune');
  const padIndex = Int32Array.from([...ids.keys()].filter((s) => ids[s] !== 0)); // sequence-major, slots ascending
  const T = padIndex.length;
  return {
    op: 'varlen',
    name: 'varlen.pack_rows',
    shape: `B${B} L${L} C${C} (${T} tokens of ${B * L})`,
    dims: { B, L, C, T },
    bytes: 4 * (4 * T * C + B * L * C),
    inputs: () => ({ ids, padIndex, x: rand([B * L, C], 1), gy: rand([T, C], 2), index: { data: padIndex, shape: [T] } }),
    reference: (h) => {
      const dx = new Float64Array(B * L * C);
      h.padIndex.forEach((s, t) => {
        for (let c = 0; c < C; c++) dx[s * C + c] = h.gy.data[t * C + c]!;
      });
      return { out: refInjectiveGather(f64(h.x), h.padIndex, [T, C]).data, dx };
    },
    tol: { atol: 0, rtol: 0 },
    variants: [
      engineVariant<In, PackedBatch>('fused', 'fused', {
        tensors: (h) => ({ x: Tensor.from(h.x.data, h.x.shape), gy: Tensor.from(h.gy.data, h.gy.shape) }),
        prepare: (h) => packBatch(h.ids, B, L),
        release: (pb) => pb.dispose(),
        grads: ['x'],
        gy: 'gy',
        forward: ({ x }, _h, pb) => packRows(x!, pb), // [T, C]
      }),
      engineVariant<In>('composed', 'composed', {
        tensors: (h) => ({ x: Tensor.from(h.x.data, h.x.shape), gy: Tensor.from(h.gy.data, h.gy.shape), index: Tensor.from(h.index.data, [T], 'i32') }),
        grads: ['x'],
        gy: 'gy',
        forward: ({ x, index }, h) => gatherRows(x!, index!, { hostIdx: h.padIndex }), // [T, C]
      }),
      tfjsVariant({ grads: ['x'], gy: 'gy', forward: (tf, { x, index }) => tf.gather(x!, index!) }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny' ? [entry(6, 9, 5)] : [entry(256, 50, 64)];
}
