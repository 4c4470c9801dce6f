import { EventEmitter } from 'node:events';
import type { Consumer, ConsumerRunConfig, EachBatchPayload, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Cluster, Redis } from 'ioredis';
import type { CompiledConfig, CompiledMapping } from '../config/types.js';
import { planCacheOps, type CacheOp } from '../core/cache-plan.js';
import { decodeChangeEvent, type ChangeEvent } from '../core/change-event.js';
import { withDeadline } from '../core/deadline.js';
import {
  describeBug,
  errorKind,
  errorMessage,
  isProgrammerError,
  MessageError,
  ProgrammerError,
} from '../core/errors.js';
import { backoffDelay, pause, retry, type BackoffPolicy } from '../core/retry.js';
import { createKafka, ensureTopics } from '../kafka/kafka-client.js';
import { classifyKafkaError } from '../kafka/kafka-errors.js';
import { guardLifetimeMs } from '../kafka/retention.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { Auditor } from './audit.js';
import { DeadLetterWriter, type FailureInfo } from './dead-letters.js';
import { registerSource } from './source-registry.js';
import { RedisApplier, type OpOutcome } from './redis-applier.js';
import { createRedis } from './redis-client.js';
import { metaPrefixFor } from '../core/version-guard.js';

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
  /**
   * A server that has not answered for this long is taken as down (frozen, partitioned): the
   * consumer reports itself paused, naming it. Default 3 s.
   */
  stallMs?: number;
}

/** Which server a paused consumer waits for. */
export type WaitingOn = 'redis' | 'kafka';

type DeadLetter = { message: KafkaMessage; info: FailureInfo };

