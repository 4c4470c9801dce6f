import type { Cluster, Redis } from 'ioredis';
import type { CacheOp } from '../core/cache-plan.js';
import { isProgrammerError, MessageError, UnavailableError } from '../core/errors.js';
import { keyFilter, type KeyFilter } from '../core/key-filter.js';
import { VERSION_COMPARE_LUA } from '../core/version.js';
import { versionKeyFor } from '../core/version-guard.js';
import { scanOwnedKeys, type ScanControl } from './key-scan.js';

/** What happened to one op: written, or skipped because Redis already holds a newer change. */
export type OpOutcome = 'applied' | 'stale';

export interface RedisApplierOptions {
  /** Prefix of cachesync's own keys (version guards, the delayed-delete schedule). Default `cachesync:`. */
  metaPrefix?: string;
  /**
   * How long a key's version guard outlives its last change (and at least the key's own TTL);
   * null: guards never expire. Default 24 h. The runtime sets it to cover Kafka's retention.
   */
  versionTtlMs?: number | null;
  /** SCAN COUNT while clearing a truncated table. Default 500. */
  scanBatch?: number;
}

type RedisClient = Redis | Cluster;

/*
 * Each write checks the key's version guard (a companion key in the same cluster slot) and writes
 * only if its change is newer, so a replay, a DLQ replay or another row's late change never puts
 * an older value back. A DEL leaves its version behind for the same reason.
 */
const SET_IF_NEWER = `${VERSION_COMPARE_LUA}
local cur = redis.call('GET', KEYS[2])
if cur and cs_compare_versions(cur, ARGV[1]) >= 0 then return 0 end
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'none' and t ~= 'string' then
  if ARGV[5] ~= '1' then
    return redis.error_reply('WRONGTYPE key holds a ' .. t .. ', refresh with format json writes a string')
  end
  redis.call('DEL', KEYS[1])
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) else redis.call('SET', KEYS[1], ARGV[2]) end
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4]) else redis.call('SET', KEYS[2], ARGV[1]) end
return 1`;

const HASH_IF_NEWER = `${VERSION_COMPARE_LUA}
local cur = redis.call('GET', KEYS[2])
if cur and cs_compare_versions(cur, ARGV[1]) >= 0 then return 0 end
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'none' and t ~= 'hash' and ARGV[4] ~= '1' then
  return redis.error_reply('WRONGTYPE key holds a ' .. t .. ', refresh with format hash writes a hash')
end
redis.call('DEL', KEYS[1])
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3]) else redis.call('SET', KEYS[2], ARGV[1]) end
return 1`;

const DEL_IF_NEWER = `${VERSION_COMPARE_LUA}
local cur = redis.call('GET', KEYS[2])
if cur and cs_compare_versions(cur, ARGV[1]) > 0 then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) else redis.call('SET', KEYS[2], ARGV[1]) end
return 1`;

/** Removes a due delayed delete only if it was not rescheduled meanwhile. */
const ZREM_IF_SCORE = `
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0`;

interface ScriptedClient {
  csSetIfNewer(
    key: string,
    verKey: string,
    version: string,
    value: string,
    ttl: string,
    verTtl: string,
    replace: string,
  ): Promise<number>;
  csHashIfNewer(
    key: string,
    verKey: string,
    version: string,
    ttl: string,
    verTtl: string,
    replace: string,
    ...fields: string[]
  ): Promise<number>;
  csDelIfNewer(key: string, verKey: string, version: string, verTtl: string): Promise<number>;
  csZremIfScore(zset: string, member: string, score: string): Promise<number>;
}

/**
 * Applies cache ops to Redis (standalone or Cluster). Commands are auto-pipelined by the client, so a
 * batch of ops costs a round trip per node, not per op.
 */
export class RedisApplier {
  readonly metaPrefix: string;
  readonly versionTtlMs: number | null;
  private readonly scanBatch: number;
  private readonly scripted: ScriptedClient;

