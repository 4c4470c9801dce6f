import { describe, expect, it } from 'vitest';
import { interpolate } from '../../src/config/interpolate.js';

describe('interpolate', () => {
  it('replaces references in nested values, and leaves keys alone', () => {
    const tree = { '${KEY}': { list: ['a', '${B}', 'x-${C}-y'] } };
    const result = interpolate(tree, { B: 'bee', C: 'sea', KEY: 'nope' });
    expect(result).toEqual({ value: { '${KEY}': { list: ['a', 'bee', 'x-sea-y'] } }, problems: [] });
  });

  it('uses the default when the variable is unset or empty, as the shell does', () => {
    const tree = ['${A:-one}', '${B:-two}', '${C:-}', '${D:-x:-y}'];
    expect(interpolate(tree, { B: '' }).value).toEqual(['one', 'two', '', 'x:-y']);
  });

  it('keeps a set-but-empty variable without a default as an empty string', () => {
    expect(interpolate('${EMPTY}', { EMPTY: '' })).toEqual({ value: '', problems: [] });
  });

  it('turns $${ into a literal ${ and does not expand what follows', () => {
    expect(interpolate('$${HOME} and ${HOME}', { HOME: '/root' }).value).toBe('${HOME} and /root');
  });

  it('inserts a value verbatim, even with replacement patterns or references in it', () => {
    const secret = `p#ss: "q" 'r' $& $1 \${OTHER}`;
    expect(interpolate({ password: '${PW}' }, { PW: secret, OTHER: 'x' }).value).toEqual({
      password: secret,
    });
  });

  it('reports a missing variable with its name and path, and keeps the text as written', () => {
    const result = interpolate({ source: { password: '${MYSQL_PASSWORD}' } }, {});
    expect(result.value).toEqual({ source: { password: '${MYSQL_PASSWORD}' } });
    expect(result.problems).toEqual([
      {
        path: ['source', 'password'],
        message:
          'environment variable MYSQL_PASSWORD is not set; set it, or give a default as in ${MYSQL_PASSWORD:-value}',
      },
    ]);
  });

  it('reports every missing variable, with list indexes in the path', () => {
    const result = interpolate({ kafka: { brokers: ['${A}:9092', '${B}:9092'] } }, {});
    expect(result.problems.map((p) => p.path)).toEqual([
      ['kafka', 'brokers', 0],
      ['kafka', 'brokers', 1],
    ]);
  });

  it('reports an unclosed reference and a bad variable name with the valid forms', () => {
    const result = interpolate(['${OPEN', '${1BAD}'], {});
    expect(result.problems).toEqual([
      {
        path: [0],
        message:
          '"${" at character 1 of the value is never closed; expected ${NAME} or ${NAME:-default}; write $${ for a literal ${',
      },
      {
        path: [1],
        message:
          'a "${...}" holds no valid variable name; expected ${NAME} or ${NAME:-default}; write $${ for a literal ${',
      },
    ]);
  });

  it('never shows the value in an error: it may be a secret', () => {
    const secret = 's3cr3t-Pa55';
    const result = interpolate({ password: `${secret}\${`, other: `${secret}\${no-name}` }, {});
    expect(result.problems).toHaveLength(2);
    for (const problem of result.problems) expect(problem.message).not.toContain(secret);
  });
});
