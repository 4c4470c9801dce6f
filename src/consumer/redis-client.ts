import { Cluster, Redis } from 'ioredis';
import type { RedisConfig } from '../config/types.js';
import type { Finding } from '../core/finding.js';

/**
 * An ioredis client for applying changes (standalone, or Redis Cluster when `cluster` is set):
 * commands auto-pipelined, failing fast while Redis is down (the consumer does its own retrying,
 * and must know Redis is down to pause), reconnecting in the background with a capped backoff.
 */
export function createRedis(config: RedisConfig, opts: { lazyConnect?: boolean } = {}): Redis | Cluster {
  const common = {
    ...(config.password !== undefined ? { password: config.password } : {}),
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    connectTimeout: 5000,
  };
  const retry = (times: number) => Math.min(100 * times, 2000);
  let client: Redis | Cluster;
  if (config.cluster) {
    const url = new URL(config.url);
    const node = { host: url.hostname, port: Number(url.port || 6379) };
    const auth = {
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    };
    client = new Cluster([node], {
      enableAutoPipelining: true,
      clusterRetryStrategy: retry,
      lazyConnect: opts.lazyConnect ?? false,
      redisOptions: { ...auth, ...common, ...(url.protocol === 'rediss:' ? { tls: {} } : {}) },
    });
  } else {
    client = new Redis(config.url, {
      ...common,
      enableAutoPipelining: true,
      retryStrategy: retry,
      lazyConnect: opts.lazyConnect ?? false,
    });
  }
  // Errors surface on the commands; the client itself reconnects.
  client.on('error', () => {});
  return client;
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
