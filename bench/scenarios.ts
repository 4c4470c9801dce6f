import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { Admin } from 'kafkajs';
import type mysql from 'mysql2/promise';
import { stackConfigSections, type StackEndpoints } from '../scripts/local-stack/local-stack.js';
import { loadConfig } from '../src/config/load.js';
import {
  TABLE_COLUMNS,
  checkKeys,
  insertAndWait,
  insertRows,
  nextPollMs,
  type InsertAndWaitResult,
  type KeyCheck,
  type Progress,
} from './bulk-insert.js';
import { CachesyncProcess, type CachesyncRole } from './cachesync-process.js';
import type { Cleanup } from './cleanup.js';
import { PhaseMonitor, ServersCpu, driverCpu, processMemory, type PhaseUsage } from './proc-usage.js';
import { counterSum, histogramOf } from './stats.js';
import { runSteadyUpdates, type SteadyUpdatesResult } from './steady-updates.js';

export const SCENARIOS = [
  'mariadb',
  'tailer',
  'both',
  'split',
  'catchup',
  'rich',
  'latency',
  'bigtx',
] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export const DB = 'bench';
export const ROWS_PER_STATEMENT = 1000;
export const PARTITIONS = 4;
/** How often the driver reads cachesync's /metrics while waiting: each read costs cachesync a little CPU. */
const METRICS_POLL_MS = 50;
/** How often the driver reads the topic's high watermarks (costs the broker, not cachesync). */
const TOPIC_POLL_MS = 20;
const READY_TIMEOUT_MS = 120_000;

export interface BenchContext {
  endpoints: StackEndpoints;
  /** Root connection to MariaDB: DDL and the INSERTs. */
  sql: mysql.Connection;
  /** Connections for the single-row UPDATEs, all opened beforehand. */
  pool: mysql.Pool;
  redis: Redis;
  /** Put in subscriber mode by the latency scenario. */
  subscriber: Redis;
  admin: Admin;
  cleanup: Cleanup;
  /** Where the cachesync configs and logs go. */
  dir: string;
  metricsPort: number;
  rows: number;
  rate: number;
  seconds: number;
  /** Rows of the bigtx scenario's one transaction. */
  bigtxRows: number;
  /** YAML sections appended to every scenario's config (`tailer:`, `consumer:`), or ''. */
  extraConfig: string;
  /** Flags for node in every cachesync process. */
  nodeArgs: string[];
  /** The servers' pids, by name (mariadb, kafka, redis), for their CPU over each phase. */
  serverPids: Record<string, number>;
  progress: (msg: string) => void;
}

/** cachesync's use of the machine over the measured phase, and the bench driver's. */
export interface CachesyncUsage extends PhaseUsage {
  /** cpuSeconds per row (per update in the latency scenario), microseconds. */
  cpuMicrosPerRow: number;
  /**
   * split: each process's own figures (`cpuSeconds` and the memory figures above are their sums;
   * the sum of two peaks bounds, and may exceed, the two processes' peak together).
   */
  processes?: Array<PhaseUsage & { role: CachesyncRole; cpuMicrosPerRow: number; logFile: string }>;
  driverCpuSeconds: number;
  /** CPU seconds of each server (mariadb, kafka, redis) over the same phase. */
  serversCpuSeconds: Record<string, number>;
  logFile: string;
}

export interface InsertFigures {
  statements: number;
  /** First INSERT until the last COMMIT returned. */
  seconds: number;
  rowsPerSecond: number;
}

export interface MariadbResult {
  scenario: 'mariadb';
  rows: number;
  insert: InsertFigures;
  driverCpuSeconds: number;
  /** CPU seconds of each server (mariadb, kafka, redis) over the INSERTs. */
  serversCpuSeconds: Record<string, number>;
  ok: boolean;
}

