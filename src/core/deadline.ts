import { UnavailableError } from './errors.js';

/**
 * Resolves as `work` does, or rejects with an UnavailableError once `ms` passed: a server that holds
 * a connection open and answers nothing (frozen, partitioned) must be noticed, not waited on. The
 * work itself is not cancelled; its late result is ignored.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, what: string, server?: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnavailableError(`${what}: no answer in ${ms} ms`, { server })), ms);
  });
  // A late rejection of `work` after the deadline must not count as unhandled.
  work.catch(() => undefined);
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
