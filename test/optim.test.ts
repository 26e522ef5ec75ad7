// Optimizers against their float64 references: several steps on random parameters and gradients (odd sizes,
// +-1000 gradients), skipping of grad-less parameters, every launch grouping, state dicts.
import { expect, it } from 'vitest';
import { backward, ref, rt, scope, sync, Tensor } from '../engine/index.js';
import { mean, square, sub } from '../kernels/index.js';
import { Linear } from '../models/nn.js';
import { StateDictError, type OptimizerStateDict } from '../models/checkpoint.js';
import { Adagrad, Adam, refAdagradStep, refAdamStep, refSgdStep, SGD, type Optimizer } from '../models/optim.js';
import { describeGpu, expectClose, FWD_TOL } from './harness.js';

const SIZES = [1, 7, 63, 64, 65, 255, 256, 257, 1031];

interface Setup {
  params: Tensor[];
  host: Float64Array[]; // float64 copies the reference updates
  rnd: () => number;
}

function setup(seed: number, sizes: readonly number[] = SIZES): Setup {
  const rnd = ref.mulberry32(seed);
  const host = sizes.map((n) => Float64Array.from({ length: n }, () => Math.fround(rnd() * 4 - 2)));
  const params = host.map((h) => Tensor.from(Float32Array.from(h)).requireGrad()); // [n]
  return { params, host, rnd };
}

/** Fresh gradients for the listed parameters (null = no grad this step). Parameter 2 gets +-1000 values. */
function setGrads(s: Setup, which: (i: number) => boolean): Array<Float64Array | null> {
  return s.params.map((p, i) => {
    p.grad?.dispose();
    p.grad = null;
    if (!which(i)) return null;
    const scale = i === 2 ? 1000 : 1;
    const g = Float64Array.from({ length: p.size }, () => Math.fround((s.rnd() * 2 - 1) * scale));
    p.grad = Tensor.from(Float32Array.from(g)); // [n]
    return g;
  });
}

async function expectParams(what: string, s: Setup, tol = FWD_TOL): Promise<void> {
  for (const [i, p] of s.params.entries()) expectClose(`${what} param ${i} (n=${p.size})`, await p.toArray(), s.host[i]!, tol);
}

async function expectState(what: string, opt: Optimizer, want: Map<string, Float64Array>): Promise<void> {
  const sd = opt.stateDict();
  for (const [k, w] of want) {
    const t = sd.tensors.get(k);
    if (!(t instanceof Tensor)) throw new Error(`${what}: no state tensor ${k}`);
    expectClose(`${what} ${k}`, await t.toArray(), w, FWD_TOL);
  }
  for (const t of sd.tensors.values()) if (t instanceof Tensor) t.dispose();
}

function disposeAll(s: Setup, opt?: Optimizer): void {
  for (const p of s.params) {
    p.grad?.dispose();
    p.dispose();
  }
  opt?.dispose();
}

