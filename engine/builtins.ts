// The few kernels the engine itself needs: fill, random init, gradient accumulation, copy.
// Everything else lives in kernels/.
import { ceilDiv, defineKernel, loopCost, type Kernel } from './kernel.js';
import { nextRng, RNG_WGSL } from './rng.js';
import { Tensor, vec4Count, type DType, type Shape } from './tensor.js';
import { rt } from './runtime.js';

const WG = 256;

function linearIndex(): string {
  // Folded 1-D grids (see KernelSpec.foldable): linear workgroup index from a 2-D grid.
  return `let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid.x;`;
}

const fillKernels = new Map<DType, Kernel>();
function fillKernel(dtype: DType): Kernel {
  let k = fillKernels.get(dtype);
  if (!k) {
    k = defineKernel({
      name: `fill_${dtype}`,
      foldable: true,
      wgsl: /* wgsl */ `
// out[i] = value for i < n. One thread per element.
struct Params { n: u32, value: ${dtype} }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<${dtype}>; // [n]
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  ${linearIndex()}
  if (i < p.n) { out[i] = p.value; }
}`,
      grid: ({ n }) => [ceilDiv(n!, WG)],
      minSizes: ({ n }) => ({ out: n! }),
    });
    fillKernels.set(dtype, k);
  }
  return k;
}

/** out[...] = value, in place. */
export function fillInPlace(t: Tensor, value: number): void {
  if (t.size === 0) return;
  fillKernel(t.dtype).run({ out: t }, { n: t.size, value });
}

export function full(shape: Shape, value: number, dtype: DType = 'f32'): Tensor {
  const t = Tensor.empty(shape, dtype);
  fillInPlace(t, value);
  return t;
}

export const zeros = (shape: Shape, dtype: DType = 'f32'): Tensor => full(shape, 0, dtype);
export const ones = (shape: Shape, dtype: DType = 'f32'): Tensor => full(shape, 1, dtype);

/** RNG modes of the rng_fill kernel. */
export const RNG_MODE = { uniform: 0, normal: 1, truncatedNormal: 2 } as const;

export const rngFill = defineKernel({
  name: 'rng_fill',
  foldable: true,
  wgsl: /* wgsl */ `
// Random fill from the counter-based RNG (engine/rng.ts): element i uses counters 2i and 2i+1 (Box-Muller),
// so values do not depend on the launch shape.
// mode 0: uniform in [a, b); 1: normal(mean a, std b); 2: normal(a, b) truncated to +-2 std (redrawn, as TF's
// truncated_normal; counters 2i + 2^31*k on the k-th redraw, at most 16 redraws, then clamped).
struct Params { n: u32, mode: u32, seed: u32, offset: u32, a: f32, b: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // [n]
${RNG_WGSL}
fn normal_at(c: u32) -> f32 {
  let u1 = (f32(rng_u32(p.seed, p.offset, c) >> 8u) + 1.0) * (1.0 / 16777216.0); // (0, 1]
  let u2 = rng_uniform(p.seed, p.offset, c + 1u);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  ${linearIndex()}
  if (i >= p.n) { return; }
  if (p.mode == 0u) {
    out[i] = p.a + (p.b - p.a) * rng_uniform(p.seed, p.offset, 2u * i);
    return;
  }
  var z = normal_at(2u * i);
  if (p.mode == 2u) {
    var k = 1u;
    loop {
      if (abs(z) <= 2.0 || k > 16u) { break; }
      z = normal_at(2u * i + k * 2147483648u);
      k = k + 1u;
    }
    z = clamp(z, -2.0, 2.0);
  }
  out[i] = p.a + p.b * z;
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ out: n! }),
  loopTrips: loopCost(17), // at most 16 redraws
});

export interface RandOptions {
  /** Use this seed (and offset 0 unless given) instead of the global generator's next offset. */
  seed?: number;
  offset?: number;
}

function rngParams(o: RandOptions): { seed: number; offset: number } {
  return o.seed === undefined ? nextRng() : { seed: o.seed >>> 0, offset: o.offset ?? 0 };
}

export function randomFill(t: Tensor, mode: keyof typeof RNG_MODE, a: number, b: number, o: RandOptions = {}): Tensor {
  if (t.dtype !== 'f32') throw new Error(`random fill: ${t.describe()} is not f32`);
  if (t.size === 0) return t;
  const { seed, offset } = rngParams(o);
  rngFill.run({ out: t }, { n: t.size, mode: RNG_MODE[mode], seed, offset, a, b });
  return t;
}

export const randn = (shape: Shape, std = 1, mean = 0, o: RandOptions = {}): Tensor =>
  randomFill(Tensor.empty(shape), 'normal', mean, std, o);
export const rand = (shape: Shape, lo = 0, hi = 1, o: RandOptions = {}): Tensor =>
  randomFill(Tensor.empty(shape), 'uniform', lo, hi, o);
export const truncatedNormal = (shape: Shape, std = 1, mean = 0, o: RandOptions = {}): Tensor =>
  randomFill(Tensor.empty(shape), 'truncatedNormal', mean, std, o);

// The accumulation kernels read and write f32, or vec4<f32> when vec4Count allows (~2x faster on llvmpipe).
const accKernels = [false, true].map((v) => defineKernel({
  name: v ? 'accumulate{vec4}' : 'accumulate',
  foldable: true,
  wgsl: /* wgsl */ `
// dst[i] += src[i]: gradient accumulation, in place (n ${v ? 'vec4s' : 'elements'}).
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<${v ? 'vec4<f32>' : 'f32'}>; // [n]
@group(0) @binding(2) var<storage, read> src: array<${v ? 'vec4<f32>' : 'f32'}>;       // [n]
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  ${linearIndex()}
  if (i < p.n) { dst[i] = dst[i] + src[i]; }
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ dst: n!, src: n! }),
}));

