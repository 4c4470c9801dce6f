import type { SourceConfig, TlsConfig } from '../config/types.js';

/** TLS options in mysql2's form (`ssl`). */
export interface SourceSslOptions {
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized: boolean;
  /** mysql2 checks the host name against the certificate only when asked. */
  verifyIdentity: boolean;
}

/** What every connection to the source is opened with: the binlog connection and every query connection. */
export interface SourceConnectionOptions {
  host: string;
  port: number;
  user: string;
  password: string;
  connectTimeout: number;
  ssl?: SourceSslOptions;
}

/**
 * The one place the source's connection options are made, so that TLS (and anything added later)
 * applies alike to the binlog connection and to every query connection of the checks and commands.
 */
export function sourceConnectionOptions(source: SourceConfig): SourceConnectionOptions {
  const { host, port, user, password, connectTimeoutMs, tls } = source;
  return {
    host,
    port,
    user,
    password,
    connectTimeout: connectTimeoutMs,
    ...(tls ? { ssl: sourceSsl(tls) } : {}),
  };
}

function sourceSsl(tls: TlsConfig): SourceSslOptions {
  return {
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    rejectUnauthorized: tls.rejectUnauthorized,
    verifyIdentity: tls.rejectUnauthorized,
  };
}
