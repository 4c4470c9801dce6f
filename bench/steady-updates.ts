import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type mysql from 'mysql2/promise';
import { bucketQuantile, histogramDelta, summarize, type HistogramSnapshot, type Summary } from './stats.js';

export interface SteadyUpdatesOptions {
  pool: mysql.Pool;
  /** Reads keys back and sets the notification config. */
  redis: Redis;
  /** A connection of its own: it is put in subscriber mode. */
  subscriber: Redis;
  /** Reads cachesync's `cachesync_end_to_end_latency_seconds` histogram (from its /metrics). */
  runtimeHistogram: () => Promise<HistogramSnapshot>;
  /** `db.table` holding rows with ids 1..ids. */
  table: string;
  ids: number;
  /** The mapping renders a row's key as this prefix followed by its id. */
  keyPrefix: string;
  /** Logical Redis database of the keys. */
  redisDb: number;
  /** Updates per second, and for how long. */
  rate: number;
  seconds: number;
  /** How long to wait, after the last update, for the changes still on their way. Default 30 s. */
  drainMs?: number;
  progress: (msg: string) => void;
}

export interface SteadyUpdatesResult {
  rate: number;
  seconds: number;
  issued: number;
  /** Updates issued per second of the issuing period, as achieved. */
  achievedRate: number;
  /** UPDATEs the database rejected. */
  failed: number;
  /** Updates not issued because every row had an update still on its way. */
  skipped: number;
  /** Updates whose value was seen in Redis, and those never seen within the drain time. */
  observed: number;
  missing: number;
  /** Updates whose key was written before their COMMIT's reply reached the bench (latency 0). */
  seenBeforeCommitReply: number;
  /** UPDATE sent until its autocommit returned, ms. */
  commitMs: Summary | undefined;
  /** COMMIT returned until Redis notified the SET of the key with the new value, ms. */
  commitToRedisMs: Summary | undefined;
  /**
   * The runtime's own end-to-end histogram (binlog read to applied) over this workload; quantiles
   * are bucket upper bounds in seconds, Infinity (null in JSON) past the last bucket.
   */
  runtimeEndToEnd: HistogramSnapshot & {
    p50: number | undefined;
    p90: number | undefined;
    p99: number | undefined;
  };
}

interface InFlight {
  token: string;
  sentAt: number;
  committedAt?: number;
  seenAt?: number;
}

const PROGRESS_EVERY_MS = 5000;

/**
 * Steady updates: single-row autocommit UPDATEs of random rows at a steady rate, each setting `name` to
 * a unique token, timed from the COMMIT's reply until Redis announces (keyspace notification) the
 * SET of the row's key and the key holds the token. At most one update per row is on its way at a
 * time, so each notification belongs to exactly one update.
 */