export interface BulkResult {
  scenario: 'tailer' | 'both' | 'split' | 'catchup' | 'rich';
  /** Rows inserted; catchup: changes the consumer applied in the measured phase. */
  rows: number;
  /** The INSERTs, as MariaDB took them while cachesync ran. */
  insert: InsertFigures;
  /**
   * First INSERT until every row was on the topic (tailer) or applied to Redis (both, split, rich);
   * catchup: the consumer ready until every change of the backlog was applied.
   */
  seconds: number;
  rowsPerSecond: number;
  cachesync: CachesyncUsage;
  /** What Redis held afterwards; empty for the tailer. */
  keys: KeyCheck[];
  ok: boolean;
}

export interface LatencyResult {
  scenario: 'latency';
  /** The rows the updates pick from, inserted and applied before measuring. */
  loadedRows: number;
  updates: SteadyUpdatesResult;
  /** Over the updates; per row means per update issued. */
  cachesync: CachesyncUsage;
  ok: boolean;
}

/** One role's half of the bigtx scenario: the transaction, the kill -9 inside it, the replay. */
export interface BigTxRun {
  role: 'tailer' | 'all';
  /** The INSERT ... SELECT of every row, until its COMMIT returned. */
  insertSeconds: number;
  /** The transaction's messages on the topic when the first process was killed. */
  onTopicAtKill: number;
  /** VmHWM of the first process just before its kill -9: its peak since it started. */
  hwmBeforeKillBytes: number;
  /** VmHWM of the restarted process once every row was through again. */
  hwmReplayBytes: number;
  /** Start of the restarted process until /readyz answered 200. */
  readySeconds: number;
  /** Start of the restarted process until every row was on the topic again (tailer) or in Redis (all). */
  replaySeconds: number;
  /** What Redis held afterwards; empty for the tailer. */
  keys: KeyCheck[];
  /** The first process's log, then the restarted one's. */
  logFiles: string[];
  ok: boolean;
}

export interface BigTxResult {
  scenario: 'bigtx';
  rows: number;
  tailer: BigTxRun;
  all: BigTxRun;
  ok: boolean;
}

export type ScenarioResult = MariadbResult | BulkResult | LatencyResult | BigTxResult;

/** One scenario, the `run`th time: its own table, topics, group and cachesync process. */
export async function runScenario(
  ctx: BenchContext,
  scenario: ScenarioName,
  run: number,
): Promise<ScenarioResult> {
  const log = (msg: string) => ctx.progress(`${scenario} #${run}: ${msg}`);
  // Two tables of its own, one per role.
  if (scenario === 'bigtx') return bigTransaction(ctx, run, log);
  const name = `${scenario}-${run}`;
  const table = `${DB}.${scenario}_${run}`;
  await ctx.sql.query(`CREATE TABLE ${table} ${TABLE_COLUMNS}`);
  // Nothing left from another scenario: its keys, version guards and delayed deletes.
  await ctx.redis.flushall();
  try {
    switch (scenario) {
      case 'mariadb':
        return await mariadb(ctx, table, log);
      case 'tailer':
        return await bulk(ctx, { scenario, name, table, role: 'tailer', keys: [ITEM_KEY] }, log);
      case 'both':
        return await bulk(ctx, { scenario, name, table, role: 'all', keys: [ITEM_KEY] }, log);
      case 'split':
        return await bulk(ctx, { scenario, name, table, role: 'split', keys: [ITEM_KEY] }, log);
      case 'catchup':
        return await catchUp(ctx, name, table, log);
      case 'rich':
        return await bulk(ctx, { scenario, name, table, role: 'all', keys: RICH_KEYS }, log);
      case 'latency':
        return await latency(ctx, name, table, log);
    }
  } finally {
    await ctx.sql.query(`DROP TABLE IF EXISTS ${table}`);
  }
}

/** One key of a mapping, and how the bench checks it afterwards. */
export interface KeySpec {
  prefix: string;
  yaml: string[];
  check: KeyCheck['format'];
}

