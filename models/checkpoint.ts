// The checkpoint layout of the models layer, on top of the engine's safetensors format (engine/safetensors.ts):
// a model's state dict with its optimizer's state, the engine RNG state and step/epoch/run metadata in ONE
// safetensors file, so a run resumes bit for bit.
//
// Naming (byte-compatible with every checkpoint written so far): the model's tensors under their state-dict names
// (PyTorch-compatible, so the official S3-Rec weights load as they are); optimizer state under
// `optimizer.<param name>.<slot>`; metadata keys `format` ("seqrec-checkpoint/1"), `step`, `epoch`, `rng` (the
// engine RNG state, JSON), `optimizer` (JSON: kind, hyper-parameters, per-parameter step counts), plus whatever the
// caller adds (models/run.ts adds the run state). Files are written atomically (writeSafetensors).
//
// Browsers: checkpointBytes / applyCheckpoint work on in-memory images; the path-based functions need Node.
import {
  parseJsonSafe, readSafetensors, rngState, serializeSafetensors, setRngState, SafetensorsError, Tensor, writeSafetensors,
  type SafetensorsFile, type TensorData,
} from '../engine/index.js';

/**
 * A state-dict problem (model or optimizer) that names the tensor at fault: missing, unexpected, or a dtype/shape
 * mismatch. Checkpoint loading re-raises it as a SafetensorsError that also names the file.
 */
export class StateDictError extends Error {
  constructor(
    readonly tensor: string | undefined,
    readonly problem: string,
  ) {
    super(tensor !== undefined ? `tensor '${tensor}': ${problem}` : problem);
    this.name = 'StateDictError';
  }
}

// ------------------------------------------------------------------------------------------------ checkpoints
/** What saveCheckpoint needs of a model (models/nn.ts Module has it). */
export interface StateDictModule {
  stateDict(): Map<string, Tensor>;
  loadStateDict(dict: Map<string, Tensor | TensorData>, opts?: { strict?: boolean }): unknown;
}

/** An optimizer's state: hyper-parameters, per-parameter step counts, and state tensors `<param>.<slot>`. */
export interface OptimizerStateDict {
  kind: string;
  hyper: Record<string, number | boolean>;
  steps: Record<string, number>;
  tensors: Map<string, Tensor | TensorData>;
}

export interface StatefulOptimizer {
  stateDict(): OptimizerStateDict;
  loadStateDict(sd: OptimizerStateDict): void;
}

export interface SaveCheckpointOptions {
  model: StateDictModule;
  optimizer?: StatefulOptimizer;
  step?: number;
  epoch?: number;
  /** Extra string metadata (must not use the reserved keys). */
  metadata?: Record<string, string>;
}

export interface CheckpointInfo {
  step: number | undefined;
  epoch: number | undefined;
  /** All of the file's metadata. */
  metadata: Record<string, string>;
  /** Names the model did not load (only with strict: false). */
  missing: string[];
  unexpected: string[];
}

export const CHECKPOINT_FORMAT = 'seqrec-checkpoint/1';
const OPT_PREFIX = 'optimizer.';
const RESERVED = ['format', 'step', 'epoch', 'rng', 'optimizer'];

async function readBack(t: Tensor): Promise<TensorData> {
  return { dtype: t.dtype, shape: [...t.shape], data: await t.toArray() };
}

/** The checkpoint's tensors and metadata (reads every GPU tensor back). */
async function checkpointContents(o: SaveCheckpointOptions, file: string): Promise<{ tensors: Map<string, TensorData>; metadata: Record<string, string> }> {
  for (const k of Object.keys(o.metadata ?? {})) {
    if (RESERVED.includes(k)) throw new SafetensorsError(file, undefined, `metadata key '${k}' is reserved`);
  }
  const out = new Map<string, TensorData>();
  for (const [name, t] of o.model.stateDict()) out.set(name, await readBack(t));
  const metadata: Record<string, string> = { ...(o.metadata ?? {}), format: CHECKPOINT_FORMAT, rng: JSON.stringify(rngState()) };
  if (o.step !== undefined) metadata.step = String(o.step);
  if (o.epoch !== undefined) metadata.epoch = String(o.epoch);
  if (o.optimizer) {
    const sd = o.optimizer.stateDict();
    try {
      for (const [name, t] of sd.tensors) {
        const key = OPT_PREFIX + name;
        if (out.has(key)) throw new SafetensorsError(file, key, 'a model tensor already has this name');
        out.set(key, t instanceof Tensor ? await readBack(t) : t);
      }
    } finally {
      for (const t of sd.tensors.values()) if (t instanceof Tensor) t.dispose();
    }
    metadata.optimizer = JSON.stringify({ kind: sd.kind, hyper: sd.hyper, steps: sd.steps });
  }
  return { tensors: out, metadata };
}

