import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';

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
