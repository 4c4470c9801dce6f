import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/runtime.js';
import { eventually, finish, Pipeline, readTopic, ready } from '../support/pipeline.js';

describe('table-level changes and schema changes', () => {
  let pipeline: Pipeline;
  let runtime: Runtime;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [
        `CREATE TABLE {db}.items (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(8,2))`,
        `CREATE TABLE {db}.tags (id INT PRIMARY KEY, tag VARCHAR(20))`,
        `CREATE TABLE {db}.notes (id INT PRIMARY KEY, body VARCHAR(20))`,
      ],
      mappings: `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: refresh
      - key: "{p}item:name:{name}"
        action: refresh
        columns: [id]
  - table: {db}.tags
    keys:
      - key: "{p}tag:{id}"
        action: refresh
  - table: {db}.notes
    keys:
      - key: "{p}note:{id}"
        action: refresh`,
    });
    runtime = await pipeline.start();
    await ready(runtime);
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('TRUNCATE of a mapped table deletes every key of its templates, and only those', async () => {
    const { sql, db, redis, p } = pipeline;
    await sql.query(`INSERT INTO ${db}.items VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)`);
    await sql.query(`INSERT INTO ${db}.tags VALUES (1, 'x')`);
    await eventually(
      () => redis.exists(`${p}item:3`, `${p}item:name:c`, `${p}tag:1`),
      (n) => n === 3,
    );
    await sql.query(`TRUNCATE TABLE ${db}.items`);
    await eventually(
      async () => (await pipeline.keys()).filter((k) => k.startsWith(`${p}item`)),
      (k) => k.length === 0,
    );
    expect(await redis.exists(`${p}tag:1`)).toBe(1);
    // The table lives on: new rows are cached again.
    await sql.query(`INSERT INTO ${db}.items VALUES (4, 'd', 4)`);
    await eventually(
      () => redis.exists(`${p}item:4`),
      (n) => n === 1,
    );
  });

  it('DROP TABLE of a mapped table deletes its keys', async () => {
    const { sql, db, p } = pipeline;
    await sql.query(`INSERT INTO ${db}.notes VALUES (1, 'n1'), (2, 'n2')`);
    await eventually(
      () => pipeline.redis.exists(`${p}note:1`, `${p}note:2`),
      (n) => n === 2,
    );
    await sql.query(`DROP TABLE ${db}.notes`);
    await eventually(
      async () => (await pipeline.keys()).filter((k) => k.startsWith(`${p}note:`)),
      (k) => k.length === 0,
    );
    await sql.query(`CREATE TABLE ${db}.notes (id INT PRIMARY KEY, body VARCHAR(20))`);
  });

  it('ALTER TABLE mid-stream (add, reorder, drop columns) keeps later refresh values right', async () => {
    const { sql, db, redis, p } = pipeline;
    await sql.query(`INSERT INTO ${db}.items VALUES (10, 'ten', 10.00)`);
    await eventually(
      () => redis.exists(`${p}item:10`),
      (n) => n === 1,
    );
    await sql.query(`ALTER TABLE ${db}.items ADD COLUMN color VARCHAR(10) DEFAULT 'red' AFTER id`);
    await sql.query(`UPDATE ${db}.items SET price = 11.00 WHERE id = 10`);
    await sql.query(`ALTER TABLE ${db}.items DROP COLUMN price, ADD COLUMN stock INT DEFAULT 5 FIRST`);
    await sql.query(`INSERT INTO ${db}.items (id, color, name) VALUES (11, 'blue', 'eleven')`);
    await sql.query(`UPDATE ${db}.items SET color = 'green' WHERE id = 10`);
    await eventually(
      () => redis.get(`${p}item:11`),
      (v) => v !== null,
    );
    await eventually(
      () => redis.get(`${p}item:10`),
      (v) => (v ?? '').includes('green'),
    );
    const [rows] = await sql.query<mysql.RowDataPacket[]>(
      `SELECT * FROM ${db}.items WHERE id IN (10, 11) ORDER BY id`,
    );
    for (const row of rows) {
      expect(JSON.parse((await redis.get(`${p}item:${String(row.id)}`))!)).toEqual({ ...row });
    }
    expect(JSON.parse((await redis.get(`${p}item:10`))!)).toEqual({
      stock: 5,
      id: 10,
      color: 'green',
      name: 'ten',
    });
    expect(await redis.get(`${p}item:name:eleven`)).toBe('{"id":11}');
  });

  it('a checkpoint whose binlog was purged stops the tailer with a clear error and a non-zero exit', async () => {
    const { sql, db } = pipeline;
    await sql.query(`INSERT INTO ${db}.tags VALUES (50, 'before-stop')`);
    await eventually(
      () => pipeline.redis.exists(`${pipeline.p}tag:50`),
      (n) => n === 1,
    );
    // A clean stop stores the checkpoint.
    await runtime.stop();
    const events = await readTopic(pipeline.kafka(), `${pipeline.topic}.checkpoint`);
    expect(events.length).toBeGreaterThan(0);
    // Changes the tailer has not read, then their binlog goes away.
    await sql.query(`INSERT INTO ${db}.tags VALUES (51, 'unread')`);
    // MariaDB keeps the previous file until its binlog checkpoint moves on: rotate twice.
    for (let i = 0; i < 2; i++) {
      await sql.query('FLUSH BINARY LOGS');
      await sql.query('DO SLEEP(1)');
    }
    const [logs] = await sql.query<mysql.RowDataPacket[]>('SHOW BINARY LOGS');
    const newest = String(logs[logs.length - 1]?.Log_name);
    await sql.query(`PURGE BINARY LOGS TO '${newest}'`);
    const [left] = await sql.query<mysql.RowDataPacket[]>('SHOW BINARY LOGS');
    expect(left).toHaveLength(1);

    const child = pipeline.spawn(['run', '--role', 'tailer']);
    const { code, out, err } = await finish(child);
    const text = () => out + err;
    expect(code).toBe(1);
    expect(text()).toContain('is no longer on the server');
    expect(text()).toContain(`delete the checkpoint topic ${pipeline.topic}.checkpoint`);
  });
});
