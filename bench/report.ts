import type { KeyCheck } from './bulk-insert.js';
import type {
  BigTxResult,
  BigTxRun,
  BulkResult,
  LatencyResult,
  MariadbResult,
  ScenarioName,
  ScenarioResult,
} from './scenarios.js';
import { spread, type Spread } from './stats.js';

/** Everything one `npm run bench` measured, as printed by `--json`. */
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
  /** cachesync's settings in every scenario: its defaults, but for the partition count and `--config`. */
  pipeline: {
    kafkaPartitions: number;
    tailerBatchSize: number;
    tailerMaxBufferedEvents: number;
    tailerLingerMs: number;
    tailerCompression: string;
    consumerPartitionsConcurrently: number;
    consumerMaxFetchBytes: number;
    /** `--node-arg` flags, when given. */
    nodeArgs?: string[];
  };
  workload: {
    rows: number;
    rowsPerStatement: number;
    rate: number;
    seconds: number;
    bigtxRows: number;
    /** Rows of the unmeasured both-roles pass before the first run (0: none). */
    warmUpRows: number;
    runs: number;
    scenarios: ScenarioName[];
  };
  /** Each run's results, in run order. */
  runs: Array<Partial<Record<ScenarioName, ScenarioResult>>>;
  /** Per scenario, each figure over the runs: median, min, max. */
  summary: Partial<Record<ScenarioName, Record<string, Spread>>>;
  /** The issue's targets, each against its figure's median; `met` is for reading only. */
  targets: Array<{ scenario: ScenarioName; figure: string; target: string; median: number; met: boolean }>;
  /** True when every row arrived in every run: the exit code depends on this alone. */
  ok: boolean;
}

type Unit = 'rows/s' | 's' | 'us' | 'MB' | 'ms' | '%' | 'updates/s' | 'count';

interface Figure<R> {
  key: string;
  label: string;
  unit: Unit;
  value: (result: R, run: Partial<Record<ScenarioName, ScenarioResult>>) => number | undefined;
  target?: { op: '>=' | '<=' | '<'; value: number };
}

const MB = 1024 * 1024;

function usageFigures<R extends BulkResult | LatencyResult>(per: string): Array<Figure<R>> {
  return [
    { key: 'cpuSeconds', label: 'cachesync CPU', unit: 's', value: (r) => r.cachesync.cpuSeconds },
    {
      key: 'cpuMicrosPerRow',
      label: `cachesync CPU per ${per}`,
      unit: 'us',
      value: (r) => r.cachesync.cpuMicrosPerRow,
    },
    {
      key: 'phasePeakRssMB',
      label: 'cachesync peak RSS, phase',
      unit: 'MB',
      value: (r) => r.cachesync.peakRssBytes / MB,
    },
    { key: 'hwmMB', label: 'cachesync peak RSS, VmHWM', unit: 'MB', value: (r) => r.cachesync.hwmBytes / MB },
    {
      key: 'driverCpuSeconds',
      label: 'bench driver CPU',
      unit: 's',
      value: (r) => r.cachesync.driverCpuSeconds,
    },
    ...serverCpuFigures<R>(
      per,
      (r) => r.cachesync.serversCpuSeconds,
      (r) => perUnit(r),
    ),
  ];
}

/** Rows of a bulk scenario, updates of the latency one: what CPU is counted per. */
function perUnit(r: BulkResult | LatencyResult | MariadbResult): number {
  return r.scenario === 'latency' ? Math.max(1, r.updates.issued) : r.rows;
}

/** The servers' CPU over the phase, per row (or update): where the rest of the machine went. */
function serverCpuFigures<R>(
  per: string,
  seconds: (r: R) => Record<string, number> | undefined,
  count: (r: R) => number,
): Array<Figure<R>> {
  return (['mariadb', 'kafka', 'redis'] as const).map((server, i) => ({
    key: `${server}CpuMicrosPer${per === 'row' ? 'Row' : 'Update'}`,
    label: i === 0 ? `servers' CPU per ${per}: ${server}` : `  ${server}`,
    unit: 'us',
    value: (r: R) => {
      const s = seconds(r)?.[server];
      return s === undefined ? undefined : (s * 1e6) / count(r);
    },
  }));
}

