import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { RedisApplier } from '../../src/consumer/redis-applier.js';
import type { CacheOp } from '../../src/core/cache-plan.js';
import { VERSION_COMPARE_LUA, compareVersions, makeVersion, versionBefore } from '../../src/core/version.js';
import { uniqueName } from '../support/names.js';

/**
 * Redis must order versions exactly as TypeScript does: the guards are compared in Lua. These run
 * the real scripts against the stack's Redis.
 */
describe('versions in Redis', () => {
  let redis: Redis;
  let prefix: string;
  let applier: RedisApplier;

  beforeAll(async () => {
    redis = new Redis(inject('endpoints').redisUrl, { lazyConnect: true });
    await redis.connect();
    prefix = `${uniqueName('v')}:`;
    applier = new RedisApplier(redis, { metaPrefix: `${prefix}meta:` });
  });

  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  it('compare in Lua exactly as in TypeScript', async () => {
    const samples = [
      '0000000003:0000000000012345:0000002',
      '0000000003:0000000000012345:0000010',
      '0000000010:0000000000000004:0000000',
      '0:3:12345:2',
      '0:3:12345:3',
      '0:9:99999:1',
      '0:10:4:1',
      '1:1:4:1',
      '1:1:4:10000000',
      '1:1:4:9999999',
      '1:1:5:1',
      '9:1:4:1',
      '10:1:4:1',
      '1763772000:2:4:1',
      // Same width, colons in the same places (compared as whole strings), or not.
      '01:1:4:1',
      '12:1:4:1',
      '1:12:4:1',
      '1:1:40:1',
      '1:1:4:10',
      '1:01:4:1',
      '123456789012345678901234:1:1:1',
      '123456789012345678901235:1:1:1',
      versionBefore(1, 'binlog.000001', 5),
    ];
    const script = `${VERSION_COMPARE_LUA}\nreturn cs_compare_versions(ARGV[1], ARGV[2])`;
    for (const a of samples) {
      for (const b of samples) {
        const lua = Number(await redis.eval(script, 0, a, b));
        expect([a, b, lua]).toEqual([a, b, Math.sign(compareVersions(a, b))]);
      }
    }
  });

  it('apply row 10 000 000 of a transaction over row 9 999 999, and never the reverse', async () => {
    const key = `${prefix}big`;
    const set = (seq: number): CacheOp => ({
      kind: 'set',
      key,
      value: String(seq),
      path: 'mappings[0].keys[0]',
      version: makeVersion(1, 'binlog.000001', 4, seq),
    });
    expect(await applier.apply([set(9_999_999)])).toEqual(['applied']);
    expect(await applier.apply([set(10_000_000)])).toEqual(['applied']);
    expect(await applier.apply([set(9_999_999)])).toEqual(['stale']);
    expect(await redis.get(key)).toBe('10000000');
  });

  it('let a change of a new epoch win over a legacy guard at a higher binlog position', async () => {
    const key = `${prefix}legacy`;
    await redis.set(key, 'old');
    await redis.set(applier.versionKey(key), '0000000042:0000000000099999:0000003');
    const older: CacheOp = {
      kind: 'del',
      key,
      path: 'mappings[0].keys[0]',
      version: makeVersion(0, 'binlog.000041', 4, 1),
    };
    expect(await applier.apply([older])).toEqual(['stale']);
    expect(await redis.get(key)).toBe('old');
    const next: CacheOp = { ...older, version: makeVersion(1, 'binlog.000001', 4, 1) };
    expect(await applier.apply([next])).toEqual(['applied']);
    expect(await redis.get(key)).toBeNull();
    expect(await applier.currentVersion(key)).toBe(next.version);
  });
});
