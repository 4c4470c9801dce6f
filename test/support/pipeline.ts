import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Kafka, logLevel } from 'kafkajs';
import mysql from 'mysql2/promise';
import { inject } from 'vitest';
import {
  REPO_ROOT,
  stackConfigSections,
  type StackEndpoints,
} from '../../scripts/local-stack/local-stack.js';
import { loadConfig } from '../../src/config/load.js';
import { readTopicToEnd } from '../../src/kafka/topic-reader.js';
import type { CompiledConfig } from '../../src/config/types.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Runtime, type Role } from '../../src/runtime.js';
import { uniqueName } from './names.js';
import { testStack } from './test-env.js';

export interface PipelineOptions {
  /** CREATE TABLE statements, run in the test's own database (use `{db}` for its name). */
  tables: string[];
  /** The `mappings:` section, YAML, with `{db}` for the database and `{p}` for the key prefix. */
  mappings: string;
  /** The `redis:` section's lines, replacing the default (the local Redis). */
  redisYaml?: string;
  /** More top-level YAML (tailer:, consumer:, ...). */
  extraYaml?: string;
}

/**
 * Everything one integration test needs, its own: a database, topics, a consumer group, a key
 * prefix, a config file, and clients to look at MariaDB, Redis and Kafka as a user would.
 */
export class Pipeline {
  readonly runtimes: Runtime[] = [];
  readonly children: ChildProcess[] = [];

  private constructor(
    readonly endpoints: StackEndpoints,
    readonly db: string,
    /** Key prefix: every Redis key of this test starts with it. */
    readonly p: string,
    readonly topic: string,
    readonly configFile: string,
    readonly config: CompiledConfig,
    readonly sql: mysql.Pool,
    readonly redis: Redis,
  ) {}

  static async create(opts: PipelineOptions): Promise<Pipeline> {
    const endpoints = inject('endpoints');
    const db = uniqueName('cs');
    const p = `${uniqueName('t')}:`;
    const topic = `${db}.changes`;
    // One pooled connection: transactions spread over several queries stay on it, and it is
    // replaced when a test restarts the server.
    const sql = mysql.createPool({
      ...endpoints.mysql,
      connectionLimit: 1,
      multipleStatements: true,
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    await sql.query(`CREATE DATABASE ${db}`);
    for (const ddl of opts.tables) await sql.query(ddl.replaceAll('{db}', db));
    const dir = join(testStack().dir, 'configs');
    mkdirSync(dir, { recursive: true });
    const configFile = join(dir, `${db}.yaml`);
    const yaml = [
      ...stackConfigSections(endpoints, { name: db, partitions: 4, redisYaml: opts.redisYaml }),
      'metrics:',
      '  port: ${METRICS_PORT:-0}',
      '  host: 127.0.0.1',
      'log:',
      `  level: ${process.env.CACHESYNC_TEST_LOG ?? 'warn'}`,
      ...(opts.extraYaml?.includes('tailer:') ? [] : ['tailer:', '  linger: 1ms']),
      ...(opts.extraYaml?.includes('consumer:')
        ? []
        : ['consumer:', '  retryInitial: 20ms', '  retryMax: 500ms']),
      ...(opts.extraYaml ? [opts.extraYaml] : []),
      'mappings:',
      opts.mappings.replaceAll('{db}', db).replaceAll('{p}', p),
    ].join('\n');
    writeFileSync(configFile, yaml);
    const config = await loadConfig(configFile, { env: {} });
    const redis = new Redis(endpoints.redisUrl);
    return new Pipeline(endpoints, db, p, topic, configFile, config, sql, redis);
  }

  /** Starts cachesync in this process. */
  async start(role: Role = 'all'): Promise<Runtime> {
    const runtime = await Runtime.start(this.config, {
      role,
      logger: process.env.CACHESYNC_TEST_LOG
        ? (await import('../../src/observability/logger.js')).createLogger({
            level: process.env.CACHESYNC_TEST_LOG,
          })
        : silentLogger(),
      metrics: new Metrics({ defaultMetrics: false }),
      graceMs: 10_000,
    });
    this.runtimes.push(runtime);
    return runtime;
  }

  /** Starts `cachesync <args> -c <config>` as a real process. */
  spawn(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const withConfig = args.includes('-c') ? args : [...args, '-c', this.configFile];
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli.ts'), ...withConfig],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    this.children.push(child);
    return child;
  }

  /** Starts `cachesync run --role <role>` as a real process serving health on `port`; resolves once ready. */
  async spawnReady(role: Role, port: number, env: NodeJS.ProcessEnv = {}): Promise<ChildProcess> {
    const child = this.spawn(['run', '--role', role], { METRICS_PORT: String(port), ...env });
    let output = '';
    const keep = (d: Buffer) => {
      output = (output + d.toString()).slice(-5000);
      if (process.env.CACHESYNC_TEST_LOG) process.stderr.write(`[child ${child.pid}] ${d.toString()}`);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`cachesync exited with ${child.exitCode}:\n${output}`);
      if (Date.now() > deadline) throw new Error(`cachesync not ready in 60 s:\n${output}`);
      const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return child;
      await sleep(200);
    }
  }

  /** Keys of this test in Redis, sorted. */
  async keys(): Promise<string[]> {
    return (await this.redis.keys(`${this.p}*`)).sort();
  }

  /** Every key of this test with its value (strings as text, hashes as objects). */
  async snapshot(): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    for (const key of await this.keys()) {
      const type = await this.redis.type(key);
      out[key] =
        type === 'hash'
          ? await this.redis.hgetall(key)
          : type === 'string'
            ? await this.redis.get(key)
            : `<${type}>`;
    }
    return out;
  }

