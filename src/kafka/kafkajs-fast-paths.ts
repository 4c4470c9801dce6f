import { createRequire, Module } from 'node:module';
import { produceRequest, type ProduceDeps, type ProduceRequestArgs } from './kafkajs-produce-request.js';
import { decodeRecord, type RecordDecoder } from './kafkajs-record-decoder.js';
import {
  bytesLength,
  isBytes,
  uvarint32Size,
  writeUVarInt32,
  writeVarIntBytes,
  zigzag32,
} from './record-fields.js';

/**
 * Four internals of kafkajs 2.2.4 replaced by faster equivalents, measured as the tailer's largest
 * costs under a bulk load (a sampling allocation profile of the tailer alone: kafkajs made 59% of
 * the bytes allocated, 6.9 KB per row; a CPU profile: building the produce request 20% of samples):
 *
 * - `producer/groupMessagesPerPartition` copies a partition's whole array for every message it
 *   adds (`[...current, message]`): quadratic in a request's messages per partition, 26% of the
 *   bytes allocated. Here: one array per partition, pushed to.
 * - `protocol/recordBatch/record/v0` encodes each record into a fresh 512-byte zero-filled buffer,
 *   allocating a Buffer per varint and several Long objects per record. Here: the same bytes,
 *   sized first and written into one pooled buffer. Records with headers, or with a timestamp
 *   delta that is not a small integer, still go to kafkajs' own encoder.
 * - `protocol/requests/produce/v3/request.js` (which v4 to v7 reuse) copies every message into a
 *   new object and every record through five growing Encoders: see kafkajs-produce-request.ts.
 * - `protocol/recordBatch/record/v0/decoder.js` parses BigInts from decimal strings for every
 *   record a consumer fetches: see kafkajs-record-decoder.ts.
 *
 * Everything else (requests, retries, the idempotent producer's sequences) stays kafkajs'. The
 * replacements are put into Node's CommonJS module cache, so they must be installed before
 * kafkajs is loaded: this module is the first import of the CLI and of kafka-client.ts. Another
 * kafkajs version, or kafkajs already loaded, leaves kafkajs as it is ({@link kafkajsFastPaths}
 * says why). test/unit/kafkajs-fast-paths.test.ts checks both against kafkajs' own code.
 */

const require = createRequire(import.meta.url);

const SUPPORTED_VERSION = '2.2.4';
const GROUP_PATH = 'kafkajs/src/producer/groupMessagesPerPartition.js';
const RECORD_PATH = 'kafkajs/src/protocol/recordBatch/record/v0/index.js';
const ENCODER_PATH = 'kafkajs/src/protocol/encoder.js';
const PRODUCE_PATH = 'kafkajs/src/protocol/requests/produce/v3/request.js';
const RECORD_DECODER_PATH = 'kafkajs/src/protocol/recordBatch/record/v0/decoder.js';

type Message = { partition?: number } & Record<string, unknown>;
type Partitioner = (args: { topic: string; partitionMetadata: unknown[]; message: Message }) => number;

/** Same contract as kafkajs' groupMessagesPerPartition: messages by the partition they go to. */
export function groupMessagesPerPartition({
  topic,
  partitionMetadata,
  messages,
  partitioner,
}: {
  topic: string;
  partitionMetadata: unknown[];
  messages: Message[];
  partitioner: Partitioner;
}): Record<number, Message[]> {
  const result: Record<number, Message[]> = {};
  if (partitionMetadata.length === 0) return result;
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    (result[partition] ??= []).push(message);
  }
  return result;
}

/** The part of kafkajs' Encoder a record is: its bytes are `buf` up to `offset`. */
interface EncoderLike {
  buf: Buffer;
  offset: number;
}

export interface RecordInput {
  offsetDelta?: number;
  timestampDelta?: unknown;
  key?: unknown;
  value?: unknown;
  headers?: Record<string, unknown>;
}

/** Largest magnitude whose zigzag form (2|v|) is still exact in a double. */
const MAX_FAST_VARLONG = 2 ** 51;

/** Zigzag of a safe integer as a 64-bit varint would hold it: a non-negative double. */
function zigzag64(value: number): number {
  return value >= 0 ? value * 2 : -value * 2 - 1;
}

function uvarint64Size(value: number): number {
  let bytes = 1;
  while (value >= 0x80) {
    bytes++;
    value = Math.floor(value / 0x80);
  }
  return bytes;
}