const ITEM_KEY: KeySpec = {
  prefix: 'item:',
  yaml: ['action: refresh', 'format: json'],
  check: 'json',
};

/** Per row: a JSON refresh key, a hash refresh key and an invalidate key deleted again 500 ms later. */
const RICH_KEYS: KeySpec[] = [
  { prefix: 'user:', yaml: ['action: refresh', 'format: json'], check: 'json' },
  { prefix: 'userh:', yaml: ['action: refresh', 'format: hash'], check: 'hash' },
  { prefix: 'userx:', yaml: ['action: invalidate', 'delayedRedelete: 500ms'], check: 'deleted' },
];

async function mariadb(ctx: BenchContext, table: string, log: (msg: string) => void): Promise<MariadbResult> {
  await warmUpRow(ctx.sql, table);
  log(`inserting ${ctx.rows} rows, ${ROWS_PER_STATEMENT} per INSERT, no cachesync running`);
  const cpu = driverCpu();
  const servers = new ServersCpu(ctx.serverPids);
  const { statements, seconds } = await insertRows(ctx.sql, table, ctx.rows, ROWS_PER_STATEMENT);
  const driverCpuSeconds = cpu.stop();
  return {
    scenario: 'mariadb',
    rows: ctx.rows,
    insert: { statements, seconds, rowsPerSecond: ctx.rows / seconds },
    driverCpuSeconds,
    serversCpuSeconds: servers.stop(),
    ok: true,
  };
}

async function bulk(
  ctx: BenchContext,
  spec: {
    scenario: BulkResult['scenario'];
    name: string;
    table: string;
    role: 'tailer' | 'all' | 'split';
    keys: KeySpec[];
  },
  log: (msg: string) => void,
): Promise<BulkResult> {
  return withCachesync(ctx, spec, log, async (proc, topic, _startAnother, all) => {
    const progress = spec.role === 'tailer' ? onTopic(ctx.admin, topic, proc) : applied(proc, spec.table);
    await proc.guard(warmUp(ctx.sql, spec.table, progress));
    log(`inserting ${ctx.rows} rows, ${ROWS_PER_STATEMENT} per INSERT`);
    const base = await progress.read();
    const {
      result: timing,
      usage,
      processes,
    } = await measured(ctx, all, () =>
      insertAndWait({
        sql: ctx.sql,
        table: spec.table,
        rows: ctx.rows,
        rowsPerStatement: ROWS_PER_STATEMENT,
        progress,
        base,
        log,
      }),
    );
    const keys: KeyCheck[] = [];
    if (spec.role !== 'tailer') {
      log('checking the keys in Redis');
      for (const key of spec.keys) {
        keys.push(await checkKeys(ctx.redis, { prefix: key.prefix, format: key.check, rows: ctx.rows }));
      }
    }
    return {
      scenario: spec.scenario,
      rows: ctx.rows,
      insert: insertFigures(timing, ctx.rows),
      seconds: timing.seconds,
      rowsPerSecond: ctx.rows / timing.seconds,
      cachesync: {
        ...usage,
        cpuMicrosPerRow: (usage.cpuSeconds * 1e6) / ctx.rows,
        logFile: proc.logFile,
        ...(all.length > 1
          ? {
              processes: processes.map((p, i) => ({
                ...p,
                role: all[i]!.role,
                cpuMicrosPerRow: (p.cpuSeconds * 1e6) / ctx.rows,
                logFile: all[i]!.logFile,
              })),
            }
          : {}),
      },
      keys,
      ok: keys.every((k) => k.ok),
    };
  });
}