describeGpu('optim', () => {
  it('adam: 6 steps with L2 weight decay match the float64 reference (params and moments); grad-less params are skipped', async () => {
    const s = setup(1);
    const h = { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
    const opt = new Adam(s.params.map((p, i) => [`w${i}`, p] as const), { lr: h.lr, weightDecay: h.weightDecay });
    const m = s.host.map((x) => new Float64Array(x.length));
    const v = s.host.map((x) => new Float64Array(x.length));
    const t = s.host.map(() => 0);
    for (let k = 0; k < 6; k++) {
      // Parameter 0 never has a gradient; parameter 4 misses steps 1 and 3 (its bias correction uses its own count).
      const gs = setGrads(s, (i) => i !== 0 && !(i === 4 && (k === 1 || k === 3)));
      opt.step();
      gs.forEach((g, i) => {
        if (g) refAdamStep(s.host[i]!, g, m[i]!, v[i]!, ++t[i]!, h);
      });
    }
    await expectParams('adam', s);
    expect(opt.stepOf('w0')).toBe(0);
    expect(opt.stepOf('w4')).toBe(4);
    expect(opt.stepOf('w1')).toBe(6);
    const want = new Map<string, Float64Array>();
    for (let i = 1; i < s.params.length; i++) {
      want.set(`w${i}.exp_avg`, m[i]!);
      want.set(`w${i}.exp_avg_sq`, v[i]!);
    }
    await expectState('adam', opt, want);
    const sd = opt.stateDict();
    expect(sd.steps.w0).toBeUndefined(); // never updated: no state, as PyTorch
    expect(sd.tensors.has('w0.exp_avg')).toBe(false);
    for (const x of sd.tensors.values()) if (x instanceof Tensor) x.dispose();
    disposeAll(s, opt);
  });

  it('adam: lr and betas are read at every step (a schedule needs no recompile)', async () => {
    const s = setup(2, [13, 300]);
    const opt = new Adam(s.params, { lr: 0.1 });
    const m = s.host.map((x) => new Float64Array(x.length));
    const v = s.host.map((x) => new Float64Array(x.length));
    const pipelines = rt().pipelines.size;
    for (let k = 0; k < 4; k++) {
      opt.lr = 0.1 / (k + 1);
      opt.beta2 = k < 2 ? 0.999 : 0.99;
      const gs = setGrads(s, () => true);
      opt.step();
      gs.forEach((g, i) => refAdamStep(s.host[i]!, g!, m[i]!, v[i]!, k + 1, { lr: opt.lr, beta1: 0.9, beta2: opt.beta2, eps: 1e-8, weightDecay: 0 }));
    }
    await expectParams('adam schedule', s);
    expect(rt().pipelines.size - pipelines).toBeLessThanOrEqual(1);
    disposeAll(s, opt);
  });

  it('adagrad (TF): 5 steps with initial accumulator 0.05 match the reference; the accumulator too', async () => {
    const s = setup(3);
    const h = { lr: 0.05, eps: 0, weightDecay: 0 };
    const opt = new Adagrad(s.params, { lr: h.lr, initialAccumulatorValue: 0.05 });
    const acc = s.host.map((x) => new Float64Array(x.length).fill(0.05));
    for (let k = 0; k < 5; k++) {
      const gs = setGrads(s, (i) => i !== 5 || k > 2);
      opt.step();
      gs.forEach((g, i) => g && refAdagradStep(s.host[i]!, g, acc[i]!, h));
    }
    await expectParams('adagrad', s);
    await expectState('adagrad', opt, new Map(acc.map((a, i) => [`${i}.accumulator`, a])));
    expect(opt.stepOf('5')).toBe(2);
    disposeAll(s, opt);
  });

  it('adagrad rejects a zero accumulator without eps (0/0 on zero gradients)', () => {
    const s = setup(4, [3]);
    expect(() => new Adagrad(s.params, { initialAccumulatorValue: 0 })).toThrow(/divides 0 by 0/);
    disposeAll(s);
  });

  for (const cfg of [
    { momentum: 0, dampening: 0, nesterov: false, weightDecay: 0 },
    { momentum: 0.9, dampening: 0.1, nesterov: false, weightDecay: 0.01 },
    { momentum: 0.9, dampening: 0, nesterov: true, weightDecay: 0 },
  ]) {
    it(`sgd momentum=${cfg.momentum} dampening=${cfg.dampening} nesterov=${cfg.nesterov}: 4 steps match the reference`, async () => {
      const s = setup(5);
      const h = { lr: 0.01, ...cfg };
      const opt = new SGD(s.params, h);
      const buf = s.host.map((x) => new Float64Array(x.length));
      const t = s.host.map(() => 0);
      for (let k = 0; k < 4; k++) {
        const gs = setGrads(s, (i) => i !== 3 || k !== 0); // parameter 3 starts a step late: its buffer starts later
        opt.step();
        gs.forEach((g, i) => g && refSgdStep(s.host[i]!, g, buf[i]!, ++t[i]!, h));
      }
      await expectParams('sgd', s);
      if (cfg.momentum) await expectState('sgd', opt, new Map(buf.map((b, i) => [`${i}.momentum_buffer`, b])));
      disposeAll(s, opt);
    });
  }

  it('every variant (1, 3, 7 parameters per launch; large ones alone or packed; scalar or vec4; several state arenas) gives the same bits', async () => {
    const results: Float32Array[][] = [];
    const variants = [
      { slotsPerLaunch: 1 },
      { slotsPerLaunch: 1, vec4: false },
      { slotsPerLaunch: 3, packBelow: Infinity },
      { slotsPerLaunch: 7, packBelow: 100, vec4: false },
      { slotsPerLaunch: 7, packBelow: 64 },
      { slotsPerLaunch: 7, arenaFloats: 1100 },
    ];
    for (const variant of variants) {
      const s = setup(6);
      const opt = new Adam(s.params, { lr: 0.02, ...variant });
      for (let k = 0; k < 3; k++) {
        setGrads(s, (i) => (i + k) % 4 !== 0);
        opt.step();
      }
      expect(opt.slotsPerLaunch).toBe(Math.min(variant.slotsPerLaunch, Math.floor((rt().device.limits.maxStorageBuffersPerShaderStage - 2) / 2)));
      results.push(await Promise.all(s.params.map(async (p) => (await p.toArray()) as Float32Array)));
      disposeAll(s, opt);
    }
    for (const r of results.slice(1)) r.forEach((a, i) => expect(Array.from(a)).toEqual(Array.from(results[0]![i]!)));
  });

  it('state dict round trip: a restored optimizer continues exactly like the original', async () => {
    const a = setup(7, [5, 70, 300]);
    const b = setup(7, [5, 70, 300]);
    const names = ['x', 'y', 'z'];
    const optA = new Adam(a.params.map((p, i) => [names[i]!, p] as const), { lr: 0.03 });
    for (let k = 0; k < 3; k++) {
      const gs = setGrads(a, (i) => i !== 1 || k === 0);
      b.params.forEach((p, i) => {
        p.grad?.dispose();
        p.grad = gs[i] ? Tensor.from(Float32Array.from(gs[i]!)) : null;
      });
      optA.step();
    }
    // b gets a's parameters and optimizer state, then both take the same two steps.
    for (const [i, p] of b.params.entries()) p.write(await a.params[i]!.toArray());
    const optB = new Adam(b.params.map((p, i) => [names[i]!, p] as const), { lr: 1 });
    const sd = optA.stateDict();
    optB.loadStateDict(sd);
    for (const t of sd.tensors.values()) if (t instanceof Tensor) t.dispose();
    expect(optB.lr).toBe(0.03);
    expect(optB.stepOf('y')).toBe(1);
    for (let k = 0; k < 2; k++) {
      const gs = setGrads(a, () => true);
      b.params.forEach((p, i) => {
        p.grad?.dispose();
        p.grad = Tensor.from(Float32Array.from(gs[i]!));
      });
      optA.step();
      optB.step();
    }
    for (const [i, p] of a.params.entries()) expect(Array.from(await b.params[i]!.toArray())).toEqual(Array.from(await p.toArray()));
    disposeAll(a, optA);
    disposeAll(b, optB);
  });

  it('loadStateDict errors name the tensor: wrong kind, unknown parameter, missing slot, wrong shape, extra tensor', async () => {
    const s = setup(8, [4, 6]);
    const opt = new Adam(s.params.map((p, i) => [`p${i}`, p] as const));
    const zeros = (n: number): Float32Array => new Float32Array(n);
    const good = (): OptimizerStateDict => ({
      kind: 'adam',
      hyper: { lr: 0.1 },
      steps: { p0: 2 },
      tensors: new Map([
        ['p0.exp_avg', { dtype: 'f32', shape: [4], data: zeros(4) }],
        ['p0.exp_avg_sq', { dtype: 'f32', shape: [4], data: zeros(4) }],
      ]),
    });
    expect(() => opt.loadStateDict({ ...good(), kind: 'adagrad' })).toThrow(/cannot load the state of a 'adagrad' optimizer/);
    expect(() => opt.loadStateDict({ ...good(), steps: { p0: 2, q: 1 } })).toThrow(StateDictError);
    expect(() => opt.loadStateDict({ ...good(), steps: { p0: 2, q: 1 } })).toThrow(/tensor 'q'/);
    const missing = good();
    missing.tensors.delete('p0.exp_avg_sq');
    expect(() => opt.loadStateDict(missing)).toThrow(/tensor 'p0.exp_avg_sq': missing adam state/);
    const badShape = good();
    badShape.tensors.set('p0.exp_avg', { dtype: 'f32', shape: [2, 2], data: zeros(4) });
    expect(() => opt.loadStateDict(badShape)).toThrow(/tensor 'p0.exp_avg': is f32\[2, 2\], the parameter is f32\[4\]/);
    const extra = good();
    extra.tensors.set('p1.exp_avg', { dtype: 'f32', shape: [6], data: zeros(6) });
    expect(() => opt.loadStateDict(extra)).toThrow(/tensor 'p1.exp_avg': unexpected adam state tensor/);
    opt.loadStateDict(good());
    expect(opt.stepOf('p0')).toBe(2);
    expect(opt.lr).toBe(0.1);
    disposeAll(s, opt);
  });

  it('zeroGrad drops gradients (set_to_none) or zeroes them in place', async () => {
    const s = setup(9, [3, 5]);
    const opt = new SGD(s.params, { lr: 1 });
    setGrads(s, () => true);
    const g1 = s.params[1]!.grad!;
    opt.zeroGrad(false);
    expect(s.params[1]!.grad).toBe(g1);
    expect(Array.from(await g1.toArray())).toEqual([0, 0, 0, 0, 0]);
    opt.zeroGrad();
    expect(s.params.every((p) => p.grad === null)).toBe(true);
    expect(g1.disposed).toBe(true);
    const before = await s.params[0]!.toArray();
    opt.step(); // no gradients: nothing changes
    expect(Array.from(await s.params[0]!.toArray())).toEqual(Array.from(before));
    disposeAll(s, opt);
    await sync();
  });

  it('Linear + Adam: 5 least-squares training steps (module, autograd, zeroGrad, optimizer) match float64', async () => {
    const [N, I, O] = [9, 5, 3];
    const rnd = ref.mulberry32(11);
    const draw = (n: number): Float64Array => Float64Array.from({ length: n }, () => Math.fround(rnd() * 2 - 1));
    const [x, y, w, b] = [draw(N * I), draw(N * O), draw(O * I), draw(O)];
    const net = new Linear(I, O);
    net.loadStateDict({ weight: { dtype: 'f32', shape: [O, I], data: Float32Array.from(w) }, bias: { dtype: 'f32', shape: [O], data: Float32Array.from(b) } });
    const xt = Tensor.from(Float32Array.from(x), [N, I]); // [N, I]
    const yt = Tensor.from(Float32Array.from(y), [N, O]); // [N, O]
    const h = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
    const opt = new Adam(net, { lr: h.lr });
    const mw = new Float64Array(O * I), vw = new Float64Array(O * I), mb = new Float64Array(O), vb = new Float64Array(O);
    const losses: number[] = [];
    for (let t = 1; t <= 5; t++) {
      const loss = scope(() => mean(square(sub(net.forward(xt), yt)))); // []
      backward(loss);
      losses.push(await loss.item());
      loss.dispose();
      opt.step();
      opt.zeroGrad();
      // float64: loss = mean((x W^T + b - y)^2), dW = 2/(N O) err^T x, db = 2/(N O) sum err
      const gw = new Float64Array(O * I), gb = new Float64Array(O);
      for (let n = 0; n < N; n++) {
        for (let o = 0; o < O; o++) {
          let pred = b[o]!;
          for (let i = 0; i < I; i++) pred += x[n * I + i]! * w[o * I + i]!;
          const e = (2 * (pred - y[n * O + o]!)) / (N * O);
          gb[o]! += e;
          for (let i = 0; i < I; i++) gw[o * I + i]! += e * x[n * I + i]!;
        }
      }
      refAdamStep(w, gw, mw, vw, t, h);
      refAdamStep(b, gb, mb, vb, t, h);
    }
    expect(losses[4]!).toBeLessThan(losses[0]!);
    // Five steps through f32 forward/backward: a looser atol than one step, still far below the lr-sized updates.
    expectClose('trained weight', await net.weight.toArray(), w, { atol: 1e-4, rtol: 1e-3 });
    expectClose('trained bias', await net.bias!.toArray(), b, { atol: 1e-4, rtol: 1e-3 });
    for (const t of [xt, yt]) t.dispose();
    net.dispose();
    opt.dispose();
  });

  it('rejects duplicate parameters and mismatched gradients', () => {
    const s = setup(10, [3]);
    expect(() => new Adam([s.params[0]!, s.params[0]!])).toThrow(/listed twice/);
    const opt = new Adam(s.params);
    s.params[0]!.grad = Tensor.from(new Float32Array(4));
    expect(() => opt.step()).toThrow(/does not match parameter '0'/);
    disposeAll(s, opt);
  });
});
