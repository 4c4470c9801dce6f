import { pino, type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** Human-readable lines instead of JSON. Default: when stdout is a terminal. */
  pretty?: boolean;
  /** Where JSON lines go. Default stdout. */
  destination?: NodeJS.WritableStream;
}

/**
 * One JSON line per event (level, time, msg, context such as role, table, partition, offset, gtid),
 * or readable lines on a terminal. Anything that looks like a secret is redacted.
 */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const pretty = opts.pretty ?? Boolean(process.stdout.isTTY);
  const base = {
    level: opts.level ?? 'info',
    base: { pid: process.pid },
    redact: {
      paths: [
        'password',
        '*.password',
        '*.*.password',
        'url',
        '*.url',
        'config.source.password',
        'config.redis.url',
      ],
      censor: '[redacted]',
    },
  };
  if (pretty) {
    return pino({
      ...base,
      transport: {
        target: 'pino-pretty',
        options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' },
      },
    });
  }
  return opts.destination ? pino(base, opts.destination as pino.DestinationStream) : pino(base);
}

/** A logger that drops everything (tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
