// kernels/elementwise.ts — elementwise ops: a table of rows {name, wgsl, ref, grad}, one kernel family per row
// (`add{mode=same}`, `exp`, `exp{bwd}`).
//   binary: add, sub, mul, div with numpy broadcasting; `b` may be a number (scalar mode: b is a uniform).
//   unary:  neg, exp, log, sqrt, relu, sigmoid, tanh, gelu (erf form), square, abs.
// Modes: `same` (equal shapes: one thread per element), `scalar`, `bcast` (up to 8 dims; strides in a uniform, 0
// on broadcast dims). `same` and `scalar` take 4 elements per thread as vec4 when the size is a multiple of 4
// (`add{mode=same,vec4}`), and so do the unary rows (`gelu{vec4}`, `gelu{bwd,vec4}`): llvmpipe loads and stores
// per instruction, so vec4 runs ~2x faster there (kernels/README.md). Memory traffic: reads each input element
// once (broadcast ones from cache), writes n. Backward: binary grads are compositions (mul/div + sumTo over
// broadcast dims); unary grads are one fused kernel per row, gx = gy * f'(x), recomputing f from the saved input.
import { ceilDiv, defineOp, loopCost, ref, sameShape, shapeStr, Tensor, vec4Count, type Kernel, type Shape } from '../engine/index.js';
import { bcastIndex2Wgsl, broadcastPattern, broadcastStrides, DIMS_T, foldedIndex, GELU_WGSL, kernelFamily, main1d, MAX_BCAST_DIMS, padDims, refSigmoid, SIGMOID_WGSL } from './common.js';
import { sumTo } from './reduce.js';

// ERF_WGSL moved to common.ts; re-exported here for imports written before the move.
export { ERF_WGSL } from './common.js';

type F64 = ref.F64;
const WG = 256;
const MAX_DIMS = MAX_BCAST_DIMS;

const HELPERS = /* wgsl */ `${GELU_WGSL}
${SIGMOID_WGSL}
fn tanh_(x: f32) -> f32 { return tanh(clamp(x, -15.0, 15.0)); }`;

// ------------------------------------------------------------------ binary ops
interface BinaryRow {
  name: 'add' | 'sub' | 'mul' | 'div';
  wgsl: string; // expression in a, b
  ref: (a: number, b: number) => number;
}

const BINARY: Record<BinaryRow['name'], BinaryRow> = {
  add: { name: 'add', wgsl: 'a + b', ref: (a, b) => a + b },
  sub: { name: 'sub', wgsl: 'a - b', ref: (a, b) => a - b },
  mul: { name: 'mul', wgsl: 'a * b', ref: (a, b) => a * b },
  div: { name: 'div', wgsl: 'a / b', ref: (a, b) => a / b },
};

type BinaryMode = 'same' | 'scalar' | 'block' | 'bcast';

/** Per mode: the uniform struct and how a thread reads its a and b. */
const BINARY_MODES: Record<BinaryMode, { params: string; load: string }> = {
  same: { params: 'struct Params { n: u32 }', load: 'let a = A[i]; let b = B[i];' },
  scalar: { params: 'struct Params { n: u32, scalar: f32 }', load: 'let a = A[i]; let b = p.scalar;' },
  // block: each side's non-1 dims are one contiguous run of out's (common.ts broadcastPattern)
  block: {
    params: 'struct Params { n: u32, a_inner: u32, a_size: u32, b_inner: u32, b_size: u32 }',
    load: 'let a = A[(i / p.a_inner) % p.a_size]; let b = B[(i / p.b_inner) % p.b_size];',
  },
  // bcast: the general stride walk over up to MAX_BCAST_DIMS dims, both operands in one loop
  bcast: {
    params: `struct Params { n: u32, ndim: u32, shape: ${DIMS_T}, sa: ${DIMS_T}, sb: ${DIMS_T} }
${bcastIndex2Wgsl('sa', 'sb')}`,
    load: 'let ab = bidx2(i); let a = A[ab.x]; let b = B[ab.y];',
  },
};

