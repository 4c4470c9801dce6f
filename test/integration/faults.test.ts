import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type mysql from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { RedisApplier } from '../../src/consumer/redis-applier.js';
import { readTopicToEnd } from '../../src/kafka/topic-reader.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Runtime } from '../../src/runtime.js';
import type { ServerName } from '../../scripts/local-stack/local-stack.js';
import { eventually, Pipeline, readTopic, ready, Writer, WRITER_TABLE } from '../support/pipeline.js';
import { TEST_BASE_PORT, testStack } from '../support/test-env.js';

const local = inject('localServers');
const stack = testStack();

interface Readiness {
  code: number;
  components: Record<string, string>;
  waitingOn: Record<string, string>;
}

async function readyz(runtime: Runtime): Promise<Readiness> {
  const res = await fetch(`http://127.0.0.1:${runtime.metricsPort}/readyz`);
  const body = (await res.json()) as Omit<Readiness, 'code'>;
  return { ...body, code: res.status };
}

async function counterSum(counter: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await counter.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** Every row of the table is in Redis with its current value. */
async function expectRedisMatchesTable(pipeline: Pipeline, table: string, timeoutMs = 30_000): Promise<void> {
  const [rows] = await pipeline.sql.query<mysql.RowDataPacket[]>(`SELECT id, seq FROM ${table} ORDER BY id`);
  expect(rows.length).toBeGreaterThan(0);
  const keys = rows.map((r) => `${pipeline.p}t:${String(r.id)}`);
  const expected = rows.map((r) => JSON.stringify({ id: r.id as number, seq: r.seq as number }));
  await eventually(
    () => pipeline.redis.mget(...keys),
    (values) => JSON.stringify(values) === JSON.stringify(expected),
    timeoutMs,
  );
}

describe('a frozen server (SIGSTOP: connections open, no answers) under load', () => {
  let pipeline: Pipeline;
  let frozen: ServerName | undefined;

  beforeAll(async () => {
    pipeline = await Pipeline.create(WRITER_TABLE);
    pipeline.redis.on('error', () => undefined);
  });

  afterEach(() => {
    // Never leave the shared stack frozen, whatever happened.
    if (frozen) stack.thaw(frozen);
    frozen = undefined;
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  for (const [server, component] of [
    ['redis', 'consumer'],
    ['kafka', undefined],
    ['mariadb', 'tailer'],
  ] as const) {
    it.runIf(local.includes(server))(
      `${server} frozen for 10 s: /readyz 503 within 5 s naming it, nothing dead-lettered, every change applied after`,
      async () => {
        const table = `${pipeline.db}.t`;
        const runtime = await pipeline.start();
        await ready(runtime);
        const writer = new Writer(pipeline.endpoints, table, { ratePerSecond: 50, rows: 30 });
        writer.start();
        await sleep(1500);
        const frozenAt = Date.now();
        stack.freeze(server);
        frozen = server;
        let unready: Readiness;
        try {
          unready = await eventually(
            () => readyz(runtime),
            (r) => r.code === 503,
            5000,
          );
        } finally {
          await sleep(Math.max(0, frozenAt + 10_000 - Date.now()));
          stack.thaw(server);
          frozen = undefined;
        }
        const noticedMs = Date.now() - frozenAt;
        const waitingOn = Object.values(unready.waitingOn);
        expect(waitingOn).toContain(server === 'mariadb' ? 'mysql' : server);
        if (component) expect(Object.keys(unready.waitingOn)).toContain(component);
        expect(runtime.health.live()).toBe(true);
        await eventually(
          () => readyz(runtime),
          (r) => r.code === 200,
          60_000,
        );
        await sleep(1000);
        await writer.stop();
        await expectRedisMatchesTable(pipeline, table, 60_000);
        expect(await counterSum(runtime.metrics.dlqMessages)).toBe(0);
        await runtime.stop();
        expect(noticedMs).toBeGreaterThan(0);
      },
      120_000,
    );
  }
});

describe('poison on the change topic', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      ...WRITER_TABLE,
      extraYaml: 'consumer:\n  maxAttempts: 2\n  retryInitial: 20ms\n  retryMax: 100ms',
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('is dead-lettered or skipped with a metric; the group keeps applying and no member restarts', async () => {
    const { db, p, sql, redis } = pipeline;
    const runtime = await pipeline.start('consumer');
    const tailer = await pipeline.start('tailer');
    await ready(runtime);
    await ready(tailer);
    const states = new Set<string>();
    const watch = setInterval(() => states.add(runtime.health.describe().consumer ?? ''), 50);
    await sql.query(`INSERT INTO ${db}.t VALUES (1, 1)`);
    await eventually(
      () => redis.get(`${p}t:1`),
      (v) => v !== null,
    );
    // A real event, as a template for the poison: other programs may write the topic.
    const [real] = await readTopic(pipeline.kafka(), pipeline.topic);
    const event = real as Record<string, unknown> & { after: Record<string, unknown> };
    const variant = (change: (e: Record<string, unknown>) => void) => {
      const copy = structuredClone(event);
      change(copy);
      return JSON.stringify(copy);
    };
    const producer = pipeline.kafka().producer();
    await producer.connect();
    await producer.send({
      topic: pipeline.topic,
      messages: [
        { key: `${db}.t:2`, value: 'not json at all' },
        { key: `${db}.t:3`, value: null },
        { key: `${db}.t:4`, value: variant((e) => delete e.op) },
        { key: `${db}.t:5`, value: variant((e) => (e.source = { version: 'not a version' })) },
        // A version no tailer writes (its epoch far ahead of the clock): its guard would hide row 10.
        {
          key: `${db}.t:10`,
          value: variant((e) => {
            (e.source as Record<string, unknown>).version = '99999999999:1:4:1';
            (e.after as Record<string, unknown>).id = 10;
          }),
        },
        // A table this config does not map: skipped.
        { key: `${db}.other:6`, value: variant((e) => (e.table = 'other')) },
        // No ts_ms, or a string: applied, only the latency sample is lost.
        {
          key: `${db}.t:7`,
          value: variant((e) => {
            delete e.ts_ms;
            (e.after as Record<string, unknown>).id = 7;
          }),
        },
        {
          key: `${db}.t:8`,
          value: variant((e) => {
            e.ts_ms = 'yesterday';
            (e.after as Record<string, unknown>).id = 8;
          }),
        },
      ],
    });
    await producer.disconnect();
    await sql.query(`INSERT INTO ${db}.t VALUES (9, 9), (10, 10)`);
    await eventually(
      () => redis.exists(`${p}t:7`, `${p}t:8`, `${p}t:9`, `${p}t:10`),
      (n) => n === 4,
    );
    await eventually(
      () => counterSum(runtime.metrics.dlqMessages),
      (n) => n === 5,
    );
    // Row 10 holds its real insert (seq 10), not the poison's image (seq 1) behind a future guard.
    expect(JSON.parse((await redis.get(`${p}t:10`)) ?? '{}')).toMatchObject({ id: 10, seq: 10 });
    clearInterval(watch);
    const skipped = await runtime.metrics.changesSkipped.get();
    expect(skipped.values.find((v) => v.labels.reason === 'unmapped_table')?.value).toBe(1);
    const letters = await readTopicToEnd(pipeline.kafka(), pipeline.config.kafka.dlqTopic, () => undefined);
    expect(letters).toBe(5);
    // No member restart: the consumer never left streaming (or failed), and is alive.
    expect([...states].filter((s) => s !== 'streaming')).toEqual([]);
    expect(runtime.health.live()).toBe(true);
    // Label values stay bounded: no label names a table the config does not map.
    const text = await runtime.metrics.registry.metrics();
    expect(text).not.toContain(`${db}.other`);
  }, 90_000);
});

describe("Redis' own refusals and cachesync's own bugs", () => {
  let pipeline: Pipeline;
  let redisServer: ChildProcess | undefined;
  let redisDir: string;
  const port = TEST_BASE_PORT + 20;

  beforeAll(async () => {
    redisDir = join(stack.dir, `misconf-${process.pid}`);
    mkdirSync(redisDir, { recursive: true });
    redisServer = spawn(
      'redis-server',
      // Redis refuses writes after a failed snapshot only when it has save points.
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '3600 1',
        '--appendonly',
        'no',
        '--dir',
        redisDir,
      ],
      { stdio: 'ignore' },
    );
    const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, retryStrategy: () => 100 });
    probe.on('error', () => undefined);
    await eventually(
      () => probe.ping().catch(() => 'no'),
      (r) => r === 'PONG',
      20_000,
    );
    probe.disconnect();
    pipeline = await Pipeline.create({
      ...WRITER_TABLE,
      redisYaml: `  url: redis://127.0.0.1:${port}`,
      extraYaml: 'consumer:\n  maxAttempts: 2\n  retryInitial: 20ms\n  retryMax: 200ms',
    });
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    await pipeline?.cleanup();
    redisServer?.kill('SIGKILL');
    rmSync(redisDir, { recursive: true, force: true });
  });

  it('MISCONF (Redis cannot persist): the consumer pauses, no dead letters, and resumes after', async () => {
    const { db, sql } = pipeline;
    const runtime = await pipeline.start();
    await ready(runtime);
    const admin = new Redis(port, '127.0.0.1');
    try {
      // Redis cannot write its snapshot once its dir is gone; with stop-writes-on-bgsave-error
      // (the default) it then refuses every write with MISCONF.
      rmSync(redisDir, { recursive: true, force: true });
      await admin.bgsave();
      await eventually(
        () => admin.info('persistence'),
        (info) => /rdb_last_bgsave_status:err/.test(info) && /rdb_bgsave_in_progress:0/.test(info),
      );
      await sql.query(`INSERT INTO ${db}.t VALUES (1, 1), (2, 2)`);
      await eventually(
        () => Promise.resolve(runtime.health.describe().consumer),
        (s) => s === 'paused',
      );
      await sleep(2000);
      expect(await counterSum(runtime.metrics.dlqMessages)).toBe(0);
      expect(runtime.health.ready()).toBe(false);
      await admin.config('SET', 'stop-writes-on-bgsave-error', 'no');
      await eventually(
        () => admin.mget(`${pipeline.p}t:1`, `${pipeline.p}t:2`),
        (v) => v[0] !== null && v[1] !== null,
      );
      expect(await counterSum(runtime.metrics.dlqMessages)).toBe(0);
    } finally {
      admin.disconnect();
      await runtime.stop();
    }
  }, 90_000);

  it('a programmer error stops the process for good with a clear log line; nothing is dead-lettered', async () => {
    const { db, sql } = pipeline;
    let log = '';
    const logger = createLogger({
      pretty: false,
      level: 'info',
      destination: new Writable({
        write(chunk: Buffer, _enc, done) {
          log += chunk.toString();
          done();
        },
      }),
    });
    const runtime = await Runtime.start(pipeline.config, {
      role: 'all',
      logger,
      metrics: new Metrics({ defaultMetrics: false }),
      graceMs: 10_000,
    });
    pipeline.runtimes.push(runtime);
    await ready(runtime);
    vi.spyOn(RedisApplier.prototype, 'applyAll').mockImplementation(() => {
      // What a bug looks like: reading a property of undefined.
      return Promise.reject(new TypeError("Cannot read properties of undefined (reading 'key')"));
    });
    await sql.query(`INSERT INTO ${db}.t VALUES (10, 10)`);
    await expect(runtime.done).rejects.toBeInstanceOf(TypeError);
    vi.restoreAllMocks();
    expect(runtime.health.live()).toBe(false);
    expect(log).toMatch(/programmer error \(a bug\); stopping/);
    expect(log).toContain("TypeError: Cannot read properties of undefined (reading 'key')");
    expect(await counterSum(runtime.metrics.dlqMessages)).toBe(0);
  }, 60_000);
});

