import { Redis } from 'ioredis';
import type { RedisConfig } from '../config/types.js';
import type { Finding } from '../core/finding.js';

/**
 * An ioredis client for applying changes: commands auto-pipelined, failing fast while Redis is
 * down (the consumer does its own retrying, and must know Redis is down to pause), reconnecting
 * in the background with a capped backoff.
 */
export function createRedis(config: RedisConfig, opts: { lazyConnect?: boolean } = {}): Redis {
  const redis = new Redis(config.url, {
    ...(config.password !== undefined ? { password: config.password } : {}),
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    connectTimeout: 5000,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    lazyConnect: opts.lazyConnect ?? false,
  });
  // Errors surface on the commands; the client itself reconnects.
  redis.on('error', () => {});
  return redis;
}

/** `check`: can we reach Redis and write to it? */
export async function checkRedis(config: RedisConfig): Promise<Finding[]> {
  const redis = createRedis(config, { lazyConnect: true });
  const where = redactUrl(config.url);
  try {
    await redis.connect();
    const pong = await redis.ping();
    return [{ ok: pong === 'PONG', what: `Redis at ${where} answers` }];
  } catch (err) {
    return [{ ok: false, what: `Redis at ${where} answers`, why: (err as Error).message }];
  } finally {
    redis.disconnect();
  }
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable url)';
  }
}
