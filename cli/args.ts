// Option parsing shared by the seqrec subcommands: each command declares its options once (name, type, default,
// bounds, help) and gets checked values, a `--help` text and errors that name the command and the option.
// Accepts `--name value` and `--name=value`; unknown options, missing values and bad values throw a UsageError.

export type OptType = 'int' | 'number' | 'string' | 'flag' | 'choice';

export interface OptSpec {
  /** Option name without the dashes, kebab-case (`data-dir`); the parsed key is camelCase (`dataDir`). */
  name: string;
  type: OptType;
  help: string;
  default?: number | string | boolean;
  min?: number;
  max?: number;
  /** Allowed values of a 'choice' option. */
  choices?: readonly string[];
  /** Placeholder in the help text (default: the name in capitals). */
  metavar?: string;
}

/** A bad command line: the message names the command and the option; exit code 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const camel = (s: string): string => s.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

export type ParsedOptions = Record<string, number | string | boolean | undefined> & { help: boolean };

/** Parse `argv` against `specs`. Values not given take their defaults (undefined when there is none). */
export function parseOptions(cmd: string, argv: readonly string[], specs: readonly OptSpec[]): ParsedOptions {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const out: ParsedOptions = { help: false };
  for (const s of specs) out[camel(s.name)] = s.type === 'flag' ? (s.default ?? false) : s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      out.help = true;
      continue;
    }
    if (!arg.startsWith('--')) throw new UsageError(`${cmd}: unexpected argument '${arg}' (${cmd} --help)`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`${cmd}: unknown option '--${name}' (${cmd} --help)`);
    if (spec.type === 'flag') {
      if (eq >= 0) throw new UsageError(`${cmd}: --${name} takes no value`);
      out[camel(name)] = true;
      continue;
    }
    let raw: string | undefined;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else {
      raw = argv[++i];
      if (raw === undefined || (raw.startsWith('--') && raw.length > 2)) throw new UsageError(`${cmd}: --${name} needs a value`);
    }
    out[camel(name)] = convert(cmd, spec, raw);
  }
  return out;
}

function convert(cmd: string, s: OptSpec, raw: string): number | string {
  const bad = (what: string): never => {
    throw new UsageError(`${cmd}: --${s.name} must be ${what}, got '${raw}'`);
  };
  if (s.type === 'string') {
    if (raw === '') bad('a non-empty string');
    return raw;
  }
  if (s.type === 'choice') {
    if (!s.choices!.includes(raw)) bad(`one of ${s.choices!.join(', ')}`);
    return raw;
  }
  const n = Number(raw);
  const range = [s.min !== undefined ? `>= ${s.min}` : '', s.max !== undefined ? `<= ${s.max}` : ''].filter(Boolean).join(' and ');
  const what = `${s.type === 'int' ? 'an integer' : 'a number'}${range ? ` ${range}` : ''}`;
  if (raw.trim() === '' || !Number.isFinite(n) || (s.type === 'int' && !Number.isInteger(n))) bad(what);
  if ((s.min !== undefined && n < s.min) || (s.max !== undefined && n > s.max)) bad(what);
  return n;
}

/** The `--help` text: a usage line, then one line per option with its default. */
export function formatHelp(usage: string, specs: readonly OptSpec[], notes = ''): string {
  const rows = specs.map((s) => {
    const meta = s.type === 'flag' ? '' : ` ${s.metavar ?? (s.type === 'choice' ? s.choices!.join('|') : s.name.toUpperCase().replace(/-/g, '_'))}`;
    const def = s.default !== undefined && s.type !== 'flag' ? ` (default ${s.default})` : '';
    return [`  --${s.name}${meta}`, `${s.help}${def}`] as const;
  });
  const w = Math.min(40, Math.max(...rows.map(([a]) => a.length)) + 2);
  const lines = rows.map(([a, b]) => (a.length >= w ? `${a}\n${' '.repeat(w)}${b}` : `${a.padEnd(w)}${b}`));
  return `usage: ${usage}\n\noptions:\n${lines.join('\n')}\n  --help${' '.repeat(Math.max(1, w - 8))}this text${notes ? `\n\n${notes}` : ''}`;
}
