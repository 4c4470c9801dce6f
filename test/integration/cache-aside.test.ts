import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findBinary, waitFor } from '../../scripts/local-stack/process.js';
import { LocalRedisCluster } from '../../scripts/local-stack/redis-cluster.js';
import { CacheAside, MISS_MARKER } from '../../src/client/index.js';
import type { Runtime } from '../../src/runtime.js';
import { appliedCount, eventually, freePort, Pipeline, ready, stopChild } from '../support/pipeline.js';
import { TEST_BASE_PORT, testStack } from '../support/test-env.js';

type AnyRedis = Redis | Cluster;

const ROWS = 20;
const READERS = 8;
/** Several connections, so one connection's round trips are not the limit. */
const WRITERS = 6;
/** Transactions per second; each changes one row in both tables, so each table sees this many writes. */
const WRITES_PER_SECOND = 330;
/** A reader stalls this long at most between its SELECT and its SET: far longer than cachesync's DEL takes. */
const READER_STALL_MS = 1500;
const PHASES = 3;
const PHASE_MS = 2000;

const TABLES = [
  `CREATE TABLE {db}.items (id INT PRIMARY KEY, v INT NOT NULL)`,
  `CREATE TABLE {db}.items_plain (id INT PRIMARY KEY, v INT NOT NULL)`,
  `CREATE TABLE {db}.users (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL)`,
];
/** No delayedRedelete anywhere: the guard alone must close the race. */
const MAPPINGS = `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: invalidate
  - table: {db}.items_plain
    keys:
      - key: "{p}plain:{id}"
        action: invalidate
  - table: {db}.users
    keys:
      - key: "{p}user:{id}"
        action: invalidate`;

/**
 * Readers stall up to 1.5 s between SELECT and SET under 300 writes/s, with no delayed delete. Half of
 * them read through CacheAside, half with the plain GET / SELECT / SET; after each burst of writes,
 * once cachesync has caught up and every stalled SET has landed, the cached values are compared with
 * the rows. Returns what was found, per pattern.
 */
