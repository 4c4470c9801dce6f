import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Kafka, logLevel } from 'kafkajs';
import mysql from 'mysql2/promise';
import { inject } from 'vitest';
import { REPO_ROOT, type StackEndpoints } from '../../scripts/local-stack/local-stack.js';
import { loadConfig } from '../../src/config/load.js';
import type { CompiledConfig } from '../../src/config/types.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Runtime, type Role } from '../../src/runtime.js';
import { uniqueName } from './names.js';

export interface PipelineOptions {
  /** CREATE TABLE statements, run in the test's own database (use `{db}` for its name). */
  tables: string[];
  /** The `mappings:` section, YAML, with `{db}` for the database and `{p}` for the key prefix. */
  mappings: string;
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
    readonly sql: mysql.Connection,
    readonly redis: Redis,
  ) {}

  static async create(opts: PipelineOptions): Promise<Pipeline> {
    const endpoints = inject('endpoints');
    const db = uniqueName('cs');
    const p = `${uniqueName('t')}:`;
    const topic = `${db}.changes`;
    const sql = await mysql.createConnection({
      ...endpoints.mysql,
      multipleStatements: true,
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    await sql.query(`CREATE DATABASE ${db}`);
    for (const ddl of opts.tables) await sql.query(ddl.replaceAll('{db}', db));
    const dir = join(REPO_ROOT, '.stack', 'test', 'configs');
    mkdirSync(dir, { recursive: true });
    const configFile = join(dir, `${db}.yaml`);
    const yaml = [
      'source:',
      `  host: ${endpoints.cdc.host}`,
      `  port: ${endpoints.cdc.port}`,
      `  user: ${endpoints.cdc.user}`,
      `  password: "${endpoints.cdc.password}"`,
      `  serverId: ${1000 + Math.floor(Math.random() * 1_000_000)}`,
      'kafka:',
      `  brokers: [${endpoints.kafkaBrokers.join(', ')}]`,
      `  topic: ${topic}`,
      `  dlqTopic: ${db}.dlq`,
      `  groupId: ${db}`,
      '  partitions: 4',
      'redis:',
      `  url: ${endpoints.redisUrl}`,
      'metrics:',
      '  port: 0',
      '  host: 127.0.0.1',
      'log:',
      `  level: ${process.env.CACHESYNC_TEST_LOG ?? 'warn'}`,
      'tailer:',
      '  linger: 1ms',
      'consumer:',
      '  retryInitial: 20ms',
      '  retryMax: 500ms',
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
