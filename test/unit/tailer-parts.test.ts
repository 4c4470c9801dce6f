import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import {
  encodeChangeEvent,
  messageKey,
  RowChangeEncoder,
  type ChangeEvent,
} from '../../src/core/change-event.js';
import { normalizeRow, normalizeRowInPlace } from '../../src/core/row-value.js';
import {
  FUTURE_EPOCH_TOLERANCE_S,
  futureVersionProblem,
  makeVersion,
  versionPrefix,
} from '../../src/core/version.js';
import { murmur2, partitionFor } from '../../src/kafka/partitioner.js';
import { ChangeQueue, type QueuedChange } from '../../src/tailer/change-queue.js';

const require = createRequire(import.meta.url);
/** kafkajs' own murmur2, which its DefaultPartitioner (and the Java client) use. */
const kafkajsMurmur2 = require('kafkajs/src/producer/partitioners/default/murmur2.js') as (
  key: string,
) => number;

describe('partitionFor', () => {
  it('hashes every key as kafkajs and the Java client do', () => {
    const keys = ['', 'a', 'ab', 'abc', 'abcd', 'shop.users:42', 'shop.orders:7:é€😀', 'x'.repeat(5000)];
    for (let i = 0; i < 20_000; i++) keys.push(`db.t:${i}:${'ü'.repeat(i % 5)}`);
    for (const key of keys) {
      expect(murmur2(key), key).toBe(kafkajsMurmur2(key));
      expect(partitionFor(key, 6)).toBe((kafkajsMurmur2(key) & 0x7fffffff) % 6);
    }
  });
});

describe('RowChangeEncoder', () => {
  const rows: Array<Record<string, unknown>> = [
    { id: 1, name: 'plain', price: '12.30', at: '2026-11-22 03:55:36.123456' },
    { id: 2, name: 'quote " backslash \\ newline \n tab \t é 😀', price: null, at: null },
    { id: 3, name: Buffer.from([0, 255, 7]), price: 2 ** 60, at: { nested: [1, 'two'] } },
  ];

  for (const op of ['c', 'u', 'd'] as const) {
    it(`writes the same JSON and key as encodeChangeEvent (op ${op})`, () => {
      const source = { file: 'mariadb-bin.000012', pos: 4567, gtid: '0-1-99', ts_ms: 1_763_783_736_000 };
      const prefix = versionPrefix(7, source.file, source.pos);
      const encoder = new RowChangeEncoder(op, 'shop', 'users', source, prefix, 1_763_783_736_123, ['id']);
      rows.forEach((row, i) => {
        const image = normalizeRow(row);
        const before = op === 'c' ? null : normalizeRowInPlace({ ...row });
        const after = op === 'd' ? null : normalizeRowInPlace({ ...row, name: `after-${i}` });
        const expected: ChangeEvent = {
          op,
          db: 'shop',
          table: 'users',
          pk: { id: image.id },
          before: op === 'c' ? null : image,
          after: op === 'd' ? null : { ...image, name: `after-${i}` },
          source: { ...source, version: makeVersion(7, source.file, source.pos, i + 1) },
          ts_ms: 1_763_783_736_123,
        };
        const { key, value } = encoder.encode(before, after, i + 1);
        expect(value).toBe(encodeChangeEvent(expected));
        expect(key).toBe(messageKey(expected));
      });
    });
  }

  it('renders keys of composite and missing primary keys as messageKey does', () => {
    const source = { file: 'binlog.000001', pos: 4, ts_ms: 0 };
    const composite = new RowChangeEncoder('c', 'd', 't', source, versionPrefix(0, source.file, 4), 0, [
      'a',
      'b',
    ]);
    expect(composite.encode(null, { a: 1, b: null }, 1).key).toBe(
      messageKey({ db: 'd', table: 't', pk: { a: 1, b: null } }),
    );
    const none = new RowChangeEncoder('c', 'd', 't', source, versionPrefix(0, source.file, 4), 0, []);
    expect(none.encode(null, { a: 1 }, 1).key).toBe('d.t');
    expect(JSON.parse(none.encode(null, { a: 1 }, 1).value)).not.toHaveProperty('source.gtid');
  });
});

describe('ChangeQueue', () => {
  const change = (value: string, op: QueuedChange['op'] = 'c'): QueuedChange => ({
    kind: 'change',
    key: 'k',
    value,
    op,
    table: 'd.t',
    ...(op === 't' ? {} : { partition: 0 }),
  });
  const commit = (pos: number) => ({
    kind: 'commit' as const,
    position: { file: 'binlog.000001', pos },
    commitTsMs: 0,
    epoch: 1,
    server: 'mariadb:1',
  });

  it('cuts batches by count and bytes, always taking one change, and carries the last boundary', () => {
    const q = new ChangeQueue();
    q.pushChange(change('x'.repeat(10)));
    q.pushChange(change('x'.repeat(10)));
    q.pushCommit(commit(100));
    q.pushChange(change('x'.repeat(50)));
    q.pushCommit(commit(200));
    expect([q.changes, q.bytes]).toEqual([3, 70]);

    const first = q.nextBatch(10, 25, 4);
    expect(first.changes.map((c) => c.value.length)).toEqual([10, 10]);
    expect(first.lastCommit?.position.pos).toBe(100);
    q.release(first);
    expect([q.changes, q.bytes]).toEqual([1, 50]);

    const second = q.nextBatch(10, 25, 4);
    expect(second.changes).toHaveLength(1); // larger than the byte bound, taken alone
    expect(second.lastCommit?.position.pos).toBe(200);
    q.release(second);
    expect(q.empty).toBe(true);
  });

  it('counts a table-level change once per partition against the byte bound', () => {
    const q = new ChangeQueue();
    q.pushChange(change('x'.repeat(10)));
    q.pushChange(change('x'.repeat(10), 't'));
    expect(q.nextBatch(10, 45, 4).changes).toHaveLength(1);
    expect(q.nextBatch(10, 50, 4).changes).toHaveLength(2);
  });
});

describe('futureVersionProblem', () => {
  const now = Date.UTC(2026, 10, 22);
  const nowS = now / 1000;
  it('accepts versions of every epoch a tailer can start, legacy ones included', () => {
    expect(futureVersionProblem(`${nowS}:3:4:1`, now)).toBeUndefined();
    expect(futureVersionProblem(`${nowS + FUTURE_EPOCH_TOLERANCE_S}:3:4:1`, now)).toBeUndefined();
    expect(futureVersionProblem('0000000003:0000000000012345:0000002', now)).toBeUndefined();
    expect(futureVersionProblem('0:1:4:1', now)).toBeUndefined();
  });
  it('names an epoch beyond the tolerance', () => {
    expect(futureVersionProblem(`${nowS + FUTURE_EPOCH_TOLERANCE_S + 1}:3:4:1`, now)).toMatch(
      /from the future/,
    );
    expect(futureVersionProblem('99999999999999999999:1:4:1', now)).toMatch(/from the future/);
  });
});