/** The checkpoint as a safetensors image (reads every GPU tensor back). */
export async function checkpointBytes(o: SaveCheckpointOptions, file = '<bytes>'): Promise<Uint8Array> {
  const { tensors, metadata } = await checkpointContents(o, file);
  return serializeSafetensors(tensors, metadata, file);
}

/** Save model (+ optimizer state, step, epoch, RNG state) atomically to `path`. */
export async function saveCheckpoint(path: string, o: SaveCheckpointOptions): Promise<void> {
  const { tensors, metadata } = await checkpointContents(o, path);
  await writeSafetensors(path, tensors, metadata);
}

export interface LoadCheckpointOptions {
  model: StateDictModule;
  optimizer?: StatefulOptimizer;
  /** Every model tensor must be in the file and every non-optimizer tensor in the model (default true). */
  strict?: boolean;
  /** Restore the engine RNG state saved with the checkpoint (default false). */
  restoreRng?: boolean;
}

/** Load a parsed checkpoint into a model (and optimizer). Errors name the file and the tensor. */
export function applyCheckpoint(f: SafetensorsFile, o: LoadCheckpointOptions, file = '<bytes>'): CheckpointInfo {
  const modelDict = new Map<string, TensorData>();
  const optDict = new Map<string, TensorData>();
  for (const [name, t] of f.tensors) {
    if (name.startsWith(OPT_PREFIX) && f.metadata.optimizer !== undefined) optDict.set(name.slice(OPT_PREFIX.length), t);
    else modelDict.set(name, t);
  }
  let res: unknown;
  try {
    res = o.model.loadStateDict(modelDict, { strict: o.strict ?? true });
  } catch (e) {
    throw wrap(file, e);
  }
  if (o.optimizer) {
    if (f.metadata.optimizer === undefined) throw new SafetensorsError(file, undefined, 'has no optimizer state (metadata "optimizer" is missing)');
    let meta: { kind: string; hyper: Record<string, number | boolean>; steps: Record<string, number> };
    try {
      meta = parseJsonSafe(f.metadata.optimizer) as typeof meta;
    } catch (e) {
      throw new SafetensorsError(file, undefined, `metadata "optimizer" is not valid JSON (${String(e)})`);
    }
    try {
      o.optimizer.loadStateDict({ kind: meta.kind, hyper: meta.hyper ?? {}, steps: meta.steps ?? {}, tensors: optDict });
    } catch (e) {
      throw wrap(file, e);
    }
  }
  if (o.restoreRng && f.metadata.rng) {
    let st: { seed?: unknown; offset?: unknown };
    try {
      st = parseJsonSafe(f.metadata.rng) as typeof st;
    } catch (e) {
      throw new SafetensorsError(file, undefined, `metadata "rng" is not valid JSON (${String(e)})`);
    }
    if (!st || !Number.isSafeInteger(st.seed) || !Number.isSafeInteger(st.offset)) throw new SafetensorsError(file, undefined, `metadata "rng" is not {seed, offset} integers: ${f.metadata.rng}`);
    setRngState(st as { seed: number; offset: number });
  }
  const num = (k: string): number | undefined => (f.metadata[k] === undefined ? undefined : Number(f.metadata[k]));
  const r = (res ?? {}) as { missing?: string[]; unexpected?: string[] };
  return { step: num('step'), epoch: num('epoch'), metadata: f.metadata, missing: r.missing ?? [], unexpected: r.unexpected ?? [] };
}

/** Re-raise a model/optimizer error with the file name; an error's `tensor` field (StateDictError) is kept. */
function wrap(file: string, e: unknown): SafetensorsError {
  if (e instanceof SafetensorsError) return e;
  const { tensor, problem } = e as { tensor?: unknown; problem?: unknown };
  const msg = typeof problem === 'string' ? problem : e instanceof Error ? e.message : String(e);
  return new SafetensorsError(file, typeof tensor === 'string' ? tensor : undefined, msg);
}

/** Read a checkpoint file (or image) and load it into the model (and optimizer). */
export async function loadCheckpoint(src: string | Uint8Array, o: LoadCheckpointOptions, name?: string): Promise<CheckpointInfo> {
  const file = typeof src === 'string' ? src : (name ?? '<bytes>');
  const f = await readSafetensors(src, file);
  return applyCheckpoint(f, o, file);
}