async function staleSetRace(
  pipeline: Pipeline,
  connect: () => AnyRedis,
): Promise<{ guarded: Found; plain: Found; updates: number; writeMs: number; skipped: number }> {
  const { db, p, sql, endpoints } = pipeline;
  // cachesync runs in a process of its own, as it would beside an application.
  const port = await freePort();
  const child = await pipeline.spawnReady('all', port);
  const seed = Array.from({ length: ROWS }, (_, i) => `(${i + 1}, 0)`).join(',');
  await sql.query(`INSERT INTO ${db}.items VALUES ${seed}; INSERT INTO ${db}.items_plain VALUES ${seed}`);
  let updates = 0;
  const caughtUp = () =>
    Promise.all(
      [`${db}.items`, `${db}.items_plain`].map((table) =>
        eventually(
          () => appliedTotal(port, table),
          (n) => n >= ROWS + updates,
          60_000,
        ),
      ),
    );
  await caughtUp();

  let reading = true;
  let skipped = 0;
  const stall = () => sleep(Math.random() * READER_STALL_MS);
  const reader = async (guarded: boolean) => {
    const conn = await mysql.createConnection(endpoints.mysql);
    const redis = connect();
    const cache = new CacheAside(redis);
    cache.on('writeSkipped', () => skipped++);
    const load = async (id: number) => {
      const [rows] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT v FROM ${db}.${guarded ? 'items' : 'items_plain'} WHERE id = ?`,
        [id],
      );
      await stall();
      return String(rows[0]!.v);
    };
    try {
      while (reading) {
        const id = 1 + Math.floor(Math.random() * ROWS);
        if (guarded) {
          await cache.get(`${p}item:${id}`, () => load(id));
        } else if ((await redis.get(`${p}plain:${id}`)) === null) {
          await redis.set(`${p}plain:${id}`, await load(id));
        }
        // An application's request rate, not a spin: the machine's cores also run the servers.
        await sleep(10);
      }
    } finally {
      await conn.end();
      redis.disconnect();
    }
  };
  const readers = [
    ...Array.from({ length: READERS }, () => reader(true)),
    ...Array.from({ length: READERS }, () => reader(false)),
  ];

  const write = async (until: number) => {
    const conn = await mysql.createConnection(endpoints.mysql);
    const interval = (1000 * WRITERS) / WRITES_PER_SECOND;
    let next = Date.now();
    while (Date.now() < until) {
      const id = 1 + Math.floor(Math.random() * ROWS);
      // One statement, one transaction: the same change in both tables at the same moment.
      await conn.query(
        `UPDATE ${db}.items a JOIN ${db}.items_plain b ON a.id = b.id SET a.v = a.v + 1, b.v = b.v + 1 WHERE a.id = ?`,
        [id],
      );
      updates++;
      next += interval;
      const wait = next - Date.now();
      if (wait > 0) await sleep(wait);
      else next = Date.now();
    }
    await conn.end();
  };

  const check = connect();
  const compare = async (table: string, prefix: string): Promise<Found> => {
    const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT id, v FROM ${db}.${table} ORDER BY id`);
    // One GET per key: the keys of a cluster sit in different slots.
    const cached = await Promise.all(rows.map((r) => check.get(`${p}${prefix}:${String(r.id)}`)));
    return {
      present: cached.filter((c) => c !== null).length,
      stale: rows.flatMap((r, i) =>
        cached[i] !== null && cached[i] !== MISS_MARKER && cached[i] !== String(r.v)
          ? [`${prefix}:${String(r.id)}=${cached[i]} (db ${String(r.v)})`]
          : [],
      ),
    };
  };
  const guarded: Found = { present: 0, stale: [] };
  const plain: Found = { present: 0, stale: [] };
  let writeMs = 0;
  try {
    for (let phase = 0; phase < PHASES; phase++) {
      const from = Date.now();
      const until = from + PHASE_MS;
      await Promise.all(Array.from({ length: WRITERS }, () => write(until)));
      writeMs += Date.now() - from;
      await caughtUp();
      // Readers go on: every SET that stalled across the last change lands, and keys are refilled
      // from the final rows. A key can differ from its row now only if a SET outlived every DEL.
      await sleep(READER_STALL_MS + 800);
      for (const [sum, found] of [
        [guarded, await compare('items', 'item')],
        [plain, await compare('items_plain', 'plain')],
      ] as const) {
        sum.present += found.present;
        sum.stale.push(...found.stale);
      }
    }
  } finally {
    reading = false;
    await Promise.all(readers);
    check.disconnect();
    await stopChild(child, 'SIGTERM');
  }
  return { guarded, plain, updates, writeMs, skipped };
}

/** Changes of a table a cachesync process has applied, from its /metrics, as an operator reads them. */
async function appliedTotal(port: number, table: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = /^cachesync_changes_applied_total\{(.*)\} (\S+)$/.exec(line);
    if (match?.[1]?.includes(`table="${table}"`)) sum += Number(match[2]);
  }
  return sum;
}

interface Found {
  present: number;
  stale: string[];
}

function expectRaceClosed(result: Awaited<ReturnType<typeof staleSetRace>>, where: string): void {
  const { guarded, plain, updates, writeMs, skipped } = result;
  const checked = PHASES * ROWS;
  const rate = Math.round((updates * 1000) / writeMs);
  console.log(
    `stale-set race on ${where}: ${updates} transactions (${rate}/s, ${2 * rate} row changes/s) on ${ROWS} rows in ${PHASES} bursts of ${PHASE_MS} ms, ` +
      `${READERS} readers per pattern stalling 0-${READER_STALL_MS} ms, no delayedRedelete; ` +
      `CacheAside ${guarded.stale.length} stale of ${guarded.present} present (${checked} checked, ` +
      `${skipped} writes skipped by the guard), plain ${plain.stale.length} stale of ${plain.present} present`,
  );
  // The load cachesync applies: every transaction changes a row in each table. (The writers aim at
  // WRITES_PER_SECOND transactions; a busy machine's database may commit fewer, hence the floor.)
  expect(2 * rate).toBeGreaterThanOrEqual(300);
  // The comparison means something only if the guarded readers did refill keys after the last change.
  expect(guarded.present).toBeGreaterThan(checked / 2);
  expect(skipped).toBeGreaterThan(0);
  expect(guarded.stale).toEqual([]);
  // The race is real: the plain pattern leaves keys older than their row, for good (no TTL).
  expect(plain.stale.length).toBeGreaterThan(0);
}

