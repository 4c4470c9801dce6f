import { setTimeout as sleep } from 'node:timers/promises';
import { EventEmitter } from 'node:events';
import type { Consumer, EachBatchPayload, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Cluster, Redis } from 'ioredis';
import type { CompiledConfig, CompiledMapping } from '../config/types.js';
import { planCacheOps, type CacheOp } from '../core/cache-plan.js';
import { decodeChangeEvent, type ChangeEvent } from '../core/change-event.js';
import { MessageError } from '../core/errors.js';
import { backoffDelay, type BackoffPolicy } from '../core/retry.js';
import { createKafka, ensureTopics } from '../kafka/kafka-client.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { Auditor } from './audit.js';
import { DeadLetterWriter, type FailureInfo } from './dead-letters.js';
import { RedisApplier, type OpOutcome } from './redis-applier.js';
import { createRedis } from './redis-client.js';

export type ConsumerState = 'starting' | 'streaming' | 'paused' | 'stopping' | 'stopped' | 'failed';

export interface ChangeConsumerOptions {
  config: Pick<CompiledConfig, 'kafka' | 'redis' | 'consumer' | 'mappings' | 'source' | 'audit'>;
  logger: Logger;
  metrics: Metrics;
  kafka?: Kafka;
  redis?: Redis | Cluster;
  /** Messages applied per Redis round of a batch. Default 500. */
  chunkSize?: number;
  /** Delay between runs of due delayed deletes. Default 50 ms. */
  redeletePollMs?: number;
}

type DeadLetter = { message: KafkaMessage; info: FailureInfo };

const COMMIT_INTERVAL_MS = 1000;

/** One message of a chunk on its way to Redis. */
interface Pending {
  message: KafkaMessage;
  event?: ChangeEvent;
  ops: CacheOp[];
  error?: Error;
  attempts: number;
  firstFailureMs?: number;
}

/**
 * A member of the consumer group: applies each partition's change events to Redis in offset order,
 * commits an offset only once Redis has applied everything before it, retries what fails, pauses
 * through a Redis outage, and dead-letters a message that keeps failing because of itself.
 */
export class ChangeConsumer extends EventEmitter<{ state: [ConsumerState] }> {
  private state_: ConsumerState = 'starting';
  private closing = false;
  private readonly log: Logger;
  private readonly mappings: Map<string, CompiledMapping>;
  private readonly retryPolicy: BackoffPolicy;
  private readonly chunkSize: number;
  private readonly applier: RedisApplier;
  private readonly deadLetters: DeadLetterWriter;
  private readonly auditor: Auditor;
  private redeleteLoop: Promise<void> | undefined;
  private commitLoop: Promise<void> | undefined;
  /** Batches being applied right now. */
  private inFlight = 0;
  /** Commits through the current group generation (any batch's payload will do). */
  private committer: Pick<EachBatchPayload, 'uncommittedOffsets' | 'commitOffsetsIfNecessary'> | undefined;
  private outages = 0;
  private running = false;
  private redisConnected: boolean;

  private constructor(
    private readonly opts: ChangeConsumerOptions,
    private readonly consumer: Consumer,
    private readonly producer: Producer,
    private readonly redis: Redis | Cluster,
    private readonly ownsRedis: boolean,
  ) {
    super();
    this.log = opts.logger.child({ component: 'consumer' });
    this.mappings = new Map(opts.config.mappings.map((m) => [m.table, m]));
    const c = opts.config.consumer;
    this.retryPolicy = { initialMs: c.retryInitialMs, maxMs: c.retryMaxMs };
    this.chunkSize = opts.chunkSize ?? 500;
    this.applier = new RedisApplier(redis);
    this.deadLetters = new DeadLetterWriter(producer, opts.config.kafka.dlqTopic);
    this.auditor = new Auditor({ config: opts.config, redis, metrics: opts.metrics, logger: opts.logger });
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
    const consumer = kafka.consumer({
      groupId: opts.config.kafka.groupId,
      allowAutoTopicCreation: false,
      sessionTimeout: 10_000,
      heartbeatInterval: 1000,
      rebalanceTimeout: 30_000,
    });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    const redis = opts.redis ?? createRedis(opts.config.redis);
    await Promise.all([consumer.connect(), producer.connect()]);
    return new ChangeConsumer(opts, consumer, producer, redis, opts.redis === undefined);
  }