function writeUVarInt64(buf: Buffer, offset: number, value: number): number {
  while (value >= 0x80) {
    buf[offset++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  buf[offset++] = value;
  return offset;
}

/** A record's key or value ({@link fastRecordApplies} checked that it is one of these). */
function bytesOf(value: unknown): Buffer | string | null {
  return value === null || value === undefined ? null : (value as Buffer | string);
}

/**
 * Whether {@link encodeRecord} handles a record: key and value strings, Buffers or absent, no
 * headers, and a timestamp delta that is a safe integer. kafkajs handles (or refuses) the rest on
 * its own terms.
 */
export function fastRecordApplies(record: RecordInput): boolean {
  if (!isBytes(record.key) || !isBytes(record.value)) return false;
  const delta = record.timestampDelta === undefined ? 0 : record.timestampDelta;
  if (typeof delta !== 'number' || !Number.isInteger(delta) || Math.abs(delta) >= MAX_FAST_VARLONG)
    return false;
  const offsetDelta = record.offsetDelta === undefined ? 0 : record.offsetDelta;
  if (!Number.isInteger(offsetDelta) || offsetDelta < 0 || offsetDelta > 0x3fffffff) return false;
  const headers = record.headers;
  if (headers === undefined) return true;
  if (headers === null || typeof headers !== 'object') return false;
  for (const _ in headers) return false;
  return true;
}

/**
 * A Kafka v2 record (Record => Length Attributes TimestampDelta OffsetDelta Key Value Headers, all
 * lengths and deltas zigzag varints), byte for byte what kafkajs' record v0 encoder writes for a
 * record {@link fastRecordApplies} to, into `into` (an object with kafkajs' Encoder prototype).
 */
export function encodeRecord<E extends EncoderLike>(record: RecordInput, into: E): E {
  const timestampDelta = zigzag64((record.timestampDelta as number | undefined) ?? 0);
  const offsetDelta = zigzag32(record.offsetDelta ?? 0);
  const key = bytesOf(record.key);
  const value = bytesOf(record.value);
  const keyLength = bytesLength(key);
  const valueLength = bytesLength(value);
  const body =
    1 +
    uvarint64Size(timestampDelta) +
    uvarint32Size(offsetDelta) +
    uvarint32Size(zigzag32(keyLength)) +
    Math.max(keyLength, 0) +
    uvarint32Size(zigzag32(valueLength)) +
    Math.max(valueLength, 0) +
    1; // no headers: a zero count
  const total = uvarint32Size(zigzag32(body)) + body;
  const buf = Buffer.allocUnsafe(total);
  let offset = writeUVarInt32(buf, 0, zigzag32(body));
  buf[offset++] = 0; // attributes
  offset = writeUVarInt64(buf, offset, timestampDelta);
  offset = writeUVarInt32(buf, offset, offsetDelta);
  offset = writeVarIntBytes(buf, offset, key, keyLength);
  offset = writeVarIntBytes(buf, offset, value, valueLength);
  buf[offset++] = 0; // headers: zigzag(0)
  into.buf = buf;
  into.offset = offset;
  return into;
}

function replaceModule(path: string, exports: unknown): void {
  const module = new Module(path);
  module.filename = path;
  module.loaded = true;
  module.exports = exports;
  require.cache[path] = module;
}

/** kafkajs' own building blocks of a Produce request, for {@link produceRequest}. */
export function kafkajsProduceDeps(fallback: ProduceDeps['fallback']): ProduceDeps {
  const Long = require('kafkajs/src/utils/long.js') as { fromValue: ProduceDeps['toLong'] };
  const compression = require('kafkajs/src/protocol/message/compression/index.js') as Pick<
    ProduceDeps,
    'lookupCodec'
  >;
  return {
    apiKey: (require('kafkajs/src/protocol/requests/apiKeys.js') as { Produce: number }).Produce,
    encoderPrototype: (require(ENCODER_PATH) as { prototype: object }).prototype,
    toLong: (value) => Long.fromValue(value),
    crc32C: require('kafkajs/src/protocol/recordBatch/crc32C/index.js') as ProduceDeps['crc32C'],
    lookupCodec: (type) => compression.lookupCodec(type),
    fallback,
  };
}

function install(): string {
  let version: string;
  try {
    version = (require('kafkajs/package.json') as { version: string }).version;
  } catch {
    return 'kafkajs not found';
  }
  if (version !== SUPPORTED_VERSION) return `kafkajs ${version}, not ${SUPPORTED_VERSION}`;
  const groupPath = require.resolve(GROUP_PATH);
  const recordPath = require.resolve(RECORD_PATH);
  const producePath = require.resolve(PRODUCE_PATH);
  const recordDecoderPath = require.resolve(RECORD_DECODER_PATH);
  const paths = [require.resolve('kafkajs'), groupPath, recordPath, producePath, recordDecoderPath];
  if (paths.some((path) => require.cache[path])) {
    return 'kafkajs was loaded before them';
  }
  const Encoder = require(ENCODER_PATH) as { prototype: object };
  const originalRecord = require(RECORD_PATH) as (record: RecordInput) => unknown;
  replaceModule(groupPath, groupMessagesPerPartition);
  replaceModule(recordPath, (record: RecordInput) =>
    fastRecordApplies(record)
      ? encodeRecord(record, Object.create(Encoder.prototype) as EncoderLike)
      : originalRecord(record),
  );
  // Loaded after the record encoder's replacement, so that its fallback uses that too.
  const deps = kafkajsProduceDeps(require(PRODUCE_PATH) as ProduceDeps['fallback']);
  replaceModule(producePath, (args: ProduceRequestArgs) => produceRequest(deps, args));
  const originalDecoder = require(RECORD_DECODER_PATH) as RecordDecoder;
  replaceModule(recordDecoderPath, ((decoder, batchContext) =>
    decodeRecord(decoder, batchContext, originalDecoder)) satisfies RecordDecoder);
  return 'installed';
}

const outcome = install();

/** 'installed', or why kafkajs' own code runs (another version, or kafkajs loaded first). */
export function kafkajsFastPaths(): string {
  return outcome;
}
