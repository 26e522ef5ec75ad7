// small_bmm (kernels/small_bmm.ts): AttRec's self-attention products at its training shape (1000 windows, L = 5
// items, the compute width Dp = 152), forward + backward:
//   small_bmm.nt  Z Zᵀ: [1000, 5, 152] x [1000, 5, 152]ᵀ -> [1000, 5, 5]
//   small_bmm.nn  P E:  [1000, 5, 5] x [1000, 5, 152] -> [1000, 5, 152]
// against the engine's batched matmul (composed) and tf.matMul. Validated against refMatmul / refMatmulGrad.
import { matmul, refMatmul, refMatmulGrad, smallBmmNN, smallBmmNT } from '../kernels/index.js';
import { dotTol, engineVariant, f64, GRAD_TOL, rand, tfjsVariant, type HostTensor } from './common.js';
import type { BenchEntry, BenchSize } from './types.js';

interface In {
  a: HostTensor;
  b: HostTensor;
  gy: HostTensor;
}

function entry(kind: 'nt' | 'nn', Bt: number, L: number, D: number): BenchEntry<In> {
  const nt = kind === 'nt';
  const [aS, bS, yS] = nt ? [[Bt, L, D], [Bt, L, D], [Bt, L, L]] : [[Bt, L, L], [Bt, L, D], [Bt, L, D]];
  const K = nt ? D : L;
  const o = { transB: nt };
  const grads = ['a', 'b'];
  return {
    op: 'small_bmm',
    name: `small_bmm.${kind}`,
    shape: `[${aS.join(',')}] x [${bS.join(',')}]${nt ? '^T' : ''}`,
    dims: { Bt, L, D },
    flops: 3 * 2 * Bt * L * L * D,
    bytes: 4 * 2 * (aS.reduce((x, y) => x * y) + bS.reduce((x, y) => x * y) + yS.reduce((x, y) => x * y)),
    inputs: () => ({ a: rand(aS, 1), b: rand(bS, 2), gy: rand(yS, 3) }),
    reference: (h) => {
      const [da, db] = refMatmulGrad(f64(h.a), f64(h.b), f64(h.gy), o);
      return { out: refMatmul(f64(h.a), f64(h.b), o).data, da: da.data, db: db.data };
    },
    tol: { out: dotTol(K), da: GRAD_TOL, db: GRAD_TOL },
    variants: [
      engineVariant('fused', 'fused', { grads, gy: 'gy', forward: ({ a, b }) => (nt ? smallBmmNT(a!, b!) : smallBmmNN(a!, b!)) }),
      engineVariant('composed', 'composed', { grads, gy: 'gy', forward: ({ a, b }) => matmul(a!, b!, o) }),
      tfjsVariant({ grads, gy: 'gy', forward: (tf, { a, b }) => tf.matMul(a!, b!, false, nt) }),
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  const [Bt, L, D] = size === 'tiny' ? [7, 5, 12] : [1000, 5, 152];
  return [entry('nt', Bt, L, D), entry('nn', Bt, L, D)];
}
