import { EventEmitter } from 'node:events';
import type { Consumer, Kafka, Producer } from 'kafkajs';
import type { Cluster, Redis } from 'ioredis';
import type { CompiledConfig } from '../config/types.js';
import { withDeadline } from '../core/deadline.js';
import { describeBug, errorMessage, isProgrammerError } from '../core/errors.js';
import { pause } from '../core/retry.js';
import { metaPrefixFor } from '../core/version-guard.js';
import { createKafka, ensureTopics } from '../kafka/kafka-client.js';
import { guardLifetimeMs } from '../kafka/retention.js';
import type { Logger } from '../observability/logger.js';
import { observeConsumer, type Metrics } from '../observability/metrics.js';
import { Auditor, type AuditEvents } from './audit.js';
import { DeadLetterWriter } from './dead-letters.js';
import { GroupMember, memberConfig, type GroupEvents } from './group-member.js';
import { PartitionApplier, type ApplyEvents } from './partition-applier.js';
import { RedeleteScheduler, type RedeleteEvents } from './redelete-scheduler.js';
import { RedisApplier } from './redis-applier.js';
import { createRedis } from './redis-client.js';
import { registerSource } from './source-registry.js';

export type ConsumerState = 'starting' | 'streaming' | 'paused' | 'stopping' | 'stopped' | 'failed';

export interface ChangeConsumerOptions {
  config: Pick<CompiledConfig, 'kafka' | 'redis' | 'consumer' | 'mappings' | 'source' | 'audit'>;
  logger: Logger;
  /** Where the consumer's events are counted (see `observeConsumer`). */
  metrics: Metrics;
  kafka?: Kafka;
  redis?: Redis | Cluster;
  /** Messages applied per Redis round of a batch. Default 500. */
  chunkSize?: number;
  /** Delay between runs of due delayed deletes. Default 50 ms. */
  redeletePollMs?: number;
  /**
   * A server that has not answered for this long is taken as down (frozen, partitioned): the
   * consumer reports itself paused, naming it. Default 3 s.
   */
  stallMs?: number;
}

/** Which server a paused consumer waits for. */
export type WaitingOn = 'redis' | 'kafka';

/**
 * Everything a {@link ChangeConsumer} emits: its lifecycle, and what its parts (group membership,
 * per-partition apply, delayed deletes, audit) count, once per chunk or round rather than per message.
 */
export interface ConsumerEvents extends GroupEvents, ApplyEvents, RedeleteEvents, AuditEvents {
  /** The lifecycle state changed. */
  state: [ConsumerState];
  /** Whether applying is paused by Redis (down, silent, or failing writes); sent at every re-evaluation. */
  paused: [boolean];
}

/** How often Redis is pinged while nothing else shows it answers. */
const PROBE_INTERVAL_MS = 1000;

/**
 * A member of the consumer group: applies each partition's change events to Redis in offset order,
 * commits an offset only once Redis has applied everything before it, retries what fails, pauses
 * through a Redis outage, and dead-letters a message that keeps failing because of itself.
 *
 * The coordinator of its parts: {@link GroupMember} (the group, commits, Kafka's liveness),
 * {@link PartitionApplier} (chunks to Redis, outages, dead letters), {@link RedeleteScheduler} and
 * the {@link Auditor}. It owns the lifecycle state and Redis's liveness.
 */
export class ChangeConsumer extends EventEmitter<ConsumerEvents> {
  private state_: ConsumerState = 'starting';
  private closing = false;
  private closed: Promise<void> | undefined;
  /** Aborted by close(): every backoff and wait ends at once. */
  private readonly stop = new AbortController();
  /** Why the consumer failed for good, when it did. */
  failure: unknown;
  private readonly log: Logger;
  private readonly stallMs: number;
  private readonly member: GroupMember;
  private readonly partitions: PartitionApplier;
  private readonly redeletes: RedeleteScheduler;
  private readonly auditor: Auditor;
  private probeLoop: Promise<void> | undefined;
  /** Redis answered its last ping within the deadline. */
  private redisAnswers = true;
  private redisConnected: boolean;

