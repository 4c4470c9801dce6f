import type { Cluster, Redis } from 'ioredis';
import type { KeyFilter } from '../core/key-filter.js';

/** How a long scan stays a good citizen: it keeps its owner alive and stops when asked. */
export interface ScanControl {
  /** Called between SCAN pages, e.g. to heartbeat the consumer group. Its failures are ignored. */
  heartbeat?: () => Promise<void>;
  /** Checked between SCAN pages; false stops the scan (shutdown, rebalance). */
  live?: () => boolean;
  /** SCAN COUNT hint. Default 500. */
  count?: number;
}

/**
 * Finds every key a template owns (see key-filter.ts), on every master of a cluster, and hands
 * them to `onKeys` a page at a time. Used by a truncate to delete a table's keys and by verify to
 * find extra keys. Resolves true when the whole keyspace was scanned, false when `live` stopped it.
 */
export async function scanOwnedKeys(
  redis: Redis | Cluster,
  filter: KeyFilter,
  onKeys: (keys: string[]) => Promise<void>,
  control: ScanControl = {},
): Promise<boolean> {
  const nodes: Redis[] = isCluster(redis) ? redis.nodes('master') : [redis];
  const count = control.count ?? 500;
  for (const node of nodes) {
    let cursor = '0';
    do {
      if (control.live && !control.live()) return false;
      const [next, keys] = await node.scan(cursor, 'MATCH', filter.glob, 'COUNT', count);
      cursor = next;
      const owned = keys.filter((k) => filter.owns(k));
      if (owned.length > 0) await onKeys(owned);
      await control.heartbeat?.().catch(() => undefined);
    } while (cursor !== '0');
  }
  return true;
}

function isCluster(redis: Redis | Cluster): redis is Cluster {
  return (redis as Partial<Cluster>).isCluster === true;
}
