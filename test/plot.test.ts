// cli/plot.ts: the SVG writer (well-formed standalone XML, coordinates monotone in the data, NaN gaps, escaping,
// errors) and `--plot FILE.svg` on the training commands (one point per epoch per series, resume covers every epoch).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  finetuneCurvesSvg, groupedBarSvg, LivePlot, lineChartSvg, logTicks, niceTicks, parseLogJsonl, pretrainCurvesSvg, stackSvg, writeSvg, xmlEscape,
} from '../cli/plot.js';
import { hasAdapter } from './harness.js';

const SAMPLE = fileURLToPath(new URL('../data/sample', import.meta.url));
const created: string[] = [];
afterAll(() => created.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'seqrec-plot-'));
  created.push(d);
  return d;
};

// ------------------------------------------------------------------------------------------ a tiny XML checker
interface El { name: string; attrs: Record<string, string>; children: El[]; text: string }

/**
 * Parse an XML document strictly enough for these tests: one root, balanced and properly nested tags, quoted
 * unique attributes, no '<' or bare '&' in text or attribute values (only the five predefined entities and
 * numeric references). Throws with the offset on the first problem. Returns the root element.
 */
function parseXml(xml: string): El {
  const tok = /<\?[^>]*\?>|<!--[\s\S]*?-->|<\/([A-Za-z_][\w.:-]*)\s*>|<([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>|([^<]+)|(<)/gy;
  const entityOk = (s: string, where: number): void => {
    const bad = /&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/.exec(s);
    if (bad) throw new Error(`bare '&' at ${where + bad.index}: ${s.slice(bad.index, bad.index + 20)}`);
  };
  const root: El = { name: '#doc', attrs: {}, children: [], text: '' };
  const stack: El[] = [root];
  let m: RegExpExecArray | null;
  let pos = 0;
  while (pos < xml.length && (m = tok.exec(xml)) !== null) {
    const at = pos;
    pos = tok.lastIndex;
    const top = stack[stack.length - 1]!;
    if (m[6] !== undefined) throw new Error(`malformed tag at ${at}: ${xml.slice(at, at + 40)}`);
    if (m[1] !== undefined) {
      if (top.name !== m[1]) throw new Error(`</${m[1]}> at ${at} closes <${top.name}>`);
      stack.pop();
    } else if (m[2] !== undefined) {
      const attrs: Record<string, string> = {};
      for (const a of m[3]!.matchAll(/([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
        if (a[1]! in attrs) throw new Error(`duplicate attribute ${a[1]} at ${at}`);
        const v = a[2] ?? a[3]!;
        entityOk(v, at);
        attrs[a[1]!] = v;
      }
      if (stack.length === 1 && root.children.length > 0) throw new Error(`second root element at ${at}`);
      const el: El = { name: m[2], attrs, children: [], text: '' };
      top.children.push(el);
      if (m[4] !== '/') stack.push(el);
    } else if (m[5] !== undefined) {
      if (stack.length === 1 && m[5].trim() !== '') throw new Error(`text outside the root at ${at}`);
      entityOk(m[5], at);
      top.text += m[5];
    }
  }
  if (pos !== xml.length) throw new Error(`unparsed input at ${pos}`);
  if (stack.length !== 1) throw new Error(`unclosed <${stack[stack.length - 1]!.name}>`);
  if (root.children.length !== 1) throw new Error('no root element');
  return root.children[0]!;
}

const all = (e: El, pred: (x: El) => boolean, out: El[] = []): El[] => {
  if (pred(e)) out.push(e);
  for (const c of e.children) all(c, pred, out);
  return out;
};
const unescape = (s: string): string => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
const textOf = (e: El): string => unescape(e.text + e.children.map(textOf).join(''));
/** The <g class="series"> groups of a chart, by data-name. */
const seriesGroups = (root: El): Map<string, El> => new Map(all(root, (e) => e.name === 'g' && e.attrs.class === 'series').map((g) => [unescape(g.attrs['data-name']!), g]));
const circles = (g: El): Array<{ x: number; y: number }> => g.children.filter((c) => c.name === 'circle').map((c) => ({ x: Number(c.attrs.cx), y: Number(c.attrs.cy) }));

describe('the XML checker itself', () => {
  it('rejects what a browser would reject', () => {
    expect(() => parseXml('<svg><g></svg>')).toThrow(/closes <g>/);
    expect(() => parseXml('<svg><text>a & b</text></svg>')).toThrow(/bare '&'/);
    expect(() => parseXml('<svg><text>a < b</text></svg>')).toThrow(/malformed/);
    expect(() => parseXml('<svg a="1" a="2"/>')).toThrow(/duplicate/);
    expect(() => parseXml('<svg/><svg/>')).toThrow(/second root/);
    expect(() => parseXml('<svg>')).toThrow(/unclosed/);
    expect(parseXml('<?xml version="1.0"?><svg x="&amp;"><t>&lt;&#65;</t></svg>').name).toBe('svg');
  });
});

// ------------------------------------------------------------------------------------------------ the writer
describe('lineChartSvg', () => {
  const chart = {
    title: 'loss <& "quotes">', xLabel: 'epoch', yLabel: 'value',
    series: [
      { name: 'up', points: [[0, 0.1], [1, 0.2], [2, 0.35], [3, 0.9]] as Array<[number, number]> },
      { name: "down 'b' & <c>", points: [[0, 5], [1, 3], [2, NaN], [3, 1], [4, 0.5]] as Array<[number, number]> },
    ],
  };

  it('is a well-formed standalone SVG with xmlns, a title, a legend and axes', () => {
    const svg = lineChartSvg(chart);
    const root = parseXml(svg);
    expect(root.name).toBe('svg');
    expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(Number(root.attrs.width)).toBeGreaterThan(0);
    expect(root.attrs.viewBox).toBe(`0 0 ${root.attrs.width} ${root.attrs.height}`);
    expect(svg).not.toMatch(/<script|href=|NaN|Infinity|undefined/);
    const texts = all(root, (e) => e.name === 'text').map(textOf);
    expect(texts).toContain(chart.title);
    expect(texts).toContain("down 'b' & <c>");
    expect(texts).toContain('epoch');
    const legend = all(root, (e) => e.name === 'g' && e.attrs.class === 'legend');
    expect(legend).toHaveLength(1);
    // Distinct colours per series.
    const groups = [...seriesGroups(root).values()];
    expect(new Set(groups.map((g) => g.attrs.stroke)).size).toBe(2);
  });

  it('maps x and y monotonically to coordinates (y up), one marker per finite point, NaN breaks the line', () => {
    const root = parseXml(lineChartSvg(chart));
    const g = seriesGroups(root);
    const up = circles(g.get('up')!);
    expect(up).toHaveLength(4);
    for (let i = 1; i < up.length; i++) {
      expect(up[i]!.x).toBeGreaterThan(up[i - 1]!.x);
      expect(up[i]!.y).toBeLessThan(up[i - 1]!.y); // larger value = higher on screen
    }
    // Linear axis: equal data steps are equal pixel steps.
    expect(up[1]!.x - up[0]!.x).toBeCloseTo(up[2]!.x - up[1]!.x, 1);
    expect((up[1]!.y - up[0]!.y) / (up[3]!.y - up[2]!.y)).toBeCloseTo(0.1 / 0.55, 2);
    const down = g.get("down 'b' & <c>")!;
    expect(circles(down)).toHaveLength(4); // the NaN point is skipped
    const lines = down.children.filter((c) => c.name === 'polyline');
    expect(lines.map((l) => l.attrs.points!.trim().split(/\s+/).length)).toEqual([2, 2]); // split at the gap
    // Same x in both series: same pixel column.
    expect(circles(down)[0]!.x).toBeCloseTo(up[0]!.x, 6);
    // Every marker lies inside the SVG.
    const W = Number(root.attrs.width), H = Number(root.attrs.height);
    for (const p of [...up, ...circles(down)]) {
      expect(p.x).toBeGreaterThan(0);
      expect(p.x).toBeLessThan(W);
      expect(p.y).toBeGreaterThan(0);
      expect(p.y).toBeLessThan(H);
    }
  });

  it('log axis: equal ratios are equal steps; non-positive values are skipped', () => {
    const root = parseXml(lineChartSvg({ title: 't', xLabel: 'x', yLabel: 'y', logY: true, series: [{ name: 's', points: [[1, 1], [2, 10], [3, 100], [4, 0], [5, -3]] }] }));
    const p = circles(seriesGroups(root).get('s')!);
    expect(p).toHaveLength(3);
    expect(p[0]!.y - p[1]!.y).toBeCloseTo(p[1]!.y - p[2]!.y, 1);
    expect(all(root, (e) => e.name === 'text').map(textOf)).toContain('y (log)');
  });

  it('ticks are nice numbers covering the data', () => {
    const t = niceTicks(0.13, 0.87);
    expect(t.lo).toBeLessThanOrEqual(0.13);
    expect(t.hi).toBeGreaterThanOrEqual(0.87);
    expect(t.ticks).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(5, 5).ticks.length).toBeGreaterThan(1);
    const l = logTicks(0.03, 400);
    expect(l.ticks).toEqual([0.01, 0.1, 1, 10, 100, 1000]);
    expect(logTicks(0.3, 4).ticks).toEqual([0.2, 0.5, 1, 2, 5]); // two decades or less: 1-2-5
    expect(() => logTicks(0, 1)).toThrow(/positive/);
    const root = parseXml(lineChartSvg({ title: 't', xLabel: 'epoch', yLabel: 'y', series: [{ name: 's', points: Array.from({ length: 37 }, (_, i) => [i, i] as [number, number]) }] }));
    const labels = all(root, (e) => e.name === 'text').map(textOf);
    expect(labels).toContain('0');
    expect(labels.some((s) => /\./.test(s) && /^\d/.test(s) && Number(s) > 1)).toBe(false); // integer epochs: no fractional x ticks
  });

  it('errors: no series, nothing finite', () => {
    expect(() => lineChartSvg({ title: 'empty', xLabel: 'x', yLabel: 'y', series: [] })).toThrow('plot: chart "empty" has no series');
    expect(() => lineChartSvg({ title: 'nan', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [[0, NaN]] }, { name: 'b', points: [] }] }))
      .toThrow('plot: chart "nan" has no finite points to draw (series: a, b)');
    expect(() => lineChartSvg({ title: 'log', xLabel: 'x', yLabel: 'y', logY: true, series: [{ name: 'a', points: [[0, 0], [1, -1]] }] })).toThrow(/no finite points/);
  });

  it('xmlEscape escapes the five characters and drops characters XML forbids', () => {
    expect(xmlEscape(`<a href="x">&'\u0001`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&apos;');
  });
});

describe('groupedBarSvg', () => {
  it('bars proportional to the values from a zero baseline, colours by name, null as n/a, escaped labels', () => {
    const svg = groupedBarSvg({
      title: 'matmul & co', yLabel: 'ms',
      groups: [
        { label: '64<x>64', bars: [{ name: 'fused', value: 1 }, { name: 'composed', value: 3 }] },
        { label: '128x128', bars: [{ name: 'fused', value: 2 }, { name: 'composed', value: null }] },
      ],
    });
    const root = parseXml(svg);
    const rects = all(root, (e) => e.name === 'rect' && e.attrs.class === 'bar');
    expect(rects).toHaveLength(3);
    const h = rects.map((r) => Number(r.attrs.height));
    expect(h[1]! / h[0]!).toBeCloseTo(3, 1);
    expect(h[2]! / h[0]!).toBeCloseTo(2, 1);
    const bottoms = rects.map((r) => Number(r.attrs.y) + Number(r.attrs.height));
    expect(Math.max(...bottoms) - Math.min(...bottoms)).toBeLessThan(0.05); // one baseline
    expect(rects[0]!.attrs.fill).toBe(rects[2]!.attrs.fill);
    expect(rects[0]!.attrs.fill).not.toBe(rects[1]!.attrs.fill);
    const texts = all(root, (e) => e.name === 'text').map(textOf);
    expect(texts).toContain('n/a');
    expect(texts).toContain('64<x>64');
    expect(texts).toContain('matmul & co');
    expect(() => groupedBarSvg({ title: 'b', yLabel: 'y', groups: [] })).toThrow(/has no groups/);
    expect(() => groupedBarSvg({ title: 'b', yLabel: 'y', groups: [{ label: 'g', bars: [{ name: 'a', value: null }] }] })).toThrow(/no finite values/);
  });
});

describe('stackSvg and writeSvg', () => {
  it('stacks panels into one well-formed SVG sized to the grid', () => {
    const a = lineChartSvg({ title: 'a', xLabel: 'x', yLabel: 'y', series: [{ name: 's', points: [[0, 1], [1, 2]] }] }, { width: 300, height: 200 });
    const b = lineChartSvg({ title: 'b', xLabel: 'x', yLabel: 'y', series: [{ name: 's', points: [[0, 1], [1, 2]] }] }, { width: 400, height: 250 });
    const root = parseXml(stackSvg([a, b, a], { columns: 2 }));
    expect([root.attrs.width, root.attrs.height]).toEqual(['700', '450']);
    const panels = root.children.filter((c) => c.name === 'svg');
    expect(panels.map((p) => [p.attrs.x, p.attrs.y])).toEqual([['0', '0'], ['300', '0'], ['0', '250']]);
    expect(() => stackSvg([])).toThrow(/at least one panel/);
  });

  it('writes atomically into a new folder (no temp file left)', async () => {
    const dir = join(tempDir(), 'a', 'b');
    const file = join(dir, 'p.svg');
    await writeSvg(file, '<svg xmlns="http://www.w3.org/2000/svg"/>\n');
    await writeSvg(file, '<svg xmlns="http://www.w3.org/2000/svg" width="1"/>\n');
    expect(readFileSync(file, 'utf8')).toContain('width="1"');
    expect(readdirSync(dir)).toEqual(['p.svg']);
  });
});

describe('LivePlot', () => {
  const rec = (epoch: number) => ({ epoch, seconds: 1, loss: 1 / (epoch + 1), valid: { MRR: 0.1 * epoch, 'HR@10': 0.2 + 0.01 * epoch } });

  it('rewrites after every epoch; a resumed run plots the earlier epochs from log.jsonl', async () => {
    const dir = tempDir();
    const file = join(dir, 'curves.svg');
    const render = (r: Parameters<typeof finetuneCurvesSvg>[0]) => finetuneCurvesSvg(r, 'ft', 'sampled');
    const p = new LivePlot(file, render);
    await p.check('t');
    p.add(rec(0)); // written synchronously
    expect(circles(seriesGroups(parseXml(readFileSync(file, 'utf8'))).get('loss')!)).toHaveLength(1);
    p.add(rec(1));
    expect(await p.close()).toBe(2);
    // Resume: log.jsonl holds epochs 0..2 (the third line torn by a kill is ignored), new epochs 3, 4.
    writeFileSync(join(dir, 'log.jsonl'), [rec(0), rec(1), rec(2)].map((r) => JSON.stringify(r)).join('\n') + '\n{"epoch": 3, "lo');
    expect(parseLogJsonl(readFileSync(join(dir, 'log.jsonl'), 'utf8')).map((r) => r.epoch)).toEqual([0, 1, 2]);
    const q = new LivePlot(file, render, { resumeLog: join(dir, 'log.jsonl') });
    q.add(rec(3));
    q.add(rec(4));
    expect(await q.close()).toBe(5);
    const g = seriesGroups(parseXml(readFileSync(file, 'utf8')));
    for (const name of ['loss', 'MRR', 'HR@10']) expect(circles(g.get(name)!)).toHaveLength(5);
  });

  it('check() rejects a folder as the file; a failed write warns instead of throwing', async () => {
    const dir = tempDir();
    await expect(new LivePlot(dir, () => '').check('seqrec finetune')).rejects.toThrow(/seqrec finetune: --plot .*: is a folder/);
    const warnings: string[] = [];
    const p = new LivePlot(join(dir, 'x.svg'), () => { throw new Error('boom'); }, { warn: (m) => warnings.push(m) });
    p.add(rec(0));
    expect(await p.close()).toBe(0);
    expect(warnings[0]).toMatch(/--plot: could not write .*x\.svg: boom/);
    expect(existsSync(join(dir, 'x.svg'))).toBe(false);
  });

  it('pretraining curves: one panel per loss', () => {
    const root = parseXml(pretrainCurvesSvg([0, 1, 2].map((e) => ({ epoch: e, aap: 3 - e, mip: 2, map: 1, sp: 0.7, total: 6 - e })), 'pt'));
    const names = [...seriesGroups(root).keys()];
    expect(names).toEqual(['AAP', 'MIP', 'MAP', 'SP', 'TOTAL']);
    expect(root.children.filter((c) => c.name === 'svg')).toHaveLength(5);
  });
});

describe('docs/demo-curves.svg (made by seqrec demo --plot)', () => {
  it('is well-formed and has every model\'s curves', () => {
    const file = fileURLToPath(new URL('../docs/demo-curves.svg', import.meta.url));
    const p = pointsPerSeries(file);
    for (const k of ['SASRec mode', 'SASRec mode MRR', 'AAP', 'TOTAL', 'loss', 'HR@50', 'AUC']) expect(p.get(k) ?? 0).toBeGreaterThan(1);
    expect(p.get('pretrained 10 ep')).toBe(p.get('pretrained 10 ep MRR'));
  });
});

// ------------------------------------------------------------------------------------- --plot on the commands
/** Run a CLI function with stdout/stderr captured. */
async function quiet<T>(fn: () => Promise<T>): Promise<{ value: T; out: string }> {
  const out: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
  const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    return { value: await fn(), out: out.join('\n') };
  } finally {
    log.mockRestore();
    err.mockRestore();
    write.mockRestore();
  }
}

/** Number of markers of each series (by legend name) over every panel of the file. */
function pointsPerSeries(file: string): Map<string, number> {
  const root = parseXml(readFileSync(file, 'utf8'));
  const out = new Map<string, number>();
  for (const g of all(root, (e) => e.name === 'g' && e.attrs.class === 'series')) {
    const k = unescape(g.attrs['data-name']!);
    out.set(k, (out.get(k) ?? 0) + circles(g).length);
  }
  return out;
}

describe.skipIf(!hasAdapter)('--plot on the training commands', () => {
  const TINY = ['--hidden-size', '16', '--layers', '1', '--heads', '2', '--max-len', '20'];

  it('seqrec finetune: loss and the sampled validation metrics, one point per epoch; --resume covers every epoch', { timeout: 240_000 }, async () => {
    const { runFinetune } = await import('../cli/s3rec.js');
    const dir = tempDir();
    const out = join(dir, 'run');
    const file = join(dir, 'plots', 'ft.svg');
    const base = ['--data-dir', SAMPLE, '--dataset', 'Beauty', ...TINY, '--batch-size', '128', '--out', out, '--plot', file];
    const r1 = await quiet(() => runFinetune([...base, '--epochs', '2']));
    expect(r1.value).toBe(0);
    expect(r1.out).toContain(`curves: ${file} (2 epochs)`);
    const p1 = pointsPerSeries(file);
    expect([...p1.keys()]).toEqual(['loss', 'HR@1', 'HR@5', 'NDCG@5', 'HR@10', 'NDCG@10', 'MRR']);
    for (const n of p1.values()) expect(n).toBe(2);
    const r2 = await quiet(() => runFinetune([...base, '--epochs', '3', '--resume', '--json']));
    expect(r2.value).toBe(0);
    expect(JSON.parse(r2.out.trim().split('\n').pop()!).plot).toBe(file);
    for (const n of pointsPerSeries(file).values()) expect(n).toBe(3);
    // The plotted losses are the logged ones (x = epoch as in log.jsonl).
    const log = parseLogJsonl(readFileSync(join(out, 'log.jsonl'), 'utf8'));
    expect(log.map((r) => r.epoch)).toEqual([0, 1, 2]);
  });

  it('seqrec pretrain: AAP, MIP, MAP, SP and total, one point per epoch', { timeout: 240_000 }, async () => {
    const { runPretrain } = await import('../cli/s3rec_pretrain.js');
    const dir = tempDir();
    const file = join(dir, 'pt.svg');
    const r = await quiet(() => runPretrain(['--data-dir', SAMPLE, '--dataset', 'Beauty', ...TINY, '--epochs', '3', '--steps-per-epoch', '2', '--batch-size', '32', '--save-every', '0', '--out', join(dir, 'run'), '--plot', file]));
    expect(r.value).toBe(0);
    const p = pointsPerSeries(file);
    expect([...p.keys()]).toEqual(['AAP', 'MIP', 'MAP', 'SP', 'TOTAL']);
    for (const n of p.values()) expect(n).toBe(3);
  });

  it('seqrec train --model attrec: loss and validation HR@50, MRR, AUC, one point per epoch', { timeout: 240_000 }, async () => {
    const { runAttRecTrain } = await import('../cli/attrec.js');
    const dir = tempDir();
    const file = join(dir, 'ar.svg');
    const r = await quiet(() => runAttRecTrain(['--data-dir', join(SAMPLE, 'ml-100k-sample'), '--epochs', '2', '--dim', '16', '--batch-size', '100', '--plot', file]));
    expect(r.value).toBe(0);
    expect(r.out).toContain(`curves: ${file} (2 epochs)`);
    const p = pointsPerSeries(file);
    expect([...p.keys()]).toEqual(['loss', 'HR@50', 'MRR', 'AUC']);
    for (const n of p.values()) expect(n).toBe(2);
    expect(textOf(parseXml(readFileSync(file, 'utf8')))).toContain('validation');
  });

  it('--plot pointing at a folder is a usage error before any training', async () => {
    const { runFinetune } = await import('../cli/s3rec.js');
    await expect(runFinetune(['--data-dir', SAMPLE, '--dataset', 'Beauty', '--plot', tempDir()])).rejects.toThrow(/seqrec finetune: --plot .*is a folder/);
  });
});
