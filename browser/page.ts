// The browser page (bundled to dist/browser/page.js by browser/build.ts): the engine on navigator.gpu through
// initGpu(), then browser/scenario.ts (kernel checks, tiny S3-Rec and AttRec training; `?path=padded` trains
// S3-Rec on its padded encoder path). The result goes to
// window.__seqrecResult and to the page text; test/browser/run.ts reads it with Playwright.
import { initGpu } from '../index.js';
import { runAll, type PageResult } from './scenario.js';

export type { PageResult };

declare global {
  interface Window {
    __seqrecResult?: PageResult;
  }
}

const logEl = document.getElementById('log')!;
const log = (line: string): void => {
  logEl.textContent += `${line}\n`;
  console.log(line);
};

function finish(r: PageResult): void {
  window.__seqrecResult = r;
  document.getElementById('result')!.textContent = JSON.stringify(r, null, 2);
  document.title = `seqrec-webgpu: ${r.ok ? 'ok' : 'FAILED'}`;
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const fail = (error: string): void => {
    log(`error: ${error}`);
    finish({ ok: false, adapter: null, kernels: [], training: null, error, seconds: (performance.now() - t0) / 1000 });
  };
  if (!('gpu' in navigator) || !navigator.gpu) return fail('navigator.gpu is missing: this browser has no WebGPU (Chromium: --enable-unsafe-webgpu)');
  try {
    const g = await initGpu(); // navigator.gpu's adapter, the limits the kernels need
    const i = g.info;
    log(`adapter: ${[i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / ') || '(no adapter info)'}, ${i.featureLevel}, features: ${i.features.join(', ') || 'none'}`);
  } catch (e) {
    return fail(e instanceof Error ? e.message : String(e));
  }
  // ?path=padded: the S3-Rec encoder's padded path instead of the default packed ('varlen') one.
  const path = new URLSearchParams(location.search).get('path');
  if (path !== null && path !== 'varlen' && path !== 'padded') return fail(`?path=${path}: expected varlen or padded`);
  finish(await runAll(log, path ? { path } : {}));
}

main().catch((e: unknown) => {
  log(`error: ${String(e)}`);
  finish({ ok: false, adapter: null, kernels: [], training: null, error: String(e), seconds: 0 });
});
