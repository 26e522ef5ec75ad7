// Embedding forward (row gather) and backward (deterministic segment-sum into the table) at the shapes the
// models use: S3-Rec items V=12,103 D=64 ids [256, 50]; AttRec items V=1,683 D=150 ids [1000, 5].
// Ids are left-padded sequences (lengths uniform in 1..L, pad id 0) of Zipf-like items, as a batch looks.
// Variants:
//   embedding.fwd            index_select, widest vector dividing D;  embedding.fwd_scalar: 1 float per lane
//   embedding.bwd            the op's backward from the ids tensor: GPU radix-built inverse index + segment sum
//   embedding.bwd_hostcsr    the same with hostIds: inverse index by counting sort on the host + upload
//   embedding.bwd_scalar     GPU index, segment sum with 1 float per lane (vs the widest vector dividing D)
import { ref, Tensor } from '../engine/index.js';
import { refEmbedding } from '../kernels/embedding.js';
import { refSegmentSumF32, scatterAddRows } from '../kernels/scatter.js';
import { indexSelectInto } from '../kernels/shape.js';
import type { BenchCase, BenchInstance } from './types.js';

interface Shape {
  tag: string;
  V: number;
  D: number;
  B: number;
  L: number;
}

const SHAPES: Shape[] = [
  { tag: 'S3-Rec', V: 12103, D: 64, B: 256, L: 50 },
  { tag: 'AttRec', V: 1683, D: 150, B: 1000, L: 5 },
];

function batchIds(s: Shape, seed = 42): Int32Array {
  const rnd = ref.mulberry32(seed);
  const ids = new Int32Array(s.B * s.L); // [B, L], left-padded with 0
  for (let b = 0; b < s.B; b++) {
    const len = 1 + Math.floor(rnd() * s.L);
    for (let j = s.L - len; j < s.L; j++) ids[b * s.L + j] = 1 + Math.floor((s.V - 1) * rnd() ** 3); // skewed to popular items
  }
  return ids;
}

function randF32(n: number, seed: number): Float32Array {
  const rnd = ref.mulberry32(seed);
  return Float32Array.from({ length: n }, () => rnd() * 2 - 1);
}

function label(s: Shape): string {
  return `${s.tag} V${s.V} D${s.D} ids[${s.B},${s.L}]`;
}

function fwdCase(s: Shape, variant: 'default' | 'scalar'): BenchCase {
  const N = s.B * s.L;
  return {
    name: variant === 'default' ? 'embedding.fwd' : 'embedding.fwd_scalar',
    shape: label(s),
    bytes: 4 * (2 * N * s.D + N),
    setup(): BenchInstance {
      const wv = randF32(s.V * s.D, 1);
      const ids = batchIds(s);
      const w = Tensor.from(wv, [s.V, s.D]); // [V, D]
      const idsT = Tensor.from(ids, [s.B, s.L], 'i32'); // [B, L]
      let last: Tensor | null = null;
      const run = (): void => {
        last?.dispose();
        last = Tensor.empty([s.B, s.L, s.D]); // [B, L, D]
        indexSelectInto(w, idsT, last, 1, s.V, s.D, variant === 'scalar' ? 1 : undefined);
      };
      return {
        run,
        async validate() {
          run();
          const got = await last!.toArray();
          const want = refEmbedding({ data: Float64Array.from(wv), shape: [s.V, s.D] }, { data: Float64Array.from(ids), shape: [s.B, s.L] });
          for (let i = 0; i < want.data.length; i++) {
            if (got[i] !== want.data[i]) throw new Error(`embedding.fwd ${label(s)}: [${i}] got ${got[i]}, want ${want.data[i]}`);
          }
        },
        dispose() {
          last?.dispose();
          w.dispose();
          idsT.dispose();
        },
      };
    },
  };
}

function bwdCase(s: Shape, variant: 'default' | 'hostcsr' | 'scalar'): BenchCase {
  const N = s.B * s.L;
  return {
    name: variant === 'default' ? 'embedding.bwd' : `embedding.bwd_${variant}`,
    shape: label(s),
    bytes: 4 * (N * s.D + s.V * s.D + 2 * N + s.V),
    setup(): BenchInstance {
      const gv = randF32(N * s.D, 2);
      const ids = batchIds(s);
      const gy = Tensor.from(gv, [N, s.D]); // [B*L, D]
      const idsT = Tensor.from(ids, [N], 'i32'); // [B*L]
      let last: Tensor | null = null;
      const run = (): void => {
        last?.dispose();
        // What embedding's backward does (paddingIdx 0): inverse index, then the segment sum.
        last = scatterAddRows(gy, variant === 'hostcsr' ? ids : idsT, s.V, { exclude: 0, ...(variant === 'scalar' ? { width: 1 as const } : {}) }); // [V, D]
      };
      return {
        run,
        async validate() {
          run();
          const got = new Uint32Array((await last!.toArray()).buffer);
          const want = new Uint32Array(refSegmentSumF32(gv, [N, s.D], ids, s.V, 0).buffer);
          for (let i = 0; i < want.length; i++) {
            if (got[i] !== want[i]) throw new Error(`embedding.bwd ${label(s)}: [${i}] differs from the ascending-order f32 sum`);
          }
        },
        dispose() {
          last?.dispose();
          gy.dispose();
          idsT.dispose();
        },
      };
    },
  };
}

export const cases: BenchCase[] = SHAPES.flatMap((s) => [
  fwdCase(s, 'default'),
  fwdCase(s, 'scalar'),
  bwdCase(s, 'default'),
  bwdCase(s, 'hostcsr'),
  bwdCase(s, 'scalar'),
]);
