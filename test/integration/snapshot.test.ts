import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, finish, Pipeline, ready, stopChild } from '../support/pipeline.js';

const ROWS = 100_000;

/**
 * Updates and deletes random rows of `{db}.items` as fast as one connection goes, until stopped:
 * the live writes a snapshot must not undo.
 */
class Churn {
  private stopped = false;
  private loop: Promise<void> | undefined;
  writes = 0;

  constructor(
    private readonly endpoints: Pipeline['endpoints'],
    private readonly table: string,
  ) {}

  start(): void {
    this.loop = (async () => {
      const conn = await mysql.createConnection(this.endpoints.mysql);
      while (!this.stopped) {
        const id = Math.floor(Math.random() * ROWS);
        if (Math.random() < 0.3) await conn.query(`DELETE FROM ${this.table} WHERE id = ?`, [id]);
        else
          await conn.query(`UPDATE ${this.table} SET seq = seq + 1, name = ? WHERE id = ?`, [`w${id}`, id]);
        this.writes++;
        await sleep(2);
      }
      await conn.end();
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

describe('snapshot of a table that existed before cachesync, under live updates and deletes', () => {
  let pipeline: Pipeline;
  const churn: Churn[] = [];

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      mappings: `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: refresh
      - key: "{p}itemh:{id}"
        action: refresh
        format: hash
        columns: [seq]
  - table: {db}.audit_log
    keys:
      - key: "{p}log:{id}"
        action: invalidate`,
      tables: [
        `CREATE TABLE {db}.items (id INT PRIMARY KEY, seq INT, name VARCHAR(40))`,
        `CREATE TABLE {db}.audit_log (id INT PRIMARY KEY)`,
      ],
    });
    const { sql, db } = pipeline;
    for (let start = 0; start < ROWS; start += 20_000) {
      const values = Array.from({ length: 20_000 }, (_, i) => `(${start + i}, 0, 'r${start + i}')`);
      await sql.query(`INSERT INTO ${db}.items VALUES ${values.join(',')}`);
    }
    // cachesync starts at the end of the binlog: the rows above are not in the stream.
    await ready(await pipeline.start());
  });

  afterAll(async () => {
    for (const c of churn) await c.stop();
    // Too many keys for one DEL: remove them in batches first.
    if (pipeline) {
      let cursor = '0';
      do {
        const [next, keys] = await pipeline.redis.scan(cursor, 'MATCH', `*${pipeline.p}*`, 'COUNT', 5000);
        cursor = next;
        if (keys.length > 0) await pipeline.redis.unlink(...keys);
      } while (cursor !== '0');
    }
    await pipeline?.cleanup();
  });

  it('loads every row, survives kill -9, and undoes no live change', async () => {
    const { db, p, redis, sql } = pipeline;
    for (let i = 0; i < 4; i++) churn.push(new Churn(pipeline.endpoints, `${db}.items`));
    for (const c of churn) c.start();

    // First run, killed once a good part of the table is loaded.
    const first = pipeline.spawn(['snapshot', '--rows-per-second', '20000']);
    await eventually(
      async () => {
        const point = await redis.get(`cachesync:snapshot:{${db}.items}`);
        return point ? (JSON.parse(point) as { rows: number }).rows : 0;
      },
      (rows) => rows >= 20_000,
      60_000,
    );
    await stopChild(first, 'SIGKILL');

    const second = await finish(pipeline.spawn(['snapshot']), 120_000);
    expect(second.err).not.toMatch(/error/i);
    expect(second.out).toMatch(new RegExp(`${db}.items: \\d+ rows loaded \\(resumed after \\d+\\)`));
    expect(second.out).toContain(`${db}.audit_log: invalidate keys only, nothing to load`);
    expect(second.code).toBe(0);
    expect(await redis.exists(`cachesync:snapshot:{${db}.items}`)).toBe(0);

    for (const c of churn) await c.stop();
    expect(churn.every((c) => c.writes > 200)).toBe(true);

    // Once the stream has applied the last writes: every key equals its row, no deleted row has a key.
    const problems = async () => {
      const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT * FROM ${db}.items ORDER BY id`);
      const byId = new Map(rows.map((r) => [Number(r.id), r]));
      const wrong: string[] = [];
      for (let start = 0; start < ROWS; start += 5000) {
        const ids = Array.from({ length: 5000 }, (_, i) => start + i);
        const values = await redis.mget(ids.map((id) => `${p}item:${id}`));
        const hashes = await Promise.all(ids.map((id) => redis.hget(`${p}itemh:${id}`, 'seq')));
        ids.forEach((id, i) => {
          const row = byId.get(id);
          const value = values[i] ?? null;
          if (!row) {
            if (value !== null || hashes[i] !== null) wrong.push(`deleted row ${id} has a key`);
          } else if (value === null || JSON.stringify(JSON.parse(value)) !== JSON.stringify({ ...row })) {
            wrong.push(`row ${id}: key ${String(value)}`);
          } else if (hashes[i] !== String(row.seq)) {
            wrong.push(`row ${id}: hash seq ${String(hashes[i])}`);
          }
        });
      }
      return { deleted: ROWS - rows.length, wrong: wrong.slice(0, 5), count: wrong.length };
    };
    const result = await eventually(problems, (r) => r.count === 0, 60_000);
    expect(result.deleted).toBeGreaterThan(100);
  });
});

describe('snapshot.onFirstStart', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.items (id INT PRIMARY KEY, seq INT, name VARCHAR(40))`],
      mappings: `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: refresh`,
      extraYaml: 'snapshot:\n  onFirstStart: true',
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it("the daemon's first start loads the rows that existed before it; changes after it win", async () => {
    const { db, p, redis, sql } = pipeline;
    const values = Array.from({ length: 3000 }, (_, i) => `(${i}, 0, 'r${i}')`);
    await sql.query(`INSERT INTO ${db}.items VALUES ${values.join(',')}`);
    await ready(await pipeline.start());
    await sql.query(`UPDATE ${db}.items SET seq = 1 WHERE id % 7 = 0`);
    await sql.query(`DELETE FROM ${db}.items WHERE id % 11 = 0`);
    const wrong = async () => {
      const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT * FROM ${db}.items`);
      const byId = new Map(rows.map((r) => [Number(r.id), r]));
      const ids = Array.from({ length: 3000 }, (_, i) => i);
      const keys = await redis.mget(ids.map((id) => `${p}item:${id}`));
      return ids.filter((id, i) => {
        const row = byId.get(id);
        const value = keys[i] ?? null;
        return row
          ? value === null || JSON.stringify(JSON.parse(value)) !== JSON.stringify({ ...row })
          : value !== null;
      }).length;
    };
    await eventually(wrong, (n) => n === 0, 60_000);
    // The snapshot drops its progress once its last chunk is written: a moment after the keys.
    await eventually(
      () => redis.exists(`cachesync:snapshot:{${db}.items}`),
      (n) => n === 0,
    );
  });
});
