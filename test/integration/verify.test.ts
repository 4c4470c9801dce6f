import { Cluster, type Redis } from 'ioredis';
import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalRedisCluster } from '../../scripts/local-stack/redis-cluster.js';
import { eventually, finish, Pipeline, ready, Writer } from '../support/pipeline.js';
import { TEST_BASE_PORT, testStack } from '../support/test-env.js';

const ROWS = 1000;
/** Writers touch ids below this; drift is planted above it, where only the test writes. */
const LIVE_ROWS = 500;

interface Report {
  results: { table: string; key: string; checked: number; missing: number; stale: number; extra: number }[];
}

/**
 * verify against a real pipeline under live writes: no drift on a consistent cache, exact counts of
 * planted drift, --repair heals it, on a standalone Redis and on a Redis Cluster.
 */
function verifyScenario(
  name: string,
  setup: () => Promise<{ redisYaml?: string; connect?: () => Cluster }>,
  /** Also a run on the consistent cache alone (the planted run's exact counts imply it too). */
  consistentRun = true,
) {
  describe(name, () => {
    let pipeline: Pipeline;
    let redis: Redis | Cluster;
    let writers: Writer[] = [];

    beforeAll(async () => {
      const env = await setup();
      pipeline = await Pipeline.create({
        tables: [`CREATE TABLE {db}.items (id INT PRIMARY KEY, seq INT, name VARCHAR(40) DEFAULT 'x')`],
        mappings: `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: refresh
      - key: "{p}itemh:{{{id}}}"
        action: refresh
        format: hash
        columns: [seq, name]
      - key: "{p}list:{id}"
        action: invalidate`,
        ...(env.redisYaml ? { redisYaml: env.redisYaml } : {}),
      });
      redis = env.connect?.() ?? pipeline.redis;
      const { sql, db } = pipeline;
      await ready(await pipeline.start());
      const values = Array.from({ length: ROWS }, (_, i) => `(${i}, ${i}, 'n${i}')`);
      await sql.query(`INSERT INTO ${db}.items (id, seq, name) VALUES ${values.join(',')}`);
      // Every row's two keys, not just the last row's: partitions apply in parallel, so drift
      // planted on a row whose insert is still on its way would be healed by it.
      await eventually(
        async () => {
          const exists = await Promise.all(
            Array.from({ length: ROWS }, (_, id) =>
              Promise.all([
                redis.exists(`${pipeline.p}item:${id}`),
                redis.exists(`${pipeline.p}itemh:{${id}}`),
              ]),
            ),
          );
          return exists.flat().reduce((a, b) => a + b, 0);
        },
        (n) => n === 2 * ROWS,
      );
      // Two writers, 120 transactions/s together, on the first LIVE_ROWS rows.
      writers = [0, 1].map(
        () => new Writer(pipeline.endpoints, `${db}.items`, { ratePerSecond: 60, rows: LIVE_ROWS }),
      );
      for (const w of writers) w.start();
    });

    afterAll(async () => {
      for (const w of writers) await w.stop();
      await pipeline?.cleanup();
      if (redis && redis !== pipeline?.redis) redis.disconnect();
    });

    async function verify(...args: string[]): Promise<{ code: number | null; report: Report; err: string }> {
      const { code, out, err } = await finish(pipeline.spawn(['verify', ...args]), 120_000);
      const json = args.includes('--json') ? (JSON.parse(out) as Report) : { results: [] };
      return { code, report: json, err };
    }

    if (consistentRun) {
      it('a --table that is not mapped, or a bad --rows-per-second, is bad usage: exit 2', async () => {
        const unmapped = await finish(pipeline.spawn(['verify', '--table', 'shop.nope']));
        expect(unmapped.err).toContain(
          `--table shop.nope: not a mapped table; expected one of ${pipeline.db}.items`,
        );
        expect(unmapped.code).toBe(2);
        const snapshot = await finish(pipeline.spawn(['snapshot', '--table', 'shop.nope']));
        expect(snapshot.code).toBe(2);
        const rate = await finish(pipeline.spawn(['snapshot', '--rows-per-second', '0']));
        expect(rate.err).toContain('got "0"; expected a whole number of at least 1');
        expect(rate.code).toBe(2);
      });

      it('finds no drift on a consistent cache under live writes, exit 0', async () => {
        const { code, report, err } = await verify('--json');
        expect(err).not.toMatch(/error/i);
        expect(report.results.map((r) => r.key)).toEqual([
          `${pipeline.p}item:{id}`,
          `${pipeline.p}itemh:{{{id}}}`,
        ]);
        for (const r of report.results) {
          expect(r.table).toBe(`${pipeline.db}.items`);
          expect(r.checked).toBeGreaterThanOrEqual(ROWS);
          expect([r.missing, r.stale, r.extra]).toEqual([0, 0, 0]);
        }
        expect(code).toBe(0);
        expect(writers.every((w) => w.committed.length > 100)).toBe(true);
      });
    }

    it('counts planted drift exactly, exit 1; --repair heals it, exit 0; verify again exit 0', async () => {
      const { p, sql, db } = pipeline;
      const ids = (from: number) => Array.from({ length: 10 }, (_, i) => from + i);
      for (const id of ids(600))
        await redis.set(`${p}item:${id}`, JSON.stringify({ id, seq: -1, name: 'old' }));
      for (const id of ids(700)) await redis.hset(`${p}itemh:{${id}}`, 'seq', '-1');
      for (const id of ids(800)) await redis.del(`${p}item:${id}`);
      for (const id of ids(5000))
        await redis.set(`${p}item:${id}`, JSON.stringify({ id, seq: 1, name: 'gone' }));
      // An application key sharing the prefix is not ours: never counted, never deleted.
      await redis.set(`${p}item:session:abc`, 'app');

      const found = await verify('--json');
      // The whole report in one assertion, so a mismatch shows every count.
      expect(
        found.report.results.map((r) => ({ key: r.key, missing: r.missing, stale: r.stale, extra: r.extra })),
      ).toEqual([
        { key: `${p}item:{id}`, missing: 10, stale: 10, extra: 10 },
        { key: `${p}itemh:{{{id}}}`, missing: 0, stale: 10, extra: 0 },
      ]);
      expect(found.code).toBe(1);

      const repaired = await verify('--repair');
      expect(repaired.code).toBe(0);

      for (const id of ids(5000)) expect(await redis.exists(`${p}item:${id}`)).toBe(0);
      expect(await redis.get(`${p}item:session:abc`)).toBe('app');
      const [rows] = await sql.query<mysql.RowDataPacket[]>(
        `SELECT * FROM ${db}.items WHERE id BETWEEN 600 AND 899 ORDER BY id`,
      );
      for (const r of rows) {
        expect(JSON.parse((await redis.get(`${p}item:${String(r.id)}`))!)).toEqual({ ...r });
        expect(await redis.hgetall(`${p}itemh:{${String(r.id)}}`)).toEqual({
          seq: String(r.seq),
          name: String(r.name),
        });
      }

      const again = await verify('--json');
      for (const r of again.report.results) expect([r.missing, r.stale, r.extra]).toEqual([0, 0, 0]);
      expect(again.code).toBe(0);
    });
  });
}

verifyScenario('verify on a standalone Redis', () => Promise.resolve({}));

describe('verify on a Redis Cluster', () => {
  const cluster = new LocalRedisCluster(`${testStack().dir}/redis-cluster`, [
    TEST_BASE_PORT + 10,
    TEST_BASE_PORT + 11,
    TEST_BASE_PORT + 12,
  ]);
  afterAll(async () => {
    await cluster.stop();
  });
  verifyScenario(
    'the same checks',
    async () => {
      await cluster.start();
      return {
        redisYaml: `  url: ${cluster.seedUrl}\n  cluster: true`,
        connect: () => new Cluster([{ host: '127.0.0.1', port: cluster.ports[0]! }]),
      };
    },
    false,
  );
});
