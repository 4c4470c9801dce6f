import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  encodeRecord,
  fastRecordApplies,
  groupMessagesPerPartition,
  kafkajsFastPaths,
  kafkajsProduceDeps,
  type RecordInput,
} from '../../src/kafka/kafkajs-fast-paths.js';
import {
  decodeRecord,
  type RecordBatchContext,
  type RecordDecoder,
} from '../../src/kafka/kafkajs-record-decoder.js';
import {
  fastProduceApplies,
  produceRequest,
  type ProduceRequest,
  type ProduceRequestArgs,
} from '../../src/kafka/kafkajs-produce-request.js';

const require = createRequire(import.meta.url);

const RECORD_PATH = 'kafkajs/src/protocol/recordBatch/record/v0/index.js';

/**
 * A kafkajs module as kafkajs ships it, even where the fast paths replaced it in the cache, with
 * the modules of `uses` as shipped too.
 */
function kafkajsOwn<T>(path: string, uses: string[] = []): T {
  const paths = [path, ...uses].map((p) => require.resolve(p));
  const installed = paths.map((p) => require.cache[p]);
  for (const p of paths) delete require.cache[p];
  try {
    return require(paths[0]!) as T;
  } finally {
    paths.forEach((p, i) => {
      if (installed[i]) require.cache[p] = installed[i];
      else delete require.cache[p];
    });
  }
}

type Encoded = { buffer: Buffer };
const Encoder = require('kafkajs/src/protocol/encoder.js') as { prototype: object };
const kafkajsRecord = kafkajsOwn<(r: RecordInput) => Encoded>(RECORD_PATH);
const kafkajsProduce = kafkajsOwn<(args: ProduceRequestArgs) => ProduceRequest>(
  'kafkajs/src/protocol/requests/produce/v3/request.js',
  [RECORD_PATH],
);
const kafkajsRecordDecoder = kafkajsOwn<RecordDecoder>(
  'kafkajs/src/protocol/recordBatch/record/v0/decoder.js',
);
const Decoder = require('kafkajs/src/protocol/decoder.js') as new (buffer: Buffer) => {
  buffer: Buffer;
  offset: number;
};
const Long = require('kafkajs/src/utils/long.js') as { fromValue(v: unknown): unknown };
const { Types } = require('kafkajs/src/protocol/message/compression/index.js') as {
  Types: { None: number; GZIP: number };
};
const produceDeps = kafkajsProduceDeps(kafkajsProduce);

