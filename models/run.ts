// models/run.ts — what every training loop of the models layer shares (Node side: files):
//   - progress / per-epoch callbacks (the CLI draws its bar from them; a program linking the package uses its own),
//   - a run folder: `log.jsonl` (one JSON line per finished epoch), `last.safetensors` (model + optimizer + RNG +
//     run state, written atomically after every epoch: `--resume` continues from it) and `best.safetensors` (the
//     best model so far, official tensor names only, so `seqrec eval --ckpt` and the official code read it),
//   - per-epoch seeds: every random stream of epoch e (shuffle, negatives, masks, dropout) is derived from
//     (seed, e) alone, so a run resumed at an epoch boundary is bit-identical to an uninterrupted one.
// Crash safety: files are replaced by rename (temp file in the same folder), and the log is rewritten from the
// checkpoint's own history on resume, so a kill at any point leaves a consistent run that `--resume` continues.
import { checkFinite, finiteReport, rt, manualSeed, parseJsonSafe, type Tensor } from '../engine/index.js';
import { saveCheckpoint, loadCheckpoint, type StatefulOptimizer, type StateDictModule } from './checkpoint.js';
import { Rng } from './data/sampling.js';
import { writeFileAtomic } from './data/io.js';
import { joinPath as join } from './data/paths.js';

// node:fs is imported by the methods that touch files, not at module load (the models layer bundles for a browser).
const nodeFsp = async (): Promise<typeof import('node:fs').promises> => (await import('node:fs')).promises;

/** One progress report inside an epoch. */
export interface ProgressEvent {
  phase: 'train' | 'valid' | 'test' | 'pretrain' | 'eval';
  /** 0-based index of the running epoch (a progress bar shows epoch + 1 of epochs). */
  epoch: number;
  epochs: number;
  /** Steps (batches) done in this phase, of `steps`. */
  step: number;
  steps: number;
  /** Samples (sequences, users, instances) done in this phase. */
  samples: number;
  /** Running mean loss(es) of the epoch when known (read back only when a callback asks for progress). */
  losses?: Record<string, number>;
}

/** One finished epoch: what goes into log.jsonl. */
export interface EpochRecord {
  epoch: number;
  seconds: number;
  [key: string]: unknown;
}

export interface TrainHooks {
  onProgress?: (e: ProgressEvent) => void;
  onEpoch?: (r: EpochRecord) => void;
  /** Free-form messages (e.g. "no pretrained checkpoint: the model is SASRec"). */
  onLog?: (msg: string) => void;
  /** Stop after the current step when aborted; the last finished epoch's checkpoint stays valid. */
  signal?: AbortSignal;
}

/** A seed for stream `stream` of epoch `epoch` (independent of every other epoch and stream). */
export function epochSeed(seed: number, epoch: number, stream = 0): number {
  return Rng.derive(seed, epoch, stream).nextU32();
}

/** Seed the engine RNG (dropout) for an epoch: same (seed, epoch) -> same dropout masks. */
export function seedEngineForEpoch(seed: number, epoch: number): void {
  manualSeed(epochSeed(seed, epoch, 0xd0));
}

/** Bytes of GPU memory the buffer pool has held at its peak (all live buffers: in use, free and pending). */
export function peakGpuBytes(): number {
  return rt().pool.stats().peakBytes;
}

/** The state a training loop needs to continue: saved in the checkpoint's metadata as JSON. */
export interface RunState<E extends EpochRecord = EpochRecord> {
  /** Epochs finished (the next epoch to run is `epoch`). */
  epoch: number;
  /** Every finished epoch's record (log.jsonl is rewritten from it on resume). */
  history: E[];
  /** Anything else the loop keeps (best metric, patience counter, ...). */
  [key: string]: unknown;
}

/** The files of a run folder. */
export class RunDir {
  readonly log: string;
  readonly last: string;
  readonly best: string;
  constructor(readonly dir: string) {
    this.log = join(dir, 'log.jsonl');
    this.last = join(dir, 'last.safetensors');
    this.best = join(dir, 'best.safetensors');
  }

