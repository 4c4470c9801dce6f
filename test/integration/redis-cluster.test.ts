import { Cluster } from 'ioredis';
import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalRedisCluster } from '../../scripts/local-stack/redis-cluster.js';
import type { Runtime } from '../../src/runtime.js';
import { appliedCount, eventually, Pipeline, ready } from '../support/pipeline.js';
import { TEST_BASE_PORT, testStack } from '../support/test-env.js';

/**
 * Versions must hold on a Redis Cluster: each key's version guard sits in the key's slot, so the
 * guarded write is one script on one node, and hash-tagged keys keep working.
 */
describe('on a real Redis Cluster', () => {
  const cluster = new LocalRedisCluster(`${testStack().dir}/redis-cluster`, [
    TEST_BASE_PORT + 10,
    TEST_BASE_PORT + 11,
    TEST_BASE_PORT + 12,
  ]);
  let pipeline: Pipeline;
  let runtime: Runtime;
  let redis: Cluster;

  beforeAll(async () => {
    await cluster.start();
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.users (id INT PRIMARY KEY, email VARCHAR(50), name VARCHAR(50))`],
      mappings: `
  - table: {db}.users
    keys:
      - key: "{p}user:{id}"
        action: refresh
      - key: "{p}profile:{{{id}}}:card"
        action: refresh
        format: hash
        columns: [name]
      - key: "{p}email:{email}"
        action: refresh
        columns: [id]
      - key: "{p}list:{email}"
        action: invalidate
        delayedRedelete: 1s`,
      redisYaml: `  url: ${cluster.seedUrl}\n  cluster: true`,
    });
    redis = new Cluster([{ host: '127.0.0.1', port: cluster.ports[0]! }]);
    runtime = await pipeline.start();
    await ready(runtime);
  });

  afterAll(async () => {
    await pipeline?.cleanup();
    redis?.disconnect();
    await cluster.stop();
  });

  async function expectMatchesDatabase(): Promise<void> {
    const { sql, db, p } = pipeline;
    const [rows] = await sql.query<mysql.RowDataPacket[]>(`SELECT * FROM ${db}.users ORDER BY id`);
    for (const r of rows) {
      expect(JSON.parse((await redis.get(`${p}user:${String(r.id)}`))!)).toEqual({ ...r });
      expect(await redis.hgetall(`${p}profile:{${String(r.id)}}:card`)).toEqual({ name: r.name as string });
    }
  }

  it('applies inserts, updates and deletes with versions, across the masters', async () => {
    const { sql, db, p } = pipeline;
    const values = Array.from({ length: 60 }, (_, i) => `(${i}, 'u${i}@x', 'name${i}')`);
    await sql.query(`INSERT INTO ${db}.users VALUES ${values.join(',')}`);
    await sql.query(
      `UPDATE ${db}.users SET email = CONCAT('new-', email), name = UPPER(name) WHERE id % 3 = 0`,
    );
    await sql.query(`DELETE FROM ${db}.users WHERE id % 10 = 1`);
    await eventually(
      () => appliedCount(runtime, `${db}.users`),
      (n) => n === 60 + 20 + 6,
    );
    await expectMatchesDatabase();
    // The keys really are spread over several masters.
    const owners = new Set<string>();
    for (let i = 0; i < 60; i += 7) {
      const slot = Number(await redis.call('CLUSTER', 'KEYSLOT', `${p}user:${i}`));
      owners.add(String(redis.slots[slot]?.[0]));
    }
    expect(owners.size).toBeGreaterThan(1);
    // Moved keys left no old key behind.
    expect(await redis.exists(`${p}email:u3@x`)).toBe(0);
    expect(await redis.get(`${p}email:new-u3@x`)).toBe('{"id":3}');
    // The delayed re-delete runs on the cluster too: a stale value written after the first delete goes.
    await redis.set(`${p}list:new-u3@x`, 'stale');
    await sql.query(`UPDATE ${db}.users SET name = 'again' WHERE id = 3`);
    await eventually(
      () => redis.exists(`${p}list:new-u3@x`),
      (n) => n === 0,
    );
    await redis.set(`${p}list:new-u3@x`, 'stale again');
    await eventually(
      () => redis.exists(`${p}list:new-u3@x`),
      (n) => n === 0,
      5000,
    );
    expect((await runtime.metrics.dlqMessages.get()).values).toEqual([]);
  });

  it('a replay of the whole change topic changes nothing: every write is stale', async () => {
    const { db } = pipeline;
    await runtime.stop();
    const admin = pipeline.kafka().admin();
    await admin.connect();
    await admin.resetOffsets({
      groupId: pipeline.config.kafka.groupId,
      topic: pipeline.topic,
      earliest: true,
    });
    await admin.disconnect();
    runtime = await pipeline.start();
    await ready(runtime);
    await eventually(
      async () => (await runtime.metrics.staleSkipped.get()).values.reduce((s, v) => s + v.value, 0),
      (n) => n > 100,
    );
    await eventually(
      () => appliedCount(runtime, `${db}.users`),
      (n) => n === 87,
    );
    await expectMatchesDatabase();
  });

  it("TRUNCATE deletes the table's keys on every master", async () => {
    const { sql, db, p } = pipeline;
    await sql.query(`TRUNCATE TABLE ${db}.users`);
    await eventually(
      async () => {
        let found = 0;
        for (const node of redis.nodes('master')) found += (await node.keys(`${p}*`)).length;
        return found;
      },
      (n) => n === 0,
    );
  });
});
