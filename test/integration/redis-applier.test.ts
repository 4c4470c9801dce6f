import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { REDELETE_BATCH, RedisApplier } from '../../src/consumer/redis-applier.js';
import type { CacheOp } from '../../src/core/cache-plan.js';
import { MessageError } from '../../src/core/errors.js';
import { makeVersion } from '../../src/core/version.js';
import { uniqueName } from '../support/names.js';

/**
 * The applier sends the ops of many messages in a few script calls: what one message does to
 * Redis, or what Redis refuses of it, must stay that message's alone.
 */
describe('the Redis applier, many messages at once', () => {
  let redis: Redis;
  let prefix: string;
  let applier: RedisApplier;
  const path = 'mappings[0].keys[0]';
  const version = (seq: number) => makeVersion(1, 'binlog.000001', 4, seq);

  beforeAll(async () => {
    redis = new Redis(inject('endpoints').redisUrl, { lazyConnect: true });
    await redis.connect();
    prefix = `${uniqueName('ap')}:`;
    applier = new RedisApplier(redis, { metaPrefix: `${prefix}meta:` });
  });

  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    for (let i = 0; i < keys.length; i += 1000) await redis.del(...keys.slice(i, i + 1000));
    redis.disconnect();
  });

  it('a key of another type fails only the message writing it; the others, before and after it, apply', async () => {
    await redis.hset(`${prefix}poison`, 'f', 'v');
    const set = (key: string, seq: number): CacheOp => ({
      kind: 'set',
      key: `${prefix}${key}`,
      value: `"${key}"`,
      path,
      version: version(seq),
    });
    const batch: CacheOp[][] = [];
    for (let i = 1; i <= 300; i++) batch.push(i === 150 ? [set('poison', i)] : [set(`k${i}`, i)]);
    const results = await applier.applyAll(batch);
    const refused = results[149];
    expect(refused).toBeInstanceOf(MessageError);
    expect((refused as Error).message).toMatch(
      /^mappings\[0\]\.keys\[0\]: Redis rejected the write: WRONGTYPE/,
    );
    expect(results.filter((r) => r instanceof Error)).toHaveLength(1);
    expect(results.filter((r) => !(r instanceof Error))).toEqual(Array(299).fill(['applied']));
    expect(await redis.hgetall(`${prefix}poison`)).toEqual({ f: 'v' });
    expect(await applier.currentVersion(`${prefix}poison`)).toBeNull();
    expect(await redis.get(`${prefix}k151`)).toBe('"k151"');
  });

  it('a repair replaces a key of another type, as a string or as a hash', async () => {
    await redis.hset(`${prefix}was-hash`, 'f', 'v');
    await redis.set(`${prefix}was-string`, 'x');
    const results = await applier.applyAll([
      [{ kind: 'set', key: `${prefix}was-hash`, value: '{}', path, version: version(1), replace: true }],
      [
        {
          kind: 'hash',
          key: `${prefix}was-string`,
          fields: { a: '1' },
          path,
          version: version(1),
          replace: true,
        },
      ],
    ]);
    expect(results).toEqual([['applied'], ['applied']]);
    expect(await redis.get(`${prefix}was-hash`)).toBe('{}');
    expect(await redis.hgetall(`${prefix}was-string`)).toEqual({ a: '1' });
  });

  it('one message writing the same key twice keeps the newer write, in either order', async () => {
    const key = `${prefix}twice`;
    const write = (seq: number): CacheOp => ({
      kind: 'set',
      key,
      value: String(seq),
      path,
      version: version(seq),
    });
    expect(await applier.applyAll([[write(2)], [write(1)]])).toEqual([['applied'], ['stale']]);
    expect(await redis.get(key)).toBe('2');
    expect(await applier.applyAll([[write(3)], [write(4)]])).toEqual([['applied'], ['applied']]);
    expect(await redis.get(key)).toBe('4');
  });

  it('a delete in the same call as writes of its key orders against them by version', async () => {
    const key = `${prefix}del-twice`;
    const op = (kind: 'set' | 'del', seq: number): CacheOp =>
      kind === 'set'
        ? { kind, key, value: String(seq), path, version: version(seq) }
        : { kind, key, path, version: version(seq) };
    expect(await applier.applyAll([[op('set', 5)], [op('del', 6)], [op('set', 6)], [op('set', 5)]])).toEqual([
      ['applied'],
      ['applied'],
      ['stale'],
      ['stale'],
    ]);
    expect(await redis.get(key)).toBeNull();
    expect(await applier.currentVersion(key)).toBe(version(6));
    expect(await applier.applyAll([[op('del', 7)], [op('set', 8)]])).toEqual([['applied'], ['applied']]);
    expect(await redis.get(key)).toBe('8');
  });

  it('applies again after Redis lost its scripts (SCRIPT FLUSH)', async () => {
    await redis.script('FLUSH');
    const key = `${prefix}after-flush`;
    expect(await applier.apply([{ kind: 'set', key, value: 'v', path, version: version(1) }])).toEqual([
      'applied',
    ]);
    expect(await redis.get(key)).toBe('v');
  });

  it('runs every due delayed delete, a batch at a time, and none that is not due', async () => {
    const count = REDELETE_BATCH + 50;
    const keys = Array.from({ length: count }, (_, i) => `${prefix}due${i}`);
    const later = `${prefix}later`;
    const zset = `${prefix}meta:redelete`;
    await redis.mset(...[...keys, later].flatMap((k) => [k, 'stale']));
    const now = Date.now();
    await redis.zadd(zset, ...keys.flatMap((k) => [String(now - 10), k]), String(now + 60_000), later);
    expect(await applier.runDueRedeletes(now)).toBe(REDELETE_BATCH);
    expect(await applier.runDueRedeletes(now)).toBe(50);
    expect(await applier.runDueRedeletes(now)).toBe(0);
    expect(await redis.exists(...keys)).toBe(0);
    expect(await redis.get(later)).toBe('stale');
    expect(await redis.zrange(zset, 0, -1)).toEqual([later]);
  });
});
