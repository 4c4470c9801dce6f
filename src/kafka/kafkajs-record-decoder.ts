/**
 * kafkajs 2.2.4's record decoder (`protocol/recordBatch/record/v0/decoder.js`), for what a consumer
 * of change events fetches: a record with the same fields (see FetchedRecord), without what kafkajs
 * spends on each record before it gets to the bytes. kafkajs reads the timestamp delta as a 64-bit
 * Long (a BigInt), then computes the record's offset and timestamp by parsing the batch's first
 * offset and timestamp from their decimal strings into BigInts again for every record, and folds
 * the headers with an object spread per header. Here the batch's two bases are parsed once per
 * batch, and an offset or a timestamp is a sum of two safe integers written as a decimal string, as
 * kafkajs writes it.
 *
 * A record with headers, a value past 2^53 or bytes that do not parse goes to kafkajs' own decoder,
 * from its first byte, so what it returns or throws is kafkajs' (the DLQ's records carry headers;
 * change events carry none).
 */

/** kafkajs' Decoder, as far as a record is read from it. */
export interface DecoderLike {
  buffer: Buffer;
  offset: number;
}

/** What kafkajs' record batch decoder passes with each record. */
export interface RecordBatchContext {
  firstOffset: string;
  firstTimestamp: string;
  magicByte?: number;
  isControlBatch?: boolean;
  timestampType?: number;
  maxTimestamp?: string;
}

export type RecordDecoder = (decoder: DecoderLike, batchContext?: RecordBatchContext) => unknown;

/** kafkajs' TimestampTypes.LOG_APPEND_TIME. */
const LOG_APPEND_TIME = 1;

/** A batch's first offset and timestamp as numbers (NaN where they are not safe integers). */
const bases = new WeakMap<RecordBatchContext, { offset: number; timestamp: number }>();

function basesOf(ctx: RecordBatchContext): { offset: number; timestamp: number } {
  let b = bases.get(ctx);
  if (!b) {
    b = { offset: safeInteger(ctx.firstOffset), timestamp: safeInteger(ctx.firstTimestamp) };
    bases.set(ctx, b);
  }
  return b;
}

function safeInteger(text: string): number {
  if (typeof text !== 'string' || !/^-?\d{1,16}$/.test(text)) return Number.NaN;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : Number.NaN;
}

/** Where the varint readers stopped (set by each read). */
let pos = 0;

/**
 * kafkajs' `readVarInt`: a zigzag varint of at most four bytes (28 bits), decoded as kafkajs
 * decodes it; NaN for a longer one or one past the buffer's end.
 */
function readVarInt(buf: Buffer, offset: number): number {
  let result = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (offset >= buf.length) return Number.NaN;
    const byte = buf[offset++]!;
    result += (byte & 0x7f) << shift;
    if (byte < 0x80) {
      pos = offset;
      return (result >>> 1) ^ -(result & 1);
    }
  }
  return Number.NaN;
}

/** A zigzag varlong whose magnitude is a safe integer; NaN otherwise. */
function readVarLong(buf: Buffer, offset: number): number {
  let result = 0;
  let scale = 1;
  for (let i = 0; i < 8; i++) {
    if (offset >= buf.length) return Number.NaN;
    const byte = buf[offset++]!;
    result += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      pos = offset;
      if (result > Number.MAX_SAFE_INTEGER) return Number.NaN;
      return result % 2 === 0 ? result / 2 : -(result + 1) / 2;
    }
    scale *= 0x80;
  }
  return Number.NaN;
}

/** Reads one record as kafkajs' record decoder does, handing what it does not read to `original`. */
export function decodeRecord(
  decoder: DecoderLike,
  batchContext: RecordBatchContext = {} as RecordBatchContext,
  original: RecordDecoder,
): unknown {
  const buf = decoder.buffer;
  const start = decoder.offset;
  const fallback = () => {
    decoder.offset = start;
    return original(decoder, batchContext);
  };
  if (start >= buf.length) return fallback();
  const attributes = buf.readInt8(start);
  const timestampDelta = readVarLong(buf, start + 1);
  if (Number.isNaN(timestampDelta)) return fallback();
  const offsetDelta = readVarInt(buf, pos);
  if (Number.isNaN(offsetDelta)) return fallback();
  const keyLength = readVarInt(buf, pos);
  if (Number.isNaN(keyLength) || keyLength < -1 || pos + Math.max(keyLength, 0) > buf.length)
    return fallback();
  const keyStart = pos;
  const valueLength = readVarInt(buf, pos + Math.max(keyLength, 0));
  if (Number.isNaN(valueLength) || valueLength < -1 || pos + Math.max(valueLength, 0) > buf.length)
    return fallback();
  const valueStart = pos;
  const headerCount = readVarInt(buf, pos + Math.max(valueLength, 0));
  if (headerCount !== 0 && headerCount !== -1) return fallback();

  const { magicByte, isControlBatch = false, timestampType, maxTimestamp } = batchContext;
  const base = basesOf(batchContext);
  // The record's own timestamp, or the batch's (a string) when the broker set them all.
  let timestamp: number | string;
  if (timestampType === LOG_APPEND_TIME && maxTimestamp) {
    timestamp = maxTimestamp;
  } else {
    timestamp = base.timestamp + timestampDelta;
    if (!Number.isSafeInteger(timestamp)) return fallback();
  }
  const offsetSum = base.offset + offsetDelta;
  if (!Number.isSafeInteger(offsetSum)) return fallback();
  decoder.offset = pos;
  return new FetchedRecord(
    magicByte,
    attributes,
    timestamp,
    String(offsetSum),
    buf.buffer,
    buf.byteOffset + keyStart,
    keyLength,
    buf.byteOffset + valueStart,
    valueLength,
    isControlBatch,
    batchContext,
  );
}

const NO_HEADERS: Record<string, never> = Object.freeze({});

/**
 * A record as kafkajs' decoder returns it, but that its key and value (views of the fetched
 * bytes), its timestamp (a string) and its headers (none) are made when read, and it keeps only
 * where they are in the fetched bytes, not the view of its own bytes that kafkajs reads it from: a
 * consumer holds every record of a fetched batch until it has applied them all, and those objects,
 * four or five per record, were much of what outlived V8's young generation (copied, then
 * promoted) meanwhile.
 */
class FetchedRecord {
  constructor(
    readonly magicByte: number | undefined,
    readonly attributes: number,
    private readonly time: number | string,
    readonly offset: string,
    private readonly bytes: ArrayBufferLike,
    private readonly keyStart: number,
    private readonly keyLength: number,
    private readonly valueStart: number,
    private readonly valueLength: number,
    readonly isControlRecord: boolean,
    readonly batchContext: RecordBatchContext,
  ) {}

  /** None: a record with headers is decoded by kafkajs. */
  get headers(): Record<string, never> {
    return NO_HEADERS;
  }

  /** Epoch ms as a decimal string, as kafkajs has it. */
  get timestamp(): string {
    return String(this.time);
  }

  get key(): Buffer | null {
    return this.keyLength === -1 ? null : Buffer.from(this.bytes, this.keyStart, this.keyLength);
  }

  get value(): Buffer | null {
    return this.valueLength === -1 ? null : Buffer.from(this.bytes, this.valueStart, this.valueLength);
  }
}