  private constructor(
    private readonly opts: ChangeConsumerOptions,
    consumer: Consumer,
    private readonly producer: Producer,
    private readonly redis: Redis | Cluster,
    private readonly ownsRedis: boolean,
    guardTtlMs: number | null,
  ) {
    super();
    observeConsumer(this, opts.metrics);
    const { config } = opts;
    this.log = opts.logger.child({ component: 'consumer' });
    const c = config.consumer;
    const retryPolicy = { initialMs: c.retryInitialMs, maxMs: c.retryMaxMs };
    this.stallMs = opts.stallMs ?? 3000;
    const signal = this.stop.signal;
    const fail = (err: unknown) => this.failWith(err);
    const applier = new RedisApplier(redis, {
      versionTtlMs: guardTtlMs,
      metaPrefix: metaPrefixFor(config.source?.name),
    });
    this.log.info(
      { guardTtlMs: guardTtlMs ?? 'forever' },
      'version guards last as long as an older change can still arrive',
    );
    this.auditor = new Auditor({ config, redis, events: this, logger: opts.logger });
    this.redeletes = new RedeleteScheduler({
      applier,
      maxPending: c.maxPendingRedeletes,
      pollMs: opts.redeletePollMs ?? 50,
      retryPolicy,
      signal,
      logger: this.log,
      events: this,
      fail,
    });
    this.partitions = new PartitionApplier({
      config,
      logger: this.log,
      events: this,
      applier,
      redeletes: this.redeletes,
      deadLetters: new DeadLetterWriter(producer, config.kafka.dlqTopic),
      auditor: this.auditor,
      chunkSize: opts.chunkSize ?? 500,
      retryPolicy,
      signal,
      onOutage: () => this.refreshState(),
    });
    this.member = new GroupMember({
      consumer,
      config,
      logger: this.log,
      events: this,
      signal,
      stallMs: this.stallMs,
      applyBatch: (payload) => this.partitions.applyBatch(payload),
      accepting: () => this.failure === undefined && !this.closing,
      fail,
    });
    // Readiness follows the Redis connection too, not only failed writes: with no traffic a Redis
    // outage would otherwise go unnoticed.
    this.redisConnected = redis.status === 'ready';
    redis.on('ready', () => {
      this.redisConnected = true;
      this.refreshState();
    });
    redis.on('close', () => {
      this.redisConnected = false;
      this.refreshState();
    });
  }

  static async create(opts: ChangeConsumerOptions): Promise<ChangeConsumer> {
    const kafka = opts.kafka ?? createKafka(opts.config.kafka, opts.logger, '-consumer');
    await ensureTopics(kafka, opts.config.kafka);
    // A crashed member is noticed within the session timeout; its partitions then move on.
    const consumer = kafka.consumer(memberConfig(opts.config));
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    const guardTtlMs = await guardLifetimeMs(kafka, opts.config.kafka, opts.config.consumer.guardTtlMs);
    const redis = opts.redis ?? createRedis(opts.config.redis);
    await Promise.all([consumer.connect(), producer.connect()]);
    return new ChangeConsumer(opts, consumer, producer, redis, opts.redis === undefined, guardTtlMs);
  }

  get state(): ConsumerState {
    return this.state_;
  }

  /**
   * The server a paused or stalled consumer waits for, if any: Redis not connected or not answering
   * its pings, or Kafka silent for longer than the stall limit (a member hears from it every second).
   */
  get waitingOn(): WaitingOn | undefined {
    if (!this.redisConnected || !this.redisAnswers || this.partitions.inOutage) return 'redis';
    if (this.member.kafkaSilent) return 'kafka';
    return undefined;
  }

  /** Ready: streaming, and no server it depends on has gone silent. */
  get ready(): boolean {
    return this.state_ === 'streaming' && this.waitingOn === undefined;
  }

