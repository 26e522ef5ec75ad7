// defineKernel misuse gives errors that name the kernel and the binding; uniforms are per dispatch; grids fold.
import { describe, expect, it } from 'vitest';
import { debugKernel, debugKernels } from '../engine/env.js';
import { ceilDiv, defineKernel, flags, getGpu, pipelineKey, rt, sync, Tensor, WgslCompileError } from '../engine/index.js';
import { describeGpu } from './harness.js';

const axpy = defineKernel({
  name: 'test_axpy',
  wgsl: /* wgsl */ `
struct Params { n: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [n]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;    // [n]
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x < p.n) { y[gid.x] = y[gid.x] + p.alpha * x[gid.x]; }
}`,
  grid: ({ n }) => [ceilDiv(n!, 64)],
  minSizes: ({ n }) => ({ x: n!, y: n! }),
});

describeGpu('kernel definition errors', () => {
  it('missing, extra, wrong-dtype and too-small bindings name the kernel and the binding', () => {
    const x = Tensor.from(new Float32Array(8));
    const y = Tensor.from(new Float32Array(8));
    const ids = Tensor.from(new Int32Array(8));
    const small = Tensor.from(new Float32Array(4));
    expect(() => axpy.run({ x }, { n: 8, alpha: 1 })).toThrow("test_axpy: missing binding 'y'");
    expect(() => axpy.run({ x, y, z: y }, { n: 8, alpha: 1 })).toThrow("test_axpy: unknown binding 'z'");
    expect(() => axpy.run({ x: ids, y }, { n: 8, alpha: 1 })).toThrow("test_axpy: binding 'x' expects f32 elements, got a i32 tensor");
    expect(() => axpy.run({ x: small, y }, { n: 8, alpha: 1 })).toThrow("test_axpy: binding 'x' has 4 elements, needs at least 8");
    expect(() => axpy.run({ x, y }, { n: 8 })).toThrow("test_axpy: missing param 'alpha'");
    expect(() => axpy.run({ x, y }, { n: 8, alpha: 1, beta: 2 })).toThrow("test_axpy: unknown param 'beta'");
    expect(() => axpy.run({ x, y }, { n: -1, alpha: 1 })).toThrow("test_axpy: param 'n' = -1 is not a u32");
    x.dispose();
    expect(() => axpy.run({ x, y }, { n: 8, alpha: 1 })).toThrow("test_axpy: binding 'x' is a disposed tensor");
    for (const t of [y, ids, small]) t.dispose();
  });

  const BROKEN = `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
  out[gid.x] = not_a_function(1.0);
}`;

  it('a WGSL compile error names the kernel, the line and its text: compile() rejects', async () => {
    const bad = defineKernel({ name: 'test_bad_wgsl', wgsl: BROKEN, grid: () => [1] });
    const err = await bad.compile().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(WgslCompileError);
    expect((err as Error).message).toMatch(/^test_bad_wgsl: WGSL compile error\n {2}line 3:\d+: .*not_a_function.*\n {4}out\[gid.x\] = not_a_function\(1.0\);/);
    expect((err as WgslCompileError).messages[0]).toMatchObject({ line: 3, text: '  out[gid.x] = not_a_function(1.0);' });
    // Once known, every use throws it at once.
    const out = Tensor.from(new Float32Array(64));
    expect(() => bad.run({ out })).toThrow(/test_bad_wgsl: WGSL compile error\n {2}line 3:/);
    out.dispose();
    await sync(); // nothing pending: the error was reported once
  });

  it('first use without compile(): the next readback throws the compile error (not the GPU error it causes)', async () => {
    const bad = defineKernel({ name: 'test_bad_first_use', wgsl: BROKEN, grid: () => [1] });
    const out = Tensor.from(new Float32Array(64));
    bad.run({ out }); // recorded; the compiler answers asynchronously
    await expect(out.toArray()).rejects.toThrow(/^test_bad_first_use: WGSL compile error\n {2}line 3:\d+: .*not_a_function/);
    expect(() => bad.run({ out })).toThrow(/test_bad_first_use: WGSL compile error/); // synchronous from now on
    await sync(); // the engine works on
    expect(Array.from(await out.toArray())).toEqual(new Array(64).fill(0));
    out.dispose();
    // The same through sync() instead of a readback.
    const bad2 = defineKernel({ name: 'test_bad_first_use_sync', wgsl: BROKEN, grid: () => [1] });
    const out2 = Tensor.from(new Float32Array(64));
    bad2.run({ out: out2 });
    await expect(sync()).rejects.toThrow(/^test_bad_first_use_sync: WGSL compile error\n {2}line 3:/);
    out2.dispose();
  });

  it('a parse error (wgsl_reflect) throws at first use, naming the kernel and the lines', () => {
    const bad = defineKernel({
      name: 'test_unparsable',
      wgsl: `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
  let x = 1.0
  out[gid.x] = x;
}`,
      grid: () => [1],
    });
    const out = Tensor.from(new Float32Array(64));
    expect(() => bad.run({ out })).toThrow(/^test_unparsable: WGSL could not be parsed: .*Line: 4[^]*line 3: let x = 1.0\n {2}line 4: out\[gid.x\] = x;$/);
    expect(() => bad.layout()).toThrow(/test_unparsable/);
    const noEntry = defineKernel({ name: 'test_no_entry', wgsl: 'this is not wgsl {', grid: () => [1] });
    expect(() => noEntry.layout()).toThrow(/test_no_entry/);
    out.dispose();
  });

  it('pipeline keys are readable: the name, plus {K=v} override constants when given', async () => {
    expect(pipelineKey('bias_gelu_dbias', {})).toBe('bias_gelu_dbias');
    expect(pipelineKey('k', { WG: 128, K: 64 })).toBe('k{K=64,WG=128}');
    const k = defineKernel({
      name: 'test_key_wg',
      wgsl: `override WG: u32 = 64;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3u) { out[gid.x] = 2.0; }`,
      grid: (_p, [wg]) => [ceilDiv(64, wg)],
    });
    await k.compile();
    await k.compile({ overrides: { WG: 32 } });
    expect(rt().pipelines.has('test_key_wg')).toBe(true);
    expect(rt().pipelines.has('test_key_wg{WG=32}')).toBe(true);
  });

  it('two kernels may not share a name with different WGSL (the name is the cache key)', async () => {
    const a = defineKernel({ ...axpy.spec, name: 'test_dup' });
    await a.compile();
    const b = defineKernel({ ...axpy.spec, name: 'test_dup', wgsl: axpy.spec.wgsl.replace('p.alpha * x', '2.0 * p.alpha * x') });
    await expect(b.compile()).rejects.toThrow(/test_dup: another kernel with this name has different WGSL/);
    const same = defineKernel({ ...axpy.spec, name: 'test_dup' });
    await same.compile(); // the same WGSL shares the pipeline
  });

  it('each dispatch in one batch sees its own uniforms', async () => {
    const x = Tensor.from(new Float32Array(64).fill(1));
    const y = Tensor.from(new Float32Array(64));
    const before = rt().queue.stats.submits;
    let want = 0;
    for (let k = 1; k <= 100; k++) {
      axpy.run({ x, y }, { n: 64, alpha: k });
      want += k;
    }
    expect(rt().queue.stats.submits - before).toBeLessThanOrEqual(1); // one batch (FLUSH_EVERY >= 100)
    const got = await y.toArray();
    expect(Array.from(got)).toEqual(new Array(64).fill(want));
    x.dispose();
    y.dispose();
  });

  it('1-D grids beyond maxComputeWorkgroupsPerDimension fold into 2-D when the kernel is foldable', async () => {
    const max = getGpu().device.limits.maxComputeWorkgroupsPerDimension;
    const n = (max + 10) * 4; // one workgroup of 4 threads per 4 elements -> max + 10 workgroups
    const fill = defineKernel({
      name: 'test_fold',
      foldable: true,
      wgsl: /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(4)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * 4u + lid.x;
  if (i < p.n) { out[i] = i; }
}`,
      grid: ({ n }) => [ceilDiv(n!, 4)],
    });
    const out = Tensor.from(new Uint32Array(n));
    fill.run({ out }, { n });
    const got = await out.toArray();
    let bad = -1;
    for (let i = 0; i < n; i++) if (got[i] !== i) { bad = i; break; }
    expect(bad).toBe(-1);
    const notFoldable = defineKernel({ ...fill.spec, name: 'test_not_foldable', foldable: false });
    expect(() => notFoldable.run({ out }, { n })).toThrow(/test_not_foldable: grid \[\d+, 1, 1\] exceeds maxComputeWorkgroupsPerDimension/);
    out.dispose();
  });

  it('a binding over maxStorageBufferBindingSize is rejected with a clear error', () => {
    const limit = getGpu().device.limits.maxStorageBufferBindingSize;
    const fake = { buffer: rt().pool.acquire(16, GPUBufferUsage.STORAGE), byteOffset: 0, byteLength: limit + 4, dtype: 'f32' as const };
    const y = Tensor.from(new Float32Array(8));
    expect(() => axpy.run({ x: fake, y }, { n: 8, alpha: 1 })).toThrow(/test_axpy: binding 'x' is \d+ bytes, over this device's maxStorageBufferBindingSize/);
    rt().pool.release(fake.buffer);
    y.dispose();
  });

  it('a uniform array bound from a tensor: read like storage; size, alignment and usage checked with clear errors', async () => {
    const dot = defineKernel({
      name: 'test_uniform_rows',
      wgsl: /* wgsl */ `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> w: array<vec4<f32>, 3>;       // [3 x 4] read as a uniform array
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;    // [n, 4]
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>; // [n] y[i] = (w_0 . x_i, w_1 . x_i, w_2 . x_i, 0)
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x < p.n) { let v = x[gid.x]; y[gid.x] = vec4<f32>(dot(w[0], v), dot(w[1], v), dot(w[2], v), 0.0); }
}`,
      grid: ({ n }) => [ceilDiv(n!, 64)],
    });
    const n = 67;
    const wv = Float32Array.from({ length: 12 }, (_, i) => i - 5.5);
    const xv = Float32Array.from({ length: 4 * n }, (_, i) => ((i * 7) % 11) - 5);
    const w = Tensor.from(wv, [3, 4]);
    const x = Tensor.from(xv, [n, 4]);
    const y = Tensor.from(new Float32Array(4 * n).fill(NaN), [n, 4]);
    dot.run({ w, x, y }, { n });
    const got = await y.toArray();
    for (let i = 0; i < n; i++) for (let r = 0; r < 4; r++) {
      let e = 0;
      for (let c = 0; c < 4 && r < 3; c++) e += wv[r * 4 + c]! * xv[i * 4 + c]!;
      expect(got[i * 4 + r]).toBe(e);
    }
    const lim = getGpu().device.limits;
    const big = Tensor.empty([lim.maxUniformBufferBindingSize / 4 + 4]);
    expect(() => dot.run({ w: big, x, y }, { n })).toThrow(/test_uniform_rows: uniform binding 'w' is \d+ bytes, over this device's maxUniformBufferBindingSize/);
    const arena = Tensor.empty([64]);
    const misaligned = { buffer: arena.buffer, byteOffset: 16, byteLength: 48, dtype: 'f32' as const };
    expect(() => dot.run({ w: misaligned, x, y }, { n })).toThrow(/test_uniform_rows: uniform binding 'w' starts at byte 16, not a multiple of minUniformBufferOffsetAlignment/);
    const plain = { buffer: rt().pool.acquire(48, GPUBufferUsage.STORAGE), byteOffset: 0, byteLength: 48, dtype: 'f32' as const };
    expect(() => dot.run({ w: plain, x, y }, { n })).toThrow(/test_uniform_rows: uniform binding 'w' is a buffer without UNIFORM usage/);
    const short = Tensor.from(new Float32Array(8));
    expect(() => dot.run({ w: short, x, y }, { n })).toThrow(/test_uniform_rows: binding 'w' has 2 elements, needs at least 3/);
    rt().pool.release(plain.buffer);
    for (const t of [w, x, y, big, arena, short]) t.dispose();
    await sync();
  });

  it('write versions: a read_write binding, write() and a copy give the buffer a new version; reads do not', async () => {
    const x = Tensor.from(new Float32Array(8).fill(1));
    const y = Tensor.from(new Float32Array(8));
    const yView = y.view([2, 4]);
    const [vx, vy] = [x.version, y.version];
    expect(vx).toBeGreaterThan(0);
    expect(vy).not.toBe(vx);
    axpy.run({ x, y }, { n: 8, alpha: 2 });
    expect(x.version).toBe(vx); // bound read-only
    expect(y.version).toBeGreaterThan(vy);
    expect(yView.version).toBe(y.version); // a view shares its buffer's version
    const v2 = y.version;
    y.write(new Float32Array(8));
    expect(y.version).toBeGreaterThan(v2);
    const v3 = y.version;
    rt().queue.copy(x.buffer, 0, y.buffer, 0, 32);
    expect(y.version).toBeGreaterThan(v3);
    expect(x.version).toBe(vx);
    await sync();
    for (const t of [x, y, yView]) t.dispose();
  });

  it('SYNC mode names the failing kernel', async () => {
    const prev = flags.sync;
    flags.sync = true;
    try {
      // Binding the same buffer as read and read_write in one dispatch is a validation error.
      const y = Tensor.from(new Float32Array(8));
      axpy.run({ x: y, y }, { n: 8, alpha: 1 });
      await expect(sync()).rejects.toThrow(/kernel test_axpy/);
      y.dispose();
    } finally {
      flags.sync = prev;
    }
  });
});

describe('DEBUG lines and KERNEL_FILTER', () => {
  it('KERNEL_FILTER limits every DEBUG level, flush lines (DEBUG=1) included', () => {
    const prev = { debug: flags.debug, kernelFilter: flags.kernelFilter };
    try {
      flags.debug = 1;
      flags.kernelFilter = [];
      expect(debugKernels(['matmul', 'add_bcast'], 1)).toBe(true);
      expect(debugKernel('matmul', 2)).toBe(false); // level 2 not on
      flags.kernelFilter = ['scale_shift'];
      expect(debugKernels(['matmul', 'add_bcast'], 1)).toBe(false); // a flush of other kernels: silent
      expect(debugKernels(['matmul', 'scale_shift'], 1)).toBe(true);
      flags.debug = 4;
      expect(debugKernel('scale_shift', 4)).toBe(true);
      expect(debugKernel('matmul', 4)).toBe(false);
    } finally {
      Object.assign(flags, prev);
    }
  });
});
