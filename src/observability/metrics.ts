import type { EventEmitter } from 'node:events';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ConsumerEvents } from '../consumer/change-consumer.js';
import type { TailerEvents } from '../tailer/tailer.js';
import { binlogFileIndex } from '../core/version.js';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * Every series cachesync exports, prefixed `cachesync_`. Labels are bounded: table, op, kind,
 * result, partition, error class; never a key or a row value.
 */
export class Metrics {
  readonly registry = new Registry();

  // tailer
  readonly rowsRead = this.counter('cachesync_binlog_rows_read_total', 'Row changes read from the binlog', [
    'table',
    'op',
  ]);
  readonly sourceLag = this.gauge(
    'cachesync_source_lag_seconds',
    'Now minus the commit time of the last change read',
  );
  readonly binlogReconnects = this.counter(
    'cachesync_binlog_reconnects_total',
    'Times the binlog connection was re-opened',
  );
  readonly bufferedEvents = this.gauge(
    'cachesync_tailer_buffered_events',
    'Changes read and not yet acknowledged by Kafka',
  );
  readonly sourcePaused = this.gauge(
    'cachesync_tailer_paused',
    '1 while binlog reading is paused for backpressure',
  );
  readonly publishBatches = this.counter(
    'cachesync_publish_batches_total',
    'Produce requests sent to Kafka',
    ['result'],
  );
  readonly publishBatchSize = this.histogram(
    'cachesync_publish_batch_size',
    'Messages per produce request',
    [],
    [1, 10, 50, 100, 250, 500, 1000, 2000, 5000],
  );
  readonly publishLatency = this.histogram(
    'cachesync_publish_latency_seconds',
    'Produce request time, until acknowledged',
    [],
    LATENCY_BUCKETS,
  );
  readonly checkpointTimestamp = this.gauge(
    'cachesync_checkpoint_timestamp_seconds',
    'Commit time of the transaction the stored checkpoint points after',
  );
  readonly sourceEpoch = this.gauge(
    'cachesync_source_epoch',
    'Source epoch the tailer reads in: it moves on after a failover, RESET MASTER or restore',
  );
  readonly checkpointPosition = this.gauge(
    'cachesync_checkpoint_position',
    'Binlog file index and offset of the stored checkpoint',
    ['part'],
  );

  // consumer
  readonly consumerLag = this.gauge(
    'cachesync_consumer_lag_messages',
    'High watermark minus the next offset to apply',
    ['partition'],
  );
  readonly changesApplied = this.counter(
    'cachesync_changes_applied_total',
    'Change events applied to Redis',
    ['table', 'op'],
  );
  readonly cacheOps = this.counter(
    'cachesync_cache_operations_total',
    'Cache operations by kind and result',
    ['kind', 'result'],
  );
  readonly staleSkipped = this.counter(
    'cachesync_stale_changes_skipped_total',
    'Writes skipped because Redis held a newer change',
    ['table'],
  );
  readonly retries = this.counter('cachesync_retries_total', 'Retries, by what was retried and why', [
    'stage',
    'reason',
  ]);
  readonly dlqMessages = this.counter(
    'cachesync_dlq_messages_total',
    'Messages written to the dead-letter topic',
    ['table', 'error_class'],
  );
  readonly redeletesPending = this.gauge(
    'cachesync_redeletes_pending',
    'Delayed deletes scheduled and not yet run',
  );
  readonly redeletesRun = this.counter('cachesync_redeletes_total', 'Delayed deletes run');
  readonly endToEnd = this.histogram(
    'cachesync_end_to_end_latency_seconds',
    'From reading a change in the binlog to applying it in Redis',
    [],
    LATENCY_BUCKETS,
  );
  readonly changesSkipped = this.counter(
    'cachesync_changes_skipped_total',
    'Change events skipped without applying them, by reason (unmapped_table)',
    ['reason'],
  );
  readonly consumerPaused = this.gauge(
    'cachesync_consumer_paused',
    '1 while applying is paused by a Redis outage',
  );

