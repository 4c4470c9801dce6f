import type { Counter, Histogram } from 'prom-client';

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

/** Sum of a counter's series whose labels include every given label. */
export async function counterSum(
  counter: Counter<string>,
  match: Record<string, string> = {},
): Promise<number> {
  const { values } = await counter.get();
  return values
    .filter((v) => Object.entries(match).every(([k, want]) => v.labels[k] === want))
    .reduce((sum, v) => sum + v.value, 0);
}

/** A Prometheus histogram at one moment: cumulative bucket counts by upper bound, sum and count. */
export interface HistogramSnapshot {
  /** Upper bound (seconds, `Infinity` for +Inf) -> observations at or below it, ascending. */
  buckets: Array<{ le: number; count: number }>;
  sum: number;
  count: number;
}

export async function snapshotHistogram(histogram: Histogram<string>): Promise<HistogramSnapshot> {
  const { values } = await histogram.get();
  const buckets: HistogramSnapshot['buckets'] = [];
  let sum = 0;
  let count = 0;
  for (const v of values) {
    if (v.metricName?.endsWith('_bucket')) {
      const le = v.labels.le === '+Inf' ? Infinity : Number(v.labels.le);
      buckets.push({ le, count: v.value });
    } else if (v.metricName?.endsWith('_sum')) sum = v.value;
    else if (v.metricName?.endsWith('_count')) count = v.value;
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
