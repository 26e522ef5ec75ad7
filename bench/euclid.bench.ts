// euclid_score at AttRec's training shape (B=1000 users, N=3 items, D=150, V=1682 items), forward + backward
// into u, m, X, Q (ATTREC_SPEC §2.4-2.5: targets and negatives are scored [B, 3] each):
//   euclid.fused     kernels/euclid_score.ts (1 forward dispatch; backward: rows + inverse index + table = 3)
//   euclid.composed  the same math from this engine's unfused ops: embedding (gather) x2, sub, square, sum,
//                    mul, add; autograd backward (scatter-based embedding grads)
//   euclid.tfjs      @tensorflow/tfjs-backend-webgpu composing the same math (gather, sub, square, sum) with
//                    tf.valueAndGrads (tfjs's own gradient definitions, registered here), on the same adapter
// Every run() is forward + backward with a fixed upstream gradient; validate() checks the forward and all four
// gradients against the float64 reference. The N = 100 rows show the kernel at a longer candidate list.
import { backward, ref, reshape, Tensor } from '../engine/index.js';
import { embedding } from '../kernels/embedding.js';
import { add, mul, square, sub } from '../kernels/elementwise.js';
import { euclidScore, refEuclidScore, refEuclidScoreGrad } from '../kernels/euclid_score.js';
import { sum } from '../kernels/reduce.js';
import { getTfjs, tfjsSubmit, type Tfjs } from './tfjs.js';
import type { BenchCase, BenchInstance } from './types.js';

type F64 = ref.F64;
const ALPHA = 0.2;

interface Shape {
  B: number;
  N: number;
  D: number;
  V: number;
}

const ATTREC: Shape = { B: 1000, N: 3, D: 150, V: 1682 };
const LONG: Shape = { B: 256, N: 100, D: 150, V: 1682 };

interface HostData {
  xs: F64[]; // u, m, X, Q
  idx: F64;
  gy: F64;
}

function hostData({ B, N, D, V }: Shape): HostData {
  const rnd = ref.mulberry32(1234);
  const mk = (shape: number[], s: number): F64 => ({ data: Float64Array.from({ length: shape[0]! * shape[1]! }, () => Math.fround((rnd() * 2 - 1) * s)), shape });
  return {
    xs: [mk([B, D], 0.1), mk([B, D], 0.1), mk([V, D], 0.1), mk([V, D], 0.1)],
    idx: { data: Float64Array.from({ length: B * N }, () => Math.floor(rnd() * V)), shape: [B, N] },
    gy: mk([B, N], 1),
  };
}

const f32 = (x: F64): Tensor => Tensor.from(Float32Array.from(x.data), x.shape);

function describe(s: Shape): string {
  return `B${s.B} N${s.N} D${s.D} V${s.V}`;
}

/** Forward 6 flops per (b, n, d); backward: rows 6, table 6. */
const flops = (s: Shape): number => 18 * s.B * s.N * s.D;
/** Fused traffic: forward reads 2BND gathered + 2BD, backward reads 2BND twice and writes 2BD + 2VD. */
const bytes = (s: Shape): number => 4 * (6 * s.B * s.N * s.D + 4 * s.B * s.D + 2 * s.V * s.D + 3 * s.B * s.N);

async function validateGrads(what: string, h: HostData, got: Array<Float32Array | Float64Array>, out: ArrayLike<number>): Promise<void> {
  const [u, m, X, Q] = h.xs as [F64, F64, F64, F64];
  const want = refEuclidScore(u, m, X, Q, h.idx, ALPHA);
  const wantG = refEuclidScoreGrad(u, m, X, Q, h.idx, ALPHA, h.gy);
  const check = (name: string, g: ArrayLike<number>, w: Float64Array): void => {
    for (let i = 0; i < w.length; i++) {
      if (!(Math.abs(g[i]! - w[i]!) <= 1e-4 + 1e-3 * Math.abs(w[i]!))) throw new Error(`${what}: ${name}[${i}] = ${g[i]}, want ${w[i]}`);
    }
  };
  check('score', out, want.data);
  ['du', 'dm', 'dX', 'dQ'].forEach((n, k) => check(n, got[k]!, wantG[k]!.data));
}

