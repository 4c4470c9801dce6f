#!/usr/bin/env node
// First: it replaces two kafkajs internals, which must happen before kafkajs loads.
import './kafka/kafkajs-fast-paths.js';
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { runCheck } from './commands/check.js';
import { dlqList, dlqReplay } from './commands/dlq.js';
import { runNewEpoch } from './commands/new-epoch.js';
import { runSnapshot } from './commands/snapshot.js';
import { runStatus } from './commands/status.js';
import { runVerify } from './commands/verify.js';
import { loadConfig, resolveConfigPath } from './config/load.js';
import type { CompiledConfig } from './config/types.js';
import { ConfigError, describeBug, errorMessage, isProgrammerError } from './core/errors.js';
import { classifyKafkaError } from './kafka/kafka-errors.js';
import { limitHeapGrowth } from './observability/heap-growth.js';
import { createLogger } from './observability/logger.js';
import { ROLES, Runtime, type Role } from './runtime.js';

/** Exit codes: 0 ok, 1 the check found a problem (or the daemon failed), 2 bad usage or config. */
export const EXIT = { ok: 0, problem: 1, usage: 2 } as const;

interface CommonOptions {
  config?: string;
}

async function load(opts: CommonOptions): Promise<CompiledConfig> {
  return loadConfig(resolveConfigPath(opts.config, process.env), { env: process.env });
}

function withConfig(cmd: Command): Command {
  return cmd.option(
    '-c, --config <file>',
    'config file (default: $CACHESYNC_CONFIG, else config/cachesync.yaml)',
  );
}

/** The package's version: package.json sits one level above both src/ and dist/. */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('cachesync')
    .description('Keeps Redis consistent with MySQL/MariaDB: binlog -> Kafka -> Redis')
    .version(packageVersion(), '-V, --version', 'print the version')
    .exitOverride()
    .showHelpAfterError('(run cachesync --help for usage)')
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  withConfig(program.command('run'))
    .description('run the daemon: the binlog tailer, the Redis consumers, or both')
    .addOption(new Option('--role <role>', 'which part to run').choices(ROLES).default('all'))
    .action(async (opts: CommonOptions & { role: Role }) => {
      const config = await load(opts);
      const logger = createLogger({ level: config.log.level });
      const heapGrowingPercent = limitHeapGrowth();
      logger.info(
        { config: config.file, role: opts.role, mappings: config.mappings.length, heapGrowingPercent },
        'starting cachesync',
      );
      let runtime: Runtime;
      try {
        runtime = await Runtime.start(config, { role: opts.role, logger, handleSignals: true });
      } catch (err) {
        if (err instanceof ConfigError) throw err;
        logger.fatal({ err: describeFailure(err) }, 'could not start');
        setExit(EXIT.problem);
        return;
      }
      try {
        await runtime.done;
        setExit(EXIT.ok);
      } catch (err) {
        logger.fatal({ err: describeFailure(err) }, 'cachesync stopped on a fatal error');
        setExit(EXIT.problem);
      }
    });

  withConfig(program.command('check'))
    .description('validate the config and the live servers (binlog settings, grants, tables, Kafka, Redis)')
    .action(async (opts: CommonOptions) => {
      setExit(await runCheck(await load(opts)));
    });

  withConfig(program.command('status'))
    .description('checkpoint, source lag, consumer lag per partition, DLQ depth')
    .option('--json', 'print JSON')
    .action(async (opts: CommonOptions & { json?: boolean }) => {
      const config = await load(opts);
      setExit(await oneShot(config, () => runStatus(config, quietLogger(config), opts)));
    });

  withConfig(program.command('new-epoch'))
    .description(
      'after restoring the database from a backup: start a new source epoch, so every change read from --start on is newer than every change read before (run with the tailer stopped)',
    )
    .option('--start <position>', 'end (default), beginning, a GTID position, or file:pos')
    .action(async (opts: CommonOptions & { start?: string }) => {
      const config = await load(opts);
      setExit(await runNewEpoch(config, quietLogger(config), opts));
    });

  withConfig(program.command('snapshot'))
    .description('load refresh keys from the current table contents, ordered against the live stream')
    .option('--table <db.table>', 'only this table (repeatable)', collect, [])
    .option('--rows-per-second <n>', 'cap on rows read per second', positiveInteger)
    .action(async (opts: CommonOptions & { table: string[]; rowsPerSecond?: number }) => {
      const config = await load(opts);
      setExit(await runSnapshot(config, commandLogger(config), opts));
    });

  withConfig(program.command('verify'))
    .description('compare refresh keys with the database: missing, stale and extra keys; exit 1 on drift')
    .option('--table <db.table>', 'only this table (repeatable)', collect, [])
    .option('--repair', 'fix what differs, through the version guards')
    .option('--json', 'print JSON')
    .action(async (opts: CommonOptions & { table: string[]; repair?: boolean; json?: boolean }) => {
      const config = await load(opts);
      setExit(await runVerify(config, commandLogger(config), opts));
    });

  const dlq = program.command('dlq').description('dead letters: list them, replay them');
  withConfig(dlq.command('list'))
    .description('count dead letters per table and error class')
    .option('--table <db.table>', 'only this table')
    .option('--json', 'print JSON')
    .action(async (opts: CommonOptions & { table?: string; json?: boolean }) => {
      const config = await load(opts);
      setExit(await oneShot(config, () => dlqList(config, quietLogger(config), opts)));
    });
  withConfig(dlq.command('replay'))
    .description('apply dead letters again, through the versioned apply (older than Redis: skipped)')
    .option('--table <db.table>', 'only this table')
    .option('--dry-run', 'report what would be applied and what is stale; change nothing')
    .option('--force', "also replay letters older than the version guards' lifetime")
    .option('--json', 'print JSON')
    .action(
      async (opts: CommonOptions & { table?: string; dryRun?: boolean; json?: boolean; force?: boolean }) => {
        const config = await load(opts);
        setExit(await oneShot(config, () => dlqReplay(config, quietLogger(config), opts)));
      },
    );

  return program;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError(`got "${value}"; expected a whole number of at least 1`);
  }
  return n;
}

