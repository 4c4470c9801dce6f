import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../../src/runtime.js';
import {
  eventually,
  freePort,
  Pipeline,
  stopChild,
  Writer,
  type Committed,
  WRITER_TABLE,
} from '../support/pipeline.js';

/** The newest committed seq of each row among `writes`. */
function newest(writes: Committed[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const w of writes) out.set(w.id, Math.max(out.get(w.id) ?? -1, w.seq));
  return out;
}

/** True when Redis holds, for every row, at least the seq `wanted` names. */
async function redisHas(pipeline: Pipeline, wanted: Map<number, number>): Promise<boolean> {
  const ids = [...wanted.keys()];
  if (ids.length === 0) return true;
  const values = await pipeline.redis.mget(...ids.map((id) => `${pipeline.p}t:${id}`));
  return ids.every((id, i) => {
    const v = values[i];
    return v !== null && v !== undefined && (JSON.parse(v) as { seq: number }).seq >= wanted.get(id)!;
  });
}

/**
 * Kills `victim` with SIGKILL under a write load and starts it again at once. Returns the seconds
 * from the restart until Redis holds every change committed up to the restart (the last change
 * before the kill among them) and a change committed after it.
 */
async function killAndRestart(
  pipeline: Pipeline,
  writer: Writer,
  victim: ChildProcess,
  role: Role,
  port: number,
): Promise<{ seconds: number; child: ChildProcess }> {
  await stopChild(victim, 'SIGKILL');
  const restartedAt = Date.now();
  const child = pipeline.spawn(['run', '--role', role], { METRICS_PORT: String(port) });
  // With CACHESYNC_TEST_LOG set, the restarted process's log shows where its seconds go.
  if (process.env.CACHESYNC_TEST_LOG) {
    child.stdout?.on('data', (d: Buffer) => process.stderr.write(`[restarted] ${d.toString()}`));
    child.stderr?.on('data', (d: Buffer) => process.stderr.write(`[restarted] ${d.toString()}`));
  }
  const before = newest(writer.committed.slice());
  const committedAtRestart = writer.committed.length;
  await eventually(
    async () => {
      const after = writer.committed.slice(committedAtRestart);
      const latest = after.at(-1);
      if (!latest || !(await redisHas(pipeline, before))) return false;
      return redisHas(pipeline, new Map([[latest.id, latest.seq]]));
    },
    (done) => done,
    30_000,
  );
  return { seconds: (Date.now() - restartedAt) / 1000, child };
}

describe('recovery after a kill -9 under load', () => {
  let pipeline: Pipeline;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      ...WRITER_TABLE,
      // As low as the test broker allows (group.min.session.timeout.ms=1000): a dead member's
      // partitions move after this long.
      extraYaml:
        'consumer:\n  retryInitial: 20ms\n  retryMax: 500ms\n  sessionTimeout: 3s\n  heartbeatInterval: 1s',
    });
  });

  afterAll(async () => {
    for (const child of children) await stopChild(child, 'SIGKILL');
    await pipeline?.cleanup();
  });

  it('of the one process running both roles: every change up to the restart and after it in Redis within 5 s', async () => {
    const port = await freePort();
    const first = await pipeline.spawnReady('all', port);
    children.push(first);
    const writer = new Writer(pipeline.endpoints, `${pipeline.db}.t`, { ratePerSecond: 50, rows: 40 });
    writer.start();
    await sleep(3000);
    const { seconds, child } = await killAndRestart(pipeline, writer, first, 'all', port);
    children.push(child);
    await writer.stop();
    console.log(
      `kill -9 of the process running both roles: caught up ${seconds.toFixed(1)} s after the restart`,
    );
    await eventually(
      () => redisHas(pipeline, newest(writer.committed)),
      (done) => done,
      30_000,
    );
    await stopChild(child, 'SIGTERM');
    expect(seconds).toBeLessThanOrEqual(5);
  }, 120_000);

  it('of one of two consumer processes: every change up to the restart and after it in Redis within 5 s', async () => {
    const tailer = await pipeline.spawnReady('tailer', await freePort());
    const port = await freePort();
    const [a, b] = await Promise.all([
      pipeline.spawnReady('consumer', port),
      pipeline.spawnReady('consumer', await freePort()),
    ]);
    children.push(tailer, a, b);
    const writer = new Writer(pipeline.endpoints, `${pipeline.db}.t`, { ratePerSecond: 50, rows: 40 });
    writer.start();
    await sleep(3000);
    const { seconds, child } = await killAndRestart(pipeline, writer, a, 'consumer', port);
    children.push(child);
    await writer.stop();
    console.log(
      `kill -9 of one of two consumer processes: caught up ${seconds.toFixed(1)} s after the restart`,
    );
    await eventually(
      () => redisHas(pipeline, newest(writer.committed)),
      (done) => done,
      30_000,
    );
    for (const c of [child, b, tailer]) await stopChild(c, 'SIGTERM');
    expect(seconds).toBeLessThanOrEqual(5);
  }, 120_000);
});