  constructor(
    private readonly redis: RedisClient,
    opts: RedisApplierOptions = {},
  ) {
    this.metaPrefix = opts.metaPrefix ?? 'cachesync:';
    this.versionTtlMs = opts.versionTtlMs === undefined ? 24 * 3600_000 : opts.versionTtlMs;
    this.scanBatch = opts.scanBatch ?? 500;
    defineScripts(redis);
    this.scripted = redis as unknown as ScriptedClient;
  }

  /** A guard's PX argument: the guard lifetime, at least the key's TTL; '' for no expiry. */
  private guardTtl(keyTtlMs?: number): string {
    return this.versionTtlMs === null ? '' : String(Math.max(this.versionTtlMs, keyTtlMs ?? 0));
  }

  /** The sorted set of pending delayed deletes: member = key, score = due time (epoch ms). */
  get redeleteKey(): string {
    return `${this.metaPrefix}redelete`;
  }

  /**
   * The version guard of a key, in the same Redis Cluster slot: it reuses the key's hash tag, or
   * makes the whole key the tag.
   */
  versionKey(key: string): string {
    return versionKeyFor(this.metaPrefix, key);
  }

  /**
   * Applies every op, concurrently but in order on each connection; `control` keeps a long
   * table-level delete heartbeating and lets shutdown stop it. Resolves one outcome per op, or
   * rejects: UnavailableError when Redis itself failed (retry later), MessageError when Redis
   * rejected an op because of its content (wrong type, value too large), anything else is a bug.
   */
  async apply(ops: readonly CacheOp[], control: ScanControl = {}): Promise<OpOutcome[]> {
    const settled = await Promise.allSettled(ops.map((op) => this.applyOne(op, control)));
    const outcomes: OpOutcome[] = [];
    let messageError: MessageError | undefined;
    for (const [i, result] of settled.entries()) {
      if (result.status === 'fulfilled') {
        outcomes.push(result.value);
        continue;
      }
      const err = classifyRedisError(result.reason);
      if (!(err instanceof MessageError)) throw err;
      messageError ??= new MessageError(`${ops[i]?.path ?? ''}: ${err.message}`, { cause: err });
    }
    if (messageError) throw messageError;
    return outcomes;
  }

  private async applyOne(op: CacheOp, control: ScanControl): Promise<OpOutcome> {
    const verTtl = this.guardTtl();
    switch (op.kind) {
      case 'set':
        return outcome(
          await this.scripted.csSetIfNewer(
            op.key,
            this.versionKey(op.key),
            op.version,
            op.value,
            op.ttlMs === undefined ? '' : String(op.ttlMs),
            this.guardTtl(op.ttlMs),
            op.replace ? '1' : '',
          ),
        );
      case 'hash':
        return outcome(
          await this.scripted.csHashIfNewer(
            op.key,
            this.versionKey(op.key),
            op.version,
            op.ttlMs === undefined ? '' : String(op.ttlMs),
            this.guardTtl(op.ttlMs),
            op.replace ? '1' : '',
            ...Object.entries(op.fields).flat(),
          ),
        );
      case 'del':
        return outcome(await this.scripted.csDelIfNewer(op.key, this.versionKey(op.key), op.version, verTtl));
      case 'redelete':
        // The schedule lives in Redis: it survives a consumer crash, and a Redis that lost it lost
        // the keys it would have deleted too.
        await this.redis.zadd(this.redeleteKey, 'GT', Date.now() + op.delayMs, op.key);
        return 'applied';
      case 'delMatching':
        await this.deleteOwned(keyFilter(op.template, op.kinds, this.metaPrefix), op.version, control);
        return 'applied';
    }
  }

