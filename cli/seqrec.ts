// seqrec: the command-line entry point. Subcommands live in their own modules and are loaded on demand.
import { destroyGpu, initGpu, INSTALL_HINT } from '../engine/index.js';

const USAGE = `usage: seqrec <command> [options]

commands:
  info [--json]                 WebGPU adapter, backend, feature level, limits and features
  demo [options]                train and evaluate a small next-item model on the bundled sample data
  data <stats|gen-sample|help>  dataset statistics and 99-negative sample files (seqrec data help)
  help                          this text

Environment variables are listed in the README (DEBUG, SYNC, POOL, FLUSH_EVERY, SEQREC_BACKEND, ...).`;

async function info(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const gpu = await initGpu();
  const i = gpu.info;
  if (json) {
    console.log(JSON.stringify(i, null, 2));
  } else {
    const adapter = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / ') || '(no adapter info)';
    console.log(`adapter        ${adapter}`);
    console.log(`backend        ${i.backend}`);
    console.log(`feature level  ${i.featureLevel}`);
    console.log(`features       ${i.features.join(', ') || '(none)'}`);
    console.log('limits');
    for (const [k, v] of Object.entries(i.limits).sort()) console.log(`  ${k.padEnd(44)} ${v}`);
  }
  await destroyGpu();
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'info':
      return info(rest);
    case 'demo': {
      const { runDemo } = await import('./demo.js');
      return runDemo(rest);
    }
    case 'data': {
      const { runDataCommand } = await import('./data.js');
      return runDataCommand(rest);
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      console.error(`seqrec: unknown command '${cmd}'\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const msg = e instanceof Error ? e.message : String(e);
    console.error(`seqrec: ${msg}`);
    if (/No WebGPU adapter/.test(msg) && !msg.includes(INSTALL_HINT)) console.error(INSTALL_HINT);
    if (process.env.DEBUG && e instanceof Error && e.stack) console.error(e.stack);
    process.exitCode = 1;
  },
);
