import { describe, expect, it } from 'vitest';
import { MessageError } from '../../src/core/errors.js';
import { columnKindOf, keyFilter, templatesOverlap } from '../../src/core/key-filter.js';
import { KeyTemplate } from '../../src/core/key-template.js';

describe('KeyTemplate', () => {
  it('renders placeholders from the row', () => {
    const t = KeyTemplate.parse('user:{id}:orders:{status}');
    expect(t.columns).toEqual(['id', 'status']);
    expect(t.render({ id: 42, status: 'paid' })).toBe('user:42:orders:paid');
  });

  it('writes literal braces for cluster hash tags', () => {
    expect(KeyTemplate.parse('user:{{{id}}}').render({ id: '7' })).toBe('user:{7}');
    expect(KeyTemplate.parse('{{x}}:{id}').render({ id: 1 })).toBe('{x}:1');
  });

  it('renders no key when a placeholder column is NULL', () => {
    expect(KeyTemplate.parse('user:email:{email}').render({ email: null })).toBeUndefined();
  });

  it('keeps big integers and decimals exact', () => {
    expect(KeyTemplate.parse('k:{id}').render({ id: '18446744073709551615' })).toBe('k:18446744073709551615');
  });

  it('blames the message for a missing column or a non-scalar value', () => {
    const t = KeyTemplate.parse('user:{id}');
    expect(() => t.render({ other: 1 })).toThrow(MessageError);
    expect(() => t.render({ other: 1 })).toThrow('no column "id"');
    expect(() => t.render({ id: { a: 1 } })).toThrow('not a scalar');
  });

  it.each([
    ['user:{id', 'never closed'],
    ['user:id}', 'closes nothing'],
    ['user:{}', 'must name a column'],
    ['user:{a b}', 'must name a column'],
    ['constant', 'at least one {column}'],
  ])('rejects %s', (source, message) => {
    expect(() => KeyTemplate.parse(source)).toThrow(message);
  });

  it('gives a SCAN pattern that escapes glob characters', () => {
    expect(KeyTemplate.parse('user:{id}:o*[x]').toGlob()).toBe('user:*:o\\*\\[x\\]');
  });
});

describe('KeyTemplate.matcher', () => {
  it('matches only keys the template can render, given the column kinds', () => {
    const match = KeyTemplate.parse('user:{id}').matcher({ id: 'integer' });
    expect(match('user:42')).toEqual({ id: '42' });
    expect(match('user:-7')).toEqual({ id: '-7' });
    expect(match('user:session:abc')).toBeUndefined();
    expect(match('user:42:orders')).toBeUndefined();
    expect(match('xuser:42')).toBeUndefined();
  });

  it('treats regex characters in literals as text and repeats of a column as the same value', () => {
    const match = KeyTemplate.parse('a.b*{{{x}}}:{y}:{x}').matcher();
    expect(match('a.b*{k}:v:k')).toEqual({ x: 'k', y: 'v' });
    expect(match('a.b*{k}:v:other')).toBeUndefined();
    expect(match('aXb*{k}:v:k')).toBeUndefined();
  });

  it('knows whether the template starts with literal text', () => {
    expect(KeyTemplate.parse('user:{id}').hasLiteralPrefix).toBe(true);
    expect(KeyTemplate.parse('{id}:user').hasLiteralPrefix).toBe(false);
  });
});

describe('keyFilter', () => {
  it('owns the keys the template renders for its column kinds, never cachesync keys', () => {
    const filter = keyFilter(KeyTemplate.parse('user:{id}'), { id: 'integer' }, 'cachesync:');
    expect(filter.glob).toBe('user:*');
    expect(['user:1', 'user:-3', 'user:session:abc', 'user:1:x'].filter(filter.owns)).toEqual([
      'user:1',
      'user:-3',
    ]);
    const text = keyFilter(KeyTemplate.parse('user:{name}'), {}, 'user:meta:');
    expect(['user:ann', 'user:session:abc', 'user:meta:v:user:1'].filter(text.owns)).toEqual([
      'user:ann',
      'user:session:abc',
    ]);
  });

  it('refuses a template with no literal prefix rather than scan everything', () => {
    expect(() => keyFilter(KeyTemplate.parse('{id}:user'), {}, 'cachesync:')).toThrow(
      'has no literal prefix',
    );
  });

  it('knows which column types render integers', () => {
    expect(['INT', 'bigint', 'tinyint', 'year', 'decimal', 'varchar', 'char'].map(columnKindOf)).toEqual([
      'integer',
      'integer',
      'integer',
      'integer',
      'text',
      'text',
      'text',
    ]);
  });
});

describe('templatesOverlap', () => {
  it.each([
    ['user:{id}', 'user:{uid}', true],
    ['user:{id}', 'user:email:{e}', true],
    ['user:{id}', 'order:{id}', false],
    ['a:{x}:b', 'a:{y}:c', false],
    ['a:{x}:b', 'a:c:{y}', true],
    ['sess*:{id}', 'sess:{id}', false],
    ['t:{{{id}}}', 't:{x}', true],
  ])('%s and %s: %s', (a, b, overlap) => {
    expect(templatesOverlap(KeyTemplate.parse(a), KeyTemplate.parse(b))).toBe(overlap);
  });
});
