// Path strings without importing node:path at module load, so the models layer bundles for a browser.
// In Node (>= 20.16, process.getBuiltinModule) these ARE node:path's join/basename/dirname, so behaviour there is
// unchanged on every platform; elsewhere a POSIX implementation with node:path.posix's rules (normalised '.' and
// '..' segments, collapsed slashes, a kept trailing slash) — test/browser_imports.test.ts compares the two.

interface PathFns {
  join: (...parts: string[]) => string;
  basename: (p: string) => string;
  dirname: (p: string) => string;
}

function normalize(p: string): string {
  if (p === '') return '.';
  const abs = p.startsWith('/');
  const trailing = p.endsWith('/');
  const out: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!abs) out.push('..');
    } else out.push(seg);
  }
  let r = out.join('/');
  if (r === '') return abs ? '/' : trailing ? './' : '.';
  if (trailing) r += '/';
  return abs ? `/${r}` : r;
}

/** POSIX join/basename/dirname with node:path.posix's semantics (exported for the comparison test). */
export const posixPath: PathFns = {
  join: (...parts) => {
    const joined = parts.filter((s) => s.length > 0).join('/');
    return joined === '' ? '.' : normalize(joined);
  },
  basename: (p) => {
    let end = p.length;
    while (end > 0 && p[end - 1] === '/') end--;
    if (end === 0) return '';
    return p.slice(p.lastIndexOf('/', end - 1) + 1, end);
  },
  dirname: (p) => {
    if (p === '') return '.';
    const root = p[0] === '/';
    let end = -1;
    let matchedSlash = true;
    for (let i = p.length - 1; i >= 1; i--) {
      if (p[i] === '/') {
        if (!matchedSlash) {
          end = i;
          break;
        }
      } else matchedSlash = false;
    }
    if (end === -1) return root ? '/' : '.';
    if (root && end === 1) return '//';
    return p.slice(0, end);
  },
};

const nodePath = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule?.('node:path') as PathFns | undefined;
const impl: PathFns = nodePath ?? posixPath;

export const joinPath = (...parts: string[]): string => impl.join(...parts);
export const basenamePath = (p: string): string => impl.basename(p);
export const dirnamePath = (p: string): string => impl.dirname(p);
