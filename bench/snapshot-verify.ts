/**
 * Snapshot and verify benchmark: starts its own MariaDB, Redis and Kafka (LocalStack), fills a
 * table with `--rows` rows (default 1 000 000), then runs `snapshot` and `verify` in this process,
 * one after the other, and prints rows/s, keys/s and the peak RSS of each. Not a test: it measures;
 * it exits 1 only if verify found drift after the snapshot.
 *
 *   npm run bench:snapshot -- [--rows N] [--keep-stack]
 *
 * Environment: CACHESYNC_BENCH_BASE_PORT (default 24500; MariaDB on it, Redis +1, Kafka +2 and +3).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import mysql from 'mysql2/promise';
import { LocalStack, REPO_ROOT, stackConfigSections } from '../scripts/local-stack/local-stack.js';
import { runSnapshot } from '../src/commands/snapshot.js';
import { runVerify } from '../src/commands/verify.js';
import { loadConfig } from '../src/config/load.js';
import { silentLogger } from '../src/observability/logger.js';
import { ProcessSampler } from './process-sampler.js';

const STACK_DIR = join(REPO_ROOT, '.stack', 'bench-snapshot');
const ROWS_PER_STATEMENT = 5000;

function progress(msg: string): void {
  console.error(`[bench] ${msg}`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { rows: { type: 'string' }, 'keep-stack': { type: 'boolean', default: false } },
  });
  const rows = Number(values.rows ?? 1_000_000);
  if (!Number.isSafeInteger(rows) || rows < 1) {
    console.error(`--rows must be a whole number of at least 1; got "${values.rows}"`);
    return 2;
  }
  const basePort = Number(process.env.CACHESYNC_BENCH_BASE_PORT ?? 24500);
  const stack = new LocalStack({ dir: STACK_DIR, basePort, log: (m) => progress(`stack: ${m}`) });
  const sampler = new ProcessSampler(100);
  try {
    const endpoints = await stack.up({ fresh: true });
    const sql = await mysql.createConnection({ ...endpoints.mysql, multipleStatements: true });
    await sql.query('CREATE DATABASE bench');
    await sql.query(
      'CREATE TABLE bench.items (id BIGINT PRIMARY KEY, name VARCHAR(64), price DECIMAL(12,2), updated_at DATETIME(6))',
    );
    progress(`inserting ${rows} rows`);
    for (let start = 0; start < rows; start += ROWS_PER_STATEMENT) {
      const n = Math.min(ROWS_PER_STATEMENT, rows - start);
      const batch = Array.from(
        { length: n },
        (_, i) => `(${start + i}, 'item ${start + i}', ${((start + i) % 10_000) / 100}, NOW(6))`,
      );
      await sql.query(`INSERT INTO bench.items VALUES ${batch.join(',')}`);
    }
    await sql.end();

    mkdirSync(STACK_DIR, { recursive: true });
    const file = join(STACK_DIR, 'cachesync.yaml');
    writeFileSync(
      file,
      [
        ...stackConfigSections(endpoints, { name: 'bench' }),
        'log:',
        '  level: warn',
        'mappings:',
        '  - table: bench.items',
        '    keys:',
        '      - key: "item:{id}"',
        '        action: refresh',
      ].join('\n'),
    );
    const config = await loadConfig(file, { env: {} });
    const quiet = new Writable({ write: (_c, _e, done) => done() });

    sampler.start('snapshot');
    let t = performance.now();
    const snapshotCode = await runSnapshot(config, silentLogger(), {}, quiet, process.stderr);
    const snapshotSeconds = (performance.now() - t) / 1000;
    sampler.enter('verify');
    t = performance.now();
    let report = '';
    const capture = new Writable({
      write: (chunk: Buffer, _e, done) => {
        report += chunk.toString();
        done();
      },
    });
    const verifyCode = await runVerify(config, silentLogger(), { json: true }, capture, process.stderr);
    const verifySeconds = (performance.now() - t) / 1000;
    sampler.stop();
    const usage = sampler.usageByPhase;
    const checked = (JSON.parse(report) as { results: { checked: number }[] }).results[0]?.checked ?? 0;
    const mb = (b: number | undefined) => `${Math.round((b ?? 0) / 1024 / 1024)} MB`;
    console.log(`rows in table          ${rows}`);
    console.log(
      `snapshot               ${Math.round(rows / snapshotSeconds)} rows/s (${snapshotSeconds.toFixed(1)} s, exit ${snapshotCode}), peak RSS ${mb(usage.snapshot?.peakRssBytes)}`,
    );
    console.log(
      `verify                 ${Math.round(checked / verifySeconds)} keys/s (${checked} keys, ${verifySeconds.toFixed(1)} s, exit ${verifyCode}), peak RSS ${mb(usage.verify?.peakRssBytes)}`,
    );
    return verifyCode === 0 && snapshotCode === 0 ? 0 : 1;
  } finally {
    sampler.stop();
    if (!values['keep-stack']) await stack.down();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    progress(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
