import { createHash } from 'node:crypto';
import { Command, type Cluster, type Redis } from 'ioredis';
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

/**
 * Applies a list of ops, in order, in one script call, and answers one reply per op: 1 written,
 * 0 skipped (Redis holds a newer change), or `E<error>` when Redis refused that op alone (the other
 * ops still run). Ops are read from ARGV by a kind letter, their keys from KEYS in the same order:
 *
 * - `S version value ttl guardTtl replace` (KEYS: key, guard): a string, if newer than its guard.
 * - `H version ttl guardTtl replace n field value ...` (KEYS: key, guard): a hash, if newer.
 * - `D version guardTtl` (KEYS: key, guard): a delete, unless the guard holds a newer change.
 * - `Z due member` (KEYS: the schedule): a delayed delete of `member`, never moved earlier; the
 *   call schedules them all at its end, in one ZADD.
 * - `R member score` (KEYS: the schedule): removes a run delayed delete, unless rescheduled meanwhile.
 *
 * Each write checks the key's version guard (a companion key in the same cluster slot; the call
 * reads all of its guards in one MGET, since a command run from Lua costs more than the work it
 * does) and writes only if its change is newer, so a replay, a DLQ replay or another row's late change never puts
 * an older value back. A DEL leaves its version behind for the same reason.
 */
const APPLY_OPS = `${VERSION_COMPARE_LUA}
-- Every guard of the call is read in one MGET up front; a guard written here is remembered, so a
-- later op of the same key sees it.
local guards = {}
local function may_write(guard, version, ties)
  local cur = guards[guard]
  if cur == nil then cur = redis.call('GET', guard) end
  if not cur then return true end
  if cur == version then return ties end
  local order = cs_compare_versions(cur, version)
  return order < 0 or (ties and order == 0)
end
local function set_guard(guard, version, ttl)
  guards[guard] = version
  if ttl ~= '' then redis.call('SET', guard, version, 'PX', ttl) else redis.call('SET', guard, version) end
end
local function set_string(key, guard, version, value, ttl, guardTtl, replace)
  if not may_write(guard, version, false) then return 0 end
  -- SET with GET refuses, writing nothing, a key of another type: no TYPE call on the common path.
  local written
  if ttl ~= '' then
    written = redis.pcall('SET', key, value, 'PX', ttl, 'GET')
  else
    written = redis.pcall('SET', key, value, 'GET')
  end
  if type(written) == 'table' and written.err then
    local t = redis.call('TYPE', key).ok
    if t == 'none' or t == 'string' then error(written) end
    if replace ~= '1' then
      return 'EWRONGTYPE key holds a ' .. t .. ', refresh with format json writes a string'
    end
    redis.call('DEL', key)
    if ttl ~= '' then redis.call('SET', key, value, 'PX', ttl) else redis.call('SET', key, value) end
  end
  set_guard(guard, version, guardTtl)
  return 1
end
local function set_hash(key, guard, version, ttl, guardTtl, replace, first, last)
  if not may_write(guard, version, false) then return 0 end
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= 'hash' and replace ~= '1' then
    return 'EWRONGTYPE key holds a ' .. t .. ', refresh with format hash writes a hash'
  end
  if t ~= 'none' then redis.call('DEL', key) end
  if last >= first then redis.call('HSET', key, unpack(ARGV, first, last)) end
  if ttl ~= '' then redis.call('PEXPIRE', key, ttl) end
  set_guard(guard, version, guardTtl)
  return 1
end
local function delete(key, guard, version, guardTtl)
  if not may_write(guard, version, true) then return 0 end
  redis.call('DEL', key)
  set_guard(guard, version, guardTtl)
  return 1
end
-- Delayed deletes are scheduled together at the end of the call, one ZADD per schedule.
local schedules = {}
local function schedule(zset, due, member, at)
  local s = schedules[zset]
  if not s then
    s = { args = { 'ZADD', zset, 'GT' }, at = {} }
    schedules[zset] = s
  end
  s.args[#s.args + 1] = due
  s.args[#s.args + 1] = member
  s.at[#s.at + 1] = at
end
local function unschedule(zset, member, score)
  if redis.call('ZSCORE', zset, member) == score then redis.call('ZREM', zset, member) end
  return 1
end
do
  local names, k, a = {}, 1, 1
  while a <= #ARGV do
    local kind = ARGV[a]
    if kind == 'S' then names[#names + 1] = KEYS[k + 1]; k, a = k + 2, a + 6
    elseif kind == 'H' then names[#names + 1] = KEYS[k + 1]; k, a = k + 2, a + 6 + tonumber(ARGV[a + 5])
    elseif kind == 'D' then names[#names + 1] = KEYS[k + 1]; k, a = k + 2, a + 3
    else k, a = k + 1, a + 3 end
  end
  if #names > 0 then
    local values = redis.call('MGET', unpack(names))
    for i = 1, #names do guards[names[i]] = values[i] end
  end
end
local out, k, a = {}, 1, 1
while a <= #ARGV do
  local kind, ok, r = ARGV[a], nil, nil
  if kind == 'S' then
    ok, r = pcall(set_string, KEYS[k], KEYS[k + 1], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
    k, a = k + 2, a + 6
  elseif kind == 'H' then
    local n = tonumber(ARGV[a + 5])
    ok, r = pcall(set_hash, KEYS[k], KEYS[k + 1], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], a + 6, a + 5 + n)
    k, a = k + 2, a + 6 + n
  elseif kind == 'D' then
    ok, r = pcall(delete, KEYS[k], KEYS[k + 1], ARGV[a + 1], ARGV[a + 2])
    k, a = k + 2, a + 3
  elseif kind == 'Z' then
    ok, r = true, 1
    schedule(KEYS[k], ARGV[a + 1], ARGV[a + 2], #out + 1)
    k, a = k + 1, a + 3
  elseif kind == 'R' then
    ok, r = pcall(unschedule, KEYS[k], ARGV[a + 1], ARGV[a + 2])
    k, a = k + 1, a + 3
  else
    return redis.error_reply('ERR cachesync: unknown op ' .. tostring(kind))
  end
  if not ok then
    if type(r) == 'table' then r = r.err end
    r = 'E' .. tostring(r)
  end
  out[#out + 1] = r
end
for _, s in pairs(schedules) do
  local ok, r = pcall(redis.call, unpack(s.args))
  if not ok then
    if type(r) == 'table' then r = r.err end
    for _, at in ipairs(s.at) do out[at] = 'E' .. tostring(r) end
  end
end
return out`;

