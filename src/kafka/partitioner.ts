/**
 * Kafka's default partitioner for keyed messages, as the Java client and kafkajs'
 * `Partitioners.DefaultPartitioner` compute it: murmur2 of the key's UTF-8 bytes, made positive,
 * modulo the partition count. So a key lands where every other Kafka client would put it, and where
 * earlier versions of cachesync (which let kafkajs choose) put it.
 *
 * It is computed here once per change, with 32-bit integer arithmetic; the message then names its
 * partition and kafkajs does not hash again (its murmur2 works on 64-bit Long objects, several per
 * key byte group, a visible share of the tailer's CPU).
 */
export function partitionFor(key: string, partitions: number): number {
  return (murmur2(key) & 0x7fffffff) % partitions;
}

const SEED = 0x9747b28c;
const M = 0x5bd1e995;
/** Keys are encoded into this buffer; a longer key gets one of its own. */
let scratch = Buffer.allocUnsafe(1024);

/** Kafka's murmur2 (seed 0x9747b28c) of the UTF-8 bytes of `key`, as a signed 32-bit integer. */
export function murmur2(key: string): number {
  if (key.length * 3 > scratch.length) scratch = Buffer.allocUnsafe(key.length * 3);
  const data = scratch;
  const length = data.write(key, 0, 'utf8');
  let h = SEED ^ length;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k = data[i4]! | (data[i4 + 1]! << 8) | (data[i4 + 2]! << 16) | (data[i4 + 3]! << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M) ^ k;
  }
  const rest = length & ~3;
  const tail = length & 3;
  if (tail === 3) h ^= data[rest + 2]! << 16;
  if (tail >= 2) h ^= data[rest + 1]! << 8;
  if (tail >= 1) h = Math.imul(h ^ data[rest]!, M);
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}
