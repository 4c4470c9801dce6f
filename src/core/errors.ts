/**
 * The error taxonomy every loop follows. Each failure is one of four kinds, and the kind decides
 * what happens, whatever the loop:
 *
 * - `outage`: a server did it (a timeout, a lost connection, a transient reply such as Redis
 *   LOADING or Kafka's "not the leader"). Nobody's fault: pause, count no attempt, dead-letter
 *   nothing, try again with backoff until the server answers.
 * - `message`: the message did it (an unrenderable key, a malformed event, Redis WRONGTYPE).
 *   Retried a bounded number of times, then dead-lettered.
 * - `fatal`: an operator must fix something (bad credentials, a missing privilege, a purged binlog,
 *   a server setting). Stop at once with a message that says what to change.
 * - `programmer`: a bug in cachesync (TypeError, RangeError, a failed assertion). Never retried,
 *   never counted as an outage, never dead-lettered: the process stops with exit 1 and the
 *   supervisor restarts it.
 */
export type ErrorKind = 'outage' | 'message' | 'fatal' | 'programmer';

export class CachesyncError extends Error {
  readonly retriable: boolean;
  constructor(message: string, opts: { retriable: boolean; cause?: unknown }) {
    super(message, { cause: opts.cause });
    this.name = new.target.name;
    this.retriable = opts.retriable;
  }
}

/** A failure caused by the message itself; retried a bounded number of times, then dead-lettered. */
export class MessageError extends CachesyncError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, { retriable: false, cause: opts.cause });
  }
}

/** A server is unavailable or timed out: wait and try again, never dead-letter. */
export class UnavailableError extends CachesyncError {
  /** Which server: `redis`, `kafka`, `mysql`. */
  readonly server: string | undefined;
  constructor(message: string, opts: { cause?: unknown; server?: string } = {}) {
    super(message, { retriable: true, cause: opts.cause });
    this.server = opts.server;
  }
}

/** Something only an operator can fix (credentials, privileges, a server setting): stop, exit 1. */
export class FatalError extends CachesyncError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, { retriable: false, cause: opts.cause });
  }
}

/** Bad config or usage: reported with the config path and the fix, exit code 2. */
export class ConfigError extends CachesyncError {
  constructor(message: string) {
    super(message, { retriable: false });
  }
}

/** A broken invariant inside cachesync: a bug, never the input's or a server's fault. */
export class ProgrammerError extends Error {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'ProgrammerError';
  }
}

/** Fails with a ProgrammerError when `condition` is false. */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new ProgrammerError(`invariant violated: ${message}`);
}

const PROGRAMMER_ERRORS = new Set(['TypeError', 'RangeError', 'ReferenceError', 'AssertionError']);

/** True for a bug: TypeError, RangeError, ReferenceError, a failed assertion or invariant. */
export function isProgrammerError(err: unknown): boolean {
  if (err instanceof ProgrammerError) return true;
  if (err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError) return true;
  return err instanceof Error && PROGRAMMER_ERRORS.has(err.name) && !(err instanceof CachesyncError);
}

/**
 * The kind of a failure. Adapters turn driver errors into CachesyncErrors first (classifyRedisError,
 * classifyKafkaError, classifyMysqlError); anything else that is not a bug counts as an outage, the
 * safe default for I/O (waiting never loses a change, dead-lettering might).
 */
export function errorKind(err: unknown): ErrorKind {
  if (isProgrammerError(err)) return 'programmer';
  if (err instanceof MessageError) return 'message';
  if (err instanceof UnavailableError) return 'outage';
  if (err instanceof CachesyncError) return err.retriable ? 'outage' : 'fatal';
  return 'outage';
}

/** The message of any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A log line's description of a programmer error: name, message and where it was thrown. */
export function describeBug(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const frame = err.stack
    ?.split('\n')
    .slice(1)
    .find((l) => l.trim().startsWith('at '))
    ?.trim();
  return `${err.name}: ${err.message}${frame ? ` (${frame})` : ''}`;
}
