import type { EventEmitter } from 'node:events';
import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { CompiledConfig, CompiledMapping } from '../config/types.js';
import { planCacheOps, type CacheOp } from '../core/cache-plan.js';
import { decodeChangeEvent, type ChangeEvent } from '../core/change-event.js';
import { errorKind, errorMessage, isProgrammerError, MessageError, ProgrammerError } from '../core/errors.js';
import { backoffDelay, pause, retry, type BackoffPolicy } from '../core/retry.js';
import { classifyKafkaError } from '../kafka/kafka-errors.js';
import type { Logger } from '../observability/logger.js';
import type { Auditor } from './audit.js';
import type { DeadLetterWriter, FailureInfo } from './dead-letters.js';
import type { RedeleteScheduler } from './redelete-scheduler.js';
import type { OpOutcome, RedisApplier } from './redis-applier.js';

/** What one Redis round of a partition's chunk applied. */
export interface AppliedRound {
  partition: number;
  /** Changes applied, by table (`unmapped` for one the config does not map) and op. */
  changes: { table: string; op: string; count: number }[];
  /** Cache operations run, by kind and outcome. */
  operations: { kind: string; result: OpOutcome; count: number }[];
  /** Writes skipped because Redis held a newer change, by table. */
  stale: { table: string; count: number }[];
  /** Seconds from reading each change in the binlog to applying it, for changes that carry the read time. */
  latencies: number[];
}

/** What the per-partition apply reports (the metrics module turns it into series). */
export interface ApplyEvents {
  /**
   * Changes applied by one Redis round: once per chunk, unless a table-level change splits it or a
   * failure makes it retry (then once per round that applied something).
   */
  applied: [AppliedRound];
  /** Changes of a chunk skipped without applying them, when it is planned (`unmapped_table`: a table the config does not map). */
  skipped: [{ partition: number; reason: 'unmapped_table'; count: number }];
  /**
   * Messages of a segment to be applied again after a backoff: `count` retries, one per message for
   * the message's own failure, one per round while Redis is unavailable.
   */
  retrying: [{ partition: number; reason: 'message' | 'redis_unavailable'; count: number }];
  /** Messages written to the dead-letter topic, by table (`undecodable` for a message that is not an event) and error class. */
  deadLettered: [{ partition: number; letters: { table: string; errorClass: string; count: number }[] }];
  /** After a chunk was applied: messages between it and the partition's high watermark. */
  lag: [{ partition: number; messages: number }];
}

export interface PartitionApplierOptions {
  config: Pick<CompiledConfig, 'kafka' | 'consumer' | 'mappings'>;
  logger: Logger;
  events: Pick<EventEmitter<ApplyEvents>, 'emit'>;
  applier: Pick<RedisApplier, 'applyAll'>;
  redeletes: Pick<RedeleteScheduler, 'waitForRoom'>;
  deadLetters: Pick<DeadLetterWriter, 'write'>;
  auditor: Pick<Auditor, 'offer'>;
  /** Messages applied per Redis round of a batch. */
  chunkSize: number;
  retryPolicy: BackoffPolicy;
  /** Aborted at close: chunks in hand stop at their next step, every backoff ends at once. */
  signal: AbortSignal;
  /** Told when Redis becomes unavailable to the apply, and when it is back. */
  onOutage: () => void;
}

/** A batch being applied: where it comes from, and how to keep its session and know it still counts. */
interface BatchContext {
  topic: string;
  partition: number;
  heartbeat: () => Promise<void>;
  /** False once the batch may no longer be applied (shutdown, rebalance). */
  live: () => boolean;
}

/** One message of a chunk on its way to Redis. */
interface Pending {
  message: KafkaMessage;
  event: ChangeEvent | undefined;
  /** The `table` label of its metrics: the mapped table, or `unmapped`. */
  table: string;
  ops: readonly CacheOp[];
  error: Error | undefined;
  attempts: number;
  firstFailureMs: number | undefined;
}