/** The bytes of a Produce request as kafkajs encodes it, and as the fast path does. */
async function bothProduceEncodings(args: ProduceRequestArgs): Promise<[Buffer, Buffer]> {
  const fast = produceRequest(produceDeps, args);
  const own = kafkajsProduce(args);
  expect({ ...fast, encode: null, expectResponse: fast.expectResponse() }).toEqual({
    ...own,
    encode: null,
    expectResponse: own.expectResponse(),
  });
  return [((await fast.encode()) as Encoded).buffer, ((await own.encode()) as Encoded).buffer];
}
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

  describe('produce request', () => {
    afterEach(() => vi.restoreAllMocks());

    it('is encoded byte for byte as kafkajs encodes it, compressed or not', async () => {
      vi.spyOn(Date, 'now').mockReturnValue(1_763_772_000_123);
      const random = lcg(13);
      const text = (n: number) =>
        Array.from({ length: n }, () => 'aé€😀{"x":1}'[Math.floor(random() * 11)]).join('');
      const message = (i: number) => {
        const pick = random();
        return {
          key: pick < 0.1 ? null : pick < 0.15 ? undefined : pick < 0.3 ? Buffer.from(text(5)) : `db.t:${i}`,
          value:
            pick < 0.05
              ? null
              : i % 97 === 0
                ? text(70_000)
                : i % 13 === 0
                  ? ''
                  : text(Math.floor(random() * 400)),
          ...(i % 7 === 0 ? { headers: {} } : {}),
          ...(i % 11 === 0 ? { timestamp: null } : {}),
        };
      };
      let compared = 0;
      for (const compression of [Types.None, Types.GZIP]) {
        for (const [transactionalId, producerId, producerEpoch] of [
          [null, undefined, undefined],
          ['tx-é', Long.fromValue(2 ** 40 + 5), 3],
          [undefined, 7, 0],
        ] as const) {
          let n = 0;
          const args: ProduceRequestArgs = {
            acks: -1,
            timeout: 30_000,
            ...(transactionalId !== undefined ? { transactionalId } : {}),
            ...(producerId !== undefined ? { producerId } : {}),
            ...(producerEpoch !== undefined ? { producerEpoch } : {}),
            compression,
            topicData: ['changes', 'änderungen'].map((topic) => ({
              topic,
              partitions: [0, 1, 3].map((partition) => ({
                partition,
                firstSequence: partition * 1000,
                messages: Array.from({ length: [1, 64, 300][partition % 3]! }, () => message(n++)),
              })),
            })),
          };
          expect(fastProduceApplies(args)).toBe(true);
          const [fast, own] = await bothProduceEncodings(args);
          expect(fast.equals(own)).toBe(true);
          compared++;
        }
      }
      const acksZero = await bothProduceEncodings({
        acks: 0,
        timeout: 1,
        topicData: [{ topic: 't', partitions: [{ partition: 0, messages: [{ value: 'v' }] }] }],
      });
      expect(acksZero[0].equals(acksZero[1])).toBe(true);
      expect(compared).toBe(6);
    });

    it('leaves requests with headers, timestamps or other values to kafkajs', () => {
      const args = (m: Record<string, unknown>): ProduceRequestArgs => ({
        acks: -1,
        timeout: 1,
        topicData: [{ topic: 't', partitions: [{ partition: 0, messages: [{ value: 'v' }, m] }] }],
      });
      expect(fastProduceApplies(args({ value: 'v', headers: { reason: 'x' } }))).toBe(false);
      expect(fastProduceApplies(args({ value: 'v', headers: null }))).toBe(false);
      expect(fastProduceApplies(args({ value: 'v', timestamp: Date.now() }))).toBe(false);
      expect(fastProduceApplies(args({ value: 'v', timestamp: 0 }))).toBe(false);
      expect(fastProduceApplies(args({ value: 12345 }))).toBe(false);
      expect(fastProduceApplies(args({ key: new Uint8Array(2), value: 'v' }))).toBe(false);
      expect(
        fastProduceApplies({
          acks: -1,
          timeout: 1,
          topicData: [{ topic: 't', partitions: [{ partition: 0, messages: [] }] }],
        }),
      ).toBe(false);
      const withHeaders = args({ value: 'v', headers: { reason: 'x' } });
      let fellBack = 0;
      const request = produceRequest(
        { ...produceDeps, fallback: (a) => (fellBack++, kafkajsProduce(a)) },
        withHeaders,
      );
      expect(fellBack).toBe(1);
      expect(request.apiVersion).toBe(3);
    });
  });

  it('decode records as kafkajs does, headers, big offsets and bad bytes included', () => {
    const random = lcg(17);
    // A record as a reader sees it: the fast decoder's key and value are made when read.
    const fields = (r: unknown) => {
      if (typeof r !== 'object' || r === null) return r;
      const m = r as Record<string, unknown>;
      return {
        magicByte: m.magicByte,
        attributes: m.attributes,
        timestamp: m.timestamp,
        offset: m.offset,
        key: m.key,
        value: m.value,
        headers: m.headers,
        isControlRecord: m.isControlRecord,
        batchContext: m.batchContext,
      };
    };
    /** What decoding did: the record (Buffers as bytes), or the error's class and message. */
    const outcome = (decode: () => unknown) => {
      try {
        return { ok: fields(decode()) };
      } catch (err) {
        return { threw: `${(err as Error).name}: ${(err as Error).message}` };
      }
    };
    const contexts: RecordBatchContext[] = [
      {
        firstOffset: '0',
        firstTimestamp: '1763772000123',
        magicByte: 2,
        timestampType: 0,
        maxTimestamp: '1763772000999',
      },
      {
        firstOffset: '123456789',
        firstTimestamp: '-1',
        magicByte: 2,
        isControlBatch: true,
        timestampType: 0,
      },
      { firstOffset: '9007199254740993', firstTimestamp: '1763772000123', magicByte: 2, timestampType: 0 },
      { firstOffset: '42', firstTimestamp: '9007199254740990', magicByte: 2, timestampType: 0 },
      {
        firstOffset: '7',
        firstTimestamp: '1763772000123',
        magicByte: 2,
        timestampType: 1,
        maxTimestamp: '1763772009999',
      },
    ];
    const records: RecordInput[] = [
      { key: 'db.t:1', value: '{"op":"c"}' },
      { key: null, value: null },
      { key: Buffer.alloc(0), value: 'é€😀'.repeat(50), offsetDelta: 63, timestampDelta: 5 },
      { value: 'v', offsetDelta: 64, timestampDelta: -5 },
      { value: 'x'.repeat(20_000), offsetDelta: 10_000, timestampDelta: 2 ** 40 },
      { value: 'h', headers: { reason: 'x', other: Buffer.from('y') } },
      { value: 'h', headers: {} },
    ];
    let compared = 0;
    let fellBack = 0;
    const counting: RecordDecoder = (decoder, ctx) => (fellBack++, kafkajsRecordDecoder(decoder, ctx));
    for (const ctx of contexts) {
      for (const record of records) {
        const bytes = kafkajsRecord(record).buffer;
        // The record's bytes after its length varint, as the batch decoder hands them over.
        const lengthDecoder = new Decoder(bytes);
        const body = (lengthDecoder as unknown as { readVarIntBytes(): Buffer }).readVarIntBytes();
        for (const cut of [body.length, Math.floor(random() * body.length), 0]) {
          const slice = body.subarray(0, cut);
          const before = fellBack;
          const fast = outcome(() => decodeRecord(new Decoder(slice), ctx, counting));
          const own = outcome(() => kafkajsRecordDecoder(new Decoder(slice), ctx));
          expect(fast).toEqual(own);
          // Whole records without headers, offsets and timestamps within 2^53: never kafkajs'.
          const plain = cut === body.length && !record.headers?.reason && ctx.firstOffset.length < 16;
          if (plain && ctx.firstTimestamp.length < 16) expect(fellBack).toBe(before);
          compared++;
        }
      }
    }
    expect(compared).toBe(105);
    expect(compared - fellBack).toBeGreaterThanOrEqual(20);
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
