import { gunzipSync, gzipSync, constants as zlibConstants } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { CompressionTypes, kafkajs, outputChunk } from '../../src/kafka/kafka-client.js';

type Codec = {
  compress(encoder: { buffer: Buffer }): Promise<Buffer>;
  decompress(buffer: Buffer): Promise<Buffer>;
};

const codec = (kafkajs.CompressionCodecs[CompressionTypes.GZIP] as () => Codec)();

/** Change-event-like JSON, `bytes` long. */
function events(bytes: number): Buffer {
  const parts: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const part = `{"op":"c","pk":{"id":${i}},"after":{"id":${i},"name":"item ${(i * 7919) % 10007} é"}}`;
    parts.push(part);
    size += Buffer.byteLength(part);
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

describe('gzip codec', () => {
  it('compresses at level 1 to the bytes zlib makes, and decompresses any size back', async () => {
    for (const bytes of [0, 1, 300, 16_384, 16_385, 200_000, 3_000_000]) {
      const input = events(bytes);
      const compressed = await codec.compress({ buffer: input });
      expect(compressed.equals(gzipSync(input, { level: zlibConstants.Z_BEST_SPEED }))).toBe(true);
      expect(gunzipSync(compressed).equals(input)).toBe(true);
      expect((await codec.decompress(compressed)).equals(input)).toBe(true);
      // What another producer sent, at another level, reads the same.
      expect((await codec.decompress(gzipSync(input, { level: 9 }))).equals(input)).toBe(true);
    }
  });

  it('sizes zlib output chunks to the expected output, within bounds', () => {
    expect(outputChunk(0)).toBe(16 * 1024);
    expect(outputChunk(100)).toBe(16 * 1024);
    expect(outputChunk(70_000)).toBe(128 * 1024);
    expect(outputChunk(131_072)).toBe(128 * 1024);
    expect(outputChunk(50_000_000)).toBe(1024 * 1024);
  });
});
