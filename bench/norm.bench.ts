// Row-wise kernels: layer norm (forward, fused backward) at the S3-Rec shapes (fine-tuning B·L = 12800 rows,
// pretraining 5000 rows, H = 64) and softmax at the ENVIRONMENT.md peer shape [4096, 1000] and at attention-like
// rows [25600, 50] (B·H·L = 256·2·50). Rows:
//   layernorm.fwd / softmax.fwd / softmax.bwd   the op's default launch (rowConfig picks the variant per adapter)
//   layernorm.fwd_row, layernorm.fwd_wg, softmax.fwd_row, softmax.fwd_wg   both variants forced, side by side
//   layernorm.bwd                               dx + dweight/dbias (fused kernel + the deterministic block sum)
//   softmax.tfjs                                tf.softmax on tfjs-backend-webgpu, same device
// Every case is validated against the float64 reference before timing. GB/s counts the minimum traffic
// (each input read once, each output written once).
import { noGrad, ref } from '../engine/index.js';
import { layerNormBackward, layerNormForward, refLayerNorm, refLayerNormGrad } from '../kernels/layernorm.js';
import { refSoftmax, refSoftmaxGrad, softmaxBackward, softmaxForward, type RowVariant } from '../kernels/softmax.js';
import { randHost, randTensor, validateClose } from './common.js';
import { getTfjs, tfjsSubmit } from './tfjs.js';
import type { BenchCase } from './types.js';

const f64 = (a: Float32Array, shape: number[]): ref.F64 => ({ data: Float64Array.from(a), shape });
const FWD_TOL = { atol: 1e-5, rtol: 1e-4 };
const GRAD_TOL = { atol: 1e-4, rtol: 1e-3 };

function lnFwdCase(R: number, D: number, variant?: RowVariant): BenchCase {
  const name = `layernorm.fwd${variant ? `_${variant}` : ''}`;
  return {
    name,
    shape: `[${R},${D}]`,
    bytes: 4 * (2 * R * D + 2 * D + 2 * R),
    setup() {
      const x = randTensor([R, D], 1, -3, 3);
      const w = randTensor([D], 2, 0.5, 1.5);
      const b = randTensor([D], 3);
      const o = variant ? { variant } : {};
      const run = () => noGrad(() => layerNormForward(x.t, w.t, b.t, o));
      return {
        run() {
          const r = run();
          r.y.dispose();
          r.mean.dispose();
          r.rstd.dispose();
        },
        async validate() {
          const r = run();
          const want = refLayerNorm(f64(x.host, [R, D]), f64(w.host, [D]), f64(b.host, [D]));
          validateClose(`${name} [${R},${D}]`, await r.y.toArray(), want.data, FWD_TOL);
          r.y.dispose();
          r.mean.dispose();
          r.rstd.dispose();
        },
        dispose() {
          for (const t of [x.t, w.t, b.t]) t.dispose();
        },
      };
    },
  };
}

function lnBwdCase(R: number, D: number): BenchCase {
  return {
    name: 'layernorm.bwd',
    shape: `[${R},${D}]`,
    bytes: 4 * (3 * R * D + D + 2 * R + 2 * D),
    setup() {
      const x = randTensor([R, D], 1, -3, 3);
      const w = randTensor([D], 2, 0.5, 1.5);
      const b = randTensor([D], 3);
      const gy = randTensor([R, D], 4);
      const { y, mean, rstd } = noGrad(() => layerNormForward(x.t, w.t, b.t)); // saved statistics
      y.dispose();
      const run = () => layerNormBackward(x.t, w.t, mean, rstd, gy.t);
      return {
        run() {
          const g = run();
          for (const t of [g.dx, g.dw, g.db]) t?.dispose();
        },
        async validate() {
          const g = run();
          const [dx, dw, db] = refLayerNormGrad(f64(x.host, [R, D]), f64(w.host, [D]), f64(b.host, [D]), f64(gy.host, [R, D]));
          validateClose(`layernorm.bwd dx [${R},${D}]`, await g.dx!.toArray(), dx.data, GRAD_TOL);
          // dw, db sum R rows: f32 rounding grows ~sqrt(R) * eps * |terms|.
          const sumTol = { atol: 1e-5 * Math.sqrt(R), rtol: 1e-3 };
          validateClose(`layernorm.bwd dw [${R},${D}]`, await g.dw!.toArray(), dw.data, sumTol);
          validateClose(`layernorm.bwd db [${R},${D}]`, await g.db!.toArray(), db.data, sumTol);
          for (const t of [g.dx, g.dw, g.db]) t?.dispose();
        },
        dispose() {
          for (const t of [x.t, w.t, b.t, gy.t, mean, rstd]) t.dispose();
        },
      };
    },
  };
}

