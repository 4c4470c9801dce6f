import type { Kafka, Producer } from 'kafkajs';
import { readTopicToEnd } from '../kafka/topic-reader.js';
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
    let latest: Checkpoint | undefined;
    await readTopicToEnd(this.kafka, this.topic, (message) => {
      if (message.key?.toString() === KEY && message.value)
        latest = JSON.parse(message.value.toString()) as Checkpoint;
    });
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
