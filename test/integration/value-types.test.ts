import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { valueText } from '../../src/core/row-value.js';
import { eventually, Pipeline, ready } from '../support/pipeline.js';

/**
 * The refresh format promises each value as mysql2 returns it with dateStrings and
 * supportBigNumbers, binary as base64. The reference here is a real SELECT through mysql2.
 */
describe('refresh values round-trip every common MySQL type', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [
        `CREATE TABLE {db}.t (
          id INT PRIMARY KEY,
          big BIGINT UNSIGNED,
          small_big BIGINT,
          dec_col DECIMAL(20,6),
          dt DATETIME(6),
          ts TIMESTAMP(3) NULL,
          d DATE,
          s VARCHAR(100) CHARACTER SET utf8mb4,
          j JSON,
          b BLOB,
          vb VARBINARY(16),
          e ENUM('small','medium','large'),
          st SET('a','b','c'),
          f DOUBLE,
          n INT NULL,
          tx TEXT
        )`,
      ],
      mappings: `
  - table: {db}.t
    keys:
      - key: "{p}t:{id}"
        action: refresh
      - key: "{p}th:{id}"
        action: refresh
        format: hash`,
    });
    await ready(await pipeline.start());
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('json and hash formats hold exactly what mysql2 reads', async () => {
    const { sql, db, redis, p } = pipeline;
    await sql.query(
      `INSERT INTO ${db}.t VALUES
        (1, 18446744073709551615, 42, -12345678901234.123456, '2024-02-29 23:59:59.123456', '2024-01-02 03:04:05.678',
         '1999-12-31', 'héllo wörld 😀 中文', '{"k": [1, 2.5, "x"], "n": null}', x'00ff10ee', x'cafe', 'medium', 'a,c',
         3.14159, NULL, 'plain text'),
        (2, 9007199254740993, -9007199254740993, 0, '1970-01-01 00:00:00.000001', NULL, '2038-01-19', '', '[]', '', NULL,
         NULL, '', -0.5, 7, NULL)`,
    );
    await eventually(
      () => redis.exists(`${p}t:1`, `${p}t:2`),
      (n) => n === 2,
    );

    // The spec: JSON columns are their JSON value on MySQL, and a string on MariaDB (where JSON is
    // LONGTEXT, kept as written).
    const [[server]] = await sql.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v');
    const mariadb = /mariadb/i.test(String(server?.v));
    const reader = await mysql.createConnection({
      ...pipeline.endpoints.mysql,
      dateStrings: true,
      supportBigNumbers: true,
      jsonStrings: mariadb,
    });
    const [rows] = await reader.query<mysql.RowDataPacket[]>(`SELECT * FROM ${db}.t ORDER BY id`);
    await reader.end();
    for (const row of rows) {
      const expected: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(row)) expected[k] = Buffer.isBuffer(v) ? v.toString('base64') : v;
      const json = JSON.parse((await redis.get(`${p}t:${String(row.id)}`))!) as Record<string, unknown>;
      expect(json).toEqual(expected);

      const hash = await redis.hgetall(`${p}th:${String(row.id)}`);
      const expectedHash: Record<string, string> = {};
      for (const [k, v] of Object.entries(expected)) if (v !== null) expectedHash[k] = valueText(v);
      expect(hash).toEqual(expectedHash);
    }
    // Spot checks, so a shared mistake in both readers still fails.
    const one = JSON.parse((await redis.get(`${p}t:1`))!) as Record<string, unknown>;
    expect(one).toMatchObject({
      big: '18446744073709551615',
      small_big: 42,
      dec_col: '-12345678901234.123456',
      dt: '2024-02-29 23:59:59.123456',
      d: '1999-12-31',
      s: 'héllo wörld 😀 中文',
      b: Buffer.from('00ff10ee', 'hex').toString('base64'),
      e: 'medium',
      st: 'a,c',
      n: null,
      j: mariadb ? '{"k": [1, 2.5, "x"], "n": null}' : { k: [1, 2.5, 'x'], n: null },
    });
    const two = JSON.parse((await redis.get(`${p}t:2`))!) as Record<string, unknown>;
    expect(two).toMatchObject({
      big: '9007199254740993',
      small_big: '-9007199254740993',
      ts: null,
      vb: null,
    });
  });
});
