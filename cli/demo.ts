// seqrec demo: train the small mean-pool next-item model (models/meanpool.ts) on the bundled sample of Beauty
// and evaluate it with the official S3-Rec protocols (sampled: answer + 99 negatives; full ranking on the GPU
// with history excluded), next to a popularity baseline and the untrained model.
import { backward, destroyGpu, initGpu, manualSeed, noGrad, scope, sync, Tensor, zeros, accumulateInPlace, rt } from '../engine/index.js';
import { bceNegSampling, topkScores } from '../kernels/index.js';
import { Adam } from '../models/optim.js';
import { MeanPoolRec, poolInputs } from '../models/meanpool.js';
import {
  batchIndices, epochOrder, formatMetricsTable, ItemSet, leftPad, loadS3RecDataset, MetricAccumulator, negSample, Rng,
  sampledRanks, isDataError, type S3RecDataset, type EvalStage, s3recEvalExample, FULL_METRICS, prefetch,
} from '../models/data/index.js';

interface DemoOptions {
  dataDir: string;
  dataset: string;
  epochs: number;
  dim: number;
  batchSize: number;
  lr: number;
  maxLen: number;
  seed: number;
  json: boolean;
}

const DEFAULTS: DemoOptions = { dataDir: 'data/sample', dataset: 'Beauty', epochs: 20, dim: 64, batchSize: 256, lr: 3e-3, maxLen: 50, seed: 42, json: false };

function parseArgs(argv: string[]): DemoOptions {
  const o = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`demo: ${a} needs a value`);
      return v;
    };
    const num = (name: string, v: string, min: number): number => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < min) throw new Error(`demo: ${name} must be a number >= ${min}, got '${v}'`);
      return n;
    };
    switch (a) {
      case '--data-dir': o.dataDir = val(); break;
      case '--dataset': o.dataset = val(); break;
      case '--epochs': o.epochs = Math.trunc(num(a, val(), 0)); break;
      case '--dim': o.dim = Math.trunc(num(a, val(), 1)); break;
      case '--batch-size': o.batchSize = Math.trunc(num(a, val(), 1)); break;
      case '--lr': o.lr = num(a, val(), 0); break;
      case '--max-len': o.maxLen = Math.trunc(num(a, val(), 1)); break;
      case '--seed': o.seed = Math.trunc(num(a, val(), 0)); break;
      case '--json': o.json = true; break;
      case '--help': case '-h':
        console.log(`usage: seqrec demo [--data-dir ${DEFAULTS.dataDir}] [--dataset ${DEFAULTS.dataset}] [--epochs ${DEFAULTS.epochs}] [--dim ${DEFAULTS.dim}]
                   [--batch-size ${DEFAULTS.batchSize}] [--lr ${DEFAULTS.lr}] [--max-len ${DEFAULTS.maxLen}] [--seed ${DEFAULTS.seed}] [--json]`);
        process.exit(0);
      default:
        throw new Error(`demo: unknown option '${a}' (seqrec demo --help)`);
    }
  }
  return o;
}

/** Training samples: every (prefix -> next item) of items[:-2] (valid and test items held out). */
function trainSamples(ds: S3RecDataset): { user: Int32Array; end: Int32Array } {
  const user: number[] = [];
  const end: number[] = [];
  ds.sequences.forEach((seq, u) => {
    for (let t = 1; t <= seq.length - 3; t++) {
      user.push(u);
      end.push(t); // input = seq[max(0, t-L) .. t), target = seq[t]
    }
  });
  return { user: Int32Array.from(user), end: Int32Array.from(end) };
}

interface GpuBatch {
  ids: Tensor;
  mask: Tensor;
  count: Tensor;
  pos: Tensor;
  neg: Tensor;
  hostIds: Int32Array;
}

function disposeBatch(b: GpuBatch): void {
  for (const t of [b.ids, b.mask, b.count, b.pos, b.neg]) t.dispose();
}

