import { FatalError, isProgrammerError, UnavailableError } from '../core/errors.js';

/** MySQL/MariaDB error numbers only an operator can fix, with what to change. */
const FATAL_ERRNOS: Record<number, string> = {
  1045: 'check source.user and source.password (or source.passwordFile)',
  1044: 'grant the user REPLICATION SLAVE, REPLICATION CLIENT, SELECT',
  1142: 'grant the user SELECT on the mapped tables',
  1143: 'grant the user SELECT on the mapped columns',
  1227: 'grant the user REPLICATION SLAVE, REPLICATION CLIENT, SELECT',
  1698: 'check source.user and source.password (or source.passwordFile)',
  1251: 'the server asks for an authentication method the client does not support',
};

/**
 * Sorts a mysql2 or zongji failure: bad credentials and missing privileges are fatal (with the fix),
 * a bug stays a bug, and everything else (refused or lost connections, timeouts, a server shutting
 * down or out of connections) is an outage.
 */
export function classifyMysqlError(err: unknown, where: string): Error {
  if (err instanceof UnavailableError || err instanceof FatalError) return err;
  if (isProgrammerError(err)) return err as Error;
  const e = err as { errno?: number; code?: string; message?: string };
  const message = e.message ?? String(err);
  const fix = e.errno !== undefined ? FATAL_ERRNOS[e.errno] : undefined;
  if (fix) return new FatalError(`${where}: ${message}; ${fix}`, { cause: err });
  return new UnavailableError(`${where} unavailable: ${message}`, { cause: err, server: 'mysql' });
}
