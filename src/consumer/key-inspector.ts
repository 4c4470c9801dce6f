import type { Cluster, Redis } from 'ioredis';
import type { KeyState } from '../core/cache-compare.js';
import { versionKeyFor } from '../core/version-guard.js';

type RedisClient = Redis | Cluster;

/** A key as verify and the audit see it: what it holds and the version of its last change. */
export interface InspectedKey {
  state: KeyState;
  /** The key's version guard, or null when it has none (never written, or expired). */
  version: string | null;
}

/* One script per key reads the key and its guard atomically, in the key's cluster slot. */
const INSPECT = `
local t = redis.call('TYPE', KEYS[1]).ok
local v = redis.call('GET', KEYS[2])
if t == 'string' then return {t, v, redis.call('GET', KEYS[1])} end
if t == 'hash' then return {t, v, redis.call('HGETALL', KEYS[1])} end
return {t, v}`;

interface InspectingClient {
  csInspect(key: string, verKey: string): Promise<[string, string | null, (string | string[])?]>;
}

/** Reads keys and their version guards for comparing them with rows (auto-pipelined by the client). */
export class KeyInspector {
  private readonly scripted: InspectingClient;

  constructor(
    private readonly redis: RedisClient,
    readonly metaPrefix = 'cachesync:',
  ) {
    if (!('csInspect' in redis)) redis.defineCommand('csInspect', { numberOfKeys: 2, lua: INSPECT });
    this.scripted = redis as unknown as InspectingClient;
  }

  async inspect(key: string): Promise<InspectedKey> {
    const [type, version, payload] = await this.scripted.csInspect(key, versionKeyFor(this.metaPrefix, key));
    const state: KeyState =
      type === 'none'
        ? { type: 'none' }
        : type === 'string'
          ? { type: 'string', value: String(payload ?? '') }
          : type === 'hash'
            ? { type: 'hash', fields: pairs(payload) }
            : { type: 'other', name: type };
    return { state, version };
  }

  inspectAll(keys: readonly string[]): Promise<InspectedKey[]> {
    return Promise.all(keys.map((k) => this.inspect(k)));
  }
}

function pairs(payload: string | string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(payload)) return out;
  for (let i = 0; i + 1 < payload.length; i += 2) out[payload[i]!] = payload[i + 1]!;
  return out;
}