/**
 * Runs due delayed deletes on a standalone Redis: KEYS[1] is the schedule, KEYS[2..] the due keys,
 * ARGV the score each was read with. Each key is deleted, and removed from the schedule unless it
 * was rescheduled since it was read (its score changed).
 */
const RUN_DUE = `
if #KEYS < 2 then return 0 end
redis.call('DEL', unpack(KEYS, 2))
local scores = redis.call('ZMSCORE', KEYS[1], unpack(KEYS, 2))
local done = {}
for i, score in ipairs(scores) do
  if score == ARGV[i] then done[#done + 1] = KEYS[i + 1] end
end
if #done > 0 then redis.call('ZREM', KEYS[1], unpack(done)) end
return #KEYS - 1`;

/** One op's reply from {@link APPLY_OPS}: 1 written, 0 stale, `E<error>` refused. */
type OpReply = number | string;

/** A script run by {@link RedisApplier}, with the SHA1 EVALSHA names it by. */
interface Script {
  lua: string;
  sha: string;
}

const script = (lua: string): Script => ({ lua, sha: createHash('sha1').update(lua).digest('hex') });
const APPLY_OPS_SCRIPT = script(APPLY_OPS);
const RUN_DUE_SCRIPT = script(RUN_DUE);

interface ScriptedClient {
  /** One op of two keys (key and guard), routed by its key on a Cluster. */
  csApplyOp2(key: string, guard: string, args: string[]): Promise<OpReply[]>;
  /** One op of one key, routed by it on a Cluster. */
  csApplyOp1(key: string, args: string[]): Promise<OpReply[]>;
}

