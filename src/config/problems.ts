import { ConfigError } from '../core/errors.js';

/** A path from the document root: keys and list indexes, as in `['mappings', 2, 'keys', 0]`. */
export type ConfigPath = readonly PropertyKey[];

/** One thing wrong with the config file. */
export interface Problem {
  path: ConfigPath;
  /** `<what is wrong>; <what would be valid>`, without the path. */
  message: string;
}

/** Formats a path the way a user reads it: `mappings[2].keys[0].key`. */
export function formatPath(path: ConfigPath): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out ? `.${String(segment)}` : String(segment);
  }
  return out || '(top level)';
}

/** True when `inner` is `outer` or lies below it. */
export function isWithin(inner: ConfigPath, outer: ConfigPath): boolean {
  return outer.length <= inner.length && outer.every((segment, i) => segment === inner[i]);
}

/** Quotes a user's value for a message, cut short so one bad value cannot flood the terminal. */
export function quote(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 77)}...` : text);
}

/**
 * Says what was found where a value was expected: `missing`, `got "abc"`, `got a list`. Lists and
 * mappings are named rather than shown, so a secret nested in them never reaches a log.
 */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'missing';
  if (value === null) return 'empty value';
  if (typeof value === 'string') return `got ${quote(value)}`;
  if (Array.isArray(value)) return 'got a list';
  if (typeof value === 'object') return 'got a mapping';
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `got ${String(value)}`;
  }
  return `got a ${typeof value}`;
}

/** The message for a key the schema does not know, with a suggestion when it looks like a typo. */
export function unknownKeyMessage(key: string, validKeys: readonly string[]): string {
  const suggestion = closestKey(key, validKeys);
  const hint = suggestion === undefined ? '' : ` (did you mean ${suggestion}?)`;
  return `unknown key${hint}; valid keys here: ${validKeys.join(', ')}`;
}

/**
 * The valid key a typo most likely meant: equal ignoring case, `_` and `-` (`dlq_topic`), or within
 * a small edit distance (`brokerz`). Undefined when nothing is close enough to be an obvious typo.
 */
export function closestKey(key: string, validKeys: readonly string[]): string | undefined {
  const wanted = normalizeKey(key);
  let best: { key: string; distance: number } | undefined;
  for (const candidate of validKeys) {
    const distance = editDistance(wanted, normalizeKey(candidate));
    if (!best || distance < best.distance) best = { key: candidate, distance };
  }
  if (!best) return undefined;
  const tolerance = Math.min(2, Math.floor(wanted.length / 3));
  return best.distance <= tolerance ? best.key : undefined;
}

function normalizeKey(key: string): string {
  return key.toLowerCase().replace(/[-_]/g, '');
}

/**
 * Edit distance counting a swap of neighbours as one edit (`prot` is one edit from `port`), since
 * that is the commonest typo. Keys are short, so the quadratic table is fine.
 */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number): number => d[i]?.[j] ?? Infinity;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] ?? [];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(at(i, j), at(i - 2, j - 2) + 1);
      }
    }
  }
  return at(a.length, b.length);
}

/**
 * Builds the error for a config with problems: the file name, then every problem on its own line in
 * file order, so a user fixes them all in one pass instead of one per run.
 *
 * @param lineOf finds the line a path is on, when the path exists in the file.
 */
export function configError(
  file: string,
  problems: readonly Problem[],
  lineOf: (path: ConfigPath) => number | undefined = () => undefined,
): ConfigError {
  const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
  const lines = problems
    .map((problem, index) => ({
      problem,
      index,
      line: lineOf(problem.path),
      near: nearestLine(problem.path, lineOf),
    }))
    .sort((a, b) => a.near - b.near || a.index - b.index)
    .map(({ problem, line }) => {
      const where = line === undefined ? '' : ` (line ${line})`;
      return `  ${formatPath(problem.path)}: ${problem.message}${where}`;
    });
  return new ConfigError([`${file}: invalid config, ${count}:`, ...lines].join('\n'));
}

/** The line of the path, or of its closest ancestor in the file: where a missing key belongs. */
function nearestLine(path: ConfigPath, lineOf: (path: ConfigPath) => number | undefined): number {
  for (let length = path.length; length > 0; length--) {
    const line = lineOf(path.slice(0, length));
    if (line !== undefined) return line;
  }
  return 0;
}
