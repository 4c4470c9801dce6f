import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type mysql from 'mysql2/promise';

/** The columns of every bench table; rows get ids 1..rows (0 is the warm-up row). */
export const TABLE_COLUMNS =
  '(id BIGINT PRIMARY KEY, name VARCHAR(64), price DECIMAL(12,2), updated_at DATETIME(6))';

/** The values a row gets, so that its cached value can be checked. */
export function rowValues(id: number): { name: string; price: string } {
  return { name: `item-${id}`, price: `${Math.floor(id / 100)}.${String(id % 100).padStart(2, '0')}` };
}

/**
 * Inserts rows with ids 1..rows in multi-row INSERTs of `rowsPerStatement` rows, each statement in
 * its own transaction, one after another on one connection.
 */
export async function insertRows(
  sql: mysql.Connection,
  table: string,
  rows: number,
  rowsPerStatement: number,
): Promise<{ statements: number; seconds: number }> {
  const started = performance.now();
  let statements = 0;
  for (let first = 1; first <= rows; first += rowsPerStatement) {
    const last = Math.min(rows, first + rowsPerStatement - 1);
    const tuples: string[] = [];
    for (let id = first; id <= last; id++) {
      const { name, price } = rowValues(id);
      tuples.push(`(${id},'${name}',${price},NOW(6))`);
    }
    await sql.beginTransaction();
    await sql.query(`INSERT INTO ${table} (id, name, price, updated_at) VALUES ${tuples.join(',')}`);
    await sql.commit();
    statements++;
  }
  return { statements, seconds: (performance.now() - started) / 1000 };
}

/** A count that the pipeline drives up, read by polling: messages on the topic, changes applied. */
export interface Progress {
  /** What the count is, for progress and errors: "on the topic", "applied". */
  what: string;
  /** The count now, as an absolute figure (the watch subtracts its value at the start). */
  read: () => Promise<number>;
  pollMs: number;
}

export interface InsertAndWaitResult {
  statements: number;
  /** First INSERT until the last COMMIT returned. */
  insertSeconds: number;
  /** First INSERT until the count had grown by `rows`. */
  seconds: number;
}

const PROGRESS_EVERY_MS = 5000;
/** The longest wait between two reads of the count, while the end is far. */
const MAX_POLL_MS = 500;

/**
 * How long to wait before reading the count again: `pollMs` once the end is near, longer while it
 * is far (a third of the time the rate so far says is left, at most {@link MAX_POLL_MS}). A read
 * costs what it watches (a scrape of cachesync's /metrics, a request to the broker), so reading
 * every `pollMs` throughout would add to the figures; the end is still seen within `pollMs`, unless
 * the rate more than triples at the end.
 */
export function nextPollMs(pollMs: number, count: number, rows: number, elapsedMs: number): number {
  const leftMs = count > 0 ? ((rows - count) * elapsedMs) / count : Infinity;
  return Math.min(MAX_POLL_MS, Math.max(pollMs, leftMs / 3));
}

/**
 * Inserts `rows` rows (see insertRows) and, meanwhile, polls `progress` until it has grown by
 * `rows`. Fails when it stops growing for `stallMs` after the last commit.
 */
export async function insertAndWait(opts: {
  sql: mysql.Connection;
  table: string;
  rows: number;
  rowsPerStatement: number;
  progress: Progress;
  /** The count before the first INSERT. */
  base: number;
  /** Default 60 s. */
  stallMs?: number;
  log: (msg: string) => void;
}): Promise<InsertAndWaitResult> {
  const state: WatchState = { insertsDoneAt: undefined, aborted: false };
  const started = performance.now();
  const watched = watch(opts, started, state);
  // Its rejection is awaited below; until then it must not count as unhandled.
  watched.catch(() => undefined);
  let statements: number;
  try {
    ({ statements } = await insertRows(opts.sql, opts.table, opts.rows, opts.rowsPerStatement));
  } catch (err) {
    state.aborted = true;
    throw err;
  }
  state.insertsDoneAt = performance.now();
  const insertSeconds = (state.insertsDoneAt - started) / 1000;
  opts.log(
    `inserted ${opts.rows} rows in ${insertSeconds.toFixed(2)} s; waiting for every row ${opts.progress.what}`,
  );
  const doneAt = await watched;
  return { statements, insertSeconds, seconds: (doneAt - started) / 1000 };
}

