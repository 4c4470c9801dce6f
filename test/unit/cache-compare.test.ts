import { describe, expect, it } from 'vitest';
import { compareKey } from '../../src/core/cache-compare.js';
import { refreshOp } from '../../src/core/cache-plan.js';
import { KeyTemplate } from '../../src/core/key-template.js';
import type { CompiledKey } from '../../src/config/types.js';

const key = (format: 'json' | 'hash'): CompiledKey => ({
  path: 'mappings[0].keys[0]',
  template: KeyTemplate.parse('u:{id}'),
  action: 'refresh',
  format,
  ttlJitter: 0,
});
const row = { id: 7, name: 'Ann', balance: '10.50', note: null };

describe('comparing a key with the write its row asks for', () => {
  const json = refreshOp(row, key('json'), '0:1:4:0')!;
  const hash = refreshOp(row, key('hash'), '0:1:4:0')!;

  it('agrees with the same JSON in another member order, and with the same fields', () => {
    expect(
      compareKey(json, { type: 'string', value: '{"note":null,"balance":"10.50","name":"Ann","id":7}' }),
    ).toBe(undefined);
    expect(compareKey(hash, { type: 'hash', fields: { id: '7', name: 'Ann', balance: '10.50' } })).toBe(
      undefined,
    );
  });

  it('tells missing, a different value, different fields and another type apart', () => {
    expect(compareKey(json, { type: 'none' })).toBe('missing');
    expect(
      compareKey(json, { type: 'string', value: '{"id":7,"name":"Bob","balance":"10.50","note":null}' }),
    ).toBe('value');
    expect(compareKey(json, { type: 'string', value: 'not json' })).toBe('value');
    expect(
      compareKey(json, { type: 'string', value: '{"id":"7","name":"Ann","balance":"10.50","note":null}' }),
    ).toBe('value');
    expect(compareKey(hash, { type: 'hash', fields: { id: '7', name: 'Ann' } })).toBe('fields');
    expect(compareKey(hash, { type: 'hash', fields: { id: '7', name: 'Ann', balance: '10.5' } })).toBe(
      'fields',
    );
    expect(
      compareKey(hash, { type: 'hash', fields: { id: '7', name: 'Ann', balance: '10.50', x: '1' } }),
    ).toBe('fields');
    expect(compareKey(json, { type: 'hash', fields: {} })).toBe('type');
    expect(compareKey(hash, { type: 'other', name: 'list' })).toBe('type');
  });
});
