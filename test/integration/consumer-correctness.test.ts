import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { Kafka } from 'kafkajs';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { encodeChangeEvent, messageKey, type ChangeEvent } from '../../src/core/change-event.js';
import { makeVersion } from '../../src/core/version.js';
import { readTopicToEnd } from '../../src/kafka/topic-reader.js';
import type { Runtime } from '../../src/runtime.js';
import {
  appliedCount,
  eventually,
  freePort,
  Pipeline,
  ready,
  stopChild,
  Writer,
  WRITER_TABLE,
} from '../support/pipeline.js';
import { testStack } from '../support/test-env.js';

const local = inject('localServers');
const stack = testStack();

/** Sum of a counter's values, optionally only those of one table. */
async function counterSum(
  metric: { get(): Promise<{ values: { labels: Record<string, unknown>; value: number }[] }> },
  table?: string,
): Promise<number> {
  const { values } = await metric.get();
  return values
    .filter((v) => table === undefined || v.labels.table === table)
    .reduce((s, v) => s + v.value, 0);
}

/** A message as a user reading the topic sees it: where it is, its key, value and headers. */
interface TopicMessage {
  partition: number;
  offset: string;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

/** Number of messages a topic holds (sum over partitions of high minus low watermark). */
async function topicDepth(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, o) => sum + Number(o.high) - Number(o.low), 0);
  } finally {
    await admin.disconnect();
  }
}

/** Reads every message of a topic, from the beginning to its current end, with keys and headers. */
async function readMessages(kafka: Kafka, topic: string, timeoutMs = 60_000): Promise<TopicMessage[]> {
  const out: TopicMessage[] = [];
  await readTopicToEnd(
    kafka,
    topic,
    (m, partition) => {
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(m.headers ?? {})) {
        if (value !== undefined) headers[name] = value.toString();
      }
      out.push({
        partition,
        offset: m.offset,
        key: m.key?.toString() ?? null,
        value: m.value?.toString() ?? null,
        headers,
      });
    },
    { timeoutMs },
  );
  return out.sort((a, b) => a.partition - b.partition || Number(a.offset) - Number(b.offset));
}

/** Sum of the samples of a metric a cachesync process serves on /metrics, optionally of one table. */
async function scrapeCounter(port: number, name: string, table?: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    if (table !== undefined && !(match[2] ?? '').includes(`table="${table}"`)) continue;
    sum += Number(match[3]);
  }
  return sum;
}

/** Waits until the runtime has applied `count` change events of `table`. */
async function caughtUp(runtime: Runtime, table: string, count: number, timeoutMs = 60_000): Promise<void> {
  await eventually(
    () => appliedCount(runtime, table),
    (n) => n >= count,
    timeoutMs,
  );
}

