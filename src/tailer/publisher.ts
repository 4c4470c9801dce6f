import type { Message, Producer } from 'kafkajs';
import { encodeChangeEvent, type ChangeEvent } from '../core/change-event.js';
import type { Row } from '../core/key-template.js';
import { errorKind } from '../core/errors.js';
import { retry, type BackoffPolicy } from '../core/retry.js';
import { DLQ_HEADERS } from '../consumer/dead-letters.js';
import { classifyKafkaError, isTooLarge, needsNewProducer } from '../kafka/kafka-errors.js';
import { CompressionTypes } from '../kafka/kafka-client.js';
import type { Logger } from '../observability/logger.js';
import type { QueuedChange } from './change-queue.js';

export interface PublisherEvents {
  /** One produce request ended, acknowledged (`ok`) or failed, after `seconds`. */
  publishAttempt: [{ ok: boolean; seconds: number }];
  /** A batch of `messages` messages was acknowledged. */
  published: [{ messages: number }];
  /** A failed produce request is retried. */
  publishRetry: [];
  /** A change too large for the broker was dead-lettered (and its keys invalidated). */
  deadLettered: [{ table: string; errorClass: string }];
}

/**
 * A produce request with less change-event JSON than this goes uncompressed: gzip's set-up per
 * request (allocating and initialising a deflate stream) costs more than it saves on a few
 * events, and the steady trickle of single-row transactions is made of such requests.
 */
export const MIN_COMPRESSED_BYTES = 8 * 1024;

export interface PublisherOptions {
  producer: Producer;
  /** A fresh idempotent producer, for when the broker lost this one's sequence. */
  newProducer: () => Producer;
  topic: string;
  dlqTopic: string;
  partitions: number;
  compression: 'gzip' | 'none';
  /** Per mapped table, the columns its keys are rendered from (what an oversized change keeps). */
  keyColumns: ReadonlyMap<string, ReadonlySet<string>>;
  backoff: BackoffPolicy;
  logger: Logger;
  events: { emit<K extends keyof PublisherEvents>(name: K, ...args: PublisherEvents[K]): unknown };
  /** True once the tailer gave up on a graceful stop: sends stop retrying. */
  abandoned: () => boolean;
}

/**
 * Sends batches of changes to the change topic until Kafka acknowledges them, one produce request
 * at a time (the idempotent producer keeps their order). A Kafka outage holds the caller, and so
 * pauses the binlog; a batch the broker finds too large is split; a single change too large for
 * it is dead-lettered and replaced by an event that invalidates its keys.
 */
export class Publisher {
  private producer: Producer;
  /** When the produce request in flight was sent (epoch ms), if one is. */
  sendingSinceMs: number | undefined;

  constructor(private readonly opts: PublisherOptions) {
    this.producer = opts.producer;
  }

  /** Sends until Kafka acknowledges every change (or the tailer is abandoned). */
  async send(changes: QueuedChange[]): Promise<void> {
    try {
      await this.sendBatch(changes);
    } catch (err) {
      if (errorKind(err) !== 'message' || !isTooLarge((err as Error).cause)) throw err;
      if (changes.length > 1) {
        const half = Math.ceil(changes.length / 2);
        await this.send(changes.slice(0, half));
        await this.send(changes.slice(half));
        return;
      }
      await this.replaceOversized(changes[0]!, err as Error);
    }
  }

  async disconnect(): Promise<void> {
    await this.producer.disconnect();
  }

