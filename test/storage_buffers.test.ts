// storage_buffers: every kernel of the library binds at most 8 storage buffers, WebGPU's guaranteed
// maxStorageBuffersPerShaderStage (Chromium's adapters give 10, llvmpipe 16: a 9-buffer kernel passes every other
// suite here and fails in a browser). The engine refuses a kernel over the device's limit at first use, naming it.
//   - the engine check: a kernel over this device's limit throws at compile() and run(), naming the kernel, the
//     count and the limit;
//   - the library: the kernels defined at import (every module-level defineKernel of kernels/ and models/), then
//     the ones generated per parameter set by running every bench entry at its tiny size (bench/registry.ts: every
//     op family has one, test/op_coverage.test.ts sees to it; tfjs peers left out) plus the variants that change a
//     kernel's bindings but no bench entry reaches (attention: stored scores, varlen, rows per thread, scalar rows,
//     no ids; euclid_score: partial gradients; every optimizer rule). Each binds <= 8 storage buffers, except the
//     optimizers' multi-tensor updates, which size K (parameters per launch) to the device's limit (models/optim.ts
//     slotsPerLaunch) and are checked against that limit.
import { describe, expect, it } from 'vitest';
import { backward, definedKernels, defineKernel, full, noGrad, rt, sync, Tensor, type Kernel } from '../engine/index.js';
import * as F from '../kernels/index.js';
import { Adagrad, Adam, SGD } from '../models/index.js';
import { benchFiles, entriesOf } from '../bench/registry.js';
import { validateEntry } from '../bench/run.js';
import { describeGpu } from './harness.js';

/** WebGPU's guaranteed maxStorageBuffersPerShaderStage. */
const GUARANTEED = 8;

/** Kernels sized to the device's limit by their caller, with the state slots S they bind besides K (param, grad) pairs. */
const DEVICE_SIZED: Readonly<Record<string, number>> = { adam: 2, adagrad: 1, sgd_momentum: 1, sgd: 0 };