const add2Kernels = [false, true].map((v) => defineKernel({
  name: v ? 'add_same{vec4}' : 'add_same',
  foldable: true,
  wgsl: /* wgsl */ `
// out[i] = a[i] + b[i] (same shapes; the out-of-place accumulation; n ${v ? 'vec4s' : 'elements'}).
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<${v ? 'vec4<f32>' : 'f32'}>;         // [n]
@group(0) @binding(2) var<storage, read> b: array<${v ? 'vec4<f32>' : 'f32'}>;         // [n]
@group(0) @binding(3) var<storage, read_write> out: array<${v ? 'vec4<f32>' : 'f32'}>; // [n]
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  ${linearIndex()}
  if (i < p.n) { out[i] = a[i] + b[i]; }
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ a: n!, b: n!, out: n! }),
}));

/** dst += src in place (dst must not share storage with anything the caller still needs unchanged). */
export function accumulateInPlace(dst: Tensor, src: Tensor): void {
  if (dst.size !== src.size) throw new Error(`accumulate: ${dst.describe()} += ${src.describe()}`);
  const v = vec4Count(dst.size, dst, src);
  if (dst.size) accKernels[v ? 1 : 0]!.run({ dst, src }, { n: v || dst.size });
}

export function addSame(a: Tensor, b: Tensor): Tensor {
  if (a.size !== b.size) throw new Error(`add_same: ${a.describe()} + ${b.describe()}`);
  const out = Tensor.empty(a.shape);
  const v = vec4Count(a.size, a, b, out);
  if (a.size) add2Kernels[v ? 1 : 0]!.run({ a, b, out }, { n: v || a.size });
  return out;
}

/** A copy with its own storage. */
export function clone(t: Tensor): Tensor {
  const out = Tensor.empty(t.shape, t.dtype);
  if (t.byteLength) rt().queue.copy(t.buffer, t.byteOffset, out.buffer, 0, t.byteLength);
  return out;
}

/** Copy src's contents into dst (same element count). */
export function copyInto(dst: Tensor, src: Tensor): void {
  if (dst.size !== src.size || dst.dtype !== src.dtype) throw new Error(`copyInto: ${dst.describe()} <- ${src.describe()}`);
  if (src.byteLength) rt().queue.copy(src.buffer, src.byteOffset, dst.buffer, dst.byteOffset, src.byteLength);
}
