import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Consumer, Kafka } from 'kafkajs';
import type { KafkaConfig } from '../config/types.js';
import { binlogFileIndex } from '../core/version.js';
import { parseCheckpoint, type Checkpoint } from '../tailer/checkpoint-store.js';

/** A binlog position: file and offset. */
export interface Position {
  file: string;
  pos: number;
}

/**
 * Tells when the running pipeline has applied everything before a binlog position: the tailer's
 * checkpoint (everything before it is on the change topic) has passed it, and then the consumer
 * group has committed, on every partition, the offsets the topic had at that moment (a consumer
 * commits only what Redis has applied). Follows the checkpoint topic live, through one throwaway
 * consumer group deleted on close.
 */
export class PipelineWatch {
  private latest: Checkpoint | undefined;
  private consumer: Consumer | undefined;
  private readonly groupId = `cachesync-watch-${randomBytes(6).toString('hex')}`;

  constructor(
    private readonly kafka: Kafka,
    private readonly config: KafkaConfig,
  ) {}

  /** The last checkpoint seen (its epoch orders the source server). */
  get checkpoint(): Checkpoint | undefined {
    return this.latest;
  }

  /** Starts following the checkpoint topic; resolves once what it held was read (or it is empty). */
  async start(timeoutMs = 30_000): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    let end = 0;
    try {
      const topics = await admin.listTopics();
      if (!topics.includes(this.config.checkpointTopic)) return;
      const offsets = await admin.fetchTopicOffsets(this.config.checkpointTopic);
      end = Number(offsets[0]?.high ?? 0);
    } finally {
      await admin.disconnect();
    }
    const consumer = this.kafka.consumer({ groupId: this.groupId, allowAutoTopicCreation: false });
    this.consumer = consumer;
    await consumer.connect();
    await consumer.subscribe({ topic: this.config.checkpointTopic, fromBeginning: true });
    let readTo = -1;
    await consumer.run({
      autoCommit: false,
      eachMessage: ({ message }) => {
        try {
          if (message.value)
            this.latest = parseCheckpoint(message.value.toString(), this.config.checkpointTopic);
        } catch {
          // A malformed checkpoint (the tailer refuses it too) tells nothing about progress.
        }
        readTo = Number(message.offset);
        return Promise.resolve();
      },
    });
    const deadline = Date.now() + timeoutMs;
    while (end > 0 && readTo < end - 1 && Date.now() < deadline) await sleep(50);
  }

  /**
   * Waits until the pipeline has applied every change before `position`; false if that did not
   * happen within `timeoutMs` (the pipeline is not running, or far behind).
   */
  async waitPast(position: Position, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.latest || comparePositions(this.latest, position) < 0) {
      if (Date.now() >= deadline) return false;
      await sleep(100);
    }
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const ends = await admin.fetchTopicOffsets(this.config.topic);
      for (;;) {
        const [committed] = await admin.fetchOffsets({
          groupId: this.config.groupId,
          topics: [this.config.topic],
        });
        const done = new Map((committed?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
        const behind = ends.filter((e) => {
          const at = done.get(e.partition) ?? -1;
          return (at < 0 ? Number(e.low) : at) < Number(e.high);
        });
        if (behind.length === 0) return true;
        if (Date.now() >= deadline) return false;
        await sleep(200);
      }
    } finally {
      await admin.disconnect();
    }
  }

  async close(): Promise<void> {
    if (!this.consumer) return;
    await this.consumer.disconnect().catch(() => undefined);
    const admin = this.kafka.admin();
    await admin.connect();
    await admin.deleteGroups([this.groupId]).catch(() => undefined);
    await admin.disconnect();
  }
}

/** Orders two positions of one server's binlog. */
export function comparePositions(a: Position, b: Position): number {
  return binlogFileIndex(a.file) - binlogFileIndex(b.file) || a.pos - b.pos;
}
