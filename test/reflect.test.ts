// Reflection runs without a GPU.
import { expect, it } from 'vitest';
import { reflectKernel, resolveWorkgroupSize } from '../engine/reflect.js';

const SRC = /* wgsl */ `
override WG: u32 = 128;
struct Params { B: u32, N: u32, alpha: f32, shape: array<vec4<u32>, 2>, off: vec2<i32> }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
var<workgroup> tile: array<f32, 64>;
@compute @workgroup_size(WG, 2)
fn main(@builtin(global_invocation_id) gid: vec3u) { out[0] = vec4f(u[idx[0]] + p.alpha + tile[0]); }`;

it('reflects bindings (kinds, element types, lanes) in binding order', () => {
  const l = reflectKernel('t', SRC);
  expect(l.storage.map((s) => [s.name, s.binding, s.kind, s.scalar, s.lanes])).toEqual([
    ['u', 1, 'read', 'f32', 1],
    ['idx', 2, 'read', 'u32', 1],
    ['out', 3, 'read_write', 'f32', 4],
  ]);
});

it('reflects the uniform struct layout with WGSL offsets', () => {
  const u = reflectKernel('t', SRC).uniform!;
  expect(u.name).toBe('p');
  expect(u.members.map((m) => [m.name, m.offset, m.scalar, m.lanes])).toEqual([
    ['B', 0, 'u32', 1],
    ['N', 4, 'u32', 1],
    ['alpha', 8, 'f32', 1],
    ['shape', 16, 'u32', 8],
    ['off', 48, 'i32', 2],
  ]);
  expect(u.size).toBe(64);
});

it('resolves the workgroup size from override defaults and pipeline overrides', () => {
  const l = reflectKernel('t', SRC);
  expect(l.overrides).toEqual({ WG: 128 });
  expect(resolveWorkgroupSize('t', l, {})).toEqual([128, 2, 1]);
  expect(resolveWorkgroupSize('t', l, { WG: 32 })).toEqual([32, 2, 1]);
});

it('a uniform sized array is a tensor binding of kind uniform; the params struct stays the uniform', () => {
  const l = reflectKernel('t', `struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<uniform> w: array<vec4<f32>, 12>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn main() { out[0] = w[p.n].x; }`);
  expect(l.uniform!.name).toBe('p');
  expect(l.storage.map((s) => [s.name, s.binding, s.kind, s.scalar, s.lanes, s.count])).toEqual([
    ['w', 1, 'uniform', 'f32', 4, 12],
    ['out', 2, 'read_write', 'f32', 1, 0],
  ]);
  expect(() => reflectKernel('k4', '@group(0) @binding(0) var<uniform> w: array<vec2<f32>, 4>;\n@compute @workgroup_size(1) fn main() { _ = w[0]; }')).toThrow(/k4: uniform array 'w' must be array<vec4<T>, N>/);
});

it('rejects what the engine cannot bind, naming the kernel', () => {
  expect(() => reflectKernel('k1', '@group(0) @binding(0) var<storage, read> x: array<mat4x4<f32>>;\n@compute @workgroup_size(1) fn main() { _ = x[0]; }')).toThrow(/k1: binding 'x' has type/);
  expect(() => reflectKernel('k2', '@group(1) @binding(0) var<storage, read> x: array<f32>;\n@compute @workgroup_size(1) fn main() { _ = x[0]; }')).toThrow(/k2: binding 'x' is in @group\(1\)/);
  expect(() => reflectKernel('k3', '@compute @workgroup_size(1) fn other() {}')).toThrow(/k3: no @compute entry point named 'main'/);
});
