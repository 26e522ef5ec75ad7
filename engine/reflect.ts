// The only importer of wgsl_reflect. Turns a complete WGSL module into a KernelLayout: the bind-group layout
// (read -> read-only-storage, read_write -> storage, uniform -> uniform), the uniform struct's members with
// offsets, and the workgroup-size expression (literals or override names, resolved per pipeline). A kernel has at
// most one uniform struct (its params, written from the host per dispatch); a uniform binding whose type is a
// sized array (`var<uniform> w: array<vec4<f32>, N>`) is a tensor binding like a storage one, kind 'uniform'.
import { WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';

export type Scalar = 'f32' | 'i32' | 'u32';

export interface StorageBinding {
  /** 'uniform': a `var<uniform>` sized array bound from a tensor (read-only; at most maxUniformBufferBindingSize). */
  kind: 'read' | 'read_write' | 'uniform';
  name: string;
  binding: number;
  /** Scalar type of the elements (vec4<f32> -> f32; atomic<u32> -> u32). */
  scalar: Scalar;
  /** Scalars per array element (4 for vec4<f32>). */
  lanes: number;
  /** Fixed element count of a sized array, 0 for a runtime-sized array. */
  count: number;
}

export interface UniformMember {
  name: string;
  offset: number;
  size: number;
  scalar: Scalar;
  /** Number of scalars (1, 2, 3, 4, or 4*n for array<vec4<T>, n>). */
  lanes: number;
}

export interface UniformBinding {
  kind: 'uniform';
  name: string;
  binding: number;
  size: number;
  members: UniformMember[];
}

export interface KernelLayout {
  entryPoint: string;
  storage: StorageBinding[];
  uniform: UniformBinding | null;
  /** Workgroup size expression per axis: a literal number or an override name. */
  workgroupSize: Array<number | string>;
  /** Override constants declared in the module with their defaults (NaN when the default is not a literal). */
  overrides: Record<string, number>;
}

function scalarOf(typeName: string, kernel: string, where: string): { scalar: Scalar; lanes: number } {
  const t = typeName.replace(/\s+/g, '');
  const m = /^(?:atomic<)?(f32|i32|u32)>?$/.exec(t);
  if (m) return { scalar: m[1] as Scalar, lanes: 1 };
  const v = /^vec([234])<(f32|i32|u32)>$/.exec(t) ?? /^vec([234])([fiu])$/.exec(t);
  if (v) {
    const s = v[2]!.length === 1 ? ({ f: 'f32', i: 'i32', u: 'u32' } as const)[v[2] as 'f' | 'i' | 'u'] : (v[2] as Scalar);
    return { scalar: s, lanes: Number(v[1]) };
  }
  throw new Error(`${kernel}: ${where} has type '${typeName}', which the engine cannot bind (use f32/i32/u32 or vecN of them)`);
}

interface TypeLike {
  name: string;
  format?: TypeLike | null;
  count?: number;
  members?: Array<{ name: string; offset: number; size: number; type: TypeLike }>;
  size: number;
}

function typeName(t: TypeLike): string {
  if (t.format) return `${t.name}<${typeName(t.format)}>`;
  return t.name;
}

export function reflectKernel(name: string, wgsl: string, entryPoint = 'main'): KernelLayout {
  let r: WgslReflect;
  try {
    r = new WgslReflect(wgsl);
  } catch (e) {
    throw new Error(`${name}: WGSL could not be parsed: ${e instanceof Error ? e.message : String(e)}`);
  }
  const entry = r.entry.compute.find((f) => f.name === entryPoint);
  if (!entry) throw new Error(`${name}: no @compute entry point named '${entryPoint}'`);
  const storage: StorageBinding[] = [];
  let uniform: UniformBinding | null = null;
  const groups = r.getBindGroups();
  groups.forEach((group, g) => {
    group.forEach((v) => {
      if (!v) return;
      if (g !== 0) throw new Error(`${name}: binding '${v.name}' is in @group(${g}); kernels use @group(0) only`);
      const t = v.type as unknown as TypeLike;
      // resourceType: 0 uniform, 1 storage (wgsl_reflect's ResourceType enum).
      if (v.resourceType === 0 && t.name === 'array') {
        const el = scalarOf(typeName(t.format!), name, `uniform array '${v.name}'`);
        if (el.lanes !== 4) throw new Error(`${name}: uniform array '${v.name}' must be array<vec4<T>, N> (uniform arrays have a 16-byte stride)`);
        if (!t.count) throw new Error(`${name}: uniform array '${v.name}' needs a fixed size (array<vec4<T>, N>)`);
        storage.push({ kind: 'uniform', name: v.name, binding: v.binding, scalar: el.scalar, lanes: 4, count: t.count });
      } else if (v.resourceType === 0) {
        if (uniform) throw new Error(`${name}: more than one uniform binding ('${uniform.name}', '${v.name}')`);
        const members: UniformMember[] = [];
        for (const m of t.members ?? []) {
          const mt = m.type;
          let info: { scalar: Scalar; lanes: number };
          if (mt.name === 'array') {
            const el = scalarOf(typeName(mt.format!), name, `uniform member '${m.name}'`);
            info = { scalar: el.scalar, lanes: 4 * (mt.count ?? 0) };
            if (el.lanes !== 4) throw new Error(`${name}: uniform array member '${m.name}' must be array<vec4<T>, N> (16-byte stride)`);
          } else info = scalarOf(typeName(mt), name, `uniform member '${m.name}'`);
          members.push({ name: m.name, offset: m.offset, size: m.size, ...info });
        }
        if (!t.members) {
          const s = scalarOf(typeName(t), name, `uniform '${v.name}'`);
          members.push({ name: v.name, offset: 0, size: 4 * s.lanes, ...s });
        }
        uniform = { kind: 'uniform', name: v.name, binding: v.binding, size: Math.max(16, Math.ceil(t.size / 16) * 16), members };
      } else if (v.resourceType === 1) {
        if (t.name !== 'array') throw new Error(`${name}: storage binding '${v.name}' must be an array`);
        const el = scalarOf(typeName(t.format!), name, `binding '${v.name}'`);
        storage.push({
          kind: v.access === 'read_write' ? 'read_write' : 'read',
          name: v.name,
          binding: v.binding,
          scalar: el.scalar,
          lanes: el.lanes,
          count: t.count ?? 0,
        });
      } else {
        throw new Error(`${name}: binding '${v.name}' is not a buffer; compute kernels here bind buffers only`);
      }
    });
  });
  const overrides: Record<string, number> = {};
  for (const o of r.overrides) {
    const m = new RegExp(`override\\s+${o.name}\\s*(?::\\s*\\w+)?\\s*=\\s*([-+0-9.eE]+)[uif]?\\s*;`).exec(wgsl);
    overrides[o.name] = m ? Number(m[1]) : NaN;
  }
  const ws = /@workgroup_size\(([^)]*)\)/.exec(wgsl.slice(wgsl.indexOf('@compute')));
  const workgroupSize: Array<number | string> = ws
    ? ws[1]!.split(',').map((s) => s.trim()).filter(Boolean).map((s) => (/^\d+u?$/.test(s) ? parseInt(s, 10) : s))
    : (entry.workgroupSize ?? [1, 1, 1]);
  while (workgroupSize.length < 3) workgroupSize.push(1);
  storage.sort((a, b) => a.binding - b.binding);
  return { entryPoint, storage, uniform, workgroupSize, overrides };
}

/** Resolve the workgroup size for a set of override values. */
export function resolveWorkgroupSize(name: string, layout: KernelLayout, overrides: Record<string, number>): [number, number, number] {
  const out = layout.workgroupSize.map((e) => {
    if (typeof e === 'number') return e;
    const v = overrides[e] ?? layout.overrides[e];
    if (v === undefined || !Number.isFinite(v)) throw new Error(`${name}: workgroup size '${e}' is not a known override with a literal default`);
    return v;
  });
  return [out[0]!, out[1]!, out[2]!];
}
