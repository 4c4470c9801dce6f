import type { RedisConfig } from '../config/types.js';
import type { Finding } from '../core/finding.js';
import { createRedis } from './redis-client.js';

/**
 * `check`: can Redis evict version guards? An evicted guard lets an older change (a redelivery, a
 * replay) overwrite a newer one, so an evicting `maxmemory-policy` is worth a warning.
 */
export async function checkGuardEviction(config: RedisConfig): Promise<Finding[]> {
  const redis = createRedis(config, { lazyConnect: true });
  const what = 'Redis keeps version guards (no eviction)';
  try {
    await redis.connect();
    const [, policy = ''] = (await redis.config('GET', 'maxmemory-policy')) as string[];
    const [, maxmemory = '0'] = (await redis.config('GET', 'maxmemory')) as string[];
    if (policy === 'noeviction' || maxmemory === '0') {
      return [{ ok: true, what: `${what}: maxmemory-policy ${policy}, maxmemory ${maxmemory}` }];
    }
    return [
      {
        ok: true,
        warning: true,
        what: `Redis maxmemory-policy is ${policy} with maxmemory ${maxmemory}: it may evict version guards`,
        why:
          'an evicted guard lets an older change (a redelivery, a replay) overwrite a newer value; set ' +
          'maxmemory-policy noeviction, or keep the cache in a Redis with memory to spare',
      },
    ];
  } catch (err) {
    return [
      {
        ok: true,
        warning: true,
        what: 'could not read Redis maxmemory-policy (CONFIG GET)',
        why: `${(err as Error).message}; make sure Redis cannot evict version guards (maxmemory-policy noeviction)`,
      },
    ];
  } finally {
    redis.disconnect();
  }
}
