import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cluster, Redis } from 'ioredis';
import { parseDuration } from '../config/duration.js';
import { hasHashTag, versionKeyFor } from '../core/version-guard.js';

/** Options of {@link CacheAside}. Durations are written as in the config: `500ms`, `2s`, `1.5m`, `1h`. */
export interface CacheAsideOptions {
  /** The prefix the consumers use for version guards (their `metaPrefix`). Default `cachesync:`. */
  metaPrefix?: string;
  /** Expiry of the values it writes. Default: none (they live until cachesync deletes them). */
  ttl?: string;
  /** Spreads `ttl` and `missTtl` by up to this fraction either way (0.1 = +-10%), from 0 up to 1. Default 0. */
  ttlJitter?: number;
  /** Caches a loader's `null` as a miss marker for this long. Default: a `null` is not cached. */
  missTtl?: string;
  /**
   * One loader per key at a time, across every process sharing the Redis: a miss takes a lock held
   * at most this long; the other misses wait for the value it writes. Default: no lock.
   */
  loadLock?: string;
}

/** Loads a key's value from the source of truth; `null` when there is none (no such row). */
export type Loader = () => Promise<string | null>;

/** Events of {@link CacheAside}, for logs and metrics. None of them is an `error` event: none throws. */
export interface CacheAsideEvents {
  /** Redis failed (or is disconnected); `get` served the key from the loader instead. */
  redisError: [error: Error, key: string];
  /** A change to the key was applied while it loaded: the loaded value was returned, not cached. */
  writeSkipped: [key: string];
  /** A loader ran for a miss (with `loadLock`, only the lock holder's or a waiter's that gave up). */
  load: [key: string];
}

/**
 * What a cached "no such row" holds. A NUL byte starts it, which JSON text and the values cachesync
 * writes never do; a loader that returns exactly this string gets it back, but it is not cached.
 */
export const MISS_MARKER = '\u0000cachesync:miss';

/*
 * Every get is one script: the key, or on a miss the key's version guard read in the same instant
 * (and the load lock taken when it is free). The guard is the lease token: any change cachesync
 * applies to the key rewrites it. Guard and lock sit in the key's slot, so this runs on one node
 * of a cluster. A nil cannot sit inside a Lua array reply, so an absent guard is ''.
 */
const READ = `
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
local g = redis.call('GET', KEYS[2]) or ''
local locked = 0
if ARGV[1] ~= '' and redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then locked = 1 end
return {0, g, locked}`;

/*
 * Writes what was loaded only if the guard is still what it was when the miss was seen: otherwise a
 * change was applied meanwhile, and what was loaded may be older than it. Releases the lock if it is
 * still this caller's.
 */
const WRITE = `
local wrote = 0
if (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  if ARGV[3] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) else redis.call('SET', KEYS[1], ARGV[2]) end
  wrote = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
return wrote`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

interface ScriptedClient {
  csaRead(
    key: string,
    guardKey: string,
    lockKey: string,
    token: string,
    lockMs: string,
  ): Promise<[1, string] | [0, string, 0 | 1]>;
  csaWrite(
    key: string,
    guardKey: string,
    lockKey: string,
    guard: string,
    value: string,
    ttlMs: string,
    token: string,
  ): Promise<0 | 1>;
  csaRelease(lockKey: string, token: string): Promise<number>;
}

type RedisClient = Redis | Cluster;

/** A miss as the read script saw it: the guard then, and the lock token if this caller holds the lock. */
interface Miss {
  guard: string;
  token: string;
}

/**
 * A cache-aside reader that cannot leave a stale value behind: on a miss it writes what the loader
 * returned only if no change to the key was applied since the miss (the key's version guard, kept by
 * the cachesync consumers, is unchanged). Works with an ioredis `Redis` or `Cluster`.
 *
 * ```ts
 * const cache = new CacheAside(redis, { ttl: '1h', ttlJitter: 0.1, missTtl: '30s', loadLock: '2s' });
 * const user = await cache.get(`user:${id}`, () => loadUserJson(id));
 * ```
 */
