// test/loop_budget.test.ts — llvmpipe's loop budget: one shader invocation gets 65,535 loop iterations SHARED by
// all its loops (nested and sequential); past it every loop exits silently and the results are wrong. The
// engine refuses a dispatch whose declared worst-case loop cost (KernelSpec.loopTrips) is over loopBudget(), and
// every launcher chunks its work to stay under it. Here:
//   - the engine API (loopCost, the refusal naming the kernel, the adapter rule) and the shared-budget fact
//     itself (llvmpipe only);
//   - each looping kernel at a size that crosses the real budget (wrong results on llvmpipe without the
//     chunking), against the float64 reference;
//   - the chunked paths under a forced small budget (flags.loopBudget, as LOOP_BUDGET=n does), on any adapter;
//   - last: every kernel this file ran (and every statically defined one) that has a loop declares its cost.
// Attention and top-K have their cases in attention_masked.test.ts and topk.test.ts.
import { expect, it } from 'vitest';
import {
  adapterLoopBudget,
  ceilDiv,
  chunkRanges,
  defineKernel,
  definedKernels,
  flags,
  getGpu,
  loopBudget,
  loopCost,
  maxLoopIterations,
  MESA_LOOP_BUDGET,
  ref,
  Tensor,
  wgslHasLoop,
} from '../engine/index.js';
import { embedding, refEmbedding, refEmbeddingGrad } from '../kernels/embedding.js';
import { buildInverseIndex, inverseIndexHost } from '../kernels/scatter.js';
import { euclidScore, refEuclidScore, refEuclidScoreGrad } from '../kernels/euclid_score.js';
import '../kernels/index.js';
import { infonce, infonceDense, refInfonce, refInfonceGrad } from '../kernels/infonce.js';
import { layerNorm, refLayerNorm, refLayerNormGrad } from '../kernels/layernorm.js';
import { crossEntropy, refCrossEntropy, refCrossEntropyGrad } from '../kernels/loss.js';
import { linear, matmul, refMatmul, refMatmulGrad } from '../kernels/matmul.js';
import { csrTargets, multiLabelBce, refCsrToDense, refMultiLabelBce, refMultiLabelBceGrad } from '../kernels/multilabel_bce.js';
import { pairwiseSigmoidLoss, pairwiseSigmoidLossIds, refPairGrad, refPairLoss } from '../kernels/pairwise.js';
import { max, refMax, refMaxGrad, refSum, refSumGrad, sum } from '../kernels/reduce.js';
import { indexSelect, refIndexSelect, refIndexSelectGrad, refSlice, refSliceGrad, slice } from '../kernels/shape.js';
import { logSoftmax, refSoftmax, refSoftmaxGrad, softmax } from '../kernels/softmax.js';
import '../models/optim.js';
import { checkOp, describeGpu, hasAdapter, type F64 } from './harness.js';

/**
 * Run fn under a forced loop budget (what LOOP_BUDGET=n does), then restore the previous one. The GPU id-range
 * check (engine/checks.ts) scans 4M ids per dispatch, sized for llvmpipe's real budget: off here (CHECK_IDS=0).
 */
async function withBudget(n: number, fn: () => Promise<void>): Promise<void> {
  const prev = flags.loopBudget;
  const prevIds = flags.checkIds;
  flags.loopBudget = n;
  flags.checkIds = false;
  try {
    await fn();
  } finally {
    flags.loopBudget = prev;
    flags.checkIds = prevIds;
  }
}

const isMesa = hasAdapter && Number.isFinite(adapterLoopBudget(getGpu().info));

/** Reference gradients of an op with a scalar output read from gy[0]. */
const g0 = (gy: F64): number => gy.data[0]!;

