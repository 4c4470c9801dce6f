import type { EventEmitter } from 'node:events';
import type { Consumer, ConsumerConfig, ConsumerRunConfig, EachBatchPayload } from 'kafkajs';
import type { CompiledConfig } from '../config/types.js';
import { errorKind } from '../core/errors.js';
import { pause } from '../core/retry.js';
import { classifyKafkaError } from '../kafka/kafka-errors.js';
import type { Logger } from '../observability/logger.js';

/** What a group member reports (the metrics module turns it into series). */
export interface GroupEvents {
  /** The member joined the group (again): it now holds `partitions` partitions, and only those. */
  joined: [{ partitions: number; joinMs: number }];
}

const COMMIT_INTERVAL_MS = 1000;

/** The kafkajs consumer settings of a member of the consumer group. */
export function memberConfig(config: Pick<CompiledConfig, 'kafka' | 'consumer'>): ConsumerConfig {
  const c = config.consumer;
  return {
    groupId: config.kafka.groupId,
    allowAutoTopicCreation: false,
    // A crashed member's partitions move once its session expires: as low as the broker allows
    // (group.min.session.timeout.ms) is what bounds recovery after a kill.
    sessionTimeout: c.sessionTimeoutMs,
    heartbeatInterval: c.heartbeatIntervalMs,
    rebalanceTimeout: 30_000,
    // An idle member still hears from Kafka every second, so a frozen broker is noticed.
    maxWaitTimeInMs: 1000,
    // What one fetch may bring in, decoded into memory before it is applied.
    maxBytes: c.maxFetchBytes,
    maxBytesPerPartition: Math.max(64 * 1024, Math.floor(c.maxFetchBytes / 4)),
  };
}

export interface GroupMemberOptions {
  /** A connected kafkajs consumer made with {@link memberConfig}. */
  consumer: Consumer;
  config: Pick<CompiledConfig, 'kafka' | 'consumer'>;
  logger: Logger;
  events: Pick<EventEmitter<GroupEvents>, 'emit'>;
  /** Aborted at close: the commit loop ends, and Kafka's silence no longer counts. */
  signal: AbortSignal;
  /** Kafka silent for longer than this, while no batch is in hand, is taken as down. */
  stallMs: number;
  /** Applies one batch, resolving the offset of each chunk it applied. */
  applyBatch: (payload: EachBatchPayload) => Promise<void>;
  /** Whether batches are still taken (not failed, not closing). */
  accepting: () => boolean;
  /** Told of an error the consumer cannot go on after (a bug, or one only an operator can fix). */
  fail: (err: unknown) => void;
}

/**
 * This process's membership of the consumer group: joins it, hands each fetched batch to the
 * apply, commits the offsets applied once a second and at shutdown, and tells whether Kafka answers.
 */
export class GroupMember {
  private running_ = false;
  private listening = false;
  private commitLoop: Promise<void> | undefined;
  /** When Kafka last answered a request of this member's (epoch ms). */
  private lastKafkaAnswerMs = Date.now();
  /** Batches being applied right now. */
  private inFlight = 0;
  /** Commits through the current group generation (any batch's payload will do). */
  private committer: Pick<EachBatchPayload, 'uncommittedOffsets' | 'commitOffsetsIfNecessary'> | undefined;
  private readonly createdAtMs = Date.now();

  constructor(private readonly opts: GroupMemberOptions) {}

  /** Whether the member has joined the run loop (after a successful run()). */
  get running(): boolean {
    return this.running_;
  }

  /** Kafka has been silent past the stall limit while no batch was in hand (the fetcher waits for one). */
  get kafkaSilent(): boolean {
    const idle = this.inFlight === 0;
    return (
      this.running_ &&
      !this.opts.signal.aborted &&
      idle &&
      Date.now() - this.lastKafkaAnswerMs > this.opts.stallMs
    );
  }

