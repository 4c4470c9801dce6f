import { errorKind } from './errors.js';

/** Exponential backoff with jitter and a cap. */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** Default 2. */
  factor?: number;
  /** Fraction of each delay randomised, in [0, 1]. Default 0.2. */
  jitter?: number;
}

/** The delay before retry number `attempt` (1-based). */
export function backoffDelay(
  policy: BackoffPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(policy.maxMs, policy.initialMs * (policy.factor ?? 2) ** Math.max(0, attempt - 1));
  const jitter = policy.jitter ?? 0.2;
  return Math.max(0, Math.round(base * (1 - jitter + random() * 2 * jitter)));
}

/**
 * Only an outage is retried without limit: a programmer error, a fatal error (the operator must act)
 * and a message error (retried by the consumer within its own attempt budget) are not.
 */
export function isRetriable(err: unknown): boolean {
  return errorKind(err) === 'outage';
}

/**
 * Waits `ms`, or less if `signal` aborts first. Resolves true when the full time passed, false when
 * aborted: a loop waiting out a backoff must stop at once on shutdown.
 */
export function pause(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface RetryOptions {
  /** Give up after this many attempts (default: never, while the error is retriable). */
  maxAttempts?: number;
  /** Stops retrying (rethrowing the last error) when aborted, also in the middle of a backoff. */
  signal?: AbortSignal;
  /** Stop retrying (rethrowing the last error) once this returns true. */
  aborted?: () => boolean;
  /** Which errors to retry. Default isRetriable: outages only. */
  retriable?: (err: unknown) => boolean;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  random?: () => number;
}

/**
 * The one retry helper: runs fn until it succeeds, a non-retriable error occurs, attempts run out or
 * the caller aborts (then the last error is rethrown).
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: BackoffPolicy,
  opts: RetryOptions = {},
): Promise<T> {
  const retriable = opts.retriable ?? isRetriable;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      const exhausted = opts.maxAttempts !== undefined && attempt >= opts.maxAttempts;
      const stopped = opts.signal?.aborted === true || opts.aborted?.() === true;
      if (!retriable(err) || exhausted || stopped) throw err;
      const delay = backoffDelay(policy, attempt, opts.random);
      opts.onRetry?.(err, attempt, delay);
      if (!(await pause(delay, opts.signal))) throw err;
    }
  }
}

/**
 * Logs a repeated failure once per kind, not once per attempt: `report(kind)` is true the first time
 * a kind is seen since the last `clear()`.
 */
export class OncePerKind {
  private readonly seen = new Set<string>();

  report(kind: string): boolean {
    if (this.seen.has(kind)) return false;
    if (this.seen.size < 100) this.seen.add(kind);
    return true;
  }

  clear(): void {
    this.seen.clear();
  }
}