/**
 * Ops per script call on a standalone Redis. A call runs atomically, so this bounds how long other
 * clients wait behind it (a few hundred microseconds), while still taking most of the per-command
 * cost out of each op.
 */
const OPS_PER_CALL = 100;

/** Due delayed deletes run per round trip. */
export const REDELETE_BATCH = 500;

/** What a message's ops came to: an outcome per op, or the error that failed the message. */
export type ApplyResult = OpOutcome[] | Error;

/** An op run by {@link APPLY_OPS} (a table-level delete scans instead). */
type ScriptedOp = Exclude<CacheOp, { kind: 'delMatching' }>;

/** A script call being built: its keys and arguments, and where each of its ops came from. */
interface ScriptCall {
  keys: string[];
  args: string[];
  ops: ScriptedOp[];
  /** The message and the index within it of each op, so its reply goes back there. */
  messages: number[];
  indexes: number[];
}

/**
 * Applies cache ops to Redis (standalone or Cluster). On a standalone Redis the ops of many
 * messages go in a few script calls; on a Cluster, where one call's keys must share a slot, one
 * call per op. Commands are auto-pipelined by the client, so a batch costs a round trip per node.
 */
export class RedisApplier {
  readonly metaPrefix: string;
  readonly versionTtlMs: number | null;
  private readonly scanBatch: number;
  private readonly scripted: ScriptedClient;
  private readonly cluster: boolean;