  /**
   * Subscribes and starts fetching. Subscribing reads the topic's metadata: right after its creation
   * that can fail for a moment (unknown topic, no leader yet); the caller retries run() then.
   */
  async run(): Promise<void> {
    this.listen();
    const { consumer, config } = this.opts;
    await consumer.subscribe({ topic: config.kafka.topic, fromBeginning: true });
    await consumer.run(this.runConfig());
    this.lastKafkaAnswerMs = Date.now();
    this.running_ = true;
    this.commitLoop = this.runCommits();
  }

  /** Settles once no batch is being applied. */
  async idle(): Promise<void> {
    while (this.inFlight > 0) await pause(20);
  }

  /** Settles once the commit loop has ended (the signal aborted), or at once if it never started. */
  stopped(): Promise<void> {
    return this.commitLoop ?? Promise.resolve();
  }

  /** Commits the offsets resolved since the last commit, if any. */
  async commitApplied(): Promise<void> {
    const committer = this.committer;
    if (!committer) return;
    const offsets = committer.uncommittedOffsets();
    if (offsets.topics.length === 0) return;
    try {
      await committer.commitOffsetsIfNecessary(offsets);
    } catch (err) {
      // A rebalance took the partitions: their next owner repeats what was not committed.
      this.opts.logger.debug({ err: (err as Error).message }, 'offset commit skipped');
    }
  }

  /** Leaves the group. */
  leave(): Promise<void> {
    return this.opts.consumer.disconnect();
  }

  private listen(): void {
    if (this.listening) return;
    this.listening = true;
    const { consumer, logger } = this.opts;
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      const { duration, memberAssignment } = e.payload as {
        duration: number;
        memberAssignment: Record<string, number[]>;
      };
      const partitions = Object.values(memberAssignment).reduce((n, p) => n + p.length, 0);
      this.opts.events.emit('joined', { partitions, joinMs: duration });
      // Where the seconds of a restart go: the join waits out a crashed member's session.
      logger.info(
        { joinMs: duration, sinceStartMs: Date.now() - this.createdAtMs, partitions },
        'joined the consumer group',
      );
    });
    consumer.on(consumer.events.CRASH, (e) => {
      const { error, restart } = e.payload as { error: Error; restart: boolean };
      logger.error({ err: error.message, restart }, 'consumer crashed');
      if (!restart && !this.opts.signal.aborted)
        this.opts.fail(classifyKafkaError(error, 'the consumer group'));
    });
    consumer.on(consumer.events.REQUEST, () => {
      this.lastKafkaAnswerMs = Date.now();
    });
  }

  private runConfig(): ConsumerRunConfig {
    return {
      eachBatchAutoResolve: false,
      // Offsets of applied changes are committed once a second (and at shutdown), not after every
      // batch as kafkajs's autoCommit does: a commit per batch sits on the latency path, since the
      // next fetch waits for it. A crash or rebalance repeats at most a second of changes, which
      // versions make harmless.
      autoCommit: false,
      autoCommitInterval: COMMIT_INTERVAL_MS,
      partitionsConsumedConcurrently: this.opts.config.consumer.partitionsConcurrently,
      eachBatch: (payload) => this.handleBatch(payload),
    };
  }

  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    if (!this.opts.accepting()) return;
    this.lastKafkaAnswerMs = Date.now();
    this.inFlight++;
    this.committer = payload;
    try {
      await this.opts.applyBatch(payload);
    } catch (err) {
      const kind = errorKind(err);
      // Outages (Kafka going away mid-batch) are kafkajs's to ride out: it restarts the member.
      if (kind === 'outage' || kind === 'message') throw err;
      this.opts.fail(err);
    } finally {
      this.inFlight--;
      // The silence clock starts again once the fetcher can ask Kafka for more.
      this.lastKafkaAnswerMs = Date.now();
    }
  }

  private async runCommits(): Promise<void> {
    while (await pause(COMMIT_INTERVAL_MS, this.opts.signal)) await this.commitApplied();
  }
}
