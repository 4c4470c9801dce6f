import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../../src/runtime.js';
import { eventually, Pipeline, ready, Writer } from '../support/pipeline.js';

/** The consumers' audit, read from /metrics as an operator would. */
describe('the continuous audit', () => {
  let pipeline: Pipeline;
  let runtime: Runtime;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.items (id INT PRIMARY KEY, seq INT)`],
      mappings: `
  - table: {db}.items
    keys:
      - key: "{p}item:{id}"
        action: refresh
      - key: "{p}itemh:{id}"
        action: refresh
        format: hash`,
      extraYaml: 'audit:\n  sampleRate: 1\n  delay: 2s',
    });
    runtime = await pipeline.start();
    await ready(runtime);
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  async function metric(name: string): Promise<string[]> {
    const res = await fetch(`http://127.0.0.1:${runtime.metricsPort}/metrics`);
    return (await res.text()).split('\n').filter((l) => l.startsWith(name));
  }

  const total = (lines: string[], filter = '') =>
    lines.filter((l) => l.includes(filter)).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);

  it('counts nothing inconsistent on a healthy pipeline under live writes', async () => {
    const writer = new Writer(pipeline.endpoints, `${pipeline.db}.items`, { ratePerSecond: 100, rows: 200 });
    writer.start();
    await sleep(6000);
    await writer.stop();
    // Every sample has had its delays to settle.
    await eventually(
      async () => total(await metric('cachesync_audit_checked_total')),
      (n) => n >= 500,
      30_000,
    );
    await sleep(8000);
    expect(total(await metric('cachesync_audit_inconsistent_total'))).toBe(0);
  });

  it('counts planted inconsistencies within a minute, by table and kind', async () => {
    const { sql, db, p, redis } = pipeline;
    const ids = Array.from({ length: 10 }, (_, i) => 1000 + i);
    await sql.query(`INSERT INTO ${db}.items VALUES ${ids.map((id) => `(${id}, ${id})`).join(',')}`);
    await eventually(
      () => redis.exists(...ids.map((id) => `${p}itemh:${id}`)),
      (n) => n === 10,
      10_000,
    );
    // Planted behind cachesync's back, before the audit looks: 5 stale values, 5 missing hashes.
    for (const id of ids.slice(0, 5)) await redis.set(`${p}item:${id}`, '{"id":0,"seq":0}');
    for (const id of ids.slice(5)) await redis.del(`${p}itemh:${id}`);
    const started = Date.now();
    const lines = await eventually(
      () => metric('cachesync_audit_inconsistent_total'),
      (l) => total(l) >= 10,
      60_000,
    );
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(total(lines, `kind="stale"`)).toBe(5);
    expect(total(lines, `kind="missing"`)).toBe(5);
    expect(lines.every((l) => l.includes(`table="${db}.items"`))).toBe(true);
  });
});
