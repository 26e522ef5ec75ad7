// matmul: every variant of kernels/matmul.ts and tfjs-backend-webgpu's matMul on the same device, at cubes and at
// the model's shapes (S3-Rec fine-tuning B·L = 12800, pretraining 5000, V = 12103 items, H = 64, attention
// B·H = 512, L = 50, D = 32). Rows: matmul.<variant>, matmul.tfjs. Every case is validated on sampled outputs
// against a float64 dot product before timing.
import { noGrad, type Tensor } from '../engine/index.js';
import { MATMUL_VARIANTS, matmul, type MatmulVariant } from '../kernels/matmul.js';
import { dotTol, matmulBytes, matmulFlops, randTensor, validateSampled } from './common.js';
import { getTfjs, tfjsSubmit } from './tfjs.js';
import type { BenchCase } from './types.js';

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

function operandShapes(s: Shape): { a: number[]; b: number[] } {
  const pre = s.batch ? [s.batch] : [];
  return {
    a: [...pre, ...(s.transA ? [s.K, s.M] : [s.M, s.K])],
    b: [...pre, ...(s.transB ? [s.N, s.K] : [s.K, s.N])],
  };
}

/** Float64 C[bi, i, j] from the host copies. */
function refAt(s: Shape, a: Float32Array, b: Float32Array): (idx: number) => number {
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

function inputs(s: Shape): { a: ReturnType<typeof randTensor>; b: ReturnType<typeof randTensor> } {
  const sh = operandShapes(s);
  return { a: randTensor(sh.a, 1), b: randTensor(sh.b, 2) };
}

function ourCase(s: Shape, variant: MatmulVariant): BenchCase {
  return {
    name: `matmul.${variant}`,
    shape: s.label,
    flops: matmulFlops(s.M, s.N, s.K, Math.max(1, s.batch)),
    bytes: matmulBytes(s.M, s.N, s.K, Math.max(1, s.batch)),
    setup() {
      const { a, b } = inputs(s);
      const opts = { transA: s.transA ?? false, transB: s.transB ?? false, variant };
      const mm = (): Tensor => noGrad(() => matmul(a.t, b.t, opts));
      return {
        run() {
          mm().dispose();
        },
        async validate() {
          const y = mm();
          validateSampled(`matmul.${variant} ${s.label}`, await y.toArray(), refAt(s, a.host, b.host), dotTol(s.K));
          y.dispose();
        },
        dispose() {
          a.t.dispose();
          b.t.dispose();
        },
      };
    },
  };
}

function tfjsCase(s: Shape): BenchCase {
  return {
    name: 'matmul.tfjs',
    shape: s.label,
    flops: matmulFlops(s.M, s.N, s.K, Math.max(1, s.batch)),
    bytes: matmulBytes(s.M, s.N, s.K, Math.max(1, s.batch)),
    async setup() {
      const tf = await getTfjs();
      const sh = operandShapes(s);
      const { a, b } = inputs(s);
      a.t.dispose();
      b.t.dispose();
      const ta = tf.tensor(a.host, sh.a);
      const tb = tf.tensor(b.host, sh.b);
      const mm = () => tf.matMul(ta, tb, s.transA ?? false, s.transB ?? false);
      return {
        run() {
          const y = mm();
          tfjsSubmit();
          y.dispose();
        },
        async validate() {
          const y = mm();
          validateSampled(`matmul.tfjs ${s.label}`, (await y.data()) as Float32Array, refAt(s, a.host, b.host), dotTol(s.K));
          y.dispose();
        },
        dispose() {
          ta.dispose();
          tb.dispose();
        },
      };
    },
  };
}

export const cases: BenchCase[] = SHAPES.flatMap((s) => [
  ...MATMUL_VARIANTS.filter((v) => !s.skip?.includes(v)).map((v) => ourCase(s, v)),
  ...(s.noTfjs ? [] : [tfjsCase(s)]),
]);