const storageCount = (k: Kernel): number => k.layout().storage.filter((s) => s.kind !== 'uniform').length;
const family = (name: string): string => name.replace(/\{.*$/, '');

/** A kernel with n read-only storage bindings (WGSL generated), summing them into out (binding n + 1). */
function kernelWith(name: string, n: number): Kernel {
  const ins = Array.from({ length: n - 1 }, (_, i) => `@group(0) @binding(${i + 1}) var<storage, read> x${i}: array<f32>;`);
  const sum = Array.from({ length: n - 1 }, (_, i) => `x${i}[0]`).join(' + ');
  return defineKernel({
    name,
    wgsl: `${ins.join('\n')}
@group(0) @binding(${n}) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn main() { out[0] = ${sum}; }`,
    grid: () => [1],
  });
}

describeGpu('storage buffers per kernel', () => {
  it('the engine refuses a kernel over the device limit at first use, naming the kernel, the count and the limit', async () => {
    const limit = rt().device.limits.maxStorageBuffersPerShaderStage;
    expect(limit).toBeGreaterThanOrEqual(GUARANTEED);
    const over = kernelWith('test_storage_over_limit', limit + 1);
    expect(storageCount(over)).toBe(limit + 1);
    const want = `test_storage_over_limit: binds ${limit + 1} storage buffers`;
    await expect(over.compile()).rejects.toThrow(want);
    const t = Array.from({ length: limit + 1 }, () => Tensor.from(new Float32Array(1)));
    const bindings = Object.fromEntries(t.map((x, i) => [i < limit ? `x${i}` : 'out', x]));
    expect(() => over.run(bindings)).toThrow(`over this device's maxStorageBuffersPerShaderStage of ${limit}`);
    // at the limit it compiles and runs
    const at = kernelWith('test_storage_at_limit', limit);
    await at.compile();
    at.run(Object.fromEntries(t.slice(0, limit).map((x, i) => [i < limit - 1 ? `x${i}` : 'out', x])));
    await sync();
    for (const x of t) x.dispose();
  });

  it('every bench entry at its tiny size (the kernels its variants generate)', async () => {
    for (const f of benchFiles()) {
      for (const e of await entriesOf(f, 'tiny')) {
        const variants = e.variants.filter((v) => v.kind !== 'tfjs');
        if (variants.length) await validateEntry({ ...e, variants });
      }
    }
  });

  it('the attention, euclid_score and optimizer variants that change bindings', async () => {
    const rnd = (shape: number[]): Tensor => Tensor.from(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 1.7)), shape);
    const step = (out: Tensor, xs: Tensor[]): void => {
      backward(out, rnd([...out.shape]));
      for (const x of [out, ...xs]) {
        x.grad?.dispose();
        x.dispose();
      }
    };
    // attention: padded (ids / none) and varlen, stored scores, rows per thread, scalar and looped rows
    const lens = [5, 1, 0, 3];
    const [B, L, H] = [lens.length, 5, 2];
    const ids = lens.flatMap((n) => Array.from({ length: L }, (_, s) => (s >= L - n ? 1 : 0)));
    const idsT = Tensor.from(Int32Array.from(ids), [B, L], 'i32');
    const pb = F.packBatch(ids, B, L);
    for (const [D, opts] of [
      [8, { causal: true, dropout: 0.3, seed: 1 }],
      [8, { storeScores: true }],
      [32, { rowsPerThread: 1 }],
      [5, {}],
      [40, { zeroDiagonal: true }],
    ] as const) {
      for (const withIds of [true, false]) {
        const [q, k, v] = [rnd([B, H, L, D]).requireGrad(), rnd([B, H, L, D]).requireGrad(), rnd([B, H, L, D]).requireGrad()];
        step(F.attentionMasked(q, k, v, withIds ? idsT : null, opts), [q, k, v]);
      }
      const [q, k, v] = [rnd([pb.T, H, D]).requireGrad(), rnd([pb.T, H, D]).requireGrad(), rnd([pb.T, H, D]).requireGrad()];
      noGrad(() => F.attentionVarlen(q, k, v, pb, opts)).dispose();
      step(F.attentionVarlen(q, k, v, pb, opts), [q, k, v]);
    }
    pb.dispose();
    idsT.dispose();
    // euclid_score: each subset of gradients, every row width
    for (const D of [4, 6, 5]) {
      for (const need of [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) {
        const ts = [rnd([3, D]), rnd([3, D]), rnd([7, D]), rnd([7, D])].map((t, i) => (need[i] ? t.requireGrad() : t));
        const idx = Tensor.from(Int32Array.from([0, 6, 2, 2, 5, 1]), [3, 2], 'i32');
        step(F.euclidScore(ts[0]!, ts[1]!, ts[2]!, ts[3]!, idx), ts);
        idx.dispose();
      }
    }
    // ops and modes the bench entries leave out (no bench row of their own)
    const x = (): Tensor => rnd([3, 8]).requireGrad();
    for (const name of ['neg', 'exp', 'log', 'sqrt', 'relu', 'sigmoid', 'tanh', 'gelu', 'square', 'abs'] as const) {
      const a = x();
      step(F.unary(name, name === 'log' || name === 'sqrt' ? F.add(F.abs(a), 1) : a), [a]);
    }
    for (const make of [
      (a: Tensor) => F.sub(a, 2),
      (a: Tensor) => F.clamp(a, -0.5, 0.5),
      (a: Tensor) => F.max(a, -1),
      (a: Tensor) => F.max(a, 0),
      (a: Tensor) => F.bce(F.sigmoid(a), rnd([3, 8]).detach()),
      (a: Tensor) => F.bceWithLogits(a, rnd([3, 8]).detach()),
      (a: Tensor) => F.where(Tensor.from(Uint32Array.from({ length: 24 }, (_, i) => i % 3), [3, 8], 'u32'), a, 0),
      (a: Tensor) => F.where(Tensor.from(Int32Array.from({ length: 24 }, (_, i) => i % 2), [3, 8], 'i32'), a, F.neg(a)),
      (a: Tensor, c: Tensor) => F.infonceDense(a, c, Tensor.from(Int32Array.from([0, 4, 2]), [3], 'i32')),
      (a: Tensor, c: Tensor) => F.multiLabelBce(a, c, Tensor.from(Float32Array.from({ length: 15 }, (_, i) => i % 2), [3, 5])),
    ]) {
      const [a, c] = [x(), rnd([5, 8]).requireGrad()];
      step(make(a, c), [a, c]);
    }
    for (const dtype of ['u32', 'i32', 'f32'] as const) full([5], 1, dtype).dispose();
    // optimizers: every rule, launches sized by the device's limit
    for (const make of [
      (p: Tensor[]) => new Adam(p, { lr: 1e-3 }),
      (p: Tensor[]) => new Adagrad(p, { lr: 1e-2 }),
      (p: Tensor[]) => new SGD(p, { lr: 1e-2 }),
      (p: Tensor[]) => new SGD(p, { lr: 1e-2, momentum: 0.9 }),
    ]) {
      const ps = Array.from({ length: 12 }, (_, i) => rnd([1 + i]).requireGrad());
      for (const p of ps) p.grad = rnd([...p.shape]);
      const opt = make(ps);
      opt.step();
      opt.dispose();
      for (const p of ps) {
        p.grad?.dispose();
        p.dispose();
      }
    }
    await sync();
  });

  it(`every kernel defined so far binds at most ${GUARANTEED} storage buffers (device-sized optimizer launches: the device limit)`, () => {
    const limit = rt().device.limits.maxStorageBuffersPerShaderStage;
    const lib = definedKernels.filter((k) => !k.name.startsWith('test_'));
    expect(lib.length).toBeGreaterThan(150);
    const over: string[] = [];
    for (const k of lib) {
      const n = storageCount(k);
      const S = DEVICE_SIZED[family(k.name)];
      if (S !== undefined) {
        const K = Number(/K=(\d+)/.exec(k.name)?.[1]);
        expect(n, k.name).toBe(S + 2 * K);
        expect(n, `${k.name} over the device's limit ${limit}`).toBeLessThanOrEqual(limit);
        continue;
      }
      if (n > GUARANTEED) over.push(`${k.name}: ${n} (${k.layout().storage.map((s) => s.name).join(', ')})`);
    }
    expect(over).toEqual([]);
    // the families the variants above reach
    const names = new Set(lib.map((k) => k.name));
    for (const n of ['attention_masked_bwd_q{D=8,R=4,scores,varlen}', 'attention_masked_bwd_kv{D=32,R=1,varlen}', 'euclid_score_bwd_table{w=2}', 'adam{K=', 'sgd_momentum{K=']) {
      expect([...names].some((x) => x.startsWith(n.replace(/\}$/, ''))), n).toBe(true);
    }
  });
});

describe('storage buffers: the check is not vacuous', () => {
  it('a generated 9-buffer kernel reflects 9 storage buffers', () => {
    expect(storageCount(kernelWith('test_storage_nine', 9))).toBe(9);
  });
});