  kafka(): Kafka {
    return new Kafka({ clientId: 'test', brokers: this.endpoints.kafkaBrokers, logLevel: logLevel.NOTHING });
  }

  async cleanup(): Promise<void> {
    for (const runtime of this.runtimes) await runtime.stop();
    for (const child of this.children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    const keys = await this.redis.keys(`${this.p}*`);
    const meta = await this.redis.keys(`cachesync:v:*${this.p}*`);
    if (keys.length + meta.length > 0) await this.redis.del(...keys, ...meta);
    await this.redis.quit();
    await this.sql.query(`DROP DATABASE IF EXISTS ${this.db}`);
    await this.sql.end();
    const admin = this.kafka().admin();
    await admin.connect();
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(this.db));
    await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.deleteGroups([this.db]).catch(() => undefined);
    await admin.disconnect();
    rmSync(this.configFile, { force: true });
  }
}

/** Runs a child process to its end; returns its exit code and what it printed. */
export function finish(
  child: ChildProcess,
  timeoutMs = 60_000,
): Promise<{ code: number | null; out: string; err: string }> {
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`process did not exit in ${timeoutMs} ms\n${out}\n${err}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/** A TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Sends a signal and waits for the process to exit. */
export async function stopChild(
  child: ChildProcess,
  signal: NodeJS.Signals = 'SIGKILL',
): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill(signal);
  return exited;
}

/** Polls until check() returns a value that passes, failing with the last value seen. */
export async function eventually<T>(
  check: () => Promise<T>,
  pass: (value: T) => boolean,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await check();
  while (!pass(last)) {
    if (Date.now() > deadline)
      throw new Error(`condition not met in ${timeoutMs} ms; last value: ${JSON.stringify(last)}`);
    await sleep(100);
    last = await check();
  }
  return last;
}

/** Waits until the runtime reports ready (streaming). */
export async function ready(runtime: Runtime, timeoutMs = 60_000): Promise<void> {
  await eventually(
    () => Promise.resolve(runtime.health.ready()),
    (r) => r,
    timeoutMs,
  );
}

/** Change events of a table the runtime has applied, from its metrics (as an operator would read them). */
export async function appliedCount(runtime: Runtime, table: string): Promise<number> {
  const metric = await runtime.metrics.changesApplied.get();
  return metric.values.filter((v) => v.labels.table === table).reduce((sum, v) => sum + v.value, 0);
}

/** The table a {@link Writer} writes, `{db}.t (id, seq)`, mapped to one refresh key `{p}t:{id}`. */
export const WRITER_TABLE: PipelineOptions = {
  tables: [`CREATE TABLE {db}.t (id INT PRIMARY KEY, seq INT)`],
  mappings: `
  - table: {db}.t
    keys:
      - key: "{p}t:{id}"
        action: refresh`,
};

/** A committed write, as the writer saw it: row id and the value of its `seq` column. */
export interface Committed {
  id: number;
  seq: number;
}

/**
 * Keeps writing to `{db}.{table}(id INT PRIMARY KEY, seq INT)` until stopped: inserts new rows and
 * updates existing ones, each in its own transaction, and records what was committed. It rides out a
 * database restart (reconnects; a write whose outcome is unknown is not recorded).
 */
export class Writer {
  readonly committed: Committed[] = [];
  private stopped = false;
  private loop: Promise<void> | undefined;
  /** Shared by all writers, so writes of successive tests on one table stay in order. */
  private static seq = 0;

  constructor(
    private readonly endpoints: StackEndpoints,
    private readonly table: string,
    private readonly opts: { ratePerSecond: number; rows: number },
  ) {}

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<Committed[]> {
    this.stopped = true;
    await this.loop;
    return this.committed;
  }

  private async run(): Promise<void> {
    let conn: mysql.Connection | undefined;
    const interval = 1000 / this.opts.ratePerSecond;
    let next = Date.now();
    while (!this.stopped) {
      const seq = ++Writer.seq;
      const id = seq % this.opts.rows;
      try {
        conn ??= await mysql.createConnection(this.endpoints.mysql);
        await conn.query(
          `INSERT INTO ${this.table} (id, seq) VALUES (?, ?) ON DUPLICATE KEY UPDATE seq = VALUES(seq)`,
          [id, seq],
        );
        this.committed.push({ id, seq });
      } catch {
        conn?.destroy();
        conn = undefined;
        await sleep(100);
      }
      next += interval;
      const wait = next - Date.now();
      if (wait > 0) await sleep(wait);
      else next = Date.now();
    }
    await conn?.end().catch(() => undefined);
  }
}

/** Reads a topic from the beginning to its current end and returns the decoded values, by partition and offset. */
export async function readTopic(
  kafka: Kafka,
  topic: string,
  timeoutMs = 120_000,
): Promise<Record<string, unknown>[]> {
  const out: { partition: number; offset: number; value: Record<string, unknown> }[] = [];
  await readTopicToEnd(
    kafka,
    topic,
    (m, partition) => {
      out.push({
        partition,
        offset: Number(m.offset),
        value: JSON.parse(m.value!.toString()) as Record<string, unknown>,
      });
    },
    { timeoutMs },
  );
  return out.sort((a, b) => a.partition - b.partition || a.offset - b.offset).map((m) => m.value);
}

/**
 * Checks the change topic holds every committed write, and that each row's changes appear in
 * commit order (a replay after a crash may repeat a stretch; first appearances must be in order).
 * Returns a description of what is wrong, or an empty list.
 */
export function missingOrDisordered(committed: Committed[], events: Record<string, unknown>[]): string[] {
  const seen = new Map<number, number[]>();
  for (const e of events) {
    const after = e.after as { id: number; seq: number } | null;
    if (!after) continue;
    const list = seen.get(after.id) ?? [];
    list.push(after.seq);
    seen.set(after.id, list);
  }
  const problems: string[] = [];
  const firstSeen = new Map<number, Set<number>>();
  for (const [id, seqs] of seen) {
    const first: number[] = [];
    const set = new Set<number>();
    for (const s of seqs) {
      if (set.has(s)) continue;
      set.add(s);
      first.push(s);
    }
    firstSeen.set(id, set);
    for (let i = 1; i < first.length; i++) {
      if (first[i]! < first[i - 1]!) problems.push(`row ${id}: seq ${first[i]} after ${first[i - 1]}`);
    }
  }
  for (const c of committed)
    if (!firstSeen.get(c.id)?.has(c.seq)) problems.push(`row ${c.id}: committed seq ${c.seq} missing`);
  return problems.length > 10 ? [...problems.slice(0, 10), `...and ${problems.length - 10} more`] : problems;
}