describe('the stale-set race, on a standalone Redis', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({ tables: TABLES, mappings: MAPPINGS });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('a reader stalling up to 1.5 s leaves no stale key through CacheAside; the plain pattern does', async () => {
    expectRaceClosed(
      await staleSetRace(pipeline, () => new Redis(pipeline.endpoints.redisUrl)),
      'standalone Redis',
    );
  }, 90_000);
});

describe('CacheAside on a standalone Redis', () => {
  let pipeline: Pipeline;
  let runtime: Runtime;
  const clients: AnyRedis[] = [];
  const connect = () => {
    const redis = new Redis(pipeline.endpoints.redisUrl);
    clients.push(redis);
    return redis;
  };

  beforeAll(async () => {
    pipeline = await Pipeline.create({ tables: TABLES, mappings: MAPPINGS });
    runtime = await pipeline.start();
    await ready(runtime);
  });

  afterAll(async () => {
    for (const c of clients) c.disconnect();
    if (pipeline) {
      const locks = await pipeline.redis.keys(`cachesync:lock:*${pipeline.p}*`);
      if (locks.length > 0) await pipeline.redis.del(...locks);
    }
    await pipeline?.cleanup();
  });

  it('50 concurrent misses run one loader; after a hung loader, one more after the lock time', async () => {
    const { db, p, sql } = pipeline;
    await sql.query(`INSERT INTO ${db}.users VALUES (1, 'ann'), (2, 'bob')`);
    await eventually(
      () => appliedCount(runtime, `${db}.users`),
      (n) => n >= 2,
    );
    // Five application processes, ten requests each.
    const caches = Array.from({ length: 5 }, () => new CacheAside(connect(), { loadLock: '2s' }));
    let loads = 0;
    const loadUser = async (id: number) => {
      loads++;
      await sleep(200);
      const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT name FROM ${db}.users WHERE id = ?`, [
        id,
      ]);
      return JSON.stringify(rows[0]);
    };
    const all = await Promise.all(
      Array.from({ length: 50 }, (_, i) => caches[i % 5]!.get(`${p}user:1`, () => loadUser(1))),
    );
    expect(loads).toBe(1);
    expect(new Set(all)).toEqual(new Set(['{"name":"ann"}']));
    expect(await pipeline.redis.get(`${p}user:1`)).toBe('{"name":"ann"}');
    expect(await pipeline.redis.exists(`cachesync:lock:{${p}user:1}`)).toBe(0);

    // The first loader hangs: the others wait for the lock's 2 s, then one of them loads, once.
    loads = 0;
    let unhang: (v: string) => void = () => undefined;
    const hung = caches[0]!.get(`${p}user:2`, () => new Promise<string>((resolve) => (unhang = resolve)));
    await eventually(
      () => pipeline.redis.exists(`cachesync:lock:{${p}user:2}`),
      (n) => n === 1,
    );
    const started = Date.now();
    const rest = await Promise.all(
      Array.from({ length: 49 }, (_, i) => caches[i % 5]!.get(`${p}user:2`, () => loadUser(2))),
    );
    const waited = Date.now() - started;
    expect(loads).toBe(1);
    expect(new Set(rest)).toEqual(new Set(['{"name":"bob"}']));
    expect(waited).toBeGreaterThan(1500);
    expect(waited).toBeLessThan(4000);
    unhang('{"name":"bob"}');
    expect(await hung).toBe('{"name":"bob"}');
  });

  it("a loader's error reaches the caller and frees the lock at once", async () => {
    const { p } = pipeline;
    const cache = new CacheAside(connect(), { loadLock: '5s' });
    await expect(
      cache.get(`${p}user:3`, () => Promise.reject(new Error('database says no'))),
    ).rejects.toThrow('database says no');
    const started = Date.now();
    expect(await cache.get(`${p}user:3`, () => Promise.resolve('{"name":"cid"}'))).toBe('{"name":"cid"}');
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('a missing row is loaded once per missTtl, and its insert makes the next get return it', async () => {
    const { db, p, sql } = pipeline;
    const key = `${p}user:404`;
    let loads = 0;
    const loadUser = async () => {
      loads++;
      const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT name FROM ${db}.users WHERE id = 404`);
      return rows[0] ? JSON.stringify(rows[0]) : null;
    };
    const short = new CacheAside(connect(), { missTtl: '1s' });
    const first = Date.now();
    for (let i = 0; i < 20; i++) expect(await short.get(key, loadUser)).toBeNull();
    expect(Date.now() - first).toBeLessThan(900);
    expect(loads).toBe(1);
    expect(await pipeline.redis.get(key)).toBe(MISS_MARKER);
    await sleep(1100);
    expect(await short.get(key, loadUser)).toBeNull();
    expect(loads).toBe(2);

    // The marker lasts 30 s, but cachesync's invalidation of the key removes it when the row appears.
    const long = new CacheAside(connect(), { missTtl: '30s' });
    await pipeline.redis.del(key);
    expect(await long.get(key, loadUser)).toBeNull();
    expect(await pipeline.redis.pttl(key)).toBeGreaterThan(20_000);
    await sql.query(`INSERT INTO ${db}.users VALUES (404, 'dan')`);
    await eventually(
      () => pipeline.redis.exists(key),
      (n) => n === 0,
      10_000,
    );
    expect(await long.get(key, loadUser)).toBe('{"name":"dan"}');
    expect(loads).toBe(4);
    expect(await pipeline.redis.get(key)).toBe('{"name":"dan"}');
  });

  it('many readers on one connected client add no listeners to it', async () => {
    const redis = connect();
    await redis.ping();
    const before = redis.listenerCount('ready');
    for (let i = 0; i < 50; i++) new CacheAside(redis);
    expect(redis.listenerCount('ready')).toBe(before);
  });

  it('writes with ttl spread by ttlJitter', async () => {
    const { p } = pipeline;
    const cache = new CacheAside(connect(), { ttl: '100s', ttlJitter: 0.2 });
    const ttls: number[] = [];
    for (let i = 0; i < 30; i++) {
      await cache.get(`${p}ttl:${i}`, () => Promise.resolve('x'));
      ttls.push(await pipeline.redis.pttl(`${p}ttl:${i}`));
    }
    expect(Math.min(...ttls)).toBeGreaterThanOrEqual(79_000);
    expect(Math.max(...ttls)).toBeLessThanOrEqual(120_000);
    expect(Math.max(...ttls) - Math.min(...ttls)).toBeGreaterThan(5_000);
  });
});