async function latency(
  ctx: BenchContext,
  name: string,
  table: string,
  log: (msg: string) => void,
): Promise<LatencyResult> {
  const spec = { name, table, role: 'all' as const, keys: [ITEM_KEY] };
  return withCachesync(ctx, spec, log, async (proc) => {
    const progress = applied(proc, table);
    await proc.guard(warmUp(ctx.sql, table, progress));
    log(`loading ${ctx.rows} rows through cachesync (not measured)`);
    await proc.guard(
      insertAndWait({
        sql: ctx.sql,
        table,
        rows: ctx.rows,
        rowsPerStatement: ROWS_PER_STATEMENT,
        progress,
        base: await progress.read(),
        log,
      }),
    );
    log(`updating ${ctx.rate} rows/s for ${ctx.seconds} s`);
    const { result: updates, usage } = await measured(ctx, [proc], () =>
      runSteadyUpdates({
        pool: ctx.pool,
        redis: ctx.redis,
        subscriber: ctx.subscriber,
        runtimeHistogram: async () =>
          histogramOf(await proc.scrape(), 'cachesync_end_to_end_latency_seconds'),
        table,
        ids: ctx.rows,
        keyPrefix: ITEM_KEY.prefix,
        redisDb: ctx.redis.options.db ?? 0,
        rate: ctx.rate,
        seconds: ctx.seconds,
        progress: log,
      }),
    );
    return {
      scenario: 'latency',
      loadedRows: ctx.rows,
      updates,
      cachesync: {
        ...usage,
        cpuMicrosPerRow: (usage.cpuSeconds * 1e6) / Math.max(1, updates.issued),
        logFile: proc.logFile,
      },
      ok: updates.missing === 0 && updates.failed === 0,
    };
  });
}

/**
 * One transaction of `bigtxRows` rows with a kill -9 inside it, once with `--role tailer`, once
 * with `--role all`, each on a table, topics and group of its own. No warm-up: the first start
 * stores its checkpoint before the transaction, so the restart replays exactly the transaction.
 */
async function bigTransaction(
  ctx: BenchContext,
  run: number,
  log: (msg: string) => void,
): Promise<BigTxResult> {
  const runs: Partial<Record<BigTxRun['role'], BigTxRun>> = {};
  for (const role of ['tailer', 'all'] as const) {
    const table = `${DB}.bigtx_${role}_${run}`;
    await ctx.sql.query(`CREATE TABLE ${table} ${TABLE_COLUMNS}`);
    await ctx.redis.flushall();
    try {
      runs[role] = await bigTransactionOnce(ctx, { name: `bigtx-${role}-${run}`, table, role }, (msg) =>
        log(`${role}: ${msg}`),
      );
    } finally {
      await ctx.sql.query(`DROP TABLE IF EXISTS ${table}`);
    }
  }
  const { tailer, all } = runs as Record<BigTxRun['role'], BigTxRun>;
  return { scenario: 'bigtx', rows: ctx.bigtxRows, tailer, all, ok: tailer.ok && all.ok };
}

/** How many of the last rows' keys tell that the replay reached the end of every partition. */
const TAIL_KEYS = 64;

