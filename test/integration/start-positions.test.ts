import type mysql from 'mysql2/promise';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import type { CompiledConfig, StartPosition } from '../../src/config/types.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Runtime } from '../../src/runtime.js';
import { eventually, Pipeline, readTopic, ready } from '../support/pipeline.js';

describe('source.start on a first start, and after a restart', () => {
  let pipeline: Pipeline;

  beforeEach(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.rows_ (id INT PRIMARY KEY, v INT)`],
      mappings: `
  - table: {db}.rows_
    keys:
      - key: "{p}row:{id}"
        action: refresh`,
    });
  });

  afterEach(async () => {
    await pipeline?.cleanup();
  });

  async function startAt(start: StartPosition): Promise<Runtime> {
    const config: CompiledConfig = { ...pipeline.config, source: { ...pipeline.config.source, start } };
    const runtime = await Runtime.start(config, {
      role: 'all',
      logger: silentLogger(),
      metrics: new Metrics({ defaultMetrics: false }),
      graceMs: 10_000,
    });
    pipeline.runtimes.push(runtime);
    await ready(runtime);
    return runtime;
  }

  async function expectRows(ids: number[]): Promise<void> {
    await eventually(
      async () => (await pipeline.keys()).length,
      (n) => n === ids.length,
    );
    expect(await pipeline.keys()).toEqual(ids.map((id) => `${pipeline.p}row:${id}`).sort());
  }

  /** The stored checkpoint: the file it names, and how many checkpoints were stored. */
  async function checkpoint(): Promise<{ file: unknown; count: number }> {
    const stored = await readTopic(pipeline.kafka(), `${pipeline.topic}.checkpoint`);
    return { file: stored.at(-1)?.file, count: stored.length };
  }

  it.each([
    ['a GTID', 'gtid'],
    ['beginning', 'beginning'],
  ])('%s: changes since that point are read, and a restart resumes from the checkpoint', async (_, kind) => {
    const { sql, db } = pipeline;
    if (kind === 'beginning' && inject('localServers').includes('mariadb')) {
      // The test stack's binlog holds every earlier test's rows (hundreds of thousands): keep only
      // a fresh file, so a start at the beginning reads this test's rows, not the whole run's.
      await sql.query('FLUSH BINARY LOGS');
      const [[head]] = await sql.query<mysql.RowDataPacket[]>('SHOW MASTER STATUS');
      await sql.query(`PURGE BINARY LOGS TO '${String(head?.File)}'`);
    }
    const [[pos]] = await sql.query<mysql.RowDataPacket[]>('SELECT @@GLOBAL.gtid_binlog_pos AS p');
    // Written before cachesync ever ran: only a start at or before them reads them.
    await sql.query(`INSERT INTO ${db}.rows_ VALUES (1, 1), (2, 2)`);
    const start: StartPosition =
      kind === 'gtid' ? { kind: 'gtid', gtidSet: String(pos?.p) } : { kind: 'beginning' };
    let runtime = await startAt(start);
    await expectRows([1, 2]);
    await sql.query(`INSERT INTO ${db}.rows_ VALUES (3, 3)`);
    await expectRows([1, 2, 3]);
    await runtime.stop();
    expect((await checkpoint()).file).toMatch(/\.\d+$/);

    // A restart resumes from its checkpoint, not from source.start again: nothing is read twice.
    await sql.query(`INSERT INTO ${db}.rows_ VALUES (4, 4)`);
    runtime = await startAt(start);
    await expectRows([1, 2, 3, 4]);
    await runtime.stop();
    const changes = await readTopic(pipeline.kafka(), pipeline.topic);
    const inserts = changes.filter((c) => c.op === 'c').map((c) => (c.after as { id: number }).id);
    expect(inserts.sort()).toEqual([1, 2, 3, 4]);
  });
});
