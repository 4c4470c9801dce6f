import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Runtime } from '../../src/runtime.js';
import { testStack } from '../support/test-env.js';
import { eventually, finish, Pipeline, readTopic, ready } from '../support/pipeline.js';

const local = inject('localServers');

/** Sample values of a metric family from Prometheus text, by label string. */
function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
    if (m) out.set(m[1] ?? '', Number(m[2]));
  }
  return out;
}

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;

describe('operating cachesync: metrics, health, dead letters, status', () => {
  let pipeline: Pipeline;
  let runtime: Runtime;
  let base: string;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [
        `CREATE TABLE {db}.accounts (id INT PRIMARY KEY, owner VARCHAR(20), balance INT)`,
        `CREATE TABLE {db}.audit (id INT PRIMARY KEY, note VARCHAR(20))`,
      ],
      mappings: `
  - table: {db}.accounts
    keys:
      - key: "{p}acct:{id}"
        action: refresh
  - table: {db}.audit
    keys:
      - key: "{p}audit:{id}"
        action: invalidate`,
      extraYaml: 'consumer:\n  maxAttempts: 3\n  retryInitial: 20ms\n  retryMax: 100ms',
    });
    runtime = await pipeline.start();
    await ready(runtime);
    base = `http://127.0.0.1:${runtime.metricsPort}`;
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('/metrics counts a known workload: rows per table and op, cache operations, dead letters', async () => {
    const { sql, db, redis, p } = pipeline;
    // A poison message: the refresh of acct:1 meets a hash where it writes a string.
    await redis.hset(`${p}acct:1`, 'not', 'a string');
    await sql.query(`INSERT INTO ${db}.accounts VALUES (1, 'ann', 10), (2, 'bob', 20), (3, 'cy', 30)`);
    await sql.query(`UPDATE ${db}.accounts SET balance = balance + 1 WHERE id IN (2, 3)`);
    await sql.query(`DELETE FROM ${db}.accounts WHERE id = 3`);
    await sql.query(`INSERT INTO ${db}.audit VALUES (1, 'a'), (2, 'b')`);
    await eventually(
      async () => samples(await (await fetch(`${base}/metrics`)).text(), 'cachesync_dlq_messages_total'),
      (s) => [...s.values()].reduce((a, b) => a + b, 0) === 1,
    );
    await eventually(
      () => redis.exists(`${p}acct:2`, `${p}acct:3`),
      (n) => n === 1,
    );
    const text = await (await fetch(`${base}/metrics`)).text();

    const rows = samples(text, 'cachesync_binlog_rows_read_total');
    expect(rows.get(`{table="${db}.accounts",op="c"}`)).toBe(3);
    expect(rows.get(`{table="${db}.accounts",op="u"}`)).toBe(2);
    expect(rows.get(`{table="${db}.accounts",op="d"}`)).toBe(1);
    expect(rows.get(`{table="${db}.audit",op="c"}`)).toBe(2);

    const applied = samples(text, 'cachesync_changes_applied_total');
    // Six account changes, one of them dead-lettered; two audit rows: seven applied.
    expect(applied.get(`{table="${db}.accounts",op="c"}`)).toBe(2);
    expect(applied.get(`{table="${db}.accounts",op="u"}`)).toBe(2);
    expect(applied.get(`{table="${db}.accounts",op="d"}`)).toBe(1);
    expect(applied.get(`{table="${db}.audit",op="c"}`)).toBe(2);

    const ops = samples(text, 'cachesync_cache_operations_total');
    expect(ops.get('{kind="set",result="applied"}')).toBe(4);
    expect(ops.get('{kind="del",result="applied"}')).toBe(3);
    const dlq = samples(text, 'cachesync_dlq_messages_total');
    expect(dlq.get(`{table="${db}.accounts",error_class="MessageError"}`)).toBe(1);
    expect(
      samples(text, 'cachesync_retries_total').get('{stage="apply",reason="message"}'),
    ).toBeGreaterThanOrEqual(2);
    expect(samples(text, 'cachesync_end_to_end_latency_seconds_count').get('')).toBe(7);
  });

  it.runIf(hasPromtool)('the /metrics output passes promtool check metrics', async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    const result = spawnSync('promtool', ['check', 'metrics'], { input: text });
    expect(`${result.stdout.toString()}${result.stderr.toString()}`).toBe('');
    expect(result.status).toBe(0);
  });

  it('dlq list shows the dead letter; replay applies it once the key is fixed, and never over a newer change', async () => {
    const { db, redis, p } = pipeline;
    const list = await finish(pipeline.spawn(['dlq', 'list']));
    expect(list.code).toBe(0);
    expect(list.out).toMatch(new RegExp(`${db}\\.accounts\\s+MessageError\\s+1\\s`));
    expect(list.out).toContain('WRONGTYPE');

    const typo = await finish(pipeline.spawn(['dlq', 'replay', '--table', `${db}.acounts`]));
    expect(typo.err).toContain(`--table ${db}.acounts: not a mapped table; expected one of ${db}.accounts`);
    expect(typo.code).toBe(2);

    const letters = await readTopic(pipeline.kafka(), `${db}.dlq`);
    expect(letters).toHaveLength(1);

    // Still broken: replay fails again and says so, exit 1.
    const failed = await finish(pipeline.spawn(['dlq', 'replay']));
    expect(failed.out).toContain('failed 1');
    expect(failed.code).toBe(1);

    await redis.del(`${p}acct:1`);
    const dry = await finish(pipeline.spawn(['dlq', 'replay', '--dry-run', '--table', `${db}.accounts`]));
    expect(dry.out).toContain('would apply 1, skipped as stale 0');
    expect(await redis.exists(`${p}acct:1`)).toBe(0);

    const replay = await finish(pipeline.spawn(['dlq', 'replay', '--table', `${db}.accounts`]));
    expect(replay.out).toContain('applied 1, skipped as stale 0');
    expect(replay.code).toBe(0);
    expect(JSON.parse((await redis.get(`${p}acct:1`))!)).toEqual({ id: 1, owner: 'ann', balance: 10 });

    // A newer change lands; replaying the old letter again must not put the old value back.
    await pipeline.sql.query(`UPDATE ${db}.accounts SET balance = 99 WHERE id = 1`);
    await eventually(
      () => redis.get(`${p}acct:1`),
      (v) => (v ?? '').includes('99'),
    );
    const again = await finish(pipeline.spawn(['dlq', 'replay']));
    expect(again.out).toContain('applied 0, skipped as stale 1');
    expect(JSON.parse((await redis.get(`${p}acct:1`))!)).toMatchObject({ balance: 99 });
  });

  it('status shows the checkpoint, lag per partition and DLQ depth of the running pipeline', async () => {
    const { code, out } = await finish(pipeline.spawn(['status', '--json']));
    expect(code).toBe(0);
    const status = JSON.parse(out) as {
      checkpoint: { file: string; pos: number } | null;
      source: { file: string } | null;
      sourceLagSeconds: number;
      consumerLag: { partition: number; lag: number }[];
      dlqDepth: number;
    };
    expect(status.checkpoint?.file).toMatch(/^binlog\.\d+$/);
    expect(status.source?.file).toMatch(/^binlog\.\d+$/);
    expect(status.consumerLag.map((p) => p.partition)).toEqual([0, 1, 2, 3]);
    expect(status.dlqDepth).toBe(1);
    await eventually(
      async () => {
        const s = JSON.parse((await finish(pipeline.spawn(['status', '--json']))).out) as typeof status;
        return s.consumerLag.reduce((sum, p) => sum + p.lag, 0);
      },
      (lag) => lag === 0,
    );
    const table = await finish(pipeline.spawn(['status']));
    expect(table.out).toMatch(/checkpoint\s+binlog\.\d+:\d+/);
    expect(table.out).toMatch(/PARTITION\s+COMMITTED\s+END\s+LAG/);
  });

  it.runIf(local.includes('redis'))(
    '/readyz turns unready while Redis is stopped, and ready again after',
    async () => {
      const stack = testStack();
      const readyz = async () => (await fetch(`${base}/readyz`)).status;
      expect(await readyz()).toBe(200);
      await stack.stop('redis');
      try {
        await eventually(readyz, (s) => s === 503, 20_000);
        const body = (await (await fetch(`${base}/readyz`)).json()) as { components: Record<string, string> };
        expect(body.components.consumer).toBe('paused');
        expect((await fetch(`${base}/healthz`)).status).toBe(200);
      } finally {
        await stack.start('redis');
      }
      await eventually(readyz, (s) => s === 200, 30_000);
    },
  );

  it.runIf(local.includes('mariadb'))(
    '/readyz turns unready while MariaDB is stopped, and ready again after',
    async () => {
      const stack = testStack();
      const readyz = async () => (await fetch(`${base}/readyz`)).status;
      expect(await readyz()).toBe(200);
      await stack.stop('mariadb');
      try {
        await eventually(readyz, (s) => s === 503, 20_000);
        const body = (await (await fetch(`${base}/readyz`)).json()) as { components: Record<string, string> };
        expect(body.components.tailer).toBe('reconnecting');
      } finally {
        await stack.start('mariadb');
      }
      await eventually(readyz, (s) => s === 200, 60_000);
      // And it streams again.
      await pipeline.sql.query(`INSERT INTO ${pipeline.db}.accounts VALUES (7, 'after', 1)`);
      await eventually(
        () => pipeline.redis.exists(`${pipeline.p}acct:7`),
        (n) => n === 1,
      );
    },
  );
});
