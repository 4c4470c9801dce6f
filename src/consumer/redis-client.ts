import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { RedisConfig, TlsConfig } from '../config/types.js';
import { tlsFinding, type Finding } from '../core/finding.js';

/** Where and as whom to connect: the url taken apart, with the config's user, password and TLS. */
interface Endpoint {
  host: string;
  port: number;
  db: number;
  auth: Pick<RedisOptions, 'username' | 'password' | 'tls'>;
}

/**
 * The one place the url, the ACL user, the password and TLS become connection options, for
 * standalone and Cluster alike. The url is taken apart here rather than by ioredis, which lets a
 * user in the url with no password (`rediss://cachesync@host`) win over `passwordFile` with an
 * empty password.
 */
function endpoint(config: RedisConfig): Endpoint {
  const url = new URL(config.url);
  const password = config.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: Number(url.port || 6379),
    db: Number(url.pathname.slice(1) || 0),
    auth: {
      ...(config.username === undefined ? {} : { username: config.username }),
      ...(password === undefined ? {} : { password }),
      ...(config.tls ? { tls: tlsOptions(config.tls) } : {}),
    },
  };
}

function tlsOptions(tls: TlsConfig): NonNullable<RedisOptions['tls']> {
  return {
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    rejectUnauthorized: tls.rejectUnauthorized,
  };
}

/**
 * An ioredis client for applying changes (standalone, or Redis Cluster when `cluster` is set):
 * commands auto-pipelined, failing fast while Redis is down (the consumer does its own retrying,
 * and must know Redis is down to pause), reconnecting in the background with a capped backoff.
 */
export function createRedis(config: RedisConfig, opts: { lazyConnect?: boolean } = {}): Redis | Cluster {
  const { host, port, db, auth } = endpoint(config);
  const common = {
    ...auth,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    connectTimeout: 5000,
    // A Redis that keeps the connection open and answers nothing (frozen, partitioned) fails the
    // command instead of holding it for ever; the consumer treats that as an outage.
    commandTimeout: 5000,
  };
  const retry = (times: number) => Math.min(100 * times, 2000);
  let client: Redis | Cluster;
  if (config.cluster) {
    client = new Cluster([{ host, port }], {
      enableAutoPipelining: true,
      clusterRetryStrategy: retry,
      lazyConnect: opts.lazyConnect ?? false,
      // With TLS, connect to the names the cluster announces without resolving them first, so
      // each node's certificate is checked against its host name (cluster-announce-hostname).
      ...(config.tls ? { dnsLookup: (address, callback) => callback(null, address) } : {}),
      redisOptions: common,
    });
  } else {
    client = new Redis({
      ...common,
      host,
      port,
      db,
      enableAutoPipelining: true,
      retryStrategy: retry,
      lazyConnect: opts.lazyConnect ?? false,
    });
  }
  // Errors surface on the commands; the client itself reconnects.
  client.on('error', () => {});
  return client;
}

/** `check`: can we reach Redis, as the configured user, and over TLS when asked? */
export async function checkRedis(config: RedisConfig): Promise<Finding[]> {
  const redis = createRedis(config, { lazyConnect: true });
  const where = `Redis at ${redactUrl(config.url)}`;
  const as = config.username ? ` as ${config.username}` : '';
  // A failed TLS handshake reaches the caller only as "Connection is closed"; the cause is an event.
  let cause: Error | undefined;
  redis.on('error', (err: Error) => (cause ??= err));
  try {
    await redis.connect();
    const pong = await redis.ping();
    return [
      { ok: pong === 'PONG', what: `${where} answers${as}` },
      tlsFinding(where, new URL(config.url).hostname, config.tls),
    ];
  } catch (err) {
    return [{ ok: false, what: `${where} answers${as}`, why: (cause ?? (err as Error)).message }];
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