describe('a slow cache-aside reader cannot leave a stale value behind a delayed double delete', () => {
  let pipeline: Pipeline;
  const ROWS = 20;
  const READERS = 8;
  /** Two connections, so MariaDB's commit rate is not the limit. */
  const WRITERS = 2;
  const WRITES_PER_SECOND = 300;
  /**
   * A reader stalls up to this long between its SELECT and its SET. It must outlast cachesync's
   * commit-to-DEL latency (about 30-50 ms on the local stack) for the race to exist, and stay well
   * under the 300 ms delayedRedelete, which is what that setting assumes of the readers.
   */
  const READER_STALL_MS = 150;
  /** The load comes in phases: write, let cachesync catch up, compare. Each comparison is a fresh draw. */
  const PHASES = 5;
  const PHASE_MS = 1200;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [
        `CREATE TABLE {db}.items (id INT PRIMARY KEY, v INT NOT NULL)`,
        `CREATE TABLE {db}.items_plain (id INT PRIMARY KEY, v INT NOT NULL)`,
      ],
      mappings: `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: invalidate
        delayedRedelete: 300ms
  - table: {db}.items_plain
    keys:
      - key: "{p}plain:{id}"
        action: invalidate`,
    });
  });

  afterAll(async () => {
    if (pipeline) {
      const scheduled = Array.from({ length: ROWS }, (_, i) => `${pipeline.p}item:${i + 1}`);
      await pipeline.redis.zrem('cachesync:redelete', ...scheduled).catch(() => undefined);
    }
    await pipeline?.cleanup();
  });

  it('with delayedRedelete no key is stale after a racing load; without it, stale keys remain', async () => {
    const { db, p, sql, endpoints } = pipeline;
    // cachesync runs in a process of its own, as it would beside an application.
    const port = await freePort();
    const child = await pipeline.spawnReady('all', port);
    const caughtUpTo = (table: string, count: number) =>
      eventually(
        () => scrapeCounter(port, 'cachesync_changes_applied_total', table),
        (n) => n >= count,
        60_000,
      );
    const seed = Array.from({ length: ROWS }, (_, i) => `(${i + 1}, 0)`).join(',');
    await sql.query(`INSERT INTO ${db}.items VALUES ${seed}; INSERT INTO ${db}.items_plain VALUES ${seed}`);
    await caughtUpTo(`${db}.items`, ROWS);
    await caughtUpTo(`${db}.items_plain`, ROWS);

    // Cache-aside readers: GET; on a miss read the row, stall (a slow reader), then SET what was
    // read. A DEL that lands between the read and the SET is what leaves a stale value behind.
    let reading = true;
    const reader = async (table: string, prefix: string) => {
      const conn = await mysql.createConnection(endpoints.mysql);
      const redis = new Redis(endpoints.redisUrl);
      try {
        while (reading) {
          const id = 1 + Math.floor(Math.random() * ROWS);
          const key = `${p}${prefix}:${id}`;
          if ((await redis.get(key)) !== null) {
            await sleep(1);
            continue;
          }
          const [rows] = await conn.query<mysql.RowDataPacket[]>(
            `SELECT v FROM ${db}.${table} WHERE id = ?`,
            [id],
          );
          await sleep(Math.random() * READER_STALL_MS);
          await redis.set(key, String(rows[0]!.v));
        }
      } finally {
        await conn.end();
        await redis.quit();
      }
    };
    const readers = [
      ...Array.from({ length: READERS }, () => reader('items', 'item')),
      ...Array.from({ length: READERS }, () => reader('items_plain', 'plain')),
    ];

    // Writers: each transaction bumps the same row in both tables, so both mappings see the same
    // changes at the same moments.
    let updates = 0;
    const write = async (until: number) => {
      const conn = await mysql.createConnection({ ...endpoints.mysql, multipleStatements: true });
      const interval = (1000 * WRITERS) / WRITES_PER_SECOND;
      let next = Date.now();
      while (Date.now() < until) {
        const id = 1 + Math.floor(Math.random() * ROWS);
        await conn.query(
          `START TRANSACTION; UPDATE ${db}.items SET v = v + 1 WHERE id = ${id}; ` +
            `UPDATE ${db}.items_plain SET v = v + 1 WHERE id = ${id}; COMMIT`,
        );
        updates++;
        next += interval;
        const wait = next - Date.now();
        if (wait > 0) await sleep(wait);
        else next = Date.now();
      }
      await conn.end();
    };

    const compare = async (table: string, prefix: string) => {
      const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT id, v FROM ${db}.${table} ORDER BY id`);
      const cached = await pipeline.redis.mget(...rows.map((r) => `${p}${prefix}:${String(r.id)}`));
      const stale = rows.flatMap((r, i) =>
        cached[i] !== null && cached[i] !== String(r.v)
          ? [`${prefix}:${String(r.id)}=${cached[i]} (db ${String(r.v)})`]
          : [],
      );
      return { present: cached.filter((c) => c !== null).length, stale };
    };
    const withRedelete = { present: 0, stale: [] as string[] };
    const without = { present: 0, stale: [] as string[] };
    try {
      for (let phase = 0; phase < PHASES; phase++) {
        const until = Date.now() + PHASE_MS;
        await Promise.all(Array.from({ length: WRITERS }, () => write(until)));
        // Readers go on while cachesync catches up and the delayed deletes run: keys get refilled
        // from the final rows, so a key can be stale now only if a reader's SET outlived every DEL.
        await caughtUpTo(`${db}.items`, ROWS + updates);
        await caughtUpTo(`${db}.items_plain`, ROWS + updates);
        await sleep(800);
        for (const [sum, result] of [
          [withRedelete, await compare('items', 'item')],
          [without, await compare('items_plain', 'plain')],
        ] as const) {
          sum.present += result.present;
          sum.stale.push(...result.stale);
        }
      }
    } finally {
      reading = false;
      await Promise.all(readers);
      await stopChild(child, 'SIGTERM');
    }
    const checked = PHASES * ROWS;
    console.log(
      `stale-set race: ${updates} updates of ${ROWS} rows in ${PHASES} phases of ${PHASE_MS} ms, ` +
        `${READERS} readers per table stalling 0-${READER_STALL_MS} ms; ` +
        `with delayedRedelete ${withRedelete.stale.length} stale of ${withRedelete.present} present (${checked} checked), ` +
        `without ${without.stale.length} stale of ${without.present} present`,
    );
    expect(updates).toBeGreaterThan(((PHASES * PHASE_MS) / 1000) * WRITES_PER_SECOND * 0.5);
    // The check means something only if the readers refilled the keys after the last delete.
    expect(withRedelete.present).toBeGreaterThan(checked / 2);
    expect(withRedelete.stale).toEqual([]);
    // The race is real: without the delayed delete, some keys keep a value older than the row.
    expect(without.stale.length).toBeGreaterThan(0);
  }, 90_000);
});

describe('replaying an old stretch of the change topic puts no older value back', () => {
  let pipeline: Pipeline;
  /** Enough changes that a partition is replayed in several chunks, and the keys can be seen between them. */
  const ROWS = 50;
  const ROUNDS = 60;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.accounts (id INT PRIMARY KEY, v INT NOT NULL)`],
      mappings: `
  - table: {db}.accounts
    keys:
      - key: "{p}acct:{id}"
        action: refresh`,
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('offsets reset to the beginning: every key stays at its newest value and stale changes are counted', async () => {
    const { db, p, sql, redis } = pipeline;
    const table = `${db}.accounts`;
    const tailer = await pipeline.start('tailer');
    await ready(tailer);
    const first = await pipeline.start('consumer');
    await ready(first);
    let total = 0;
    const [inserted] = await sql.query<mysql.ResultSetHeader>(
      `INSERT INTO ${table} VALUES ${Array.from({ length: ROWS }, (_, i) => `(${i + 1}, 0)`).join(',')}`,
    );
    total += inserted.affectedRows;
    for (let round = 1; round <= ROUNDS; round++) {
      const [updated] = await sql.query<mysql.ResultSetHeader>(
        `UPDATE ${table} SET v = v + ${round} WHERE id % ${(round % 4) + 1} != 3`,
      );
      total += updated.affectedRows;
    }
    expect(total).toBeGreaterThan(ROWS * 5);
    const depth = await eventually(
      () => topicDepth(pipeline.kafka(), pipeline.topic),
      (n) => n >= total,
    );
    await caughtUp(first, table, depth);
    expect(await counterSum(first.metrics.staleSkipped, table)).toBe(0);
    await first.stop();

    const { groupId } = pipeline.config.kafka;
    const admin = pipeline.kafka().admin();
    await admin.connect();
    try {
      await eventually(
        async () => (await admin.describeGroups([groupId])).groups[0]?.state,
        (s) => s === 'Empty',
      );
      await admin.resetOffsets({ groupId, topic: pipeline.topic, earliest: true });
      const [committed] = await admin.fetchOffsets({ groupId, topics: [pipeline.topic] });
      // The whole topic is to be consumed again (a negative offset means: from the earliest).
      for (const part of committed!.partitions) expect(Number(part.offset)).toBeLessThanOrEqual(0);
    } finally {
      await admin.disconnect();
    }

    const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT id, v FROM ${table} ORDER BY id`);
    const keys = rows.map((r) => `${p}acct:${String(r.id)}`);
    const expected = rows.map((r) => JSON.stringify({ id: r.id as number, v: r.v as number }));
    expect(await redis.mget(...keys)).toEqual(expected);

    // Watch the keys all through the replay: none may ever show an older value.
    let watching = true;
    let samples = 0;
    const wrong: string[] = [];
    const watch = (async () => {
      while (watching) {
        const values = await redis.mget(...keys);
        samples++;
        values.forEach((v, i) => {
          if (v !== expected[i] && wrong.length < 10) wrong.push(`${keys[i]}=${v}`);
        });
      }
    })();
    const replay = await pipeline.start('consumer');
    try {
      await caughtUp(replay, table, depth);
    } finally {
      watching = false;
      await watch;
    }
    expect(samples).toBeGreaterThan(0);
    expect(wrong).toEqual([]);
    expect(await redis.mget(...keys)).toEqual(expected);
    expect(await counterSum(replay.metrics.staleSkipped, table)).toBeGreaterThan(0);
  }, 90_000);
});

describe('two rows sharing a key, their changes out of order across partitions', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.docs (id INT PRIMARY KEY, owner VARCHAR(20), v INT)`],
      mappings: `
  - table: {db}.docs
    keys:
      - key: "{p}owner:{owner}"
        action: refresh
        columns: [id, v]`,
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('the older change, arriving last on another partition, does not overwrite the newer one', async () => {
    const { db, p, redis } = pipeline;
    const table = `${db}.docs`;
    const runtime = await pipeline.start('consumer');
    await ready(runtime);
    const event = (id: number, v: number, pos: number): ChangeEvent => ({
      op: 'c',
      db,
      table: 'docs',
      pk: { id },
      before: null,
      after: { id, owner: 'ann', v },
      source: {
        file: 'binlog.000007',
        pos,
        ts_ms: Date.now(),
        version: makeVersion(1, 'binlog.000007', pos, 1),
      },
      ts_ms: Date.now(),
    });
    const newer = event(2, 200, 9000);
    const older = event(1, 100, 4000);
    const producer = pipeline.kafka().producer();
    await producer.connect();
    try {
      const send = (e: ChangeEvent, partition: number) =>
        producer.send({
          topic: pipeline.topic,
          acks: -1,
          messages: [{ key: messageKey(e), value: encodeChangeEvent(e), partition }],
        });
      await send(newer, 0);
      await caughtUp(runtime, table, 1);
      expect(await redis.get(`${p}owner:ann`)).toBe('{"id":2,"v":200}');
      await send(older, 3);
      await caughtUp(runtime, table, 2);
    } finally {
      await producer.disconnect();
    }
    expect(await redis.get(`${p}owner:ann`)).toBe('{"id":2,"v":200}');
    expect(await counterSum(runtime.metrics.staleSkipped, table)).toBe(1);
  });
});

describe.runIf(local.includes('redis'))('Redis stopped for 30 s under a write load', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create(WRITER_TABLE);
  });

  afterAll(async () => {
    // Never leave the shared stack without Redis, whatever happened above.
    await stack.start('redis');
    await pipeline?.cleanup();
  });

  it('the consumer holds, nothing is dead-lettered, and every change lands once Redis is back', async () => {
    const { db, p, sql, redis } = pipeline;
    const table = `${db}.t`;
    // This client stays through the outage; it reconnects by itself.
    redis.on('error', () => undefined);
    const runtime = await pipeline.start();
    await ready(runtime);
    const writer = new Writer(pipeline.endpoints, table, { ratePerSecond: 50, rows: 20 });
    writer.start();
    await sleep(2000);
    const readiness = new Set<boolean>();
    const states = new Set<string>();
    const watch = setInterval(() => {
      readiness.add(runtime.health.ready());
      states.add(runtime.health.describe().consumer ?? '');
    }, 100);
    let readyDuringOutage: Set<boolean>;
    try {
      await stack.stop('redis');
      await sleep(15_000);
      // Rows only written while Redis is down: their keys can exist afterwards only if the changes
      // held through the outage were applied once it was back (Redis keeps nothing across a restart).
      await sql.query(`INSERT INTO ${table} VALUES (1000, -1), (1001, -2)`);
      await sleep(15_000);
      readyDuringOutage = new Set(readiness);
      await stack.start('redis');
    } finally {
      clearInterval(watch);
    }
    await eventually(
      () => Promise.resolve(runtime.health.ready()),
      (r) => r,
      60_000,
    );
    await sleep(3000);
    const committed = await writer.stop();
    await caughtUp(runtime, table, committed.length + 2);
    await sleep(500);

    expect(readyDuringOutage).toContain(false);
    expect(states).toContain('paused');
    expect(runtime.health.ready()).toBe(true);

    const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT id, seq FROM ${table} ORDER BY id`);
    expect(rows.length).toBe(22);
    const keys = rows.map((r) => `${p}t:${String(r.id)}`);
    const expected = rows.map((r) => JSON.stringify({ id: r.id as number, seq: r.seq as number }));
    expect(await redis.mget(...keys)).toEqual(expected);

    expect(await counterSum(runtime.metrics.dlqMessages)).toBe(0);
    expect(await topicDepth(pipeline.kafka(), pipeline.config.kafka.dlqTopic)).toBe(0);
  }, 120_000);
});

describe('a message Redis rejects is dead-lettered and the partition moves on', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.accts (id INT PRIMARY KEY, name VARCHAR(20))`],
      mappings: `
  - table: {db}.accts
    keys:
      - key: "{p}acct:{id}"
        action: refresh
        format: json`,
      extraYaml: 'consumer:\n  maxAttempts: 3\n  retryInitial: 20ms\n  retryMax: 100ms',
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('WRONGTYPE: dead letter with its key, value and headers; later changes, on its partition too, apply', async () => {
    const { db, p, sql, redis } = pipeline;
    const table = `${db}.accts`;
    const runtime = await pipeline.start();
    await ready(runtime);
    await redis.hset(`${p}acct:1`, 'name', 'not a json string');
    await sql.query(`INSERT INTO ${table} VALUES (1, 'poison'), (2, 'b'), (3, 'c')`);

    const kafka = pipeline.kafka();
    const dlqTopic = pipeline.config.kafka.dlqTopic;
    await eventually(
      () => topicDepth(kafka, dlqTopic),
      (n) => n >= 1,
    );
    const letters = await readMessages(kafka, dlqTopic);
    expect(letters.length).toBe(1);
    const letter = letters[0]!;
    const changes = await readMessages(kafka, pipeline.topic);
    const original = changes.find((m) => m.key === `${db}.accts:1`)!;
    expect(original).toBeDefined();
    expect(letter.key).toBe(original.key);
    expect(letter.value).toBe(original.value);
    const h = letter.headers;
    expect(h['cachesync.error']).toMatch(/WRONGTYPE/);
    expect(h['cachesync.error.class']).toBe('MessageError');
    expect(h['cachesync.attempts']).toBe('3');
    expect(h['cachesync.original.topic']).toBe(pipeline.topic);
    expect(h['cachesync.original.partition']).toBe(String(original.partition));
    expect(h['cachesync.original.offset']).toBe(original.offset);
    const first = Date.parse(h['cachesync.first.failure'] ?? '');
    const last = Date.parse(h['cachesync.last.failure'] ?? '');
    expect(Number.isNaN(first) || Number.isNaN(last)).toBe(false);
    expect(last).toBeGreaterThanOrEqual(first);
    // Three attempts, with two backoffs in between: 20 ms and 40 ms, each -20% at worst.
    expect(last - first).toBeGreaterThanOrEqual(40);
    expect(await counterSum(runtime.metrics.dlqMessages, table)).toBe(1);

    // The poison's key is untouched, its neighbours applied.
    expect(await redis.hgetall(`${p}acct:1`)).toEqual({ name: 'not a json string' });
    await eventually(
      () => redis.mget(`${p}acct:2`, `${p}acct:3`),
      (v) => v.every((x) => x !== null),
    );
    expect(await redis.mget(`${p}acct:2`, `${p}acct:3`)).toEqual([
      '{"id":2,"name":"b"}',
      '{"id":3,"name":"c"}',
    ]);

    // Later rows, some of them on the poison's partition after it, apply too.
    const more = Array.from({ length: 27 }, (_, i) => i + 4);
    await sql.query(`INSERT INTO ${table} VALUES ${more.map((id) => `(${id}, 'n${id}')`).join(',')}`);
    await caughtUp(runtime, table, 2 + more.length);
    const after = (await readMessages(kafka, pipeline.topic)).filter(
      (m) =>
        m.partition === original.partition &&
        Number(m.offset) > Number(original.offset) &&
        more.some((id) => m.key === `${db}.accts:${id}`),
    );
    expect(after.length).toBeGreaterThan(0);
    const values = await redis.mget(...more.map((id) => `${p}acct:${id}`));
    expect(values).toEqual(more.map((id) => JSON.stringify({ id, name: `n${id}` })));
    expect(await topicDepth(kafka, dlqTopic)).toBe(1);
  });
});

