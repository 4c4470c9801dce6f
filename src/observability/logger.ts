import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /**
   * Human-readable lines instead of JSON. Default: when stdout is a terminal and pino-pretty is
   * installed (a development dependency: a production install, such as the image, logs JSON).
   */
  pretty?: boolean;
  /** Where JSON lines go. Default stdout. */
  destination?: NodeJS.WritableStream;
}

/**
 * One JSON line per event (level, time, msg, context such as role, table, partition, offset, gtid),
 * or readable lines on a terminal. Anything that looks like a secret is redacted.
 */
export function createLogger(opts: LoggerOptions = {}): Logger {
  // pino-pretty is a development dependency: without it (a production install) a terminal gets JSON.
  const pretty = (opts.pretty ?? Boolean(process.stdout.isTTY)) && prettyAvailable();
  const base = {
    level: opts.level ?? 'info',
    base: { pid: process.pid },
    redact: {
      paths: [
        'password',
        '*.password',
        '*.*.password',
        '*.*.*.password',
        'sasl',
        '*.sasl',
        '*.*.sasl',
        'tls',
        '*.tls',
        '*.*.tls',
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

function prettyAvailable(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

/** A logger that drops everything (tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