export async function runSteadyUpdates(opts: SteadyUpdatesOptions): Promise<SteadyUpdatesResult> {
  const inFlight = new Map<number, InFlight>();
  const commitMs: number[] = [];
  const commitToRedisMs: number[] = [];
  const counts = { issued: 0, failed: 0, skipped: 0, observed: 0, seenBeforeCommitReply: 0 };
  let lastError: string | undefined;

  const finish = (id: number, u: InFlight) => {
    if (u.committedAt === undefined || u.seenAt === undefined) return;
    const latency = u.seenAt - u.committedAt;
    if (latency < 0) counts.seenBeforeCommitReply++;
    commitToRedisMs.push(Math.max(0, latency));
    counts.observed++;
    inFlight.delete(id);
  };

  const channelPrefix = `__keyspace@${opts.redisDb}__:`;
  const onKeyEvent = (_pattern: string, channel: string, event: string) => {
    if (event !== 'set') return;
    const seenAt = performance.now();
    const key = channel.slice(channelPrefix.length);
    const id = Number(key.slice(opts.keyPrefix.length));
    const u = inFlight.get(id);
    if (!u || u.seenAt !== undefined) return;
    opts.redis.get(key).then(
      (value) => {
        if (value === null || nameOf(value) !== u.token) return;
        u.seenAt = seenAt;
        finish(id, u);
      },
      (err: unknown) => (lastError = errorText(err)),
    );
  };

  const update = (id: number) => {
    const token = `${counts.issued++}-${randomBytes(6).toString('hex')}`;
    const u: InFlight = { token, sentAt: performance.now() };
    inFlight.set(id, u);
    opts.pool
      .query(`UPDATE ${opts.table} SET name = ?, updated_at = NOW(6) WHERE id = ?`, [u.token, id])
      .then(
        () => {
          u.committedAt = performance.now();
          commitMs.push(u.committedAt - u.sentAt);
          finish(id, u);
        },
        (err: unknown) => {
          counts.failed++;
          lastError = errorText(err);
          inFlight.delete(id);
        },
      );
  };

  // K: keyspace channel (`__keyspace@0__:<key>`), $: string commands such as SET.
  await opts.redis.config('SET', 'notify-keyspace-events', 'K$');
  opts.subscriber.on('pmessage', onKeyEvent);
  await opts.subscriber.psubscribe(`${channelPrefix}${opts.keyPrefix}*`);
  const histogramBefore = await opts.runtimeHistogram();
  try {
    const total = Math.max(1, Math.round(opts.rate * opts.seconds));
    const intervalMs = 1000 / opts.rate;
    const started = performance.now();
    let lastReport = started;
    let slot = 0;
    while (slot < total) {
      const now = performance.now();
      // Catch up on every slot that came due, so the rate holds even when a timer fires late.
      const due = Math.min(total, Math.floor((now - started) / intervalMs) + 1);
      for (; slot < due; slot++) {
        const id = idleRow(opts.ids, inFlight);
        if (id === undefined) counts.skipped++;
        else update(id);
      }
      if (now - lastReport >= PROGRESS_EVERY_MS) {
        lastReport = now;
        opts.progress(
          `${((now - started) / 1000).toFixed(0)} s: ${counts.issued} updates, ${counts.observed} seen in Redis`,
        );
      }
      if (slot < total) await sleep(Math.max(0, started + slot * intervalMs - performance.now()));
    }
    const issuingSeconds = (performance.now() - started) / 1000;

    const drainUntil = performance.now() + (opts.drainMs ?? 30_000);
    while (inFlight.size > 0 && performance.now() < drainUntil) await sleep(10);
    if (inFlight.size > 0) {
      opts.progress(`${inFlight.size} updates not seen in Redis after ${(opts.drainMs ?? 30_000) / 1000} s`);
    }
    if (lastError) opts.progress(`last error: ${lastError}`);

    const histogram = histogramDelta(await opts.runtimeHistogram(), histogramBefore);
    return {
      rate: opts.rate,
      seconds: opts.seconds,
      ...counts,
      achievedRate: counts.issued / issuingSeconds,
      missing: inFlight.size,
      commitMs: summarize(commitMs),
      commitToRedisMs: summarize(commitToRedisMs),
      runtimeEndToEnd: {
        ...histogram,
        p50: bucketQuantile(histogram, 0.5),
        p90: bucketQuantile(histogram, 0.9),
        p99: bucketQuantile(histogram, 0.99),
      },
    };
  } finally {
    opts.subscriber.off('pmessage', onKeyEvent);
    await opts.subscriber.punsubscribe().catch(() => undefined);
    await opts.redis.config('SET', 'notify-keyspace-events', '').catch(() => undefined);
  }
}

/** A random row with no update on its way, or undefined when there is none to be found quickly. */
function idleRow(ids: number, inFlight: ReadonlyMap<number, InFlight>): number | undefined {
  for (let attempt = 0; attempt < 100; attempt++) {
    const id = 1 + Math.floor(Math.random() * ids);
    if (!inFlight.has(id)) return id;
  }
  return undefined;
}

function nameOf(json: string): unknown {
  try {
    return (JSON.parse(json) as Record<string, unknown>).name;
  } catch {
    return undefined;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
