import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MariadbReplica } from '../../scripts/local-stack/mariadb-replica.js';
import type { CompiledConfig } from '../../src/config/types.js';
import { createLogger, silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Runtime } from '../../src/runtime.js';
import { eventually, finish, Pipeline, ready } from '../support/pipeline.js';
import { TEST_BASE_PORT, testStack } from '../support/test-env.js';

type Conn = mysql.ConnectionOptions;
const ROWS = 40;

/**
 * Writes a mixed load to `items` until stopped, from several connections: inserts, updates, changes
 * of the key column `email`, deletes.
 */
class MixedLoad {
  private stopped = false;
  private loops: Promise<void>[] = [];
  private n = 0;
  constructor(
    private readonly conn: Conn,
    private readonly table: string,
  ) {}

  start(writers = 4): void {
    this.loops = Array.from({ length: writers }, () => this.run());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  private async run(): Promise<void> {
    const conn = await mysql.createConnection(this.conn);
    try {
      while (!this.stopped) {
        const id = Math.floor(Math.random() * ROWS);
        const n = ++this.n;
        const r = Math.random();
        if (r < 0.4) {
          await conn.query(
            `INSERT INTO ${this.table} (id, email, seq) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE seq = VALUES(seq)`,
            [id, `e${id}-${n}`, n],
          );
        } else if (r < 0.65) {
          await conn.query(`UPDATE ${this.table} SET email = ?, seq = ? WHERE id = ?`, [
            `e${id}-${n}`,
            n,
            id,
          ]);
        } else if (r < 0.85) {
          await conn.query(`DELETE FROM ${this.table} WHERE id = ?`, [id]);
        } else {
          await conn.query(`UPDATE ${this.table} SET seq = ? WHERE id = ?`, [n, id]);
        }
        await sleep(5);
      }
    } finally {
      await conn.end();
    }
  }
}

describe('ordering survives the source: failover, RESET MASTER, restore', () => {
  let pipeline: Pipeline;
  let replica: MariadbReplica;
  let replicaConfig: CompiledConfig;
  let replicaConfigFile: string;

  beforeAll(async () => {
    const stack = testStack();
    replica = new MariadbReplica({
      dir: join(stack.dir, 'replica'),
      port: TEST_BASE_PORT + 30,
      serverId: 2,
      primary: stack.endpoints.mysql,
    });
    // Replicating before the test's database exists, so the replica holds it too.
    await replica.create();
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.items (id INT PRIMARY KEY, email VARCHAR(40), seq INT)`],
      mappings: `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: refresh
      - key: "{p}mail:{email}"
        action: refresh
        columns: [id]
      - key: "{p}inv:{id}"
        action: invalidate`,
    });
    replicaConfig = {
      ...pipeline.config,
      source: { ...pipeline.config.source, port: replica.endpoints.cdc.port },
    };
    replicaConfigFile = pipeline.configFile.replace(/\.yaml$/, '.replica.yaml');
    writeFileSync(
      replicaConfigFile,
      readFileSync(pipeline.configFile, 'utf8').replace(
        `  port: ${pipeline.endpoints.cdc.port}\n`,
        `  port: ${replica.endpoints.cdc.port}\n`,
      ),
    );
  });

  afterAll(async () => {
    await pipeline?.cleanup();
    await replica?.destroy();
  });

  async function startOn(config: CompiledConfig): Promise<Runtime> {
    const runtime = await Runtime.start(config, {
      role: 'all',
      logger: process.env.CACHESYNC_TEST_LOG
        ? createLogger({ level: process.env.CACHESYNC_TEST_LOG })
        : silentLogger(),
      metrics: new Metrics({ defaultMetrics: false }),
      graceMs: 10_000,
    });
    pipeline.runtimes.push(runtime);
    await ready(runtime);
    return runtime;
  }

  /**
   * The application caches every row's invalidate key, then every row changes once more: each
   * invalidate key must go and each refresh key must match its row, as read from `source`.
   */
  async function expectCacheMatches(source: Conn, opts: { restored?: boolean } = {}): Promise<void> {
    const { redis, p, db } = pipeline;
    const conn = await mysql.createConnection(source);
    try {
      for (let id = 0; id < ROWS; id++) await redis.set(`${p}inv:${id}`, 'cached by the app');
      await conn.query(`UPDATE ${db}.items SET seq = seq + 1`);
      const [rows] = await conn.query<mysql.RowDataPacket[]>(`SELECT * FROM ${db}.items ORDER BY id`);
      const expected: Record<string, string> = {};
      for (const row of rows as { id: number; email: string; seq: number }[]) {
        expected[`${p}item:${row.id}`] = JSON.stringify({ id: row.id, email: row.email, seq: row.seq });
        expected[`${p}mail:${row.email}`] = JSON.stringify({ id: row.id });
      }
      // The invalidate key of a row deleted meanwhile may or may not have been set after its DEL.
      const present = new Set(rows.map((r) => Number(r.id)));
      const absentInv = new Set(
        Array.from({ length: ROWS }, (_, id) => id)
          .filter((id) => !present.has(id))
          .map((id) => `${p}inv:${id}`),
      );
      // After a restore, keys of row states the restore erased (a row gone, an email it no longer
      // has) are left for verify --repair: no change in the binlog names them.
      const relevant = (k: string) =>
        !absentInv.has(k) && (!opts.restored || k in expected || k.startsWith(`${p}inv:`));
      const cached = async () =>
        Object.fromEntries(Object.entries(await pipeline.snapshot()).filter(([k]) => relevant(k)));
      await eventually(
        cached,
        (snap) => JSON.stringify(snap) === JSON.stringify(sorted(expected)),
        30_000,
      ).catch(async (err: Error) => {
        const snap = await cached();
        const diff = Object.keys({ ...snap, ...expected })
          .filter((k) => snap[k] !== expected[k])
          .map((k) => `${k}: redis ${JSON.stringify(snap[k])}, expected ${JSON.stringify(expected[k])}`);
        throw new Error(
          `${diff.length} keys differ:\n${diff.slice(0, 20).join('\n')}\n${err.message.slice(0, 200)}`,
        );
      });
    } finally {
      await conn.end();
    }
  }

  it('after a failover to the GTID replica, every key follows the new primary', async () => {
    const { db, sql } = pipeline;
    const onPrimary = await startOn(pipeline.config);
    const load = new MixedLoad(pipeline.endpoints.mysql, `${db}.items`);
    load.start();
    // A long-running primary has rotated its binlog more often than its replica.
    for (let i = 0; i < 4; i++) {
      await sleep(700);
      await sql.query('FLUSH BINARY LOGS');
    }
    await load.stop();
    await expectCacheMatches(pipeline.endpoints.mysql);
    const epochBefore = (await onPrimary.metrics.sourceEpoch.get()).values[0]?.value ?? 0;

    await replica.catchUp();
    await onPrimary.stop();
    await replica.promote();
    const onReplica = await startOn(replicaConfig);
    const afterFailover = new MixedLoad(replica.endpoints.mysql, `${db}.items`);
    afterFailover.start();
    await sleep(3000);
    await afterFailover.stop();
    await expectCacheMatches(replica.endpoints.mysql);
    const epochAfter = (await onReplica.metrics.sourceEpoch.get()).values[0]?.value ?? 0;
    expect(epochAfter).toBeGreaterThan(epochBefore);

    // RESET MASTER on the source, while cachesync reads it and the application writes.
    const again = new MixedLoad(replica.endpoints.mysql, `${db}.items`);
    again.start();
    await sleep(1500);
    const admin = await mysql.createConnection(replica.endpoints.mysql);
    await admin.query('RESET MASTER');
    await admin.end();
    await sleep(2500);
    await again.stop();
    await expectCacheMatches(replica.endpoints.mysql);
    const epochAfterReset = (await onReplica.metrics.sourceEpoch.get()).values[0]?.value ?? 0;
    expect(epochAfterReset).toBeGreaterThan(epochAfter);
    await onReplica.stop();
  });

  it('after a restore to an older backup and new-epoch, the next changes win over newer cached values', async () => {
    const { db } = pipeline;
    await replica.backup();
    let runtime = await startOn(replicaConfig);
    const load = new MixedLoad(replica.endpoints.mysql, `${db}.items`);
    load.start();
    await sleep(2000);
    await load.stop();
    // Redis now holds values newer than the backup.
    await expectCacheMatches(replica.endpoints.mysql);
    await runtime.stop();

    await replica.restore();
    const { code, out, err } = await finish(pipeline.spawn(['new-epoch', '-c', replicaConfigFile]));
    expect({ code, err }).toEqual({ code: 0, err: '' });
    expect(out).toMatch(/^new source epoch \d+ \(was \d+\): the tailer resumes at binlog\.\d+:\d+/);

    runtime = await startOn(replicaConfig);
    const after = new MixedLoad(replica.endpoints.mysql, `${db}.items`);
    after.start();
    await sleep(1500);
    await after.stop();
    await expectCacheMatches(replica.endpoints.mysql, { restored: true });
    await runtime.stop();
  });
});

function sorted(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