async function evaluate(model: MeanPoolRec, ds: S3RecDataset, stage: EvalStage, L: number): Promise<{ sampled: Record<string, number>; full: Record<string, number> }> {
  const sampled = new MetricAccumulator();
  const full = new MetricAccumulator();
  const U = ds.sequences.length;
  const C = ds.sampleCount + 1;
  for (let start = 0; start < U; start += 256) {
    const users = Array.from({ length: Math.min(256, U - start) }, (_, i) => start + i);
    const inputs = users.map((u) => s3recEvalExample(ds.sequences[u]!, stage));
    const { ids, lengths } = leftPad(inputs.map((x) => x.input), L);
    const { mask, count } = poolInputs(ids, lengths, L);
    const B = users.length;
    const cands = new Int32Array(B * C);
    users.forEach((u, b) => {
      cands[b * C] = inputs[b]!.answer;
      cands.set(ds.sampleNegatives!.subarray(u * ds.sampleCount, (u + 1) * ds.sampleCount), b * C + 1);
    });
    const offsets = new Int32Array(B + 1);
    inputs.forEach((x, b) => (offsets[b + 1] = offsets[b]! + x.history.length));
    const items = new Int32Array(offsets[B]!);
    inputs.forEach((x, b) => items.set(x.history, offsets[b]!));
    const { scores, rank } = noGrad(() =>
      scope(() => {
        const h = model.forward(Tensor.from(ids, [B, L]), Tensor.from(mask, [B, L, 1]), Tensor.from(count, [B, 1])); // [B, D]
        const s = model.scoreCandidates(h, Tensor.from(cands, [B, C])); // [B, C]
        const top = topkScores({
          mode: 'dot', query: h, table: model.itemEmbeddings, k: 20,
          exclude: { offsets, items }, excludeIds: [0, ds.maskId], answer: inputs.map((x) => x.answer),
        });
        top.ids.dispose();
        top.scores.dispose();
        return { scores: s, rank: top.rank! };
      }),
    );
    sampled.addRanks(sampledRanks(await scores.toArray(), B, C));
    full.addRanks(await rank.toArray(), FULL_METRICS);
    scores.dispose();
    rank.dispose();
  }
  return { sampled: sampled.means(), full: full.means() };
}

/** Popularity baseline: items ranked by their count in the training part of all sequences. */
function popularity(ds: S3RecDataset, stage: EvalStage): { sampled: Record<string, number>; full: Record<string, number> } {
  const counts = new Float64Array(ds.itemSize);
  for (const seq of ds.sequences) for (let i = 0; i < seq.length - 2; i++) counts[seq[i]!]!++;
  const sampled = new MetricAccumulator();
  const full = new MetricAccumulator();
  const C = ds.sampleCount + 1;
  ds.sequences.forEach((seq, u) => {
    const { answer, history } = s3recEvalExample(seq, stage);
    const sc = new Float32Array(C);
    sc[0] = counts[answer]!;
    for (let j = 0; j < ds.sampleCount; j++) sc[j + 1] = counts[ds.sampleNegatives![u * ds.sampleCount + j]!]!;
    sampled.addRanks(sampledRanks(sc, 1, C));
    const hist = new Set(history);
    let rank = 0;
    for (let i = 1; i < ds.maskId; i++) {
      if (hist.has(i) || i === answer) continue;
      if (counts[i]! > counts[answer]! || (counts[i] === counts[answer] && i < answer)) rank++;
    }
    full.addRanks([rank], FULL_METRICS);
  });
  return { sampled: sampled.means(), full: full.means() };
}

function progress(epoch: number, epochs: number, loss: number, ms: number): void {
  const width = 24;
  const done = Math.round((width * epoch) / Math.max(1, epochs));
  process.stderr.write(`\repoch ${String(epoch).padStart(3)}/${epochs} [${'#'.repeat(done)}${'.'.repeat(width - done)}] loss ${loss.toFixed(4)}  ${ms.toFixed(0)} ms/epoch   `);
}

