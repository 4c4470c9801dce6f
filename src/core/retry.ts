import { setTimeout as sleep } from 'node:timers/promises';
import { CachesyncError } from './errors.js';

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

/** Programmer errors are never retried; CachesyncErrors say for themselves; anything else is I/O. */
export function isRetriable(err: unknown): boolean {
  if (err instanceof TypeError || err instanceof RangeError) return false;
  if (err instanceof CachesyncError) return err.retriable;
  return true;
}

export interface RetryOptions {
  /** Give up after this many attempts (default: never, while the error is retriable). */
  maxAttempts?: number;
  /** Stop retrying (rethrowing the last error) once this returns true, e.g. on shutdown. */
  aborted?: () => boolean;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  random?: () => number;
}

/** Runs fn until it succeeds, a non-retriable error occurs, attempts run out or the caller aborts. */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: BackoffPolicy,
  opts: RetryOptions = {},
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      const exhausted = opts.maxAttempts !== undefined && attempt >= opts.maxAttempts;
      if (!isRetriable(err) || exhausted || opts.aborted?.()) throw err;
      const delay = backoffDelay(policy, attempt, opts.random);
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay);
    }
  }
}
