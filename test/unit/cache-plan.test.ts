import { describe, expect, it } from 'vitest';
import type { CompiledKey, CompiledMapping } from '../../src/config/types.js';
import { jitter, planCacheOps } from '../../src/core/cache-plan.js';
import type { ChangeEvent } from '../../src/core/change-event.js';
import { MessageError } from '../../src/core/errors.js';
import { KeyTemplate } from '../../src/core/key-template.js';
import { makeVersion } from '../../src/core/version.js';

const V = makeVersion(1, 'binlog.000001', 100, 1);

function key(template: string, extra: Partial<CompiledKey> = {}): CompiledKey {
  return {
    path: 'mappings[0].keys[0]',
    template: KeyTemplate.parse(template),
    action: 'invalidate',
    format: 'json',
    ttlJitter: 0,
    ...extra,
  };
}

function mapping(keys: CompiledKey[], extra: Partial<CompiledMapping> = {}): CompiledMapping {
  return { table: 'shop.users', db: 'shop', name: 'users', keys, ...extra };
}

function change(
  op: ChangeEvent['op'],
  before: ChangeEvent['before'],
  after: ChangeEvent['after'],
): ChangeEvent {
  return {
    op,
    db: 'shop',
    table: 'users',
    pk: { id: 1 },
    before,
    after,
    source: { file: 'binlog.000001', pos: 100, ts_ms: 0, version: V },
    ts_ms: 0,
  };
}

const row = { id: 1, email: 'a@x', name: 'Ann', balance: '10.50' };

describe('planCacheOps: invalidate', () => {
  const m = mapping([key('user:{id}'), key('user:email:{email}')]);

  it('insert deletes the keys of the after image', () => {
    expect(planCacheOps(change('c', null, row), m).map((o) => [o.kind, 'key' in o && o.key])).toEqual([
      ['del', 'user:1'],
      ['del', 'user:email:a@x'],
    ]);
  });

  it('update deletes the keys of both images, once each', () => {
    const ops = planCacheOps(change('u', row, { ...row, email: 'b@x' }), m);
    expect(ops.map((o) => 'key' in o && o.key)).toEqual(['user:1', 'user:email:a@x', 'user:email:b@x']);
  });

  it('delete deletes the keys of the before image', () => {
    expect(planCacheOps(change('d', row, null), m).map((o) => 'key' in o && o.key)).toEqual([
      'user:1',
      'user:email:a@x',
    ]);
  });

  it('a NULL placeholder renders no key', () => {
    expect(
      planCacheOps(change('c', null, { ...row, email: null }), m).map((o) => 'key' in o && o.key),
    ).toEqual(['user:1']);
  });

  it('truncate deletes every key of every template, knowing the column kinds', () => {
    const kinds = { id: 'integer' } as const;
    const ops = planCacheOps({ ...change('t', null, null), pk: {}, columnKinds: kinds }, m);
    expect(ops.map((o) => o.kind === 'delMatching' && [o.template.source, o.kinds])).toEqual([
      ['user:{id}', kinds],
      ['user:email:{email}', kinds],
    ]);
  });
});

describe('planCacheOps: refresh', () => {
  it('insert writes the selected columns as JSON, with the change version', () => {
    const m = mapping([key('user:{id}', { action: 'refresh', columns: ['id', 'email', 'balance'] })]);
    const [op] = planCacheOps(change('c', null, row), m);
    expect(op).toMatchObject({
      kind: 'set',
      key: 'user:1',
      value: '{"id":1,"email":"a@x","balance":"10.50"}',
      version: V,
    });
  });

  it('writes every column when none are listed, and a hash without NULL fields', () => {
    const m = mapping([key('user:{id}', { action: 'refresh', format: 'hash' })]);
    const [op] = planCacheOps(change('c', null, { ...row, name: null, meta: { a: [1] } }), m);
    expect(op).toMatchObject({
      kind: 'hash',
      key: 'user:1',
      fields: { id: '1', email: 'a@x', balance: '10.50', meta: '{"a":[1]}' },
    });
    expect(op && 'fields' in op && 'name' in op.fields).toBe(false);
  });

  it('update that moves the key writes the new key and deletes the old one', () => {
    const m = mapping([key('user:email:{email}', { action: 'refresh' })]);
    const ops = planCacheOps(change('u', row, { ...row, email: 'b@x' }), m);
    expect(ops.map((o) => [o.kind, 'key' in o && o.key])).toEqual([
      ['set', 'user:email:b@x'],
      ['del', 'user:email:a@x'],
    ]);
  });

  it('delete deletes', () => {
    const m = mapping([key('user:{id}', { action: 'refresh' })]);
    expect(planCacheOps(change('d', row, null), m)).toMatchObject([{ kind: 'del', key: 'user:1' }]);
  });

  it("a column the mapping needs but the row lacks is the message's fault", () => {
    const m = mapping([key('user:{id}', { action: 'refresh', columns: ['id', 'missing'] })]);
    expect(() => planCacheOps(change('c', null, row), m)).toThrow(MessageError);
  });

  it('applies the TTL with jitter', () => {
    const m = mapping([key('user:{id}', { action: 'refresh', ttlMs: 1000, ttlJitter: 0.1 })]);
    expect(planCacheOps(change('c', null, row), m, { random: () => 0 })[0]).toMatchObject({ ttlMs: 900 });
    expect(planCacheOps(change('c', null, row), m, { random: () => 0.999999 })[0]).toMatchObject({
      ttlMs: 1100,
    });
  });
});

describe('planCacheOps: an oversized change (too large for Kafka)', () => {
  it('deletes the keys of both images, refresh keys too, whatever onlyWhenChanged says', () => {
    const m = mapping([key('user:{id}', { action: 'refresh' }), key('user:email:{email}')], {
      onlyWhenChanged: ['balance'],
    });
    const event = { ...change('u', { id: 1, email: 'a@x' }, { id: 1, email: 'b@x' }), oversized: true };
    const ops = planCacheOps(event, m);
    expect(ops.map((o) => [o.kind, 'key' in o ? o.key : ''])).toEqual([
      ['del', 'user:1'],
      ['del', 'user:email:a@x'],
      ['del', 'user:email:b@x'],
    ]);
  });
});

describe('planCacheOps: options', () => {
  it('onlyWhenChanged ignores updates that touch none of the columns', () => {
    const m = mapping([key('user:{id}')], { onlyWhenChanged: ['email'] });
    expect(planCacheOps(change('u', row, { ...row, name: 'Bob' }), m)).toEqual([]);
    expect(planCacheOps(change('u', row, { ...row, email: 'z@x' }), m)).toHaveLength(1);
    // Inserts and deletes always count.
    expect(planCacheOps(change('c', null, row), m)).toHaveLength(1);
  });

  it('delayedRedelete schedules one more delete of the same keys', () => {
    const m = mapping([key('user:{id}', { delayedRedeleteMs: 500 })]);
    expect(planCacheOps(change('d', row, null), m)).toMatchObject([
      { kind: 'del', key: 'user:1' },
      { kind: 'redelete', key: 'user:1', delayMs: 500 },
    ]);
  });
});

describe('jitter', () => {
  it('stays within +-fraction', () => {
    for (let i = 0; i < 100; i++) {
      const t = jitter(10_000, 0.1, Math.random);
      expect(t).toBeGreaterThanOrEqual(9000);
      expect(t).toBeLessThanOrEqual(11_000);
    }
  });
});
