import type { Kafka, Producer } from 'kafkajs';
import { CachesyncError } from '../core/errors.js';
import { readTopicToEnd } from '../kafka/topic-reader.js';
import type { BinlogPosition } from './binlog-source.js';

/** A resume point stored after Kafka acknowledged every change before it. */
export interface Checkpoint extends BinlogPosition {
  /** Commit time of the last transaction before the point, epoch ms. */
  commitTsMs: number;
  /** When it was stored, epoch ms. */
  savedAtMs: number;
  /**
   * Source epoch of the changes read up to here (see version.ts), so a replay from this point
   * reproduces their versions. 0 in a checkpoint stored before epochs existed.
   */
  epoch: number;
  /** Server the position belongs to (`mariadb:<server_id>`, `mysql:<server_uuid>`); absent in old checkpoints. */
  server?: string;
}

/** A stored checkpoint that cannot be used: resuming from it could skip or repeat changes silently. */
export class MalformedCheckpointError extends CachesyncError {
  constructor(topic: string, problem: string) {
    super(
      `the checkpoint stored on ${topic} is malformed (${problem}). cachesync will not guess where to ` +
        `resume. To recover: run \`cachesync new-epoch --start <position>\` to store a new checkpoint, ` +
        `or delete the topic ${topic} so the tailer starts at source.start.`,
      { retriable: false },
    );
  }
}

/** Checks a stored checkpoint's shape; `epoch` defaults to 0 for checkpoints older than epochs. */
export function parseCheckpoint(text: string, topic: string): Checkpoint {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new MalformedCheckpointError(topic, 'not JSON');
  }
  if (typeof value !== 'object' || value === null) throw new MalformedCheckpointError(topic, 'not an object');
  const cp = value as Record<string, unknown>;
  const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (typeof cp.file !== 'string' || !/\.\d+$/.test(cp.file)) {
    throw new MalformedCheckpointError(topic, `file ${JSON.stringify(cp.file)} is not a binlog file name`);
  }
  if (!isCount(cp.pos))
    throw new MalformedCheckpointError(topic, `pos ${JSON.stringify(cp.pos)} is not a position`);
  if (cp.gtidSet !== undefined && typeof cp.gtidSet !== 'string') {
    throw new MalformedCheckpointError(topic, 'gtidSet is not a string');
  }
  if (cp.epoch !== undefined && !isCount(cp.epoch)) {
    throw new MalformedCheckpointError(topic, `epoch ${JSON.stringify(cp.epoch)} is not a whole number`);
  }
  if (cp.server !== undefined && typeof cp.server !== 'string') {
    throw new MalformedCheckpointError(topic, 'server is not a string');
  }
  return {
    file: cp.file,
    pos: cp.pos as number,
    ...(typeof cp.gtidSet === 'string' && cp.gtidSet !== '' ? { gtidSet: cp.gtidSet } : {}),
    commitTsMs: typeof cp.commitTsMs === 'number' ? cp.commitTsMs : 0,
    savedAtMs: typeof cp.savedAtMs === 'number' ? cp.savedAtMs : 0,
    epoch: (cp.epoch as number | undefined) ?? 0,
    ...(typeof cp.server === 'string' ? { server: cp.server } : {}),
  };
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
    let text: string | undefined;
    await readTopicToEnd(this.kafka, this.topic, (message) => {
      if (message.key?.toString() === KEY && message.value) text = message.value.toString();
    });
    return text === undefined ? undefined : parseCheckpoint(text, this.topic);
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
