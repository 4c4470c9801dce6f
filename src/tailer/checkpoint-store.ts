import { randomBytes } from 'node:crypto';
import type { Kafka, Producer } from 'kafkajs';
import type { BinlogPosition } from './binlog-source.js';

/** A resume point stored after Kafka acknowledged every change before it. */
export interface Checkpoint extends BinlogPosition {
  /** Commit time of the last transaction before the point, epoch ms. */
  commitTsMs: number;
  /** When it was stored, epoch ms. */
  savedAtMs: number;
}

/** Durable storage of the tailer's checkpoint. */
export interface CheckpointStore {
  load(): Promise<Checkpoint | undefined>;
  save(checkpoint: Checkpoint): Promise<void>;
  close(): Promise<void>;
}

const KEY = 'checkpoint';

/**
 * Keeps the checkpoint in a compacted single-partition Kafka topic, so it lives as long and as
 * safely as the change topic, wherever the tailer's pod runs. One topic per source.
 */
export class KafkaCheckpointStore implements CheckpointStore {
  private producer: Producer | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly topic: string,
  ) {}

  async load(): Promise<Checkpoint | undefined> {
    const admin = this.kafka.admin();
    await admin.connect();
    let high: number;
    try {
      const offsets = await admin.fetchTopicOffsets(this.topic);
      high = Number(offsets[0]?.high ?? 0);
      const low = Number(offsets[0]?.low ?? 0);
      if (high <= low) return undefined;
    } finally {
      await admin.disconnect();
    }
    // kafkajs reads only through a group: a throwaway one, reading the partition to its end.
    const groupId = `cachesync-checkpoint-reader-${randomBytes(6).toString('hex')}`;
    const consumer = this.kafka.consumer({ groupId, allowAutoTopicCreation: false });
    let latest: Checkpoint | undefined;
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: this.topic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        consumer
          .run({
            autoCommit: false,
            eachMessage: ({ message }) => {
              if (message.key?.toString() === KEY && message.value) {
                latest = JSON.parse(message.value.toString()) as Checkpoint;
              }
              if (Number(message.offset) >= high - 1) resolve();
              return Promise.resolve();
            },
          })
          .catch(reject);
      });
    } finally {
      await consumer.disconnect();
      const admin2 = this.kafka.admin();
      await admin2.connect();
      await admin2.deleteGroups([groupId]).catch(() => undefined);
      await admin2.disconnect();
    }
    return latest;
  }

  async save(checkpoint: Checkpoint): Promise<void> {
    if (!this.producer) {
      this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await this.producer.connect();
    }
    await this.producer.send({
      topic: this.topic,
      messages: [{ key: KEY, value: JSON.stringify(checkpoint) }],
    });
  }

  async close(): Promise<void> {
    await this.producer?.disconnect();
    this.producer = undefined;
  }
}
