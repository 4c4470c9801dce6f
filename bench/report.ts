import type { BulkInsertResult } from './bulk-insert.js';
import type { PhaseUsage } from './process-sampler.js';
import type { HistogramSnapshot, Summary } from './stats.js';
import type { SteadyUpdatesResult } from './steady-updates.js';

/** Everything one run measured, as printed by `--json`. */
export interface BenchReport {
  environment: {
    cores: number;
    cpuModel: string;
    node: string;
    platform: string;
    mariadb: string;
    redis: string;
    kafka: string;
  };
  pipeline: {
    kafkaPartitions: number;
    tailerBatchSize: number;
    tailerLingerMs: number;
    consumerPartitionsConcurrently: number;
  };
  /** The same INSERTs into an unmapped table before cachesync started: the database alone. */
  baselineInsert: { statements: number; seconds: number; rowsPerSecond: number };
  bulkInsert: BulkInsertResult;
  steadyUpdates: SteadyUpdatesResult;
  /** This node process: the bench and the in-process runtime together. */
  process: {
    /** Peak resident set size, bytes, sampled every 100 ms. */
    peakRssBytes: number;
    phases: Record<string, PhaseUsage>;
  };
  /** True when every row reached Redis: all keys present, every update seen. */
  ok: boolean;
}

const LABEL = 30;

/** The report as a plain-text table. */
export function formatText(r: BenchReport): string {
  const { environment: env, pipeline: p, bulkInsert: a, steadyUpdates: b } = r;
  const lines: string[] = [];
  const row = (label: string, ...cells: string[]) =>
    lines.push(`  ${label.padEnd(LABEL)}${cells.join('  ')}`);
  const blank = () => lines.push('');

  lines.push('cachesync pipeline benchmark');
  blank();
  lines.push('environment');
  row('cpu', `${env.cores} cores, ${env.cpuModel}`);
  row('node', `${env.node} (${env.platform})`);
  row('mariadb', env.mariadb);
  row('redis', env.redis);
  row('kafka', env.kafka);
  row(
    'pipeline (defaults)',
    `${p.kafkaPartitions} partitions; tailer batch ${p.tailerBatchSize}, linger ${p.tailerLingerMs} ms; ` +
      `consumer ${p.consumerPartitionsConcurrently} partitions at once`,
  );
  blank();

  lines.push(
    `A. bulk insert: ${a.rows} rows, ${a.rowsPerStatement} rows per INSERT, one transaction each ` +
      `(${a.statements} statements)`,
  );
  row('database insert', seconds(a.dbSeconds), rate(a.dbRowsPerSecond));
  row(
    '  same, cachesync not running',
    seconds(r.baselineInsert.seconds),
    rate(r.baselineInsert.rowsPerSecond),
    '(unmapped table, before start)',
  );
  row('binlog read (all rows)', seconds(a.binlogReadSeconds), rate(a.rows / a.binlogReadSeconds));
  row('end to end (all keys in Redis)', seconds(a.endToEndSeconds), rate(a.endToEndRowsPerSecond));
  row(
    'produce requests',
    String(a.publishRequests).padStart(10),
    `${a.meanMessagesPerRequest.toFixed(0)} msgs each`.padStart(14),
  );
  row(
    'verified',
    `${a.verify.sampleMatching}/${a.verify.sampled} sampled keys hold their row, ` +
      `${a.verify.keysInRedis} keys in Redis: ${a.verify.ok ? 'ok' : 'MISMATCH'}`,
  );
  blank();

  lines.push(`B. steady updates: ${b.rate} rows/s for ${b.seconds} s, single-row autocommit UPDATE`);
  row(
    'updates',
    `${b.issued} issued at ${b.achievedRate.toFixed(1)}/s; ${b.failed} failed, ${b.skipped} skipped, ` +
      `${b.missing} never seen in Redis`,
  );
  row('latency, ms', ...['count', 'p50', 'p90', 'p99', 'max', 'mean'].map((c) => c.padStart(8)));
  row('UPDATE sent -> commit reply', ...summaryCells(b.commitMs));
  row('commit reply -> key in Redis', ...summaryCells(b.commitToRedisMs));
  const h = b.runtimeEndToEnd;
  const highest = h.count > 0 ? h.buckets.find((bucket) => bucket.count >= h.count)?.le : undefined;
  row(
    'runtime end-to-end histogram',
    ...[String(h.count), ...[h.p50, h.p90, h.p99, highest].map(bound)].map((c) => c.padStart(8)),
    (h.count > 0 ? ms((h.sum / h.count) * 1000) : '-').padStart(8),
  );
  row('  (binlog read -> applied)', `${bucketLine(h)}`);
  if (b.seenBeforeCommitReply > 0) {
    row('', `${b.seenBeforeCommitReply} keys were written before their commit reply arrived (counted as 0)`);
  }
  blank();

  lines.push('process (bench and cachesync share one node process and event loop)');
  row('phase', ...['wall s', 'CPU s', 'peak RSS', 'loop delay p99', 'max ms'].map((c) => c.padStart(10)));
  for (const [phase, u] of Object.entries(r.process.phases)) {
    row(
      phase,
      ...[
        u.wallSeconds.toFixed(1),
        u.cpuSeconds.toFixed(1),
        mb(u.peakRssBytes),
        ms(u.eventLoopDelayMs.p99),
        ms(u.eventLoopDelayMs.max),
      ].map((c) => c.padStart(10)),
    );
  }
  row('peak RSS, whole run', mb(r.process.peakRssBytes));
  blank();
  lines.push(r.ok ? 'result: ok' : 'result: FAILED (see the MISMATCH or missing counts above)');
  return lines.join('\n');
}

function summaryCells(s: Summary | undefined): string[] {
  if (!s) return ['0'.padStart(8)];
  return [String(s.count), ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max), ms(s.mean)].map((c) => c.padStart(8));
}

/** The histogram's non-empty buckets, as `<=5ms: 12`. */
function bucketLine(h: HistogramSnapshot): string {
  let below = 0;
  const parts: string[] = [];
  for (const b of h.buckets) {
    const n = b.count - below;
    below = b.count;
    if (n > 0) parts.push(`${b.le === Infinity ? '>60s' : `<=${b.le * 1000}ms`}: ${n}`);
  }
  return parts.length > 0 ? parts.join(', ') : 'no observations';
}

function bound(seconds: number | undefined): string {
  if (seconds === undefined) return '-';
  return seconds === Infinity ? '>60000' : `<=${seconds * 1000}`;
}

function seconds(s: number): string {
  return `${s.toFixed(2)} s`.padStart(10);
}

function rate(perSecond: number): string {
  return `${Math.round(perSecond)} rows/s`.padStart(14);
}

function ms(value: number): string {
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MB`;
}
