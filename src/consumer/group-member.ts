import type { EventEmitter } from 'node:events';
import type { Consumer, ConsumerConfig, ConsumerRunConfig, EachBatchPayload } from 'kafkajs';
import type { CompiledConfig } from '../config/types.js';
import { errorKind, errorMessage } from '../core/errors.js';
import { pause } from '../core/retry.js';
import { classifyKafkaError } from '../kafka/kafka-errors.js';
import type { Logger } from '../observability/logger.js';
import { AppliedOffsets } from './applied-offsets.js';

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
  /**
   * Applies one batch, telling `applied` the last offset of each chunk once Redis has applied it
   * all; resolves true when the whole batch was applied, false when it stopped early (shutdown,
   * rebalance).
   */
  applyBatch: (payload: EachBatchPayload, applied: (offset: string) => void) => Promise<boolean>;
  /** Whether batches are still taken (not failed, not closing). */
  accepting: () => boolean;
  /** Told of an error the consumer cannot go on after (a bug, or one only an operator can fix). */
  fail: (err: unknown) => void;
}

/** A batch taken from kafkajs, from the moment it is handed over until its apply has ended. */
interface Handover {
  /** Settles once the partition's batch before it has been applied (or given up). */
  previous: Promise<void>;
  /** Settles this batch's turn, for the partition's next batch. */
  done: () => void;
}

/**
 * This process's membership of the consumer group: joins it, hands each fetched batch to the
 * apply, commits the offsets applied once a second and at shutdown, and tells whether Kafka answers.
 *
 * A partition's next batch is fetched while the one before it is applied: kafkajs fetches the next
 * batches only once every batch of the last fetch was handed back, so each batch is handed back
 * as soon as it is taken, and applied in the background, in offset order per partition, at most
 * `partitionsConcurrently` partitions at a time. The next batch of a partition waits until the one
 * before it is applied: one batch ahead, no more. Kafka's fetch position thus runs ahead of what is
 * applied, and only {@link AppliedOffsets} is committed.
 */
export class GroupMember {
  private running_ = false;
  private listening = false;
  private commitLoop: Promise<void> | undefined;
  /** When Kafka last answered a request of this member's (epoch ms). */
  private lastKafkaAnswerMs = Date.now();
  /** Batches in hand: handed over by kafkajs and not yet applied. */
  private inFlight = 0;
  /** Commits through the current group generation (any batch's payload will do). */
  private committer: Pick<EachBatchPayload, 'commitOffsetsIfNecessary'> | undefined;
  private readonly applied = new AppliedOffsets();
  /** Per partition (`topic|partition`): settles once its last batch handed over has been applied. */
  private readonly turns = new Map<string, Promise<void>>();
  /** Partitions being applied now, and the turns of those waiting for one of the slots. */
  private applying = 0;
  private readonly waitingForSlot: (() => void)[] = [];
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

  /** Commits the offsets applied since the last commit, if any. */
  async commitApplied(): Promise<void> {
    const committer = this.committer;
    if (!committer) return;
    const topics = this.applied.uncommitted();
    if (topics.length === 0) return;
    try {
      await committer.commitOffsetsIfNecessary({ topics });
      this.applied.committed(topics);
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
      this.applied.assign(memberAssignment);
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

  /**
   * Takes a batch from kafkajs: waits for the partition's previous batch to be applied, starts
   * applying this one in the background, and hands it back as fetched (resolved), so that kafkajs
   * fetches the next batches while this one is applied.
   */
  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    if (!this.opts.accepting()) return;
    this.lastKafkaAnswerMs = Date.now();
    this.committer = payload;
    const { batch } = payload;
    const last = batch.messages[batch.messages.length - 1];
    if (!last) return;
    const turn = this.takeTurn(`${batch.topic}|${batch.partition}`);
    this.inFlight++;
    await turn.previous;
    // A batch fetched before its partition was sent back to refetch a failed batch (a pending
    // seek), or fetched while the member was stopping, is not applied.
    if (!this.opts.accepting() || payload.isStale()) {
      this.inFlight--;
      turn.done();
      return;
    }
    payload.resolveOffset(last.offset);
    void this.applyInBackground(payload, turn);
  }

  private takeTurn(partitionKey: string): Handover {
    const previous = this.turns.get(partitionKey) ?? Promise.resolve();
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    this.turns.set(partitionKey, mine);
    return { previous, done };
  }

  private async applyInBackground(payload: EachBatchPayload, turn: Handover): Promise<void> {
    const { topic, partition } = payload.batch;
    try {
      await this.slot();
      let complete: boolean;
      try {
        complete = await this.opts.applyBatch(payload, (offset) =>
          this.applied.applied(topic, partition, offset),
        );
      } finally {
        this.releaseSlot();
      }
      if (!complete) this.refetch(payload, 'the batch stopped before its end');
    } catch (err) {
      const kind = errorKind(err);
      if (kind === 'outage' || kind === 'message') this.refetch(payload, errorMessage(err));
      else this.opts.fail(err);
    } finally {
      this.inFlight--;
      // The silence clock starts again once the fetcher can ask Kafka for more.
      this.lastKafkaAnswerMs = Date.now();
      turn.done();
    }
  }

  /**
   * A batch was not applied to its end (a rebalance, a Kafka outage while dead-lettering, a stop):
   * the partition is fetched again from its first change not applied, since kafkajs already fetches
   * past it. Everything before that offset was applied, so nothing is skipped; a batch already
   * fetched after it is stale and dropped. After a rebalance kafkajs starts from the committed
   * offsets anyway, and a seek of a partition the member no longer holds is ignored.
   */
  private refetch(payload: EachBatchPayload, reason: string): void {
    if (!this.opts.accepting() || !payload.isRunning()) return;
    const { topic, partition } = payload.batch;
    const first = payload.batch.messages[0];
    if (!first) return;
    const next = this.applied.nextOf(topic, partition);
    const from = next !== undefined && next > BigInt(first.offset) ? next.toString() : first.offset;
    this.opts.logger.info(
      { partition, offset: from, reason },
      'fetching the partition again from its first change not applied',
    );
    try {
      this.opts.consumer.seek({ topic, partition, offset: from });
    } catch (err) {
      // The consumer is restarting: it starts again from the committed offsets.
      this.opts.logger.debug({ err: errorMessage(err) }, 'seek skipped');
    }
  }

  /** Waits for one of the `partitionsConcurrently` slots to apply a batch. */
  private async slot(): Promise<void> {
    if (this.applying < this.opts.config.consumer.partitionsConcurrently) {
      this.applying++;
      return;
    }
    await new Promise<void>((resolve) => this.waitingForSlot.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.waitingForSlot.shift();
    // The slot passes straight to a waiting batch: `applying` counts it still.
    if (next) next();
    else this.applying--;
  }

  private async runCommits(): Promise<void> {
    while (await pause(COMMIT_INTERVAL_MS, this.opts.signal)) await this.commitApplied();
  }
}
