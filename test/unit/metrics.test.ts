import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { ConsumerEvents } from '../../src/consumer/change-consumer.js';
import { Metrics, observeConsumer } from '../../src/observability/metrics.js';

describe('Metrics', () => {
  it('exports every series with the cachesync_ prefix, the process metrics included', async () => {
    const metrics = new Metrics();
    metrics.rowsRead.inc({ table: 'shop.users', op: 'c' });
    const text = await metrics.registry.metrics();
    expect(text).toContain('cachesync_binlog_rows_read_total{table="shop.users",op="c"} 1');
    expect(text).toContain('cachesync_process_resident_memory_bytes');
    expect(text).toContain('cachesync_nodejs_eventloop_lag_seconds');
    const names = text
      .split('\n')
      .filter((l) => l.startsWith('# TYPE '))
      .map((l) => l.split(' ')[2]);
    expect(names.length).toBeGreaterThan(20);
    expect(names.filter((n) => !n?.startsWith('cachesync_'))).toEqual([]);
  });

  it('names no gauge with the _total suffix Prometheus keeps for counters; promtool agrees', async () => {
    const metrics = new Metrics();
    metrics.changesSkipped.inc({ reason: 'unmapped_table' });
    const text = await metrics.registry.metrics();
    const gauges = text
      .split('\n')
      .filter((l) => l.startsWith('# TYPE ') && l.endsWith(' gauge'))
      .map((l) => l.split(' ')[2]);
    expect(gauges.filter((n) => n?.endsWith('_total'))).toEqual([]);
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    if (promtool.error) return; // promtool not installed: the name check above still holds
    expect(`${promtool.stdout}${promtool.stderr}`.trim()).toBe('');
    expect(promtool.status).toBe(0);
  });
});

describe('observeConsumer', () => {
  it("turns a round's counts into the consumer's series, once per round", async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    const consumer = new EventEmitter<ConsumerEvents>();
    observeConsumer(consumer, metrics);
    consumer.emit('applied', {
      partition: 0,
      changes: [
        { table: 'shop.users', op: 'c', count: 3 },
        { table: 'unmapped', op: 'u', count: 1 },
      ],
      operations: [
        { kind: 'set', result: 'applied', count: 2 },
        { kind: 'set', result: 'stale', count: 1 },
      ],
      stale: [{ table: 'shop.users', count: 1 }],
      latencies: [0.002, 0.004],
    });
    consumer.emit('skipped', { partition: 0, reason: 'unmapped_table', count: 2 });
    consumer.emit('retrying', { partition: 1, reason: 'message', count: 4 });
    consumer.emit('redeletesFull', { pending: 10, max: 10 });
    consumer.emit('deadLettered', {
      partition: 1,
      letters: [{ table: 'undecodable', errorClass: 'MessageError', count: 2 }],
    });
    consumer.emit('lag', { partition: 1, messages: 7 });
    consumer.emit('paused', true);
    consumer.emit('audited', {
      table: 'shop.users',
      checked: 5,
      inconsistent: [{ kind: 'stale', count: 1 }],
    });
    const text = await metrics.registry.metrics();
    for (const line of [
      'cachesync_changes_applied_total{table="shop.users",op="c"} 3',
      'cachesync_changes_applied_total{table="unmapped",op="u"} 1',
      'cachesync_cache_operations_total{kind="set",result="stale"} 1',
      'cachesync_stale_changes_skipped_total{table="shop.users"} 1',
      'cachesync_end_to_end_latency_seconds_count 2',
      'cachesync_changes_skipped_total{reason="unmapped_table"} 2',
      'cachesync_retries_total{stage="apply",reason="message"} 4',
      'cachesync_retries_total{stage="apply",reason="redeletes_full"} 1',
      'cachesync_dlq_messages_total{table="undecodable",error_class="MessageError"} 2',
      'cachesync_consumer_lag_messages{partition="1"} 7',
      'cachesync_consumer_paused 1',
      'cachesync_audit_checked_total{table="shop.users"} 5',
      'cachesync_audit_inconsistent_total{table="shop.users",kind="stale"} 1',
    ])
      expect(text).toContain(line);
    consumer.emit('joined', { partitions: 2, joinMs: 30 });
    expect((await metrics.consumerLag.get()).values).toEqual([]);
  });

  it('never throws into the loop that emits: a sample the metric refuses is lost', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    const consumer = new EventEmitter<ConsumerEvents>();
    observeConsumer(consumer, metrics);
    // prom-client refuses to decrease a counter and to observe NaN.
    expect(() => consumer.emit('redeletesRun', -1)).not.toThrow();
    expect(() =>
      consumer.emit('applied', { partition: 0, changes: [], operations: [], stale: [], latencies: [NaN] }),
    ).not.toThrow();
    expect((await metrics.redeletesRun.get()).values[0]?.value ?? 0).toBe(0);
  });
});
