// test/bias_gelu.test.ts — the README's example of an op with two inputs and a reduced gradient: forward, dx and
// db against the float64 reference (harness), odd sizes around the 64-row blocks, the chunked bias sum under a
// forced small loop budget, bit-identical db, gradient subsets, empty rows, shape errors.
import { expect, it } from 'vitest';
import { backward, flags, Tensor } from '../engine/index.js';
import { biasGelu, refBiasGelu, refBiasGeluGrad } from '../kernels/bias_gelu.js';
import { checkOp, describeGpu, sumTol, type Tol } from './harness.js';

/** db sums R terms: the harness's gradient tolerance, or the f32 sum bound for long columns. */
const dbTol = (R: number): Tol => ({ atol: 1e-4, rtol: Math.max(1e-3, sumTol(R).rtol) });

function run(shape: number[], range: [number, number] = [-3, 3]): Promise<void> {
  const C = shape[shape.length - 1]!;
  const R = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return checkOp({
    name: `bias_gelu [${shape}]`,
    inputs: [{ shape, range }, { shape: [C], range }],
    run: ([x, b]) => biasGelu(x!, b!),
    ref: ([x, b]) => refBiasGelu(x!, b!),
    refGrad: ([x, b], gy) => refBiasGeluGrad(x!, b!, gy),
    gradTol: dbTol(R),
  });
}

describeGpu('bias_gelu', () => {
  it('size 1', () => run([1, 1]));
  it('rows around the 64-row block: R = 63, 64, 65 (C = 7)', async () => {
    for (const R of [63, 64, 65]) await run([R, 7]);
  });
  it('columns around the 64-column workgroup: C = 63, 64, 65 (R = 3)', async () => {
    for (const C of [63, 64, 65]) await run([3, C]);
  });
  it('3-D x [B, L, C] = [7, 13, 31] (bias over the last axis), and S3-Rec-like [5, 50, 256]', async () => {
    await run([7, 13, 31]);
    await run([5, 50, 256]);
  });
  it('many blocks: R = 1823, C = 3', () => run([1823, 3]));
  it('magnitudes +-20 (gelu saturates: y = x + b or 0, dx = gy or 0)', () => run([65, 13], [-20, 20]));

  it('a forced small loop budget (LOOP_BUDGET=20): short row blocks, the bias sum chunked across dispatches', async () => {
    const prev = flags.loopBudget;
    flags.loopBudget = 20;
    try {
      await run([1000, 5]);
    } finally {
      flags.loopBudget = prev;
    }
  });

  it('db is bit-identical run to run, and the chunked sum carries its running state exactly', async () => {
    const R = 700;
    const C = 9;
    const xs = Tensor.from(Float32Array.from({ length: R * C }, (_, i) => Math.sin(i) * 2), [R, C]).requireGrad();
    const gy = Tensor.from(Float32Array.from({ length: R * C }, (_, i) => Math.cos(3 * i)), [R, C]);
    const grads = async (budget: number | null): Promise<{ dx: Float32Array; db: Float32Array }> => {
      const prev = flags.loopBudget;
      flags.loopBudget = budget;
      try {
        const b = Tensor.from(Float32Array.from({ length: C }, (_, i) => i / 10 - 0.4)).requireGrad();
        const y = biasGelu(xs, b);
        backward(y, gy);
        const out = { dx: (await xs.grad!.toArray()) as Float32Array, db: (await b.grad!.toArray()) as Float32Array };
        for (const t of [y, b.grad!, b, xs.grad!]) t.dispose();
        xs.grad = null;
        return out;
      } finally {
        flags.loopBudget = prev;
      }
    };
    const a = await grads(null);
    expect(Array.from((await grads(null)).db)).toEqual(Array.from(a.db));
    // Budget 20: blocks of rb = 18 rows (loopCost(18) = 20), 39 partials summed 18 per dispatch (3 dispatches).
    // The same f32 additions in the same order on the host, from the GPU's dx: equal bit for bit.
    const { dx, db } = await grads(20);
    const rb = 18;
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let r0 = 0; r0 < R; r0 += rb) {
        let part = 0;
        for (let r = r0; r < Math.min(R, r0 + rb); r++) part = Math.fround(part + dx[r * C + c]!);
        s = Math.fround(s + part);
      }
      expect(db[c], `db[${c}]`).toBe(s);
    }
    for (const t of [xs, gy]) t.dispose();
  });

  it('gradient subsets: only x, only the bias', async () => {
    const x = Tensor.from(Float32Array.from({ length: 130 * 4 }, (_, i) => Math.sin(i)), [130, 4]);
    const b = Tensor.from(new Float32Array([0.1, -0.2, 0.3, 0]));
    for (const which of ['x', 'b'] as const) {
      const t = which === 'x' ? x.requireGrad() : b.requireGrad();
      const y = biasGelu(x, b);
      backward(y, Tensor.from(new Float32Array(130 * 4).fill(1), [130, 4]));
      expect(t.grad?.shape).toEqual(t.shape);
      expect((which === 'x' ? b : x).grad).toBeNull();
      t.grad!.dispose();
      t.grad = null;
      t.requiresGrad = false;
      y.dispose();
    }
    x.dispose();
    b.dispose();
  });

  it('empty rows: y is empty, db is zero', async () => {
    const x = Tensor.empty([0, 3]).requireGrad();
    const b = Tensor.from(new Float32Array([1, 2, 3])).requireGrad();
    const y = biasGelu(x, b);
    expect(y.shape).toEqual([0, 3]);
    backward(y, Tensor.empty([0, 3]));
    expect(Array.from(await b.grad!.toArray())).toEqual([0, 0, 0]);
    for (const t of [y, x, b, b.grad!]) t.dispose();
  });

  it('shape and dtype errors name the op and the shapes', () => {
    const x = Tensor.from(new Float32Array(6), [2, 3]);
    const b = Tensor.from(new Float32Array(2));
    const ids = Tensor.from(new Int32Array(3));
    expect(() => biasGelu(x, b)).toThrow('biasGelu: bias [2] must be [C] for x [2, 3] (C = the last axis)');
    expect(() => biasGelu(x, ids)).toThrow('biasGelu: x and bias must be f32, got f32 and i32');
    for (const t of [x, b, ids]) t.dispose();
  });
});