  get state(): ConsumerState {
    return this.state_;
  }

  /** Joins the group and applies changes until close(). */
  async run(): Promise<void> {
    const { topic } = this.opts.config.kafka;
    await this.consumer.subscribe({ topic, fromBeginning: true });
    // Lag is reported for the partitions this member holds now, not for those a rebalance took away.
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => this.opts.metrics.consumerLag.reset());
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      const { error, restart } = e.payload as { error: Error; restart: boolean };
      this.log.error({ err: error.message, restart }, 'consumer crashed');
      if (!restart && !this.closing) this.setState('failed');
    });
    // Due delayed deletes need only Redis: run them from now, not from when the group has
    // assigned partitions (joining can wait out a crashed member's session timeout).
    this.redeleteLoop = this.runRedeletes();
    this.auditor.start();
    await this.consumer.run({
      eachBatchAutoResolve: false,
      // Offsets of applied changes are committed once a second (and at shutdown), not after every
      // batch as kafkajs's autoCommit does: a commit per batch sits on the latency path, since the
      // next fetch waits for it. A crash or rebalance repeats at most a second of changes, which
      // versions make harmless.
      autoCommit: false,
      autoCommitInterval: COMMIT_INTERVAL_MS,
      partitionsConsumedConcurrently: this.opts.config.consumer.partitionsConcurrently,
      eachBatch: (payload) => this.handleBatch(payload),
    });
    this.running = true;
    this.refreshState();
    this.commitLoop = this.runCommits();
  }

  async close(graceMs = 30_000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.setState('stopping');
    // Batches in hand stop at their next chunk; what they applied is committed before leaving.
    const deadline = Date.now() + graceMs;
    while (this.inFlight > 0 && Date.now() < deadline) await sleep(20);
    await Promise.all([this.redeleteLoop, this.commitLoop, this.auditor.close()]);
    await this.commitApplied();
    await Promise.race([this.consumer.disconnect(), sleep(Math.max(0, deadline - Date.now()))]).catch(
      () => undefined,
    );
    await this.producer.disconnect().catch(() => undefined);
    if (this.ownsRedis) this.redis.disconnect();
    this.setState('stopped');
  }

  private setState(state: ConsumerState): void {
    if (state === this.state_) return;
    this.log.info({ from: this.state_, to: state }, 'consumer state');
    this.state_ = state;
    this.emit('state', state);
  }

  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    this.inFlight++;
    this.committer = payload;
    try {
      await this.applyBatch(payload);
    } finally {
      this.inFlight--;
    }
  }

  /** Commits the offsets resolved since the last commit, if any. */
  private async commitApplied(): Promise<void> {
    const committer = this.committer;
    if (!committer) return;
    const offsets = committer.uncommittedOffsets();
    if (offsets.topics.length === 0) return;
    try {
      await committer.commitOffsetsIfNecessary(offsets);
    } catch (err) {
      // A rebalance took the partitions: their next owner repeats what was not committed.
      this.log.debug({ err: (err as Error).message }, 'offset commit skipped');
    }
  }

  private async runCommits(): Promise<void> {
    while (!this.closing) {
      await sleep(COMMIT_INTERVAL_MS);
      await this.commitApplied();
    }
  }

  private async applyBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const heartbeat = () => payload.heartbeat();
    const live = () => payload.isRunning() && !payload.isStale() && !this.closing;
    for (let i = 0; i < batch.messages.length && live(); i += this.chunkSize) {
      const chunk = batch.messages.slice(i, i + this.chunkSize);
      const done = await this.applyChunk(batch.topic, batch.partition, chunk, heartbeat, live);
      if (!done) return;
      payload.resolveOffset(chunk[chunk.length - 1]!.offset);
      await payload.commitOffsetsIfNecessary();
      await heartbeat();
      const lag = Number(batch.highWatermark) - Number(chunk[chunk.length - 1]!.offset) - 1;
      this.opts.metrics.consumerLag.set({ partition: String(batch.partition) }, Math.max(0, lag));
    }
  }

  /**
   * Applies a chunk of one partition. Returns false if it stopped early (shutdown or rebalance), in
   * which case nothing of it may be committed.
   */
  private async applyChunk(
    topic: string,
    partition: number,
    messages: KafkaMessage[],
    heartbeat: () => Promise<void>,
    live: () => boolean,
  ): Promise<boolean> {
    const planned = messages.map((m) => this.plan(m));
    if (planned.some((p) => p.ops.some((op) => op.kind === 'redelete'))) {
      if (!(await this.waitForRedeleteRoom(heartbeat, live))) return false;
    }
    for (const segment of segments(planned)) {
      if (!(await this.applySegment(topic, partition, segment, heartbeat, live))) return false;
    }
    return true;
  }

  /**
   * Applies messages whose ops may run at once (pipelined, each key's commands in order), retrying
   * what fails and dead-lettering what keeps failing because of itself.
   */
  private async applySegment(
    topic: string,
    partition: number,
    segment: Pending[],
    heartbeat: () => Promise<void>,
    live: () => boolean,
  ): Promise<boolean> {
    const letters: DeadLetter[] = [];
    let work = segment;
    let outageAttempt = 0;
    while (work.length > 0) {
      const results = await Promise.allSettled(
        work.map((p) => (p.error ? Promise.reject(p.error) : this.applier.apply(p.ops, { heartbeat, live }))),
      );
      const again: Pending[] = [];
      let outage: Error | undefined;
      const now = Date.now();
      results.forEach((r, i) => {
        const p = work[i]!;
        if (r.status === 'fulfilled') {
          this.recordApplied(p, r.value);
        } else if (r.reason instanceof MessageError) {
          // The message's own fault: retried within its budget, then dead-lettered.
          p.attempts++;
          p.firstFailureMs ??= now;
          if (p.attempts < this.opts.config.consumer.maxAttempts) again.push(p);
          else letters.push({ message: p.message, info: failureInfo(p, r.reason, topic, partition, now) });
        } else {
          // Redis itself is unavailable: nobody's fault, no attempt counted, retried until it is back.
          outage = r.reason instanceof Error ? r.reason : new Error(String(r.reason));
          again.push(p);
        }
      });
      if (again.length === 0) break;
      if (!live()) return false;
      let delay: number;
      if (outage) {
        this.enterOutage(outage, ++outageAttempt);
        delay = backoffDelay(this.retryPolicy, outageAttempt);
        this.opts.metrics.retries.inc({ stage: 'apply', reason: 'redis_unavailable' });
      } else {
        delay = backoffDelay(this.retryPolicy, Math.max(...again.map((p) => p.attempts)));
        this.opts.metrics.retries.inc({ stage: 'apply', reason: 'message' }, again.length);
      }
      await sleep(delay);
      await heartbeat().catch(() => undefined);
      work = again;
    }
    this.leaveOutage();
    if (letters.length > 0) await this.writeDeadLetters(letters, live);
    return true;
  }

  /**
   * Holds the partition while the delayed-delete schedule is full, so it stays bounded; the
   * schedule drains as its deletes come due. Returns false if stopped meanwhile.
   */
  private async waitForRedeleteRoom(heartbeat: () => Promise<void>, live: () => boolean): Promise<boolean> {
    const max = this.opts.config.consumer.maxPendingRedeletes;
    for (let attempt = 1; ; attempt++) {
      const pending = await this.applier.pendingRedeletes().catch(() => 0);
      this.opts.metrics.redeletesPending.set(pending);
      if (pending < max) return true;
      if (!live()) return false;
      if (attempt === 1)
        this.log.warn({ pending, max }, 'delayed-delete schedule full; waiting for it to drain');
      this.opts.metrics.retries.inc({ stage: 'apply', reason: 'redeletes_full' });
      await sleep(backoffDelay(this.retryPolicy, attempt));
      await heartbeat().catch(() => undefined);
    }
  }

  private plan(message: KafkaMessage): Pending {
    try {
      const event = decodeChangeEvent(message.value);
      const mapping = this.mappings.get(`${event.db}.${event.table}`);
      const ops = mapping ? planCacheOps(event, mapping) : [];
      return { message, event, ops, attempts: 0 };
    } catch (err) {
      const error =
        err instanceof MessageError ? err : new MessageError((err as Error).message, { cause: err });
      return { message, ops: [], error, attempts: 0 };
    }
  }

  private recordApplied(p: Pending, outcomes: OpOutcome[]): void {
    const e = p.event;
    if (!e) return;
    const table = `${e.db}.${e.table}`;
    this.opts.metrics.changesApplied.inc({ table, op: e.op });
    outcomes.forEach((o, i) => {
      this.opts.metrics.cacheOps.inc({ kind: p.ops[i]!.kind, result: o });
      if (o === 'stale') this.opts.metrics.staleSkipped.inc({ table });
    });
    this.opts.metrics.endToEnd.observe(Math.max(0, (Date.now() - e.ts_ms) / 1000));
    this.auditor.offer(e, p.ops, outcomes);
  }

  private async writeDeadLetters(letters: DeadLetter[], live: () => boolean): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.deadLetters.write(letters);
        break;
      } catch (err) {
        if (!live()) throw err;
        this.log.warn({ err: (err as Error).message, attempt }, 'could not write dead letters; retrying');
        await sleep(backoffDelay(this.retryPolicy, attempt));
      }
    }
    for (const { message, info } of letters) {
      const event = safeDecode(message);
      const table = event ? `${event.db}.${event.table}` : 'unknown';
      this.opts.metrics.dlqMessages.inc({ table, error_class: info.error.name });
      this.log.error(
        {
          table,
          partition: info.partition,
          offset: info.offset,
          attempts: info.attempts,
          err: info.error.message,
        },
        'message dead-lettered',
      );
    }
  }

  /** Streaming while the group runs and Redis answers; paused while Redis is down or failing. */
  private refreshState(): void {
    if (this.closing || !this.running) return;
    const paused = this.outages > 0 || !this.redisConnected;
    this.opts.metrics.consumerPaused.set(paused ? 1 : 0);
    this.setState(paused ? 'paused' : 'streaming');
  }

  private enterOutage(err: Error | undefined, attempt: number): void {
    if (this.outages++ === 0) this.refreshState();
    this.log.warn(
      { err: err?.message, attempt },
      'Redis unavailable; holding the partition until it is back',
    );
  }

  private leaveOutage(): void {
    if (this.outages === 0) return;
    this.outages = 0;
    this.refreshState();
    this.log.info('Redis is back; applying again');
  }

  private async runRedeletes(): Promise<void> {
    const pollMs = this.opts.redeletePollMs ?? 50;
    let lastGauge = 0;
    while (!this.closing) {
      try {
        const ran = await this.applier.runDueRedeletes();
        if (ran > 0) this.opts.metrics.redeletesRun.inc(ran);
        if (Date.now() - lastGauge > 1000) {
          this.opts.metrics.redeletesPending.set(await this.applier.pendingRedeletes());
          lastGauge = Date.now();
        }
      } catch (err) {
        this.log.debug({ err: (err as Error).message }, 'delayed deletes not run; Redis unavailable');
      }
      await sleep(pollMs);
    }
  }
}

/**
 * Splits a chunk so that a table-level change (a SCAN-and-delete of many keys) runs on its own,
 * after everything before it and before everything after it.
 */
function segments(planned: Pending[]): Pending[][] {
  const out: Pending[][] = [];
  let current: Pending[] = [];
  for (const p of planned) {
    if (p.ops.some((op) => op.kind === 'delMatching')) {
      if (current.length > 0) out.push(current);
      out.push([p]);
      current = [];
    } else {
      current.push(p);
    }
  }
  if (current.length > 0) out.push(current);
  return out;
}

function failureInfo(p: Pending, error: Error, topic: string, partition: number, now: number): FailureInfo {
  return {
    error,
    attempts: p.attempts,
    topic,
    partition,
    offset: p.message.offset,
    firstFailureMs: p.firstFailureMs ?? now,
    lastFailureMs: now,
  };
}

function safeDecode(message: KafkaMessage): ChangeEvent | undefined {
  try {
    return decodeChangeEvent(message.value);
  } catch {
    return undefined;
  }
}
