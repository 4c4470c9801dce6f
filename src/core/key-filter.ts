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

/**
 * True when two templates can render the same key, placeholders standing for any text: two
 * sources whose templates overlap would fight over those keys and each other's guards.
 */
export function templatesOverlap(a: KeyTemplate, b: KeyTemplate): boolean {
  const x = globTokens(a.toGlob());
  const y = globTokens(b.toGlob());
  const memo = new Map<number, boolean>();
  const both = (i: number, j: number): boolean => {
    const key = i * (y.length + 1) + j;
    const known = memo.get(key);
    if (known !== undefined) return known;
    memo.set(key, false);
    let result = false;
    if (i === x.length && j === y.length) result = true;
    else if (x[i] === STAR && (both(i + 1, j) || (j < y.length && both(i, j + 1)))) result = true;
    else if (y[j] === STAR && (both(i, j + 1) || (i < x.length && both(i + 1, j)))) result = true;
    else if (i < x.length && j < y.length && x[i] !== STAR && x[i] === y[j]) result = both(i + 1, j + 1);
    memo.set(key, result);
    return result;
  };
  return both(0, 0);
}

const STAR = Symbol('any text');

/** A glob of toGlob() as literal characters and STAR (escapes undone). */
function globTokens(glob: string): (string | typeof STAR)[] {
  const out: (string | typeof STAR)[] = [];
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === '\\' && i + 1 < glob.length) out.push(glob[++i]!);
    else out.push(ch === '*' ? STAR : ch);
  }
  return out;
}
