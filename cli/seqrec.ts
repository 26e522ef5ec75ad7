// seqrec: the command-line entry point. Subcommands live in their own modules and are loaded on demand.
import { destroyGpu, initGpu, INSTALL_HINT } from '../engine/index.js';

const USAGE = `usage: seqrec <command> [options]

commands:
  info [--json]                 WebGPU adapter, backend, feature level, limits and features
  demo [options]                S3-Rec (pretrained and SASRec mode) and AttRec on the bundled sample data
  finetune [options]            fine-tune S3-Rec (from a pretrained checkpoint, or SASRec mode without one)
  pretrain [options]            S3-Rec self-supervised pretraining (AAP, MIP, MAP, SP)
  train --model attrec [...]    train and evaluate AttRec
  eval --model s3rec|attrec     evaluate a checkpoint
  data <stats|gen-sample|help>  dataset statistics and 99-negative sample files (seqrec data help)
  bench [filter ...] [options]  kernel and training-step benchmarks, validated first (seqrec bench --help)
  help                          this text

Environment variables are listed in the README (DEBUG, SYNC, POOL, FLUSH_EVERY, SEQREC_BACKEND, ...).`;

async function info(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const bad = argv.find((a) => a !== '--json');
  if (bad !== undefined) {
    console.error(`seqrec info: unknown option '${bad}' (usage: seqrec info [--json])`);
    return 2;
  }
  const gpu = await initGpu();
  const i = gpu.info;
  if (json) {
    console.log(JSON.stringify(i, null, 2));
  } else {
    const adapter = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / ') || '(no adapter info)';
    console.log(`adapter        ${adapter}`);
    console.log(`backend        ${i.backend}`);
    console.log(`feature level  ${i.featureLevel}`);
    if (i.softwareThreads) console.log(`threads        ${i.softwareThreads} (LP_NUM_THREADS: Mesa's software adapter)`);
    console.log(`features       ${i.features.join(', ') || '(none)'}`);
    console.log('limits');
    for (const [k, v] of Object.entries(i.limits).sort()) console.log(`  ${k.padEnd(44)} ${v}`);
  }
  await destroyGpu();
  return 0;
}

/** The value of --model (or --model=...), if any. */
function modelArg(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--model') return argv[i + 1];
    if (argv[i]!.startsWith('--model=')) return argv[i]!.slice(8);
  }
  return undefined;
}

function withoutModel(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--model') i++;
    else if (!argv[i]!.startsWith('--model=')) out.push(argv[i]!);
  }
  return out;
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
    case 'finetune': {
      const { runFinetune } = await import('./s3rec.js');
      return runFinetune(rest);
    }
    case 'pretrain': {
      const { runPretrain } = await import('./s3rec_pretrain.js');
      return runPretrain(rest);
    }
    case 'train': {
      const model = modelArg(rest);
      if (model !== 'attrec') {
        console.error(model === 's3rec' ? 'seqrec train: S3-Rec trains with `seqrec pretrain` and `seqrec finetune`' : `seqrec train: --model attrec is required (got ${model ?? 'none'})`);
        return 2;
      }
      const { runAttRecTrain } = await import('./attrec.js');
      return runAttRecTrain(withoutModel(rest));
    }
    case 'eval': {
      const model = modelArg(rest) ?? 's3rec';
      if (model === 's3rec') {
        const { runEval } = await import('./s3rec.js');
        return runEval(withoutModel(rest));
      }
      if (model === 'attrec') {
        const { runAttRecEval } = await import('./attrec.js');
        return runAttRecEval(withoutModel(rest));
      }
      console.error(`seqrec eval: --model must be s3rec or attrec, got '${model}'`);
      return 2;
    }
    case 'data': {
      const { runDataCommand } = await import('./data.js');
      return runDataCommand(rest);
    }
    case 'bench': {
      const { runBench } = await import('../bench/run.js');
      return runBench(rest);
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
    console.error(msg.startsWith('seqrec') ? msg : `seqrec: ${msg}`);
    if (/No WebGPU adapter/.test(msg) && !msg.includes(INSTALL_HINT)) console.error(INSTALL_HINT);
    if (process.env.DEBUG && e instanceof Error && e.stack) console.error(e.stack);
    process.exitCode = (e as { exitCode?: number }).exitCode ?? 1;
  },
);