interface WatchState {
  insertsDoneAt: number | undefined;
  aborted: boolean;
}

async function watch(
  opts: Parameters<typeof insertAndWait>[0],
  started: number,
  state: WatchState,
): Promise<number> {
  const stallMs = opts.stallMs ?? 60_000;
  let count = 0;
  let progressAt = started;
  let lastReport = started;
  while (!state.aborted) {
    const counted = (await opts.progress.read()) - opts.base;
    // The count held at some moment during the request: the reply's arrival is an upper bound.
    const now = performance.now();
    if (counted >= opts.rows) return now;
    if (counted > count) {
      count = counted;
      progressAt = now;
    }
    if (now - lastReport >= PROGRESS_EVERY_MS) {
      lastReport = now;
      opts.log(`${((now - started) / 1000).toFixed(0)} s: ${count} of ${opts.rows} ${opts.progress.what}`);
    }
    const quietSince = Math.max(progressAt, state.insertsDoneAt ?? now);
    if (state.insertsDoneAt !== undefined && now - quietSince > stallMs) {
      throw new Error(
        `the pipeline stalled: ${count} of ${opts.rows} rows ${opts.progress.what} and nothing more for ${stallMs / 1000} s`,
      );
    }
    await sleep(nextPollMs(opts.progress.pollMs, count, opts.rows, now - started));
  }
  throw new Error('the inserts failed');
}

/** What a check of one key template found in Redis. */
export interface KeyCheck {
  /** The key template's literal prefix; the id follows it. */
  prefix: string;
  format: 'json' | 'hash' | 'deleted';
  /** Keys with the prefix a full SCAN should find: one per row, none for an invalidate key. */
  expected: number;
  keysInRedis: number;
  /** Keys read back, and how many held their row's value. */
  sampled: number;
  sampleMatching: number;
  ok: boolean;
}

/**
 * Counts every key with the prefix by a full SCAN and reads back a sample of rows' keys (the first
 * and last row among them), which must hold their row's values.
 */
export async function checkKeys(
  redis: Redis,
  opts: { prefix: string; format: KeyCheck['format']; rows: number; sampleSize?: number },
): Promise<KeyCheck> {
  const expected = opts.format === 'deleted' ? 0 : opts.rows;
  let sampled = 0;
  let sampleMatching = 0;
  if (opts.format !== 'deleted') {
    const ids = new Set([1, opts.rows]);
    const want = Math.min(opts.rows, opts.sampleSize ?? 1000);
    while (ids.size < want) ids.add(1 + Math.floor(Math.random() * opts.rows));
    const sample = [...ids];
    sampled = sample.length;
    if (opts.format === 'json') {
      const values = await redis.mget(sample.map((id) => `${opts.prefix}${id}`));
      values.forEach((value, i) => {
        if (value !== null && holdsRow(parseJson(value), sample[i]!)) sampleMatching++;
      });
    } else {
      const pipeline = redis.pipeline();
      for (const id of sample) pipeline.hgetall(`${opts.prefix}${id}`);
      const replies = (await pipeline.exec()) ?? [];
      replies.forEach(([err, value], i) => {
        if (!err && holdsRow(value as Record<string, unknown>, sample[i]!)) sampleMatching++;
      });
    }
  }

  let keysInRedis = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${opts.prefix}*`, 'COUNT', 5000);
    keysInRedis += keys.length;
    cursor = next;
  } while (cursor !== '0');
  return {
    prefix: opts.prefix,
    format: opts.format,
    expected,
    keysInRedis,
    sampled,
    sampleMatching,
    ok: sampleMatching === sampled && keysInRedis === expected,
  };
}

function parseJson(json: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(json) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function holdsRow(value: Record<string, unknown> | undefined, id: number): boolean {
  if (!value) return false;
  const expected = rowValues(id);
  return String(value.id) === String(id) && value.name === expected.name && value.price === expected.price;
}
