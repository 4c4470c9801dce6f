import { describe, expect, it } from 'vitest';
import { classifyRedisError } from '../../src/consumer/redis-applier.js';
import { hasHashTag, metaPrefixFor, versionKeyFor } from '../../src/core/version-guard.js';
import { MessageError, UnavailableError } from '../../src/core/errors.js';

/** Redis Cluster's key-to-hash-input rule: the first non-empty {...} if there is one, else the key. */
function hashInput(key: string): string {
  const open = key.indexOf('{');
  if (open < 0) return key;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

describe("version guards share their key's cluster slot", () => {
  it.each(['user:1', 'user:{42}:profile', '{tenant}:a:b', 'x{y}{z}', 'a:b:c', 'a{b'])('%s', (key) => {
    expect(hashInput(versionKeyFor('cachesync:', key))).toBe(hashInput(key));
  });

  it('cannot for a key with a "}" and no valid hash tag (the documented limit)', () => {
    expect(hasHashTag('x{}y{z}')).toBe(false);
    expect(hashInput(versionKeyFor('cachesync:', 'x{}y{z}'))).not.toBe(hashInput('x{}y{z}'));
  });
});

describe('classifyRedisError', () => {
  it('blames the message for a reply error about the command', () => {
    const err = Object.assign(
      new Error('WRONGTYPE Operation against a key holding the wrong kind of value'),
      { name: 'ReplyError' },
    );
    expect(classifyRedisError(err)).toBeInstanceOf(MessageError);
  });

  it('treats a server that cannot serve, or a lost connection, as unavailable', () => {
    const loading = Object.assign(new Error('LOADING Redis is loading the dataset in memory'), {
      name: 'ReplyError',
    });
    expect(classifyRedisError(loading)).toBeInstanceOf(UnavailableError);
    expect(classifyRedisError(new Error('Connection is closed.'))).toBeInstanceOf(UnavailableError);
  });
});

describe('metaPrefixFor', () => {
  it('keeps the default prefix for an unnamed source and namespaces a named one', () => {
    expect(metaPrefixFor()).toBe('cachesync:');
    expect(metaPrefixFor('eu')).toBe('cachesync:eu:');
    expect(versionKeyFor(metaPrefixFor('eu'), 'user:1')).toBe('cachesync:eu:v:{user:1}');
  });
});
