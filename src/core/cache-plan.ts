import type { CompiledKey, CompiledMapping } from '../config/types.js';
import type { ChangeEvent } from './change-event.js';
import { MessageError } from './errors.js';
import type { ColumnKinds } from './key-filter.js';
import type { KeyTemplate, Row } from './key-template.js';
import { valueText } from './row-value.js';
import type { Version } from './version.js';

interface OpBase {
  /** Config path of the mapping key that produced this op, e.g. `mappings[0].keys[1]`. */
  path: string;
  version: Version;
}

/** One Redis effect of a change; the applier turns a batch of these into pipelined commands. */
export type CacheOp =
  | (OpBase & { kind: 'del'; key: string })
  /** `replace`: a value of another Redis type is replaced (a repair), not an error. */
  | (OpBase & { kind: 'set'; key: string; value: string; ttlMs?: number; replace?: boolean })
  | (OpBase & {
      kind: 'hash';
      key: string;
      fields: Record<string, string>;
      ttlMs?: number;
      replace?: boolean;
    })
  /** Delete `key` again once `delayMs` has passed (delayed double delete). */
  | (OpBase & { kind: 'redelete'; key: string; delayMs: number })
  /**
   * Delete every key the template can render, given its columns' kinds (truncate or drop of a
   * table); see key-filter.ts. Each delete goes through the key's version guard.
   */
  | (OpBase & { kind: 'delMatching'; template: KeyTemplate; kinds: ColumnKinds });

export interface PlanOptions {
  /** Source of randomness for TTL jitter, in [0, 1). */
  random?: () => number;
}

/**
 * Turns one change into the cache operations its table's mapping asks for, following the key
 * semantics table of the spec. Pure: no I/O. Throws MessageError when the change cannot be mapped
 * (a key column missing from the row, a value with no text form).
 */
export function planCacheOps(
  event: ChangeEvent,
  mapping: CompiledMapping,
  opts: PlanOptions = {},
): CacheOp[] {
  const version = event.source.version;
  if (event.op === 't') {
    return mapping.keys.map((k) => ({
      kind: 'delMatching',
      template: k.template,
      kinds: event.columnKinds ?? {},
      path: k.path,
      version,
    }));
  }
  if (
    event.op === 'u' &&
    !event.oversized &&
    mapping.onlyWhenChanged &&
    !anyChanged(event.before, event.after, mapping.onlyWhenChanged)
  ) {
    return [];
  }
  const ops: CacheOp[] = [];
  for (const key of mapping.keys) {
    const planned = planKey(event, key, version, opts.random ?? Math.random);
    ops.push(...planned);
    if (key.delayedRedeleteMs !== undefined) {
      for (const op of planned) {
        if (op.kind === 'del' || op.kind === 'set' || op.kind === 'hash') {
          ops.push({
            kind: 'redelete',
            key: op.key,
            delayMs: key.delayedRedeleteMs,
            path: key.path,
            version,
          });
        }
      }
    }
  }
  return ops;
}

function planKey(event: ChangeEvent, key: CompiledKey, version: Version, random: () => number): CacheOp[] {
  const render = (row: Row | null) => (row ? key.template.render(row) : undefined);
  const before = event.op === 'c' ? undefined : render(event.before);
  const after = event.op === 'd' ? undefined : render(event.after);
  const del = (k: string): CacheOp => ({ kind: 'del', key: k, path: key.path, version });
  const ops: CacheOp[] = [];

  // An oversized change carries no full image to write: its keys are deleted instead.
  if (key.action === 'invalidate' || event.op === 'd' || event.oversized === true) {
    for (const k of new Set([before, after])) if (k !== undefined) ops.push(del(k));
    return ops;
  }
  // refresh of an insert or update: write the after image, drop a key the row moved away from.
  if (after !== undefined && event.after) ops.push(writeOp(after, event.after, key, version, random));
  if (before !== undefined && before !== after) ops.push(del(before));
  return ops;
}

/**
 * The write a refresh key asks for to hold `row`, with `version`: the same op a change inserting
 * the row would plan (snapshot, verify and the audit compare or write exactly what the stream
 * writes). Undefined when a NULL placeholder renders no key.
 */
export function refreshOp(
  row: Row,
  key: CompiledKey,
  version: Version,
  random: () => number = Math.random,
): Extract<CacheOp, { kind: 'set' | 'hash' }> | undefined {
  const redisKey = key.template.render(row);
  return redisKey === undefined ? undefined : writeOp(redisKey, row, key, version, random);
}

function writeOp(
  redisKey: string,
  row: Row,
  key: CompiledKey,
  version: Version,
  random: () => number,
): Extract<CacheOp, { kind: 'set' | 'hash' }> {
  const ttlMs = key.ttlMs === undefined ? undefined : jitter(key.ttlMs, key.ttlJitter, random);
  if (key.format === 'json' && key.columns === undefined) {
    // Every column, in the row's order: the row's own JSON, with no copy of it.
    return { kind: 'set', key: redisKey, value: JSON.stringify(row), ttlMs, path: key.path, version };
  }
  const columns = key.columns ?? Object.keys(row);
  const picked: Record<string, unknown> = {};
  for (const column of columns) {
    if (!Object.prototype.hasOwnProperty.call(row, column)) {
      throw new MessageError(`${key.path}.columns: the row has no column "${column}"`);
    }
    picked[column] = row[column];
  }
  if (key.format === 'json') {
    return { kind: 'set', key: redisKey, value: JSON.stringify(picked), ttlMs, path: key.path, version };
  }
  const fields: Record<string, string> = {};
  for (const [column, value] of Object.entries(picked)) {
    if (value === null || value === undefined) continue;
    fields[column] = valueText(value);
  }
  return { kind: 'hash', key: redisKey, fields, ttlMs, path: key.path, version };
}

/** Spreads a TTL uniformly over ttl * (1 +- fraction), so keys written together do not expire together. */
export function jitter(ttlMs: number, fraction: number, random: () => number): number {
  if (fraction <= 0) return ttlMs;
  return Math.max(1, Math.round(ttlMs * (1 + (random() * 2 - 1) * fraction)));
}

function anyChanged(before: Row | null, after: Row | null, columns: readonly string[]): boolean {
  return columns.some((c) => JSON.stringify(before?.[c]) !== JSON.stringify(after?.[c]));
}
