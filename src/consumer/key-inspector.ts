import type { Cluster, Redis } from 'ioredis';
import type { KeyState } from '../core/cache-compare.js';
import type { ColumnKind, KeyTemplate } from '../core/key-template.js';
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

  /**
   * Every key a template could have rendered, in batches, from every master of a cluster: SCAN by
   * the template's glob, then only the keys the template's matcher accepts (so an application key
   * that merely shares the prefix is not one of ours), never cachesync's own keys.
   */
  async *scanTemplateKeys(
    template: KeyTemplate,
    kinds: Readonly<Record<string, ColumnKind>>,
    count = 1000,
  ): AsyncGenerator<{ key: string; values: Record<string, string> }[]> {
    const match = template.matcher(kinds);
    const nodes: Redis[] = isCluster(this.redis) ? this.redis.nodes('master') : [this.redis];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', template.toGlob(), 'COUNT', count);
        cursor = next;
        const batch: { key: string; values: Record<string, string> }[] = [];
        for (const key of keys) {
          if (key.startsWith(this.metaPrefix)) continue;
          const values = match(key);
          if (values) batch.push({ key, values });
        }
        if (batch.length > 0) yield batch;
      } while (cursor !== '0');
    }
  }
}

function pairs(payload: string | string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(payload)) return out;
  for (let i = 0; i + 1 < payload.length; i += 2) out[payload[i]!] = payload[i + 1]!;
  return out;
}

function isCluster(redis: RedisClient): redis is Cluster {
  return (redis as Partial<Cluster>).isCluster === true;
}
