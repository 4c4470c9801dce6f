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
});
