// softmax (kernels/softmax.ts): forward and backward at the ENVIRONMENT.md peer shape [4096, 1000] and at
// attention-like rows [25600, 50] (B·H·L = 256·2·50). Rows:
//   fwd              the op's default launch (rowConfig picks the variant per adapter)
//   fwd_row, fwd_wg  both variants forced, side by side
//   bwd              the backward from the saved output
//   tfjs             tf.softmax on tfjs-backend-webgpu, same device (forward)
// Forward and backward of one shape are one group (interleaved). GB/s counts the minimum traffic. Validated
// against refSoftmax / refSoftmaxGrad.
import { noGrad } from '../engine/index.js';
import { refSoftmax, refSoftmaxGrad, softmaxBackward, softmaxForward, type RowVariant } from '../kernels/index.js';
import { engineVariant, f64, GRAD_TOL, rand, tfjsVariant, uploadAll, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  x: HostTensor;
  gy: HostTensor;
}

const inputs = (R: number, C: number) => (): In => ({ x: rand([R, C], 5, -8, 8), gy: rand([R, C], 6) });

function fwdEntry(R: number, C: number): BenchEntry<In> {
  const fwd = (variant?: RowVariant) =>
    engineVariant<In>(variant ? `fwd_${variant}` : 'fwd', variant ? 'alt' : 'fused', {
      forward: ({ x }) => softmaxForward(x!, false, variant ? { variant } : {}), // [R, C]
    });
  return {
    op: 'softmax',
    shape: `[${R},${C}]`,
    dims: { R, C },
    bytes: 4 * 2 * R * C,
    inputs: inputs(R, C),
    reference: (h) => ({ out: refSoftmax(f64(h.x)).data }),
    tol: { atol: 1e-5, rtol: 1e-4 },
    variants: [fwd(), fwd('row'), fwd('wg'), tfjsVariant({ tensors: (tf, h) => ({ x: tf.tensor2d(h.x.data as Float32Array, [R, C]) }), forward: (tf, { x }) => tf.softmax(x!) })],
  };
}

function bwdEntry(R: number, C: number): BenchEntry<In> {
  return {
    op: 'softmax',
    shape: `[${R},${C}]`,
    dims: { R, C },
    bytes: 4 * 3 * R * C,
    inputs: inputs(R, C),
    reference: (h) => ({ out: refSoftmaxGrad(f64(h.x), f64(h.gy)).data }),
    tol: GRAD_TOL,
    variants: [
      engineVariant<In>('bwd', 'fused', {
        tensors: (h) => {
          const t = uploadAll(h);
          return { ...t, y: noGrad(() => softmaxForward(t.x!)) }; // the saved output
        },
        forward: ({ y, gy }) => softmaxBackward(y!, gy!), // [R, C]
      }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  const shapes: Array<[number, number]> = size === 'tiny' ? [[33, 70], [40, 9]] : [[4096, 1000], [25600, 50]];
  return shapes.flatMap(([R, C]) => [fwdEntry(R, C), bwdEntry(R, C)]);
}
