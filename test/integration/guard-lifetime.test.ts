import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeChangeEvent, messageKey, type ChangeEvent } from '../../src/core/change-event.js';
import { makeVersion } from '../../src/core/version.js';
import { versionKeyFor } from '../../src/core/version-guard.js';
import { eventually, finish, Pipeline, ready } from '../support/pipeline.js';

const RETENTION_MS = 20_000;

describe('version guards last as long as an older change can still arrive', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.docs (id INT PRIMARY KEY, v INT)`],
      mappings: `
  - table: {db}.docs
    keys:
      - key: "{p}doc:{id}"
        action: refresh`,
    });
    // Short retentions on the change and DLQ topics, made before cachesync starts.
    const admin = pipeline.kafka().admin();
    await admin.connect();
    await admin.createTopics({
      waitForLeaders: true,
      topics: [pipeline.topic, `${pipeline.db}.dlq`].map((topic) => ({
        topic,
        numPartitions: 4,
        configEntries: [{ name: 'retention.ms', value: String(RETENTION_MS) }],
      })),
    });
    await admin.disconnect();
    await ready(await pipeline.start());
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  function letter(readAgoMs: number): ChangeEvent {
    const now = Date.now();
    return {
      op: 'u',
      db: pipeline.db,
      table: 'docs',
      pk: { id: 1 },
      before: { id: 1, v: 0 },
      after: { id: 1, v: -1 },
      // Older than anything the tailer reads now: an early binlog position of epoch 0.
      source: {
        file: 'binlog.000001',
        pos: 4,
        ts_ms: now - readAgoMs,
        version: makeVersion(0, 'binlog.000001', 4, 1),
      },
      ts_ms: now - readAgoMs,
    };
  }

  async function deadLetter(event: ChangeEvent): Promise<void> {
    const producer = pipeline.kafka().producer();
    await producer.connect();
    await producer.send({
      topic: `${pipeline.db}.dlq`,
      acks: -1,
      messages: [{ key: messageKey(event), value: encodeChangeEvent(event) }],
    });
    await producer.disconnect();
  }

  it('guards follow the topics’ retention; an older letter stays stale within it and is refused past it', async () => {
    const { sql, db, redis, p } = pipeline;
    await sql.query(`INSERT INTO ${db}.docs VALUES (1, 1)`);
    await eventually(
      () => redis.get(`${p}doc:1`),
      (v) => v === '{"id":1,"v":1}',
    );
    const ttl = await redis.pttl(versionKeyFor('cachesync:', `${p}doc:1`));
    expect(ttl).toBeGreaterThan(RETENTION_MS - 5000);
    expect(ttl).toBeLessThanOrEqual(RETENTION_MS);

    // A dead letter of an older change: however often it is replayed within retention, it loses.
    await deadLetter(letter(0));
    for (let i = 0; i < 2; i++) {
      const replay = await finish(pipeline.spawn(['dlq', 'replay']));
      expect(replay.code).toBe(0);
      expect(replay.out).toContain('applied 0, skipped as stale 1');
      await sleep(4000);
    }
    expect(await redis.get(`${p}doc:1`)).toBe('{"id":1,"v":1}');

    // A letter older than the guards' lifetime is refused: its newer change's guard may be gone.
    await deadLetter(letter(RETENTION_MS + 60_000));
    const refused = await finish(pipeline.spawn(['dlq', 'replay']));
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('refused 1: older than the version guards');
    expect(refused.out).toContain('--force replays them anyway');
    const forced = await finish(pipeline.spawn(['dlq', 'replay', '--force']));
    expect(forced.code).toBe(0);
    expect(forced.out).toContain('skipped as stale 2');
    expect(await redis.get(`${p}doc:1`)).toBe('{"id":1,"v":1}');
  });

  it('check warns when Redis may evict guards', async () => {
    const { redis } = pipeline;
    const [, policy = 'noeviction'] = (await redis.config('GET', 'maxmemory-policy')) as string[];
    const [, maxmemory = '0'] = (await redis.config('GET', 'maxmemory')) as string[];
    await redis.config('SET', 'maxmemory-policy', 'allkeys-lru');
    await redis.config('SET', 'maxmemory', '1gb');
    try {
      const check = await finish(pipeline.spawn(['check']));
      expect(check.out).toMatch(
        /WARN Redis maxmemory-policy is allkeys-lru with maxmemory \d+: it may evict version guards/,
      );
      expect(check.code).toBe(0);
    } finally {
      await redis.config('SET', 'maxmemory-policy', policy);
      await redis.config('SET', 'maxmemory', maxmemory);
    }
    const clean = await finish(pipeline.spawn(['check']));
    expect(clean.out).toContain('ok   Redis keeps version guards (no eviction)');
  });

  it('a second source on this Redis: check refuses templates that overlap and accepts distinct ones', async () => {
    const { configFile, p, db } = pipeline;
    // Another source: its own name and topics, and a template that renders this one's keys.
    const other = configFile.replace(/\.yaml$/, '.other.yaml');
    const text = readFileSync(configFile, 'utf8')
      .replace('source:\n', 'source:\n  name: other\n')
      .replaceAll(`${db}.changes`, `${db}.other.changes`)
      .replaceAll(`${db}.dlq`, `${db}.other.dlq`);
    writeFileSync(other, text.replace(`"${p}doc:{id}"`, `"${p}doc:{v}"`));
    try {
      const clash = await finish(pipeline.spawn(['check', '-c', other]));
      expect(clash.code).toBe(1);
      expect(clash.out).toContain(
        `FAIL mappings[0].keys[0].key "${p}doc:{v}" can render the same keys as "${p}doc:{id}" of the unnamed source of topic ${db}.changes`,
      );
      writeFileSync(other, text.replace(`"${p}doc:{id}"`, `"${p}other:{id}"`));
      const apart = await finish(pipeline.spawn(['check', '-c', other]));
      expect(apart.out).toMatch(
        /ok {3}key templates overlap with none of the \d+ other source\(s\) on this Redis/,
      );
    } finally {
      rmSync(other, { force: true });
    }
  });
});
