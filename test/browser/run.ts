// `npm run test:browser`: the package in a real browser.
//   1. builds dist/browser (browser/build.ts),
//   2. runs the tiny S3-Rec / AttRec training of browser/scenario.ts here, in Node, on Node's adapter,
//   3. serves dist/browser on 127.0.0.1 (node:http, a free port) and opens the page in headless Chromium
//      (/usr/bin/chromium through playwright-core, WebGPU on SwiftShader, a fresh --user-data-dir),
//   4. asserts: an adapter exists (a missing navigator.gpu or adapter FAILS, never skips), every kernel check
//      passes, the browser's losses equal Node's step for step (relative tolerance REL_TOL: two WebGPU
//      implementations round differently) and the fine-tuning / AttRec losses decrease.
// Ends with `browser: N passed, N failed`; exit status 1 on any failure.
// `npx tsx test/browser/run.ts --serve [PORT]` only builds and serves the page (open the printed URL yourself);
// `--path padded` trains S3-Rec on its padded encoder path (both sides) instead of the default packed one.
// Env: CHROMIUM=path (default /usr/bin/chromium), BROWSER_TIMEOUT_S (default 240: the page's whole run).
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join, normalize, sep } from 'node:path';
import { chromium } from 'playwright-core';
import { destroyGpu, initGpu } from '../../index.js';
import { buildBrowser, OUT_DIR } from '../../browser/build.js';
import { runTraining, type TrainingResult } from '../../browser/scenario.js';
// Type-only: brings browser/page.ts (and its window.__seqrecResult declaration) into the type check.
import type { PageResult } from '../../browser/page.js';

/** Relative tolerance between the browser's and Node's losses (SwiftShader vs Mesa llvmpipe here). */
const REL_TOL = 1e-4;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = Number(process.env.BROWSER_TIMEOUT_S || 240) * 1000;
/** ENVIRONMENT.md: headless Chromium runs WebGPU compute (SwiftShader) with these. */
const CHROMIUM_FLAGS = [
  '--enable-unsafe-webgpu', '--no-sandbox', '--disable-gpu-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
];

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.map': 'application/json', '.json': 'application/json',
};

/** Static files of `dir` on 127.0.0.1:port (0 = a free port). */
async function serve(dir: string, port = 0): Promise<{ server: Server; url: string }> {
  const root = normalize(dir + sep);
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    readFile(file).then(
      (body) => res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(body),
      () => res.writeHead(404).end('not found'),
    );
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', ok);
  });
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('server has no port');
  return { server, url: `http://127.0.0.1:${addr.port}/` };
}

// ------------------------------------------------------------------------------------------------ checks
let passed = 0;
let failed = 0;
function check(name: string, ok: boolean, detail = ''): void {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
}

/** Largest relative difference |a - b| / max(|a|, |b|) over two equal-length series (Infinity when they differ in length or are not finite). */
function maxRel(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length || a.length === 0) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i]) || !Number.isFinite(b[i])) return Infinity;
    const d = Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(a[i]!), Math.abs(b[i]!), 1e-30);
    m = Math.max(m, d);
  }
  return m;
}

/** The loss series of each model, or null with the run's error. */
function series(t: TrainingResult): Array<{ model: 's3rec' | 'attrec'; name: string; values: number[] | null; error?: string }> {
  const s = t.s3rec;
  const e3 = t.errors.s3rec;
  return [
    { model: 's3rec', name: 'S3-Rec pretraining AAP', values: s ? s.pretrain.map((p) => p.aap) : null, error: e3 },
    { model: 's3rec', name: 'S3-Rec pretraining MIP', values: s ? s.pretrain.map((p) => p.mip) : null, error: e3 },
    { model: 's3rec', name: 'S3-Rec pretraining MAP', values: s ? s.pretrain.map((p) => p.map) : null, error: e3 },
    { model: 's3rec', name: 'S3-Rec pretraining SP', values: s ? s.pretrain.map((p) => p.sp) : null, error: e3 },
    { model: 's3rec', name: 'S3-Rec fine-tuning', values: s ? s.finetune : null, error: e3 },
    { model: 'attrec', name: 'AttRec', values: t.attrec, error: t.errors.attrec },
  ];
}

const fmt = (xs: readonly number[]): string => xs.map((v) => v.toPrecision(7)).join(' ');
const firstLines = (s: string | undefined, n = 3): string => (s ?? '').split('\n').slice(0, n).join('\n     ');

