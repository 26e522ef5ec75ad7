// nn modules and initializers: names and state dicts, train/eval, zeroGrad, Linear / Embedding / LayerNorm /
// Dropout forward and backward against float64 references, and the seeded initializers against the RNG reference.
import { expect, it } from 'vitest';
import { backward, manualSeed, ref, scope, sync, Tensor } from '../engine/index.js';
import type { TensorData } from '../engine/safetensors.js';
import { StateDictError } from '../models/checkpoint.js';
import {
  constant_, fans, fillRow_, normal_, ones_, refNormal, refTruncatedNormal, refUniform, truncatedNormal_, uniform_, xavierUniform_, zeros_,
} from '../models/init.js';
import { Dropout, Embedding, LayerNorm, Linear, Module, ModuleList } from '../models/nn.js';
import { describeGpu, expectClose, FWD_TOL, GRAD_TOL, upload, type F64 } from './harness.js';

// ------------------------------------------------------------------------------------------------ init
describeGpu('init', () => {
  it('normal_ with a seed equals the float64 Box-Muller reference of the engine RNG', async () => {
    const n = 4099;
    const got = await normal_(Tensor.empty([n]), 0.02, 0.5, { seed: 17, offset: 3 }).toArray();
    // f32 log/cos on the GPU: absolute error ~1e-7 on N(0,1) values, times std.
    expectClose('normal_', got, refNormal(n, 17, 3, 0.02, 0.5), { atol: 0.02 * 2e-5, rtol: 1e-5 });
  });

  it('truncatedNormal_ (TF semantics: redrawn beyond 2 std) equals the reference and stays within +-2 std', async () => {
    const n = 20011;
    const got = await truncatedNormal_(Tensor.empty([n]), 0.001, 0, { seed: 5 }).toArray();
    const { data, ambiguous } = refTruncatedNormal(n, 5, 0, 0.001, 0);
    let redrawn = 0;
    const rawN = refNormal(n, 5, 0, 0.001, 0);
    for (let i = 0; i < n; i++) {
      expect(Math.abs(got[i]!)).toBeLessThanOrEqual(0.002 * (1 + 1e-6));
      if (Math.abs(rawN[i]!) > 0.002) redrawn++;
      if (ambiguous[i]) continue;
      if (Math.abs(got[i]! - data[i]!) > 0.001 * 2e-5) throw new Error(`truncatedNormal_[${i}]: got ${got[i]}, want ${data[i]}`);
    }
    // About 4.55% of N(0,1) draws fall beyond 2 std: the redraw path ran.
    expect(redrawn / n).toBeGreaterThan(0.035);
    expect(redrawn / n).toBeLessThan(0.056);
  });

  it('xavierUniform_ draws U(-b, b), b = sqrt(6 / (fan_in + fan_out)) (AttRec W: d=150 -> 0.1414)', async () => {
    const t = xavierUniform_(Tensor.empty([150, 150]), { seed: 8 }); // [d, d]
    const got = await t.toArray();
    const b = Math.sqrt(6 / 300);
    expect(b).toBeCloseTo(0.1414, 4);
    expectClose('xavierUniform_', got, refUniform(t.size, 8, 0, -b, b), { atol: 1e-7, rtol: 1e-6 });
    let max = 0;
    for (const v of got) max = Math.max(max, Math.abs(v));
    expect(max).toBeLessThanOrEqual(b);
    expect(max).toBeGreaterThan(0.99 * b);
    const g = await xavierUniform_(Tensor.empty([3, 5]), { seed: 8, gain: 2 }).toArray();
    expectClose('xavierUniform_ gain 2', g, refUniform(15, 8, 0, -2 * Math.sqrt(6 / 8), 2 * Math.sqrt(6 / 8)), { atol: 1e-6, rtol: 1e-6 });
    expect(fans([64, 256])).toEqual({ fanIn: 256, fanOut: 64 });
    expect(fans([4, 3, 5])).toEqual({ fanIn: 15, fanOut: 20 });
    expect(() => fans([7])).toThrow(/at least 2 dimensions/);
  });

  it('without a seed, manualSeed + the same sequence of inits reproduces the same values; different calls differ', async () => {
    manualSeed(42);
    const a1 = await normal_(Tensor.empty([100])).toArray();
    const a2 = await uniform_(Tensor.empty([100]), -1, 1).toArray();
    manualSeed(42);
    const b1 = await normal_(Tensor.empty([100])).toArray();
    const b2 = await uniform_(Tensor.empty([100]), -1, 1).toArray();
    expect(Array.from(b1)).toEqual(Array.from(a1));
    expect(Array.from(b2)).toEqual(Array.from(a2));
    expect(Array.from(a1)).not.toEqual(Array.from(await normal_(Tensor.empty([100])).toArray()));
  });

  it('normal_ moments at S3-Rec scale (std 0.02) over 12103 x 64', async () => {
    const x = await normal_(Tensor.empty([12103, 64]), 0.02, 0, { seed: 42 }).toArray();
    let m = 0;
    let s = 0;
    for (const v of x) m += v;
    m /= x.length;
    for (const v of x) s += (v - m) ** 2;
    const sd = Math.sqrt(s / x.length);
    expect(Math.abs(m)).toBeLessThan(5 * 0.02 / Math.sqrt(x.length));
    expect(Math.abs(sd - 0.02)).toBeLessThan(0.02 * 0.005);
  });

  it('zeros_, ones_, constant_, fillRow_ (a padding row)', async () => {
    expect(Array.from(await zeros_(Tensor.from(new Float32Array([1, 2, 3]))).toArray())).toEqual([0, 0, 0]);
    expect(Array.from(await ones_(Tensor.empty([257])).toArray())).toEqual(new Array(257).fill(1));
    expect(Array.from(await constant_(Tensor.empty([2], 'i32'), -7).toArray())).toEqual([-7, -7]);
    const t = constant_(Tensor.empty([3, 2]), 5); // [3, 2]
    fillRow_(t, 1, 0);
    expect(Array.from(await t.toArray())).toEqual([5, 5, 0, 0, 5, 5]);
    expect(() => fillRow_(t, 3)).toThrow(/row 3/);
  });
});

