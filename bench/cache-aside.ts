/**
 * CacheAside benchmark: what the guarded reader costs next to the plain GET / SET, on a real Redis
 * of its own. Prints `get` latency on hits and misses and the Redis round trips per get.
 *
 *   npm run bench:client -- [--keys N] [--json] [--keep-stack]
 *
 * Gets run one at a time, so a get's latency is its round trips plus Redis' and this process' work;
 * the loader returns a fixed 200-byte JSON string at once, so the database is not measured.
 */
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { LocalStack, REPO_ROOT } from '../scripts/local-stack/local-stack.js';
import { CacheAside, type CacheAsideOptions } from '../src/client/index.js';
import { summarize, type Summary } from './stats.js';

const USAGE = `usage: npm run bench:client -- [options]

  --keys N        distinct keys per workload (each is missed once, then hit once), default 5000
  --json          print the figures as JSON instead of a table
  --keep-stack    leave Redis running afterwards
  -h, --help      this text

Environment: CACHESYNC_BENCH_BASE_PORT (default 24500; Redis on +1, like npm run bench).`;

const VALUE = JSON.stringify({ id: 1, email: 'ann@example.com', name: 'Ann', note: 'x'.repeat(130) });
/** A version in the consumers' form, so each key has a guard as a key cachesync maps does. */
const GUARD_VERSION = '1:2:1159:1';

interface Row {
  pattern: string;
  hit: Summary | undefined;
  miss: Summary | undefined;
  /** Redis commands sent per get (each a round trip: gets run one at a time). */
  hitRoundTrips: number;
  missRoundTrips: number;
}

/** Counts the commands a client sends: with one get at a time, each is a round trip. */
function countCommands(redis: Redis): { count: () => number } {
  let sent = 0;
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = (...args: Parameters<Redis['sendCommand']>) => {
    sent++;
    return send(...args);
  };
  return { count: () => sent };
}

async function measure(
  keys: readonly string[],
  counter: { count: () => number },
  get: (key: string) => Promise<unknown>,
): Promise<{ latency: Summary | undefined; roundTrips: number }> {
  const samples: number[] = [];
  const before = counter.count();
  for (const key of keys) {
    const t0 = performance.now();
    await get(key);
    samples.push(performance.now() - t0);
  }
  return { latency: summarize(samples), roundTrips: (counter.count() - before) / keys.length };
}

async function run(redis: Redis, n: number): Promise<Row[]> {
  const counter = countCommands(redis);
  const loader = () => Promise.resolve(VALUE);
  const rows: Row[] = [];
  const keysOf = (name: string) => Array.from({ length: n }, (_, i) => `bench:${name}:${i}`);

  const plainGet = async (key: string) => {
    const cached = await redis.get(key);
    if (cached !== null) return cached;
    const value = await loader();
    await redis.set(key, value);
    return value;
  };
  const variants: Array<[string, CacheAsideOptions | undefined]> = [
    ['plain GET, loader, SET', undefined],
    ['CacheAside', {}],
    [
      "CacheAside { ttl: '1h', ttlJitter: 0.1, missTtl: '30s', loadLock: '2s' }",
      { ttl: '1h', ttlJitter: 0.1, missTtl: '30s', loadLock: '2s' },
    ],
  ];
  for (const [i, [pattern, opts]] of variants.entries()) {
    const keys = keysOf(`v${i}`);
    const cache = opts === undefined ? undefined : new CacheAside(redis, opts);
    const get = cache ? (key: string) => cache.get(key, loader) : plainGet;
    if (cache) {
      // Every key has a guard, as a key cachesync has changed does; and the scripts are loaded.
      const pipeline = redis.pipeline();
      for (const key of keys) pipeline.set(cache.guardKey(key), GUARD_VERSION);
      await pipeline.exec();
    }
    await get(`bench:warm-up:${i}`);
    const miss = await measure(keys, counter, get);
    const hit = await measure(keys, counter, get);
    rows.push({
      pattern,
      hit: hit.latency,
      miss: miss.latency,
      hitRoundTrips: hit.roundTrips,
      missRoundTrips: miss.roundTrips,
    });
  }
  return rows;
}

function formatText(rows: readonly Row[], n: number): string {
  const ms = (s: Summary | undefined) =>
    s ? `p50 ${s.p50.toFixed(3)}  p90 ${s.p90.toFixed(3)}  p99 ${s.p99.toFixed(3)}` : '-';
  const plain = rows[0]!;
  const lines = [
    `CacheAside benchmark: ${n} keys per pattern, one get at a time, loader returns ${VALUE.length} bytes at once`,
    '',
  ];
  for (const row of rows) {
    lines.push(row.pattern);
    lines.push(`  hit   ms ${ms(row.hit)}   round trips ${row.hitRoundTrips.toFixed(2)}`);
    lines.push(
      `  miss  ms ${ms(row.miss)}   round trips ${row.missRoundTrips.toFixed(2)}` +
        (row === plain ? '' : ` (extra vs plain: ${(row.missRoundTrips - plain.missRoundTrips).toFixed(2)})`),
    );
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        keys: { type: 'string', default: '5000' },
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
  const n = Number(values.keys);
  if (!Number.isInteger(n) || n < 1) {
    console.error(
      `--keys: got ${JSON.stringify(values.keys)}; expected a whole number of 1 or more\n\n${USAGE}`,
    );
    return 2;
  }
  const stack = new LocalStack({
    dir: join(REPO_ROOT, '.stack', 'bench-client'),
    basePort: Number(process.env.CACHESYNC_BENCH_BASE_PORT ?? 24500),
    log: (msg) => console.error(`[stack] ${msg}`),
  });
  const endpoints = await stack.up({ fresh: true, only: ['redis'] });
  const redis = new Redis(endpoints.redisUrl);
  try {
    const rows = await run(redis, n);
    console.log(values.json ? JSON.stringify({ keys: n, rows }, null, 2) : formatText(rows, n));
    return 0;
  } finally {
    redis.disconnect();
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