/** Long jobs log their progress at info, on stderr, so stdout holds only their result. */
function commandLogger(config: CompiledConfig) {
  return createLogger({
    level: config.log.level,
    pretty: false,
    destination: process.stderr,
  });
}

/** A one-shot command: a Kafka failure is reported as one line naming the brokers. */
async function oneShot(config: CompiledConfig, work: () => Promise<number>): Promise<number> {
  try {
    return await work();
  } catch (err) {
    const name = (err as { name?: unknown }).name;
    if (typeof name === 'string' && name.startsWith('KafkaJS'))
      throw classifyKafkaError(err, `Kafka at ${config.kafka.brokers.join(',')}`);
    throw err;
  }
}

/** A programmer error with where it was thrown; anything else by its message. */
function describeFailure(err: unknown): string {
  return isProgrammerError(err) ? `programmer error (a bug): ${describeBug(err)}` : errorMessage(err);
}

/** Commands that print results keep the log to warnings, on stderr. */
function quietLogger(config: CompiledConfig) {
  return createLogger({
    level: config.log.level === 'silent' ? 'silent' : 'warn',
    pretty: false,
    destination: process.stderr,
  });
}

export async function main(argv: string[]): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram((c) => (code = c));
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end with exit code 0; every other parse error is bad usage.
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return EXIT.usage;
    }
    process.stderr.write(`cachesync: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.problem;
  }
  return code;
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/cachesync')) {
  const exit = (code: number) => {
    process.exitCode = code;
    // Client libraries may hold sockets or timers open after a clean stop; give logs a moment to
    // flush, then leave.
    setTimeout(() => process.exit(code), 300).unref();
  };
  main(process.argv).then(exit, (err: unknown) => {
    process.stderr.write(`cachesync: ${String(err)}\n`);
    exit(EXIT.problem);
  });
}
