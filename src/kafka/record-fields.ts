/**
 * The fields of a Kafka record (format v2) as kafkajs writes them: the fast paths in
 * kafkajs-fast-paths.ts and kafkajs-produce-request.ts must produce kafkajs' bytes exactly.
 */

/** Whether a record's key or value is one the fast paths write: a string, a Buffer or none. */
export function isBytes(value: unknown): boolean {
  return value === null || value === undefined || typeof value === 'string' || Buffer.isBuffer(value);
}

/** A key's or value's length in bytes (UTF-8 for a string), -1 for none ({@link isBytes} holds). */
export function bytesLength(field: unknown): number {
  if (field === null || field === undefined) return -1;
  return typeof field === 'string' ? Buffer.byteLength(field, 'utf8') : (field as Buffer).length;
}

/** kafkajs' 32-bit zigzag (it overflows as kafkajs' does for lengths past 2^30). */
export function zigzag32(value: number): number {
  return (value << 1) ^ (value >> 31);
}

/** Bytes of an unsigned 32-bit varint. */
export function uvarint32Size(value: number): number {
  let bytes = 1;
  while ((value & 0xffffff80) !== 0) {
    bytes++;
    value >>>= 7;
  }
  return bytes;
}

/** Writes an unsigned 32-bit varint at `offset`; returns the offset after it. */
export function writeUVarInt32(buf: Buffer, offset: number, value: number): number {
  while ((value & 0xffffff80) !== 0) {
    buf[offset++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  buf[offset++] = value & 0x7f;
  return offset;
}

/**
 * A record's key or value: its zigzag length (-1 for null), then its `length` bytes (a string's
 * UTF-8, a Buffer's own). Returns the offset after it.
 */
export function writeVarIntBytes(buf: Buffer, offset: number, field: unknown, length: number): number {
  offset = writeUVarInt32(buf, offset, zigzag32(length));
  if (length < 0) return offset;
  if (typeof field === 'string') buf.write(field, offset, length, 'utf8');
  else (field as Buffer).copy(buf, offset);
  return offset + length;
}