async function bigTransactionOnce(
  ctx: BenchContext,
  spec: { name: string; table: string; role: BigTxRun['role'] },
  log: (msg: string) => void,
): Promise<BigTxRun> {
  const rows = ctx.bigtxRows;
  const keySpec = { ...spec, keys: [ITEM_KEY] };
  return withCachesync(ctx, keySpec, log, async (first, topic, startAnother) => {
    const published = onTopic(ctx.admin, topic, first);
    const base = await published.read();
    log(`one transaction of ${rows} rows (INSERT ... SELECT FROM seq_1_to_${rows})`);
    const insertStarted = performance.now();
    await first.guard(
      ctx.sql.query(
        `INSERT INTO ${spec.table} (id, name, price, updated_at) ` +
          `SELECT seq, CONCAT('item-', seq), seq / 100, NOW(6) FROM ${DB}.seq_1_to_${rows}`,
      ),
    );
    const insertSeconds = (performance.now() - insertStarted) / 1000;
    log(`committed in ${insertSeconds.toFixed(2)} s; kill -9 once a third is on the topic`);
    await pollUntil({
      read: async () => {
        const count = (await published.read()) - base;
        return { count, done: count >= rows / 3 };
      },
      what: `of ${rows} on the topic`,
      pollMs: published.pollMs,
      log,
    });
    const hwmBeforeKillBytes = processMemory(first.pid).hwmBytes;
    await first.kill();
    const onTopicAtKill = (await settled(() => messagesOn(ctx.admin, topic))) - base;
    if (onTopicAtKill >= rows) {
      throw new Error(
        `every row was on the topic before the kill (${onTopicAtKill} of ${rows}): the kill missed the transaction; try more --bigtx-rows`,
      );
    }
    log(`killed with ${onTopicAtKill} of ${rows} on the topic, peak RSS ${mb(hwmBeforeKillBytes)} MB`);

    const second = await startAnother('restart');
    const readySeconds = (performance.now() - second.startedAt) / 1000;
    const doneAt =
      spec.role === 'tailer'
        ? await replayedOnTopic(onTopic(ctx.admin, topic, second), base + onTopicAtKill, rows, log)
        : await replayedToRedis(ctx.redis, applied(second, spec.table), rows, log);
    const hwmReplayBytes = processMemory(second.pid).hwmBytes;
    const replaySeconds = (doneAt - second.startedAt) / 1000;
    log(`replayed in ${replaySeconds.toFixed(2)} s, peak RSS ${mb(hwmReplayBytes)} MB`);
    const keys: KeyCheck[] = [];
    if (spec.role === 'all') {
      log('checking the keys in Redis');
      keys.push(await checkKeys(ctx.redis, { prefix: ITEM_KEY.prefix, format: ITEM_KEY.check, rows }));
    }
    return {
      role: spec.role,
      insertSeconds,
      onTopicAtKill,
      hwmBeforeKillBytes,
      hwmReplayBytes,
      readySeconds,
      replaySeconds,
      keys,
      logFiles: [first.logFile, second.logFile],
      ok: keys.every((k) => k.ok),
    };
  });
}

/** Every row of the transaction on the topic again, after the `atKill` messages there before. */
function replayedOnTopic(
  published: Progress,
  atKill: number,
  rows: number,
  log: (msg: string) => void,
): Promise<number> {
  return pollUntil({
    read: async () => {
      const count = (await published.read()) - atKill;
      return { count, done: count >= rows };
    },
    what: `of ${rows} on the topic again`,
    pollMs: published.pollMs,
    log,
  });
}

/**
 * Every row's key in Redis. Each partition applies in order and the rows are in id order in the
 * transaction, so once the last rows' keys are all there (among 64 ids every partition has its last
 * one), so is every key; a full SCAN then confirms it, and is polled if it does not. Meanwhile the
 * restarted process's applied changes show that it makes progress.
 */
async function replayedToRedis(
  redis: Redis,
  applying: Progress,
  rows: number,
  log: (msg: string) => void,
): Promise<number> {
  const tail = Array.from({ length: Math.min(TAIL_KEYS, rows) }, (_, i) => `${ITEM_KEY.prefix}${rows - i}`);
  const tailSeen = await pollUntil({
    read: async () => {
      const [count, present] = await Promise.all([applying.read(), redis.exists(...tail)]);
      return { count, done: present === tail.length };
    },
    what: 'changes applied by the restarted process',
    pollMs: applying.pollMs,
    log,
  });
  if ((await countKeys(redis, ITEM_KEY.prefix)) >= rows) return tailSeen;
  return pollUntil({
    read: async () => {
      const count = await countKeys(redis, ITEM_KEY.prefix);
      return { count, done: count >= rows };
    },
    what: `of ${rows} keys in Redis`,
    pollMs: 1000,
    log,
  });
}

async function countKeys(redis: Redis, prefix: string): Promise<number> {
  let count = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 5000);
    count += keys.length;
    cursor = next;
  } while (cursor !== '0');
  return count;
}

/**
 * Polls `read` until it says done and resolves with that moment (`performance.now()`); fails when
 * its count has not grown for `stallMs`.
 */