/** A message planned: every Pending has the same shape, so the loops over them stay monomorphic. */
function pending(
  message: KafkaMessage,
  event: ChangeEvent | undefined,
  table: string,
  ops: readonly CacheOp[],
  error?: Error,
): Pending {
  return { message, event, table, ops, error, attempts: 0, firstFailureMs: undefined };
}

type DeadLetter = { message: KafkaMessage; info: FailureInfo };

const NO_OPS: readonly CacheOp[] = [];
const UNMAPPED = 'unmapped';

/** Tables named in log lines about unmapped changes, at most (bounded memory and log volume). */
const MAX_REPORTED_TABLES = 100;

/**
 * Applies a partition's batches to Redis in offset order, a chunk at a time, resolving a chunk's
 * offsets only once all of it is applied; retries what fails, holds the partition through a Redis
 * outage, and dead-letters a message that keeps failing because of itself.
 */
export class PartitionApplier {
  private readonly mappings: Map<string, CompiledMapping>;
  private readonly unmappedReported = new Set<string>();
  /** Retry rounds of segments held by a Redis outage, since it was last seen answering. */
  private outages = 0;

  constructor(private readonly opts: PartitionApplierOptions) {
    this.mappings = new Map(opts.config.mappings.map((m) => [m.table, m]));
  }

  /** Whether applying is held by a Redis outage. */
  get inOutage(): boolean {
    return this.outages > 0;
  }