function compareTraining(browser: TrainingResult | null, node: TrainingResult | null): void {
  if (!browser || !node) {
    check('training ran in both the browser and Node', false, `${browser ? '' : 'no browser result'}${!browser && !node ? ', ' : ''}${node ? '' : 'no Node result'}`);
    return;
  }
  const ns = series(node);
  for (const m of ['s3rec', 'attrec'] as const) {
    const label = m === 's3rec' ? `S3-Rec (encoder path ${browser.path})` : 'AttRec';
    const be = browser.errors[m];
    const ne = node.errors[m];
    check(`${label} tiny training runs in the browser`, !be, firstLines(be));
    check(`${label} tiny training runs in Node`, !ne, firstLines(ne));
  }
  for (const [i, b] of series(browser).entries()) {
    const n = ns[i]!;
    if (!b.values || !n.values) continue; // the run failed: counted above
    const r = maxRel(b.values, n.values);
    check(`${b.name} losses, browser == Node (relative ${REL_TOL})`, r <= REL_TOL, `max relative difference ${r.toExponential(2)}${r <= REL_TOL ? '' : `\n     browser ${fmt(b.values)}\n     node    ${fmt(n.values)}`}`);
  }
  for (const b of series(browser)) {
    if (b.name !== 'S3-Rec fine-tuning' && b.name !== 'AttRec') continue;
    if (!b.values) continue;
    const xs = b.values;
    check(`${b.name} loss decreases in the browser`, xs.length > 1 && xs.at(-1)! < xs[0]!, fmt(xs));
  }
}

// ------------------------------------------------------------------------------------------------ main
async function runPage(url: string): Promise<{ result: PageResult | null; text: string; console: string[] }> {
  const profile = await mkdtemp(join(tmpdir(), 'seqrec-chromium-'));
  const lines: string[] = [];
  const ctx = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('console', (m) => lines.push(`[console.${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => lines.push(`[pageerror] ${e.message}`));
    await page.goto(url);
    let result: PageResult | null = null;
    try {
      await page.waitForFunction(() => window.__seqrecResult !== undefined, undefined, { timeout: TIMEOUT_MS, polling: 250 });
      result = (await page.evaluate(() => window.__seqrecResult)) ?? null;
    } catch (e) {
      lines.push(`[runner] no result within ${TIMEOUT_MS / 1000} s: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    }
    const text = await page.evaluate(() => document.getElementById('log')?.textContent ?? '');
    return { result, text, console: lines };
  } finally {
    await ctx.close();
    await rm(profile, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const args = process.argv.slice(2);
  const pi = args.indexOf('--path');
  const path = pi >= 0 ? args.splice(pi, 2)[1] : 'varlen';
  if (path !== 'varlen' && path !== 'padded') throw new Error(`--path ${path}: expected varlen or padded`);
  const built = await buildBrowser();
  console.log(`built ${built.files.join(', ')} in ${(built.ms / 1000).toFixed(1)} s`);
  if (args[0] === '--serve') {
    const { url } = await serve(OUT_DIR, Number(args[1] ?? 8080));
    console.log(`serving ${OUT_DIR} at ${url} (Ctrl-C to stop)`);
    return;
  }

  let node: TrainingResult | null = null;
  try {
    const g = await initGpu();
    const tn = performance.now();
    node = await runTraining({ path });
    console.log(`Node (${g.info.backend}, ${g.info.description || g.info.vendor}): tiny training in ${((performance.now() - tn) / 1000).toFixed(1)} s`);
  } catch (e) {
    console.log(`Node run failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    await destroyGpu();
  }

  const { server, url } = await serve(OUT_DIR);
  let page: Awaited<ReturnType<typeof runPage>> | null = null;
  const tb = performance.now();
  try {
    page = await runPage(`${url}?path=${path}`);
  } catch (e) {
    check(`Chromium (${CHROMIUM}) starts and loads the page`, false, e instanceof Error ? e.message.split('\n')[0] : String(e));
  } finally {
    server.close();
  }
  if (page) {
    console.log(`page (${((performance.now() - tb) / 1000).toFixed(1)} s):\n${page.text.replace(/^/gm, '  | ')}`);
    const r = page.result;
    if (!r) {
      check('the page wrote window.__seqrecResult', false, page.console.slice(-20).join('\n  '));
    } else {
      const a = r.adapter;
      check('navigator.gpu and a WebGPU adapter exist', a !== null, a ? `${a.backend} ${a.featureLevel}: ${[a.vendor, a.architecture, a.description].filter(Boolean).join(' / ')}` : r.error ?? '');
      if (a) {
        check('the page ran without an error', r.error === undefined, firstLines(r.error, 6));
        if (r.kernels.length === 0) check('kernel checks ran', false);
        for (const k of r.kernels) check(`kernel ${k.name}`, k.ok, k.ok ? `max err ${k.maxErr.toExponential(2)}, ${k.ms.toFixed(0)} ms` : firstLines(k.error));
        compareTraining(r.training, node);
      }
    }
  }
  console.log(`browser test: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
}

main().catch((e: unknown) => {
  console.log(`runner error: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  console.log(`browser: ${passed} passed, ${failed + 1} failed`);
  process.exitCode = 1;
});
