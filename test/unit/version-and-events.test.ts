import { describe, expect, it } from 'vitest';
import {
  decodeChangeEvent,
  encodeChangeEvent,
  messageKey,
  type ChangeEvent,
} from '../../src/core/change-event.js';
import { parseTableDdl } from '../../src/core/ddl.js';
import { backoffDelay, isRetriable, retry } from '../../src/core/retry.js';
import { MessageError, UnavailableError } from '../../src/core/errors.js';
import {
  compareVersions,
  isVersion,
  makeVersion,
  versionBefore,
  versionEpoch,
} from '../../src/core/version.js';

describe('versions', () => {
  it('order by epoch, then file, then transaction position, then sequence', () => {
    const a = makeVersion(0, 'binlog.000009', 999_999, 5);
    const b = makeVersion(0, 'binlog.000010', 4, 1);
    const c = makeVersion(0, 'binlog.000010', 4, 2);
    const d = makeVersion(0, 'binlog.000010', 120, 1);
    const e = makeVersion(1, 'binlog.000001', 4, 1);
    expect([e, d, c, a, b].sort(compareVersions)).toEqual([a, b, c, d, e]);
  });

  it('compare parts as integers, not as text', () => {
    expect(compareVersions('1:9:100:1', '1:10:4:1')).toBeLessThan(0);
    expect(compareVersions('1:2:99:1', '1:2:100:1')).toBeLessThan(0);
    expect(compareVersions('9:2:3:4', '10:1:1:1')).toBeLessThan(0);
    expect(compareVersions('1:2:3:4', '01:002:3:0004')).toBe(0);
    expect(compareVersions('1:2:3:5', '1:2:3:4')).toBeGreaterThan(0);
  });

  it('version row 10 000 000 of a transaction, and beyond, after row 9 999 999', () => {
    const row = (seq: number) => makeVersion(3, 'binlog.000002', 4, seq);
    expect(isVersion(row(10_000_000))).toBe(true);
    expect(compareVersions(row(9_999_999), row(10_000_000))).toBeLessThan(0);
    expect(compareVersions(row(10_000_000), row(123_456_789_012))).toBeLessThan(0);
    expect(compareVersions(row(10_000_000), makeVersion(3, 'binlog.000002', 5, 1))).toBeLessThan(0);
  });

  it('read a legacy fixed-width version as epoch 0', () => {
    const legacy = '0000000003:0000000000012345:0000002';
    expect(isVersion(legacy)).toBe(true);
    expect(versionEpoch(legacy)).toBe(0);
    expect(versionEpoch('0:3:12345:2')).toBe(0);
    expect(versionEpoch('0017:3:12345:2')).toBe(17);
    expect(versionEpoch(makeVersion(1763772000, 'binlog.000002', 4, 1))).toBe(1763772000);
    expect(compareVersions(legacy, '0:3:12345:2')).toBe(0);
    expect(compareVersions(legacy, makeVersion(0, 'binlog.000003', 12345, 3))).toBeLessThan(0);
    expect(compareVersions(legacy, makeVersion(0, 'binlog.000004', 4, 1))).toBeLessThan(0);
    expect(compareVersions(legacy, makeVersion(1, 'binlog.000001', 4, 1))).toBeLessThan(0);
    expect(compareVersions('0000000009:0000000000000004:0000000', legacy)).toBeGreaterThan(0);
  });

  it('put versionBefore(P) after the transactions that started before P and before the rest', () => {
    const cut = versionBefore(2, 'binlog.000005', 1000);
    expect(isVersion(cut)).toBe(true);
    const before = [
      makeVersion(2, 'binlog.000005', 999, 1),
      makeVersion(2, 'binlog.000005', 4, 10_000_000),
      makeVersion(2, 'binlog.000004', 5000, 3),
      makeVersion(1, 'binlog.000009', 9000, 1),
      '0000000009:0000000000009000:0000000',
    ];
    const after = [
      makeVersion(2, 'binlog.000005', 1000, 1),
      makeVersion(2, 'binlog.000005', 1001, 1),
      makeVersion(2, 'binlog.000006', 4, 1),
      makeVersion(3, 'binlog.000001', 4, 1),
    ];
    for (const v of before) expect(compareVersions(v, cut)).toBeLessThan(0);
    for (const v of after) expect(compareVersions(cut, v)).toBeLessThan(0);
  });

  it('reject what is not a version', () => {
    for (const v of ['', 'v1', '1:2', '1:2:3:4:5', '1:-2:3:4', '1.5:2:3:4', ' 1:2:3:4', 42, null]) {
      expect(isVersion(v)).toBe(false);
    }
    expect(() => makeVersion(-1, 'binlog.000001', 4, 1)).toThrow(RangeError);
    expect(() => makeVersion(0, 'binlog.000001', 4, 0.5)).toThrow(RangeError);
    expect(() => makeVersion(0, 'binlog', 4, 1)).toThrow(RangeError);
  });
});