describe('CacheAside when its Redis goes down', () => {
  let port = 0;
  const dir = join(testStack().dir, 'cache-aside-redis');
  let server: ChildProcess | undefined;
  /**
   * A port may be held for a while (by another test's server stopping, or by an outgoing
   * connection when the base port lies in the kernel's ephemeral range): the first start takes
   * the first of base+20..29 it can bind, a restart waits for its port.
   */
  const startRedis = async () => {
    const candidates = port === 0 ? Array.from({ length: 10 }, (_, i) => TEST_BASE_PORT + 20 + i) : [port];
    for (let attempt = 1; ; attempt++) {
      port = candidates[(attempt - 1) % candidates.length]!;
      try {
        return await startRedisOnce();
      } catch (err) {
        if (attempt >= 20 || !String((err as Error).message).includes('Address already in use')) throw err;
        if (candidates.length === 1) await sleep(500);
      }
    }
  };
  const startRedisOnce = async () => {
    mkdirSync(dir, { recursive: true });
    const logFile = join(dir, 'server.log');
    const log = openSync(logFile, 'a');
    server = spawn(
      findBinary('redis-server'),
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    await waitFor(
      `redis-server on ${port}`,
      async () => {
        const probe = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => null });
        probe.on('error', () => undefined);
        try {
          await probe.connect();
          return (await probe.ping()) === 'PONG';
        } finally {
          probe.disconnect();
        }
      },
      { timeoutMs: 20_000, pid: server.pid, logFile },
    );
  };
  const stopRedis = async () => {
    if (!server || server.exitCode !== null || server.signalCode !== null) return;
    const exited = new Promise((resolve) => server!.once('exit', resolve));
    server.kill('SIGKILL');
    await exited;
  };

  beforeAll(startRedis);
  afterAll(stopRedis);

  it('serves from the loader, says so, and caches again once Redis is back', async () => {
    const redis = new Redis({ host: '127.0.0.1', port, retryStrategy: () => 100 });
    redis.on('error', () => undefined);
    try {
      const cache = new CacheAside(redis, { loadLock: '2s' });
      const errors: string[] = [];
      cache.on('redisError', (err, key) => errors.push(`${key}: ${err.message}`));
      expect(await cache.get('k', () => Promise.resolve('one'))).toBe('one');
      expect(await cache.get('k', () => Promise.resolve('unused'))).toBe('one');

      await stopRedis();
      await eventually(
        () => Promise.resolve(redis.status),
        (s) => s !== 'ready',
      );
      const started = Date.now();
      expect(await cache.get('k', () => Promise.resolve('from the database'))).toBe('from the database');
      expect(Date.now() - started).toBeLessThan(500);
      expect(errors).toEqual([expect.stringMatching(/^k: Redis is not connected/)]);
      await expect(cache.get('k', () => Promise.reject(new Error('and the database too')))).rejects.toThrow(
        'and the database too',
      );

      await startRedis();
      await eventually(
        () => Promise.resolve(redis.status),
        (s) => s === 'ready',
      );
      expect(await cache.get('k', () => Promise.resolve('two'))).toBe('two');
      expect(await redis.get('k')).toBe('two');

      // Redis goes away while a loader runs: the caller gets the value at once, not after a reconnect.
      errors.length = 0;
      const during = Date.now();
      const value = await cache.get('gone-during-load', async () => {
        await stopRedis();
        await eventually(
          () => Promise.resolve(redis.status),
          (s) => s !== 'ready',
        );
        return 'loaded';
      });
      expect(value).toBe('loaded');
      expect(Date.now() - during).toBeLessThan(2000);
      expect(errors).toEqual([expect.stringMatching(/^gone-during-load: Redis is not connected/)]);
    } finally {
      redis.disconnect();
    }
  });
});

