import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Runtime, type Role } from '../../src/runtime.js';
import type { ServerName } from '../../scripts/local-stack/local-stack.js';
import { eventually, freePort, Pipeline, ready, stopChild, WRITER_TABLE } from '../support/pipeline.js';
import { testStack } from '../support/test-env.js';

const local = inject('localServers');
const stack = testStack();

describe('start-up rides out transient faults', () => {
  let pipeline: Pipeline;
  const rounds = Array.from({ length: 20 }, (_, i) => i);

  beforeAll(async () => {
    pipeline = await Pipeline.create(WRITER_TABLE);
    pipeline.redis.on('error', () => undefined);
  });

  afterAll(async () => {
    await pipeline?.cleanup();
    const admin = pipeline.kafka().admin();
    await admin.connect();
    await admin.deleteGroups(rounds.map((r) => `${pipeline.db}.r${r}`)).catch(() => undefined);
    await admin.disconnect();
    for (const r of rounds) rmSync(pipeline.configFile.replace(/\.yaml$/, `.r${r}.yaml`), { force: true });
  });

  it('a tailer and two consumers started with the first creation of their topics, 20 rounds: all ready, none exits', async () => {
    const { db, p, sql, redis } = pipeline;
    const yaml = readFileSync(pipeline.configFile, 'utf8');
    for (const round of rounds) {
      // Fresh topics and group each round: cachesync creates them at the moment the roles start.
      const name = `${db}.r${round}`;
      const file = pipeline.configFile.replace(/\.yaml$/, `.r${round}.yaml`);
      writeFileSync(
        file,
        yaml
          .replace(/topic: \S+\.changes/, `topic: ${name}.changes`)
          .replace(/dlqTopic: \S+/, `dlqTopic: ${name}.dlq`)
          .replace(/groupId: \S+/, `groupId: ${name}`),
      );
      const config = await loadConfig(file, { env: {} });
      const roles: Role[] = ['tailer', 'consumer', 'consumer'];
      const runtimes = await Promise.all(
        roles.map((role) =>
          Runtime.start(config, {
            role,
            logger: silentLogger(),
            metrics: new Metrics({ defaultMetrics: false }),
            graceMs: 5000,
          }),
        ),
      );
      pipeline.runtimes.push(...runtimes);
      for (const runtime of runtimes) await ready(runtime, 30_000);
      await sql.query(`INSERT INTO ${db}.t VALUES (${round}, ${round})`);
      await eventually(
        () => redis.get(`${p}t:${round}`),
        (v) => v !== null,
        20_000,
      );
      for (const runtime of runtimes) {
        expect(runtime.health.live()).toBe(true);
        await runtime.stop();
        await expect(runtime.done).resolves.toBeUndefined();
      }
    }
  }, 240_000);
});

describe('cachesync started before its servers', () => {
  let pipeline: Pipeline;
  let down: ServerName | undefined;

  beforeAll(async () => {
    pipeline = await Pipeline.create(WRITER_TABLE);
    pipeline.redis.on('error', () => undefined);
    // A first run stores the checkpoint: later starts resume from it, so nothing written while
    // cachesync waits for a server is lost.
    const runtime = await pipeline.start();
    await ready(runtime);
    await runtime.stop();
  });

  afterEach(async () => {
    // Never leave the shared stack without a server, whatever happened.
    if (down) await stack.start(down);
    down = undefined;
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  for (const [server, base] of [
    ['kafka', 10],
    ['mariadb', 20],
    ['redis', 30],
  ] as const) {
    it.runIf(local.includes(server))(
      `${server} started 5 s after cachesync: it waits (live, not ready), then streams, nothing lost`,
      async () => {
        const { db, p, sql, redis } = pipeline;
        await stack.stop(server);
        down = server;
        const port = await freePort();
        const child = pipeline.spawn(['run'], { METRICS_PORT: String(port) });
        let output = '';
        child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
        child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
        const probe = async (path: string) =>
          fetch(`http://127.0.0.1:${port}${path}`).then(
            (r) => r.status,
            () => 0,
          );
        try {
          await eventually(
            () => probe('/healthz'),
            (s) => s === 200,
            20_000,
          );
          await sleep(5000);
          expect(child.exitCode).toBeNull();
          expect(await probe('/healthz')).toBe(200);
          expect(await probe('/readyz')).toBe(503);
          // Written while cachesync waits (MariaDB itself is down in its case: written after).
          const ids = server === 'mariadb' ? [base + 2] : [base + 1, base + 2];
          if (server !== 'mariadb') await sql.query(`INSERT INTO ${db}.t VALUES (${base + 1}, 1)`);
          await stack.start(server);
          down = undefined;
          await eventually(
            () => probe('/readyz'),
            (s) => s === 200,
            90_000,
          ).catch((err: Error) => {
            throw new Error(`${err.message}\n${output.slice(-3000)}`);
          });
          await sql.query(`INSERT INTO ${db}.t VALUES (${base + 2}, 2)`);
          await eventually(
            () => redis.exists(...ids.map((id) => `${p}t:${id}`)),
            (n) => n === ids.length,
            30_000,
          );
          expect(child.exitCode).toBeNull();
        } finally {
          await stopChild(child, 'SIGTERM');
        }
      },
      150_000,
    );
  }
});
