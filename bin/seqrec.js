#!/usr/bin/env node
// The `seqrec` command.
//
// Which CLI runs: in a development checkout (cli/seqrec.ts next to this file and tsx resolvable) the TypeScript
// source, through tsx, so a dist/ left behind by `npm ci` (the `prepare` script builds it) can never run stale;
// in the installed package, which ships dist/ and no .ts sources, the compiled CLI. SEQREC_USE_DIST=1 forces
// dist/ (to try the build in a checkout).
//
// stderr: Dawn prints two lines from native code whenever it creates an adapter
//   Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 90 to 16 to fit ...
//   Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 80 to 16 to fit ...
// (its internal cap on limits the GL/Vulkan driver reports higher; nothing the engine requests changes it and
// the kernels use no dynamic offsets). A native fprintf cannot be silenced from JavaScript, so the command runs
// in a child process whose stderr passes through a filter that drops exactly those lines; everything else,
// progress bars included, is forwarded as it comes (cost: one more Node start, about 0.1 s). DEBUG=1 (the engine
// then logs the limits it requested and the capped ones) or SEQREC_RAW_STDERR=1 runs it in this process,
// unfiltered.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = fileURLToPath(import.meta.url);
const root = join(dirname(here), '..');
const env = process.env;
const CHILD = 'SEQREC_STDERR_FILTERED';
const debug = env.DEBUG !== undefined && env.DEBUG !== '' && env.DEBUG !== '0';

// Commands that never create an adapter (help, data) skip the child process.
const args = process.argv.slice(2);
const noGpu = args.length === 0 || ['help', '--help', '-h', 'data'].includes(args[0]) || args.includes('--help') || args.includes('-h');

if (env[CHILD] === '1' || env.SEQREC_RAW_STDERR === '1' || debug || noGpu) {
  if (env[CHILD] === '1') childSetup();
  await runCli();
} else {
  filterParent();
}

/** Import the CLI: the TypeScript source in a checkout, else the compiled one. */
async function runCli() {
  const source = join(root, 'cli', 'seqrec.ts');
  const built = join(root, 'dist', 'cli', 'seqrec.js');
  if (existsSync(source) && env.SEQREC_USE_DIST !== '1') {
    let register = null;
    try {
      ({ register } = await import('tsx/esm/api'));
    } catch (e) {
      if (e?.code !== 'ERR_MODULE_NOT_FOUND' && e?.code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw e;
    }
    if (register) {
      register();
      await import(pathToFileURL(source).href);
      return;
    }
  }
  if (!existsSync(built)) {
    console.error(`seqrec: neither tsx (to run ${source}) nor the compiled CLI ${built} is available; run \`npm ci\` or \`npm run build\``);
    process.exit(1);
  }
  await import(pathToFileURL(built).href);
}

/** In the child: stderr is a pipe; look like the parent's stderr (a TTY keeps its progress bar), die with the parent. */
function childSetup() {
  delete env[CHILD];
  const cols = Number(env.SEQREC_STDERR_TTY_COLUMNS);
  delete env.SEQREC_STDERR_TTY_COLUMNS;
  if (cols > 0) {
    Object.defineProperty(process.stderr, 'isTTY', { value: true, configurable: true });
    Object.defineProperty(process.stderr, 'columns', { value: cols, configurable: true, writable: true });
  }
  if (process.channel) {
    process.channel.unref(); // the IPC channel only tells us when the parent is gone (even after SIGKILL)
    process.on('disconnect', () => process.kill(process.pid, 'SIGKILL')); // (a SIGTERM to itself is not enough)
  }
}

/** In the parent: run this file again as the child and forward its stderr without Dawn's two limit lines. */
function filterParent() {
  const DAWN = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.\r?$/;
  const PREFIX = 'Warning: maxDynamic';
  const childEnv = { ...env, [CHILD]: '1' };
  if (process.stderr.isTTY) childEnv.SEQREC_STDERR_TTY_COLUMNS = String(process.stderr.columns || 80);
  const child = spawn(process.execPath, [...process.execArgv, here, ...args], {
    stdio: ['inherit', 'inherit', 'pipe', 'ipc'],
    env: childEnv,
  });
  let pending = ''; // an unfinished line that may still become one of Dawn's
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    const text = pending + chunk;
    pending = '';
    const lines = text.split('\n');
    const last = lines.pop();
    let out = '';
    for (const line of lines) if (!DAWN.test(line)) out += `${line}\n`;
    // A partial line is held back only while it can still turn into a Dawn warning; anything else (a progress
    // bar redrawn with \r) is written at once.
    if (last !== '' && !last.includes('\r') && (PREFIX.startsWith(last) || last.startsWith(PREFIX))) pending = last;
    else out += last;
    if (out) process.stderr.write(out);
  });
  child.stderr.on('end', () => {
    if (pending && !DAWN.test(pending)) process.stderr.write(pending);
    pending = '';
  });
  // Ctrl-C reaches the whole process group: let the child handle it and report how it ended.
  const forward = (sig) => () => child.kill(sig);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, forward(sig));
  child.on('error', (e) => {
    console.error(`seqrec: could not start ${process.execPath}: ${e.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    const finish = () => {
      if (signal) {
        for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.removeAllListeners(sig);
        process.kill(process.pid, signal);
      } else process.exitCode = code ?? 1;
    };
    if (child.stderr.readableEnded) finish();
    else child.stderr.once('end', finish);
  });
}
