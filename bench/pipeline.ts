/**
 * Pipeline benchmark: starts its own MariaDB, Redis and Kafka (LocalStack), builds cachesync and
 * runs it as `node dist/cli.js run` in processes of its own, one per scenario and run, while this
 * process drives the workload and measures: MariaDB alone, the tailer alone (binlog -> Kafka), both
 * roles (binlog -> Redis) in one process and in two, with a plain and a richer mapping, commit -> Redis latency, and memory
 * through one big transaction with a kill -9 inside it. Not a test: it measures, it does not
 * judge, except that it exits 1 when a row never arrived.
 *
 *   npm run bench -- [--rows N] [--runs N] [--only a,b] [--rate R] [--seconds D] [--bigtx-rows N]
 *                    [--json] [--keep-stack]
 *
 * The driver runs in a child process of its own process group (see detached.ts), so that Ctrl-C
 * always gets to stop cachesync and the servers.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { Redis } from 'ioredis';
import { Kafka, logLevel } from 'kafkajs';
import mysql from 'mysql2/promise';
import { LocalStack, REPO_ROOT } from '../scripts/local-stack/local-stack.js';
import { loadConfig } from '../src/config/load.js';
import { CLI_ENTRY } from './cachesync-process.js';
import { Cleanup } from './cleanup.js';
import { runDetached } from './detached.js';
import { formatText, summarize, type BenchReport } from './report.js';
import {
  DB,
  ROWS_PER_STATEMENT,
  SCENARIOS,
  configYaml,
  runScenario,
  type BenchContext,
  type ScenarioName,
} from './scenarios.js';

const USAGE = `usage: npm run bench -- [options]

  --rows N        rows inserted per scenario, in 1000-row INSERTs, default 200000
  --runs N        times each scenario runs; the median and the range are printed, default 3
  --only LIST     scenarios to run, comma-separated, of: ${SCENARIOS.join(', ')}
                  (default all; rich brings mariadb along for its ratio)
  --rate R        updates per second of the latency scenario, default 200
  --seconds D     duration of the latency scenario's updates, default 20
  --bigtx-rows N  rows of the bigtx scenario's one transaction, default 300000
  --warm-up-rows N  rows of an unmeasured both-roles pass before the first run, so that the
                  servers (Kafka's JVM above all) and cachesync's code are warm, as they are in
                  production; default 50000, 0 for none
  --config FILE   YAML sections appended to every scenario's cachesync config, to measure
                  other settings (tailer:, consumer:); the printed settings show them
  --node-arg FLAG a flag for node in every cachesync process (repeatable), e.g.
                  --node-arg=--cpu-prof --node-arg=--cpu-prof-dir=/tmp/prof
  --json          print the figures as JSON instead of a table
  --keep-stack    leave MariaDB, Redis and Kafka running afterwards
  -h, --help      this text

Environment: CACHESYNC_BENCH_BASE_PORT (default 24500; MariaDB on it, Redis +1, Kafka +2 and +3,
cachesync's /metrics +4, the split and catchup scenarios' consumer's +5).`;

/** Connections of the latency scenario: enough that a slow commit never holds up the next update. */
const POOL_SIZE = 16;
const STACK_DIR = join(REPO_ROOT, '.stack', 'bench');
/** cachesync's configs and logs. */
const RUN_DIR = join(STACK_DIR, 'cachesync');
const run = promisify(execFile);

interface BenchArgs {
  basePort: number;
  rows: number;
  runs: number;
  scenarios: ScenarioName[];
  rate: number;
  seconds: number;
  bigtxRows: number;
  warmUpRows: number;
  extraConfig: string;
  nodeArgs: string[];
  json: boolean;
  keepStack: boolean;
  help: boolean;
}

class UsageError extends Error {}

function parseBenchArgs(argv: string[]): BenchArgs {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        rows: { type: 'string' },
        runs: { type: 'string' },
        only: { type: 'string' },
        rate: { type: 'string' },
        seconds: { type: 'string' },
        'bigtx-rows': { type: 'string' },
        'warm-up-rows': { type: 'string' },
        config: { type: 'string' },
        'node-arg': { type: 'string', multiple: true },
        json: { type: 'boolean', default: false },
        'keep-stack': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const basePort = positive('CACHESYNC_BENCH_BASE_PORT', process.env.CACHESYNC_BENCH_BASE_PORT, 24500, true);
  if (basePort + 5 > 65_535) throw new UsageError(`CACHESYNC_BENCH_BASE_PORT must be at most 65530`);
  return {
    basePort,
    rows: positive('--rows', values.rows, 200_000, true),
    runs: positive('--runs', values.runs, 3, true),
    scenarios: scenarioList(values.only),
    rate: positive('--rate', values.rate, 200, false),
    seconds: positive('--seconds', values.seconds, 20, false),
    bigtxRows: positive('--bigtx-rows', values['bigtx-rows'], 300_000, true),
    warmUpRows:
      values['warm-up-rows'] === '0' ? 0 : positive('--warm-up-rows', values['warm-up-rows'], 50_000, true),
    extraConfig: values.config === undefined ? '' : readExtraConfig(values.config),
    nodeArgs: values['node-arg'] ?? [],
    json: values.json,
    keepStack: values['keep-stack'],
    help: values.help,
  };
}