/** The kernels of a binary row, one per mode: `add{mode=same}`, `mul{mode=bcast}`, ... */
const binaryKernels = Object.fromEntries(
  (Object.keys(BINARY) as Array<BinaryRow['name']>).map((name) => [
    name,
    kernelFamily(name, ({ mode, vec4 }: { mode: BinaryMode; vec4?: boolean }) => {
      const row = BINARY[name];
      const m = BINARY_MODES[mode];
      const T = vec4 ? 'vec4<f32>' : 'f32'; // vec4: modes same and scalar, n counts vec4s
      return {
        foldable: true,
        wgsl: /* wgsl */ `
// out = ${row.wgsl} (${mode} mode). One thread per output ${vec4 ? 'vec4 (4 elements)' : 'element'}.
override WG: u32 = ${WG};
${m.params}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<${T}>;  // broadcastable to out
${mode === 'scalar' ? '' : `@group(0) @binding(2) var<storage, read> B: array<${T}>;  // broadcastable to out`}
@group(0) @binding(3) var<storage, read_write> out: array<${T}>; // [n]
${main1d('WG')} {
  let i = ${foldedIndex('WG')};
  if (i >= p.n) { return; }
  ${m.load}
  out[i] = ${row.wgsl};
}`,
        grid: ({ n }, [wg]) => [ceilDiv(n!, wg)],
        minSizes: ({ n }) => ({ out: n! }),
        loopTrips: loopCost(MAX_DIMS), // the bcast mode's loop over at most MAX_DIMS dims
      };
    }),
  ]),
) as Record<BinaryRow['name'], (p: { mode: BinaryMode; vec4?: boolean }) => Kernel>;

const binaryKernel = (row: BinaryRow, mode: BinaryMode, vec4 = false): Kernel => binaryKernels[row.name](vec4 ? { mode, vec4 } : { mode });

/** Run a binary row with broadcasting; returns a new tensor (no autograd). */
function binaryForward(row: BinaryRow, a: Tensor, b: Tensor | number): Tensor {
  if (a.dtype !== 'f32') throw new Error(`${row.name}: ${a.describe()} is not f32`);
  if (typeof b === 'number') {
    const out = Tensor.empty(a.shape); // [...a]
    const v = vec4Count(a.size, a, out);
    if (a.size) binaryKernel(row, 'scalar', v > 0).run({ A: a, out }, { n: v || a.size, scalar: b });
    return out;
  }
  if (b.dtype !== 'f32') throw new Error(`${row.name}: ${b.describe()} is not f32`);
  let shape: number[];
  try {
    shape = ref.broadcastShapes(a.shape, b.shape);
  } catch {
    throw new Error(`${row.name}: shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} do not broadcast`);
  }
  if (shape.length > MAX_DIMS) throw new Error(`${row.name}: ${shape.length} dims; at most ${MAX_DIMS}`);
  const out = Tensor.empty(shape); // broadcast shape
  if (out.size === 0) return out;
  if (sameShape(a.shape, b.shape)) {
    const v = vec4Count(out.size, a, b, out);
    binaryKernel(row, 'same', v > 0).run({ A: a, B: b, out }, { n: v || out.size });
  } else {
    // Block form (each side's non-1 dims form one contiguous run: bias adds, per-row masks) avoids the
    // per-dimension div/mod walk, which is what broadcasting costs on llvmpipe.
    const pa = broadcastPattern(a.shape, out.shape);
    const pb = broadcastPattern(b.shape, out.shape);
    if (pa.mode === 1 && pb.mode === 1) {
      binaryKernel(row, 'block').run({ A: a, B: b, out }, { n: out.size, a_inner: pa.inner, a_size: pa.size, b_inner: pb.inner, b_size: pb.size });
    } else binaryKernel(row, 'bcast').run({ A: a, B: b, out }, bcastParams(out.shape, a.shape, b.shape));
  }
  return out;
}

function bcastParams(out: Shape, a: Shape, b: Shape): Record<string, number | number[]> {
  return { n: numelOf(out), ndim: out.length, shape: padDims(out), sa: broadcastStrides(a, out), sb: broadcastStrides(b, out) };
}

function numelOf(s: Shape): number {
  return s.reduce((x, y) => x * y, 1);
}

const binaryOps = Object.fromEntries(
  (Object.keys(BINARY) as Array<BinaryRow['name']>).map((name) => [
    name,
    defineOp<{ scalar: number | null }>({
      name,
      forward(ctx, [a, b], { scalar }) {
        const out = binaryForward(BINARY[name], a!, scalar ?? b!);
        if (name === 'mul' || name === 'div') ctx.save(a!, ...(scalar === null ? [b!] : []));
        ctx.extra.aShape = a!.shape;
        ctx.extra.bShape = b?.shape;
        return out;
      },
      backward(ctx, gy) {
        const aShape = ctx.extra.aShape as Shape;
        const bShape = ctx.extra.bShape as Shape | undefined;
        const s = ctx.attrs.scalar;
        const [ga, gb] = binaryGrads(name, ctx.saved, gy, s, ctx.needsGrad);
        const outA = ga && ctx.needsGrad[0] ? sumTo(ga, aShape) : null;
        const outB = gb && bShape && ctx.needsGrad[1] ? sumTo(gb, bShape) : null;
        if (ga && ga !== outA && ga !== gy) ga.dispose();
        if (gb && gb !== outB && gb !== gy) gb.dispose();
        return s === null ? [outA, outB] : [outA];
      },
    }),
  ]),
) as Record<BinaryRow['name'], ReturnType<typeof defineOp<{ scalar: number | null }>>>;

/** Full-shape gradients of a binary op before summing over broadcast dims. */
function binaryGrads(name: BinaryRow['name'], saved: readonly Tensor[], gy: Tensor, s: number | null, need: readonly boolean[]): [Tensor | null, Tensor | null] {
  const [a, b] = saved;
  switch (name) {
    case 'add':
      return [need[0] ? gy : null, need[1] ? gy : null];
    case 'sub':
      return [need[0] ? gy : null, need[1] ? binaryForward(BINARY.mul, gy, -1) : null];
    case 'mul':
      return [need[0] ? binaryForward(BINARY.mul, gy, s ?? b!) : null, need[1] ? binaryForward(BINARY.mul, gy, a!) : null];
    case 'div': {
      const ga = need[0] ? binaryForward(BINARY.div, gy, s ?? b!) : null;
      let gb: Tensor | null = null;
      if (need[1]) {
        // d(a/b)/db = -a/b^2
        const t = binaryForward(BINARY.mul, gy, a!);
        const t2 = binaryForward(BINARY.div, t, b!);
        const t3 = binaryForward(BINARY.div, t2, b!);
        gb = binaryForward(BINARY.mul, t3, -1);
        t.dispose();
        t2.dispose();
        t3.dispose();
      }
      return [ga, gb];
    }
  }
}

function binary(name: BinaryRow['name'], a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? binaryOps[name].apply([a], { scalar: b }) : binaryOps[name].apply([a, b], { scalar: null });
}

export const add = (a: Tensor, b: Tensor | number): Tensor => binary('add', a, b);
export const sub = (a: Tensor, b: Tensor | number): Tensor => binary('sub', a, b);
export const mul = (a: Tensor, b: Tensor | number): Tensor => binary('mul', a, b);
export const div = (a: Tensor, b: Tensor | number): Tensor => binary('div', a, b);

/** Float64 reference of a binary op with broadcasting. */
export function refBinary(name: BinaryRow['name'], a: F64, b: F64 | number): F64 {
  const f = BINARY[name].ref;
  if (typeof b === 'number') return { data: a.data.map((x) => f(x, b)), shape: [...a.shape] };
  const shape = ref.broadcastShapes(a.shape, b.shape);
  const out = ref.zerosF64(shape);
  for (let i = 0; i < out.data.length; i++) {
    out.data[i] = f(a.data[ref.broadcastIndex(i, shape, a.shape)]!, b.data[ref.broadcastIndex(i, shape, b.shape)]!);
  }
  return out;
}

/** Float64 reference gradients of a binary op (summed back over broadcast dims). */
export function refBinaryGrad(name: BinaryRow['name'], a: F64, b: F64 | number, gy: F64): [F64, F64 | null] {
  const shape = gy.shape;
  const ga = ref.zerosF64(shape);
  const gb = ref.zerosF64(shape);
  for (let i = 0; i < gy.data.length; i++) {
    const x = a.data[ref.broadcastIndex(i, shape, a.shape)]!;
    const y = typeof b === 'number' ? b : b.data[ref.broadcastIndex(i, shape, b.shape)]!;
    const g = gy.data[i]!;
    const [da, db] =
      name === 'add' ? [1, 1] : name === 'sub' ? [1, -1] : name === 'mul' ? [y, x] : [1 / y, -x / (y * y)];
    ga.data[i] = g * da;
    gb.data[i] = g * db;
  }
  return [ref.sumTo(ga, a.shape), typeof b === 'number' ? null : ref.sumTo(gb, b.shape)];
}

// ------------------------------------------------------------------ unary ops
export type UnaryName = 'neg' | 'exp' | 'log' | 'sqrt' | 'relu' | 'sigmoid' | 'tanh' | 'gelu' | 'square' | 'abs';

interface UnaryRow {
  wgsl: string; // y from x
  grad: string; // dy/dx from x
  ref: (x: number) => number;
  refGrad: (x: number) => number;
}

const UNARY: Record<UnaryName, UnaryRow> = {
  neg: { wgsl: '-x', grad: '-1.0', ref: (x) => -x, refGrad: () => -1 },
  exp: { wgsl: 'exp(x)', grad: 'exp(x)', ref: Math.exp, refGrad: Math.exp },
  log: { wgsl: 'log(x)', grad: '1.0 / x', ref: Math.log, refGrad: (x) => 1 / x },
  sqrt: { wgsl: 'sqrt(x)', grad: '0.5 / sqrt(x)', ref: Math.sqrt, refGrad: (x) => 0.5 / Math.sqrt(x) },
  relu: { wgsl: 'max(x, 0.0)', grad: 'select(0.0, 1.0, x > 0.0)', ref: (x) => Math.max(x, 0), refGrad: (x) => (x > 0 ? 1 : 0) },
  sigmoid: { wgsl: 'sigmoid_(x)', grad: 'sigmoid_(x) * (1.0 - sigmoid_(x))', ref: refSigmoid, refGrad: (x) => refSigmoid(x) * (1 - refSigmoid(x)) },
  tanh: { wgsl: 'tanh_(x)', grad: '1.0 - tanh_(x) * tanh_(x)', ref: Math.tanh, refGrad: (x) => 1 - Math.tanh(x) ** 2 },
  gelu: {
    wgsl: 'gelu_(x)',
    grad: 'gelu_grad_(x)',
    ref: (x) => 0.5 * x * (1 + ref.erf(x / Math.SQRT2)),
    refGrad: (x) => 0.5 * (1 + ref.erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI),
  },
  square: { wgsl: 'x * x', grad: '2.0 * x', ref: (x) => x * x, refGrad: (x) => 2 * x },
  abs: { wgsl: 'abs(x)', grad: 'sign(x)', ref: Math.abs, refGrad: Math.sign },
};

/**
 * The kernels of a unary row: `exp` (y = f(x)) and `exp{bwd}` (gx = gy * f'(x)); with `vec4` (a size that is a
 * multiple of 4) one thread loads and stores a vec4 and applies the scalar expression to each component.
 */
const unaryKernels = Object.fromEntries(
  (Object.keys(UNARY) as UnaryName[]).map((name) => [
    name,
    kernelFamily(name, ({ bwd, vec4 }: { bwd: boolean; vec4?: boolean }) => {
      const row = UNARY[name];
      const T = vec4 ? 'vec4<f32>' : 'f32';
      const value = (x: string, gy: string): string => (bwd ? `${gy} * (${row.grad.replace(/\bx\b/g, x)})` : row.wgsl.replace(/\bx\b/g, x));
      const body = vec4
        ? `let x4 = X[i];${bwd ? '\n  let g4 = GY[i];' : ''}
  out[i] = vec4<f32>(${['x', 'y', 'z', 'w'].map((c) => value(`x4.${c}`, `g4.${c}`)).join(', ')});`
        : `let x = X[i];
  out[i] = ${value('x', 'GY[i]')};`;
      return {
        foldable: true,
        wgsl: /* wgsl */ `
// ${bwd ? `gx = gy * d/dx ${row.wgsl}` : `y = ${row.wgsl}`}. One thread per ${vec4 ? 'vec4 (4 elements)' : 'element'}.
override WG: u32 = ${WG};
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<${T}>;          // [n]
${bwd ? `@group(0) @binding(2) var<storage, read> GY: array<${T}>;         // [n]` : ''}
@group(0) @binding(3) var<storage, read_write> out: array<${T}>;  // [n]
${HELPERS}
${main1d('WG')} {
  let i = ${foldedIndex('WG')};
  if (i >= p.n) { return; }
  ${body}
}`,
        grid: ({ n }, [wg]) => [ceilDiv(n!, wg)],
        minSizes: ({ n }) => ({ X: n!, out: n! }),
      };
    }),
  ]),
) as Record<UnaryName, (p: { bwd: boolean; vec4?: boolean }) => Kernel>;

/** A unary row's kernel over these tensors of n elements, and its element count param (vec4s where vec4Count allows). */
function unaryRun(name: UnaryName, bwd: boolean, n: number, ...ts: Tensor[]): { k: Kernel; n: number } {
  const v = vec4Count(n, ...ts);
  return { k: unaryKernels[name](v ? { bwd, vec4: true } : { bwd }), n: v || n };
}

const unaryOps = Object.fromEntries(
  (Object.keys(UNARY) as UnaryName[]).map((name) => [
    name,
    defineOp<Record<string, never>>({
      name,
      forward(ctx, [x]) {
        if (x!.dtype !== 'f32') throw new Error(`${name}: ${x!.describe()} is not f32`);
        const out = Tensor.empty(x!.shape); // same shape as x
        if (x!.size) {
          const u = unaryRun(name, false, x!.size, x!, out);
          u.k.run({ X: x!, out }, { n: u.n });
        }
        ctx.save(x!);
        return out;
      },
      backward(ctx, gy) {
        const x = ctx.saved[0]!;
        const gx = Tensor.empty(x.shape); // [...x]
        if (x.size) {
          const u = unaryRun(name, true, x.size, x, gy, gx);
          u.k.run({ X: x, GY: gy, out: gx }, { n: u.n });
        }
        return [gx];
      },
    }),
  ]),
) as Record<UnaryName, ReturnType<typeof defineOp<Record<string, never>>>>;

export function unary(name: UnaryName, x: Tensor): Tensor {
  return unaryOps[name].apply([x], {});
}

export const neg = (x: Tensor): Tensor => unary('neg', x);
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const relu = (x: Tensor): Tensor => unary('relu', x);
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const gelu = (x: Tensor): Tensor => unary('gelu', x);
export const square = (x: Tensor): Tensor => unary('square', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);

export const UNARY_NAMES = Object.keys(UNARY) as UnaryName[];

export function refUnary(name: UnaryName, x: F64): F64 {
  return { data: x.data.map(UNARY[name].ref), shape: [...x.shape] };
}

export function refUnaryGrad(name: UnaryName, x: F64, gy: F64): F64 {
  const f = UNARY[name].refGrad;
  return { data: x.data.map((v, i) => gy.data[i]! * f(v)), shape: [...x.shape] };
}