export class CacheAside extends EventEmitter<CacheAsideEvents> {
  readonly metaPrefix: string;
  private readonly ttlMs: number | undefined;
  private readonly missTtlMs: number | undefined;
  private readonly jitter: number;
  private readonly lockMs: number | undefined;
  private readonly scripted: ScriptedClient;
  private everReady: boolean;

  /** @throws TypeError or RangeError naming the option when an option is invalid. */
  constructor(
    private readonly redis: RedisClient,
    opts: CacheAsideOptions = {},
  ) {
    super();
    this.metaPrefix = opts.metaPrefix ?? 'cachesync:';
    if (typeof this.metaPrefix !== 'string' || this.metaPrefix === '') {
      throw new TypeError('CacheAside option metaPrefix: expected a non-empty string like "cachesync:"');
    }
    this.ttlMs = positiveDuration('ttl', opts.ttl);
    this.missTtlMs = positiveDuration('missTtl', opts.missTtl);
    this.lockMs = positiveDuration('loadLock', opts.loadLock);
    this.jitter = opts.ttlJitter ?? 0;
    if (typeof this.jitter !== 'number' || !(this.jitter >= 0 && this.jitter < 1)) {
      throw new RangeError(
        `CacheAside option ttlJitter: got ${String(opts.ttlJitter)}; expected a fraction from 0 up to 1, like 0.1 for +-10%`,
      );
    }
    defineScripts(redis);
    this.scripted = redis as unknown as ScriptedClient;
    this.everReady = redis.status === 'ready';
    // Only while it matters: a listener per reader on a connected client would pile up.
    if (!this.everReady) redis.once('ready', () => (this.everReady = true));
  }

  /** The key's version guard, named as the consumers name it. */
  guardKey(key: string): string {
    return versionKeyFor(this.metaPrefix, key);
  }

  /** The key's load lock, in the key's Redis Cluster slot like its guard. */
  lockKey(key: string): string {
    return `${this.metaPrefix}lock:${hasHashTag(key) ? key : `{${key}}`}`;
  }

  /**
   * The cached value of `key`; on a miss, the loader's value, cached unless a change to the key was
   * applied while it loaded. `null` when the loader found nothing (cached as a miss marker with
   * `missTtl`). When Redis fails, the loader's value, with a `redisError` event. A loader's error
   * is thrown as it is.
   */
  async get(key: string, loader: Loader): Promise<string | null> {
    if (typeof key !== 'string' || key === '') {
      throw new TypeError(`CacheAside.get: the key must be a non-empty string, got ${JSON.stringify(key)}`);
    }
    if (typeof loader !== 'function') {
      throw new TypeError(`CacheAside.get(${JSON.stringify(key)}): the loader must be a function`);
    }
    if (!this.redisUp()) {
      return this.fallback(key, loader, new Error(`Redis is not connected (${this.redis.status})`));
    }
    const started = Date.now();
    let delay = 5;
    for (;;) {
      const token = this.lockMs === undefined ? '' : randomBytes(12).toString('base64url');
      let reply: Awaited<ReturnType<ScriptedClient['csaRead']>>;
      try {
        reply = await this.scripted.csaRead(
          key,
          this.guardKey(key),
          this.lockKey(key),
          token,
          String(this.lockMs ?? ''),
        );
      } catch (err) {
        return this.fallback(key, loader, asError(err));
      }
      if (reply[0] === 1) return reply[1] === MISS_MARKER ? null : reply[1];
      const [, guard, locked] = reply;
      if (this.lockMs === undefined || locked === 1) return this.load(key, loader, { guard, token });
      // Another caller holds the lock: wait for the value it writes. When its lock expires one waiter
      // takes it over; past twice the lock time a waiter stops waiting and loads on its own (its write
      // is still guarded).
      if (Date.now() - started >= 2 * this.lockMs) return this.load(key, loader, { guard, token: '' });
      await sleep(delay);
      if (!this.redisUp()) {
        return this.fallback(key, loader, new Error(`Redis is not connected (${this.redis.status})`));
      }
      delay = Math.min(delay * 2, 50, Math.max(1, this.lockMs / 10));
    }
  }