export async function runDemo(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  let ds: S3RecDataset;
  try {
    ds = await loadS3RecDataset(o.dataDir, o.dataset, { sample: 'require' });
  } catch (e) {
    if (isDataError(e)) {
      console.error(`seqrec demo: ${e.message}`);
      return 1;
    }
    throw e;
  }
  await initGpu();
  manualSeed(o.seed);
  const model = new MeanPoolRec({ itemSize: ds.itemSize, dim: o.dim });
  const opt = new Adam(model, { lr: o.lr });
  const L = o.maxLen;
  const { user, end } = trainSamples(ds);
  const rng = new Rng(o.seed);
  const exclude = new ItemSet(ds.itemSize);
  if (!o.json) console.error(`data: ${ds.sequences.length} users, ${ds.numItems} items, ${user.length} training samples (${ds.files.sequences})`);

  const before = await evaluate(model, ds, 'test', L);
  const lossSum = zeros([]); // summed on the GPU, read once per epoch
  let lastLoss = NaN;
  for (let epoch = 1; epoch <= o.epochs; epoch++) {
    const t0 = performance.now();
    let steps = 0;
    const batches = prefetch(
      batchIndices(epochOrder(user.length, o.seed, epoch), o.batchSize),
      (idx): GpuBatch => {
        const B = idx.length;
        const seqs = Array.from(idx, (k) => ds.sequences[user[k]!]!.subarray(Math.max(0, end[k]! - L), end[k]!));
        const { ids, lengths } = leftPad(seqs, L);
        const { mask, count } = poolInputs(ids, lengths, L);
        const pos = new Int32Array(B);
        const neg = new Int32Array(B);
        idx.forEach((k, b) => {
          const seq = ds.sequences[user[k]!]!;
          pos[b] = seq[end[k]!]!;
          neg[b] = negSample(rng, exclude.reset(seq), ds.itemSize);
        });
        return {
          ids: Tensor.from(ids, [B, L]), mask: Tensor.from(mask, [B, L, 1]), count: Tensor.from(count, [B, 1]),
          pos: Tensor.from(pos, [B]), neg: Tensor.from(neg, [B]), hostIds: ids,
        };
      },
      disposeBatch,
    );
    lossSum.write(new Float32Array([0]));
    for (const b of batches) {
      const loss = scope(() => {
        const h = model.forward(b.ids, b.mask, b.count, b.hostIds); // [B, D]
        return bceNegSampling(h, model.itemEmbeddings, b.pos, b.neg); // []
      });
      backward(loss);
      opt.step();
      opt.zeroGrad();
      accumulateInPlace(lossSum, loss);
      loss.dispose();
      steps++;
      batches.prepareNext(); // next batch built and uploaded while the GPU runs this step
      rt().queue.flush();
      disposeBatch(b);
    }
    lastLoss = (await lossSum.item()) / Math.max(1, steps);
    if (!o.json) progress(epoch, o.epochs, lastLoss, performance.now() - t0);
  }
  if (!o.json && o.epochs > 0) process.stderr.write('\n');
  await sync();
  const valid = await evaluate(model, ds, 'valid', L);
  const test = await evaluate(model, ds, 'test', L);
  const pop = popularity(ds, 'test');
  const rows = [
    { name: 'popularity (test)', metrics: { ...pop.sampled, ...prefixed(pop.full) } },
    { name: 'untrained (test)', metrics: { ...before.sampled, ...prefixed(before.full) } },
    { name: `trained (valid)`, metrics: { ...valid.sampled, ...prefixed(valid.full) } },
    { name: `trained (test)`, metrics: { ...test.sampled, ...prefixed(test.full) } },
  ];
  if (o.json) {
    console.log(JSON.stringify({ dataset: o.dataset, epochs: o.epochs, loss: lastLoss, rows }, null, 2));
  } else {
    console.log(`\nMean-pool next-item model on ${o.dataset} (${ds.sequences.length} users), ${o.epochs} epochs, final train loss ${lastLoss.toFixed(4)}`);
    console.log('sampled protocol: answer + 99 negatives; full@K: all items ranked on the GPU, history excluded\n');
    console.log(formatMetricsTable(rows, { title: 'model' }));
  }
  opt.dispose();
  model.dispose();
  lossSum.dispose();
  await destroyGpu();
  return 0;
}

function prefixed(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) if (k === 'HR@10' || k === 'NDCG@10' || k === 'HR@20') out[`full ${k}`] = v;
  return out;
}
