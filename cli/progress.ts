// A progress bar on stderr for long work: `label [#####.....] 37% 120/320 | loss 0.8123 | 2,310 samples/s | ETA 12s`.
// On a terminal it redraws one line; elsewhere (CI logs, pipes) it prints a line at most every `everySec` seconds
// and at the end, so logs stay short. Disabled entirely with `enabled: false` (e.g. --json).
import type { ProgressEvent } from '../models/run.js';

export interface ProgressOptions {
  stream?: NodeJS.WriteStream;
  enabled?: boolean;
  /** Minimum seconds between lines when the stream is not a TTY (default 10). */
  everySec?: number;
  /** Unit of the throughput figure (default 'samples'). */
  unit?: string;
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  if (sec < 60) return `${sec.toFixed(sec < 10 ? 1 : 0)}s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m}m${String(Math.round(sec - 60 * m)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export class ProgressBar {
  private readonly stream: NodeJS.WriteStream;
  private readonly enabled: boolean;
  private readonly tty: boolean;
  private readonly everySec: number;
  private readonly unit: string;
  private readonly t0 = performance.now();
  private lastPrint = -Infinity;
  private lastLen = 0;

  constructor(
    private readonly label: string,
    private readonly total: number,
    o: ProgressOptions = {},
  ) {
    this.stream = o.stream ?? process.stderr;
    this.enabled = o.enabled ?? true;
    this.tty = !!this.stream.isTTY;
    this.everySec = o.everySec ?? 10;
    this.unit = o.unit ?? 'samples';
  }

  /** done units of total; `samples` processed so far (for the throughput); extra fields shown after the bar. */
  update(done: number, samples: number, fields: Record<string, string | number> = {}): void {
    if (!this.enabled) return;
    const now = performance.now();
    const final = done >= this.total;
    if (!this.tty && !final && now - this.lastPrint < this.everySec * 1000) return;
    if (this.tty && !final && now - this.lastPrint < 100) return;
    this.lastPrint = now;
    const sec = (now - this.t0) / 1000;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const width = 20;
    const filled = Math.round(frac * width);
    const eta = frac > 0 ? (sec * (1 - frac)) / frac : NaN;
    const extra = Object.entries(fields).map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : v}`);
    const rate = sec > 0 ? `${Math.round(samples / sec).toLocaleString('en-US')} ${this.unit}/s` : '';
    const parts = [`${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}% ${done}/${this.total}`, ...extra, rate, final ? `${formatDuration(sec)}` : `ETA ${formatDuration(eta)}`].filter(Boolean);
    const line = parts.join(' | ');
    if (this.tty) {
      this.stream.write(`\r${line}${' '.repeat(Math.max(0, this.lastLen - line.length))}${final ? '\n' : ''}`);
      this.lastLen = final ? 0 : line.length;
    } else this.stream.write(`${line}\n`);
  }

  /** End the line (TTY) if the bar did not reach its total. */
  close(): void {
    if (this.enabled && this.tty && this.lastLen > 0) this.stream.write('\n');
    this.lastLen = 0;
  }
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4);
}

/**
 * One progress bar per (phase, epoch), redrawn from the library's progress events: `<prefix> epoch 3/200 train`.
 * `unit(phase)` names the throughput unit.
 */
export function phaseBars(o: { enabled?: boolean; prefix?: string; everySec?: number; unit?: (phase: string) => string } = {}): (e: ProgressEvent) => void {
  let bar: ProgressBar | null = null;
  let key = '';
  return (e) => {
    const k = `${e.phase}:${e.epoch}`;
    if (k !== key) {
      bar?.close();
      key = k;
      const label = e.epochs ? `epoch ${e.epoch + 1}/${e.epochs} ${e.phase}` : e.phase;
      bar = new ProgressBar(o.prefix ? `${o.prefix} ${label}` : label, e.steps, { enabled: o.enabled ?? true, ...(o.everySec ? { everySec: o.everySec } : {}), unit: o.unit?.(e.phase) ?? 'samples' });
    }
    bar!.update(e.step, e.samples, e.losses ?? {});
    if (e.step >= e.steps) {
      bar = null;
      key = '';
    }
  };
}
