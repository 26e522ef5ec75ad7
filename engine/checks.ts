// GPU-side checks that never read back inside a step: each check kernel writes a small flag buffer (one per
// family), and the queue copies the dirty flags into the staging buffer of the next readback (toArray/item) or
// sync(), where a set flag becomes a thrown Error.
//
//   checkIds(ids, bound, op, arg)    ids outside [0, bound) -> `embedding: id 1000000 at position 3 is outside
//                                    [0, 10)` (the first bad position of the first failing call since the last
//                                    read). One single-workgroup dispatch per call (reads the ids once).
//   checkFinite(tensors, label, k)   NaN/Inf in any of the tensors -> `non-finite value (NaN or Inf) in
//                                    <label>/<tensor name> at step k` (the earliest recorded check that saw one).
//   finiteReport()                   = sync(): throws what the flags report. Call it every N steps.
//   CHECK_FINITE=1 (flags.checkFinite) checks every op's f32 output and every gradient (engine/autograd.ts), so the
//   error names the first op that produced a non-finite value.
//
// Flags are per device; they are reset after each read. The kernels stay inside llvmpipe's 65,535-iteration
// budget per invocation (ids: at most CHUNK / 256 iterations per dispatch; finite: PER per invocation).
import { flags } from './env.js';
import { ceilDiv, defineKernel, type Bindable } from './kernel.js';
import type { FlagSource, Queue } from './queue.js';
import { rt, sync } from './runtime.js';
import { Tensor } from './tensor.js';

/** An id outside its table, found on the GPU by checkIds. */
export class IdRangeError extends Error {
  constructor(readonly op: string, readonly arg: string, readonly value: number, readonly position: number, readonly bound: number) {
    super(`${op}: ${arg} ${value} at position ${position} is outside [0, ${bound})`);
    this.name = 'IdRangeError';
  }
}

/** A NaN or Inf found by checkFinite (or by the CHECK_FINITE=1 op checks). */
export class NonFiniteError extends Error {
  constructor(readonly where: string) {
    super(`non-finite value (NaN or Inf) in ${where}`);
    this.name = 'NonFiniteError';
  }
}

const WG = 256;
const CHUNK = 1 << 22; // ids per dispatch: 16,384 loop iterations per invocation

const checkIdsKernel = defineKernel({
  name: 'check_ids',
  wgsl: /* wgsl */ `
// flag = [found, position, value, bound, signed, arg] of the first id >= bound (as u32: a negative i32 is huge) in
// ids[0..n), written only while the flag is clear (the first failing dispatch since the last read wins).
struct Params { n: u32, bound: u32, base: u32, signed: u32, arg: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;        // [n]
@group(0) @binding(2) var<storage, read_write> flag: array<u32>; // [8]
var<workgroup> best: array<u32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u) {
  var first = 0xffffffffu;
  for (var i = lid.x; i < p.n; i = i + ${WG}u) {
    if (ids[i] >= p.bound) { first = i; break; }
  }
  best[lid.x] = first;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid.x < s) { best[lid.x] = min(best[lid.x], best[lid.x + s]); }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let b = best[0];
    if (b != 0xffffffffu && flag[0] == 0u) {
      flag[0] = 1u;
      flag[1] = p.base + b;
      flag[2] = ids[b];
      flag[3] = p.bound;
      flag[4] = p.signed;
      flag[5] = p.arg;
    }
  }
}`,
  grid: () => [1],
  minSizes: ({ n }) => ({ ids: n!, flag: 8 }),
  // the scan (n / 256 iterations) and the 8-step tree reduction, with the loop headers
  loopTrips: ({ n }) => Math.ceil(n! / WG) + 1 + 2 + 9 + 2,
});

const PER = 16; // elements per invocation
const checkFiniteKernel = defineKernel({
  name: 'check_finite',
  foldable: true,
  wgsl: /* wgsl */ `
// flag[0] = min(flag[0], label) when x[0..n) holds a NaN or an Inf (exponent bits all ones).
struct Params { n: u32, label: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;                  // [n] f32 bits
@group(0) @binding(2) var<storage, read_write> flag: array<atomic<u32>>; // [4]
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let base = (wid.x + wid.y * nwg.x) * ${WG * PER}u + lid.x;
  var bad = false;
  for (var k = 0u; k < ${PER}u; k = k + 1u) {
    let i = base + k * ${WG}u;
    if (i < p.n && (x[i] & 0x7f800000u) == 0x7f800000u) { bad = true; }
  }
  if (bad) { atomicMin(&flag[0], p.label); }
}`,
  grid: ({ n }) => [ceilDiv(n!, WG * PER)],
  minSizes: ({ n }) => ({ x: n!, flag: 4 }),
  loopTrips: PER + 1 + 2,
});

interface IdFamily extends FlagSource {
  readonly op: string;
}

interface DeviceChecks {
  ids: Map<string, IdFamily>;
  finite: FlagSource | null;
  labels: Map<number, string>;
  nextLabel: number;
  cutoff: number;
}

const perQueue = new WeakMap<Queue, DeviceChecks>();
const argNames: string[] = [];