  private async sendBatch(changes: QueuedChange[]): Promise<void> {
    const { topic, partitions } = this.opts;
    let messages: Message[] = changes;
    if (changes.some((c) => c.op === 't')) {
      // Every partition must see a table-level change after the rows it holds, so it goes to all.
      messages = changes.flatMap<Message>((c) =>
        c.op === 't'
          ? Array.from({ length: partitions }, (_, partition) => ({ key: c.key, value: c.value, partition }))
          : [c],
      );
    }
    let bytes = 0;
    for (const m of messages) bytes += m.value?.length ?? 0;
    const compression =
      this.opts.compression === 'gzip' && bytes >= MIN_COMPRESSED_BYTES
        ? CompressionTypes.GZIP
        : CompressionTypes.None;
    await retry(
      async () => {
        const started = performance.now();
        this.sendingSinceMs = Date.now();
        let ok = false;
        try {
          await this.producer.send({ topic, messages, acks: -1, compression });
          ok = true;
        } catch (err) {
          if (needsNewProducer(err)) await this.replaceProducer(err);
          throw classifyKafkaError(err, `publishing to ${topic}`);
        } finally {
          this.sendingSinceMs = undefined;
          this.opts.events.emit('publishAttempt', { ok, seconds: (performance.now() - started) / 1000 });
        }
      },
      this.opts.backoff,
      {
        aborted: this.opts.abandoned,
        onRetry: (err, attempt, delayMs) => {
          this.opts.events.emit('publishRetry');
          // Once when it starts, then now and then: an outage is one event, not one per retry.
          if (attempt === 1 || attempt % 20 === 0)
            this.opts.logger.warn(
              { err: errorText(err), attempt, delayMs, messages: messages.length },
              'publish failed; retrying',
            );
        },
      },
    );
    this.opts.events.emit('published', { messages: messages.length });
  }

  /**
   * A change larger than the broker accepts: its full image cannot be published. The change topic
   * gets the same change with only the columns its keys are rendered from, marked `oversized`, so
   * every consumer deletes its keys (through the version guards) instead of writing them; the DLQ
   * gets that event with the reason, for the operator.
   */
  private async replaceOversized(change: QueuedChange, err: Error): Promise<void> {
    const event = JSON.parse(change.value) as ChangeEvent;
    const slim = oversizedEvent(event, this.opts.keyColumns.get(change.table) ?? new Set());
    const value = encodeChangeEvent(slim);
    const reason = `the change is ${change.value.length} bytes, more than the broker accepts (${err.message}); its keys are invalidated instead`;
    this.opts.logger.error(
      { table: change.table, key: change.key, bytes: change.value.length, gtid: event.source.gtid },
      'change too large for Kafka; dead-lettered, its keys invalidated',
    );
    const now = new Date().toISOString();
    await this.sendRaw(this.opts.dlqTopic, {
      key: change.key,
      value,
      headers: {
        [DLQ_HEADERS.error]: reason,
        [DLQ_HEADERS.errorClass]: 'MessageTooLarge',
        [DLQ_HEADERS.attempts]: '1',
        [DLQ_HEADERS.topic]: this.opts.topic,
        [DLQ_HEADERS.firstFailure]: now,
        [DLQ_HEADERS.lastFailure]: now,
      },
    });
    this.opts.events.emit('deadLettered', { table: change.table, errorClass: 'MessageTooLarge' });
    await this.sendBatch([{ ...change, value }]);
  }

  /** Sends one message to another topic (the DLQ), retrying outages like the change topic. */
  private async sendRaw(topic: string, message: Message): Promise<void> {
    await retry(
      async () => {
        try {
          await this.producer.send({ topic, messages: [message], acks: -1 });
        } catch (err) {
          if (needsNewProducer(err)) await this.replaceProducer(err);
          throw classifyKafkaError(err, `publishing to ${topic}`);
        }
      },
      this.opts.backoff,
      { aborted: this.opts.abandoned },
    );
  }

  /**
   * The idempotent producer's sequence no longer matches the broker's (OUT_OF_ORDER_SEQUENCE_NUMBER,
   * UNKNOWN_PRODUCER_ID): only a new producer, with a new id, can send again. Resending the batch
   * may duplicate it, which is harmless downstream.
   */
  private async replaceProducer(err: unknown): Promise<void> {
    this.opts.logger.warn({ err: errorText(err) }, 'the idempotent producer lost its sequence; replacing it');
    const old = this.producer;
    this.producer = this.opts.newProducer();
    await old.disconnect().catch(() => undefined);
    await this.producer.connect();
  }
}

/**
 * The change with only its primary key and the columns its keys are rendered from, marked
 * `oversized`: enough for a consumer to delete every key the full change would have touched.
 */
function oversizedEvent(event: ChangeEvent, columns: ReadonlySet<string>): ChangeEvent {
  const keep = (row: Row | null): Row | null => {
    if (!row) return row;
    const out: Record<string, unknown> = {};
    for (const c of [...Object.keys(event.pk), ...columns]) if (c in row) out[c] = row[c];
    return out;
  };
  return { ...event, before: keep(event.before), after: keep(event.after), oversized: true };
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
