import type { BulkInsertResult } from './bulk-insert.js';
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
  bulkInsert: BulkInsertResult;
  steadyUpdates: SteadyUpdatesResult;
  memory: {
    /** Peak resident set size of this process (bench plus the in-process runtime), bytes. */
    peakRssBytes: number;
    peakRssBytesByPhase: Record<string, number>;
  };
  /** True when every row reached Redis: all keys present, every update seen. */
  ok: boolean;
}

const LABEL = 30;

/** The report as a plain-text table. */
export function formatText(r: BenchReport): string {
  const { environment: env, pipeline: p, bulkInsert: a, steadyUpdates: b } = r;
  const lines: string[] = [];
  const row = (label: string, ...cells: string[]) => lines.push(`  ${label.padEnd(LABEL)}${cells.join('  ')}`);
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
  row('binlog read (all rows)', seconds(a.binlogReadSeconds), rate(a.rows / a.binlogReadSeconds));
  row('end to end (all keys in Redis)', seconds(a.endToEndSeconds), rate(a.endToEndRowsPerSecond));
  row('produce requests', `${a.publishRequests}`, `${a.meanMessagesPerRequest.toFixed(0)} messages each`);
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
  row('latency, ms', ...['count', 'p50', 'p90', 'p99', 'max'].map((h) => h.padStart(8)));
  row('UPDATE sent -> commit reply', ...summaryCells(b.commitMs));
  row('commit reply -> key in Redis', ...summaryCells(b.commitToRedisMs));
  const h = b.runtimeEndToEnd;
  row(
    'runtime end-to-end histogram',
    String(h.count).padStart(8),
    ...[h.p50, h.p90, h.p99].map((v) => bound(v).padStart(8)),
    'mean'.padStart(8),
    h.count > 0 ? ms((h.sum / h.count) * 1000) : '-',
  );
  row('  (binlog read -> applied)', `${bucketLine(h)}`);
  if (b.seenBeforeCommitReply > 0) {
    row('', `${b.seenBeforeCommitReply} keys were written before their commit reply arrived (counted as 0)`);
  }
  blank();

  lines.push('memory');
  const phases = Object.entries(r.memory.peakRssBytesByPhase)
    .map(([phase, bytes]) => `${phase} ${mb(bytes)}`)
    .join(', ');
  row('peak RSS', mb(r.memory.peakRssBytes), `(${phases})`);
  blank();
  lines.push(r.ok ? 'result: ok' : 'result: FAILED (see the MISMATCH or missing counts above)');
  return lines.join('\n');
}

function summaryCells(s: Summary | undefined): string[] {
  if (!s) return ['0'.padStart(8)];
  return [String(s.count), ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max)].map((c) => c.padStart(8));
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
