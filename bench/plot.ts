// `seqrec bench --plot FILE.svg`: one bar group per kernel/shape group that has a composed or tfjs row, bars
// fused vs composed vs tfjs (median ms, log scale), drawn with cli/plot.ts's groupedBarSvg.
import { groupedBarSvg, type BarGroup } from '../cli/plot.js';
import type { BenchResults, BenchRow } from './types.js';

const BARS = ['fused', 'composed', 'tfjs'] as const;
const MAX_LABEL = 44;

const short = (s: string): string => (s.length > MAX_LABEL ? `${s.slice(0, MAX_LABEL - 1)}…` : s);

/** The bar groups: per (row prefix, shape), the first row of each kind fused / composed / tfjs. */
export function benchBarGroups(rows: readonly BenchRow[]): BarGroup[] {
  const groups = new Map<string, { label: string; rows: BenchRow[] }>();
  for (const r of rows) {
    const prefix = r.name.slice(0, r.name.length - r.variant.length - 1);
    const key = `${prefix}|${r.shape}`;
    const g = groups.get(key) ?? { label: short(`${prefix} ${r.shape}`), rows: [] };
    g.rows.push(r);
    groups.set(key, g);
  }
  const out: BarGroup[] = [];
  for (const g of groups.values()) {
    if (!g.rows.some((r) => r.kind === 'composed' || r.kind === 'tfjs')) continue;
    const bars = BARS.map((k) => ({ name: k, value: g.rows.find((r) => r.kind === k)?.ms ?? null })).filter((b) => b.value !== null);
    if (bars.length >= 2) out.push({ label: g.label, bars });
  }
  return out;
}

export function benchPlotSvg(res: BenchResults): string {
  const groups = benchBarGroups(res.rows);
  if (!groups.length) throw new Error('seqrec bench --plot: no group has a fused row beside a composed or tfjs row (filter in a family with peers, e.g. attention)');
  return groupedBarSvg({ title: `seqrec bench: ${res.adapter.slug}, ${res.clock} clock`, yLabel: 'median ms per run', groups, logY: true });
}
