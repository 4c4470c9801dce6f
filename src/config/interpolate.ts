import { type ConfigPath, type Problem } from './problems.js';

/** Where `${VAR}` values come from; `process.env` in production. */
export type Environment = Readonly<Record<string, string | undefined>>;

/** The tree with every reference replaced, and a problem for each one that could not be. */
export interface Interpolated {
  value: unknown;
  /** A scalar with a problem keeps its text as written, so validation can still see the rest. */
  problems: Problem[];
}

// One scan finds, in order: the `$${` escape, a complete `${...}` reference, or an unclosed `${`.
const TOKEN = /\$\$\{|\$\{([^}]*)\}|\$\{/g;
const REFERENCE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-([\s\S]*))?$/;
const VALID_FORMS = 'expected ${NAME} or ${NAME:-default}; write $${ for a literal ${';

/**
 * Replaces `${VAR}` and `${VAR:-default}` in every string value of a parsed YAML tree. Working on
 * parsed values rather than the file text means a substituted secret is never re-read as YAML, so
 * `#`, `: ` and quotes in it stay intact. Mapping keys are left alone.
 *
 * As in the shell, `:-` uses the default when the variable is unset or empty. Defaults are taken
 * literally (no nested references). `$${` is a literal `${`.
 */
export function interpolate(tree: unknown, env: Environment): Interpolated {
  const problems: Problem[] = [];
  const value = walk(tree, [], env, problems);
  return { value, problems };
}

function walk(node: unknown, path: ConfigPath, env: Environment, problems: Problem[]): unknown {
  if (typeof node === 'string') {
    const result = substitute(node, env);
    problems.push(...result.errors.map((message) => ({ path, message })));
    return result.errors.length ? node : result.text;
  }
  if (Array.isArray(node)) return node.map((item, i) => walk(item, [...path, i], env, problems));
  if (node !== null && typeof node === 'object') {
    return Object.fromEntries(
      Object.entries(node).map(([key, item]) => [key, walk(item, [...path, key], env, problems)]),
    );
  }
  return node;
}

// Messages never quote the value around a reference: it may be a secret (`password: pa${ss`).
function substitute(text: string, env: Environment): { text: string; errors: string[] } {
  const errors: string[] = [];
  const out = text.replace(TOKEN, (token, reference: string | undefined, offset: number) => {
    if (token === '$${') return '${';
    if (reference === undefined) {
      errors.push(`"\${" at character ${offset + 1} of the value is never closed; ${VALID_FORMS}`);
      return token;
    }
    const resolved = resolve(reference, env);
    if ('error' in resolved) errors.push(resolved.error);
    return 'value' in resolved ? resolved.value : token;
  });
  return { text: out, errors };
}

function resolve(reference: string, env: Environment): { value: string } | { error: string } {
  const match = REFERENCE.exec(reference);
  const name = match?.[1];
  if (!match || name === undefined) {
    return { error: `a "\${...}" holds no valid variable name; ${VALID_FORMS}` };
  }
  const value = env[name];
  const fallback = match[2];
  if (fallback !== undefined) return { value: value ? value : fallback };
  if (value !== undefined) return { value };
  return {
    error: `environment variable ${name} is not set; set it, or give a default as in \${${name}:-value}`,
  };
}
