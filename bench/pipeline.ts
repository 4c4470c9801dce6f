/**
 * Pipeline benchmark: starts its own MariaDB, Redis and Kafka (LocalStack), runs cachesync
 * in-process with role `all`, and prints figures for a bulk insert (throughput) and a steady
 * stream of single-row updates (commit-to-Redis latency). Not a test: it measures, it does not
 * judge, except that it exits 1 when a row never reached Redis.
 *
 *   npm run bench -- [--rows N] [--rate R] [--seconds D] [--json] [--keep-stack]
 *
 * The measuring runs in a child process of its own process group (see detached.ts), so that
 * Ctrl-C always gets to stop the servers.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import {
  LocalStack,
  REPO_ROOT,
  stackConfigSections,
  type StackEndpoints,
} from '../scripts/local-stack/local-stack.js';
import { loadConfig } from '../src/config/load.js';
import type { CompiledConfig } from '../src/config/types.js';
import { createLogger, silentLogger, type Logger } from '../src/observability/logger.js';
import { Metrics } from '../src/observability/metrics.js';
import { Runtime } from '../src/runtime.js';
import { insertRows, runBulkInsert } from './bulk-insert.js';
import { runDetached } from './detached.js';
import { formatText, type BenchReport } from './report.js';
import { ProcessSampler } from './process-sampler.js';
import { counterSum } from './stats.js';
import { runSteadyUpdates } from './steady-updates.js';

const USAGE = `usage: npm run bench -- [options]

  --rows N        rows of the bulk insert (workload A), default 100000
  --rate R        updates per second of workload B, default 200
  --seconds D     duration of workload B, default 20
  --json          print the figures as JSON instead of a table
  --keep-stack    leave MariaDB, Redis and Kafka running afterwards
  -h, --help      this text

Environment: CACHESYNC_BENCH_BASE_PORT (default 34500; MariaDB on it, Redis +1, Kafka +2 and +3),
CACHESYNC_BENCH_LOG=<level> to see the runtime's log on stderr.`;

const DB = 'bench';
const TABLE = `${DB}.items`;
/** Same shape as TABLE, not mapped, filled before cachesync starts: the database's speed alone. */
const BASELINE_TABLE = `${DB}.items_baseline`;
const TABLE_COLUMNS =
  '(id BIGINT PRIMARY KEY, name VARCHAR(64), price DECIMAL(12,2), updated_at DATETIME(6))';
const KEY_PREFIX = 'item:';
const ROWS_PER_STATEMENT = 1000;
/** Connections of workload B: enough that a slow commit never holds up the next update. */
const POOL_SIZE = 16;
const STACK_DIR = join(REPO_ROOT, '.stack', 'bench');

interface BenchArgs {
  basePort: number;
  rows: number;
  rate: number;
  seconds: number;
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
        rate: { type: 'string' },
        seconds: { type: 'string' },
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
  const basePort = positive('CACHESYNC_BENCH_BASE_PORT', process.env.CACHESYNC_BENCH_BASE_PORT, 34500, true);
  if (basePort + 3 > 65_535) throw new UsageError(`CACHESYNC_BENCH_BASE_PORT must be at most 65532`);
  return {
    basePort,
    rows: positive('--rows', values.rows, 100_000, true),
    rate: positive('--rate', values.rate, 200, false),
    seconds: positive('--seconds', values.seconds, 20, false),
    json: values.json,
    keepStack: values['keep-stack'],
    help: values.help,
  };
}

function positive(name: string, text: string | undefined, fallback: number, integer: boolean): number {
  if (text === undefined) return fallback;
  const n = Number(text.replaceAll('_', ''));
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new UsageError(`${name} must be a positive ${integer ? 'whole ' : ''}number; got "${text}"`);
  }
  return n;
}

function progress(msg: string): void {
  console.error(`[bench] ${msg}`);
}

/** Cleanup steps, run once, newest first, each whatever the others did. */
class Cleanup {
  private readonly steps: Array<{ what: string; run: () => Promise<unknown> }> = [];
  private running: Promise<void> | undefined;

  add(what: string, run: () => Promise<unknown>): void {
    this.steps.push({ what, run });
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of [...this.steps].reverse()) {
        try {
          await step.run();
        } catch (err) {
          progress(`cleanup (${step.what}) failed: ${(err as Error).message}`);
        }
      }
    })();
    return this.running;
  }
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

  const cleanup = new Cleanup();
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
    const report = await run(args, cleanup);
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

