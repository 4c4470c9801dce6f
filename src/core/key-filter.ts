import type { ColumnKind, KeyTemplate } from './key-template.js';

/**
 * Which Redis keys a key template owns: what a truncate deletes and what a verify scans as "extra"
 * keys. SCAN finds candidates with `glob`; `owns` keeps only the keys the template can render
 * given its columns' kinds, so `user:{id}` with an integer `id` never claims `user:session:abc`.
 */
export interface KeyFilter {
  /** The template as written, for messages. */
  template: string;
  /** A Redis MATCH pattern covering every key the template can render (and maybe more). */
  glob: string;
  /** True for a key the template can render and that is not one of cachesync's own keys. */
  owns: (key: string) => boolean;
}

/** Column kinds of one table: column name to kind. A column not listed is `text`. */
export type ColumnKinds = Readonly<Record<string, ColumnKind>>;

/**
 * The filter of one template. `metaPrefix` keys (version guards, schedules) are never owned, even
 * if the template could render them.
 */
export function keyFilter(template: KeyTemplate, kinds: ColumnKinds, metaPrefix: string): KeyFilter {
  if (!template.hasLiteralPrefix) {
    // Config loading refuses such templates; this guards against a SCAN of the whole keyspace.
    throw new RangeError(`key template "${template.source}" has no literal prefix to scan by`);
  }
  const match = template.matcher(kinds);
  return {
    template: template.source,
    glob: template.toGlob(),
    owns: (key) => !key.startsWith(metaPrefix) && match(key) !== undefined,
  };
}

/** MySQL/MariaDB `information_schema.COLUMNS.DATA_TYPE` values whose text is an integer. */
const INTEGER_TYPES = new Set(['tinyint', 'smallint', 'mediumint', 'int', 'integer', 'bigint', 'year']);

/** What a column of this `DATA_TYPE` renders into a key: digits (with a sign) or any text. */
export function columnKindOf(dataType: string): ColumnKind {
  return INTEGER_TYPES.has(dataType.toLowerCase()) ? 'integer' : 'text';
}