function softmaxFwdCase(R: number, C: number, variant?: RowVariant): BenchCase {
  const name = `softmax.fwd${variant ? `_${variant}` : ''}`;
  return {
    name,
    shape: `[${R},${C}]`,
    bytes: 4 * 2 * R * C,
    setup() {
      const x = randTensor([R, C], 5, -8, 8);
      const o = variant ? { variant } : {};
      return {
        run() {
          softmaxForward(x.t, false, o).dispose();
        },
        async validate() {
          const y = softmaxForward(x.t, false, o);
          validateClose(`${name} [${R},${C}]`, await y.toArray(), refSoftmax(f64(x.host, [R, C])).data, FWD_TOL);
          y.dispose();
        },
        dispose() {
          x.t.dispose();
        },
      };
    },
  };
}

function softmaxBwdCase(R: number, C: number): BenchCase {
  return {
    name: 'softmax.bwd',
    shape: `[${R},${C}]`,
    bytes: 4 * 3 * R * C,
    setup() {
      const x = randTensor([R, C], 5, -8, 8);
      const gy = randTensor([R, C], 6);
      const y = softmaxForward(x.t); // saved output
      return {
        run() {
          softmaxBackward(y, gy.t).dispose();
        },
        async validate() {
          const dx = softmaxBackward(y, gy.t);
          validateClose(`softmax.bwd [${R},${C}]`, await dx.toArray(), refSoftmaxGrad(f64(x.host, [R, C]), f64(gy.host, [R, C])).data, GRAD_TOL);
          dx.dispose();
        },
        dispose() {
          for (const t of [x.t, gy.t, y]) t.dispose();
        },
      };
    },
  };
}

function softmaxTfjsCase(R: number, C: number): BenchCase {
  return {
    name: 'softmax.tfjs',
    shape: `[${R},${C}]`,
    bytes: 4 * 2 * R * C,
    async setup() {
      const tf = await getTfjs();
      const host = randHost([R, C], 5, -8, 8);
      const x = tf.tensor2d(host, [R, C]);
      return {
        run() {
          const y = tf.softmax(x);
          tfjsSubmit();
          y.dispose();
        },
        async validate() {
          const y = tf.softmax(x);
          validateClose(`softmax.tfjs [${R},${C}]`, (await y.data()) as Float32Array, refSoftmax(f64(host, [R, C])).data, FWD_TOL);
          y.dispose();
        },
        dispose() {
          x.dispose();
        },
      };
    },
  };
}

export const cases: BenchCase[] = [
  ...[12800, 5000].flatMap((R) => [lnFwdCase(R, 64), lnFwdCase(R, 64, 'row'), lnFwdCase(R, 64, 'wg'), lnBwdCase(R, 64)]),
  ...([[4096, 1000], [25600, 50]] as const).flatMap(([R, C]) => [
    softmaxFwdCase(R, C),
    softmaxFwdCase(R, C, 'row'),
    softmaxFwdCase(R, C, 'wg'),
    softmaxBwdCase(R, C),
    softmaxTfjsCase(R, C),
  ]),
];