async function run(args: BenchArgs, cleanup: Cleanup): Promise<BenchReport> {
  const sampler = new ProcessSampler(100);
  sampler.start('servers start');
  cleanup.add('process sampler', () => Promise.resolve(sampler.stop()));

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

  const sql = await mysql.createConnection({ ...endpoints.mysql, dateStrings: true });
  cleanup.add('sql connection', () => sql.end());
  await sql.query(`CREATE DATABASE ${DB}`);
  await sql.query(`CREATE TABLE ${TABLE} ${TABLE_COLUMNS}`);
  const pool = mysql.createPool({ ...endpoints.mysql, connectionLimit: POOL_SIZE });
  cleanup.add('sql pool', () => pool.end());
  const redis = new Redis(endpoints.redisUrl);
  cleanup.add('redis', () => redis.quit());
  const subscriber = new Redis(endpoints.redisUrl);
  cleanup.add('redis subscriber', () => subscriber.quit());

  const environment = await describeEnvironment(stack, sql, redis);

  sampler.enter('baseline insert');
  progress(`baseline: inserting ${args.rows} rows into an unmapped table, cachesync not running`);
  await sql.query(`CREATE TABLE ${BASELINE_TABLE} ${TABLE_COLUMNS}`);
  const baseline = await insertRows(sql, BASELINE_TABLE, args.rows, ROWS_PER_STATEMENT);
  await sql.query(`DROP TABLE ${BASELINE_TABLE}`);

  sampler.enter('cachesync start');
  const config = await loadConfig(writeConfig(endpoints), { env: {} });

  progress('starting cachesync in this process (role all)');
  const runtime = await Runtime.start(config, {
    role: 'all',
    logger: benchLogger(),
    metrics: new Metrics({ defaultMetrics: false }),
    graceMs: 10_000,
  });
  cleanup.add('runtime', () => runtime.stop());
  const guard = runtimeGuard(runtime);
  await guard(until('cachesync ready', () => Promise.resolve(runtime.health.ready()), 90_000));
  await guard(warmUp(sql, runtime));
  // Open every pool connection now, so workload B's commit times hold no connect.
  await Promise.all(Array.from({ length: POOL_SIZE }, () => pool.query('SELECT 1')));

  sampler.enter('bulk insert');
  progress(`A: inserting ${args.rows} rows, ${ROWS_PER_STATEMENT} per INSERT`);
  const bulkInsert = await guard(
    runBulkInsert({
      sql,
      redis,
      metrics: runtime.metrics,
      table: TABLE,
      keyPrefix: KEY_PREFIX,
      rows: args.rows,
      rowsPerStatement: ROWS_PER_STATEMENT,
      progress: (msg) => progress(`A: ${msg}`),
    }),
  );

  sampler.enter('steady updates');
  progress(`B: updating ${args.rate} rows/s for ${args.seconds} s`);
  const steadyUpdates = await guard(
    runSteadyUpdates({
      pool,
      redis,
      subscriber,
      metrics: runtime.metrics,
      table: TABLE,
      ids: args.rows,
      keyPrefix: KEY_PREFIX,
      redisDb: redis.options.db ?? 0,
      rate: args.rate,
      seconds: args.seconds,
      progress: (msg) => progress(`B: ${msg}`),
    }),
  );
  sampler.stop();

  return {
    environment,
    pipeline: pipelineSettings(config),
    baselineInsert: { ...baseline, rowsPerSecond: args.rows / baseline.seconds },
    bulkInsert,
    steadyUpdates,
    process: { peakRssBytes: sampler.peakRssBytes, phases: sampler.usageByPhase },
    ok: bulkInsert.verify.ok && steadyUpdates.missing === 0 && steadyUpdates.failed === 0,
  };
}

/** Same shape as the integration tests' config, with the pipeline's own defaults. */
function writeConfig(endpoints: StackEndpoints): string {
  const run = `bench-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const yaml = [
    ...stackConfigSections(endpoints, { name: run }),
    'metrics:',
    '  port: 0',
    '  host: 127.0.0.1',
    'log:',
    '  level: warn',
    'mappings:',
    `  - table: ${TABLE}`,
    '    keys:',
    `      - key: "${KEY_PREFIX}{id}"`,
    '        action: refresh',
    '        format: json',
    '',
  ].join('\n');
  const file = join(STACK_DIR, 'cachesync-bench.yaml');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, yaml);
  return file;
}

function benchLogger(): Logger {
  const level = process.env.CACHESYNC_BENCH_LOG;
  return level ? createLogger({ level, pretty: false, destination: process.stderr }) : silentLogger();
}

/** Wraps the bench's waits so that a runtime that stops or fails ends them at once. */
function runtimeGuard(runtime: Runtime): <T>(work: Promise<T>) => Promise<T> {
  const stopped = runtime.done.then(
    () => Promise.reject(new Error('cachesync stopped during the benchmark')),
    (err: unknown) => Promise.reject(new Error(`cachesync failed: ${(err as Error).message ?? String(err)}`)),
  );
  stopped.catch(() => undefined);
  return <T>(work: Promise<T>) => Promise.race([work, stopped]);
}

/**
 * One insert and one delete through the whole pipeline before measuring, so that the consumer
 * group's join and the first connections are not part of workload A.
 */
async function warmUp(sql: mysql.Connection, runtime: Runtime): Promise<void> {
  const series = { table: TABLE };
  const before = await counterSum(runtime.metrics.changesApplied, series);
  await sql.query(`INSERT INTO ${TABLE} (id, name, price, updated_at) VALUES (0, 'warm-up', 0, NOW(6))`);
  await sql.query(`DELETE FROM ${TABLE} WHERE id = 0`);
  await until(
    'the warm-up changes applied',
    async () => (await counterSum(runtime.metrics.changesApplied, series)) >= before + 2,
    120_000,
  );
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(20);
  }
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

function pipelineSettings(config: CompiledConfig): BenchReport['pipeline'] {
  return {
    kafkaPartitions: config.kafka.partitions,
    tailerBatchSize: config.tailer.batchSize,
    tailerLingerMs: config.tailer.lingerMs,
    consumerPartitionsConcurrently: config.consumer.partitionsConcurrently,
  };
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