  async create(): Promise<void> {
    const fsp = await nodeFsp();
    await fsp.mkdir(this.dir, { recursive: true });
    // Temp files of a checkpoint write killed half-way (engine/safetensors.ts writes `.<name>.<pid>.<rand>.tmp`
    // and renames): never read, removed here so crashed runs leave no debris.
    for (const f of await fsp.readdir(this.dir)) {
      if (/^\.(last|best)\.safetensors\..+\.tmp$/.test(f)) await fsp.rm(join(this.dir, f), { force: true });
    }
  }

  async exists(file: string): Promise<boolean> {
    const fsp = await nodeFsp();
    return fsp.stat(file).then(
      (s) => s.isFile(),
      () => false,
    );
  }

  /** Append one epoch record to log.jsonl. */
  async appendLog(r: EpochRecord): Promise<void> {
    const fsp = await nodeFsp();
    await fsp.appendFile(this.log, `${JSON.stringify(r)}\n`);
  }

  /** Rewrite log.jsonl from a history (atomic). */
  async writeLog(history: readonly EpochRecord[]): Promise<void> {
    await writeFileAtomic(this.log, history.map((r) => `${JSON.stringify(r)}\n`).join(''), { force: true });
  }

  /** Save model + optimizer + RNG + run state to last.safetensors (atomic). */
  async saveLast(model: StateDictModule, optimizer: StatefulOptimizer | undefined, state: RunState, metadata: Record<string, string> = {}): Promise<void> {
    await saveCheckpoint(this.last, { model, optimizer, epoch: state.epoch, metadata: { ...metadata, run: JSON.stringify(state) } });
  }

  /** Save the model alone (official names) to best.safetensors (atomic). */
  async saveBest(model: StateDictModule, metadata: Record<string, string> = {}): Promise<void> {
    await saveCheckpoint(this.best, { model, metadata });
  }

  /** Load last.safetensors into model + optimizer; returns the run state saved with it. */
  async loadLast<S extends RunState>(model: StateDictModule, optimizer: StatefulOptimizer | undefined): Promise<{ state: S; metadata: Record<string, string> }> {
    if (!(await this.exists(this.last))) throw new Error(`--resume: no checkpoint to resume from (${this.last} does not exist)`);
    const info = await loadCheckpoint(this.last, { model, optimizer, restoreRng: true });
    const raw = info.metadata.run;
    if (!raw) throw new Error(`--resume: ${this.last} has no run state (not written by a seqrec training command)`);
    let state: S;
    try {
      state = parseJsonSafe(raw) as S;
    } catch (e) {
      throw new Error(`--resume: ${this.last}: run state is not valid JSON (${String(e)})`);
    }
    if (!Number.isInteger(state.epoch) || !Array.isArray(state.history)) throw new Error(`--resume: ${this.last}: malformed run state`);
    await this.writeLog(state.history);
    return { state, metadata: info.metadata };
  }
}

// ------------------------------------------------------------------------------------------------ --check-finite N
/** What a training loop calls for `--check-finite N` (see FiniteWatch). */
export interface FiniteWatch {
  /**
   * After step `step` (1-based, counted over the whole run): queue NaN/Inf checks of the loss (first) and every
   * parameter (GPU only, no readback), and every `every` steps wait for the report, which throws
   * `non-finite value (NaN or Inf) in loss/loss at step k` or `... in parameter/<name> at step k` for the first
   * step and tensor that had one. A no-op when `every` is 0.
   */
  afterStep(step: number, loss?: Tensor): Promise<void>;
  /** Wait for the checks queued since the last report (call at the end of an epoch / the run). */
  flush(): Promise<void>;
}

/** A FiniteWatch over `params` (e.g. `model.stateDict()`), reporting every `every` steps (0: off). */
export function watchFinite(every: number, params: ReadonlyMap<string, Tensor>): FiniteWatch {
  if (!Number.isInteger(every) || every < 0) throw new Error(`--check-finite must be an integer >= 0, got ${every}`);
  let pending = false;
  return {
    async afterStep(step: number, loss?: Tensor): Promise<void> {
      if (every === 0) return;
      if (loss) checkFinite({ loss }, 'loss', step);
      checkFinite(params, 'parameter', step);
      pending = true;
      if (step % every === 0) {
        pending = false;
        await finiteReport();
      }
    },
    async flush(): Promise<void> {
      if (!pending) return;
      pending = false;
      await finiteReport();
    },
  };
}