function bulkFigures(
  throughputLabel: string,
  targets: { rowsPerSecond?: number; cpuMicrosPerRow?: number; hwmMB?: number },
): Array<Figure<BulkResult>> {
  const figures: Array<Figure<BulkResult>> = [
    { key: 'rowsPerSecond', label: throughputLabel, unit: 'rows/s', value: (r) => r.rowsPerSecond },
    { key: 'seconds', label: '  first INSERT -> done', unit: 's', value: (r) => r.seconds },
    { key: 'insertSeconds', label: 'MariaDB inserts took', unit: 's', value: (r) => r.insert.seconds },
    {
      key: 'insertRowsPerSecond',
      label: '  MariaDB insert rate',
      unit: 'rows/s',
      value: (r) => r.insert.rowsPerSecond,
    },
    ...usageFigures<BulkResult>('row'),
  ];
  for (const figure of figures) {
    const target = targets[figure.key as keyof typeof targets];
    if (target !== undefined)
      figure.target = { op: figure.key === 'rowsPerSecond' ? '>=' : '<=', value: target };
  }
  return figures;
}

/** split: the tailer's and the consumer's process, each on its own. */
const splitFigures: Array<Figure<BulkResult>> = [
  ...bulkFigures('binlog -> Redis, all applied', { rowsPerSecond: 50_000 }),
  ...(['tailer', 'consumer'] as const).flatMap((role): Array<Figure<BulkResult>> => {
    const of = (r: BulkResult) => r.cachesync.processes?.find((p) => p.role === role);
    return [
      {
        key: `${role}.cpuMicrosPerRow`,
        label: `--role ${role}: CPU per row`,
        unit: 'us',
        value: (r) => of(r)?.cpuMicrosPerRow,
      },
      { key: `${role}.hwmMB`, label: '  peak RSS, VmHWM', unit: 'MB', value: (r) => mbOf(of(r)?.hwmBytes) },
    ];
  }),
];

/** catchup: a consumer process alone on a backlog. */
const catchupFigures: Array<Figure<BulkResult>> = [
  {
    key: 'rowsPerSecond',
    label: 'backlog -> Redis, all applied',
    unit: 'rows/s',
    value: (r) => r.rowsPerSecond,
  },
  { key: 'seconds', label: '  consumer ready -> done', unit: 's', value: (r) => r.seconds },
  { key: 'rows', label: '  changes applied meanwhile', unit: 'count', value: (r) => r.rows },
  ...usageFigures<BulkResult>('row'),
];

function mbOf(bytes: number | undefined): number | undefined {
  return bytes === undefined ? undefined : bytes / MB;
}

const mariadbFigures: Array<Figure<MariadbResult>> = [
  { key: 'rowsPerSecond', label: 'insert rate', unit: 'rows/s', value: (r) => r.insert.rowsPerSecond },
  { key: 'seconds', label: '  inserts took', unit: 's', value: (r) => r.insert.seconds },
  { key: 'driverCpuSeconds', label: 'bench driver CPU', unit: 's', value: (r) => r.driverCpuSeconds },
  ...serverCpuFigures<MariadbResult>(
    'row',
    (r) => r.serversCpuSeconds,
    (r) => perUnit(r),
  ),
];

const richFigures: Array<Figure<BulkResult>> = [
  ...bulkFigures('binlog -> Redis, all applied', {}),
  {
    key: 'percentOfMariadb',
    label: "share of MariaDB's insert rate",
    unit: '%',
    value: (r, run) => {
      const alone = run.mariadb as MariadbResult | undefined;
      return alone ? (100 * r.rowsPerSecond) / alone.insert.rowsPerSecond : undefined;
    },
    target: { op: '>=', value: 25 },
  },
];