  /**
   * Deletes every key a template owns (truncate or drop of its table), each through its version
   * guard: a key a newer change wrote stays, and an older change arriving later is skipped. Throws
   * UnavailableError if `control.live` stopped it, so nothing of it counts as applied.
   */
  async deleteOwned(filter: KeyFilter, version: string, control: ScanControl = {}): Promise<number> {
    const verTtl = this.guardTtl();
    let deleted = 0;
    const complete = await scanOwnedKeys(
      this.redis,
      filter,
      async (keys) => {
        // One script per key: keys of a cluster node may sit in different slots.
        const replies = await Promise.all(
          keys.map((k) => this.scripted.csDelIfNewer(k, this.versionKey(k), version, verTtl)),
        );
        deleted += replies.filter((r) => r === 1).length;
      },
      { count: this.scanBatch, ...control },
    );
    if (!complete) {
      throw new UnavailableError(
        `stopped while deleting the keys of ${filter.template}; it is repeated later`,
      );
    }
    return deleted;
  }

  /**
   * Runs the delayed deletes that are due, oldest first, at most `limit`. A key is removed from
   * the schedule only after its DEL, so a crash in between deletes it again later (harmless).
   */
  async runDueRedeletes(now = Date.now(), limit = 500): Promise<number> {
    const due = await this.redis.zrangebyscore(
      this.redeleteKey,
      '-inf',
      now,
      'WITHSCORES',
      'LIMIT',
      0,
      limit,
    );
    const work: Promise<unknown>[] = [];
    for (let i = 0; i + 1 < due.length; i += 2) {
      const key = due[i]!;
      const score = due[i + 1]!;
      work.push(this.redis.del(key).then(() => this.scripted.csZremIfScore(this.redeleteKey, key, score)));
    }
    await Promise.all(work);
    return work.length;
  }

  /** The version of the last change applied to a key, or null if its guard is gone. */
  currentVersion(key: string): Promise<string | null> {
    return this.redis.get(this.versionKey(key));
  }

  /** Number of delayed deletes scheduled and not yet run. */
  pendingRedeletes(): Promise<number> {
    return this.redis.zcard(this.redeleteKey);
  }
}

function outcome(reply: number): OpOutcome {
  return reply === 1 ? 'applied' : 'stale';
}

function defineScripts(redis: RedisClient): void {
  const define = (name: string, numberOfKeys: number, lua: string) => {
    if (!(name in redis)) redis.defineCommand(name, { numberOfKeys, lua });
  };
  define('csSetIfNewer', 2, SET_IF_NEWER);
  define('csHashIfNewer', 2, HASH_IF_NEWER);
  define('csDelIfNewer', 2, DEL_IF_NEWER);
  define('csZremIfScore', 1, ZREM_IF_SCORE);
}

/**
 * Replies that are Redis' own condition, not the command's: it is loading, busy, out of memory,
 * cannot persist (MISCONF), refuses this user (NOAUTH, WRONGPASS, NOPERM after an ACL change), has
 * too many clients, or a cluster is reconfiguring. Inside a Lua script Redis wraps them (`ERR Error
 * running script ...: OOM command not allowed ...`), so they are looked for anywhere in the reply.
 */
const OUTAGE_REPLIES =
  /(^|[\s:(-])(LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|READONLY|MOVED|ASK|OOM|NOREPLICAS|MISCONF|NOPERM|NOAUTH|WRONGPASS)\b|max number of clients reached/;

/**
 * Sorts a failure from ioredis into the message's fault or Redis being unavailable. A programmer
 * error (a TypeError in cachesync's own code) is returned as it is: it is neither.
 */
export function classifyRedisError(reason: unknown): MessageError | UnavailableError | Error {
  if (reason instanceof MessageError || reason instanceof UnavailableError) return reason;
  if (isProgrammerError(reason)) return reason as Error;
  const err = reason instanceof Error ? reason : new Error(String(reason));
  if (err.name === 'ReplyError' && !OUTAGE_REPLIES.test(err.message)) {
    return new MessageError(`Redis rejected the write: ${err.message}`, { cause: err });
  }
  return new UnavailableError(`Redis unavailable: ${err.message}`, { cause: err, server: 'redis' });
}
