/**
 * A small dependency-free SVG writer: line charts (per-epoch curves), grouped bar charts (benchmarks) and a
 * panel stacker. The output is a standalone SVG 1.1 document (xmlns, no scripts, no external resources) that a
 * browser or an image viewer opens directly. All text is XML-escaped.
 */
import { constants as fsc, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { access, mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { UsageError } from './args.js';
import { writeFileAtomic } from '../models/data/io.js';

export interface Series { name: string; points: Array<[number, number]> } // [x, y]; y may be NaN/null-skipped
export interface LineChart { title: string; xLabel: string; yLabel: string; series: Series[]; logY?: boolean }
export interface BarGroup { label: string; bars: Array<{ name: string; value: number | null }> }
export interface BarChart { title: string; yLabel: string; groups: BarGroup[]; logY?: boolean }

/** Distinct colours (Okabe–Ito plus a few), cycled. */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442', '#7F3C8D', '#8C564B'];

export function colour(i: number): string { return PALETTE[i % PALETTE.length]!; }

/** XML-escape text for element content and attribute values. Also drops characters XML 1.0 forbids. */
export function xmlEscape(s: string): string {
  return String(s)
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Compact number formatting for tick labels and values. */
export function fmtNum(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(1).replace('e+', 'e');
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

/** Coordinate formatting: 2 decimals are enough for a screen. */
function c(v: number): string { return String(Math.round(v * 100) / 100); }

/** "Nice" step (1, 2, 2.5, 5 × 10^k) so that [lo, hi] gets about `target` ticks. */
export function niceStep(span: number, target = 5): number {
  if (!(span > 0) || !Number.isFinite(span)) return 1;
  const raw = span / Math.max(1, target);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  const m = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return m * mag;
}

/** Linear ticks: the domain is widened to multiples of the nice step. */
export function niceTicks(lo: number, hi: number, target = 5): { lo: number; hi: number; ticks: number[] } {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new Error(`plot: non-finite axis range [${lo}, ${hi}]`);
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const d = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= d; hi += d;
  }
  const step = niceStep(hi - lo, target);
  const nlo = Math.floor(lo / step + 1e-9) * step;
  const nhi = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; ; i++) {
    const t = nlo + i * step;
    if (t > nhi + step * 1e-6) break;
    ticks.push(Number(t.toPrecision(12)));
  }
  return { lo: nlo, hi: nhi, ticks };
}

/** Log ticks over positive values: powers of ten, or 1-2-5 steps when the range spans at most two decades. */
export function logTicks(lo: number, hi: number): { lo: number; hi: number; ticks: number[] } {
  if (!(lo > 0) || !(hi > 0) || !Number.isFinite(lo) || !Number.isFinite(hi)) throw new Error(`plot: log axis needs positive finite values, got [${lo}, ${hi}]`);
  if (hi < lo) [lo, hi] = [hi, lo];
  const elo = Math.floor(Math.log10(lo) + 1e-9);
  let ehi = Math.ceil(Math.log10(hi) - 1e-9);
  if (ehi === elo) ehi = elo + 1;
  if (ehi - elo > 2) {
    const ticks: number[] = [];
    for (let e = elo; e <= ehi; e++) ticks.push(Number(Math.pow(10, e).toPrecision(12)));
    return { lo: ticks[0]!, hi: ticks[ticks.length - 1]!, ticks };
  }
  // 1-2-5 ticks: those inside the data plus the nearest one on each side.
  const all: number[] = [];
  for (let e = elo; e <= ehi; e++) for (const m of [1, 2, 5]) all.push(Number((m * Math.pow(10, e)).toPrecision(12)));
  const eps = 1.0001;
  const below = all.filter((t) => t <= lo * eps).pop() ?? all[0]!;
  const above = all.find((t) => t >= hi / eps) ?? all[all.length - 1]!;
  const ticks = all.filter((t) => t >= below && t <= above);
  return { lo: below, hi: above, ticks };
}

interface Frame { width: number; height: number; left: number; right: number; top: number; bottom: number }

function header(width: number, height: number): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">\n`
    + `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>\n`;
}

function titleAndLabels(f: Frame, title: string, xLabel: string | null, yLabel: string): string {
  const cx = (f.left + f.width - f.right) / 2;
  const cy = (f.top + f.height - f.bottom) / 2;
  let s = `<text x="${c(f.width / 2)}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${xmlEscape(title)}</text>\n`;
  if (xLabel !== null) s += `<text x="${c(cx)}" y="${c(f.height - 8)}" text-anchor="middle">${xmlEscape(xLabel)}</text>\n`;
  s += `<text x="14" y="${c(cy)}" text-anchor="middle" transform="rotate(-90 14 ${c(cy)})">${xmlEscape(yLabel)}</text>\n`;
  return s;
}

function yAxis(f: Frame, ticks: number[], map: (v: number) => number): string {
  const x0 = f.left, x1 = f.width - f.right;
  let s = '<g stroke="#dddddd" stroke-width="1">\n';
  for (const t of ticks) s += `<line x1="${c(x0)}" y1="${c(map(t))}" x2="${c(x1)}" y2="${c(map(t))}"/>\n`;
  s += '</g>\n<g text-anchor="end" fill="#333333">\n';
  for (const t of ticks) s += `<text x="${c(x0 - 6)}" y="${c(map(t) + 4)}">${xmlEscape(fmtNum(t))}</text>\n`;
  s += '</g>\n';
  s += `<line x1="${c(x0)}" y1="${c(f.top)}" x2="${c(x0)}" y2="${c(f.height - f.bottom)}" stroke="#333333"/>\n`;
  s += `<line x1="${c(x0)}" y1="${c(f.height - f.bottom)}" x2="${c(x1)}" y2="${c(f.height - f.bottom)}" stroke="#333333"/>\n`;
  return s;
}

/** Width of the legend box for these names. */
function legendWidth(names: string[]): number {
  if (names.length === 0) return 0;
  return Math.min(240, 38 + Math.max(...names.map((n) => n.length)) * 7.4);
}

/** Legend to the right of the plot area (the frame's right margin reserves its width); one row per name. */
function legend(f: Frame, names: string[], kind: 'line' | 'bar'): string {
  if (names.length === 0) return '';
  const w = legendWidth(names);
  const h = 8 + names.length * 16;
  const x = f.width - w - 6;
  const y = f.top;
  let s = `<g class="legend">\n<rect x="${c(x)}" y="${c(y)}" width="${c(w)}" height="${h}" fill="#ffffff" stroke="#bbbbbb"/>\n`;
  names.forEach((n, i) => {
    const ly = y + 12 + i * 16;
    s += kind === 'line'
      ? `<line x1="${c(x + 6)}" y1="${c(ly)}" x2="${c(x + 24)}" y2="${c(ly)}" stroke="${colour(i)}" stroke-width="2.5"/>\n`
      : `<rect x="${c(x + 8)}" y="${c(ly - 5)}" width="12" height="10" fill="${colour(i)}"/>\n`;
    s += `<text x="${c(x + 30)}" y="${c(ly + 4)}">${xmlEscape(n)}</text>\n`;
  });
  return s + '</g>\n';
}

function usable(y: number | null | undefined, logY: boolean): y is number {
  return typeof y === 'number' && Number.isFinite(y) && (!logY || y > 0);
}

/**
 * Line chart: one polyline per series, a marker per point. Points whose y is NaN/null/±Inf (or ≤ 0 on a log axis)
 * are skipped and break the line there. Throws if there is nothing to draw.
 */
export function lineChartSvg(ch: LineChart, opts: { width?: number; height?: number } = {}): string {
  const logY = ch.logY === true;
  const width = opts.width ?? 640, height = opts.height ?? 360;
  if (ch.series.length === 0) throw new Error(`plot: chart "${ch.title}" has no series`);
  const names = ch.series.map((x) => x.name);
  const f: Frame = { width, height, left: 64, right: 16 + legendWidth(names), top: 34, bottom: 44 };
  const xs: number[] = [], ys: number[] = [];
  for (const s of ch.series) for (const [x, y] of s.points) {
    if (Number.isFinite(x) && usable(y, logY)) { xs.push(x); ys.push(y); }
  }
  if (ys.length === 0) {
    throw new Error(`plot: chart "${ch.title}" has no finite points to draw (series: ${ch.series.map((s) => s.name).join(', ')})`);
  }
  // x: the data range itself (no widening), ticks at nice steps inside it; integer x (epochs): integer ticks.
  let xlo = Math.min(...xs), xhi = Math.max(...xs);
  if (xhi === xlo) { xlo -= 1; xhi += 1; }
  let xstep = niceStep(xhi - xlo, Math.max(2, Math.min(10, Math.round((width - 80) / 70))));
  if (xs.every(Number.isInteger)) xstep = Math.max(1, Math.round(xstep));
  const xticks: number[] = [];
  for (let t = Math.ceil(xlo / xstep - 1e-9) * xstep; t <= xhi + xstep * 1e-9; t += xstep) xticks.push(Number(t.toPrecision(12)));
  const xt = { lo: xlo, hi: xhi };
  const yt = logY ? logTicks(Math.min(...ys), Math.max(...ys)) : niceTicks(Math.min(...ys), Math.max(...ys), 5);
  const px0 = f.left, px1 = width - f.right, py0 = height - f.bottom, py1 = f.top;
  const pad = 8; // markers at the ends stay clear of the axes
  const mapX = (x: number): number => px0 + pad + ((x - xt.lo) / (xt.hi - xt.lo)) * (px1 - px0 - 2 * pad);
  const mapY = logY
    ? (y: number): number => py0 - ((Math.log10(y) - Math.log10(yt.lo)) / (Math.log10(yt.hi) - Math.log10(yt.lo))) * (py0 - py1)
    : (y: number): number => py0 - ((y - yt.lo) / (yt.hi - yt.lo)) * (py0 - py1);

  let s = header(width, height);
  s += titleAndLabels(f, ch.title, ch.xLabel, ch.yLabel + (logY ? ' (log)' : ''));
  s += yAxis(f, yt.ticks, mapY);
  s += '<g text-anchor="middle" fill="#333333">\n';
  for (const t of xticks) {
    s += `<line x1="${c(mapX(t))}" y1="${c(py0)}" x2="${c(mapX(t))}" y2="${c(py0 + 4)}" stroke="#333333"/>\n`;
    s += `<text x="${c(mapX(t))}" y="${c(py0 + 17)}">${xmlEscape(fmtNum(t))}</text>\n`;
  }
  s += '</g>\n';
  ch.series.forEach((ser, i) => {
    const col = colour(i);
    s += `<g class="series" data-name="${xmlEscape(ser.name)}" stroke="${col}" fill="${col}">\n`;
    let run: string[] = [];
    const flush = (): void => {
      if (run.length > 1) s += `<polyline fill="none" stroke-width="2" points="${run.join(' ')}"/>\n`;
      run = [];
    };
    const marks: string[] = [];
    for (const [x, y] of ser.points) {
      if (!Number.isFinite(x) || !usable(y, logY)) { flush(); continue; }
      const X = c(mapX(x)), Y = c(mapY(y));
      run.push(`${X},${Y}`);
      marks.push(`<circle class="pt" cx="${X}" cy="${Y}" r="2.5"><title>${xmlEscape(`${ser.name} @ ${fmtNum(x)}: ${fmtNum(y)}`)}</title></circle>\n`);
    }
    flush();
    s += marks.join('');
    s += '</g>\n';
  });
  s += legend(f, names, 'line');
  return s + '</svg>\n';
}

/**
 * Grouped bar chart: one group per label along x, one bar per name inside a group (colour by name, consistent
 * across groups). Null/NaN values (or ≤ 0 on a log axis) leave an empty slot marked "n/a".
 */
export function groupedBarSvg(ch: BarChart, opts: { width?: number; height?: number } = {}): string {
  const logY = ch.logY === true;
  if (ch.groups.length === 0) throw new Error(`plot: bar chart "${ch.title}" has no groups`);
  const names: string[] = [];
  for (const g of ch.groups) for (const b of g.bars) if (!names.includes(b.name)) names.push(b.name);
  if (names.length === 0) throw new Error(`plot: bar chart "${ch.title}" has no bars`);
  const vals: number[] = [];
  for (const g of ch.groups) for (const b of g.bars) if (usable(b.value, logY)) vals.push(b.value);
  if (vals.length === 0) throw new Error(`plot: bar chart "${ch.title}" has no finite values to draw`);
  const width = opts.width ?? Math.max(480, 90 + legendWidth(names) + ch.groups.length * (names.length * 18 + 24));
  const height = opts.height ?? 380;
  const longestLabel = Math.max(...ch.groups.map((g) => g.label.length));
  const slot0 = (width - 80 - legendWidth(names)) / ch.groups.length;
  const rotate = longestLabel * 6.5 > slot0;
  const f: Frame = { width, height, left: 64, right: 16 + legendWidth(names), top: 34, bottom: rotate ? Math.min(140, 24 + longestLabel * 5) : 44 };
  let yt: { lo: number; hi: number; ticks: number[] };
  if (logY) yt = logTicks(Math.min(...vals), Math.max(...vals));
  else {
    yt = niceTicks(Math.min(0, ...vals), Math.max(0, ...vals), 5);
  }
  const py0 = height - f.bottom, py1 = f.top, px0 = f.left, px1 = width - f.right;
  const mapY = logY
    ? (y: number): number => py0 - ((Math.log10(y) - Math.log10(yt.lo)) / (Math.log10(yt.hi) - Math.log10(yt.lo))) * (py0 - py1)
    : (y: number): number => py0 - ((y - yt.lo) / (yt.hi - yt.lo)) * (py0 - py1);
  const base = logY ? py0 : mapY(0);
  const slot = (px1 - px0) / ch.groups.length;
  const barW = Math.max(2, (slot * 0.8) / names.length);

  let s = header(width, height);
  s += titleAndLabels(f, ch.title, null, ch.yLabel + (logY ? ' (log)' : ''));
  s += yAxis(f, yt.ticks, mapY);
  ch.groups.forEach((g, gi) => {
    const gx = px0 + gi * slot + slot * 0.1;
    s += `<g class="group" data-label="${xmlEscape(g.label)}">\n`;
    names.forEach((n, ni) => {
      const b = g.bars.find((x) => x.name === n);
      const x = gx + ni * barW;
      if (b === undefined) return;
      if (!usable(b.value, logY)) {
        s += `<text x="${c(x + barW / 2)}" y="${c(base - 3)}" text-anchor="middle" font-size="8" fill="#999999">n/a</text>\n`;
        return;
      }
      const y = mapY(b.value);
      const top = Math.min(y, base), h = Math.abs(base - y);
      s += `<rect class="bar" x="${c(x)}" y="${c(top)}" width="${c(barW * 0.92)}" height="${c(h)}" fill="${colour(ni)}"><title>${xmlEscape(`${g.label} / ${n}: ${fmtNum(b.value)}`)}</title></rect>\n`;
    });
    const lx = px0 + gi * slot + slot / 2;
    s += rotate
      ? `<text x="${c(lx)}" y="${c(py0 + 12)}" text-anchor="end" transform="rotate(-35 ${c(lx)} ${c(py0 + 12)})">${xmlEscape(g.label)}</text>\n`
      : `<text x="${c(lx)}" y="${c(py0 + 17)}" text-anchor="middle">${xmlEscape(g.label)}</text>\n`;
    s += '</g>\n';
  });
  s += legend(f, names, 'bar');
  return s + '</svg>\n';
}

function svgSize(svg: string): { w: number; h: number } {
  const m = /<svg\b[^>]*>/.exec(svg);
  if (!m) throw new Error('plot: stackSvg panel is not an SVG document');
  const w = /\bwidth="([\d.]+)"/.exec(m[0]);
  const h = /\bheight="([\d.]+)"/.exec(m[0]);
  if (!w || !h) throw new Error('plot: stackSvg panel lacks width/height');
  return { w: Number(w[1]), h: Number(h[1]) };
}

/** Several charts stacked in one SVG (panels), each chart an SVG string from the functions above. */
export function stackSvg(panels: string[], opts: { columns?: number } = {}): string {
  if (panels.length === 0) throw new Error('plot: stackSvg needs at least one panel');
  const cols = Math.max(1, Math.min(panels.length, Math.floor(opts.columns ?? 1)));
  const sizes = panels.map(svgSize);
  const rows = Math.ceil(panels.length / cols);
  const colW: number[] = new Array(cols).fill(0);
  const rowH: number[] = new Array(rows).fill(0);
  sizes.forEach((sz, i) => {
    colW[i % cols] = Math.max(colW[i % cols]!, sz.w);
    rowH[Math.floor(i / cols)] = Math.max(rowH[Math.floor(i / cols)]!, sz.h);
  });
  const W = colW.reduce((a, b) => a + b, 0), H = rowH.reduce((a, b) => a + b, 0);
  let s = `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">\n`;
  s += `<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>\n`;
  panels.forEach((p, i) => {
    const col = i % cols, row = Math.floor(i / cols);
    const x = colW.slice(0, col).reduce((a, b) => a + b, 0);
    const y = rowH.slice(0, row).reduce((a, b) => a + b, 0);
    // Nested <svg> with x/y positions the panel; strip any XML declaration.
    const inner = p.replace(/^\s*<\?xml[^>]*\?>\s*/, '').replace(/<svg\b/, `<svg x="${x}" y="${y}"`);
    s += inner.endsWith('\n') ? inner : inner + '\n';
  });
  return s + '</svg>\n';
}

const tmpName = (file: string): string => `${file}.${process.pid}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`;

/** Atomic write (the data layer's writeFileAtomic: temp file next to the target, then rename); creates the directory. */
export async function writeSvg(file: string, svg: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  await writeFileAtomic(file, svg, { force: true });
}

/** writeSvg, synchronous (for per-epoch hooks inside a training loop). */
export function writeSvgSync(file: string, svg: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = tmpName(file);
  try {
    writeFileSync(tmp, svg, 'utf8');
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

// ------------------------------------------------------------------------------------------ training curves (--plot)
/** One per-epoch record as the training loops report it (models/run.ts EpochRecord; a log.jsonl line). */
export type EpochRow = { epoch: number } & Record<string, unknown>;

const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
const metricKeys = (recs: readonly EpochRow[], field: string): string[] => {
  const keys: string[] = [];
  for (const r of recs) {
    const m = r[field];
    if (m && typeof m === 'object') for (const k of Object.keys(m)) if (!keys.includes(k)) keys.push(k);
  }
  return keys;
};
const metricSeries = (recs: readonly EpochRow[], field: string, keys: string[], prefix = ''): Series[] =>
  keys.map((k) => ({ name: `${prefix}${k}`, points: recs.map((r) => [r.epoch, num((r[field] as Record<string, unknown> | undefined)?.[k])] as [number, number]) }));
const scalarSeries = (recs: readonly EpochRow[], key: string, name = key): Series => ({ name, points: recs.map((r) => [r.epoch, num(r[key])] as [number, number]) });

const PANEL = { width: 560, height: 320 };

/** `seqrec finetune`: the training loss and every validation metric of the run's protocol, per epoch. */
export function finetuneCurvesSvg(recs: readonly EpochRow[], title: string, protocol: string): string {
  const keys = metricKeys(recs, 'valid');
  return stackSvg([
    lineChartSvg({ title: `${title}: training loss`, xLabel: 'epoch', yLabel: 'loss', series: [scalarSeries(recs, 'loss')] }, PANEL),
    lineChartSvg({ title: `${title}: validation (${protocol} protocol)`, xLabel: 'epoch', yLabel: 'metric', series: metricSeries(recs, 'valid', keys) }, PANEL),
  ], { columns: 2 });
}

export const PRETRAIN_LOSSES = ['aap', 'mip', 'map', 'sp', 'total'] as const;

/** `seqrec pretrain`: one panel per loss (AAP, MIP, MAP, SP, total), per epoch. */
export function pretrainCurvesSvg(recs: readonly EpochRow[], title: string): string {
  return stackSvg(
    PRETRAIN_LOSSES.map((k) => lineChartSvg({ title: `${title}: ${k === 'total' ? 'total loss' : `${k.toUpperCase()} loss`}`, xLabel: 'epoch', yLabel: 'loss', series: [scalarSeries(recs, k, k.toUpperCase())] }, { width: 420, height: 280 })),
    { columns: 3 },
  );
}

/** `seqrec train --model attrec`: the training loss and the validation HR@50, MRR, AUC (test under the authors' protocol). */
export function attrecCurvesSvg(recs: readonly EpochRow[], title: string): string {
  const hasValid = recs.some((r) => r.valid !== undefined);
  const field = hasValid ? 'valid' : 'test';
  const keys = metricKeys(recs, field);
  return stackSvg([
    lineChartSvg({ title: `${title}: training loss`, xLabel: 'epoch', yLabel: 'loss', series: [scalarSeries(recs, 'loss')] }, PANEL),
    lineChartSvg({ title: `${title}: ${hasValid ? 'validation' : "test (authors' protocol)"}`, xLabel: 'epoch', yLabel: 'metric', series: metricSeries(recs, field, keys) }, PANEL),
  ], { columns: 2 });
}

/** Parse a run's log.jsonl (one EpochRecord per line); lines that are not records are skipped. */
export function parseLogJsonl(text: string): EpochRow[] {
  const out: EpochRow[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line, (k, v: unknown) => (k === '__proto__' ? undefined : v)) as unknown;
      if (r && typeof r === 'object' && typeof (r as EpochRow).epoch === 'number') out.push(r as EpochRow);
    } catch {
      // a torn last line (killed mid-append) is not a record
    }
  }
  return out;
}

/**
 * The `--plot FILE` of a training command: collects the per-epoch records and rewrites the SVG after every epoch,
 * so a long run's plot is live and a killed run keeps its curves. The rewrite is synchronous (a few KB, atomic:
 * temp file + rename): a training loop that only awaits its GPU readbacks would otherwise starve the async file
 * operations and the plot would lag epochs behind. With `resumeLog` (a resumed run's log.jsonl, rewritten from
 * the checkpoint before the first new epoch) the epochs before the resume are read from it, so the plot covers the
 * whole run.
 */
export class LivePlot {
  private recs: EpochRow[] = [];
  private loaded = false;
  private plotted = 0;

  constructor(
    readonly file: string,
    private readonly render: (recs: readonly EpochRow[]) => string,
    private readonly opts: { resumeLog?: string; warn?: (msg: string) => void } = {},
  ) {}

  /** Records so far (sorted by epoch). */
  get records(): readonly EpochRow[] {
    return this.recs;
  }

  private loadResumed(): void {
    if (this.loaded) return;
    this.loaded = true;
    if (!this.opts.resumeLog) return;
    let text: string;
    try {
      text = readFileSync(this.opts.resumeLog, 'utf8');
    } catch {
      return;
    }
    const have = new Set(this.recs.map((r) => r.epoch));
    const first = this.recs.length ? Math.min(...this.recs.map((r) => r.epoch)) : Infinity;
    for (const r of parseLogJsonl(text)) if (!have.has(r.epoch) && r.epoch < first) this.recs.push(r);
    this.recs.sort((a, b) => a.epoch - b.epoch);
  }

  /** Rewrite the file from the records; a failure warns (the run's results matter more than its plot). */
  private write(): void {
    try {
      this.loadResumed();
      if (this.recs.length === 0) return;
      writeSvgSync(this.file, this.render(this.recs));
      this.plotted = this.recs.length;
    } catch (e) {
      this.opts.warn?.(`--plot: could not write ${this.file}: ${(e as Error).message}`);
    }
  }

  /** Before training: the file's folder can be created and written, and the path is not a folder (UsageError). */
  async check(cmd: string): Promise<void> {
    const bad = (why: string): never => {
      throw new UsageError(`${cmd}: --plot ${this.file}: ${why}`);
    };
    const st = await stat(this.file).catch(() => null);
    if (st?.isDirectory()) bad('is a folder (give a file name, e.g. curves.svg)');
    const dir = dirname(this.file);
    await mkdir(dir, { recursive: true }).catch((e: Error) => bad(`cannot create its folder (${e.message})`));
    await access(dir, fsc.W_OK).catch(() => bad(`its folder ${dir} is not writable`));
  }

  /** Add one finished epoch (an onEpoch hook) and rewrite the file; a failed write only warns. */
  add(rec: EpochRow): void {
    const copy = JSON.parse(JSON.stringify(rec)) as EpochRow;
    this.recs = this.recs.filter((r) => r.epoch !== copy.epoch);
    this.recs.push(copy);
    this.recs.sort((a, b) => a.epoch - b.epoch);
    this.write();
  }

  /**
   * Write once more (a resumed run with no new epoch still gets its plot). Returns the number of epochs in the
   * file written last (0: nothing to plot, or no write succeeded: each failure warned).
   */
  async close(): Promise<number> {
    this.write();
    return this.plotted;
  }
}
