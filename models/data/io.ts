// File helpers of the data layer: existence checks that raise DataError, a streaming line reader
// (chunked reads, so a 10 MB sample file or a 20 M-line log never becomes one giant string split), and an
// atomic writer (temp file in the same directory + rename) so that no command leaves a partial file behind.

import { DataError } from './errors.js';
import { basenamePath as basename, dirnamePath as dirname, joinPath as join } from './paths.js';

// node:fs is imported when a file is touched, not at module load (the models layer also bundles for a browser).
const nodeFs = (): Promise<typeof import('node:fs')> => import('node:fs');

/** Throws DataError(`file not found` / `is a directory` / ...) unless `file` is a readable regular file. */
export async function assertReadableFile(file: string): Promise<void> {
  const fsp = (await nodeFs()).promises;
  let st;
  try {
    st = await fsp.stat(file);
  } catch (e) {
    throw new DataError(file, undefined, describeFsError(e));
  }
  if (st.isDirectory()) throw new DataError(file, undefined, 'is a directory, expected a file');
  try {
    await fsp.access(file, 4 /* R_OK */);
  } catch (e) {
    throw new DataError(file, undefined, describeFsError(e));
  }
}

export async function fileExists(file: string): Promise<boolean> {
  const fsp = (await nodeFs()).promises;
  try {
    return (await fsp.stat(file)).isFile();
  } catch {
    return false;
  }
}

function describeFsError(e: unknown): string {
  const code = (e as { code?: string }).code;
  if (code === 'ENOENT') return 'file not found';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENOTDIR') return 'file not found (a parent is not a directory)';
  return `cannot read file (${e instanceof Error ? e.message : String(e)})`;
}

/**
 * Streams `file` line by line, calling `onLine(line, lineNo)` (1-based) for every non-blank line; a
 * trailing '\r' and a leading UTF-8 BOM are removed. Blank lines are tolerated only at the end of the
 * file; a blank line followed by data is an error (`<file>:<n>: empty line`). Returns the number of the
 * last non-blank line (0 for an empty file).
 */
export async function forEachLine(file: string, onLine: (line: string, lineNo: number) => void): Promise<number> {
  await assertReadableFile(file);
  const { createReadStream } = await nodeFs();
  const stream = createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 });
  let lineNo = 0;
  let lastData = 0;
  let firstBlank = 0;
  const handle = (raw: string): void => {
    lineNo++;
    let line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (lineNo === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
    if (line.trim() === '') {
      if (firstBlank === 0) firstBlank = lineNo;
      return;
    }
    if (firstBlank !== 0) throw new DataError(file, firstBlank, 'empty line');
    lastData = lineNo;
    onLine(line, lineNo);
  };
  try {
    let rest = '';
    for await (const chunk of stream) {
      const text = rest + (chunk as string);
      let start = 0;
      for (let nl = text.indexOf('\n', start); nl !== -1; nl = text.indexOf('\n', start)) {
        handle(text.slice(start, nl));
        start = nl + 1;
      }
      rest = text.slice(start);
    }
    if (rest.length > 0) handle(rest);
  } catch (e) {
    if (e instanceof DataError) throw e;
    throw new DataError(file, lineNo > 0 ? lineNo : undefined, describeFsError(e));
  } finally {
    stream.destroy();
  }
  return lastData;
}

/** Whole-file reads above this many bytes are refused (SEQREC_MAX_TEXT_BYTES overrides); line files are streamed. */
const maxTextEnv = Number((globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.SEQREC_MAX_TEXT_BYTES);
export const MAX_TEXT_FILE_BYTES = maxTextEnv > 0 ? maxTextEnv : 256 * 1024 * 1024;

/** Reads a whole (small) text file; missing files and files over MAX_TEXT_FILE_BYTES raise DataError. */
export async function readTextFile(file: string, maxBytes = MAX_TEXT_FILE_BYTES): Promise<string> {
  await assertReadableFile(file);
  const fsp = (await nodeFs()).promises;
  const size = (await fsp.stat(file).catch(() => null))?.size ?? 0;
  if (size > maxBytes) {
    throw new DataError(file, undefined, `file is ${size} bytes, over the ${maxBytes}-byte limit for a file read whole (is it the right file? SEQREC_MAX_TEXT_BYTES raises the limit)`);
  }
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (e) {
    throw new DataError(file, undefined, describeFsError(e));
  }
}

/**
 * Writes `data` to `file` atomically: the bytes go to a temp file in the same directory, which is then
 * renamed over `file` (rename is atomic within a file system), so readers see the old file or the complete
 * new one, never a partial one. Without `force`, an existing `file` is an error and nothing is written.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: { force?: boolean } = {}): Promise<void> {
  const fsp = (await nodeFs()).promises;
  const dir = dirname(file);
  try {
    const st = await fsp.stat(dir);
    if (!st.isDirectory()) throw new Error('not a directory');
  } catch {
    throw new DataError(file, undefined, `cannot write: directory '${dir}' does not exist`);
  }
  if (!opts.force && (await pathExists(file))) {
    throw new DataError(file, undefined, 'already exists (pass --force to overwrite)');
  }
  const { randomBytes } = await import('node:crypto');
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await fsp.writeFile(tmp, data, { flag: 'wx' });
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    const code = (e as { code?: string }).code;
    const why = code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? 'permission denied' : e instanceof Error ? e.message : String(e);
    throw new DataError(file, undefined, `cannot write (${why})`);
  }
}

/** Whether anything (file, folder, link) exists at `p`. */
export async function pathExists(p: string): Promise<boolean> {
  const fsp = (await nodeFs()).promises;
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}
