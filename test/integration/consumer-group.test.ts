import { isDeepStrictEqual } from 'node:util';
import { AssignerProtocol } from 'kafkajs';
import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, Pipeline, ready } from '../support/pipeline.js';

describe('several consumer processes share the partitions', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.accounts (id INT PRIMARY KEY, owner VARCHAR(50), balance DECIMAL(12,2))`],
      mappings: `
  - table: {db}.accounts
    keys:
      - key: "{p}acct:{id}"
        action: refresh
      - key: "{p}owner:{owner}"
        action: refresh
        columns: [id]`,
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('two consumer processes split the partitions and every change lands once, in order', async () => {
    const tailer = await pipeline.start('tailer');
    await ready(tailer);
    const consumers = [
      pipeline.spawn(['run', '--role', 'consumer']),
      pipeline.spawn(['run', '--role', 'consumer']),
    ];
    const admin = pipeline.kafka().admin();
    await admin.connect();
    try {
      const assignments = await eventually(
        async () => {
          const { groups } = await admin.describeGroups([pipeline.config.kafka.groupId]);
          const members = groups[0]?.members ?? [];
          if (groups[0]?.state !== 'Stable') return [];
          return members.map((m) => {
            const a = AssignerProtocol.MemberAssignment.decode(m.memberAssignment);
            return Object.values(a?.assignment ?? {}).flat().length;
          });
        },
        (a) => a.length === 2 && a.every((n) => n > 0),
        60_000,
      );
      expect(assignments.reduce((x, y) => x + y, 0)).toBe(pipeline.config.kafka.partitions);
    } finally {
      await admin.disconnect();
    }

    const { sql, db, redis, p } = pipeline;
    // Many changes per row, so order matters: the last one must win everywhere.
    for (let round = 0; round < 5; round++) {
      const values = Array.from(
        { length: 200 },
        (_, i) => `(${i}, 'owner${(i + round) % 50}', ${round * 1000 + i})`,
      );
      await sql.query(
        `INSERT INTO ${db}.accounts VALUES ${values.join(',')} ON DUPLICATE KEY UPDATE owner = VALUES(owner), balance = VALUES(balance)`,
      );
    }
    await sql.query(`DELETE FROM ${db}.accounts WHERE id % 10 = 0`);
    await sql.query(`INSERT INTO ${db}.accounts VALUES (1000, 'last', 1)`);

    const [rows] = await sql.query<mysql.RowDataPacket[]>(
      `SELECT id, owner, balance FROM ${db}.accounts ORDER BY id`,
    );
    const expected: Record<string, string> = {};
    for (const r of rows) {
      expected[`${p}acct:${String(r.id)}`] = JSON.stringify({
        id: r.id as number,
        owner: r.owner as string,
        balance: r.balance as string,
      });
    }
    // Partitions progress independently: wait until every row's key holds its last value.
    const accountKeys = async () => {
      const actual: Record<string, string | null> = {};
      const keys = (await pipeline.keys()).filter((k) => k.startsWith(`${p}acct:`));
      for (const key of keys) actual[key] = await redis.get(key);
      return actual;
    };
    const same = (a: Record<string, unknown>) => isDeepStrictEqual(a, expected);
    const actual = await eventually(accountKeys, same, 60_000).catch(() => accountKeys());
    expect(actual).toEqual(expected);
    // The owner index is shared by rows: a row moving away deletes it (a later read refills it),
    // so a key may be missing, but one that is present names a row that has that owner now.
    const ownerOf = new Map(rows.map((r) => [String(r.id), String(r.owner)]));
    for (const key of (await pipeline.keys()).filter((k) => k.startsWith(`${p}owner:`))) {
      const { id } = JSON.parse((await redis.get(key))!) as { id: number };
      expect(`${p}owner:${ownerOf.get(String(id))}`).toBe(key);
    }
    for (const c of consumers) expect(c.exitCode).toBeNull();
  });
});
