// Dataset statistics for `seqrec data stats` (the columns of S3REC_SPEC §8: users, items, interactions,
// mean / median / min / max sequence length, attributes, attributes per item, users longer than
// max_seq_length). Computed from the same loaded objects the training code uses.

import type { S3RecDataset } from './s3rec.js';
import type { AttRecSplit, SequenceDataset } from './interactions.js';

export type DatasetFormat = 's3rec' | 'interactions' | 'attrec-split';

export interface DatasetStats {
  dataset: string;
  format: DatasetFormat;
  users: number;
  /** Distinct item ids that occur. */
  items: number;
  /** Distinct attribute ids that occur (0 for formats without attributes). */
  attributes: number;
  interactions: number;
  meanLength: number;
  /** numpy-style median (mean of the two middle values for an even count). */
  medianLength: number;
  minLength: number;
  maxLength: number;
  /** The max_seq_length the next field refers to (50 by default). */
  maxSeqLength: number;
  usersLongerThanMaxLength: number;
  maxItemId: number;
  /** S3-Rec only: maxItem + 2, maxAttribute, maxAttribute + 1, mean attribute-list length per item. */
  itemSize?: number;
  maxAttributeId?: number;
  attributeSize?: number;
  attributesPerItem?: number;
  /** S3-Rec only: negatives per user in the validated sample file, or null when there is none. */
  sampleNegatives?: number | null;
  /** AttRec split only: items seen in train.dat and test items never seen in training. */
  trainItems?: number;
  unseenTestItems?: number;
}

/** Length statistics of a list of sequences. */
export function sequenceStats(sequences: readonly ArrayLike<number>[], maxSeqLength = 50) {
  const U = sequences.length;
  const lens = new Int32Array(U);
  let interactions = 0;
  let maxItemId = 0;
  const seen = new Set<number>();
  let longer = 0;
  sequences.forEach((s, u) => {
    lens[u] = s.length;
    interactions += s.length;
    if (s.length > maxSeqLength) longer++;
    for (let i = 0; i < s.length; i++) {
      const v = s[i]!;
      seen.add(v);
      if (v > maxItemId) maxItemId = v;
    }
  });
  const sorted = lens.slice().sort();
  const median = U === 0 ? 0 : U % 2 === 1 ? sorted[(U - 1) / 2]! : (sorted[U / 2 - 1]! + sorted[U / 2]!) / 2;
  return {
    users: U,
    items: seen.size,
    interactions,
    meanLength: U === 0 ? 0 : interactions / U,
    medianLength: median,
    minLength: U === 0 ? 0 : sorted[0]!,
    maxLength: U === 0 ? 0 : sorted[U - 1]!,
    maxSeqLength,
    usersLongerThanMaxLength: longer,
    maxItemId,
  };
}

export function s3recStats(ds: S3RecDataset, maxSeqLength = 50): DatasetStats {
  const base = sequenceStats(ds.sequences, maxSeqLength);
  let listTotal = 0;
  let withEntry = 0;
  const present = new Uint8Array(ds.maxItem + 1);
  for (const s of ds.sequences) for (let i = 0; i < s.length; i++) present[s[i]!] = 1;
  for (let item = 1; item <= ds.maxItem; item++) {
    if (!present[item]) continue;
    withEntry++;
    listTotal += ds.attributes.attributes[item]?.length ?? 0;
  }
  return {
    dataset: ds.name,
    format: 's3rec',
    ...base,
    attributes: ds.attributes.numAttributes,
    itemSize: ds.itemSize,
    maxAttributeId: ds.attributes.maxAttribute,
    attributeSize: ds.attributes.attributeSize,
    attributesPerItem: withEntry === 0 ? 0 : listTotal / withEntry,
    sampleNegatives: ds.sampleNegatives ? ds.sampleCount : null,
  };
}

export function interactionStats(name: string, log: SequenceDataset, maxSeqLength = 50): DatasetStats {
  return { dataset: name, format: 'interactions', ...sequenceStats(log.sequences, maxSeqLength), attributes: 0 };
}

/** Stats of an AttRec split over each user's full history (training items + the test item). */
export function attrecSplitStats(name: string, split: AttRecSplit, maxSeqLength = 50): DatasetStats {
  const full = split.sequences.map((s, u) => {
    const f = new Int32Array(s.length + 1);
    f.set(s);
    f[s.length] = split.testItems[u]!;
    return f;
  });
  return {
    dataset: name,
    format: 'attrec-split',
    ...sequenceStats(full, maxSeqLength),
    attributes: 0,
    trainItems: split.numTrainItems,
    unseenTestItems: split.unseenTestItems,
  };
}

const int = (n: number): string => n.toLocaleString('en-US');
const fix = (n: number, d = 2): string => (Number.isInteger(n) ? String(n) : n.toFixed(d));

/** Human-readable stats (the non-JSON output of `seqrec data stats`). */
export function formatStats(s: DatasetStats): string {
  const rows: [string, string][] = [
    ['dataset', `${s.dataset} (${s.format})`],
    ['users', int(s.users)],
    ['items', `${int(s.items)} (max id ${s.maxItemId}${s.itemSize !== undefined ? `, item_size ${s.itemSize}` : ''}${s.trainItems !== undefined ? `, ${s.trainItems} in train, ${s.unseenTestItems} only in test` : ''})`],
    ['attributes', s.attributeSize !== undefined ? `${int(s.attributes)} (max id ${s.maxAttributeId}, attribute_size ${s.attributeSize}, ${fix(s.attributesPerItem ?? 0)} per item)` : int(s.attributes)],
    ['interactions', int(s.interactions)],
    ['length', `mean ${fix(s.meanLength)}, median ${fix(s.medianLength, 1)}, min ${s.minLength}, max ${s.maxLength}`],
    [`length > ${s.maxSeqLength}`, `${int(s.usersLongerThanMaxLength)} users`],
  ];
  if (s.sampleNegatives !== undefined) rows.push(['sample file', s.sampleNegatives === null ? 'none' : `${s.sampleNegatives} negatives per user (validated)`]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}