describe('a change larger than the broker accepts', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.big (id INT PRIMARY KEY, name VARCHAR(20), payload LONGTEXT)`],
      mappings: `
  - table: {db}.big
    keys:
      - key: "{p}big:{id}"
        action: refresh
      - key: "{p}name:{name}"
        action: invalidate`,
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('is dead-lettered with its reason, its keys invalidated, and the changes after it flow', async () => {
    const { db, p, sql, redis } = pipeline;
    const runtime = await pipeline.start();
    await ready(runtime);
    await sql.query(`INSERT INTO ${db}.big VALUES (1, 'ann', 'small')`);
    await eventually(
      () => redis.get(`${p}big:1`),
      (v) => v !== null,
    );
    await redis.set(`${p}name:ann`, 'cached by the application');
    // 2 MB of base64 of random bytes: gzip cannot bring it under Kafka's 1 MB default.
    const payload = randomBytes(1_500_000).toString('base64');
    await sql.query(`UPDATE ${db}.big SET payload = ? WHERE id = 1`, [payload]);
    await sql.query(`INSERT INTO ${db}.big VALUES (2, 'bob', 'after')`);
    await eventually(
      () => redis.get(`${p}big:2`),
      (v) => v !== null,
    );
    // The old value cannot stay: the oversized change deleted its keys.
    expect(await redis.exists(`${p}big:1`, `${p}name:ann`)).toBe(0);
    const letters: { headers: Record<string, string>; value: Record<string, unknown> }[] = [];
    const kafka = pipeline.kafka();
    await readTopicToEnd(kafka, pipeline.config.kafka.dlqTopic, (m) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(m.headers ?? {})) headers[k] = String(v);
      letters.push({ headers, value: JSON.parse(m.value!.toString()) as Record<string, unknown> });
    });
    expect(letters).toHaveLength(1);
    expect(letters[0]!.headers['cachesync.error.class']).toBe('MessageTooLarge');
    expect(letters[0]!.headers['cachesync.error']).toMatch(/more than the broker accepts/);
    expect(letters[0]!.value).toMatchObject({ op: 'u', table: 'big', oversized: true });
    const dlq = await runtime.metrics.dlqMessages.get();
    expect(dlq.values.find((v) => v.labels.error_class === 'MessageTooLarge')?.value).toBe(1);
  }, 90_000);
});
