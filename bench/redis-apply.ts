/**
 * The consumers' Redis apply alone: what the version-guarded writes cost Redis per row, with no
 * Kafka and no database in the figures. Runs the consumers' own planner and applier on change
 * events made here, against a Redis of its own, and prints Redis CPU per row (INFO cpu) and the
 * Redis commands run per row (INFO commandstats, the script's own calls included).
 *
 *   npm run bench:apply -- [--rows N] [--runs N] [--json] [--keep-stack]
 *
 * Workloads, each on fresh keys: inserts (no key or guard yet), updates of those rows (every guard
 * older), and the inserts replayed (every guard newer: all skipped as stale), for the `both`
 * mapping of `npm run bench` (one JSON refresh key) and its `rich` one (JSON and hash refresh, and
 * an invalidate key with delayedRedelete, whose delayed deletes are run too, as if due at once).
 * Messages go in chunks of 500, as the consumers apply them.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { LocalStack, REPO_ROOT } from '../scripts/local-stack/local-stack.js';
import { loadConfig } from '../src/config/load.js';
import type { CompiledMapping } from '../src/config/types.js';
import { REDELETE_BATCH, RedisApplier } from '../src/consumer/redis-applier.js';
import { planCacheOps, type CacheOp } from '../src/core/cache-plan.js';
import type { ChangeEvent } from '../src/core/change-event.js';
import { makeVersion } from '../src/core/version.js';
import { spread, type Spread } from './stats.js';

const USAGE = `usage: npm run bench:apply -- [options]

  --rows N        rows per workload, default 50000
  --runs N        runs of every workload, default 3 (medians and ranges are printed)
  --json          print the figures as JSON instead of a table
  --keep-stack    leave Redis running afterwards
  -h, --help      this text

Environment: CACHESYNC_BENCH_BASE_PORT (default 24500; Redis on +1, like npm run bench).`;

/** Messages per applyAll call: the consumers' default chunk. */
const CHUNK = 500;

const MAPPINGS = `
mappings:
  - table: bench.both
    keys:
      - key: "item:{id}"
        action: refresh
        format: json
  - table: bench.rich
    keys:
      - key: "user:{id}"
        action: refresh
        format: json
      - key: "userh:{id}"
        action: refresh
        format: hash
      - key: "userx:{id}"
        action: invalidate
        delayedRedelete: 500ms
`;

type Workload = 'insert' | 'update' | 'replay';
const WORKLOADS: readonly Workload[] = ['insert', 'update', 'replay'];

interface Figures {
  mapping: string;
  workload: Workload;
  /** Redis CPU (user + sys, INFO cpu) per row, microseconds. */
  redisUsPerRow: number;
  /** Commands Redis ran per row: script calls and the commands the scripts ran. */
  commandsPerRow: number;
  /** This process' CPU per row (planning, encoding, replies), microseconds. */
  clientUsPerRow: number;
  rowsPerSecond: number;
}

function row(id: number, name: string): Record<string, unknown> {
  return { id, name, price: `${id % 1000}.99`, updated_at: '2026-12-05 10:00:00.123456' };
}

function event(table: string, op: 'c' | 'u', id: number, version: string, name: string): ChangeEvent {
  const after = row(id, name);
  return {
    op,
    db: 'bench',
    table,
    pk: { id },
    before: op === 'u' ? row(id, `old-${id}`) : null,
    after,
    source: { file: 'binlog.000001', pos: 4, ts_ms: 0, version },
    ts_ms: 0,
  };
}

async function redisCpu(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const num = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? NaN);
  return num('used_cpu_user') + num('used_cpu_sys');
}

async function commandCount(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  let calls = 0;
  for (const m of info.matchAll(/^cmdstat_([a-z|]+):calls=(\d+)/gm)) {
    if (m[1] !== 'info') calls += Number(m[2]);
  }
  return calls;
}