  // audit
  readonly auditChecked = this.counter(
    'cachesync_audit_checked_total',
    'Sampled refresh keys compared with their row after the audit delay',
    ['table'],
  );
  readonly auditInconsistent = this.counter(
    'cachesync_audit_inconsistent_total',
    'Sampled keys that still differed from their row once the pipeline had time to catch up (missing or stale)',
    ['table', 'kind'],
  );

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry, prefix: 'cachesync_' });
      // prom-client exports these gauges with a `_total` suffix, which Prometheus reserves for
      // counters (promtool complains); the same numbers are in the `nodejs_active_*{type}` gauges.
      for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total'])
        this.registry.removeSingleMetric(`cachesync_nodejs_${name}`);
    }
  }

  private counter<L extends string>(name: string, help: string, labelNames: L[] = []) {
    return new Counter<L>({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: L[] = []) {
    return new Gauge<L>({ name, help, labelNames, registers: [this.registry] });
  }

  private histogram<L extends string>(name: string, help: string, labelNames: L[], buckets: number[]) {
    return new Histogram<L>({ name, help, labelNames, buckets, registers: [this.registry] });
  }
}

/** Turns a tailer's events into its series, with the same guarantee as {@link observeConsumer}. */
export function observeTailer(tailer: Pick<EventEmitter<TailerEvents>, 'on'>, metrics: Metrics): void {
  tailer.on(
    'read',
    safely(({ table, op, rows }) => metrics.rowsRead.inc({ table, op }, rows)),
  );
  tailer.on(
    'sourceLag',
    safely((seconds) => metrics.sourceLag.set(seconds)),
  );
  tailer.on(
    'buffered',
    safely((changes) => metrics.bufferedEvents.set(changes)),
  );
  tailer.on(
    'sourcePaused',
    safely((paused) => metrics.sourcePaused.set(paused ? 1 : 0)),
  );
  tailer.on(
    'reconnect',
    safely(() => metrics.binlogReconnects.inc()),
  );
  tailer.on(
    'epoch',
    safely((epoch) => metrics.sourceEpoch.set(epoch)),
  );
  tailer.on(
    'publishAttempt',
    safely(({ ok, seconds }) => {
      metrics.publishLatency.observe(seconds);
      metrics.publishBatches.inc({ result: ok ? 'ok' : 'error' });
    }),
  );
  tailer.on(
    'published',
    safely(({ messages }) => metrics.publishBatchSize.observe(messages)),
  );
  tailer.on(
    'publishRetry',
    safely(() => metrics.retries.inc({ stage: 'publish', reason: 'kafka' })),
  );
  tailer.on(
    'deadLettered',
    safely(({ table, errorClass }) => metrics.dlqMessages.inc({ table, error_class: errorClass })),
  );
  tailer.on(
    'checkpointSaved',
    safely((cp) => {
      metrics.checkpointTimestamp.set(cp.commitTsMs / 1000);
      metrics.checkpointPosition.set({ part: 'file' }, binlogFileIndex(cp.file));
      metrics.checkpointPosition.set({ part: 'offset' }, cp.pos);
    }),
  );
}

/**
 * Turns a consumer's events into its series. Each event updates them once (a round's counts, a
 * retry round), and a metric never throws into the loop that emitted the event: a sample it cannot
 * take is lost, nothing more.
 */
export function observeConsumer(consumer: Pick<EventEmitter<ConsumerEvents>, 'on'>, metrics: Metrics): void {
  // Lag is reported for the partitions this member holds now, not for those a rebalance took away.
  consumer.on(
    'joined',
    safely(() => metrics.consumerLag.reset()),
  );
  consumer.on(
    'lag',
    safely(({ partition, messages }) => metrics.consumerLag.set({ partition: String(partition) }, messages)),
  );
  consumer.on(
    'applied',
    safely((round) => {
      for (const { table, op, count } of round.changes) metrics.changesApplied.inc({ table, op }, count);
      for (const { kind, result, count } of round.operations) metrics.cacheOps.inc({ kind, result }, count);
      for (const { table, count } of round.stale) metrics.staleSkipped.inc({ table }, count);
      for (const seconds of round.latencies) metrics.endToEnd.observe(seconds);
    }),
  );
  consumer.on(
    'skipped',
    safely(({ reason, count }) => metrics.changesSkipped.inc({ reason }, count)),
  );
  consumer.on(
    'retrying',
    safely(({ reason, count }) => metrics.retries.inc({ stage: 'apply', reason }, count)),
  );
  consumer.on(
    'redeletesFull',
    safely(() => metrics.retries.inc({ stage: 'apply', reason: 'redeletes_full' })),
  );
  consumer.on(
    'deadLettered',
    safely(({ letters }) => {
      for (const { table, errorClass, count } of letters)
        metrics.dlqMessages.inc({ table, error_class: errorClass }, count);
    }),
  );
  consumer.on(
    'redeletesRun',
    safely((count) => metrics.redeletesRun.inc(count)),
  );
  consumer.on(
    'redeletesPending',
    safely((count) => metrics.redeletesPending.set(count)),
  );
  consumer.on(
    'paused',
    safely((paused) => metrics.consumerPaused.set(paused ? 1 : 0)),
  );
  consumer.on(
    'audited',
    safely(({ table, checked, inconsistent }) => {
      metrics.auditChecked.inc({ table }, checked);
      for (const { kind, count } of inconsistent) metrics.auditInconsistent.inc({ table, kind }, count);
    }),
  );
}

/** A listener that swallows what its update throws: metrics are best effort, the loop goes on. */
function safely<A extends unknown[]>(update: (...args: A) => void): (...args: A) => void {
  return (...args) => {
    try {
      update(...args);
    } catch {
      // The sample is lost.
    }
  };
}