// ------------------------------------------------------------------------------------------------ Module
class Block extends Module {
  readonly attention: Module;
  readonly drop = this.registerModule('dropout', new Dropout(0.5));
  constructor() {
    super();
    this.attention = this.registerModule('attention', new Module());
    this.attention.registerModule('query', new Linear(4, 4));
    this.attention.registerModule('LayerNorm', new LayerNorm(4));
  }
}

class Net extends Module {
  readonly emb = this.registerModule('item_embeddings', new Embedding(10, 4, { paddingIdx: 0 }));
  readonly scale = this.registerParameter('scale', Tensor.from(new Float32Array([2]), [1])); // [1]
  readonly steps = this.registerBuffer('steps', Tensor.from(new Int32Array([0]), [1])); // [1]
  readonly enc = this.registerModule('item_encoder', new Module());
  readonly layers = this.enc.registerModule('layer', new ModuleList([new Block(), new Block()]));
  readonly head = this.registerModule('aap_norm', new Linear(4, 3, { bias: false }));
}

const NET_NAMES = [
  'scale', 'item_embeddings.weight',
  'item_encoder.layer.0.attention.query.weight', 'item_encoder.layer.0.attention.query.bias',
  'item_encoder.layer.0.attention.LayerNorm.weight', 'item_encoder.layer.0.attention.LayerNorm.bias',
  'item_encoder.layer.1.attention.query.weight', 'item_encoder.layer.1.attention.query.bias',
  'item_encoder.layer.1.attention.LayerNorm.weight', 'item_encoder.layer.1.attention.LayerNorm.bias',
  'aap_norm.weight',
];

