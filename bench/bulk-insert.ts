import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type mysql from 'mysql2/promise';
import type { Metrics } from '../src/observability/metrics.js';
import { counterSum, histogramDelta, snapshotHistogram } from './stats.js';

export interface BulkInsertOptions {
  /** A connection to the database holding the bench table. */
  sql: mysql.Connection;
  redis: Redis;
  /** The runtime's metrics: how the bench learns what was read and applied. */
  metrics: Metrics;
  /** `db.table`, empty; its rows get ids 1..rows. */
  table: string;
  /** The mapping renders a row's key as this prefix followed by its id. */
  keyPrefix: string;
  rows: number;
  /** Rows per INSERT statement; each statement is its own transaction. */
  rowsPerStatement: number;
  /** Give up when nothing more is applied for this long after the last commit. Default 60 s. */
  stallMs?: number;
  /** Random keys whose values are checked against their rows. Default 1000. */
  sampleSize?: number;
  progress: (msg: string) => void;
}

export interface BulkInsertResult {
  rows: number;
  rowsPerStatement: number;
  statements: number;
  /** First INSERT until the last COMMIT returned. */
  dbSeconds: number;
  dbRowsPerSecond: number;
  /** First INSERT until the tailer had read every row from the binlog. */
  binlogReadSeconds: number;
  /** First INSERT until every row's change was applied to Redis. */
  endToEndSeconds: number;
  endToEndRowsPerSecond: number;
  /** Produce requests the tailer sent meanwhile, and messages per request. */
  publishRequests: number;
  meanMessagesPerRequest: number;
  verify: {
    /** Keys read back, and how many held the JSON of their row. */
    sampled: number;
    sampleMatching: number;
    /** Keys matching the template found by a full SCAN. */
    keysInRedis: number;
    ok: boolean;
  };
}

const POLL_MS = 5;
const PROGRESS_EVERY_MS = 5000;

/**
 * Workload A: inserts `rows` rows in multi-row INSERTs and measures how long the pipeline takes to
 * put every row's key in Redis, next to how long the database took to take the rows.
 */
export async function runBulkInsert(opts: BulkInsertOptions): Promise<BulkInsertResult> {
  const { metrics, rows, rowsPerStatement } = opts;
  const series = { table: opts.table, op: 'c' };
  const base = {
    read: await counterSum(metrics.rowsRead, series),
    applied: await counterSum(metrics.changesApplied, series),
    publish: await snapshotHistogram(metrics.publishBatchSize),
  };
  const state: WatchState = { insertsDoneAt: undefined, aborted: false };

  const started = performance.now();
  const watched = watch(opts, base, started, state);
  // Its rejection is awaited below; until then it must not count as unhandled.
  watched.catch(() => undefined);
  let statements: number;
  try {
    ({ statements } = await insertRows(opts.sql, opts.table, rows, rowsPerStatement));
  } catch (err) {
    state.aborted = true;
    throw err;
  }
  state.insertsDoneAt = performance.now();
  const dbSeconds = (state.insertsDoneAt - started) / 1000;
  opts.progress(`inserted ${rows} rows in ${dbSeconds.toFixed(2)} s; waiting for Redis`);
  const { readAt, appliedAt } = await watched;

  const publish = histogramDelta(await snapshotHistogram(metrics.publishBatchSize), base.publish);
  const endToEndSeconds = (appliedAt - started) / 1000;
  const verify = await verifyKeys(opts);
  return {
    rows,
    rowsPerStatement,
    statements,
    dbSeconds,
    dbRowsPerSecond: rows / dbSeconds,
    binlogReadSeconds: (readAt - started) / 1000,
    endToEndSeconds,
    endToEndRowsPerSecond: rows / endToEndSeconds,
    publishRequests: publish.count,
    meanMessagesPerRequest: publish.count > 0 ? publish.sum / publish.count : 0,
    verify,
  };
}

/** The values a row gets, so that its cached JSON can be checked. */
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

interface WatchState {
  insertsDoneAt: number | undefined;
  aborted: boolean;
}

/** Polls the runtime's counters until every row is applied; notes when the last row was read. */
async function watch(
  opts: BulkInsertOptions,
  base: { read: number; applied: number },
  started: number,
  state: WatchState,
): Promise<{ readAt: number; appliedAt: number }> {
  const series = { table: opts.table, op: 'c' };
  const stallMs = opts.stallMs ?? 60_000;
  let readAt: number | undefined;
  let applied = 0;
  let progressAt = started;
  let lastReport = started;
  while (!state.aborted) {
    const now = performance.now();
    const read = (await counterSum(opts.metrics.rowsRead, series)) - base.read;
    const appliedNow = (await counterSum(opts.metrics.changesApplied, series)) - base.applied;
    if (readAt === undefined && read >= opts.rows) readAt = now;
    if (appliedNow >= opts.rows) return { readAt: readAt ?? now, appliedAt: now };
    if (appliedNow !== applied) {
      applied = appliedNow;
      progressAt = now;
    }
    if (now - lastReport >= PROGRESS_EVERY_MS) {
      lastReport = now;
      opts.progress(
        `${((now - started) / 1000).toFixed(0)} s: read ${read}, applied ${applied} of ${opts.rows}`,
      );
    }
    const quietSince = Math.max(progressAt, state.insertsDoneAt ?? now);
    if (state.insertsDoneAt !== undefined && now - quietSince > stallMs) {
      throw new Error(
        `the pipeline stalled: ${applied} of ${opts.rows} rows applied (${read} read from the binlog) ` +
          `and nothing more for ${stallMs / 1000} s`,
      );
    }
    await sleep(POLL_MS);
  }
  throw new Error('the inserts failed');
}

/** Reads back a sample of keys and counts every key of the template with a full SCAN. */
async function verifyKeys(opts: BulkInsertOptions): Promise<BulkInsertResult['verify']> {
  const ids = new Set([1, opts.rows]);
  const want = Math.min(opts.rows, opts.sampleSize ?? 1000);
  while (ids.size < want) ids.add(1 + Math.floor(Math.random() * opts.rows));
  const sample = [...ids];
  const values = await opts.redis.mget(sample.map((id) => `${opts.keyPrefix}${id}`));
  let sampleMatching = 0;
  values.forEach((value, i) => {
    if (value !== null && holdsRow(value, sample[i]!)) sampleMatching++;
  });

  const pattern = `${opts.keyPrefix}*`;
  let keysInRedis = 0;
  let cursor = '0';
  do {
    const [next, keys] = await opts.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    keysInRedis += keys.length;
    cursor = next;
  } while (cursor !== '0');
  return {
    sampled: sample.length,
    sampleMatching,
    keysInRedis,
    ok: sampleMatching === sample.length && keysInRedis === opts.rows,
  };
}

function holdsRow(json: string, id: number): boolean {
  try {
    const value = JSON.parse(json) as Record<string, unknown>;
    const expected = rowValues(id);
    return String(value.id) === String(id) && value.name === expected.name && value.price === expected.price;
  } catch {
    return false;
  }
}
