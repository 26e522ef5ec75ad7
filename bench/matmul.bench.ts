// matmul (kernels/matmul.ts): every variant and tfjs-backend-webgpu's matMul on the same device, at cubes and at
// the models' shapes (S3-Rec fine-tuning B·L = 12800, pretraining 5000, V = 12103 items, H = 64, attention
// B·H = 512, L = 50, D = 32). Rows: matmul.<variant> (kind 'fused' for the one pickVariant chooses, 'alt' for
// the others), matmul.<variant>_storage_b where b is a weight read as a uniform array by default on this adapter
// (MATMUL_TUNING.uniformB; the row forces the storage binding), matmul.tfjs. Validated on 256 sampled outputs
// against a float64 dot product.
import { MATMUL_VARIANTS, matmul, pickVariant, type MatmulVariant } from '../kernels/index.js';
import { dotTol, engineVariant, matmulBytes, matmulFlops, rand, storageB, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface Shape {
  label: string;
  batch: number; // 0: a is 2-D
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  /** Variants too slow to time at this shape (seconds per run). */
  skip?: MatmulVariant[];
  /** tfjs cannot bind outputs over 128 MB. */
  noTfjs?: boolean;
}

const SLOW: MatmulVariant[] = ['naive', 'smem4x4'];

const SHAPES: Shape[] = [
  { label: '256^3', batch: 0, M: 256, N: 256, K: 256 },
  { label: '512^3', batch: 0, M: 512, N: 512, K: 512 },
  { label: '1024^3', batch: 0, M: 1024, N: 1024, K: 1024 },
  // Linear layers over B·L = 12800 rows: Q/K/V/O projections, FFN up and down.
  { label: '[12800,64]x[64,64]', batch: 0, M: 12800, N: 64, K: 64 },
  { label: '[12800,64]x[64,256]', batch: 0, M: 12800, N: 256, K: 64 },
  { label: '[12800,256]x[256,64]', batch: 0, M: 12800, N: 64, K: 256 },
  // The FFN weight gradient dW = Xᵀ·dY: a small output over a long K.
  { label: '[12800,64]^Tx[12800,256]', batch: 0, M: 64, N: 256, K: 12800, transA: true },
  // Scores against every item: evaluation (B = 256) and pretraining rows (B·L = 5000; 242 MB of output, past
  // the 128 MB binding cap: row-chunked).
  { label: '[256,64]x[12103,64]^T', batch: 0, M: 256, N: 12103, K: 64, transB: true },
  { label: '[5000,64]x[12103,64]^T', batch: 0, M: 5000, N: 12103, K: 64, transB: true, skip: SLOW, noTfjs: true },
  // Attention, B·H = 512: the issue's [B·H, L, D] x [B·H, D, L], q·kᵀ as computed, and P·V.
  { label: '[512,50,32]x[512,32,50]', batch: 512, M: 50, N: 50, K: 32 },
  { label: '[512,50,32]x[512,50,32]^T', batch: 512, M: 50, N: 50, K: 32, transB: true },
  { label: '[512,50,50]x[512,50,32]', batch: 512, M: 50, N: 32, K: 50 },
];

const TINY: Shape[] = [
  { label: '33x17x9', batch: 0, M: 33, N: 17, K: 9 },
  { label: '[8,20]^Tx[8,12]', batch: 0, M: 20, N: 12, K: 8, transA: true },
  { label: '[3,5,7]x[3,6,7]^T', batch: 3, M: 5, N: 6, K: 7, transB: true },
];

interface In {
  a: HostTensor;
  b: HostTensor;
}

function operandShapes(s: Shape): { a: number[]; b: number[] } {
  const pre = s.batch ? [s.batch] : [];
  return {
    a: [...pre, ...(s.transA ? [s.K, s.M] : [s.M, s.K])],
    b: [...pre, ...(s.transB ? [s.N, s.K] : [s.K, s.N])],
  };
}

/** Float64 C[bi, i, j] from the host copies (a function of the flat index: checked on sampled positions). */
function refAt(s: Shape, a: ArrayLike<number>, b: ArrayLike<number>): (idx: number) => number {
  const { M, N, K } = s;
  return (idx) => {
    const bi = Math.floor(idx / (M * N));
    const i = Math.floor(idx / N) % M;
    const j = idx % N;
    const ao = bi * M * K;
    const bo = bi * K * N;
    let acc = 0;
    for (let k = 0; k < K; k++) {
      const av = s.transA ? a[ao + k * M + i]! : a[ao + i * K + k]!;
      const bv = s.transB ? b[bo + j * K + k]! : b[bo + k * N + j]!;
      acc += av * bv;
    }
    return acc;
  };
}

function entry(s: Shape): BenchEntry<In> {
  const batch = Math.max(1, s.batch);
  const opts = { transA: s.transA ?? false, transB: s.transB ?? false };
  const chosen = pickVariant(s.M, s.N);
  return {
    op: 'matmul',
    shape: s.label,
    dims: { batch, M: s.M, N: s.N, K: s.K },
    flops: matmulFlops(s.M, s.N, s.K, batch),
    bytes: matmulBytes(s.M, s.N, s.K, batch),
    inputs: () => {
      const sh = operandShapes(s);
      return { a: rand(sh.a, 1), b: rand(sh.b, 2) };
    },
    reference: ({ a, b }) => ({ out: refAt(s, a.data, b.data) }),
    tol: dotTol(s.K),
    variants: [
      ...MATMUL_VARIANTS.filter((v) => !s.skip?.includes(v)).map((v) =>
        engineVariant<In>(v, v === chosen ? 'fused' : 'alt', { forward: ({ a, b }) => matmul(a!, b!, { ...opts, variant: v }) }),
      ),
      // A weight b within a uniform binding (2-D, vec4 rows, <= 64 KiB): the same kernel reading it from storage.
      ...(!s.batch && (opts.transB ? s.K : s.N) % 4 === 0 && s.K * s.N * 4 <= 65536
        ? [engineVariant<In>(`${chosen}_storage_b`, 'alt', { forward: ({ a, b }) => storageB(() => matmul(a!, b!, opts)) })]
        : []),
      ...(s.noTfjs ? [] : [tfjsVariant<In>({ forward: (tf, { a, b }) => tf.matMul(a!, b!, opts.transA, opts.transB) })]),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return (size === 'tiny' ? TINY : SHAPES).map(entry);
}