describe('the stale-set race, on a Redis Cluster', () => {
  const cluster = new LocalRedisCluster(`${testStack().dir}/redis-cluster`, [
    TEST_BASE_PORT + 10,
    TEST_BASE_PORT + 11,
    TEST_BASE_PORT + 12,
  ]);
  let pipeline: Pipeline;

  beforeAll(async () => {
    await cluster.start();
    pipeline = await Pipeline.create({
      tables: TABLES,
      mappings: MAPPINGS,
      redisYaml: `  url: ${cluster.seedUrl}\n  cluster: true`,
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
    await cluster.stop();
  });

  it('a reader stalling up to 1.5 s leaves no stale key through CacheAside; the plain pattern does', async () => {
    const connect = () => new Cluster([{ host: '127.0.0.1', port: cluster.ports[0]! }]);
    const probe = connect();
    // The keys really are spread over several masters.
    const owners = new Set<string>();
    await probe.get('warm-up');
    for (let i = 1; i <= ROWS; i++) {
      const slot = Number(await probe.call('CLUSTER', 'KEYSLOT', `${pipeline.p}item:${i}`));
      owners.add(String(probe.slots[slot]?.[0]));
    }
    probe.disconnect();
    expect(owners.size).toBeGreaterThan(1);
    expectRaceClosed(await staleSetRace(pipeline, connect), 'Redis Cluster');
  }, 90_000);
});
