/**
 * Naming of version guards, shared by the consumers (which write them) and the cache-aside reader
 * (which reads them as lease tokens). Pure: no Redis client here.
 */

/**
 * The prefix of cachesync's own keys (version guards, the delayed-delete schedule, snapshot
 * progress) for a source: `cachesync:`, or `cachesync:<name>:` when the source is named, so that
 * several sources can share one Redis. A cache-aside reader passes the same prefix.
 */
export function metaPrefixFor(sourceName?: string): string {
  return sourceName === undefined ? 'cachesync:' : `cachesync:${sourceName}:`;
}

/**
 * The version guard of `key`: in the same Redis Cluster slot, by reusing the key's hash tag or
 * making the whole key the tag. (A key with a `}` but no valid tag cannot be a tag; see README.)
 */
export function versionKeyFor(prefix: string, key: string): string {
  return hasHashTag(key) ? `${prefix}v:${key}` : `${prefix}v:{${key}}`;
}

/** True when Redis Cluster would hash only part of the key (a non-empty `{...}` after the first `{`). */
export function hasHashTag(key: string): boolean {
  const open = key.indexOf('{');
  if (open < 0) return false;
  const close = key.indexOf('}', open + 1);
  return close > open + 1;
}
