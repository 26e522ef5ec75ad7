// layernorm (kernels/layernorm.ts): forward and the fused backward at the S3-Rec shapes (fine-tuning B·L = 12800
// rows, pretraining 5000 rows, H = 64). Rows:
//   fwd              the op's default launch (rowConfig picks the variant per adapter)
//   fwd_row, fwd_wg  both variants forced, side by side
//   bwd              dx + dweight/dbias (fused kernel + the deterministic block sum)
// Forward and backward of one shape are one group (interleaved). GB/s counts the minimum traffic (each input read
// once, each output written once). Validated against refLayerNorm / refLayerNormGrad.
import { noGrad, type Tensor } from '../engine/index.js';
import { layerNormBackward, layerNormForward, refLayerNorm, refLayerNormGrad, type RowVariant } from '../kernels/index.js';
import { engineVariant, f64, GRAD_TOL, rand, uploadAll, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  x: HostTensor;
  w: HostTensor;
  b: HostTensor;
  gy: HostTensor;
}

const inputs = (R: number, D: number) => (): In => ({ x: rand([R, D], 1, -3, 3), w: rand([D], 2, 0.5, 1.5), b: rand([D], 3), gy: rand([R, D], 4) });

function fwdEntry(R: number, D: number): BenchEntry<In> {
  const fwd = (variant?: RowVariant) =>
    engineVariant<In>(variant ? `fwd_${variant}` : 'fwd', variant ? 'alt' : 'fused', {
      forward: ({ x, w, b }) => {
        const r = layerNormForward(x!, w!, b!, variant ? { variant } : {});
        return r.y; // [R, D] (mean and rstd freed with the scope)
      },
    });
  return {
    op: 'layernorm',
    shape: `[${R},${D}]`,
    dims: { R, D },
    bytes: 4 * (2 * R * D + 2 * D + 2 * R),
    inputs: inputs(R, D),
    reference: (h) => ({ out: refLayerNorm(f64(h.x), f64(h.w), f64(h.b)).data }),
    tol: { atol: 1e-5, rtol: 1e-4 },
    variants: [fwd(), fwd('row'), fwd('wg')],
  };
}

function bwdEntry(R: number, D: number): BenchEntry<In> {
  return {
    op: 'layernorm',
    shape: `[${R},${D}]`,
    dims: { R, D },
    bytes: 4 * (3 * R * D + D + 2 * R + 2 * D),
    inputs: inputs(R, D),
    reference: (h) => {
      const [dx, dw, db] = refLayerNormGrad(f64(h.x), f64(h.w), f64(h.b), f64(h.gy));
      return { dx: dx.data, dw: dw.data, db: db.data };
    },
    // dw, db sum R rows: f32 rounding grows ~sqrt(R) * eps * |terms|.
    tol: { dx: GRAD_TOL, dw: { atol: 1e-5 * Math.sqrt(R), rtol: 1e-3 }, db: { atol: 1e-5 * Math.sqrt(R), rtol: 1e-3 } },
    variants: [
      engineVariant<In>('bwd', 'fused', {
        tensors: (h) => {
          const t = uploadAll(h);
          const { y, mean, rstd } = noGrad(() => layerNormForward(t.x!, t.w!, t.b!)); // saved statistics
          y.dispose();
          return { ...t, mean, rstd };
        },
        forward: ({ x, w, mean, rstd, gy }) => {
          const g = layerNormBackward(x!, w!, mean!, rstd!, gy!);
          return { dx: g.dx!, dw: g.dw!, db: g.db! } as Record<string, Tensor>;
        },
      }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  const rows = size === 'tiny' ? [37] : [12800, 5000];
  const D = size === 'tiny' ? 24 : 64;
  return rows.flatMap((R) => [fwdEntry(R, D), bwdEntry(R, D)]);
}
