/** Order statistics of a set of samples (nearest rank). */
export interface Summary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function summarize(samples: readonly number[]): Summary | undefined {
  if (samples.length === 0) return undefined;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  return {
    count: sorted.length,
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    p50: rank(0.5),
    p90: rank(0.9),
    p99: rank(0.99),
    max: sorted[sorted.length - 1]!,
  };
}

/** One figure over several runs: the median (the mean of the middle two for an even count) and the range. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  /** Each run's value, in run order. */
  values: number[];
}

export function spread(values: readonly number[]): Spread | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, values: [...values] };
}

/** One sample of a Prometheus text exposition: `name{label="value",...} number`. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (`GET /metrics`), comments skipped. */
export function parsePrometheusText(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key!] = value!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** Sum of a counter's series whose labels include every given label. */
export function counterSum(
  samples: readonly Sample[],
  name: string,
  match: Record<string, string> = {},
): number {
  return samples
    .filter((s) => s.name === name && Object.entries(match).every(([k, want]) => s.labels[k] === want))
    .reduce((sum, s) => sum + s.value, 0);
}

/** A Prometheus histogram at one moment: cumulative bucket counts by upper bound, sum and count. */
export interface HistogramSnapshot {
  /** Upper bound (seconds, `Infinity` for +Inf) -> observations at or below it, ascending. */
  buckets: Array<{ le: number; count: number }>;
  sum: number;
  count: number;
}

/** The histogram `name` (one with no labels but `le`) from parsed samples. */
export function histogramOf(samples: readonly Sample[], name: string): HistogramSnapshot {
  const buckets: HistogramSnapshot['buckets'] = [];
  let sum = 0;
  let count = 0;
  for (const s of samples) {
    if (s.name === `${name}_bucket`) {
      buckets.push({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), count: s.value });
    } else if (s.name === `${name}_sum`) sum = s.value;
    else if (s.name === `${name}_count`) count = s.value;
  }
  buckets.sort((a, b) => a.le - b.le);
  return { buckets, sum, count };
}

/** What was observed between two snapshots of the same histogram. */
export function histogramDelta(after: HistogramSnapshot, before: HistogramSnapshot): HistogramSnapshot {
  const earlier = new Map(before.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: after.buckets.map((b) => ({ le: b.le, count: b.count - (earlier.get(b.le) ?? 0) })),
    sum: after.sum - before.sum,
    count: after.count - before.count,
  };
}

/**
 * The upper bound of the bucket holding quantile q: an upper estimate, as precise as the buckets.
 * `Infinity` when it falls past the last finite bucket.
 */
export function bucketQuantile(snapshot: HistogramSnapshot, q: number): number | undefined {
  if (snapshot.count === 0) return undefined;
  const target = q * snapshot.count;
  return snapshot.buckets.find((b) => b.count >= target)?.le ?? Infinity;
}