describeGpu('Module', () => {
  it('names parameters like a PyTorch state dict (own first, then children in order); buffers only in the state dict', () => {
    const net = new Net();
    expect(net.namedParameters().map(([n]) => n)).toEqual(NET_NAMES);
    expect([...net.stateDict().keys()]).toEqual(['scale', 'steps', ...NET_NAMES.slice(1)]);
    expect(net.parameters().every((p) => p.requiresGrad && p.dtype === 'f32')).toBe(true);
    expect(net.namedBuffers().map(([n]) => n)).toEqual(['steps']);
    expect(net.numParameters()).toBe(1 + 40 + 2 * (16 + 4 + 4 + 4) + 12);
    expect(net.namedModules().map(([n]) => n)).toContain('item_encoder.layer.1.dropout');
    expect(() => net.registerParameter('scale', Tensor.empty([1]))).toThrow(/'scale' is already registered/);
    expect(() => net.registerModule('a.b', new Module())).toThrow(/invalid name 'a.b'/);
    expect(net.layers.length).toBe(2);
    expect(() => net.layers.at(2)).toThrow(/index 2 out of range/);
    net.dispose();
  });

  it('parameters survive the scope they were created in (the module owns them)', async () => {
    const net = scope(() => new Linear(3, 2));
    expect(net.weight.disposed).toBe(false);
    expect((await net.weight.toArray()).length).toBe(6);
    net.dispose();
    expect(net.weight.disposed).toBe(true);
  });

  it('train() / eval() reach every descendant', () => {
    const net = new Net();
    expect(net.namedModules().every(([, m]) => m.training)).toBe(true);
    net.eval();
    expect(net.namedModules().every(([, m]) => !m.training)).toBe(true);
    net.train();
    expect(net.layers.at(1).drop.training).toBe(true);
    net.dispose();
  });

  it('loadStateDict copies in place (strict), reports or rejects missing/unexpected names, and names a mismatched tensor', async () => {
    const a = new Net();
    const b = new Net();
    const w = b.head.weight;
    b.loadStateDict(a.stateDict());
    expect(b.head.weight).toBe(w); // same tensor object: optimizers keep their references
    for (const [n, t] of a.stateDict()) expect(Array.from(await b.stateDict().get(n)!.toArray())).toEqual(Array.from(await t.toArray()));
    const host = new Map<string, TensorData>([...a.stateDict()].map(([n, t]) => [n, { dtype: t.dtype, shape: [...t.shape], data: new Float32Array(t.size).fill(0.5) }]));
    host.set('steps', { dtype: 'i32', shape: [1], data: Int32Array.from([9]) });
    b.loadStateDict(host);
    expect(Array.from(await b.scale.toArray())).toEqual([0.5]);
    expect(Array.from(await b.steps.toArray())).toEqual([9]);

    const bad = new Map(a.stateDict());
    bad.set('aap_norm.weight', a.scale);
    let err: unknown;
    try {
      b.loadStateDict(bad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateDictError);
    expect((err as StateDictError).tensor).toBe('aap_norm.weight');
    expect((err as Error).message).toBe("tensor 'aap_norm.weight': the state dict has f32[1], the model's f32[3, 4]");
    const wrongType = new Map(a.stateDict());
    wrongType.set('steps', a.scale);
    expect(() => b.loadStateDict(wrongType)).toThrow("tensor 'steps': the state dict has f32[1], the model's i32[1]");
    // Nothing was written by the failed loads.
    expect(Array.from(await b.scale.toArray())).toEqual([0.5]);

    const partial = new Map(a.stateDict());
    partial.delete('scale');
    partial.set('extra.weight', a.scale);
    expect(() => b.loadStateDict(partial)).toThrow("tensor 'scale': missing from the state dict: scale; not in the model: extra.weight");
    expect(b.loadStateDict(partial, { strict: false })).toEqual({ missing: ['scale'], unexpected: ['extra.weight'] });
    a.dispose();
    b.dispose();
  });

  it('zeroGrad drops gradients or zeroes them in place', async () => {
    const net = new Linear(2, 2);
    net.weight.grad = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const g = net.weight.grad;
    net.zeroGrad(false);
    expect(net.weight.grad).toBe(g);
    expect(Array.from(await g.toArray())).toEqual([0, 0, 0, 0]);
    net.zeroGrad();
    expect(net.weight.grad).toBeNull();
    expect(g.disposed).toBe(true);
    net.dispose();
  });

  it('apply visits children before parents (init_weights style re-initialisation)', async () => {
    const net = new Net();
    const seen: string[] = [];
    net.apply((m) => {
      seen.push(m.constructor.name);
      if (m instanceof Linear) {
        normal_(m.weight, 0.02);
        if (m.bias) zeros_(m.bias);
      }
    });
    expect(seen.at(-1)).toBe('Net');
    expect(seen.indexOf('Linear')).toBeLessThan(seen.indexOf('Block'));
    expect(Array.from(await net.layers.at(0).attention.stateDict().get('query.bias')!.toArray())).toEqual([0, 0, 0, 0]);
    net.dispose();
  });
});

// ------------------------------------------------------------------------------------------------ layers
function refLinear(x: F64, w: F64, b: F64 | null): F64 {
  const [O, I] = w.shape as [number, number];
  const N = x.data.length / I;
  const out = new Float64Array(N * O);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      let s = b ? b.data[o]! : 0;
      for (let i = 0; i < I; i++) s += x.data[n * I + i]! * w.data[o * I + i]!;
      out[n * O + o] = s;
    }
  }
  return { data: out, shape: [...x.shape.slice(0, -1), O] };
}