/** Shared driver for the engine's rows: params with requiresGrad, forward + backward per run(). */
function engineCase(name: string, s: Shape, forward: (u: Tensor, m: Tensor, X: Tensor, Q: Tensor, idx: Tensor) => Tensor): BenchCase {
  return {
    name,
    shape: describe(s),
    flops: flops(s),
    bytes: bytes(s),
    setup(): BenchInstance {
      const h = hostData(s);
      const params = h.xs.map((x) => f32(x).requireGrad()); // u, m [B, D]; X, Q [V, D]
      const idx = Tensor.from(Int32Array.from(h.idx.data), h.idx.shape, 'i32'); // [B, N]
      const gy = f32(h.gy); // [B, N]
      let last: Tensor | null = null;
      const clearGrads = (): void => {
        for (const p of params) {
          p.grad?.dispose();
          p.grad = null;
        }
      };
      const run = (): void => {
        clearGrads();
        last?.dispose();
        const [u, m, X, Q] = params as [Tensor, Tensor, Tensor, Tensor];
        last = forward(u, m, X, Q, idx); // [B, N]
        backward(last, gy);
      };
      return {
        run,
        async validate() {
          run();
          const got = await Promise.all(params.map(async (p) => (await p.grad!.toArray()) as Float32Array));
          await validateGrads(name, h, got, await last!.toArray());
        },
        dispose() {
          clearGrads();
          last?.dispose();
          for (const t of [...params, idx, gy]) t.dispose();
        },
      };
    },
  };
}

/** The same math from unfused engine ops (autograd does the backward). */
function composed(u: Tensor, m: Tensor, X: Tensor, Q: Tensor, idx: Tensor): Tensor {
  const [B, D] = u.shape as [number, number];
  const Xi = embedding(X, idx); // [B, N, D]
  const Qi = embedding(Q, idx); // [B, N, D]
  const u3 = reshape(u, [B, 1, D]); // [B, 1, D]
  const m3 = reshape(m, [B, 1, D]); // [B, 1, D]
  const lt = sum(square(sub(u3, Xi)), -1); // [B, N]
  const st = sum(square(sub(m3, Qi)), -1); // [B, N]
  return add(mul(lt, ALPHA), mul(st, 1 - ALPHA)); // [B, N]
}

type TfT = ReturnType<Tfjs['tensor']>;

function tfjsCase(s: Shape): BenchCase {
  return {
    name: 'euclid.tfjs',
    shape: describe(s),
    flops: flops(s),
    bytes: bytes(s),
    async setup(): Promise<BenchInstance> {
      const tf = await getTfjs();
      const h = hostData(s);
      const [u, m, X, Q] = h.xs.map((x) => tf.tensor2d(Float32Array.from(x.data), x.shape as [number, number])) as [TfT, TfT, TfT, TfT];
      const idx = tf.tensor2d(Int32Array.from(h.idx.data), h.idx.shape as [number, number], 'int32'); // [B, N]
      const gy = tf.tensor2d(Float32Array.from(h.gy.data), h.gy.shape as [number, number]); // [B, N]
      const f = (...[uu, mm, XX, QQ]: TfT[]): TfT => {
        const Xi = tf.gather(XX!, idx); // [B, N, D]
        const Qi = tf.gather(QQ!, idx); // [B, N, D]
        const lt = tf.sum(tf.square(tf.sub(tf.expandDims(uu!, 1), Xi)), -1); // [B, N]
        const st = tf.sum(tf.square(tf.sub(tf.expandDims(mm!, 1), Qi)), -1); // [B, N]
        return tf.add(tf.mul(lt, ALPHA), tf.mul(st, 1 - ALPHA)); // [B, N]
      };
      const vg = tf.valueAndGrads(f);
      let outs: TfT[] = [];
      const step = (): void => {
        for (const t of outs) t.dispose();
        outs = tf.tidy(() => {
          const { value, grads } = vg([u, m, X, Q], gy);
          return [value, ...grads];
        });
      };
      return {
        run() {
          step();
          tfjsSubmit(); // the runner's sync() then waits for tfjs's work on the shared queue
        },
        async validate() {
          step();
          const vals = await Promise.all(outs.map(async (t) => Float64Array.from(await t.data())));
          await validateGrads('euclid.tfjs', h, vals.slice(1), vals[0]!);
        },
        dispose() {
          for (const t of [...outs, u, m, X, Q, idx, gy]) t.dispose();
        },
      };
    },
  };
}

export const cases: BenchCase[] = [
  engineCase('euclid.fused', ATTREC, (u, m, X, Q, idx) => euclidScore(u, m, X, Q, idx, { alpha: ALPHA })),
  engineCase('euclid.composed', ATTREC, composed),
  tfjsCase(ATTREC),
  engineCase('euclid.fused', LONG, (u, m, X, Q, idx) => euclidScore(u, m, X, Q, idx, { alpha: ALPHA })),
  engineCase('euclid.composed', LONG, composed),
  tfjsCase(LONG),
];
