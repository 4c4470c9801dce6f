/**
 * The two kinds of failure. A retriable one (network, timeout, a server unavailable) is nobody's
 * fault and is retried until it clears. A non-retriable one is caused by the input itself (a bad
 * mapping, an unrenderable key, a value Redis rejects) and retrying cannot fix it.
 */
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
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, { retriable: true, cause: opts.cause });
  }
}

/** Bad config or usage: reported with the config path and the fix, exit code 2. */
export class ConfigError extends CachesyncError {
  constructor(message: string) {
    super(message, { retriable: false });
  }
}