async function pollUntil(opts: {
  read: () => Promise<{ count: number; done: boolean }>;
  /** What the count is, after the number: "of 300000 on the topic". */
  what: string;
  pollMs: number;
  /** The count at which it is done, if known: reads are spaced out while it is far (see nextPollMs). */
  target?: number;
  stallMs?: number;
  log: (msg: string) => void;
}): Promise<number> {
  const stallMs = opts.stallMs ?? 60_000;
  const started = performance.now();
  let count = -Infinity;
  let progressAt = started;
  let lastReport = started;
  for (;;) {
    const state = await opts.read();
    const now = performance.now();
    if (state.done) return now;
    if (state.count > count) {
      count = state.count;
      progressAt = now;
    }
    if (now - progressAt > stallMs) {
      throw new Error(`stalled: ${count} ${opts.what} and nothing more for ${stallMs / 1000} s`);
    }
    if (now - lastReport >= 5000) {
      lastReport = now;
      opts.log(`${((now - started) / 1000).toFixed(0)} s: ${count} ${opts.what}`);
    }
    await sleep(
      opts.target === undefined
        ? opts.pollMs
        : nextPollMs(opts.pollMs, Math.max(0, count), opts.target, now - started),
    );
  }
}

/** A count read until two reads 200 ms apart agree: produce requests in flight at a kill land or not. */
async function settled(read: () => Promise<number>): Promise<number> {
  let last = await read();
  for (let i = 0; i < 25; i++) {
    await sleep(200);
    const now = await read();
    if (now === last) return now;
    last = now;
  }
  return last;
}

function mb(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(0);
}

/** Runs the measured phase, and measures cachesync's processes' (and this process's) use of the machine over it. */
async function measured<T>(
  ctx: BenchContext,
  procs: readonly CachesyncProcess[],
  work: () => Promise<T>,
): Promise<{
  result: T;
  usage: Omit<ReturnType<PhaseMonitor['stop']>, 'processes'>;
  processes: PhaseUsage[];
}> {
  const monitor = new PhaseMonitor(
    procs.map((p) => p.pid),
    ctx.serverPids,
  );
  try {
    const result = await guardAll(procs, work());
    const { processes, ...usage } = monitor.stop();
    return { result, usage, processes };
  } finally {
    monitor.cancel();
  }
}

/** `work`, or a rejection as soon as one of the processes dies. */
function guardAll<T>(procs: readonly CachesyncProcess[], work: Promise<T>): Promise<T> {
  return procs.reduce((guarded, proc) => proc.guard(guarded), work);
}

/**
 * Starts cachesync on a config of its own (topic, DLQ and checkpoint topics, group named after the
 * scenario), waits until it is ready, runs `body`, stops it and deletes its topics. `split` starts
 * two processes as a deployment of separate roles would, `--role consumer` (on a copy of the config
 * that serves /metrics on the next port; `proc`, whose /metrics show what was applied) and then
 * `--role tailer`; `all` holds every process started here. `body` may start more processes on the
 * same config and role, each with a log of its own (`<name>-<suffix>.log`); they are stopped at the
 * end too.
 */
