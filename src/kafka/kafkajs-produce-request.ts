/**
 * kafkajs 2.2.4's Produce request (v3, which v4 to v7 reuse) encoded with one buffer per record
 * batch instead of an object and an Encoder per record: kafkajs copies every message into a new
 * object (`{ ...message, offsetDelta, timestampDelta }`), encodes it into a Buffer of its own, then
 * copies the records into a batch, the batch into a partition, the partition into a topic and the
 * topic into the request, each through an Encoder that grows by doubling a zero-filled buffer.
 * Here the records of a batch are sized first and written once into a buffer of that size; the
 * bytes are the same (test/unit/kafkajs-fast-paths.test.ts compares them with kafkajs' own).
 *
 * Only requests whose messages have a string or Buffer key and value (or none), no timestamp and
 * no headers are encoded here; any other request is kafkajs' own, unchanged. The tailer's are all
 * of the first kind.
 */

import {
  bytesLength,
  isBytes,
  uvarint32Size,
  writeUVarInt32,
  writeVarIntBytes,
  zigzag32,
} from './record-fields.js';

/** kafkajs' Long, as far as this module uses it. */
export interface LongLike {
  getHighBits(): number;
  getLowBits(): number;
}

/** What this encoder takes from kafkajs: its own building blocks, so that the bytes match. */
export interface ProduceDeps {
  apiKey: number;
  /** kafkajs' Encoder prototype: the encoded request is an Encoder over the request's buffer. */
  encoderPrototype: object;
  /** kafkajs' `Long.fromValue`. */
  toLong: (value: unknown) => LongLike;
  /** kafkajs' CRC-32C of a record batch. */
  crc32C: (buffer: Buffer) => number;
  /** kafkajs' codec for a compression type, as registered (null for none). */
  lookupCodec: (type: number) => { compress(encoder: unknown): Promise<Buffer> } | null;
  /** kafkajs' own v3 request, for what this one does not encode. */
  fallback: (args: ProduceRequestArgs) => ProduceRequest;
}

export interface ProduceMessage {
  key?: unknown;
  value?: unknown;
  headers?: unknown;
  timestamp?: unknown;
}

export interface ProduceRequestArgs {
  acks: number;
  timeout: number;
  transactionalId?: string | null;
  producerId?: unknown;
  producerEpoch?: number;
  compression?: number;
  topicData: Array<{
    topic: string;
    partitions: Array<{ partition: number; firstSequence?: number; messages: ProduceMessage[] }>;
  }>;
}

export interface ProduceRequest {
  apiKey: number;
  apiVersion: number;
  apiName: string;
  expectResponse: () => boolean;
  encode: () => Promise<unknown>;
}

const NO_COMPRESSION = 0;
const MAGIC_BYTE = 2;
const TRANSACTIONAL_MASK = 16;
/** A record batch's fields before its records, from the partition leader epoch on. */
const BATCH_HEAD = 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4;
/** A partition's entry before its batch: partition, batch size, first offset, batch length. */
const PARTITION_HEAD = 4 + 4 + 8 + 4;

/** Whether {@link produceRequest} encodes a request itself rather than handing it to kafkajs. */
export function fastProduceApplies(args: ProduceRequestArgs): boolean {
  for (const { partitions } of args.topicData) {
    for (const { messages } of partitions) {
      if (messages.length === 0) return false;
      for (const m of messages) {
        if (m.timestamp !== undefined && m.timestamp !== null) return false;
        if (m.headers !== undefined && !isEmptyObject(m.headers)) return false;
        if (!isBytes(m.key) || !isBytes(m.value)) return false;
      }
    }
  }
  return true;
}

function isEmptyObject(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  for (const _ in value) return false;
  return true;
}

/** The Produce v3 request kafkajs' `requests/produce/v3/request.js` makes, same fields, same bytes. */
export function produceRequest(deps: ProduceDeps, args: ProduceRequestArgs): ProduceRequest {
  if (!fastProduceApplies(args)) return deps.fallback(args);
  const { acks } = args;
  return {
    apiKey: deps.apiKey,
    apiVersion: 3,
    apiName: 'Produce',
    expectResponse: () => acks !== 0,
    encode: () => encodeRequest(deps, args),
  };
}

async function encodeRequest(deps: ProduceDeps, args: ProduceRequestArgs): Promise<unknown> {
  const transactionalId = args.transactionalId ?? null;
  const producerId = deps.toLong(args.producerId ?? -1);
  const producerEpoch = args.producerEpoch ?? 0;
  const compression = args.compression ?? NO_COMPRESSION;
  const topics: Array<{ name: Buffer; partitions: Buffer[] }> = [];
  let size = stringSize(transactionalId) + 2 + 4 + 4;
  for (const { topic, partitions } of args.topicData) {
    const name = Buffer.from(topic, 'utf8');
    const encoded: Buffer[] = [];
    size += 2 + name.length + 4;
    for (const p of partitions) {
      const entry = await encodePartition(deps, {
        partition: p.partition,
        messages: p.messages,
        firstSequence: p.firstSequence ?? 0,
        producerId,
        producerEpoch,
        transactional: transactionalId !== null,
        compression,
      });
      encoded.push(entry);
      size += entry.length;
    }
    topics.push({ name, partitions: encoded });
  }

  const buf = Buffer.allocUnsafe(size);
  let offset = writeString(buf, 0, transactionalId);
  offset = buf.writeInt16BE(args.acks, offset);
  offset = buf.writeInt32BE(args.timeout, offset);
  offset = buf.writeInt32BE(topics.length, offset);
  for (const { name, partitions } of topics) {
    offset = buf.writeInt16BE(name.length, offset);
    offset += name.copy(buf, offset);
    offset = buf.writeInt32BE(partitions.length, offset);
    for (const entry of partitions) offset += entry.copy(buf, offset);
  }
  return encoderOver(deps, buf, offset);
}

