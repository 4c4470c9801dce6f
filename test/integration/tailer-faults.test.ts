import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { testStack } from '../support/test-env.js';
import {
  eventually,
  freePort,
  missingOrDisordered,
  Pipeline,
  readTopic,
  ready,
  stopChild,
  Writer,
} from '../support/pipeline.js';

const local = inject('localServers');
const stack = testStack();

/** Every committed write reaches the change topic, in order per row: polls until it does. */
async function expectAllOnTopic(pipeline: Pipeline, writer: Writer, timeoutMs = 90_000): Promise<void> {
  const committed = writer.committed;
  expect(committed.length).toBeGreaterThan(50);
  const problems = await eventually(
    async () => missingOrDisordered(committed, await readTopic(pipeline.kafka(), pipeline.topic)),
    (p) => p.length === 0,
    timeoutMs,
  ).catch((err: Error) => [err.message]);
  expect(problems.slice(0, 10)).toEqual([]);
}

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return Math.round(kb / 1024);
}

describe('the tailer never loses a committed change', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [
        `CREATE TABLE {db}.t (id INT PRIMARY KEY, seq INT)`,
        `CREATE TABLE {db}.big (id INT PRIMARY KEY, v VARCHAR(40))`,
      ],
      mappings: `
  - table: {db}.t
    keys:
      - key: "{p}t:{id}"
        action: invalidate
  - table: {db}.big
    keys:
      - key: "{p}big:{id}"
        action: invalidate`,
      extraYaml: 'tailer:\n  maxBufferedEvents: 2000\n  linger: 1ms',
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  it('kill -9 of the tailer during a write load, three times: every change is on the topic, in row order', async () => {
    const port = await freePort();
    let tailer = await pipeline.spawnReady('tailer', port);
    const writer = new Writer(pipeline.endpoints, `${pipeline.db}.t`, { ratePerSecond: 150, rows: 40 });
    writer.start();
    for (let i = 0; i < 3; i++) {
      await sleep(2000 + Math.random() * 1500);
      await stopChild(tailer, 'SIGKILL');
      // Writes go on while it is down.
      await sleep(500);
      tailer = await pipeline.spawnReady('tailer', port);
    }
    await sleep(1500);
    await writer.stop();
    try {
      await expectAllOnTopic(pipeline, writer);
    } finally {
      await stopChild(tailer, 'SIGTERM');
    }
  });

  it.runIf(local.includes('mariadb'))(
    'MariaDB restarted during a load: the tailer reconnects and nothing is missing',
    async () => {
      const runtime = await pipeline.start('tailer');
      await ready(runtime);
      const writer = new Writer(pipeline.endpoints, `${pipeline.db}.t`, { ratePerSecond: 100, rows: 30 });
      writer.start();
      await sleep(1500);
      await stack.restart('mariadb');
      await sleep(3000);
      await writer.stop();
      await expectAllOnTopic(pipeline, writer);
      expect((await runtime.metrics.binlogReconnects.get()).values[0]?.value).toBeGreaterThan(0);
      await eventually(
        () => Promise.resolve(runtime.health.ready()),
        (r) => r,
      );
      await runtime.stop();
    },
  );

  it.runIf(local.includes('kafka'))(
    'Kafka stopped for 30 s during a load: the tailer pauses, recovers, and nothing is missing',
    async () => {
      const runtime = await pipeline.start('tailer');
      await ready(runtime);
      const writer = new Writer(pipeline.endpoints, `${pipeline.db}.t`, { ratePerSecond: 100, rows: 50 });
      writer.start();
      await sleep(1000);
      await stack.stop('kafka');
      const states = new Set<string>();
      const watch = setInterval(() => states.add(runtime.health.describe().tailer ?? ''), 100);
      await sleep(30_000);
      await stack.start('kafka');
      await eventually(
        () => Promise.resolve(runtime.health.ready()),
        (r) => r,
        90_000,
      );
      clearInterval(watch);
      await sleep(1000);
      await writer.stop();
      // 100 writes/s for 30 s with at most 2000 buffered: the binlog was paused, not buffered without bound.
      expect(states).toContain('paused');
      await expectAllOnTopic(pipeline, writer);
      await runtime.stop();
    },
    300_000,
  );

  it('a 300k-row transaction streams through with bounded memory; a kill during it replays it whole', async () => {
    const port = await freePort();
    let tailer = await pipeline.spawnReady('tailer', port, { NODE_OPTIONS: '' });
    const rows = 300_000;
    await pipeline.sql.query(
      `INSERT INTO ${pipeline.db}.big SELECT seq, CONCAT('row-', seq) FROM ${pipeline.db}.seq_1_to_${rows}`,
    );
    const admin = pipeline.kafka().admin();
    await admin.connect();
    const published = async () =>
      (await admin.fetchTopicOffsets(pipeline.topic)).reduce((sum, o) => sum + Number(o.high), 0);
    const before = await published();
    // Kill it part-way through the transaction.
    await eventually(published, (n) => n - before > rows / 3, 120_000);
    const peakFirst = peakRssMb(tailer.pid!);
    await stopChild(tailer, 'SIGKILL');
    const atKill = await published();
    tailer = await pipeline.spawnReady('tailer', port);
    // The restart resumes before the transaction, so it publishes the whole of it again.
    await eventually(published, (n) => n - atKill >= rows, 180_000);
    await sleep(1000);
    const peakSecond = peakRssMb(tailer.pid!);
    await stopChild(tailer, 'SIGTERM');
    await admin.disconnect();

    const events = await readTopic(pipeline.kafka(), pipeline.topic, 180_000);
    const ids = new Set(events.filter((e) => e.table === 'big').map((e) => (e.after as { id: number }).id));
    expect(ids.size).toBe(rows);
    console.log(
      `300k-row transaction: tailer peak RSS ${peakFirst} MB before the kill, ${peakSecond} MB after the replay`,
    );
    expect(Math.max(peakFirst, peakSecond)).toBeLessThan(400);
  }, 400_000);
});
