import { readFile as readFileFromDisk } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { isNode, LineCounter, parseDocument, visit, type Document, type YAMLError } from 'yaml';
import { ConfigError } from '../core/errors.js';
import { compileConfig, type FileContents } from './compile.js';
import { interpolate, type Environment } from './interpolate.js';
import { configError, formatPath, isWithin, quote, type ConfigPath, type Problem } from './problems.js';
import { validateConfig } from './schema.js';
import type { CompiledConfig } from './types.js';

/** Used when neither `-c/--config` nor `CACHESYNC_CONFIG` names a file. */
export const DEFAULT_CONFIG_PATH = 'config/cachesync.yaml';

export interface LoadOptions {
  /** Where `${VAR}` references are looked up. Default `process.env`. */
  env?: Environment;
  /** Reads a UTF-8 text file: the config and any `*File` secret. Default `fs.promises.readFile`. */
  readFile?: (path: string) => Promise<string> | string;
}

type ReadFile = NonNullable<LoadOptions['readFile']>;

/**
 * The config file to use: the `-c/--config` value, else `CACHESYNC_CONFIG`, else
 * {@link DEFAULT_CONFIG_PATH}. An empty value counts as not given.
 */
export function resolveConfigPath(cliValue?: string, env: Environment = process.env): string {
  return cliValue || env.CACHESYNC_CONFIG || DEFAULT_CONFIG_PATH;
}

/**
 * Reads, interpolates and validates a config file, reads its `*File` secrets, and compiles it.
 *
 * @throws ConfigError starting with `file` and listing every problem found, one per line, each
 *   with its path in the file and what would be valid.
 */
export async function loadConfig(file: string, opts: LoadOptions = {}): Promise<CompiledConfig> {
  const env = opts.env ?? process.env;
  const readFile = opts.readFile ?? ((path: string) => readFileFromDisk(path, 'utf8'));
  const absolute = resolve(file);

  const lineCounter = new LineCounter();
  const doc = parseDocument(await readConfigText(file, absolute, readFile), {
    schema: 'failsafe',
    lineCounter,
  });
  if (doc.errors.length) throw syntaxError(file, doc.errors);
  markEmptyValues(doc);

  const interpolated = interpolate(doc.toJS(), env);
  const validated = validateConfig(interpolated.value);
  const secrets = await readNamedFiles(interpolated.value, dirname(absolute), readFile);
  // A value whose variable is missing was left as written; what else is said about it is noise.
  const checked = [...(validated.ok ? [] : validated.problems), ...secrets.problems];
  const problems = [
    ...interpolated.problems,
    ...checked.filter((p) => !interpolated.problems.some((i) => isWithin(p.path, i.path))),
  ];
  if (!validated.ok || problems.length) throw configError(file, problems, lineFinder(doc, lineCounter));
  return compileConfig(validated.config, absolute, secrets.values);
}

async function readConfigText(file: string, absolute: string, readFile: ReadFile): Promise<string> {
  try {
    return await readFile(absolute);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') {
      throw new ConfigError(
        `${file}: config file not found (looked for ${absolute}); pass -c/--config <file> or set CACHESYNC_CONFIG`,
      );
    }
    throw new ConfigError(`${file}: cannot read the config file: ${errorText(err)}`);
  }
}

function syntaxError(file: string, errors: readonly YAMLError[]): ConfigError {
  const lines = errors.map((err) => {
    // The library's message repeats the position and then quotes the source; keep the first line.
    const what = (err.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    const at = err.linePos?.[0];
    return at ? `  line ${at.line}, column ${at.col}: ${what}` : `  ${what}`;
  });
  return new ConfigError([`${file}: invalid YAML:`, ...lines].join('\n'));
}

/**
 * Makes `key:` with nothing after it null, as YAML means, while `key: ''` stays an empty string:
 * an empty password must be written on purpose, not left out by accident. The failsafe schema
 * would otherwise read both as ''.
 */
function markEmptyValues(doc: Document): void {
  visit(doc, {
    Scalar(key, node) {
      if (key !== 'key' && node.type === 'PLAIN' && node.value === '') node.value = null;
    },
  });
}

function lineFinder(doc: Document, lineCounter: LineCounter): (path: ConfigPath) => number | undefined {
  return (path) => {
    const node: unknown = doc.getIn(path, true);
    return isNode(node) && node.range ? lineCounter.linePos(node.range[0]).line : undefined;
  };
}

/** Fields that name a file to read at load: secrets (one trailing newline trimmed) and PEM files. */
const NAMED_FILES: ReadonlyArray<{ path: ConfigPath; kind: 'secret' | 'pem' }> = [
  { path: ['source', 'passwordFile'], kind: 'secret' },
  { path: ['kafka', 'sasl', 'passwordFile'], kind: 'secret' },
  { path: ['redis', 'passwordFile'], kind: 'secret' },
  ...['source', 'kafka', 'redis'].flatMap((section) =>
    ['caFile', 'certFile', 'keyFile'].map((field) => ({
      path: [section, 'tls', field],
      kind: 'pem' as const,
    })),
  ),
];

/**
 * Reads the files named in the tree. It reads from the unvalidated tree so that a missing file is
 * reported in the same run as any other problem. A file's content is never quoted: it may be a
 * secret or a private key.
 */
async function readNamedFiles(
  tree: unknown,
  baseDir: string,
  readFile: ReadFile,
): Promise<{ values: FileContents; problems: Problem[] }> {
  const values: Record<string, string> = {};
  const problems: Problem[] = [];
  for (const { path, kind } of NAMED_FILES) {
    const name = valueAt(tree, path);
    if (typeof name !== 'string' || !name.trim()) continue;
    // Relative to the config file, so the pair can move together.
    const absolute = resolve(baseDir, name);
    let content: string;
    try {
      content = await readFile(absolute);
    } catch (err) {
      const why = errorCode(err) === 'ENOENT' ? 'no such file' : errorText(err);
      const what = kind === 'secret' ? 'the secret' : 'PEM data';
      problems.push({
        path,
        message: `cannot read ${quote(absolute)}: ${why}; expected a readable file holding ${what}`,
      });
      continue;
    }
    if (kind === 'pem' && !content.includes('-----BEGIN ')) {
      problems.push({
        path,
        message: `${quote(absolute)} holds no PEM block; expected a file with -----BEGIN ...----- lines`,
      });
      continue;
    }
    values[formatPath(path)] = kind === 'secret' ? content.replace(/\r?\n$/, '') : content;
  }
  return { values, problems };
}

function valueAt(tree: unknown, path: ConfigPath): unknown {
  let node = tree;
  for (const segment of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[segment];
  }
  return node;
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