const COMMIT_INTERVAL_MS = 1000;
/** How often Redis is pinged while nothing else shows it answers. */
const PROBE_INTERVAL_MS = 1000;
/** Tables named in log lines about unmapped changes, at most (bounded memory and log volume). */
const MAX_REPORTED_TABLES = 100;

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
  private closed: Promise<void> | undefined;
  /** Aborted by close(): every backoff and wait ends at once. */
  private readonly stop = new AbortController();
  /** Why the consumer failed for good, when it did. */
  failure: unknown;
  private readonly log: Logger;
  private readonly mappings: Map<string, CompiledMapping>;
  private readonly retryPolicy: BackoffPolicy;
  private readonly chunkSize: number;
  private readonly applier: RedisApplier;
  private readonly deadLetters: DeadLetterWriter;
  private readonly auditor: Auditor;
  private redeleteLoop: Promise<void> | undefined;
  private commitLoop: Promise<void> | undefined;
  private probeLoop: Promise<void> | undefined;
  /** Redis answered its last ping within the deadline. */
  private redisAnswers = true;
  /** When Kafka last answered a request of this member's (epoch ms). */
  private lastKafkaAnswerMs = Date.now();
  private readonly stallMs: number;
  private readonly unmappedReported = new Set<string>();
  private readonly createdAtMs = Date.now();
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
    guardTtlMs: number | null,
  ) {
    super();
    this.log = opts.logger.child({ component: 'consumer' });
    this.mappings = new Map(opts.config.mappings.map((m) => [m.table, m]));
    const c = opts.config.consumer;
    this.retryPolicy = { initialMs: c.retryInitialMs, maxMs: c.retryMaxMs };
    this.chunkSize = opts.chunkSize ?? 500;
    this.stallMs = opts.stallMs ?? 3000;
    this.applier = new RedisApplier(redis, {
      versionTtlMs: guardTtlMs,
      metaPrefix: metaPrefixFor(opts.config.source?.name),
    });
    this.log.info(
      { guardTtlMs: guardTtlMs ?? 'forever' },
      'version guards last as long as an older change can still arrive',
    );
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
    const c = opts.config.consumer;
    const consumer = kafka.consumer({
      groupId: opts.config.kafka.groupId,
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
    });
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
    if (!this.redisConnected || !this.redisAnswers || this.outages > 0) return 'redis';
    // While a batch is being applied the fetcher waits for it, so Kafka's silence then is ours.
    const idle = this.inFlight === 0;
    if (this.running && !this.closing && idle && Date.now() - this.lastKafkaAnswerMs > this.stallMs)
      return 'kafka';
    return undefined;
  }

  /** Ready: streaming, and no server it depends on has gone silent. */
  get ready(): boolean {
    return this.state_ === 'streaming' && this.waitingOn === undefined;
  }

  /** Joins the group and applies changes until close(). */
  async run(): Promise<void> {
    if (this.running) return;
    // So that `check` of another source on this Redis can tell whether their keys overlap.
    registerSource(this.redis, this.opts.config).catch((err: unknown) =>
      this.log.debug({ err: String(err) }, 'could not register the source in Redis'),
    );
    if (!this.redeleteLoop) {
      // Lag is reported for the partitions this member holds now, not for those a rebalance took away.
      this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
        this.opts.metrics.consumerLag.reset();
        const { duration, memberAssignment } = e.payload as {
          duration: number;
          memberAssignment: Record<string, number[]>;
        };
        const partitions = Object.values(memberAssignment).reduce((n, p) => n + p.length, 0);
        // Where the seconds of a restart go: the join waits out a crashed member's session.
        this.log.info(
          { joinMs: duration, sinceStartMs: Date.now() - this.createdAtMs, partitions },
          'joined the consumer group',
        );
      });
      this.consumer.on(this.consumer.events.CRASH, (e) => {
        const { error, restart } = e.payload as { error: Error; restart: boolean };
        this.log.error({ err: error.message, restart }, 'consumer crashed');
        if (!restart && !this.closing) this.failWith(classifyKafkaError(error, 'the consumer group'));
      });
      this.consumer.on(this.consumer.events.REQUEST, () => {
        this.lastKafkaAnswerMs = Date.now();
      });
      this.probeLoop = this.runRedisProbe();
      // Due delayed deletes need only Redis: run them from now, not from when the group has
      // assigned partitions (joining can wait out a crashed member's session timeout).
      this.redeleteLoop = this.runRedeletes();
      this.auditor.start();
    }
    // Subscribing reads the topic's metadata: right after its creation that can fail for a moment
    // (unknown topic, no leader yet); the caller retries run() then.
    await this.consumer.subscribe({ topic: this.opts.config.kafka.topic, fromBeginning: true });
    await this.consumer.run(this.runConfig());
    this.lastKafkaAnswerMs = Date.now();
    this.running = true;
    this.refreshState();
    this.commitLoop = this.runCommits();
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
    await step('waiting for batches in hand', async () => {
      while (this.inFlight > 0) await pause(20);
    });
    await step('stopping the loops', () =>
      Promise.all([this.redeleteLoop, this.commitLoop, this.probeLoop, this.auditor.close()]),
    );
    if (!failed) await step('committing applied offsets', () => this.commitApplied());
    await step('leaving the group', () => this.consumer.disconnect());
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

  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    if (this.failure !== undefined || this.closing) return;
    this.lastKafkaAnswerMs = Date.now();
    this.inFlight++;
    this.committer = payload;
    try {
      await this.applyBatch(payload);
    } catch (err) {
      const kind = errorKind(err);
      // Outages (Kafka going away mid-batch) are kafkajs's to ride out: it restarts the member.
      if (kind === 'outage' || kind === 'message') throw err;
      this.failWith(err);
    } finally {
      this.inFlight--;
      // The silence clock starts again once the fetcher can ask Kafka for more.
      this.lastKafkaAnswerMs = Date.now();
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
    while (await pause(COMMIT_INTERVAL_MS, this.stop.signal)) await this.commitApplied();
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
      // A bug, or something only an operator can fix: stop, commit nothing of this segment.
      const fatal = results.find(
        (r): r is PromiseRejectedResult =>
          r.status === 'rejected' &&
          (errorKind(r.reason) === 'programmer' || errorKind(r.reason) === 'fatal'),
      );
      if (fatal) throw fatal.reason;
      const again: Pending[] = [];
      let outage: Error | undefined;
      const now = Date.now();
      results.forEach((r, i) => {
        const p = work[i]!;
        if (r.status === 'fulfilled') {
          this.recordApplied(p, r.value);
        } else if (errorKind(r.reason) === 'message') {
          // The message's own fault: retried within its budget, then dead-lettered.
          p.attempts++;
          p.firstFailureMs ??= now;
          const error = r.reason as MessageError;
          if (p.attempts < this.opts.config.consumer.maxAttempts) again.push(p);
          else letters.push({ message: p.message, info: failureInfo(p, error, topic, partition, now) });
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
      if (!(await pause(delay, this.stop.signal))) return false;
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
      if (!(await pause(backoffDelay(this.retryPolicy, attempt), this.stop.signal))) return false;
      await heartbeat().catch(() => undefined);
    }
  }

  /**
   * Decodes and plans one message. A malformed event becomes a MessageError (dead-lettered after its
   * attempts); a change of a table this config does not map is skipped with a metric; a bug in the
   * planner stays a bug.
   */
  private plan(message: KafkaMessage): Pending {
    let event: ChangeEvent;
    try {
      event = decodeChangeEvent(message.value);
    } catch (err) {
      if (isProgrammerError(err)) throw err;
      const error = err instanceof MessageError ? err : new MessageError(errorMessage(err), { cause: err });
      return { message, ops: [], error, attempts: 0 };
    }
    const table = `${event.db}.${event.table}`;
    const mapping = this.mappings.get(table);
    if (!mapping) {
      this.opts.metrics.changesSkipped.inc({ reason: 'unmapped_table' });
      if (this.unmappedReported.size < MAX_REPORTED_TABLES && !this.unmappedReported.has(table)) {
        this.unmappedReported.add(table);
        this.log.warn(
          { table, offset: message.offset },
          'change of a table the config does not map; skipped',
        );
      }
      return { message, event, ops: [], attempts: 0 };
    }
    try {
      return { message, event, ops: planCacheOps(event, mapping), attempts: 0 };
    } catch (err) {
      if (err instanceof MessageError) return { message, event, ops: [], error: err, attempts: 0 };
      // The planner is pure: anything but a MessageError from it is a bug.
      throw isProgrammerError(err)
        ? err
        : new ProgrammerError(`planning a change: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Metrics of an applied change. Metrics never throw: a malformed field only loses its sample. */
  private recordApplied(p: Pending, outcomes: OpOutcome[]): void {
    const e = p.event;
    if (!e) return;
    const metrics = this.opts.metrics;
    const table = this.tableLabel(e);
    metrics.changesApplied.inc({ table, op: e.op });
    outcomes.forEach((o, i) => {
      metrics.cacheOps.inc({ kind: p.ops[i]?.kind ?? 'unknown', result: o });
      if (o === 'stale') metrics.staleSkipped.inc({ table });
    });
    // Other programs may write the topic: a missing or odd ts_ms skips the sample, nothing more.
    const readAt = (e as { ts_ms?: unknown }).ts_ms;
    if (typeof readAt === 'number' && Number.isFinite(readAt)) {
      metrics.endToEnd.observe(Math.max(0, (Date.now() - readAt) / 1000));
    }
    this.auditor.offer(e, p.ops, outcomes);
  }

  /** The `table` label: a mapped table's name, else `unmapped`, so label values stay bounded. */
  private tableLabel(e: Pick<ChangeEvent, 'db' | 'table'>): string {
    const table = `${e.db}.${e.table}`;
    return this.mappings.has(table) ? table : 'unmapped';
  }

  private async writeDeadLetters(letters: DeadLetter[], live: () => boolean): Promise<void> {
    await retry(
      async () => {
        try {
          await this.deadLetters.write(letters);
        } catch (err) {
          throw classifyKafkaError(err, `the dead-letter topic ${this.opts.config.kafka.dlqTopic}`);
        }
      },
      this.retryPolicy,
      {
        signal: this.stop.signal,
        aborted: () => !live(),
        onRetry: (err, attempt) =>
          this.log.warn({ err: errorMessage(err), attempt }, 'could not write dead letters; retrying'),
      },
    );
    for (const { message, info } of letters) {
      const event = safeDecode(message);
      const table = event ? this.tableLabel(event) : 'undecodable';
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
    const paused = this.outages > 0 || !this.redisConnected || !this.redisAnswers;
    this.opts.metrics.consumerPaused.set(paused ? 1 : 0);
    this.setState(paused ? 'paused' : 'streaming');
  }

  private enterOutage(err: Error | undefined, attempt: number): void {
    if (this.outages++ === 0) this.refreshState();
    // Once when it starts, then now and then: an outage is one event, not one per retry.
    if (attempt === 1 || attempt % 20 === 0)
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
    do {
      try {
        const ran = await this.applier.runDueRedeletes();
        if (ran > 0) this.opts.metrics.redeletesRun.inc(ran);
        if (Date.now() - lastGauge > 1000) {
          this.opts.metrics.redeletesPending.set(await this.applier.pendingRedeletes());
          lastGauge = Date.now();
        }
      } catch (err) {
        if (isProgrammerError(err)) {
          this.failWith(err);
          return;
        }
        this.log.debug({ err: errorMessage(err) }, 'delayed deletes not run; Redis unavailable');
      }
    } while (await pause(pollMs, this.stop.signal));
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
