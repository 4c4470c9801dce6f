import type { CacheOp } from './cache-plan.js';

/** What Redis holds at a key, as far as comparing it with a row goes. */
export type KeyState =
  | { type: 'none' }
  | { type: 'string'; value: string }
  | { type: 'hash'; fields: Readonly<Record<string, string>> }
  /** A list, set, zset, stream...: never what a refresh key writes. */
  | { type: 'other'; name: string };

/**
 * How a key differs from the write its row asks for: absent, or holding another value (a JSON
 * value that differs, hash fields that differ, or a value of another Redis type).
 */
export type KeyDifference = 'missing' | 'value' | 'fields' | 'type';

/** The two kinds of drift counted per row: no key, or a key that differs from the row. */
export type DriftKind = 'missing' | 'stale';

export function driftKind(difference: KeyDifference): DriftKind {
  return difference === 'missing' ? 'missing' : 'stale';
}

/**
 * Compares what Redis holds with the write a row asks for; undefined when they agree. A JSON value
 * is compared as JSON (the order of its members does not matter), hash fields exactly.
 */
export function compareKey(
  expected: Extract<CacheOp, { kind: 'set' | 'hash' }>,
  actual: KeyState,
): KeyDifference | undefined {
  if (actual.type === 'none') return 'missing';
  if (expected.kind === 'set') {
    if (actual.type !== 'string') return 'type';
    return actual.value === expected.value || sameJson(actual.value, expected.value) ? undefined : 'value';
  }
  if (actual.type !== 'hash') return 'type';
  const want = Object.entries(expected.fields);
  if (want.length !== Object.keys(actual.fields).length) return 'fields';
  return want.every(([field, value]) => actual.fields[field] === value) ? undefined : 'fields';
}

function sameJson(a: string, b: string): boolean {
  try {
    return deepEqual(JSON.parse(a), JSON.parse(b));
  } catch {
    return false;
  }
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(rb, k) && deepEqual(ra[k], rb[k]));
}