async function measure(
  redis: Redis,
  applier: RedisApplier,
  mapping: CompiledMapping,
  workload: Workload,
  rows: number,
  base: number,
): Promise<Figures> {
  const table = mapping.table.split('.')[1]!;
  // Inserts and their replay share epoch 1; the updates come later in the binlog (epoch 2).
  const events = (w: Workload) =>
    Array.from({ length: rows }, (_, i) => {
      const id = base + i;
      return w === 'update'
        ? event(table, 'u', id, makeVersion(2, 'binlog.000001', 4, i + 1), `new-${id}`)
        : event(table, 'c', id, makeVersion(1, 'binlog.000001', 4, i + 1), `name-${id}`);
    });
  // What the workload finds in Redis: nothing for the inserts, the inserts for the others.
  const prepare = async (list: ChangeEvent[]) => {
    for (let i = 0; i < list.length; i += CHUNK) {
      await applier.applyAll(list.slice(i, i + CHUNK).map((e) => planCacheOps(e, mapping)));
    }
  };
  if (workload !== 'insert') await prepare(events('insert'));
  if (workload === 'replay') await prepare(events('update'));
  const list = events(workload === 'replay' ? 'insert' : workload);

  const cpuBefore = await redisCpu(redis);
  const callsBefore = await commandCount(redis);
  const clientBefore = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < list.length; i += CHUNK) {
    const batch: CacheOp[][] = list.slice(i, i + CHUNK).map((e) => planCacheOps(e, mapping));
    const results = await applier.applyAll(batch);
    const failed = results.find((r) => r instanceof Error);
    if (failed) throw failed;
  }
  // The delayed deletes the workload scheduled, run as if they had all come due: in the consumers
  // they cost Redis as much again as scheduling them.
  const due = Number.MAX_SAFE_INTEGER;
  while ((await applier.runDueRedeletes(due)) === REDELETE_BATCH);
  const seconds = (performance.now() - started) / 1000;
  const client = process.cpuUsage(clientBefore);
  const calls = (await commandCount(redis)) - callsBefore - 1; // the INFO cpu between
  const cpu = (await redisCpu(redis)) - cpuBefore;
  return {
    mapping: table,
    workload,
    redisUsPerRow: (cpu * 1e6) / rows,
    commandsPerRow: calls / rows,
    clientUsPerRow: (client.user + client.system) / rows,
    rowsPerSecond: rows / seconds,
  };
}

function formatText(all: Figures[][], rows: number): string {
  const lines = [
    `Redis apply benchmark: ${rows} rows per workload, ${all.length} run(s), chunks of ${CHUNK} messages`,
    '',
  ];
  const first = all[0] ?? [];
  const fmt = (s: Spread | undefined, digits: number) =>
    s ? `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}..${s.max.toFixed(digits)})` : '-';
  lines.push(
    `${'mapping'.padEnd(8)}${'workload'.padEnd(10)}${'Redis us/row'.padEnd(24)}${'commands/row'.padEnd(15)}${'client us/row'.padEnd(24)}rows/s`,
  );
  first.forEach((f, i) => {
    const of = (pick: (x: Figures) => number) => spread(all.map((run) => pick(run[i]!)));
    lines.push(
      f.mapping.padEnd(8) +
        f.workload.padEnd(10) +
        fmt(
          of((x) => x.redisUsPerRow),
          1,
        ).padEnd(24) +
        fmt(
          of((x) => x.commandsPerRow),
          2,
        ).padEnd(15) +
        fmt(
          of((x) => x.clientUsPerRow),
          1,
        ).padEnd(24) +
        fmt(
          of((x) => x.rowsPerSecond),
          0,
        ),
    );
  });
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        rows: { type: 'string', default: '50000' },
        runs: { type: 'string', default: '3' },
        json: { type: 'boolean', default: false },
        'keep-stack': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const rows = Number(values.rows);
  const runs = Number(values.runs);
  for (const [flag, n] of [
    ['--rows', rows],
    ['--runs', runs],
  ] as const) {
    if (!Number.isInteger(n) || n < 1) {
      console.error(
        `${flag}: got ${JSON.stringify(values[flag.slice(2) as 'rows'])}; expected a whole number of 1 or more\n\n${USAGE}`,
      );
      return 2;
    }
  }
  const stack = new LocalStack({
    dir: join(REPO_ROOT, '.stack', 'bench-apply'),
    basePort: Number(process.env.CACHESYNC_BENCH_BASE_PORT ?? 24500),
    log: (msg) => console.error(`[stack] ${msg}`),
  });
  const endpoints = await stack.up({ fresh: true, only: ['redis'] });
  const dir = mkdtempSync(join(tmpdir(), 'cachesync-bench-apply-'));
  const redis = new Redis(endpoints.redisUrl);
  try {
    const file = join(dir, 'cachesync.yaml');
    writeFileSync(
      file,
      [
        "source: { host: 127.0.0.1, user: bench, password: '', serverId: 1 }",
        'kafka: { brokers: [127.0.0.1:9092], topic: bench.changes, dlqTopic: bench.dlq, groupId: bench }',
        `redis: { url: "${endpoints.redisUrl}" }`,
        MAPPINGS,
      ].join('\n'),
    );
    const config = await loadConfig(file);
    const applier = new RedisApplier(redis);
    const all: Figures[][] = [];
    let base = 1;
    for (let run = 0; run < runs; run++) {
      const figures: Figures[] = [];
      for (const mapping of config.mappings) {
        for (const workload of WORKLOADS) {
          console.error(`[bench] run ${run + 1}: ${mapping.table} ${workload}`);
          await redis.flushall();
          figures.push(await measure(redis, applier, mapping, workload, rows, base));
          base += rows;
        }
      }
      all.push(figures);
    }
    console.log(
      values.json ? JSON.stringify({ rows, chunk: CHUNK, runs: all }, null, 2) : formatText(all, rows),
    );
    return 0;
  } finally {
    redis.disconnect();
    rmSync(dir, { recursive: true, force: true });
    if (!values['keep-stack']) await stack.down(['redis']);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
