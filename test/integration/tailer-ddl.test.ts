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
        `CREATE TABLE {db}.moved (id INT PRIMARY KEY)`,
        `CREATE TABLE {db}.parts (id INT PRIMARY KEY) PARTITION BY RANGE (id)
           (PARTITION p0 VALUES LESS THAN (100), PARTITION p1 VALUES LESS THAN MAXVALUE)`,
        `CREATE DATABASE {db}_x`,
        `CREATE TABLE {db}_x.things (id INT PRIMARY KEY)`,
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
        action: refresh
  - table: {db}.moved
    keys:
      - key: "{p}moved:{id}"
        action: refresh
  - table: {db}.parts
    keys:
      - key: "{p}part:{id}"
        action: refresh
  - table: {db}_x.things
    keys:
      - key: "{p}thing:{id}"
        action: refresh`,
    });
    runtime = await pipeline.start();
    await ready(runtime);
  });

  afterAll(async () => {
    await pipeline?.sql.query(`DROP DATABASE IF EXISTS ${pipeline.db}_x`);
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
    // Application keys that share the templates' prefixes but that they cannot render
    // (`item:{id}` has an integer id).
    await redis.set(`${p}item:session:abc`, 'app');
    await redis.set(`${p}item:7:orders`, 'app');
    await sql.query(`TRUNCATE TABLE ${db}.items`);
    await eventually(
      async () => (await pipeline.keys()).filter((k) => k.startsWith(`${p}item`)),
      (k) => k.length === 2,
    );
    expect((await pipeline.keys()).filter((k) => k.startsWith(`${p}item`))).toEqual([
      `${p}item:7:orders`,
      `${p}item:session:abc`,
    ]);
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

  it('RENAME TABLE away from a mapped name, DROP DATABASE and TRUNCATE PARTITION delete the keys', async () => {
    const { sql, db, redis, p } = pipeline;
    await sql.query(`INSERT INTO ${db}.moved VALUES (1), (2)`);
    await sql.query(`INSERT INTO ${db}.parts VALUES (1), (150)`);
    await sql.query(`INSERT INTO ${db}_x.things VALUES (1), (2)`);
    await eventually(
      () =>
        redis.exists(
          `${p}moved:1`,
          `${p}moved:2`,
          `${p}part:1`,
          `${p}part:150`,
          `${p}thing:1`,
          `${p}thing:2`,
        ),
      (n) => n === 6,
    );
    await sql.query(`RENAME TABLE ${db}.moved TO ${db}.moved_away`);
    await sql.query(`ALTER TABLE ${db}.parts TRUNCATE PARTITION p0`);
    await sql.query(`DROP DATABASE ${db}_x`);
    await eventually(
      async () => (await pipeline.keys()).filter((k) => /(moved|part|thing):/.test(k)),
      (k) => k.length === 0,
    );
    // A key does not say which partition its row was in, so a partition operation clears every key
    // of the table: row 150 (partition p1) is read from the database again on its next miss.
    expect(await redis.exists(`${p}part:150`)).toBe(0);
    await sql.query(`RENAME TABLE ${db}.moved_away TO ${db}.moved`);
    await sql.query(`CREATE DATABASE ${db}_x`);
    await sql.query(`CREATE TABLE ${db}_x.things (id INT PRIMARY KEY)`);
  });

  it('XA ROLLBACK changes nothing in Redis; XA COMMIT applies the prepared changes', async () => {
    const { sql, db, redis, p } = pipeline;
    await sql.query(`INSERT INTO ${db}.tags VALUES (70, 'kept')`);
    await eventually(
      () => redis.get(`${p}tag:70`),
      (v) => v === '{"id":70,"tag":"kept"}',
    );
    await sql.query(`XA START 'rb1'`);
    await sql.query(`UPDATE ${db}.tags SET tag = 'rolled back' WHERE id = 70`);
    await sql.query(`INSERT INTO ${db}.tags VALUES (71, 'rolled back')`);
    await sql.query(`XA END 'rb1'`);
    await sql.query(`XA PREPARE 'rb1'`);
    await sql.query(`XA ROLLBACK 'rb1'`);
    await sql.query(`XA START 'c1'`);
    await sql.query(`INSERT INTO ${db}.tags VALUES (72, 'committed')`);
    await sql.query(`XA END 'c1'`);
    await sql.query(`XA PREPARE 'c1'`);
    await sql.query(`XA COMMIT 'c1'`);
    await eventually(
      () => redis.get(`${p}tag:72`),
      (v) => v === '{"id":72,"tag":"committed"}',
    );
    expect(await redis.get(`${p}tag:70`)).toBe('{"id":70,"tag":"kept"}');
    expect(await redis.exists(`${p}tag:71`)).toBe(0);
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