describe('change events', () => {
  const event: ChangeEvent = {
    op: 'u',
    db: 'shop',
    table: 'users',
    pk: { id: 1, region: 'eu' },
    before: { id: 1, region: 'eu', n: 1 },
    after: { id: 1, region: 'eu', n: 2 },
    source: {
      file: 'binlog.000001',
      pos: 4,
      gtid: '0-1-3',
      ts_ms: 1,
      version: makeVersion(0, 'binlog.000001', 4, 1),
    },
    ts_ms: 2,
  };

  it('are keyed by table and primary key values', () => {
    expect(messageKey(event)).toBe('shop.users:1:eu');
    expect(messageKey({ ...event, pk: {} })).toBe('shop.users');
  });

  it('round-trip through JSON', () => {
    expect(decodeChangeEvent(encodeChangeEvent(event))).toEqual(event);
  });

  it.each([
    ['not json', 'not JSON'],
    ['{"op":"x"}', 'op must be one of'],
    [JSON.stringify({ ...event, after: null }), 'needs before and after'],
    [JSON.stringify({ ...event, source: { version: 'v1' } }), 'source.version'],
  ])('reject malformed values: %s', (value, message) => {
    expect(() => decodeChangeEvent(value)).toThrow(message);
  });
});

describe('parseTableDdl', () => {
  it.each([
    ['TRUNCATE shop.users', 'x', { kind: 'truncate', tables: [{ db: 'shop', table: 'users' }] }],
    ['truncate table `users`', 'shop', { kind: 'truncate', tables: [{ db: 'shop', table: 'users' }] }],
    [
      'DROP TABLE IF EXISTS `a`, shop.`b` /* generated by server */',
      'd',
      {
        kind: 'drop',
        tables: [
          { db: 'd', table: 'a' },
          { db: 'shop', table: 'b' },
        ],
      },
    ],
  ])('%s', (sql, schema, expected) => {
    expect(parseTableDdl(sql, schema)).toEqual(expected);
  });

  it.each([
    [
      'RENAME TABLE users TO users_old, `shop`.users_new TO shop.`users`',
      's',
      {
        kind: 'rename',
        tables: [
          { db: 's', table: 'users' },
          { db: 's', table: 'users_old' },
          { db: 'shop', table: 'users_new' },
          { db: 'shop', table: 'users' },
        ],
      },
    ],
    [
      'ALTER TABLE shop.users RENAME TO archive.users',
      's',
      {
        kind: 'rename',
        tables: [
          { db: 'shop', table: 'users' },
          { db: 'archive', table: 'users' },
        ],
      },
    ],
    ['DROP DATABASE IF EXISTS `shop`', 's', { kind: 'dropDatabase', tables: [], databases: ['shop'] }],
    ['drop schema shop', 's', { kind: 'dropDatabase', tables: [], databases: ['shop'] }],
    [
      'ALTER TABLE t TRUNCATE PARTITION p0, p1',
      's',
      { kind: 'partition', tables: [{ db: 's', table: 't' }] },
    ],
    ['ALTER TABLE `t` DROP PARTITION p0', 's', { kind: 'partition', tables: [{ db: 's', table: 't' }] }],
    [
      'ALTER TABLE t EXCHANGE PARTITION p0 WITH TABLE other.t2',
      's',
      {
        kind: 'partition',
        tables: [
          { db: 's', table: 't' },
          { db: 'other', table: 't2' },
        ],
      },
    ],
  ])('%s', (sql, schema, expected) => {
    expect(parseTableDdl(sql, schema)).toEqual(expected);
  });

  it('ignores other statements', () => {
    expect(parseTableDdl('ALTER TABLE t ADD c INT', 's')).toBeUndefined();
    expect(parseTableDdl('ALTER TABLE t RENAME COLUMN a TO b', 's')).toBeUndefined();
    expect(parseTableDdl('ALTER TABLE t RENAME INDEX a TO b', 's')).toBeUndefined();
    expect(
      parseTableDdl('ALTER TABLE t ADD PARTITION (PARTITION p9 VALUES LESS THAN (9))', 's'),
    ).toBeUndefined();
    expect(parseTableDdl('ALTER TABLE t DROP COLUMN c', 's')).toBeUndefined();
    expect(parseTableDdl('CREATE DATABASE s', 's')).toBeUndefined();
  });
});

