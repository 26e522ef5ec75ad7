// embedding (kernels/embedding.ts): forward (row gather) and backward (deterministic segment-sum into the table)
// at the shapes the models use: S3-Rec items V=12,103 D=64 ids [256, 50]; AttRec items V=1,683 D=150 ids
// [1000, 5]. Ids are left-padded sequences (lengths uniform in 1..L, pad id 0) of Zipf-like items, as a batch
// looks. Forward and backward of one shape are one group. Variants:
//   fwd            index_select (kernels/shape.ts), widest vector dividing D;  fwd_scalar: 1 float per lane
//   bwd            the op's backward from the ids tensor: GPU radix-built inverse index + segment sum
//                  (kernels/scatter.ts)
//   bwd_hostcsr    the same with host ids: inverse index by counting sort on the host + upload
//   bwd_scalar     GPU index, segment sum with 1 float per lane (vs the widest vector dividing D)
// Validation is exact: the forward equals refEmbedding, the backward equals the ascending-order f32 sum
// (refSegmentSumF32) value for value.
import { ref, Tensor } from '../engine/index.js';
import { indexSelectInto, refEmbedding, refSegmentSumF32, scatterAddRows } from '../kernels/index.js';
import { engineVariant, f64, rand, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface Shape {
  tag: string;
  V: number;
  D: number;
  B: number;
  L: number;
}

interface In {
  w: HostTensor; // [V, D]
  ids: HostTensor; // [B, L] left-padded
  gy: HostTensor; // [B*L, D]
}

function batchIds(s: Shape, seed = 42): Int32Array {
  const rnd = ref.mulberry32(seed);
  const ids = new Int32Array(s.B * s.L); // [B, L], left-padded with 0
  for (let b = 0; b < s.B; b++) {
    const len = 1 + Math.floor(rnd() * s.L);
    for (let j = s.L - len; j < s.L; j++) ids[b * s.L + j] = 1 + Math.floor((s.V - 1) * rnd() ** 3); // skewed to popular items
  }
  return ids;
}

const EXACT = { atol: 0, rtol: 0 };

function common(s: Shape) {
  return {
    op: 'embedding',
    shape: `${s.tag} V${s.V} D${s.D} ids[${s.B},${s.L}]`,
    dims: { V: s.V, D: s.D, B: s.B, L: s.L },
    inputs: (): In => ({ w: rand([s.V, s.D], 1), ids: { data: batchIds(s), shape: [s.B, s.L] }, gy: rand([s.B * s.L, s.D], 2) }),
    tol: EXACT,
  };
}

function fwdEntry(s: Shape): BenchEntry<In> {
  const N = s.B * s.L;
  const fwd = (scalar: boolean) =>
    engineVariant<In>(scalar ? 'fwd_scalar' : 'fwd', scalar ? 'alt' : 'fused', {
      tensors: (h) => ({ w: Tensor.from(h.w.data, h.w.shape), ids: Tensor.from(h.ids.data, h.ids.shape, 'i32') }),
      forward: ({ w, ids }) => {
        const out = Tensor.empty([s.B, s.L, s.D]); // [B, L, D]
        indexSelectInto(w!, ids!, out, 1, s.V, s.D, scalar ? 1 : undefined);
        return out;
      },
    });
  return {
    ...common(s),
    bytes: 4 * (2 * N * s.D + N),
    reference: (h) => ({ out: refEmbedding(f64(h.w), f64(h.ids)).data }),
    variants: [fwd(false), fwd(true)],
  };
}

function bwdEntry(s: Shape): BenchEntry<In> {
  const N = s.B * s.L;
  const bwd = (variant: 'default' | 'hostcsr' | 'scalar') =>
    engineVariant<In>(variant === 'default' ? 'bwd' : `bwd_${variant}`, variant === 'default' ? 'fused' : 'alt', {
      tensors: (h) => ({ gy: Tensor.from(h.gy.data, h.gy.shape), ids: Tensor.from(h.ids.data, [N], 'i32') }),
      // What embedding's backward does (paddingIdx 0): inverse index, then the segment sum -> [V, D].
      forward: ({ gy, ids }, h) =>
        scatterAddRows(gy!, variant === 'hostcsr' ? (h.ids.data as Int32Array) : ids!, s.V, { exclude: 0, ...(variant === 'scalar' ? { width: 1 as const } : {}) }),
    });
  return {
    ...common(s),
    bytes: 4 * (N * s.D + s.V * s.D + 2 * N + s.V),
    reference: (h) => ({ out: refSegmentSumF32(h.gy.data as Float32Array, [N, s.D], h.ids.data, s.V, 0) }),
    variants: [bwd('default'), bwd('hostcsr'), bwd('scalar')],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  const shapes: Shape[] =
    size === 'tiny'
      ? [{ tag: 'tiny', V: 37, D: 12, B: 5, L: 7 }]
      : [
          { tag: 'S3-Rec', V: 12103, D: 64, B: 256, L: 50 },
          { tag: 'AttRec', V: 1683, D: 150, B: 1000, L: 5 },
        ];
  return shapes.flatMap((s) => [fwdEntry(s), bwdEntry(s)]);
}