function state(): DeviceChecks {
  const q = rt().queue;
  let s = perQueue.get(q);
  if (!s) perQueue.set(q, (s = { ids: new Map(), finite: null, labels: new Map(), nextLabel: 0, cutoff: 0 }));
  return s;
}

function flagBuffer(label: string, init: Uint32Array<ArrayBuffer>): GPUBuffer {
  const r = rt();
  const buf = r.pool.acquire(init.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label);
  r.device.queue.writeBuffer(buf, 0, init);
  return buf;
}

function bindable(buffer: GPUBuffer, bytes: number): Bindable {
  return { buffer, byteOffset: 0, byteLength: bytes, dtype: 'u32' };
}

function idFamily(op: string): IdFamily {
  const s = state();
  let f = s.ids.get(op);
  if (!f) {
    const init = new Uint32Array(8);
    f = {
      op,
      buffer: flagBuffer(`seqrec.check_ids.${op}`, init),
      bytes: init.byteLength,
      init,
      decode(w: Uint32Array): Error | null {
        if (!w[0]) return null;
        const value = w[4] ? w[2]! | 0 : w[2]!;
        return new IdRangeError(op, argNames[w[5]!] ?? 'id', value, w[1]!, w[3]!);
      },
    };
    s.ids.set(op, f);
  }
  return f;
}

/**
 * Queue a GPU range check of `ids` (i32/u32) against [0, bound): a bad id is thrown at the next sync/readback as
 * `<op>: <arg> <value> at position <p> is outside [0, <bound>)`. No readback here. Off with CHECK_IDS=0.
 */
export function checkIds(ids: Tensor, bound: number, op: string, arg = 'id'): void {
  if (!flags.checkIds || ids.size === 0) return;
  if (ids.disposed) throw new Error(`${op}: ${arg}s tensor is disposed`);
  if (ids.dtype === 'f32') throw new Error(`${op}: ${arg}s ${ids.describe()} must be i32 or u32`);
  if (!Number.isInteger(bound) || bound < 0 || bound > 0x7fffffff) throw new Error(`${op}: bound ${bound} for ${arg}s is not an integer in [0, 2^31)`);
  const f = idFamily(op);
  let a = argNames.indexOf(arg);
  if (a < 0) a = argNames.push(arg) - 1;
  const q = rt().queue;
  for (let base = 0; base < ids.size; base += CHUNK) {
    const n = Math.min(CHUNK, ids.size - base);
    checkIdsKernel.run(
      { ids: { buffer: ids.buffer, byteOffset: ids.byteOffset + 4 * base, byteLength: 4 * n, dtype: 'u32' }, flag: bindable(f.buffer, f.bytes) },
      { n, bound, base, signed: ids.dtype === 'i32' ? 1 : 0, arg: a },
    );
  }
  q.markFlag(f);
}

function finiteFlag(): FlagSource {
  const s = state();
  if (!s.finite) {
    const init = Uint32Array.from([0xffffffff, 0, 0, 0]);
    s.finite = {
      buffer: flagBuffer('seqrec.check_finite', init),
      bytes: init.byteLength,
      init,
      onRead() {
        s.cutoff = s.nextLabel;
      },
      decode(w: Uint32Array): Error | null {
        const at = w[0]!;
        const where = at === 0xffffffff ? null : (s.labels.get(at) ?? `check #${at}`);
        for (const k of s.labels.keys()) if (k < s.cutoff) s.labels.delete(k);
        return where === null ? null : new NonFiniteError(where);
      },
    };
  }
  return s.finite;
}

export type TensorSet = Tensor | readonly Tensor[] | ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;

function entries(ts: TensorSet): Array<[string, Tensor]> {
  if (Array.isArray(ts)) return (ts as readonly Tensor[]).map((t, i) => [t.name || `#${i}`, t]);
  if (ts instanceof Map) return [...(ts as ReadonlyMap<string, Tensor>).entries()];
  if (ts instanceof Tensor) return [[ts.name || ts.describe(), ts]];
  return Object.entries(ts as Record<string, Tensor>);
}

/**
 * Queue a NaN/Inf check of f32 tensors (no readback): the next sync/readback (or `finiteReport()`) throws
 * `non-finite value (NaN or Inf) in <label>/<name>[ at step <step>]` for the earliest check that saw one.
 * i32/u32 tensors and empty ones are skipped; a disposed one is an error.
 */
export function checkFinite(tensors: TensorSet, label: string, step?: number): void {
  const f = finiteFlag();
  const s = state();
  let any = false;
  for (const [name, t] of entries(tensors)) {
    if (t.disposed) throw new Error(`checkFinite: '${label}/${name}' is a disposed tensor`);
    if (t.dtype !== 'f32' || t.size === 0) continue;
    const id = s.nextLabel++;
    s.labels.set(id, `${label}/${name}${step === undefined ? '' : ` at step ${step}`}`);
    checkFiniteKernel.run({ x: { buffer: t.buffer, byteOffset: t.byteOffset, byteLength: t.byteLength, dtype: 'u32' }, flag: bindable(f.buffer, f.bytes) }, { n: t.size, label: id });
    any = true;
  }
  if (any) rt().queue.markFlag(f);
}

/** Wait for the GPU and throw the first problem the check flags (and GPU error scopes) report. */
export async function finiteReport(): Promise<void> {
  await sync();
}