describe('a delayed delete survives kill -9 of the consumer that scheduled it', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [
        `CREATE TABLE {db}.items (id INT PRIMARY KEY, v INT)`,
        // Written before cachesync starts, so it makes no change event.
        `INSERT INTO {db}.items VALUES (1, 0)`,
      ],
      mappings: `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: invalidate
        delayedRedelete: 3s`,
    });
  });

  afterAll(async () => {
    if (pipeline)
      await pipeline.redis.zrem('cachesync:redelete', `${pipeline.p}item:1`).catch(() => undefined);
    await pipeline?.cleanup();
  });

  it('a new consumer runs the schedule: the stale value set after the first DEL is deleted', async () => {
    const { db, p, sql, redis } = pipeline;
    const key = `${p}item:1`;
    const tailer = await pipeline.start('tailer');
    await ready(tailer);
    const port = await freePort();
    const first = await pipeline.spawnReady('consumer', port);

    await redis.set(key, 'v0');
    await sql.query(`UPDATE ${db}.items SET v = 1 WHERE id = 1`);
    await eventually(
      () => redis.exists(key),
      (n) => n === 0,
      60_000,
    );
    // A slow reader puts back what it read before the update; then the consumer dies.
    await redis.set(key, 'v0');
    await stopChild(first, 'SIGKILL');
    const killedAt = Date.now();
    const due = Number(await redis.zscore('cachesync:redelete', key));
    expect(due).toBeGreaterThan(killedAt);
    expect(await redis.get(key)).toBe('v0');

    // Watch the key from now on: the new consumer may run the schedule before it reports ready.
    const deleted = eventually(
      async () => ((await redis.exists(key)) === 0 ? Date.now() : 0),
      (t) => t > 0,
      due + 15_000 - Date.now(),
    );
    deleted.catch(() => undefined);
    const second = await pipeline.spawnReady('consumer', port);
    const readyAt = Date.now();
    try {
      const gone = await deleted;
      console.log(
        `delayed delete after kill -9: due ${due - killedAt} ms after the kill; new consumer ready ` +
          `${readyAt - killedAt} ms after the kill; the key was gone ${gone - due} ms after due`,
      );
      expect(gone - due).toBeLessThan(5000);
      await eventually(
        () => redis.zscore('cachesync:redelete', key),
        (s) => s === null,
        5000,
      );
    } finally {
      await stopChild(second, 'SIGTERM');
    }
  });
});