const latencyFigures: Array<Figure<LatencyResult>> = [
  {
    key: 'p50',
    label: 'commit -> key in Redis p50',
    unit: 'ms',
    value: (r) => r.updates.commitToRedisMs?.p50,
  },
  { key: 'p90', label: '  p90', unit: 'ms', value: (r) => r.updates.commitToRedisMs?.p90 },
  {
    key: 'p99',
    label: '  p99',
    unit: 'ms',
    value: (r) => r.updates.commitToRedisMs?.p99,
    target: { op: '<=', value: 10 },
  },
  { key: 'max', label: '  max', unit: 'ms', value: (r) => r.updates.commitToRedisMs?.max },
  { key: 'achievedRate', label: 'updates issued', unit: 'updates/s', value: (r) => r.updates.achievedRate },
  ...usageFigures<LatencyResult>('update'),
];

/** Per role: peak RSS before the kill and of the restarted process, against one memory target. */
function bigTxFigures(
  role: BigTxRun['role'],
  replayLabel: string,
  target: NonNullable<Figure<BigTxResult>['target']>,
): Array<Figure<BigTxResult>> {
  return [
    {
      key: `${role}.hwmBeforeKillMB`,
      label: `${role}: peak RSS before the kill`,
      unit: 'MB',
      value: (r) => r[role].hwmBeforeKillBytes / MB,
      target,
    },
    {
      key: `${role}.hwmReplayMB`,
      label: '  peak RSS of the restarted one',
      unit: 'MB',
      value: (r) => r[role].hwmReplayBytes / MB,
      target,
    },
    {
      key: `${role}.replaySeconds`,
      label: `  ${replayLabel}`,
      unit: 's',
      value: (r) => r[role].replaySeconds,
    },
    {
      key: `${role}.readySeconds`,
      label: '    of which until ready',
      unit: 's',
      value: (r) => r[role].readySeconds,
    },
    {
      key: `${role}.onTopicAtKill`,
      label: '  on the topic at the kill',
      unit: 'count',
      value: (r) => r[role].onTopicAtKill,
    },
    {
      key: `${role}.insertSeconds`,
      label: '  MariaDB: the INSERT took',
      unit: 's',
      value: (r) => r[role].insertSeconds,
    },
  ];
}

const FIGURES: { [S in ScenarioName]: Array<Figure<Extract<ScenarioResult, { scenario: S }>>> } = {
  mariadb: mariadbFigures,
  tailer: bulkFigures('binlog -> Kafka, all on the topic', {
    rowsPerSecond: 71_000,
    cpuMicrosPerRow: 17,
    hwmMB: 150,
  }),
  both: bulkFigures('binlog -> Redis, all applied', { rowsPerSecond: 50_000 }),
  split: splitFigures,
  catchup: catchupFigures,
  rich: richFigures,
  latency: latencyFigures,
  bigtx: [
    ...bigTxFigures('tailer', 'restart -> all on the topic', { op: '<', value: 150 }),
    ...bigTxFigures('all', 'restart -> every key in Redis', { op: '<=', value: 200 }),
  ],
};

function title(scenario: ScenarioName, w: BenchReport['workload']): string {
  return scenario === 'bigtx'
    ? `bigtx: one ${w.bigtxRows}-row transaction, kill -9 at a third on the topic, restart; ` +
        '--role tailer, then --role all (item:{id} refresh JSON)'
    : TITLES[scenario];
}