async function withCachesync<T>(
  ctx: BenchContext,
  spec: { name: string; table: string; role: CachesyncRole | 'split'; keys: KeySpec[] },
  log: (msg: string) => void,
  body: (
    proc: CachesyncProcess,
    topic: string,
    /** Another process on the same config; of another role, it serves /metrics on the next port. */
    startAnother: (suffix: string, role?: CachesyncRole) => Promise<CachesyncProcess>,
    all: CachesyncProcess[],
  ) => Promise<T>,
): Promise<T> {
  const configFile = (name: string, metricsPort: number) => {
    const file = join(ctx.dir, `${name}.yaml`);
    writeFileSync(file, configYaml(ctx, spec.name, spec.table, spec.keys, metricsPort));
    return file;
  };
  const file = configFile(spec.name, ctx.metricsPort);
  const config = await loadConfig(file, { env: {} });
  const { topic, dlqTopic, checkpointTopic } = config.kafka;
  const started: CachesyncProcess[] = [];
  const start = async (name: string, role: CachesyncRole, on = { file, metricsPort: ctx.metricsPort }) => {
    const logFile = join(ctx.dir, `${name}.log`);
    log(`starting cachesync --role ${role} (log: ${logFile})`);
    const proc = CachesyncProcess.start({
      config: on.file,
      role,
      metricsHost: config.metrics.host,
      metricsPort: on.metricsPort,
      logFile,
      nodeArgs: ctx.nodeArgs,
    });
    started.push(proc);
    ctx.cleanup.add(`cachesync ${name}`, () => proc.stop(log));
    await proc.waitReady(READY_TIMEOUT_MS);
    return proc;
  };
  /** A process of a second role, on a copy of the config that serves /metrics on the next port. */
  const startOtherRole = (name: string, role: CachesyncRole) => {
    const port = ctx.metricsPort + 1;
    return start(name, role, { file: configFile(name, port), metricsPort: port });
  };
  try {
    if (spec.role === 'split') {
      const consumer = await startOtherRole(`${spec.name}-consumer`, 'consumer');
      const tailer = await start(`${spec.name}-tailer`, 'tailer');
      const refuse = () => Promise.reject(new Error('split: no more processes'));
      return await body(consumer, topic, refuse, [tailer, consumer]);
    }
    const role = spec.role;
    const proc = await start(spec.name, role);
    const another = (suffix: string, as: CachesyncRole = role) =>
      as === role ? start(`${spec.name}-${suffix}`, as) : startOtherRole(`${spec.name}-${suffix}`, as);
    return await body(proc, topic, another, [proc]);
  } catch (err) {
    const message = (err as Error).message ?? '';
    for (const proc of started) {
      if (!message.includes(proc.logFile)) ctx.progress(`cachesync's log for ${spec.name}: ${proc.logFile}`);
    }
    throw err;
  } finally {
    for (const proc of started) await proc.stop(log);
    await ctx.admin
      .deleteTopics({ topics: [topic, dlqTopic, checkpointTopic] })
      .catch((err: Error) => log(`could not delete its topics: ${err.message}`));
  }
}

/** The config of one scenario: the stack's servers, a topic of 4 partitions, one mapping. */
export function configYaml(
  ctx: BenchContext,
  name: string,
  table: string,
  keys: KeySpec[] = [ITEM_KEY],
  metricsPort = ctx.metricsPort,
): string {
  return [
    ...stackConfigSections(ctx.endpoints, { name: `bench-${name}`, partitions: PARTITIONS }),
    'metrics:',
    `  port: ${metricsPort}`,
    '  host: 127.0.0.1',
    'log:',
    '  level: warn',
    'mappings:',
    `  - table: ${table}`,
    '    keys:',
    ...keys.flatMap((key) => [
      `      - key: "${key.prefix}{id}"`,
      ...key.yaml.map((line) => `        ${line}`),
    ]),
    ctx.extraConfig,
    '',
  ].join('\n');
}

/** Messages on the topic: the sum of its partitions' high watermarks. */
function onTopic(admin: Admin, topic: string, proc: CachesyncProcess): Progress {
  return {
    what: 'on the topic',
    read: () => proc.guard(messagesOn(admin, topic)),
    pollMs: TOPIC_POLL_MS,
  };
}

async function messagesOn(admin: Admin, topic: string): Promise<number> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets.reduce((sum, p) => sum + Number(p.high), 0);
}

/**
 * A consumer catching up: `--role tailer` alone puts the rows on the topic (warm-up, then the
 * INSERTs, until every row is there), then `--role consumer` starts on that backlog. Measured from
 * the moment it is ready (started, joined, streaming) until every change is applied: the consumers'
 * own rate, with no tailer and no INSERTs sharing the machine; what it applied before it was ready
 * is left out of the rows counted.
 */