function refLinearGrad(x: F64, w: F64, b: F64 | null, gy: F64): F64[] {
  const [O, I] = w.shape as [number, number];
  const N = x.data.length / I;
  const gx = new Float64Array(x.data.length);
  const gw = new Float64Array(w.data.length);
  const gb = new Float64Array(O);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      const g = gy.data[n * O + o]!;
      gb[o]! += g;
      for (let i = 0; i < I; i++) {
        gx[n * I + i]! += g * w.data[o * I + i]!;
        gw[o * I + i]! += g * x.data[n * I + i]!;
      }
    }
  }
  const out = [{ data: gx, shape: x.shape }, { data: gw, shape: w.shape }];
  if (b) out.push({ data: gb, shape: b.shape });
  return out;
}

function refLayerNorm(x: F64, w: F64, b: F64, eps: number): F64 {
  const D = w.data.length;
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < x.data.length / D; r++) {
    let m = 0;
    for (let i = 0; i < D; i++) m += x.data[r * D + i]!;
    m /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x.data[r * D + i]! - m) ** 2;
    v /= D;
    for (let i = 0; i < D; i++) out[r * D + i] = (w.data[i]! * (x.data[r * D + i]! - m)) / Math.sqrt(v + eps) + b.data[i]!;
  }
  return { data: out, shape: x.shape };
}

function refLayerNormGrad(x: F64, w: F64, eps: number, gy: F64): F64[] {
  const D = w.data.length;
  const gx = new Float64Array(x.data.length);
  const gw = new Float64Array(D);
  const gb = new Float64Array(D);
  for (let r = 0; r < x.data.length / D; r++) {
    let m = 0;
    for (let i = 0; i < D; i++) m += x.data[r * D + i]!;
    m /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x.data[r * D + i]! - m) ** 2;
    const s = Math.sqrt(v / D + eps);
    const xh = (i: number): number => (x.data[r * D + i]! - m) / s;
    let mg = 0;
    let mgx = 0;
    for (let i = 0; i < D; i++) {
      const g = gy.data[r * D + i]!;
      gw[i]! += g * xh(i);
      gb[i]! += g;
      mg += g * w.data[i]!;
      mgx += g * w.data[i]! * xh(i);
    }
    for (let i = 0; i < D; i++) gx[r * D + i] = (gy.data[r * D + i]! * w.data[i]! - mg / D - (xh(i) * mgx) / D) / s;
  }
  return [{ data: gx, shape: x.shape }, { data: gw, shape: w.shape }, { data: gb, shape: w.shape }];
}