const TITLES: Record<Exclude<ScenarioName, 'bigtx'>, string> = {
  mariadb: 'mariadb: the INSERTs into an unmapped table, no cachesync running',
  tailer: 'tailer: cachesync --role tailer, binlog -> Kafka (acks=all)',
  both: 'both: cachesync --role all, one key per row (item:{id} refresh JSON)',
  split:
    'split: cachesync --role tailer and --role consumer, two processes, one key per row (item:{id} refresh JSON)',
  catchup:
    'catchup: cachesync --role consumer alone on a backlog of every row (item:{id} refresh JSON), from the moment it is ready',
  rich: 'rich: cachesync --role all, per row user:{id} JSON, userh:{id} hash, userx:{id} invalidate + 500ms redelete',
  latency: 'latency: cachesync --role all, single-row autocommit UPDATEs at a steady rate',
};

/** Median, min and max of every figure of every scenario, and the targets against the medians. */
export function summarize(runs: BenchReport['runs'], scenarios: readonly ScenarioName[]) {
  const summary: BenchReport['summary'] = {};
  const targets: BenchReport['targets'] = [];
  for (const scenario of scenarios) {
    const figures = FIGURES[scenario] as Array<Figure<ScenarioResult>>;
    const bySpread: Record<string, Spread> = {};
    for (const figure of figures) {
      const values = runs.flatMap((run) => {
        const result = run[scenario];
        const value = result ? figure.value(result, run) : undefined;
        return value === undefined || !Number.isFinite(value) ? [] : [value];
      });
      const s = spread(values);
      if (!s) continue;
      bySpread[figure.key] = s;
      if (figure.target) {
        const { op, value } = figure.target;
        targets.push({
          scenario,
          figure: figure.key,
          target: `${op} ${formatValue(value, figure.unit)}`,
          median: s.median,
          met: op === '>=' ? s.median >= value : op === '<=' ? s.median <= value : s.median < value,
        });
      }
    }
    summary[scenario] = bySpread;
  }
  return { summary, targets };
}

const LABEL = 34;
const CELL = 16;

/** The report as plain text: one block per scenario, a figure a line, median then range. */
export function formatText(r: BenchReport): string {
  const { environment: env, pipeline: p, workload: w } = r;
  const lines: string[] = [];
  const row = (label: string, ...cells: string[]) =>
    lines.push(`  ${label.padEnd(LABEL)}${cells.join('  ')}`.trimEnd());
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
    'cachesync settings',
    `${p.kafkaPartitions} partitions; tailer batch ${p.tailerBatchSize}, buffer ${p.tailerMaxBufferedEvents}, ` +
      `linger ${p.tailerLingerMs} ms, ${p.tailerCompression}; consumer ${p.consumerPartitionsConcurrently} ` +
      `partitions at once, fetch ${Math.round(p.consumerMaxFetchBytes / 1024)} KiB` +
      (p.nodeArgs ? `; node ${p.nodeArgs.join(' ')}` : ''),
  );
  row(
    'workload',
    `${w.rows} rows in ${w.rowsPerStatement}-row INSERTs, one transaction each; ` +
      `${w.rate} updates/s for ${w.seconds} s` +
      (w.scenarios.includes('bigtx') ? `; bigtx: one ${w.bigtxRows}-row INSERT ... SELECT` : '') +
      (w.warmUpRows > 0 ? `; after an unmeasured warm-up of ${w.warmUpRows} rows` : '; no warm-up'),
  );
  const many = w.runs > 1;
  row('runs', many ? `${w.runs}: median, then min..max` : '1');
  blank();

  for (const scenario of w.scenarios) {
    lines.push(title(scenario, w));
    const figures = FIGURES[scenario] as Array<Figure<ScenarioResult>>;
    const spreads = r.summary[scenario] ?? {};
    for (const figure of figures) {
      const s = spreads[figure.key];
      if (!s) continue;
      const target = r.targets.find((t) => t.scenario === scenario && t.figure === figure.key);
      row(
        figure.label,
        formatValue(s.median, figure.unit).padStart(CELL),
        ...(many
          ? [`${formatNumber(s.min, figure.unit)}..${formatNumber(s.max, figure.unit)}`.padEnd(CELL + 6)]
          : []),
        target ? `target ${target.target}: ${target.met ? 'met' : 'MISSED'}` : '',
      );
    }
    for (const line of checkLines(r.runs, scenario)) lines.push(`  ${line}`);
    blank();
  }
  lines.push(
    r.ok
      ? 'result: ok (every row arrived; the targets are for reading, not for the exit code)'
      : 'result: FAILED (a row did not arrive: see the checks above)',
  );
  return lines.join('\n');
}

