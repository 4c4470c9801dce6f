import type { Cluster, Redis } from 'ioredis';
import type { CompiledConfig } from '../config/types.js';
import type { Finding } from '../core/finding.js';
import { templatesOverlap } from '../core/key-filter.js';
import { KeyTemplate } from '../core/key-template.js';
import { createRedis } from './redis-client.js';

/**
 * Sources sharing one Redis register here (a hash: change topic, which is each source's own, to the
 * source's name and key templates), so that `check` of one can see the others' templates.
 */
export const SOURCES_KEY = 'cachesync:sources';

interface SourceEntry {
  name: string;
  templates: string[];
}

type Config = Pick<CompiledConfig, 'source' | 'kafka' | 'mappings'>;

function entryOf(config: Config): SourceEntry {
  return {
    name: config.source.name ?? '',
    templates: config.mappings.flatMap((m) => m.keys.map((k) => k.template.source)),
  };
}

/** Records this source's templates (consumers do it at start). */
export async function registerSource(redis: Redis | Cluster, config: Config): Promise<void> {
  await redis.hset(SOURCES_KEY, config.kafka.topic, JSON.stringify(entryOf(config)));
}

/** `check`: refuses a source whose key templates can render a key another registered source's can. */
export async function checkSourceOverlap(config: CompiledConfig): Promise<Finding[]> {
  const redis = createRedis(config.redis, { lazyConnect: true });
  try {
    await redis.connect();
    const registered = await redis.hgetall(SOURCES_KEY);
    const findings: Finding[] = [];
    let others = 0;
    for (const [topic, json] of Object.entries(registered)) {
      if (topic === config.kafka.topic) continue;
      others++;
      let other: SourceEntry;
      try {
        other = JSON.parse(json) as SourceEntry;
      } catch {
        continue;
      }
      const label = `${other.name ? `source ${other.name}` : 'the unnamed source'} of topic ${topic}`;
      for (const mapping of config.mappings) {
        for (const key of mapping.keys) {
          const clash = other.templates.find((t) => {
            try {
              return templatesOverlap(key.template, KeyTemplate.parse(t));
            } catch {
              return false;
            }
          });
          if (clash !== undefined) {
            findings.push({
              ok: false,
              what: `${key.path}.key "${key.template.source}" can render the same keys as "${clash}" of ${label}`,
              why: 'two sources would overwrite and delete each other’s keys; give their templates distinct literal prefixes',
            });
          }
        }
      }
    }
    if (findings.length === 0) {
      findings.push({
        ok: true,
        what: `key templates overlap with none of the ${others} other source(s) on this Redis`,
      });
    }
    return findings;
  } catch (err) {
    return [
      {
        ok: true,
        warning: true,
        what: 'could not read the sources registered in Redis',
        why: (err as Error).message,
      },
    ];
  } finally {
    redis.disconnect();
  }
}