  async applyBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const ctx: BatchContext = {
      topic: batch.topic,
      partition: batch.partition,
      heartbeat: () => payload.heartbeat(),
      live: () => payload.isRunning() && !payload.isStale() && !this.opts.signal.aborted,
    };
    const { chunkSize, events } = this.opts;
    for (let i = 0; i < batch.messages.length && ctx.live(); i += chunkSize) {
      const chunk = batch.messages.slice(i, i + chunkSize);
      const done = await this.applyChunk(ctx, chunk);
      if (!done) return;
      payload.resolveOffset(chunk[chunk.length - 1]!.offset);
      await payload.commitOffsetsIfNecessary();
      await ctx.heartbeat();
      const lag = Number(batch.highWatermark) - Number(chunk[chunk.length - 1]!.offset) - 1;
      events.emit('lag', { partition: batch.partition, messages: Math.max(0, lag) });
    }
  }

  /**
   * Applies a chunk of one partition. Returns false if it stopped early (shutdown or rebalance), in
   * which case nothing of it may be committed.
   */
  private async applyChunk(ctx: BatchContext, messages: KafkaMessage[]): Promise<boolean> {
    const skipped = { unmapped: 0 };
    const planned = messages.map((m) => this.plan(m, skipped));
    if (skipped.unmapped > 0) {
      const { partition } = ctx;
      this.opts.events.emit('skipped', { partition, reason: 'unmapped_table', count: skipped.unmapped });
    }
    if (planned.some((p) => p.ops.some((op) => op.kind === 'redelete'))) {
      if (!(await this.opts.redeletes.waitForRoom(ctx.heartbeat, ctx.live))) return false;
    }
    for (const segment of segments(planned)) {
      if (!(await this.applySegment(ctx, segment))) return false;
    }
    return true;
  }

  /**
   * Applies messages whose ops may run at once (pipelined, each key's commands in order), retrying
   * what fails and dead-lettering what keeps failing because of itself.
   */
  private async applySegment(ctx: BatchContext, segment: Pending[]): Promise<boolean> {
    const { applier, config, retryPolicy, events } = this.opts;
    const { heartbeat, live } = ctx;
    const letters: DeadLetter[] = [];
    let work = segment;
    let outageAttempt = 0;
    while (work.length > 0) {
      const applied = await applier.applyAll(
        work.map((p) => (p.error ? NO_OPS : p.ops)),
        { heartbeat, live },
      );
      const results = work.map((p, i) => p.error ?? applied[i]!);
      // A bug, or something only an operator can fix: stop, commit nothing of this segment.
      const fatal = results.find(
        (r): r is Error => r instanceof Error && (errorKind(r) === 'programmer' || errorKind(r) === 'fatal'),
      );
      if (fatal) throw fatal;
      const again: Pending[] = [];
      let outage: Error | undefined;
      const now = Date.now();
      const tally = new RoundTally();
      for (let i = 0; i < work.length; i++) {
        const p = work[i]!;
        const r = results[i]!;
        if (!(r instanceof Error)) {
          this.recordApplied(p, r, tally);
        } else if (errorKind(r) === 'message') {
          // The message's own fault: retried within its budget, then dead-lettered.
          p.attempts++;
          p.firstFailureMs ??= now;
          if (p.attempts < config.consumer.maxAttempts) again.push(p);
          else letters.push({ message: p.message, info: failureInfo(p, r, ctx, now) });
        } else {
          // Redis itself is unavailable: nobody's fault, no attempt counted, retried until it is back.
          outage = r;
          again.push(p);
        }
      }
      if (!tally.empty) events.emit('applied', tally.result(ctx.partition));
      if (again.length === 0) break;
      if (!live()) return false;
      let delay: number;
      if (outage) {
        this.enterOutage(outage, ++outageAttempt);
        delay = backoffDelay(retryPolicy, outageAttempt);
        events.emit('retrying', { partition: ctx.partition, reason: 'redis_unavailable', count: 1 });
      } else {
        delay = backoffDelay(retryPolicy, Math.max(...again.map((p) => p.attempts)));
        events.emit('retrying', { partition: ctx.partition, reason: 'message', count: again.length });
      }
      if (!(await pause(delay, this.opts.signal))) return false;
      await heartbeat().catch(() => undefined);
      work = again;
    }
    this.leaveOutage();
    if (letters.length > 0) await this.writeDeadLetters(ctx, letters);
    return true;
  }

  /**
   * Decodes and plans one message. A malformed event becomes a MessageError (dead-lettered after its
   * attempts); a change of a table this config does not map is skipped and counted; a bug in the
   * planner stays a bug.
   */
  private plan(message: KafkaMessage, skipped: { unmapped: number }): Pending {
    let event: ChangeEvent;
    try {
      event = decodeChangeEvent(message.value);
    } catch (err) {
      if (isProgrammerError(err)) throw err;
      const error = err instanceof MessageError ? err : new MessageError(errorMessage(err), { cause: err });
      return pending(message, undefined, UNMAPPED, NO_OPS, error);
    }
    const table = `${event.db}.${event.table}`;
    const mapping = this.mappings.get(table);
    if (!mapping) {
      skipped.unmapped++;
      if (this.unmappedReported.size < MAX_REPORTED_TABLES && !this.unmappedReported.has(table)) {
        this.unmappedReported.add(table);
        this.opts.logger.warn(
          { table, offset: message.offset },
          'change of a table the config does not map; skipped',
        );
      }
      return pending(message, event, UNMAPPED, NO_OPS);
    }
    try {
      return pending(message, event, table, planCacheOps(event, mapping));
    } catch (err) {
      if (err instanceof MessageError) return pending(message, event, table, NO_OPS, err);
      // The planner is pure: anything but a MessageError from it is a bug.
      throw isProgrammerError(err)
        ? err
        : new ProgrammerError(`planning a change: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Counts an applied change and offers it to the audit. */
  private recordApplied(p: Pending, outcomes: OpOutcome[], tally: RoundTally): void {
    const e = p.event;
    if (!e) return;
    const table = p.table;
    tally.change(table, e.op);
    for (let i = 0; i < outcomes.length; i++) {
      const o = outcomes[i]!;
      tally.operation(p.ops[i]?.kind ?? 'unknown', o);
      if (o === 'stale') tally.staleWrite(table);
    }
    // Other programs may write the topic: a missing or odd ts_ms skips the sample, nothing more.
    const readAt = (e as { ts_ms?: unknown }).ts_ms;
    if (typeof readAt === 'number' && Number.isFinite(readAt)) {
      tally.latencies.push(Math.max(0, (Date.now() - readAt) / 1000));
    }
    this.opts.auditor.offer(e, p.ops, outcomes);
  }

  /** The `table` label: a mapped table's name, else `unmapped`, so label values stay bounded. */
  private tableLabel(e: Pick<ChangeEvent, 'db' | 'table'>): string {
    const table = `${e.db}.${e.table}`;
    return this.mappings.has(table) ? table : UNMAPPED;
  }

  private async writeDeadLetters(ctx: BatchContext, letters: DeadLetter[]): Promise<void> {
    const { deadLetters, config, logger } = this.opts;
    await retry(
      async () => {
        try {
          await deadLetters.write(letters);
        } catch (err) {
          throw classifyKafkaError(err, `the dead-letter topic ${config.kafka.dlqTopic}`);
        }
      },
      this.opts.retryPolicy,
      {
        signal: this.opts.signal,
        aborted: () => !ctx.live(),
        onRetry: (err, attempt) =>
          logger.warn({ err: errorMessage(err), attempt }, 'could not write dead letters; retrying'),
      },
    );
    const written = new Map<string, { table: string; errorClass: string; count: number }>();
    for (const { message, info } of letters) {
      const event = safeDecode(message);
      const table = event ? this.tableLabel(event) : 'undecodable';
      const errorClass = info.error.name;
      const key = `${table}\u0000${errorClass}`;
      const counted = written.get(key);
      if (counted) counted.count++;
      else written.set(key, { table, errorClass, count: 1 });
      logger.error(
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
    this.opts.events.emit('deadLettered', { partition: ctx.partition, letters: [...written.values()] });
  }

  private enterOutage(err: Error | undefined, attempt: number): void {
    if (this.outages++ === 0) this.opts.onOutage();
    // Once when it starts, then now and then: an outage is one event, not one per retry.
    if (attempt === 1 || attempt % 20 === 0)
      this.opts.logger.warn(
        { err: err?.message, attempt },
        'Redis unavailable; holding the partition until it is back',
      );
  }

  private leaveOutage(): void {
    if (this.outages === 0) return;
    this.outages = 0;
    this.opts.onOutage();
    this.opts.logger.info('Redis is back; applying again');
  }
}

/** The counts of one Redis round, sent as one `applied` event. */
class RoundTally {
  readonly latencies: number[] = [];
  private readonly changes = new Map<string, { table: string; op: string; count: number }>();
  /** Per op kind: how many were applied, how many stale. */
  private readonly operations = new Map<string, { applied: number; stale: number }>();
  private readonly stale = new Map<string, { table: string; count: number }>();

  change(table: string, op: string): void {
    const key = `${table}\u0000${op}`;
    const counted = this.changes.get(key);
    if (counted) counted.count++;
    else this.changes.set(key, { table, op, count: 1 });
  }

  operation(kind: string, result: OpOutcome): void {
    let counted = this.operations.get(kind);
    if (!counted) this.operations.set(kind, (counted = { applied: 0, stale: 0 }));
    counted[result]++;
  }

  staleWrite(table: string): void {
    const counted = this.stale.get(table);
    if (counted) counted.count++;
    else this.stale.set(table, { table, count: 1 });
  }

  /** Nothing applied (every change of the round failed, or none was a change event). */
  get empty(): boolean {
    return this.changes.size === 0;
  }

  result(partition: number): AppliedRound {
    return {
      partition,
      changes: [...this.changes.values()],
      operations: [...this.operations].flatMap(([kind, counts]) =>
        (['applied', 'stale'] as const)
          .filter((result) => counts[result] > 0)
          .map((result) => ({ kind, result, count: counts[result] })),
      ),
      stale: [...this.stale.values()],
      latencies: this.latencies,
    };
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

function failureInfo(p: Pending, error: Error, ctx: BatchContext, now: number): FailureInfo {
  return {
    error,
    attempts: p.attempts,
    topic: ctx.topic,
    partition: ctx.partition,
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
