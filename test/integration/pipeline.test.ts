import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/runtime.js';
import { appliedCount, eventually, Pipeline, ready } from '../support/pipeline.js';

describe('a row change ends as the right Redis operation, through Kafka', () => {
  let pipeline: Pipeline;
  let runtime: Runtime;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [
        `CREATE TABLE {db}.users (id BIGINT PRIMARY KEY, email VARCHAR(100), name VARCHAR(100), balance DECIMAL(12,2))`,
        `CREATE TABLE {db}.orders (id BIGINT PRIMARY KEY, user_id BIGINT, status VARCHAR(20), total DECIMAL(12,2), note VARCHAR(50))`,
        `CREATE TABLE {db}.unmapped (id INT PRIMARY KEY, v INT)`,
      ],
      mappings: `
  - table: {db}.users
    keys:
      - key: "{p}user:{id}"
        action: refresh
        columns: [id, email, name, balance]
      - key: "{p}user:h:{id}"
        action: refresh
        format: hash
      - key: "{p}user:email:{email}"
        action: invalidate
      - key: "{p}email-cache:{email}"
        action: refresh
        columns: [id]
  - table: {db}.orders
    keys:
      - key: "{p}user:{user_id}:orders"
        action: invalidate
    onlyWhenChanged: [status, total, user_id]`,
    });
    runtime = await pipeline.start();
    await ready(runtime);
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('insert: refresh writes the row image (json and hash); invalidate deletes', async () => {
    const { p, redis, sql, db } = pipeline;
    await redis.set(`${p}user:email:ann@x`, 'stale');
    await sql.query(`INSERT INTO ${db}.users VALUES (1, 'ann@x', 'Ann', 10.50)`);
    await eventually(
      () => redis.get(`${p}user:1`),
      (v) => v !== null,
    );
    expect(JSON.parse((await redis.get(`${p}user:1`))!)).toEqual({
      id: 1,
      email: 'ann@x',
      name: 'Ann',
      balance: '10.50',
    });
    expect(await redis.hgetall(`${p}user:h:1`)).toEqual({
      id: '1',
      email: 'ann@x',
      name: 'Ann',
      balance: '10.50',
    });
    expect(await redis.get(`${p}email-cache:ann@x`)).toBe('{"id":1}');
    expect(await redis.exists(`${p}user:email:ann@x`)).toBe(0);
  });

  it('update: refresh rewrites; a changed key column deletes the old key; NULL renders no key', async () => {
    const { p, redis, sql, db } = pipeline;
    await sql.query(`INSERT INTO ${db}.users VALUES (2, 'bob@x', 'Bob', 1.00)`);
    await eventually(
      () => redis.get(`${p}email-cache:bob@x`),
      (v) => v !== null,
    );
    await redis.set(`${p}user:email:bob@x`, 'cached-old');
    await redis.set(`${p}user:email:bobby@x`, 'cached-new');
    await sql.query(`UPDATE ${db}.users SET email = 'bobby@x', name = NULL WHERE id = 2`);
    await eventually(
      () => redis.exists(`${p}email-cache:bob@x`),
      (n) => n === 0,
    );
    expect(await redis.get(`${p}email-cache:bobby@x`)).toBe('{"id":2}');
    expect(JSON.parse((await redis.get(`${p}user:2`))!)).toEqual({
      id: 2,
      email: 'bobby@x',
      name: null,
      balance: '1.00',
    });
    // A NULL column is no hash field.
    expect(await redis.hgetall(`${p}user:h:2`)).toEqual({ id: '2', email: 'bobby@x', balance: '1.00' });
    // invalidate deletes the keys of both images
    expect(await redis.exists(`${p}user:email:bob@x`, `${p}user:email:bobby@x`)).toBe(0);

    await sql.query(`UPDATE ${db}.users SET email = NULL WHERE id = 2`);
    await eventually(
      () => redis.exists(`${p}email-cache:bobby@x`),
      (n) => n === 0,
    );
    expect(await pipeline.keys()).not.toContain(`${p}email-cache:`);
  });

  it('delete removes refresh and invalidate keys alike', async () => {
    const { p, redis, sql, db } = pipeline;
    await sql.query(`INSERT INTO ${db}.users VALUES (3, 'cy@x', 'Cy', 0)`);
    await eventually(
      () => redis.exists(`${p}user:3`, `${p}user:h:3`),
      (n) => n === 2,
    );
    await redis.set(`${p}user:email:cy@x`, 'cached');
    await sql.query(`DELETE FROM ${db}.users WHERE id = 3`);
    await eventually(
      () => redis.exists(`${p}user:3`, `${p}user:h:3`, `${p}email-cache:cy@x`, `${p}user:email:cy@x`),
      (n) => n === 0,
    );
  });

  it('onlyWhenChanged ignores updates of other columns', async () => {
    const { p, redis, sql, db } = pipeline;
    const applied = () => appliedCount(runtime, `${db}.orders`);
    await sql.query(`INSERT INTO ${db}.orders VALUES (10, 7, 'new', 5.00, 'a')`);
    await eventually(applied, (n) => n === 1);
    await redis.set(`${p}user:7:orders`, 'list');
    await sql.query(`UPDATE ${db}.orders SET note = 'b' WHERE id = 10`);
    await eventually(applied, (n) => n === 2);
    expect(await redis.get(`${p}user:7:orders`)).toBe('list');
    await sql.query(`UPDATE ${db}.orders SET status = 'paid' WHERE id = 10`);
    await eventually(
      () => redis.exists(`${p}user:7:orders`),
      (n) => n === 0,
    );
  });

  it('a multi-row, multi-table transaction lands completely; a rolled-back one changes nothing', async () => {
    const { p, redis, sql, db } = pipeline;
    await sql.query('START TRANSACTION');
    await sql.query(
      `INSERT INTO ${db}.users VALUES (20, 'e20@x', 'E', 0), (21, 'e21@x', 'F', 0), (22, 'e22@x', 'G', 0)`,
    );
    await sql.query(`INSERT INTO ${db}.orders VALUES (30, 20, 'new', 1, '')`);
    await sql.query(`UPDATE ${db}.users SET name = CONCAT(name, '!') WHERE id IN (20, 21)`);
    await sql.query('COMMIT');
    await sql.query('START TRANSACTION');
    await sql.query(`INSERT INTO ${db}.users VALUES (23, 'e23@x', 'H', 0)`);
    await sql.query(`UPDATE ${db}.users SET name = 'rolled back' WHERE id = 20`);
    await sql.query('ROLLBACK');
    await sql.query(`INSERT INTO ${db}.unmapped VALUES (1, 1)`);
    await sql.query(`INSERT INTO ${db}.users VALUES (24, 'marker@x', 'M', 0)`);
    await eventually(
      () => redis.exists(`${p}user:24`),
      (n) => n === 1,
    );
    const names = await Promise.all(
      [20, 21, 22].map(
        async (id) => (JSON.parse((await redis.get(`${p}user:${id}`))!) as { name: string }).name,
      ),
    );
    expect(names).toEqual(['E!', 'F!', 'G']);
    expect(await redis.exists(`${p}user:23`)).toBe(0);
    expect((await pipeline.keys()).filter((k) => k.includes('unmapped'))).toEqual([]);
  });

  it('publishes change events other programs can read, keyed by table and primary key', async () => {
    const { db } = pipeline;
    const kafka = pipeline.kafka();
    const consumer = kafka.consumer({ groupId: `${pipeline.db}-reader` });
    await consumer.connect();
    await consumer.subscribe({ topic: pipeline.topic, fromBeginning: true });
    const seen: { key: string; value: Record<string, unknown> }[] = [];
    await consumer.run({
      eachMessage: ({ message }) => {
        seen.push({
          key: message.key!.toString(),
          value: JSON.parse(message.value!.toString()) as Record<string, unknown>,
        });
        return Promise.resolve();
      },
    });
    await eventually(
      () => Promise.resolve(seen.length),
      (n) => n >= 10,
    );
    await consumer.disconnect();
    const insert = seen.find((m) => m.key === `${db}.users:1`);
    expect(insert?.value).toMatchObject({
      op: 'c',
      db,
      table: 'users',
      pk: { id: 1 },
      before: null,
      after: { id: 1, email: 'ann@x', name: 'Ann', balance: '10.50' },
      source: {
        file: expect.stringMatching(/^binlog\.\d+$/) as unknown,
        gtid: expect.stringMatching(/^\d+-\d+-\d+$/) as unknown,
      },
    });
    expect(seen.some((m) => m.key.startsWith(`${db}.unmapped`))).toBe(false);
  });
});