  constructor(
    private readonly redis: RedisClient,
    opts: RedisApplierOptions = {},
  ) {
    this.metaPrefix = opts.metaPrefix ?? 'cachesync:';
    this.versionTtlMs = opts.versionTtlMs === undefined ? 24 * 3600_000 : opts.versionTtlMs;
    this.scanBatch = opts.scanBatch ?? 500;
    defineScripts(redis);
    this.scripted = redis as unknown as ScriptedClient;
    this.cluster = redis.isCluster;
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
   * Applies one message's ops (see {@link applyAll}). Resolves one outcome per op, or rejects:
   * UnavailableError when Redis itself failed (retry later), MessageError when Redis rejected an
   * op because of its content (wrong type, value too large), anything else is a bug.
   */
  async apply(ops: readonly CacheOp[], control: ScanControl = {}): Promise<OpOutcome[]> {
    const [result] = await this.applyAll([ops], control);
    if (result instanceof Error) throw result;
    return result ?? [];
  }

  /**
   * Applies the ops of several messages: each key's ops in the order given, across messages too.
   * `control` keeps a long table-level delete heartbeating and lets shutdown stop it. Resolves one
   * result per message: its outcomes, or the error that failed it (UnavailableError when Redis
   * itself failed, MessageError when Redis rejected one of its ops because of its content, anything
   * else is a bug). Rejects only on a bug.
   */
  async applyAll(batch: readonly (readonly CacheOp[])[], control: ScanControl = {}): Promise<ApplyResult[]> {
    const replies: unknown[][] = batch.map((ops) => new Array<unknown>(ops.length));
    const work: Promise<void>[] = [];
    const now = Date.now();
    const calls = new CallBuilder((op, call) => this.encode(op, now, call), this.cluster ? 1 : OPS_PER_CALL);
    for (let m = 0; m < batch.length; m++) {
      const ops = batch[m]!;
      for (let i = 0; i < ops.length; i++) {
        const op = ops[i]!;
        if (op.kind !== 'delMatching') {
          calls.add(op, m, i);
          continue;
        }
        const settle = (reply: unknown) => {
          replies[m]![i] = reply;
        };
        work.push(
          this.deleteOwned(keyFilter(op.template, op.kinds, this.metaPrefix), op.version, control).then(
            () => settle(1),
            settle,
          ),
        );
      }
    }
    for (const call of calls.calls) work.push(this.send(call, now, replies));
    await Promise.all(work);
    return batch.map((ops, m) => settleMessage(ops, replies[m]!));
  }

  /**
   * Sends a script call, putting each reply (or the call's failure) where its op came from. A call
   * Redis refused as a whole for what is in it is sent again an op at a time, so that only the
   * message at fault fails.
   */
  private send(call: ScriptCall, now: number, replies: unknown[][]): Promise<void> {
    const { keys, args, messages, indexes } = call;
    const sent = this.cluster
      ? keys.length === 2
        ? this.scripted.csApplyOp2(keys[0]!, keys[1]!, args)
        : this.scripted.csApplyOp1(keys[0]!, args)
      : this.runScript<OpReply[]>(APPLY_OPS_SCRIPT, keys, args);
    return sent.then(
      (out) => {
        for (let j = 0; j < indexes.length; j++) replies[messages[j]!]![indexes[j]!] = out[j];
      },
      async (err: unknown) => {
        if (call.ops.length > 1 && classifyRedisError(err) instanceof MessageError) {
          const alone = new CallBuilder((op, one) => this.encode(op, now, one), 1);
          call.ops.forEach((op, j) => alone.add(op, messages[j]!, indexes[j]!));
          await Promise.all(alone.calls.map((one) => this.send(one, now, replies)));
          return;
        }
        for (let j = 0; j < indexes.length; j++) replies[messages[j]!]![indexes[j]!] = err;
      },
    );
  }

  /**
   * Runs a script over any number of keys and arguments on a standalone Redis, as a command built here:
   * ioredis copies and flattens the arguments of the commands it builds (Array.prototype.flat,
   * about 0.2 us an argument), which for calls of hundreds of arguments cost more than all the
   * rest of the apply. A Redis that lost its scripts (restarted, SCRIPT FLUSH) is sent the script.
   */
  private async runScript<T>(script: Script, keys: readonly string[], args: readonly string[]): Promise<T> {
    const argv = new Array<string>(2 + keys.length + args.length);
    argv[0] = script.sha;
    argv[1] = String(keys.length);
    for (let i = 0; i < keys.length; i++) argv[2 + i] = keys[i]!;
    for (let i = 0, at = 2 + keys.length; i < args.length; i++) argv[at + i] = args[i]!;
    const send = (name: 'evalsha' | 'eval') => {
      const command = new Command(name, [], { replyEncoding: 'utf8' });
      command.args = argv;
      return (this.redis as Redis).sendCommand(command) as Promise<T>;
    };
    try {
      return await send('evalsha');
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err;
      argv[0] = script.lua;
      return send('eval');
    }
  }

  /** Appends an op's keys and arguments to a script call. */
  private encode(op: ScriptedOp, now: number, { keys, args }: ScriptCall): void {
    switch (op.kind) {
      case 'set':
        keys.push(op.key, this.versionKey(op.key));
        args.push(
          'S',
          op.version,
          op.value,
          op.ttlMs === undefined ? '' : String(op.ttlMs),
          this.guardTtl(op.ttlMs),
          op.replace ? '1' : '',
        );
        return;
      case 'hash': {
        keys.push(op.key, this.versionKey(op.key));
        const count = args.length + 5;
        args.push('H', op.version, op.ttlMs === undefined ? '' : String(op.ttlMs), this.guardTtl(op.ttlMs));
        args.push(op.replace ? '1' : '', '');
        for (const field in op.fields) args.push(field, op.fields[field]!);
        args[count] = String(args.length - count - 1);
        return;
      }
      case 'del':
        keys.push(op.key, this.versionKey(op.key));
        args.push('D', op.version, this.guardTtl());
        return;
      case 'redelete':
        // The schedule lives in Redis: it survives a consumer crash, and a Redis that lost it lost
        // the keys it would have deleted too.
        keys.push(this.redeleteKey);
        args.push('Z', String(now + op.delayMs), op.key);
        return;
    }
  }

  /**
   * Deletes every key a template owns (truncate or drop of its table), each through its version
   * guard: a key a newer change wrote stays, and an older change arriving later is skipped. Throws
   * UnavailableError if `control.live` stopped it, so nothing of it counts as applied.
   */
  async deleteOwned(filter: KeyFilter, version: string, control: ScanControl = {}): Promise<number> {
    let deleted = 0;
    const complete = await scanOwnedKeys(
      this.redis,
      filter,
      async (keys) => {
        const ops = keys.map((key): CacheOp => ({ kind: 'del', key, version, path: filter.template }));
        const results = await this.applyAll([ops]);
        const result = results[0]!;
        if (result instanceof Error) throw result;
        deleted += result.filter((r) => r === 'applied').length;
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
  async runDueRedeletes(now = Date.now(), limit = REDELETE_BATCH): Promise<number> {
    const due = await this.redis.zrangebyscore(
      this.redeleteKey,
      '-inf',
      now,
      'WITHSCORES',
      'LIMIT',
      0,
      limit,
    );
    const zset = this.redeleteKey;
    const count = due.length >> 1;
    if (!this.cluster) {
      if (count === 0) return 0;
      const keys = [zset];
      const scores: string[] = [];
      for (let i = 0; i < count; i++) {
        keys.push(due[2 * i]!);
        scores.push(due[2 * i + 1]!);
      }
      await this.runScript<number>(RUN_DUE_SCRIPT, keys, scores);
      return count;
    }
    // A Cluster: the keys live in other slots than the schedule; every DEL first, then the removals.
    const members = Array.from({ length: count }, (_, i) => due[2 * i]!);
    await Promise.all(members.map((key) => this.redis.del(key)));
    await Promise.all(
      members.map(async (key, i) =>
        throwRefusal(await this.scripted.csApplyOp1(zset, ['R', key, due[2 * i + 1]!])),
      ),
    );
    return count;
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

/**
 * Collects ops into script calls: on a standalone Redis up to {@link OPS_PER_CALL} ops a call, in
 * the order added; on a Cluster one op a call.
 */
class CallBuilder {
  readonly calls: ScriptCall[] = [];
  private current: ScriptCall | undefined;

  constructor(
    private readonly encode: (op: ScriptedOp, call: ScriptCall) => void,
    private readonly opsPerCall: number,
  ) {}

  add(op: ScriptedOp, message: number, index: number): void {
    let call = this.current;
    if (!call || call.ops.length >= this.opsPerCall) {
      call = { keys: [], args: [], ops: [], messages: [], indexes: [] };
      this.calls.push(call);
      this.current = call;
    }
    this.encode(op, call);
    call.ops.push(op);
    call.messages.push(message);
    call.indexes.push(index);
  }
}

/**
 * The result of one message from its ops' replies: its outcomes, or the first failure that is not
 * the message's fault, or else its first refusal (named by the op's config path).
 */
function settleMessage(ops: readonly CacheOp[], replies: readonly unknown[]): ApplyResult {
  const outcomes: OpOutcome[] = new Array<OpOutcome>(ops.length);
  let messageError: MessageError | undefined;
  for (let i = 0; i < ops.length; i++) {
    const reply = replies[i];
    if (reply === 1 || reply === 0) {
      outcomes[i] = reply === 1 ? 'applied' : 'stale';
      continue;
    }
    const err = classifyRedisError(isRefusal(reply) ? replyError(reply) : reply);
    if (!(err instanceof MessageError)) return err;
    messageError ??= new MessageError(`${ops[i]?.path ?? ''}: ${err.message}`, { cause: err });
  }
  return messageError ?? outcomes;
}

function isRefusal(reply: unknown): reply is string {
  return typeof reply === 'string' && reply.startsWith('E');
}

/** What ioredis would have thrown, had the refused op been a command of its own. */
function replyError(reply: string): Error {
  return Object.assign(new Error(reply.slice(1)), { name: 'ReplyError' });
}

function throwRefusal(replies: readonly OpReply[]): void {
  const refused = replies.find(isRefusal);
  if (refused !== undefined) throw replyError(refused);
}

function defineScripts(redis: RedisClient): void {
  const define = (name: string, numberOfKeys: number, lua: string) => {
    if (!(name in redis)) redis.defineCommand(name, { numberOfKeys, lua });
  };
  define('csApplyOp2', 2, APPLY_OPS);
  define('csApplyOp1', 1, APPLY_OPS);
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