interface PartitionBatch {
  partition: number;
  messages: ProduceMessage[];
  firstSequence: number;
  producerId: LongLike;
  producerEpoch: number;
  transactional: boolean;
  compression: number;
}

/**
 * One partition's entry of the request: partition, batch size, then the record batch (first
 * offset, length, leader epoch, magic, CRC-32C of what follows, attributes, deltas, timestamps,
 * producer id and epoch, first sequence, record count, records, compressed or not).
 */
async function encodePartition(deps: ProduceDeps, batch: PartitionBatch): Promise<Buffer> {
  const { messages, compression } = batch;
  const now = Date.now();
  const sizes = new Int32Array(messages.length * 2);
  let recordsSize = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    const keyLength = bytesLength(m.key);
    const valueLength = bytesLength(m.value);
    sizes[2 * i] = keyLength;
    sizes[2 * i + 1] = valueLength;
    recordsSize += recordSize(i, keyLength, valueLength);
  }

  let payload: Buffer;
  let buf: Buffer;
  const codec = compression === NO_COMPRESSION ? null : deps.lookupCodec(compression);
  if (codec === null) {
    buf = Buffer.allocUnsafe(PARTITION_HEAD + BATCH_HEAD + recordsSize);
    writeRecords(buf, PARTITION_HEAD + BATCH_HEAD, messages, sizes);
    payload = buf;
  } else {
    const records = Buffer.allocUnsafe(recordsSize);
    writeRecords(records, 0, messages, sizes);
    payload = await codec.compress(encoderOver(deps, records, recordsSize));
    buf = Buffer.allocUnsafe(PARTITION_HEAD + BATCH_HEAD + payload.length);
    payload.copy(buf, PARTITION_HEAD + BATCH_HEAD);
  }
  const batchLength = BATCH_HEAD + (payload === buf ? recordsSize : payload.length);

  let offset = buf.writeInt32BE(batch.partition, 0);
  offset = buf.writeInt32BE(8 + 4 + batchLength, offset); // the batch's size as kafkajs counts it
  offset = buf.writeInt32BE(0, offset); // first offset, an int64 0
  offset = buf.writeInt32BE(0, offset);
  offset = buf.writeInt32BE(batchLength, offset);
  offset = buf.writeInt32BE(0, offset); // partition leader epoch
  offset = buf.writeInt8(MAGIC_BYTE, offset);
  const crcAt = offset;
  const bodyAt = crcAt + 4;
  offset = bodyAt;
  const attributes = (compression & 0x07) | (batch.transactional ? TRANSACTIONAL_MASK : 0);
  offset = buf.writeInt16BE(attributes, offset);
  offset = buf.writeInt32BE(messages.length - 1, offset); // last offset delta
  offset = writeInt64(buf, offset, deps.toLong(now)); // first timestamp
  offset = writeInt64(buf, offset, deps.toLong(now)); // max timestamp
  offset = writeInt64(buf, offset, batch.producerId);
  offset = buf.writeInt16BE(batch.producerEpoch, offset);
  offset = buf.writeInt32BE(batch.firstSequence, offset);
  buf.writeInt32BE(messages.length, offset);
  buf.writeUInt32BE(deps.crc32C(buf.subarray(bodyAt)), crcAt);
  return buf;
}

/** A record with no headers and a zero timestamp delta: its length varint and its body. */
function recordSize(offsetDelta: number, keyLength: number, valueLength: number): number {
  const body =
    1 + // attributes
    1 + // timestamp delta: zigzag32(0)
    uvarint32Size(zigzag32(offsetDelta)) +
    uvarint32Size(zigzag32(keyLength)) +
    Math.max(keyLength, 0) +
    uvarint32Size(zigzag32(valueLength)) +
    Math.max(valueLength, 0) +
    1; // header count: zigzag32(0)
  return uvarint32Size(zigzag32(body)) + body;
}

function writeRecords(buf: Buffer, offset: number, messages: ProduceMessage[], sizes: Int32Array): number {
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    const keyLength = sizes[2 * i]!;
    const valueLength = sizes[2 * i + 1]!;
    const total = recordSize(i, keyLength, valueLength);
    offset = writeUVarInt32(buf, offset, zigzag32(total - uvarint32Size(zigzag32(total))));
    buf[offset++] = 0; // attributes
    buf[offset++] = 0; // timestamp delta
    offset = writeUVarInt32(buf, offset, zigzag32(i));
    offset = writeVarIntBytes(buf, offset, m.key, keyLength);
    offset = writeVarIntBytes(buf, offset, m.value, valueLength);
    buf[offset++] = 0; // no headers
  }
  return offset;
}

function writeInt64(buf: Buffer, offset: number, value: LongLike): number {
  offset = buf.writeInt32BE(value.getHighBits(), offset);
  return buf.writeInt32BE(value.getLowBits(), offset);
}

function stringSize(value: string | null): number {
  return 2 + (value === null ? 0 : Buffer.byteLength(value, 'utf8'));
}

function writeString(buf: Buffer, offset: number, value: string | null): number {
  if (value === null) return buf.writeInt16BE(-1, offset);
  const length = Buffer.byteLength(value, 'utf8');
  offset = buf.writeInt16BE(length, offset);
  buf.write(value, offset, length, 'utf8');
  return offset + length;
}

/** A kafkajs Encoder whose bytes are `buf` up to `offset` (what request framing and codecs read). */
function encoderOver(deps: ProduceDeps, buf: Buffer, offset: number): unknown {
  const encoder = Object.create(deps.encoderPrototype) as { buf: Buffer; offset: number };
  encoder.buf = buf;
  encoder.offset = offset;
  return encoder;
}