async function catchUp(
  ctx: BenchContext,
  name: string,
  table: string,
  log: (msg: string) => void,
): Promise<BulkResult> {
  const spec = { name, table, role: 'tailer' as const, keys: [ITEM_KEY] };
  return withCachesync(ctx, spec, log, async (tailer, topic, startAnother) => {
    const published = onTopic(ctx.admin, topic, tailer);
    await tailer.guard(warmUp(ctx.sql, table, published));
    log(`inserting ${ctx.rows} rows, ${ROWS_PER_STATEMENT} per INSERT; no consumer runs yet`);
    const timing = await tailer.guard(
      insertAndWait({
        sql: ctx.sql,
        table,
        rows: ctx.rows,
        rowsPerStatement: ROWS_PER_STATEMENT,
        progress: published,
        base: await published.read(),
        log,
      }),
    );
    const consumer = await startAnother('consumer', 'consumer');
    const applying = applied(consumer, table);
    // The warm-up row's insert and delete are on the topic before the rows.
    const changes = ctx.rows + 2;
    const atReady = await applying.read();
    const left = changes - atReady;
    log(`consumer ready with ${atReady} of ${changes} changes applied; measuring the other ${left}`);
    const started = performance.now();
    const { result: doneAt, usage } = await measured(ctx, [consumer], () =>
      pollUntil({
        read: async () => {
          const count = (await applying.read()) - atReady;
          return { count, done: count >= left };
        },
        what: `of ${left} changes applied`,
        pollMs: applying.pollMs,
        target: left,
        log,
      }),
    );
    log('checking the keys in Redis');
    const keys = [
      await checkKeys(ctx.redis, { prefix: ITEM_KEY.prefix, format: ITEM_KEY.check, rows: ctx.rows }),
    ];
    const seconds = (doneAt - started) / 1000;
    return {
      scenario: 'catchup',
      rows: left,
      insert: insertFigures(timing, ctx.rows),
      seconds,
      rowsPerSecond: left / seconds,
      cachesync: { ...usage, cpuMicrosPerRow: (usage.cpuSeconds * 1e6) / left, logFile: consumer.logFile },
      keys,
      ok: keys.every((k) => k.ok),
    };
  });
}

/** The INSERTs of a bulk load, as MariaDB took them. */
function insertFigures(timing: InsertAndWaitResult, rows: number): InsertFigures {
  return {
    statements: timing.statements,
    seconds: timing.insertSeconds,
    rowsPerSecond: rows / timing.insertSeconds,
  };
}

/** Changes of the table applied to Redis, from cachesync's /metrics. */
function applied(proc: CachesyncProcess, table: string): Progress {
  return {
    what: 'applied',
    read: async () => counterSum(await proc.scrape(), 'cachesync_changes_applied_total', { table }),
    pollMs: METRICS_POLL_MS,
  };
}

/** The warm-up row's insert and delete, with no wait: the database's own warm-up. */
async function warmUpRow(sql: mysql.Connection, table: string): Promise<void> {
  await sql.query(`INSERT INTO ${table} (id, name, price, updated_at) VALUES (0, 'warm-up', 0, NOW(6))`);
  await sql.query(`DELETE FROM ${table} WHERE id = 0`);
}

/**
 * One insert and one delete through the pipeline before measuring, so that the consumer group's
 * join, the first produce and the first connections are not part of the measured phase.
 */
async function warmUp(sql: mysql.Connection, table: string, progress: Progress): Promise<void> {
  const before = await progress.read();
  await warmUpRow(sql, table);
  const deadline = performance.now() + READY_TIMEOUT_MS;
  while ((await progress.read()) < before + 2) {
    if (performance.now() > deadline) {
      throw new Error(`the warm-up changes were not ${progress.what} within ${READY_TIMEOUT_MS / 1000} s`);
    }
    await sleep(progress.pollMs);
  }
}
