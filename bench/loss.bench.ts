// loss (kernels/loss.ts): the generic losses, forward + backward to a scalar:
//   loss.sum_squares    AttRec's L2 term over an item table (regEmb · Σx² / 2 over [1683, 150]) vs the
//                       composition sum(square(x)) · s and tfjs
//   loss.cross_entropy  fused log-softmax + NLL, mean over [4096, 1000] logits with i32 targets, vs the
//                       composition logSoftmax · one-hot (uploaded) and tfjs
// Validated against refSumSquares / refCrossEntropy and their gradients.
import { Tensor } from '../engine/index.js';
import { crossEntropy, logSoftmax, mul, refCrossEntropy, refCrossEntropyGrad, refSumSquares, refSumSquaresGrad, square, sum, sumSquares } from '../kernels/index.js';
import { engineVariant, f64, GRAD_TOL, rand, randIds, tfjsVariant, uploadAll, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

const ONE = { data: Float64Array.of(1), shape: [] as number[] };

function sumSquaresEntry(R: number, C: number): BenchEntry<{ x: HostTensor }> {
  const s = 0.0005;
  return {
    op: 'loss',
    name: 'loss.sum_squares',
    shape: `[${R},${C}] scale ${s}`,
    dims: { R, C },
    bytes: 4 * 2 * R * C,
    inputs: () => ({ x: rand([R, C], 1, -0.1, 0.1) }),
    reference: (h) => ({ out: refSumSquares(f64(h.x), s).data, dx: refSumSquaresGrad(f64(h.x), ONE, s).data }),
    tol: { out: { atol: 1e-7, rtol: 1e-4 }, dx: GRAD_TOL },
    variants: [
      engineVariant('fused', 'fused', { grads: ['x'], forward: ({ x }) => sumSquares(x!, { scale: s }) }),
      engineVariant('composed', 'composed', { grads: ['x'], forward: ({ x }) => mul(sum(square(x!)), s) }),
      tfjsVariant({ grads: ['x'], forward: (tf, { x }) => tf.mul(tf.sum(tf.square(x!)), s) }),
    ],
  };
}

interface CeIn {
  x: HostTensor;
  tgt: HostTensor;
  onehot: HostTensor;
}

function crossEntropyEntry(N: number, C: number): BenchEntry<CeIn> {
  return {
    op: 'loss',
    name: 'loss.cross_entropy',
    shape: `[${N},${C}] mean`,
    dims: { N, C },
    bytes: 4 * (2 * N * C + N),
    inputs: () => {
      const tgt = randIds([N], 2, 0, C);
      const onehot = new Float32Array(N * C);
      tgt.data.forEach((t, r) => (onehot[r * C + t] = 1));
      return { x: rand([N, C], 1, -4, 4), tgt, onehot: { data: onehot, shape: [N, C] } };
    },
    reference: (h) => ({ out: refCrossEntropy(f64(h.x), f64(h.tgt)).data, dx: refCrossEntropyGrad(f64(h.x), f64(h.tgt), ONE).data }),
    tol: { out: { atol: 1e-5, rtol: 1e-4 }, dx: { atol: 1e-7, rtol: 1e-3 } },
    variants: [
      engineVariant<CeIn>('fused', 'fused', {
        tensors: (h) => ({ x: Tensor.from(h.x.data, h.x.shape), tgt: Tensor.from(h.tgt.data, h.tgt.shape, 'i32') }),
        grads: ['x'],
        forward: ({ x, tgt }) => crossEntropy(x!, tgt!),
      }),
      engineVariant<CeIn>('composed', 'composed', {
        tensors: (h) => uploadAll({ x: h.x, onehot: h.onehot }),
        grads: ['x'],
        forward: ({ x, onehot }) => mul(sum(mul(logSoftmax(x!), onehot!)), -1 / N),
      }),
      tfjsVariant<CeIn>({ grads: ['x'], forward: (tf, { x, onehot }) => tf.mul(tf.sum(tf.mul(tf.logSoftmax(x!), onehot!)), -1 / N) }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return size === 'tiny' ? [sumSquaresEntry(9, 7), crossEntropyEntry(9, 11)] : [sumSquaresEntry(1683, 150), crossEntropyEntry(4096, 1000)];
}