/** A bulk scenario that applies to Redis, whose keys are checked afterwards. */
function checksKeys(res: ScenarioResult): res is BulkResult {
  return (
    res.scenario === 'both' ||
    res.scenario === 'split' ||
    res.scenario === 'catchup' ||
    res.scenario === 'rich'
  );
}

/** What was checked, per run, and every mismatch. */
function checkLines(runs: BenchReport['runs'], scenario: ScenarioName): string[] {
  const results = runs.flatMap((run) => (run[scenario] ? [run[scenario]] : []));
  const failed = results.filter((res) => !res.ok).length;
  const lines: string[] = [];
  const first = results[0];
  if (!first) return lines;
  if (first.scenario === 'tailer') {
    lines.push(`checked: every row on the topic in ${results.length} of ${results.length} runs`);
  } else if (checksKeys(first)) {
    lines.push(
      `checked: ${first.keys.map(describeCheck).join('; ')}: ` +
        `${failed === 0 ? 'ok' : 'MISMATCH'} in ${results.length - failed} of ${results.length} runs`,
    );
  } else if (first.scenario === 'bigtx') {
    lines.push(
      `checked: tailer: every row on the topic again after the restart; all: ` +
        `${first.all.keys.map(describeCheck).join('; ')}: ` +
        `${failed === 0 ? 'ok' : 'MISMATCH'} in ${results.length - failed} of ${results.length} runs`,
    );
  } else if (first.scenario === 'latency') {
    (results as LatencyResult[]).forEach((res, i) => {
      const u = res.updates;
      lines.push(
        `${results.length > 1 ? `run ${i + 1}: ` : ''}${u.issued} updates, ${u.failed} failed, ${u.skipped} skipped, ${u.missing} never seen in Redis` +
          (u.seenBeforeCommitReply > 0
            ? `, ${u.seenBeforeCommitReply} seen before their commit reply (0 ms)`
            : ''),
      );
    });
  }
  results.forEach((res, i) => {
    const keys = checksKeys(res)
      ? res.keys
      : res.scenario === 'bigtx'
        ? [...res.tailer.keys, ...res.all.keys]
        : [];
    if (!res.ok) {
      for (const k of keys.filter((key) => !key.ok)) {
        lines.push(
          `run ${i + 1}: ${k.prefix}* ${k.keysInRedis} keys (expected ${k.expected}), ` +
            `${k.sampleMatching}/${k.sampled} sampled hold their row: MISMATCH`,
        );
      }
    }
  });
  return lines;
}

function describeCheck(k: KeyCheck): string {
  return k.format === 'deleted'
    ? `no ${k.prefix}* key left`
    : `one ${k.prefix}* key per row, ${k.sampled} sampled hold their row's ${k.format === 'json' ? 'JSON' : 'hash'}`;
}

function formatNumber(value: number, unit: Unit): string {
  switch (unit) {
    case 'rows/s':
    case 'count':
      return Math.round(value).toLocaleString('en-US');
    case 's':
      return value.toFixed(2);
    case 'us':
    case 'ms':
    case '%':
    case 'updates/s':
      return value >= 100 ? value.toFixed(0) : value.toFixed(1);
    case 'MB':
      return value.toFixed(0);
  }
}

function formatValue(value: number, unit: Unit): string {
  const n = formatNumber(value, unit);
  return unit === 'count' ? n : unit === '%' ? `${n}%` : `${n} ${unit}`;
}