function readExtraConfig(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--config ${file}: ${(err as Error).message}`);
  }
}

function positive(name: string, text: string | undefined, fallback: number, integer: boolean): number {
  if (text === undefined) return fallback;
  const n = Number(text.replaceAll('_', ''));
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new UsageError(`${name} must be a positive ${integer ? 'whole ' : ''}number; got "${text}"`);
  }
  return n;
}

/** The scenarios asked for, in the bench's order; rich's ratio needs mariadb in the same run. */
function scenarioList(text: string | undefined): ScenarioName[] {
  if (text === undefined) return [...SCENARIOS];
  const asked = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const name of asked) {
    if (!(SCENARIOS as readonly string[]).includes(name)) {
      throw new UsageError(`--only: unknown scenario "${name}"; expected some of ${SCENARIOS.join(', ')}`);
    }
  }
  if (asked.length === 0) throw new UsageError(`--only: expected some of ${SCENARIOS.join(', ')}`);
  if (asked.includes('rich')) asked.push('mariadb');
  return SCENARIOS.filter((s) => asked.includes(s));
}

function progress(msg: string): void {
  console.error(`[bench] ${msg}`);
}

async function main(argv: string[]): Promise<number> {
  let args: BenchArgs;
  try {
    args = parseBenchArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }

  const cleanup = new Cleanup(progress);
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) {
      progress(`second ${signal}: exiting now; servers may still run (pids in ${STACK_DIR}/*/server.pid)`);
      process.exit(130);
    }
    interrupted = true;
    progress(`${signal}: stopping`);
    void cleanup.run().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const report = await runBench(args, cleanup);
    console.log(args.json ? JSON.stringify(report, null, 2) : formatText(report));
    return report.ok ? 0 : 1;
  } catch (err) {
    if (interrupted) return 130;
    progress(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 1;
  } finally {
    await cleanup.run();
  }
}

async function runBench(args: BenchArgs, cleanup: Cleanup): Promise<BenchReport> {
  progress('building cachesync (npm run build)');
  await run('npm', ['run', 'build'], { cwd: REPO_ROOT }).catch((err: Error & { stdout?: string }) => {
    throw new Error(`npm run build failed:\n${err.stdout ?? ''}${err.message}`);
  });
  if (!existsSync(CLI_ENTRY)) throw new Error(`npm run build made no ${CLI_ENTRY}`);

  const { basePort } = args;
  const stack = new LocalStack({ dir: STACK_DIR, basePort, log: (msg) => progress(`stack: ${msg}`) });
  if (args.keepStack) {
    cleanup.add('stack notice', () => {
      progress(`servers left running (--keep-stack): ${JSON.stringify(stack.endpoints)}`);
      progress(`the next \`npm run bench\` replaces them; pids are in ${STACK_DIR}/*/server.pid`);
      return Promise.resolve();
    });
  } else {
    cleanup.add('stack', async () => {
      progress('stopping the servers');
      await stack.down();
    });
  }
  progress(`starting MariaDB, Redis and Kafka on 127.0.0.1:${basePort}-${basePort + 3}`);
  const endpoints = await stack.up({ fresh: true }).catch((err: Error) => {
    throw new Error(
      `${err.message}\n(the bench's ports start at CACHESYNC_BENCH_BASE_PORT, now ${basePort})`,
    );
  });
  rmSync(RUN_DIR, { recursive: true, force: true });
  mkdirSync(RUN_DIR, { recursive: true });

  const sql = await mysql.createConnection({ ...endpoints.mysql, dateStrings: true });
  cleanup.add('sql connection', () => sql.end());
  await sql.query(`CREATE DATABASE ${DB}`);
  const pool = mysql.createPool({ ...endpoints.mysql, connectionLimit: POOL_SIZE });
  cleanup.add('sql pool', () => pool.end());
  // Open every pool connection now, so the latency scenario's commit times hold no connect.
  await Promise.all(Array.from({ length: POOL_SIZE }, () => pool.query('SELECT 1')));
  const redis = new Redis(endpoints.redisUrl);
  cleanup.add('redis', () => redis.quit());
  const subscriber = new Redis(endpoints.redisUrl);
  cleanup.add('redis subscriber', () => subscriber.quit());
  const admin = new Kafka({
    clientId: 'cachesync-bench',
    brokers: endpoints.kafkaBrokers,
    logLevel: logLevel.NOTHING,
  }).admin();
  await admin.connect();
  cleanup.add('kafka admin', () => admin.disconnect());

  const ctx: BenchContext = {
    endpoints,
    sql,
    pool,
    redis,
    subscriber,
    admin,
    cleanup,
    dir: RUN_DIR,
    metricsPort: basePort + 4,
    rows: args.rows,
    rate: args.rate,
    seconds: args.seconds,
    bigtxRows: args.bigtxRows,
    extraConfig: args.extraConfig,
    nodeArgs: args.nodeArgs,
    serverPids: serverPids(stack),
    progress,
  };
  const environment = await describeEnvironment(stack, sql, redis);
  const pipeline = await pipelineSettings(ctx);

  if (args.warmUpRows > 0) {
    // A fresh broker interprets its request paths for the first seconds of load: a first run
    // measured on it is slower than every later one, and slower than a broker in production.
    progress(`warm-up: both roles, ${args.warmUpRows} rows, not measured`);
    const warm = await runScenario({ ...ctx, rows: args.warmUpRows }, 'both', 0);
    if (!warm.ok) throw new Error('the warm-up pass did not apply every row; see the log above');
  }
  const runs: BenchReport['runs'] = [];
  for (let i = 1; i <= args.runs; i++) {
    const results: BenchReport['runs'][number] = {};
    runs.push(results);
    for (const scenario of args.scenarios) {
      progress(`run ${i} of ${args.runs}: ${scenario}`);
      results[scenario] = await runScenario(ctx, scenario, i);
    }
  }

  const { summary, targets } = summarize(runs, args.scenarios);
  return {
    environment,
    pipeline,
    workload: {
      rows: args.rows,
      rowsPerStatement: ROWS_PER_STATEMENT,
      rate: args.rate,
      seconds: args.seconds,
      bigtxRows: args.bigtxRows,
      warmUpRows: args.warmUpRows,
      runs: args.runs,
      scenarios: args.scenarios,
    },
    runs,
    summary,
    targets,
    ok: runs.every((results) => Object.values(results).every((r) => r.ok)),
  };
}

