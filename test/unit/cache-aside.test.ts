import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { CacheAside, type CacheAsideOptions } from '../../src/client/index.js';
import { versionKeyFor } from '../../src/core/version-guard.js';

/** Redis Cluster's key-to-hash-input rule: the first non-empty {...} if there is one, else the key. */
function hashInput(key: string): string {
  const open = key.indexOf('{');
  if (open < 0) return key;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

// Never connects: these tests only build readers.
const redis = new Redis({ lazyConnect: true });
afterAll(() => redis.disconnect());

describe('CacheAside options', () => {
  it.each<[CacheAsideOptions, string]>([
    [{ ttl: '60' }, 'CacheAside option ttl: got "60": a duration needs a unit'],
    [{ missTtl: '-1s' }, 'CacheAside option missTtl: got "-1s": a duration cannot be negative'],
    [{ loadLock: 'soon' }, 'CacheAside option loadLock: got "soon"; expected a number with a unit'],
    [{ ttl: '0' }, 'CacheAside option ttl: must be more than 0; leave it out for none'],
    [{ ttl: 3600 as unknown as string }, 'CacheAside option ttl: got number 3600; write a duration'],
    [{ ttl: '1h', ttlJitter: 1 }, 'CacheAside option ttlJitter: got 1; expected a fraction from 0 up to 1'],
    [{ ttl: '1h', ttlJitter: -0.1 }, 'CacheAside option ttlJitter: got -0.1'],
    [{ metaPrefix: '' }, 'CacheAside option metaPrefix: expected a non-empty string'],
  ])('%j is refused with a message naming the option', (opts, message) => {
    expect(() => new CacheAside(redis, opts)).toThrow(message);
  });

  it('refuses a key that is not a string and a loader that is not a function', async () => {
    const cache = new CacheAside(redis);
    await expect(cache.get(42 as unknown as string, () => Promise.resolve(null))).rejects.toThrow(
      'CacheAside.get: the key must be a non-empty string, got 42',
    );
    await expect(cache.get('k', 'v' as unknown as () => Promise<string>)).rejects.toThrow(
      'CacheAside.get("k"): the loader must be a function',
    );
  });

  it('takes durations as the config writes them', () => {
    expect(
      () => new CacheAside(redis, { ttl: '1.5m', ttlJitter: 0.1, missTtl: '500ms', loadLock: '2s' }),
    ).not.toThrow();
  });
});

describe("CacheAside's guard and lock keys", () => {
  it("reads the very guard the consumers write, with the consumers' default prefix", () => {
    const cache = new CacheAside(redis);
    expect(cache.metaPrefix).toBe('cachesync:');
    expect(cache.guardKey('user:1')).toBe(versionKeyFor('cachesync:', 'user:1'));
    expect(new CacheAside(redis, { metaPrefix: 'shop:' }).guardKey('user:1')).toBe(
      versionKeyFor('shop:', 'user:1'),
    );
  });

  it.each(['user:1', 'user:{42}:profile', '{tenant}:a:b', 'x{y}{z}', 'a{b'])(
    "%s: guard and lock share the key's cluster slot, so one script can touch all three",
    (key) => {
      const cache = new CacheAside(redis);
      expect(hashInput(cache.guardKey(key))).toBe(hashInput(key));
      expect(hashInput(cache.lockKey(key))).toBe(hashInput(key));
      expect(cache.lockKey(key)).not.toBe(cache.guardKey(key));
    },
  );
});
