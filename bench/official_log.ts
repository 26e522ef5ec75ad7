// Compare a fine-tuning run's log.jsonl (seqrec finetune --out DIR) with an official S3-Rec fine-tuning log
// (reproduce/Finetune_sample-<name>-<ckp>.txt: a Namespace line, then per epoch a training-loss dict and a
// validation dict, and at the end the test dict): per-epoch differences of the validation metrics and the loss,
// their maxima, and the test metrics side by side when the run's final JSON is given.
//
//   npx tsx bench/official_log.ts RUN/log.jsonl ../shared/data/s3rec/official-logs/Finetune_sample-LastFM-150.txt [--epochs N]
import { readFileSync } from 'node:fs';

const KEYS: Array<[string, string]> = [['HIT@1', 'HR@1'], ['HIT@5', 'HR@5'], ['NDCG@5', 'NDCG@5'], ['HIT@10', 'HR@10'], ['NDCG@10', 'NDCG@10'], ['MRR', 'MRR']];

interface OfficialEpoch {
  loss?: number;
  valid?: Record<string, number>;
}

/** Parse the official log: python dict reprs with quoted numbers. */
export function parseOfficialLog(text: string): { epochs: OfficialEpoch[]; test: Record<string, number> | null } {
  const epochs: OfficialEpoch[] = [];
  const dicts = text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l.replace(/'/g, '"')) as Record<string, string | number>);
  for (const d of dicts) {
    if ('rec_avg_loss' in d) {
      const e = Number(d.epoch);
      (epochs[e] ??= {}).loss = Number(d.rec_avg_loss);
    } else if ('HIT@1' in d) {
      const e = Number(d.Epoch);
      (epochs[e] ??= {}).valid = Object.fromEntries(KEYS.map(([o, ours]) => [ours, Number(d[o])]));
    }
  }
  // The test line repeats 'Epoch': 0 after the training epochs: it is the last HIT dict.
  const last = dicts.filter((d) => 'HIT@1' in d).at(-1);
  const test = last ? Object.fromEntries(KEYS.map(([o, ours]) => [ours, Number(last[o])])) : null;
  // The epoch-0 valid dict was overwritten by the test dict above when it has the same 'Epoch' key: re-read it.
  const firstValid = dicts.find((d) => 'HIT@1' in d);
  if (firstValid && epochs[0]) epochs[0].valid = Object.fromEntries(KEYS.map(([o, ours]) => [ours, Number(firstValid[o])]));
  return { epochs, test };
}

function main(): void {
  const [ours, official, ...rest] = process.argv.slice(2);
  if (!ours || !official) {
    console.error('usage: npx tsx bench/official_log.ts RUN/log.jsonl OFFICIAL_LOG.txt [--epochs N]');
    process.exit(2);
  }
  const limit = rest[0] === '--epochs' ? Number(rest[1]) : Infinity;
  const run = readFileSync(ours, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { epoch: number; loss: number; valid: Record<string, number> });
  const off = parseOfficialLog(readFileSync(official, 'utf8'));
  let maxMetric = 0;
  let maxLoss = 0;
  let n = 0;
  console.log(`epoch  loss (ours / official)   MRR (ours / official)   max |diff| over ${KEYS.map((k) => k[1]).join(', ')}`);
  for (const r of run) {
    const o = off.epochs[r.epoch];
    if (!o?.valid || r.epoch >= limit) continue;
    const d = Math.max(...KEYS.map(([, k]) => Math.abs(r.valid[k]! - o.valid![k]!)));
    const dl = o.loss !== undefined ? Math.abs(r.loss - o.loss) : 0;
    maxMetric = Math.max(maxMetric, d);
    maxLoss = Math.max(maxLoss, dl);
    n++;
    console.log(`${String(r.epoch).padStart(5)}  ${r.loss.toFixed(4)} / ${o.loss?.toFixed(4) ?? '-'}        ${r.valid.MRR!.toFixed(4)} / ${o.valid.MRR!.toFixed(4)}         ${d.toFixed(4)}`);
  }
  console.log(`\n${n} epochs compared: max |diff| of a validation metric ${maxMetric.toFixed(4)}, of the training loss ${maxLoss.toFixed(4)}`);
  if (off.test) console.log(`official test: ${KEYS.map(([, k]) => `${k} ${off.test![k]!.toFixed(4)}`).join('  ')}`);
}

main();