/** The pid of each server of the stack, for its CPU over each phase. */
function serverPids(stack: LocalStack): Record<string, number> {
  const pids: Record<string, number> = {};
  for (const server of ['mariadb', 'kafka', 'redis'] as const) {
    const pid = stack.pid(server);
    if (pid === undefined) throw new Error(`the stack recorded no pid for ${server}`);
    pids[server] = pid;
  }
  return pids;
}

/** The settings every scenario's cachesync runs with, read from a config of the same form. */
async function pipelineSettings(ctx: BenchContext): Promise<BenchReport['pipeline']> {
  const file = join(ctx.dir, 'settings.yaml');
  writeFileSync(file, configYaml(ctx, 'settings', `${DB}.settings`));
  const config = await loadConfig(file, { env: {} }).catch((err: Error) => {
    throw new Error(`the bench's cachesync config is invalid (${file}): ${err.message}`);
  });
  rmSync(file);
  return {
    kafkaPartitions: config.kafka.partitions,
    tailerBatchSize: config.tailer.batchSize,
    tailerMaxBufferedEvents: config.tailer.maxBufferedEvents,
    tailerLingerMs: config.tailer.lingerMs,
    tailerCompression: config.tailer.compression,
    consumerPartitionsConcurrently: config.consumer.partitionsConcurrently,
    consumerMaxFetchBytes: config.consumer.maxFetchBytes,
    ...(ctx.nodeArgs.length > 0 ? { nodeArgs: ctx.nodeArgs } : {}),
  };
}

async function describeEnvironment(
  stack: LocalStack,
  sql: mysql.Connection,
  redis: Redis,
): Promise<BenchReport['environment']> {
  const [rows] = await sql.query<mysql.RowDataPacket[]>('SELECT VERSION() AS version');
  const info = await redis.info('server');
  return {
    cores: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    mariadb: String(rows[0]?.version ?? 'unknown'),
    redis: /^redis_version:(\S+)/m.exec(info)?.[1] ?? 'unknown',
    kafka: kafkaVersion(stack),
  };
}

/** The version of the Kafka jar on the running broker's class path (Linux: read from /proc). */
function kafkaVersion(stack: LocalStack): string {
  try {
    const argv = readFileSync(`/proc/${stack.pid('kafka')}/cmdline`, 'utf8').split('\0');
    const classPath = argv[argv.indexOf('-cp') + 1] ?? '';
    const jars = readdirSync(dirname(classPath));
    for (const jar of jars) {
      const version = /^kafka_[\d.]+-(\d[\w.-]*)\.jar$/.exec(jar)?.[1];
      if (version) return version;
    }
  } catch {
    // not Linux, or the broker is gone: say so below
  }
  return 'unknown';
}

const WORKER_ENV = 'CACHESYNC_BENCH_WORKER';
const argv = process.argv.slice(2);
const exitCode =
  process.env[WORKER_ENV] === '1'
    ? main(argv)
    : runDetached(fileURLToPath(import.meta.url), argv, { ...process.env, [WORKER_ENV]: '1' });
exitCode.then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