interface ModuleCase {
  name: string;
  module: Module;
  x: readonly number[];
  xRange?: readonly [number, number];
  /** Parameter name -> shape, in the order ref / refGrad take them after x. */
  params: Record<string, readonly number[]>;
  forward: (x: Tensor) => Tensor;
  ref: (xs: F64[]) => F64;
  refGrad: (xs: F64[], gy: F64) => F64[];
  seed: number;
}

/**
 * A module's forward against the float64 reference with random x and parameters (loaded through loadStateDict),
 * then backward with a random gy: x.grad and every parameter's .grad against refGrad, and refGrad against
 * central differences.
 */
async function checkModule(c: ModuleCase): Promise<void> {
  const rnd = ref.mulberry32(c.seed);
  const draw = (shape: readonly number[], [lo, hi]: readonly [number, number] = [-2, 2]): F64 => ({
    data: Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => Math.fround(lo + (hi - lo) * rnd())),
    shape: [...shape],
  });
  const x = draw(c.x, c.xRange);
  const ps = Object.values(c.params).map((s) => draw(s));
  c.module.loadStateDict(new Map(Object.keys(c.params).map((k, i) => [k, { dtype: 'f32' as const, shape: ps[i]!.shape, data: Float32Array.from(ps[i]!.data) }])));
  const xt = upload(x).requireGrad();
  const y = c.forward(xt);
  const want = c.ref([x, ...ps]);
  expect(y.shape).toEqual(want.shape);
  expectClose(`${c.name} forward`, await y.toArray(), want.data, FWD_TOL);
  const gy = draw(want.shape);
  const gc = ref.gradcheck(c.ref, c.refGrad, [x, ...ps], gy);
  if (!gc.ok) throw new Error(`${c.name}: reference gradient disagrees with finite differences\n${gc.message}`);
  const wantG = c.refGrad([x, ...ps], gy);
  backward(y, upload(gy));
  expectClose(`${c.name} grad x`, await xt.grad!.toArray(), wantG[0]!.data, GRAD_TOL);
  const sd = c.module.stateDict();
  for (const [i, k] of Object.keys(c.params).entries()) {
    const g = sd.get(k)!.grad;
    if (!g) throw new Error(`${c.name}: no gradient reached parameter '${k}'`);
    expectClose(`${c.name} grad ${k}`, await g.toArray(), wantG[i + 1]!.data, GRAD_TOL);
  }
  xt.grad?.dispose();
  xt.dispose();
  c.module.dispose();
  await sync();
}