  /** Joins the group and applies changes until close(). */
  async run(): Promise<void> {
    if (this.member.running) return;
    // So that `check` of another source on this Redis can tell whether their keys overlap.
    registerSource(this.redis, this.opts.config).catch((err: unknown) =>
      this.log.debug({ err: String(err) }, 'could not register the source in Redis'),
    );
    if (!this.probeLoop) {
      this.probeLoop = this.runRedisProbe();
      // Due delayed deletes need only Redis: run them from now, not from when the group has
      // assigned partitions (joining can wait out a crashed member's session timeout).
      this.redeletes.start();
      this.auditor.start();
    }
    await this.member.run();
    this.refreshState();
  }

  /** Stops applying, commits what was applied, leaves the group. Idempotent; every step guarded. */
  close(graceMs = 30_000): Promise<void> {
    this.closed ??= this.shutdown(graceMs);
    return this.closed;
  }

  private async shutdown(graceMs: number): Promise<void> {
    const failed = this.state_ === 'failed';
    this.closing = true;
    this.stop.abort();
    if (!failed) this.setState('stopping');
    const deadline = Date.now() + graceMs;
    const left = () => Math.max(0, deadline - Date.now());
    const step = async (what: string, work: () => Promise<unknown>) => {
      try {
        await withDeadline(work(), left(), what);
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, `close: ${what}`);
      }
    };
    // Batches in hand stop at their next chunk; what they applied is committed before leaving.
    await step('waiting for batches in hand', () => this.member.idle());
    await step('stopping the loops', () =>
      Promise.all([this.redeletes.stopped(), this.member.stopped(), this.probeLoop, this.auditor.close()]),
    );
    if (!failed) await step('committing applied offsets', () => this.member.commitApplied());
    await step('leaving the group', () => this.member.leave());
    await step('closing the dead-letter producer', () => this.producer.disconnect());
    if (this.ownsRedis) this.redis.disconnect();
    if (!failed) this.setState('stopped');
  }

  /**
   * A programmer error or one only an operator can fix: stop for good. The process exits 1 and its
   * supervisor restarts it; nothing is committed past what was applied, nothing dead-lettered.
   */
  private failWith(err: unknown): void {
    if (this.failure !== undefined || this.closing) return;
    this.failure = err;
    if (isProgrammerError(err))
      this.log.fatal({ err: describeBug(err) }, 'programmer error (a bug); stopping');
    else this.log.fatal({ err: errorMessage(err) }, 'cannot go on; stopping');
    this.setState('failed');
  }

  private setState(state: ConsumerState): void {
    if (state === this.state_ || this.state_ === 'failed') return;
    this.log.info({ from: this.state_, to: state }, 'consumer state');
    this.state_ = state;
    this.emit('state', state);
  }

  /**
   * Pings Redis once a second with a deadline: a Redis that keeps the connection open and answers
   * nothing (frozen, partitioned) shows up within seconds, even with no traffic.
   */
  private async runRedisProbe(): Promise<void> {
    do {
      let answers: boolean;
      try {
        await withDeadline(this.redis.ping(), this.stallMs, 'Redis PING', 'redis');
        answers = true;
      } catch {
        answers = false;
      }
      if (answers !== this.redisAnswers) {
        this.redisAnswers = answers;
        if (!answers) this.log.warn({ stallMs: this.stallMs }, 'Redis does not answer; pausing');
        this.refreshState();
      }
    } while (await pause(PROBE_INTERVAL_MS, this.stop.signal));
  }

  /** Streaming while the group runs and Redis answers; paused while Redis is down or failing. */
  private refreshState(): void {
    if (this.closing || !this.member.running) return;
    const paused = this.partitions.inOutage || !this.redisConnected || !this.redisAnswers;
    this.emit('paused', paused);
    this.setState(paused ? 'paused' : 'streaming');
  }
}
