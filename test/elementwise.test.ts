import { describe, it } from 'vitest';
import { ref, type Tensor } from '../engine/index.js';
import * as F from '../kernels/index.js';
import { checkOp, describeGpu, ODD_SIZES, type InputSpec } from './harness.js';

type Bin = 'add' | 'sub' | 'mul' | 'div';
const BIN: Bin[] = ['add', 'sub', 'mul', 'div'];

// Broadcast pairs: equal shapes, bias-style, column, leading dims, both sides broadcasting, size-1.
const PAIRS: Array<[number[], number[]]> = [
  [[1], [1]],
  [[7], [7]],
  [[257], [257]],
  [[13, 65], [65]],
  [[3, 31, 7], [31, 1]],
  [[5, 1, 7], [1, 3, 1]],
  [[2, 3, 4, 5], [1]],
  [[63], [1, 63]],
  [[1823, 7], [7]],
  // Equal shapes whose size is a multiple of 4 run the vec4 kernels (one vec4 per thread; 513 vec4s: 2 workgroups + 1).
  [[4], [4]],
  [[3, 20], [3, 20]],
  [[2052], [2052]],
];

function spec(shape: number[], op: Bin, second: boolean): InputSpec {
  // Keep divisors away from 0 so the quotient (and the finite-difference check) stays well conditioned.
  return { shape, range: op === 'div' && second ? [0.5, 3] : [-3, 3] };
}

describeGpu('elementwise', () => {
  describe('binary', () => {
    for (const op of BIN) {
      for (const [sa, sb] of PAIRS) {
        it(`${op} [${sa}] x [${sb}]`, async () => {
          await checkOp({
            name: `${op} [${sa}] x [${sb}]`,
            inputs: [spec(sa, op, false), spec(sb, op, true)],
            run: ([a, b]) => F[op](a!, b!),
            ref: ([a, b]) => F.refBinary(op, a!, b!),
            refGrad: ([a, b], gy) => F.refBinaryGrad(op, a!, b!, gy),
          });
        });
      }
      it(`${op} with a scalar`, async () => {
        for (const n of [1, 64, 257, 1028]) {
          await checkOp({
            name: `${op} scalar n=${n}`,
            inputs: [{ shape: [n] }],
            run: ([a]) => F[op](a!, 1.75),
            ref: ([a]) => F.refBinary(op, a!, 1.75),
            refGrad: ([a], gy) => [F.refBinaryGrad(op, a!, 1.75, gy)[0]],
          });
        }
      });
    }
    it('large magnitudes (+-1000)', async () => {
      await checkOp({
        name: 'mul +-1000',
        inputs: [{ shape: [97], range: [-1000, 1000] }, { shape: [97], range: [-1000, 1000] }],
        run: ([a, b]) => F.mul(a!, b!),
        ref: ([a, b]) => F.refBinary('mul', a!, b!),
        refGrad: ([a, b], gy) => F.refBinaryGrad('mul', a!, b!, gy),
        // Products reach 1e6 and gradients 2e3: absolute tolerance scaled accordingly (f32 has ~7 digits).
        tol: { atol: 1e-2, rtol: 1e-5 },
        gradTol: { atol: 1e-3, rtol: 1e-4 },
        gradcheck: { atol: 1e-3, rtol: 1e-4, eps: 1e-3 },
      });
    });
    it('rejects shapes that do not broadcast', async () => {
      const { Tensor } = await import('../engine/index.js');
      const a = Tensor.from(new Float32Array(6), [2, 3]);
      const b = Tensor.from(new Float32Array(4), [4]);
      let msg = '';
      try {
        F.add(a, b);
      } catch (e) {
        msg = (e as Error).message;
      }
      if (!/add: shapes \[2, 3\] and \[4\] do not broadcast/.test(msg)) throw new Error(`unexpected: ${msg}`);
      a.dispose();
      b.dispose();
    });
  });

  const RANGES: Partial<Record<F.UnaryName, [number, number]>> = {
    log: [0.1, 5],
    sqrt: [0.1, 5],
    exp: [-5, 5],
  };

  // The functional API of every unary row (a missing one does not type-check).
  const NAMED: Record<F.UnaryName, (x: Tensor) => Tensor> = {
    neg: F.neg, exp: F.exp, log: F.log, sqrt: F.sqrt, relu: F.relu, sigmoid: F.sigmoid, tanh: F.tanh, gelu: F.gelu, square: F.square, abs: F.abs,
  };

  describe('unary', () => {
    for (const op of F.UNARY_NAMES) {
      it(op, async () => {
        for (const n of [...ODD_SIZES, 1028]) { // multiples of 4 run the vec4 kernels (1028: 257 vec4s, a workgroup + 1)
          await checkOp({
            name: `${op} n=${n}`,
            inputs: [{ shape: [n], range: RANGES[op] ?? [-4, 4] }],
            run: ([x]) => (n % 2 ? NAMED[op](x!) : F.unary(op, x!)),
            ref: ([x]) => F.refUnary(op, x!),
            refGrad: ([x], gy) => [F.refUnaryGrad(op, x!, gy)],
            // relu/abs have a kink at 0: random f32 inputs never hit it exactly, but a finite-difference step
            // crossing it would; eps 1e-6 keeps that probability negligible.
          });
        }
      });
    }
    it('saturating inputs stay finite (sigmoid, tanh, gelu at +-1000)', async () => {
      for (const op of ['sigmoid', 'tanh', 'gelu'] as const) {
        await checkOp({
          name: `${op} +-1000`,
          inputs: [{ shape: [8], values: [-1000, -100, -20, -1e-3, 1e-3, 20, 100, 1000] }],
          run: ([x]) => F.unary(op, x!),
          ref: ([x]) => F.refUnary(op, x!),
          refGrad: ([x], gy) => [F.refUnaryGrad(op, x!, gy)],
          tol: { atol: 1e-5, rtol: 1e-5 },
          gradcheck: false, // inputs are fixed extremes; the random-input cases above check the reference grads
        });
      }
    });
    it('gelu uses the exact erf form (A&S erf within 1.5e-7)', async () => {
      // erf itself against the float64 series at many points: GELU's accuracy rests on it.
      const xs = Array.from({ length: 401 }, (_, i) => -6 + (12 * i) / 400);
      await checkOp({
        name: 'gelu grid',
        inputs: [{ shape: [xs.length], values: xs }],
        run: ([x]) => F.gelu(x!),
        ref: ([x]) => F.refUnary('gelu', x!),
        tol: { atol: 1e-6, rtol: 1e-6 },
      });
      // The reference erf itself: known values.
      const known: Array<[number, number]> = [
        [0.5, 0.5204998778130465],
        [1, 0.8427007929497149],
        [2, 0.9953222650189527],
        [3, 0.9999779095030014],
      ];
      for (const [x, v] of known) if (Math.abs(ref.erf(x) - v) > 1e-14 || Math.abs(ref.erf(-x) + v) > 1e-14) throw new Error(`erf(${x})`);
    });
  });
});
