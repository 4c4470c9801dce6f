/** One result of `cachesync check`. */
export interface Finding {
  ok: boolean;
  /** What was checked, e.g. `binlog_format = ROW`. */
  what: string;
  /** Why it failed and how to fix it. */
  why?: string;
  /** Passed, but worth knowing. */
  warning?: boolean;
}

/**
 * The `check` line saying whether a connection uses TLS and whether the server's certificate was
 * verified. A plain connection to another host is a warning: logins and row data cross the
 * network in clear.
 */
export function tlsFinding(
  server: string,
  host: string,
  tls: { rejectUnauthorized: boolean } | undefined,
  /** The TLS version the connection uses, when known. */
  protocol?: string,
): Finding {
  if (!tls) {
    const local = /^(127\.|localhost$|::1$|\[::1\]$)/.test(host);
    return local
      ? { ok: true, what: `${server}: TLS off` }
      : {
          ok: true,
          warning: true,
          what: `${server}: TLS off: passwords and data cross the network in clear`,
        };
  }
  const on = `TLS on${protocol ? ` (${protocol})` : ''}`;
  return tls.rejectUnauthorized
    ? { ok: true, what: `${server}: ${on}, server certificate verified` }
    : {
        ok: true,
        warning: true,
        what: `${server}: ${on}, server certificate NOT verified (tls.rejectUnauthorized: false)`,
      };
}