describeGpu('layers', () => {
  const linearCases: Array<[number[], number, number, boolean]> = [[[1], 1, 1, true], [[7], 13, 5, true], [[2, 3], 64, 65, false], [[3, 1, 2], 31, 7, true], [[257], 3, 2, true]];
  for (const [lead, I, O, bias] of linearCases) {
    it(`Linear(${I}, ${O}, bias=${bias}) on [${lead.join(', ')}, ${I}]: forward, grads of x, weight [out, in], bias`, () => {
      const net = new Linear(I, O, { bias });
      return checkModule({
        name: `Linear(${I}, ${O})`,
        module: net,
        x: [...lead, I],
        params: bias ? { weight: [O, I], bias: [O] } : { weight: [O, I] },
        forward: (x) => net.forward(x),
        ref: ([x, w, b]) => refLinear(x!, w!, b ?? null),
        refGrad: ([x, w, b], gy) => refLinearGrad(x!, w!, b ?? null, gy),
        seed: I * 31 + O,
      });
    });
  }

  it('Linear: known values; gradients land on the module parameters', async () => {
    const net = new Linear(3, 2);
    net.weight.write(new Float32Array([1, 2, 3, 4, 5, 6]));
    net.bias!.write(new Float32Array([0.5, -0.5]));
    const x = Tensor.from(new Float32Array([1, 0, -1, 2, 1, 0]), [2, 3]); // [2, 3]
    const y = net.forward(x); // [2, 2]
    expect(Array.from(await y.toArray())).toEqual([-2 + 0.5, -2 - 0.5, 4 + 0.5, 13 - 0.5]);
    backward(y, Tensor.from(new Float32Array([1, 1, 1, 1]), [2, 2]));
    expect(Array.from(await net.weight.grad!.toArray())).toEqual([3, 1, -1, 3, 1, -1]);
    expect(Array.from(await net.bias!.grad!.toArray())).toEqual([2, 2]);
    expect(() => net.forward(Tensor.empty([2, 4]))).toThrow(/does not end in 3/);
    net.dispose();
  });

  it('Embedding: lookup with paddingIdx (row zeroed at init, no gradient), negative paddingIdx counts from the end', async () => {
    const e = new Embedding(6, 3, { paddingIdx: 0 });
    const w0 = await e.weight.toArray();
    expect(Array.from(w0.slice(0, 3))).toEqual([0, 0, 0]);
    const ids = Tensor.from(new Int32Array([2, 0, 5, 2]), [2, 2]); // [2, 2]
    const y = e.forward(ids); // [2, 2, 3]
    expect(y.shape).toEqual([2, 2, 3]);
    const want = [2, 0, 5, 2].flatMap((r) => Array.from(w0.slice(3 * r, 3 * r + 3)));
    expect(Array.from(await y.toArray())).toEqual(want);
    backward(y, Tensor.from(new Float32Array(12).fill(1), [2, 2, 3]));
    expect(Array.from(await e.weight.grad!.toArray())).toEqual([0, 0, 0, 0, 0, 0, 2, 2, 2, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
    const last = new Embedding(6, 3, { paddingIdx: -1 });
    expect(last.paddingIdx).toBe(5);
    expect(Array.from((await last.weight.toArray()).slice(15))).toEqual([0, 0, 0]);
    expect(() => new Embedding(6, 3, { paddingIdx: 6 })).toThrow(/paddingIdx 6 out of range/);
    e.dispose();
    last.dispose();
  });

  const lnCases: Array<[number, number, [number, number]]> = [[1, 1, [-2, 2]], [3, 7, [-100, 100]], [5, 64, [-1000, 1000]], [2, 257, [-2, 2]]];
  for (const [rows, D, range] of lnCases) {
    it(`LayerNorm(${D}) on [${rows}, ${D}], inputs in [${range.join(', ')}] (eps 1e-12 default): forward and grads`, () => {
      const ln = new LayerNorm(D);
      expect(ln.eps).toBe(1e-12);
      return checkModule({
        name: `LayerNorm(${D})`,
        module: ln,
        x: [rows, D],
        xRange: range,
        params: { weight: [D], bias: [D] },
        forward: (x) => ln.forward(x),
        ref: ([x, w, b]) => refLayerNorm(x!, w!, b!, 1e-12),
        refGrad: ([x, w], gy) => refLayerNormGrad(x!, w!, 1e-12, gy),
        seed: rows * 7 + D,
      });
    });
  }

  it('Dropout: identity (the same tensor, no kernel) in eval mode and at p = 0; inverted scaling in training', async () => {
    const d = new Dropout(0.5);
    const x = Tensor.from(Float32Array.from({ length: 4000 }, (_, i) => 1 + (i % 3))); // [4000]
    d.eval();
    expect(d.forward(x)).toBe(x);
    expect(new Dropout(0).forward(x)).toBe(x);
    d.train();
    const y = await d.forward(x).toArray();
    const xs = await x.toArray();
    let kept = 0;
    for (let i = 0; i < y.length; i++) {
      if (y[i] !== 0) {
        kept++;
        expect(y[i]).toBeCloseTo(2 * xs[i]!, 5);
      }
    }
    expect(kept / y.length).toBeGreaterThan(0.45);
    expect(kept / y.length).toBeLessThan(0.55);
    expect(Array.from(await new Dropout(1).forward(x).toArray()).every((v) => v === 0)).toBe(true);
    expect(() => new Dropout(1.5)).toThrow(/must be in \[0, 1\]/);
    expect(() => new Dropout(-0.1)).toThrow(/must be in \[0, 1\]/);
    await sync();
  });
});