describeGpu('loop budget: engine', () => {
  it('loopCost, maxLoopIterations, chunkRanges and the adapter rule', () => {
    expect(loopCost(0)).toBe(2);
    expect(loopCost(10)).toBe(12);
    expect(loopCost(3, loopCost(4))).toBe(3 * 7 + 2);
    expect(maxLoopIterations(100)).toBe(98);
    expect(loopCost(maxLoopIterations(1000, 5, 40), 5) + 40).toBeLessThanOrEqual(1000);
    expect(maxLoopIterations(Infinity, 5)).toBe(Infinity);
    expect(chunkRanges(10, 4)).toEqual([[0, 4], [4, 8], [8, 10]]);
    expect(chunkRanges(10, Infinity)).toEqual([[0, 10]]);
    expect(chunkRanges(0, 4)).toEqual([[0, 0]]);
    expect(adapterLoopBudget({ device: 'llvmpipe-llvm-15-0-6-256-bits-', description: 'OpenGL ES 3.2 Mesa 22.3.6' })).toBe(MESA_LOOP_BUDGET);
    expect(adapterLoopBudget({ vendor: 'mesa', architecture: '', device: 'llvmpipe (LLVM 15.0.6, 256 bits)', description: 'lavapipe' })).toBe(65535);
    expect(adapterLoopBudget({ vendor: 'nvidia', architecture: 'ada', device: 'RTX 4090', description: 'Mesa 24 NVK' })).toBe(Infinity);
    expect(adapterLoopBudget({ vendor: 'google', device: 'SwiftShader Device (Subzero)' })).toBe(Infinity);
    const prev = flags.loopBudget;
    flags.loopBudget = 1234;
    expect(loopBudget()).toBe(1234);
    flags.loopBudget = prev;
    expect(loopBudget()).toBe(adapterLoopBudget(getGpu().info));
  });

  it('a dispatch whose declared loop cost is over the budget is refused with an error naming the kernel', async () => {
    const k = defineKernel({
      name: 'test_loop_refused',
      wgsl: /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>; // [1]
@compute @workgroup_size(1) fn main() {
  var c = 0u;
  for (var i = 0u; i < p.n; i = i + 1u) { c = c + 1u; }
  out[0] = c;
}`,
      grid: () => [1],
      loopTrips: ({ n }) => loopCost(n!),
    });
    const out = Tensor.from(new Uint32Array(1), [1], 'u32');
    await withBudget(100, async () => {
      expect(k.fitsLoopBudget({ n: 98 })).toBe(true);
      expect(k.fitsLoopBudget({ n: 99 })).toBe(false);
      expect(() => k.run({ out }, { n: 500 })).toThrow(/test_loop_refused: one invocation would run up to 502 loop iterations, over this adapter's loop budget of 100/);
      // A per-run declaration replaces the spec's.
      expect(() => k.run({ out }, { n: 5 }, { loopTrips: 101 })).toThrow(/test_loop_refused: .* up to 101 .* budget of 100/);
      k.run({ out }, { n: 98 });
      expect(Array.from(await out.toArray())).toEqual([98]);
    });
    out.dispose();
  });

  it.skipIf(!isMesa)('llvmpipe: two sequential loops of 40,000 share ONE budget of 65,535 (the second stops at 25,534)', async () => {
    // The reason for all of the above: measured on Mesa 22.3 llvmpipe. Declared honestly, the engine refuses
    // this kernel; the test declares nothing to show the silent failure.
    const k = defineKernel({
      name: 'test_loop_shared_budget',
      wgsl: /* wgsl */ `
struct Params { a: u32, b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>; // [2]
@compute @workgroup_size(1) fn main() {
  var c0 = 0u;
  for (var i = 0u; i < p.a; i = i + 1u) { c0 = c0 + 1u; }
  var c1 = 0u;
  for (var i = 0u; i < p.b; i = i + 1u) { c1 = c1 + 1u; }
  out[0] = c0;
  out[1] = c1;
}`,
      grid: () => [1],
    });
    const out = Tensor.from(new Uint32Array(2), [2], 'u32');
    k.run({ out }, { a: 40000, b: 40000 });
    const [c0, c1] = Array.from(await out.toArray());
    expect(c0).toBe(40000);
    expect(c1).toBeLessThan(40000); // 25,534 = 65,535 - 40,001
    expect(c1).toBeGreaterThan(25000);
    out.dispose();
  });
});

// ------------------------------------------------------------------ sizes that cross the real budget
describeGpu('loop budget: kernels at sizes past 65,535 iterations', () => {
  it("softmax / log-softmax rows of 70,000 and 25,000 columns ('row' variant asked for: the op switches)", async () => {
    for (const [log, shape] of [
      [false, [3, 70000]],
      [true, [2, 25000]],
    ] as const) {
      await checkOp({
        name: `${log ? 'log_softmax' : 'softmax'} [${shape}] row`,
        inputs: [{ shape }],
        run: ([x]) => (log ? logSoftmax(x!, { variant: 'row' }) : softmax(x!, { variant: 'row' })),
        ref: ([x]) => refSoftmax(x!, log),
        refGrad: ([x], gy) => [refSoftmaxGrad(x!, gy, log)],
      });
    }
  });

  it('crossEntropy over 33,000 classes x 128 rows (default config: thread per row) and 70,000 x 3', async () => {
    for (const [N, C, o] of [
      [128, 33000, {}],
      [3, 70000, { variant: 'row' as const }],
    ] as const) {
      await checkOp({
        name: `cross_entropy [${N}, ${C}]`,
        inputs: [{ shape: [N, C] }, { shape: [N], dtype: 'i32', range: [0, C - 1] }],
        run: ([x, t]) => crossEntropy(x!, t!, o),
        ref: ([x, t]) => refCrossEntropy(x!, t!),
        refGrad: ([x, t], gy) => [refCrossEntropyGrad(x!, t!, gy), null],
        // f64 round-off of a 4M-term loss swamps eps = 1e-6 differences; the reference backward is
        // FD-checked in loss.test.ts
        gradcheck: false,
      });
    }
  });

  it('layer norm over rows of 70,000 (forward row variant asked for; backward split into dx + partials)', async () => {
    const D = 70000;
    await checkOp({
      name: 'layer_norm [2, 70000]',
      inputs: [{ shape: [2, D] }, { shape: [D], range: [0.5, 1.5] }, { shape: [D] }],
      run: ([x, w, b]) => layerNorm(x!, w!, b!, { variant: 'row' }),
      ref: ([x, w, b]) => refLayerNorm(x!, w!, b!),
      refGrad: ([x, w, b], gy) => refLayerNormGrad(x!, w!, b!, gy),
      gradcheck: false, // FD-checked in layernorm.test.ts; 140k-term sums swamp eps = 1e-6 here
    });
  });

  it('InfoNCE at D = 150 (scalar path) with 500 candidates and hot ids (rows_scatter segments of ~750)', async () => {
    const N = 6;
    const C = 500;
    const D = 150;
    const V = 4;
    await checkOp({
      name: 'infonce N6 C500 D150 V4',
      inputs: [{ shape: [N, D], range: [-0.2, 0.2] }, { shape: [V, D], range: [-0.2, 0.2] }, { shape: [N, C], dtype: 'i32', range: [0, V - 1] }],
      run: ([q, t, c]) => infonce(q!, t!, c!),
      ref: ([q, t, c]) => refInfonce(q!, t!, c!),
      refGrad: ([q, t, c], gy) => [...refInfonceGrad(q!, t!, c!, {}, g0(gy)), null],
    });
  });

  it('infonceDense over 70,000 rows (the candidate gradient loops over rows)', async () => {
    await checkOp({
      name: 'infonce_dense N70000 M3 D4',
      inputs: [{ shape: [70000, 4] }, { shape: [3, 4] }, { shape: [70000], dtype: 'i32', range: [0, 2] }],
      run: ([q, c, t]) => infonceDense(q!, c!, t!),
      ref: ([q, c, t]) => refInfonce(q!, c!, null, { dense: true, pos: t! }),
      refGrad: ([q, c, t], gy) => [...refInfonceGrad(q!, c!, null, { dense: true, pos: t! }, g0(gy)), null],
      gradcheck: false, // FD-checked in infonce.test.ts
    });
  });

  it('embedding backward: one id repeated 70,000 times (segment sum pieces), GPU and host index', async () => {
    const M = 70000;
    const ids = Array.from({ length: M }, (_, m) => (m % 97 === 0 ? 1 : 3)); // id 3: a 69,278-long segment
    for (const host of [false, true]) {
      await checkOp({
        name: `embedding hot id (${host ? 'host' : 'GPU'} index)`,
        inputs: [{ shape: [10, 4] }, { shape: [M], dtype: 'i32', values: ids }],
        run: ([w, i]) => embedding(w!, i!, host ? { hostIds: ids } : {}),
        ref: ([w, i]) => refEmbedding(w!, i!),
        refGrad: ([w, i], gy) => [refEmbeddingGrad(w!, i!, gy), null],
        gradcheck: false, // a 70,000-term sum per row; FD-checked in embedding.test.ts
      });
    }
  });

  it('embedding over V = 70,000 rows with few ids (csr_offsets gap loop -> binary search)', async () => {
    await checkOp({
      name: 'embedding V70000',
      inputs: [{ shape: [70000, 2] }, { shape: [37], dtype: 'i32', range: [0, 5] }],
      run: ([w, i]) => embedding(w!, i!),
      ref: ([w, i]) => refEmbedding(w!, i!),
      refGrad: ([w, i], gy) => [refEmbeddingGrad(w!, i!, gy), null],
      gradcheck: false, // 140k inputs; FD-checked in embedding.test.ts
    });
  });

  it('max over long axes (refused before: now chunked): 2,200,000 (row workgroups) and 70,000 with inner 3 (columns), first argmax', async () => {
    for (const [shape, axis] of [
      [[2, 2200000], 1],
      [[70000, 3], 0],
    ] as const) {
      await checkOp({
        name: `max [${shape}] axis ${axis}`,
        inputs: [{ shape }],
        run: ([x]) => max(x!, axis),
        ref: ([x]) => refMax(x!, axis).out,
        refGrad: ([x], gy) => [refMaxGrad(x!, axis, gy)],
        gradcheck: false, // max is not differentiable at ties; the gradient routing is checked against the reference
      });
    }
  });

  it('multi-label BCE backward over 1,100,000 rows (the attribute gradient loops over row chunks)', async () => {
    const N = 1100000;
    const A = 4;
    await checkOp({
      name: 'multilabel_bce N1.1M',
      inputs: [{ shape: [N, 4], range: [-0.5, 0.5] }, { shape: [A, 4] }, { shape: [N, A], range: [0, 1], grad: false }],
      run: ([x, a, t]) => multiLabelBce(x!, a!, t!),
      ref: ([x, a, t]) => refMultiLabelBce(x!, a!, t!, null, 'sum'),
      refGrad: ([x, a, t], gy) => [...refMultiLabelBceGrad(x!, a!, t!, null, 'sum', g0(gy)), null],
      tol: { atol: 1e-1, rtol: 1e-4 }, // a 4.4M-term f32 sum
      gradcheck: false, // FD-checked in pairwise.test.ts
    });
  });

  it('euclid score: 70,000 candidates of one user, all the same item (rows and table loops)', async () => {
    await checkOp({
      name: 'euclid_score N70000 one item',
      inputs: [{ shape: [1, 2] }, { shape: [1, 2] }, { shape: [8, 2] }, { shape: [8, 2] }, { shape: [1, 70000], dtype: 'i32', range: [5, 5] }],
      run: ([u, m, X, Q, i]) => euclidScore(u!, m!, X!, Q!, i!),
      ref: ([u, m, X, Q, i]) => refEuclidScore(u!, m!, X!, Q!, i!, 0.2),
      refGrad: ([u, m, X, Q, i], gy) => [...refEuclidScoreGrad(u!, m!, X!, Q!, i!, 0.2, gy), null],
      gradTol: { atol: 1e-2, rtol: 1e-4 }, // 70,000-term f32 sums
      gradcheck: false, // FD-checked in euclid_score.test.ts
    });
  });

  it('pairwise loss over rows of 400,000 (100,000 vec4 slots: the dot loop is chunked)', async () => {
    const D = 400000;
    await checkOp({
      name: 'pairwise_sigmoid D400000',
      inputs: [{ shape: [2, D], range: [-0.01, 0.01] }, { shape: [2, D], range: [-0.01, 0.01] }, { shape: [2, D], range: [-0.01, 0.01] }],
      run: ([a, p, n]) => pairwiseSigmoidLoss(a!, p!, n!),
      ref: ([a, p, n]) => refPairLoss({ kind: 'pairwise_sigmoid', a: a!, pos: p!, neg: n!, reduction: 'sum' }),
      refGrad: ([a, p, n], gy) => {
        const g = refPairGrad({ kind: 'pairwise_sigmoid', a: a!, pos: p!, neg: n!, reduction: 'sum' }, g0(gy));
        return [g.da, g.dpos!, g.dneg!];
      },
      gradcheck: false, // FD-checked in pairwise.test.ts
    });
  });

  it("matmul with K = 70,000 and 'naive' asked for (switches), linear with K = 270,000 (bias added after)", async () => {
    await checkOp({
      name: 'matmul naive K70000',
      inputs: [{ shape: [2, 70000], range: [-0.1, 0.1] }, { shape: [70000, 3], range: [-0.1, 0.1] }],
      run: ([a, b]) => matmul(a!, b!, { variant: 'naive' }),
      ref: ([a, b]) => refMatmul(a!, b!),
      refGrad: ([a, b], gy) => refMatmulGrad(a!, b!, gy),
      gradcheck: false, // FD-checked in matmul.test.ts
    });
    await checkOp({
      name: 'linear K270000',
      inputs: [{ shape: [2, 270000], range: [-0.1, 0.1] }, { shape: [3, 270000], range: [-0.1, 0.1] }, { shape: [3] }],
      run: ([x, w, b]) => linear(x!, w!, b!),
      ref: ([x, w, b]) => {
        const y = refMatmul(x!, w!, { transB: true });
        return { data: y.data.map((v, i) => v + b!.data[i % 3]!), shape: y.shape };
      },
      tol: { atol: 1e-4, rtol: 1e-4 },
    });
  });
});

// ------------------------------------------------------------------ forced small budgets: the chunked paths
describeGpu('loop budget: chunked paths under a forced small budget (any adapter)', () => {
  it('row programs: softmax / layer norm / cross-entropy take the chunked workgroup variant (wgc) and dispatch chunks', () =>
    withBudget(100, async () => {
      await checkOp({
        name: 'softmax [3, 30000] budget 100',
        inputs: [{ shape: [3, 30000] }],
        run: ([x]) => softmax(x!),
        ref: ([x]) => refSoftmax(x!),
        refGrad: ([x], gy) => [refSoftmaxGrad(x!, gy)],
      });
      await checkOp({
        name: 'layer_norm [3, 30000] budget 100',
        inputs: [{ shape: [3, 30000] }, { shape: [30000] }, { shape: [30000] }],
        run: ([x, w, b]) => layerNorm(x!, w!, b!),
        ref: ([x, w, b]) => refLayerNorm(x!, w!, b!),
        refGrad: ([x, w, b], gy) => refLayerNormGrad(x!, w!, b!, gy),
      });
      // 300 blocks of 64 rows: the dw / db block sum goes through reduce.ts's chunked sum
      await checkOp({
        name: 'layer_norm [19200, 2] budget 100',
        // rows of two values kept apart (a near-constant row of 2 is ill-conditioned in f32)
        inputs: [{ shape: [19200, 2], values: Array.from({ length: 38400 }, (_, i) => (i % 2 ? 1 : -1) + 0.3 * Math.sin(i)) }, { shape: [2] }, { shape: [2] }],
        run: ([x, w, b]) => layerNorm(x!, w!, b!),
        ref: ([x, w, b]) => refLayerNorm(x!, w!, b!),
        refGrad: ([x, w, b], gy) => refLayerNormGrad(x!, w!, b!, gy),
        gradcheck: false, // D = 2 rows are ill-conditioned for finite differences; FD-checked in layernorm.test.ts
      });
      await checkOp({
        name: 'cross_entropy [60000, 3] budget 100',
        inputs: [{ shape: [60000, 3] }, { shape: [60000], dtype: 'i32', range: [-1, 2] }],
        run: ([x, t]) => crossEntropy(x!, t!, { ignoreIndex: -1 }),
        ref: ([x, t]) => refCrossEntropy(x!, t!, 'mean', -1),
        refGrad: ([x, t], gy) => [refCrossEntropyGrad(x!, t!, gy, 'mean', -1), null],
      });
    }));

  it('reductions: sum and max over chunked axes (chunk maxima combined: first argmax)', () =>
    withBudget(100, async () => {
      for (const [shape, axis] of [
        [[3, 7000], 1],
        [[7000, 3], 0],
        [[20000], 0],
      ] as const) {
        await checkOp({
          name: `sum [${shape}] axis ${axis} budget 100`,
          inputs: [{ shape }],
          run: ([x]) => sum(x!, axis),
          ref: ([x]) => refSum(x!, axis),
          refGrad: ([x], gy) => [refSumGrad(x!, axis, gy)],
        });
        await checkOp({
          name: `max [${shape}] axis ${axis} budget 100`,
          inputs: [{ shape, values: Array.from({ length: shape.reduce((a: number, b: number) => a * b, 1) }, (_, i) => ((i * 7919) % 1013) / 100) }],
          run: ([x]) => max(x!, axis),
          ref: ([x]) => refMax(x!, axis).out,
          refGrad: ([x], gy) => [refMaxGrad(x!, axis, gy)],
          gradcheck: false, // ties on purpose (first argmax); not differentiable there
        });
      }
    }));

  it('InfoNCE (candidate chunks, D = 150), its table scatter (pieces) and the dense candidate gradient (row chunks)', () =>
    withBudget(1000, async () => {
      await checkOp({
        name: 'infonce N5 C9 D150 budget 1000',
        inputs: [{ shape: [5, 150], range: [-0.3, 0.3] }, { shape: [3, 150], range: [-0.3, 0.3] }, { shape: [5, 9], dtype: 'i32', range: [0, 2] }],
        run: ([q, t, c]) => infonce(q!, t!, c!),
        ref: ([q, t, c]) => refInfonce(q!, t!, c!),
        refGrad: ([q, t, c], gy) => [...refInfonceGrad(q!, t!, c!, {}, g0(gy)), null],
      });
      await checkOp({
        name: 'infonce_dense N2000 M5 D8 budget 1000',
        inputs: [{ shape: [2000, 8] }, { shape: [5, 8] }, { shape: [2000], dtype: 'i32', range: [0, 4] }, { shape: [2000], range: [0, 1], grad: false }],
        run: ([q, c, t, w]) => infonceDense(q!, c!, t!, { mask: w! }),
        ref: ([q, c, t, w]) => refInfonce(q!, c!, null, { dense: true, pos: t!, mask: w! }),
        refGrad: ([q, c, t, w], gy) => [...refInfonceGrad(q!, c!, null, { dense: true, pos: t!, mask: w! }, g0(gy)), null, null],
      });
    }));

  it('pairwise (loss reduction in several dispatches, hot-id table scatter) and multi-label (compaction, CSR -> dense, chunks)', () =>
    withBudget(400, async () => {
      await checkOp({
        name: 'pairwise ids N40000 budget 400',
        inputs: [
          { shape: [40000, 4], range: [-0.5, 0.5] },
          { shape: [6, 4], range: [-0.5, 0.5] },
          { shape: [40000], dtype: 'i32', range: [0, 1] },
          { shape: [40000], dtype: 'i32', range: [4, 5] },
        ],
        run: ([a, t, p, n]) => pairwiseSigmoidLossIds(a!, t!, p!, n!),
        ref: ([a, t, p, n]) => refPairLoss({ kind: 'pairwise_sigmoid', a: a!, table: t!, posIds: p!, negIds: n!, reduction: 'sum' }),
        refGrad: ([a, t, p, n], gy) => {
          const g = refPairGrad({ kind: 'pairwise_sigmoid', a: a!, table: t!, posIds: p!, negIds: n!, reduction: 'sum' }, g0(gy));
          return [g.da, g.dtable!, null, null];
        },
        gradcheck: false, // FD-checked in pairwise.test.ts
      });
    }));

  it('multi-label under a budget of 270: compaction and loss reduction in several dispatches, CSR -> dense, row chunks', () =>
    withBudget(270, async () => {
      // Row 1 lists 40 (repeated) ids: 8 rows x 42 iterations per tile pass the budget -> dense targets.
      const N = 3000;
      const A = 5;
      const rnd = ref.mulberry32(9);
      const lists = Array.from({ length: N }, (_, n) =>
        n === 1 ? Array.from({ length: 40 }, (_, j) => j % A) : Array.from({ length: Math.floor(rnd() * 3) }, () => Math.floor(rnd() * A)),
      );
      const mask = Array.from({ length: N }, (_, n) => (n % 7 === 3 ? 0 : 1));
      for (const withLong of [true, false]) {
        const ls = withLong ? lists : lists.map((l, n) => (n === 1 ? [0, 2] : l));
        const dense = refCsrToDense(ls, A);
        const targets = csrTargets(ls);
        await checkOp({
          name: `multilabel csr N3000 budget 270${withLong ? ' (long list: dense fallback)' : ''}`,
          inputs: [{ shape: [N, 4], range: [-0.5, 0.5] }, { shape: [A, 4] }, { shape: [N], values: mask, grad: false }],
          run: ([x, a, w]) => multiLabelBce(x!, a!, targets, { mask: w! }),
          ref: ([x, a, w]) => refMultiLabelBce(x!, a!, dense, w!, 'sum'),
          refGrad: ([x, a, w], gy) => [...refMultiLabelBceGrad(x!, a!, dense, w!, 'sum', g0(gy)), null],
        }).finally(() => {
          targets.offsets.dispose();
          targets.ids.dispose();
        });
      }
    }));

  it('scatter: GPU radix-sort CSR (scan in several dispatches, offsets by search) and segment sums in pieces', () =>
    withBudget(270, async () => {
      // V = 100,000: 3 radix passes of 64 bins, a 35,000-entry count table to scan (2 dispatches at this
      // budget), the offsets by binary search; against the host counting sort (bit-equal).
      const M = 140000;
      const V = 100000;
      const rnd = ref.mulberry32(77);
      const ids = Int32Array.from({ length: M }, (_, m) => (m % 3 ? Math.floor(rnd() * V) : 17));
      const t = Tensor.from(ids, [M], 'i32');
      const csr = buildInverseIndex(t, V);
      const want = inverseIndexHost(ids, V);
      expect(Array.from(await csr.offsets.toArray())).toEqual(Array.from(want.offsets));
      expect(Array.from(await csr.perm.toArray())).toEqual(Array.from(want.perm));
      csr.dispose();
      t.dispose();
      // Segments of ~10,000 positions summed in pieces of 265.
      await checkOp({
        name: 'embedding M20000 V50 budget 270',
        inputs: [{ shape: [50, 6] }, { shape: [20000], dtype: 'i32', range: [0, 2] }],
        run: ([w, i]) => embedding(w!, i!),
        ref: ([w, i]) => refEmbedding(w!, i!),
        refGrad: ([w, i], gy) => [refEmbeddingGrad(w!, i!, gy), null],
        gradcheck: false, // FD-checked in embedding.test.ts
      });
    }));

  it('shape: indexSelect in column chunks, slice rows through the element kernel', async () => {
    await withBudget(300, () =>
      checkOp({
        name: 'indexSelect [5, 20000] axis 0 budget 300',
        inputs: [{ shape: [5, 20000] }, { shape: [4], dtype: 'i32', range: [0, 4] }],
        run: ([x, i]) => indexSelect(x!, 0, i!),
        ref: ([x, i]) => refIndexSelect(x!, 0, i!),
        refGrad: ([x, i], gy) => [refIndexSelectGrad(x!, 0, i!, gy), null],
      }),
    );
    await withBudget(100, () =>
      checkOp({
        name: 'slice [2, 20000] cols 0:15000 budget 100',
        inputs: [{ shape: [2, 20000] }],
        run: ([x]) => slice(x!, 1, 0, 15000),
        ref: ([x]) => refSlice(x!, 1, 0, 15000),
        refGrad: ([x], gy) => [refSliceGrad(x!, 1, 0, gy)],
      }),
    );
  });

  it('euclid score (candidate chunks, table pieces) and matmul (split K, bias after, naive -> reg)', async () => {
    // The GPU CSR's rank kernel costs 264 (a 256-position block walk): budgets below that refuse it.
    await withBudget(300, () =>
      checkOp({
        name: 'euclid_score B3 N700 budget 300',
        inputs: [{ shape: [3, 6] }, { shape: [3, 6] }, { shape: [9, 6] }, { shape: [9, 6] }, { shape: [3, 700], dtype: 'i32', range: [0, 2] }],
        run: ([u, m, X, Q, i]) => euclidScore(u!, m!, X!, Q!, i!),
        ref: ([u, m, X, Q, i]) => refEuclidScore(u!, m!, X!, Q!, i!, 0.2),
        refGrad: ([u, m, X, Q, i], gy) => [...refEuclidScoreGrad(u!, m!, X!, Q!, i!, 0.2, gy), null],
      }),
    );
    await withBudget(200, async () => {
      await checkOp({
        name: 'matmul K1000 naive budget 200',
        inputs: [{ shape: [5, 1000], range: [-0.2, 0.2] }, { shape: [1000, 7], range: [-0.2, 0.2] }],
        run: ([a, b]) => matmul(a!, b!, { variant: 'naive' }),
        ref: ([a, b]) => refMatmul(a!, b!),
        refGrad: ([a, b], gy) => refMatmulGrad(a!, b!, gy),
      });
      await checkOp({
        name: 'linear K1000 budget 200',
        inputs: [{ shape: [5, 1000], range: [-0.2, 0.2] }, { shape: [7, 1000], range: [-0.2, 0.2] }, { shape: [7] }],
        run: ([x, w, b]) => linear(x!, w!, b!),
        ref: ([x, w, b]) => {
          const y = refMatmul(x!, w!, { transB: true });
          return { data: y.data.map((v, i) => v + b!.data[i % 7]!), shape: y.shape };
        },
      });
    });
  });
});

// ------------------------------------------------------------------ declarations
describeGpu('loop budget: declarations', () => {
  it('every kernel with a loop declares its loop cost (those defined at import and those generated above)', () => {
    const missing = definedKernels
      .filter((k) => !k.name.startsWith('test_') && wgslHasLoop(k.spec.wgsl) && k.spec.loopTrips === undefined)
      .map((k) => k.name);
    expect(missing).toEqual([]);
    expect(definedKernels.length).toBeGreaterThan(40);
  });

  it('the declared costs keep the model shapes in one dispatch on llvmpipe (no chunking at S3-Rec / AttRec sizes)', () => {
    // S3-Rec: rows of H = 64 (layer norm), L = 50 softmax rows, a batch of 256 x 50; AttRec: D = 150, L = 5.
    const budget = MESA_LOOP_BUDGET;
    expect(3 * loopCost(64)).toBeLessThan(budget);
    expect(loopCost(ceilDiv(12800, 4)) + loopCost(3)).toBeLessThan(budget); // a weight gradient's K loop
    expect(loopCost(25600)).toBeLessThan(budget); // the MIP table scatter, 2 x 12,800 entries (D = 64 unrolled)
  });
});