describe('retry', () => {
  it('backs off exponentially up to the cap, with jitter', () => {
    const p = { initialMs: 100, maxMs: 1000, jitter: 0 };
    expect([1, 2, 3, 4, 5].map((a) => backoffDelay(p, a))).toEqual([100, 200, 400, 800, 1000]);
    const jittered = backoffDelay({ initialMs: 100, maxMs: 1000, jitter: 0.5 }, 1, () => 0);
    expect(jittered).toBe(50);
  });

  it('never retries programmer errors or message errors', async () => {
    expect(isRetriable(new TypeError('x'))).toBe(false);
    expect(isRetriable(new RangeError('x'))).toBe(false);
    expect(isRetriable(new MessageError('x'))).toBe(false);
    expect(isRetriable(new UnavailableError('x'))).toBe(true);
    let calls = 0;
    await expect(
      retry(
        () => {
          calls++;
          throw new TypeError('bug');
        },
        { initialMs: 1, maxMs: 1 },
      ),
    ).rejects.toThrow('bug');
    expect(calls).toBe(1);
  });

  it('retries until success or the attempt limit', async () => {
    let calls = 0;
    const result = await retry(
      () => {
        calls++;
        if (calls < 3) throw new UnavailableError('down');
        return Promise.resolve('ok');
      },
      { initialMs: 1, maxMs: 2 },
    );
    expect([result, calls]).toEqual(['ok', 3]);
    await expect(
      retry(
        () => Promise.reject(new UnavailableError('down')),
        { initialMs: 1, maxMs: 1 },
        { maxAttempts: 2 },
      ),
    ).rejects.toThrow('down');
  });
});

describe('decodeChangeEvent and versions from the future', () => {
  it('refuses a version whose epoch is far ahead of the clock, naming it', () => {
    const now = Date.UTC(2026, 10, 22);
    const value = JSON.stringify({
      op: 'd',
      db: 'd',
      table: 't',
      pk: { id: 1 },
      before: { id: 1 },
      after: null,
      source: { file: 'binlog.000001', pos: 4, ts_ms: now, version: `${now / 1000 + 86_400}:1:4:1` },
      ts_ms: now,
    });
    expect(() => decodeChangeEvent(value, now)).toThrow(/from the future/);
    expect(decodeChangeEvent(value, now + 86_400_000).op).toBe('d');
  });
});