  private async load(key: string, loader: Loader, miss: Miss): Promise<string | null> {
    this.emit('load', key);
    let value: string | null;
    try {
      value = await loader();
      if (value !== null && typeof value !== 'string') {
        throw new TypeError(
          `CacheAside loader for ${JSON.stringify(key)} returned a ${typeof value}; it must return a string or null`,
        );
      }
    } catch (err) {
      await this.release(key, miss.token);
      throw err;
    }
    const stored = value === null ? (this.missTtlMs === undefined ? undefined : MISS_MARKER) : value;
    if (stored === undefined || value === MISS_MARKER) {
      await this.release(key, miss.token);
      return value;
    }
    const ttlMs = value === null ? this.missTtlMs : this.ttlMs;
    if (!this.redisUp()) {
      // Lost during the load: the write would wait for a reconnect, and so would the caller.
      this.emit('redisError', new Error(`Redis is not connected (${this.redis.status})`), key);
      return value;
    }
    try {
      const wrote = await this.scripted.csaWrite(
        key,
        this.guardKey(key),
        this.lockKey(key),
        miss.guard,
        stored,
        ttlMs === undefined ? '' : String(this.spread(ttlMs)),
        miss.token,
      );
      if (wrote === 0) this.emit('writeSkipped', key);
    } catch (err) {
      this.emit('redisError', asError(err), key);
    }
    return value;
  }

  /** Frees the lock for the next caller (a waiter takes it at once instead of at its expiry). */
  private async release(key: string, token: string): Promise<void> {
    // A lock left behind by a lost connection expires on its own.
    if (token === '' || !this.redisUp()) return;
    try {
      await this.scripted.csaRelease(this.lockKey(key), token);
    } catch (err) {
      this.emit('redisError', asError(err), key);
    }
  }

  private async fallback(key: string, loader: Loader, err: Error): Promise<string | null> {
    this.emit('redisError', err, key);
    this.emit('load', key);
    return loader();
  }

  /**
   * Whether to ask Redis at all. A client that was connected and lost its connection would queue the
   * command until it reconnects or gives up: the application would wait on the cache instead of
   * reading the database. A client that has not connected yet is given the chance.
   */
  private redisUp(): boolean {
    const status = this.redis.status;
    if (status === 'ready') return true;
    return !this.everReady && (status === 'wait' || status === 'connecting' || status === 'connect');
  }

  private spread(ms: number): number {
    if (this.jitter === 0) return ms;
    return Math.max(1, Math.round(ms * (1 + this.jitter * (2 * Math.random() - 1))));
  }
}

function positiveDuration(option: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (typeof text !== 'string') {
    throw new TypeError(
      `CacheAside option ${option}: got ${typeof text} ${String(text)}; write a duration with a unit, like "500ms", "30s" or "1h"`,
    );
  }
  let ms: number;
  try {
    ms = parseDuration(text);
  } catch (err) {
    throw new RangeError(`CacheAside option ${option}: ${(err as Error).message}`);
  }
  if (ms <= 0)
    throw new RangeError(`CacheAside option ${option}: must be more than 0; leave it out for none`);
  return ms;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function defineScripts(redis: RedisClient): void {
  const define = (name: string, numberOfKeys: number, lua: string) => {
    if (!(name in redis)) redis.defineCommand(name, { numberOfKeys, lua });
  };
  define('csaRead', 3, READ);
  define('csaWrite', 3, WRITE);
  define('csaRelease', 1, RELEASE);
}
