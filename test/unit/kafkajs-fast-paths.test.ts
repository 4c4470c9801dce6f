import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  encodeRecord,
  fastRecordApplies,
  groupMessagesPerPartition,
  kafkajsFastPaths,
  type RecordInput,
} from '../../src/kafka/kafkajs-fast-paths.js';

const require = createRequire(import.meta.url);

/** A kafkajs module as kafkajs ships it, even where the fast paths replaced it in the cache. */
function kafkajsOwn<T>(path: string): T {
  const resolved = require.resolve(path);
  const installed = require.cache[resolved];
  delete require.cache[resolved];
  try {
    return require(resolved) as T;
  } finally {
    if (installed) require.cache[resolved] = installed;
    else delete require.cache[resolved];
  }
}

type Encoded = { buffer: Buffer };
const Encoder = require('kafkajs/src/protocol/encoder.js') as { prototype: object };
const kafkajsRecord = kafkajsOwn<(r: RecordInput) => Encoded>(
  'kafkajs/src/protocol/recordBatch/record/v0/index.js',
);
const kafkajsGroup = kafkajsOwn<typeof groupMessagesPerPartition>(
  'kafkajs/src/producer/groupMessagesPerPartition.js',
);

function fastRecord(record: RecordInput): Buffer {
  return (
    encodeRecord(
      record,
      Object.create(Encoder.prototype) as { buf: Buffer; offset: number },
    ) as unknown as Encoded
  ).buffer;
}

/** Deterministic pseudo-random numbers, so that a failure can be replayed. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('kafkajs fast paths', () => {
  it('are installed when the CLI is loaded, before kafkajs', () => {
    // A fresh Node process: in this one, other test files may have loaded kafkajs first.
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const script =
      `await import(${JSON.stringify(join(root, 'src', 'cli.ts'))});` +
      `const m = await import(${JSON.stringify(join(root, 'src', 'kafka', 'kafkajs-fast-paths.ts'))});` +
      'process.stdout.write(m.kafkajsFastPaths());';
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(out).toBe('installed');
    expect(['installed', 'kafkajs was loaded before them']).toContain(kafkajsFastPaths());
  });

  it('encode every record byte for byte as kafkajs does', () => {
    const random = lcg(7);
    const lengths = [0, 1, 63, 64, 127, 128, 8191, 8192, 16383, 16384, 70_000];
    const deltas = [
      0,
      1,
      -1,
      63,
      64,
      -64,
      -65,
      8191,
      2 ** 31 - 1,
      -(2 ** 31),
      2 ** 31,
      2 ** 40,
      -(2 ** 45),
      1_763_000_000_000,
    ];
    const text = (n: number) => {
      let s = '';
      while (s.length < n) s += random() < 0.1 ? 'é€😀' : String.fromCharCode(32 + Math.floor(random() * 90));
      return s.slice(0, n);
    };
    const fields: unknown[] = [null, undefined, 'db.t:1', Buffer.from('raw bytes'), Buffer.alloc(0), ''];
    for (const n of lengths) fields.push(text(n), Buffer.from(text(n)));
    let compared = 0;
    for (const key of fields) {
      for (const value of fields) {
        const timestampDelta = deltas[Math.floor(random() * deltas.length)];
        const offsetDelta = Math.floor(random() * 5000);
        const record: RecordInput = { key, value, offsetDelta, timestampDelta };
        expect(fastRecordApplies(record)).toBe(true);
        expect(
          fastRecord(record).equals(kafkajsRecord(record).buffer),
          JSON.stringify({ offsetDelta, timestampDelta }),
        ).toBe(true);
        compared++;
      }
    }
    for (const timestampDelta of deltas) {
      const record = { key: 'k', value: 'v', timestampDelta };
      expect(fastRecord(record).equals(kafkajsRecord(record).buffer)).toBe(true);
    }
    expect(fastRecord({ value: 'defaults' }).equals(kafkajsRecord({ value: 'defaults' }).buffer)).toBe(true);
    expect(compared).toBeGreaterThan(500);
  });

  it('leave records with headers or unusual deltas to kafkajs', () => {
    expect(fastRecordApplies({ value: 'v', headers: { reason: 'x' } })).toBe(false);
    expect(fastRecordApplies({ value: 'v', headers: {} })).toBe(true);
    expect(fastRecordApplies({ value: 'v', headers: null as unknown as Record<string, unknown> })).toBe(
      false,
    );
    expect(fastRecordApplies({ value: 'v', timestampDelta: '5' })).toBe(false);
    expect(fastRecordApplies({ value: 'v', timestampDelta: 2 ** 52 })).toBe(false);
    expect(fastRecordApplies({ value: 'v', timestampDelta: 0.5 })).toBe(false);
    expect(fastRecordApplies({ value: 'v', offsetDelta: -1 })).toBe(false);
    expect(fastRecordApplies({ value: 12345 })).toBe(false);
    expect(fastRecordApplies({ key: new Uint8Array(2), value: 'v' })).toBe(false);
  });

  it('group messages by partition as kafkajs does, in order', () => {
    const random = lcg(11);
    const messages = Array.from({ length: 2000 }, (_, i) => ({
      key: `k${i}`,
      partition: Math.floor(random() * 7),
    }));
    const args = {
      topic: 't',
      partitionMetadata: [{}, {}],
      messages,
      partitioner: ({ message }: { message: { partition?: number } }) => message.partition!,
    };
    const fast = groupMessagesPerPartition(args);
    expect(fast).toEqual(kafkajsGroup(args));
    expect(Object.keys(fast)).toEqual(Object.keys(kafkajsGroup(args)));
    expect(groupMessagesPerPartition({ ...args, partitionMetadata: [] })).toEqual({});
  });
});
