import mysql from 'mysql2/promise';
import type { CompiledConfig } from '../config/types.js';
import { tlsFinding, type Finding } from '../core/finding.js';
import { columnKindOf } from '../core/key-filter.js';
import type { ColumnKind } from '../core/key-template.js';
import { splitTable } from './binlog-source.js';
import type { ServerState } from './source-epoch.js';
import { sourceConnectionOptions } from './source-connection.js';

/**
 * A plain (non-replication) connection as the configured CDC user (TLS included); `extra` sets how
 * values are read.
 */
export function connectToSource(
  source: CompiledConfig['source'],
  extra: Omit<mysql.ConnectionOptions, keyof ReturnType<typeof sourceConnectionOptions>> = {},
): Promise<mysql.Connection> {
  return mysql.createConnection({ ...sourceConnectionOptions(source), ...extra });
}

/** Required server settings: variable, wanted value, why. */
const REQUIRED_SETTINGS: [string, string, string][] = [
  ['log_bin', '1', 'the binlog must be on: start the server with --log-bin'],
  [
    'binlog_format',
    'ROW',
    'row changes are only in the binlog with ROW: SET GLOBAL binlog_format=ROW and in my.cnf',
  ],
  ['binlog_row_image', 'FULL', 'refresh needs whole rows: SET GLOBAL binlog_row_image=FULL and in my.cnf'],
  [
    'binlog_row_metadata',
    'FULL',
    'without it an ALTER TABLE can silently mislabel columns: SET GLOBAL binlog_row_metadata=FULL and in my.cnf',
  ],
];

/**
 * Checks the source database as the tailer will use it: binlog settings, the CDC user's grants,
 * and every mapped table and column.
 */
export async function checkSource(config: Pick<CompiledConfig, 'source' | 'mappings'>): Promise<Finding[]> {
  const { host, port, user } = config.source;
  let conn: mysql.Connection;
  try {
    conn = await connectToSource(config.source);
  } catch (err) {
    return [fail(`connect to MySQL at ${host}:${port} as ${user}`, (err as Error).message)];
  }
  try {
    return [
      await checkTls(conn, config.source),
      ...(await checkSettings(conn, config.source.serverId)),
      ...(await checkGrants(conn)),
      ...(await checkTables(conn, config.mappings)),
    ];
  } finally {
    await conn.end().catch(() => undefined);
  }
}

/**
 * The mapping problems `run` refuses to start with (a missing table, a key naming no column), as
 * config errors naming their paths. Connection failures propagate as they are.
 */
export async function mappingProblems(
  config: Pick<CompiledConfig, 'source' | 'mappings'>,
): Promise<string[]> {
  const conn = await connectToSource(config.source);
  try {
    const findings = await checkTables(conn, config.mappings);
    return findings.filter((f) => !f.ok).map((f) => `${f.what}: ${f.why ?? ''}`);
  } finally {
    await conn.end().catch(() => undefined);
  }
}

/**
 * MySQL 8 settings under which the binlog does not carry row changes in a form the tailer reads:
 * compressed transaction payloads, and partial JSON updates (an update image without the whole
 * document). Absent variables (MariaDB, older MySQL) pass.
 */
const STREAM_SETTINGS: [string, (value: string) => boolean, string][] = [
  [
    'binlog_transaction_compression',
    (v) => v === '0' || v.toUpperCase() === 'OFF',
    'compressed transactions cannot be read: SET GLOBAL binlog_transaction_compression=OFF and in my.cnf',
  ],
  [
    'binlog_row_value_options',
    (v) => v === '',
    "partial JSON updates leave refresh without the whole row: SET GLOBAL binlog_row_value_options='' and in my.cnf",
  ],
];

async function binlogStreamBlockers(conn: mysql.Connection): Promise<Finding[]> {
  const findings: Finding[] = [];
  for (const [name, ok, fix] of STREAM_SETTINGS) {
    let value: string;
    try {
      const [[row]] = await conn.query<mysql.RowDataPacket[]>(`SELECT @@GLOBAL.${name} AS v`);
      value = String(row?.v ?? '');
    } catch {
      continue; // the server has no such setting: nothing to block the stream
    }
    if (ok(value)) findings.push({ ok: true, what: `${name} = ${value === '' ? "''" : value}` });
    else findings.push(fail(`${name} off`, `it is ${value}; ${fix}`));
  }
  return findings;
}

/**
 * Server settings the tailer cannot stream under, each with the fix (run refuses to start with
 * them: a reconnect would only meet them again).
 */
export async function streamProblems(config: Pick<CompiledConfig, 'source'>): Promise<string[]> {
  const conn = await connectToSource(config.source);
  try {
    const findings = await binlogStreamBlockers(conn);
    return findings.filter((f) => !f.ok).map((f) => `${f.what}: ${f.why ?? ''}`);
  } finally {
    await conn.end().catch(() => undefined);
  }
}

/**
 * The kind (integer or text) of every key-template column of every mapped table, by `db.table`:
 * table-level changes carry them so that only keys the templates can render are deleted.
 */
export async function readColumnKinds(
  config: Pick<CompiledConfig, 'source' | 'mappings'>,
): Promise<Map<string, Record<string, ColumnKind>>> {
  const conn = await connectToSource(config.source);
  try {
    const kinds = new Map<string, Record<string, ColumnKind>>();
    for (const mapping of config.mappings) {
      const [rows] = await conn.query<mysql.RowDataPacket[]>(
        'SELECT COLUMN_NAME AS name, DATA_TYPE AS type FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
        [mapping.db, mapping.name],
      );
      const types = new Map(rows.map((r) => [String(r.name), String(r.type)]));
      const table: Record<string, ColumnKind> = {};
      for (const column of new Set(mapping.keys.flatMap((k) => k.template.columns))) {
        const type = types.get(column);
        if (type !== undefined) table[column] = columnKindOf(type);
      }
      kinds.set(mapping.table, table);
    }
    return kinds;
  } finally {
    await conn.end().catch(() => undefined);
  }
}

/** Which server the source is and what its binlog holds, for the tailer's resume plan. */
export async function readServerState(source: CompiledConfig['source']): Promise<ServerState> {
  const conn = await connectToSource(source);
  try {
    const [[server]] = await conn.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v, @@server_id AS id');
    const mariadb = /mariadb/i.test(String(server?.v));
    let identity = `mariadb:${String(server?.id)}`;
    let mariadbGtidPos: string | undefined;
    if (mariadb) {
      const [[gtid]] = await conn.query<mysql.RowDataPacket[]>('SELECT @@GLOBAL.gtid_binlog_pos AS g');
      mariadbGtidPos = String(gtid?.g ?? '');
    } else {
      const [[uuid]] = await conn.query<mysql.RowDataPacket[]>('SELECT @@server_uuid AS u');
      identity = `mysql:${String(uuid?.u)}`;
    }
    const [logs] = await conn.query<mysql.RowDataPacket[]>('SHOW BINARY LOGS');
    const binlogs = logs.map((l) => ({ name: String(l.Log_name), size: Number(l.File_size) }));
    return { identity, binlogs, ...(mariadbGtidPos === undefined ? {} : { mariadbGtidPos }) };
  } finally {
    await conn.end().catch(() => undefined);
  }
}

/** The source's current binlog head: file, position and GTID position. */
export async function readSourceHead(
  source: CompiledConfig['source'],
): Promise<{ file: string; pos: number; gtidSet?: string }> {
  const conn = await connectToSource(source);
  try {
    const [logs] = await conn.query<mysql.RowDataPacket[]>('SHOW BINARY LOGS');
    const last = logs[logs.length - 1];
    if (!last) throw new Error('the server has no binlog: is log_bin on?');
    const [[server]] = await conn.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v');
    const mariadb = /mariadb/i.test(String(server?.v));
    const [[gtid]] = await conn.query<mysql.RowDataPacket[]>(
      `SELECT @@GLOBAL.${mariadb ? 'gtid_current_pos' : 'gtid_executed'} AS g`,
    );
    const gtidSet = String(gtid?.g ?? '').replace(/\s/g, '');
    return { file: String(last.Log_name), pos: Number(last.File_size), ...(gtidSet ? { gtidSet } : {}) };
  } finally {
    await conn.end().catch(() => undefined);
  }
}

/** Whether the server agreed to TLS, as the server itself sees this session. */
async function checkTls(conn: mysql.Connection, source: CompiledConfig['source']): Promise<Finding> {
  const [rows] = await conn.query<mysql.RowDataPacket[]>("SHOW SESSION STATUS LIKE 'Ssl_version'");
  const protocol = String(rows[0]?.Value ?? '');
  const where = `MySQL at ${source.host}:${source.port}`;
  if (source.tls && !protocol) {
    return fail(
      `${where}: TLS on`,
      'the server did not agree to TLS: enable TLS on the server (ssl_cert, ssl_key)',
    );
  }
  return tlsFinding(where, source.host, source.tls, protocol || undefined);
}

async function checkSettings(conn: mysql.Connection, replicaServerId: number): Promise<Finding[]> {
  const [[version]] = await conn.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v, @@server_id AS id');
  const findings: Finding[] = [{ ok: true, what: `connected to ${String(version?.v)}` }];
  for (const [name, wanted, fix] of REQUIRED_SETTINGS) {
    let value: string;
    try {
      const [[row]] = await conn.query<mysql.RowDataPacket[]>(`SELECT @@GLOBAL.${name} AS v`);
      value = String(row?.v);
    } catch {
      findings.push(
        fail(`${name} = ${wanted}`, `the server has no ${name}: cachesync needs MySQL 8 or MariaDB 10.5+`),
      );
      continue;
    }
    if (value.toUpperCase() === wanted) findings.push({ ok: true, what: `${name} = ${wanted}` });
    else findings.push(fail(`${name} = ${wanted}`, `it is ${value}; ${fix}`));
  }
  findings.push(...(await binlogStreamBlockers(conn)));
  if (Number(version?.id) === replicaServerId) {
    findings.push(
      fail(
        "source.serverId differs from the server's own server_id",
        `both are ${replicaServerId}; pick another source.serverId`,
      ),
    );
  }
  return findings;
}

async function checkGrants(conn: mysql.Connection): Promise<Finding[]> {
  const [rows] = await conn.query<mysql.RowDataPacket[]>('SHOW GRANTS FOR CURRENT_USER()');
  const grants = rows
    .map((r) => String(Object.values(r)[0]))
    .join('\n')
    .toUpperCase();
  const global = grants
    .split('\n')
    .filter((g) => / ON \*\.\* TO /.test(g))
    .join('\n');
  const has = (text: string, priv: string) => text.includes('ALL PRIVILEGES') || text.includes(priv);
  const wanted: [string, string[]][] = [
    ['REPLICATION SLAVE', ['REPLICATION SLAVE', 'REPLICATION REPLICA']],
    ['REPLICATION CLIENT', ['REPLICATION CLIENT', 'BINLOG MONITOR', 'SUPER']],
  ];
  const findings: Finding[] = wanted.map(([name, aliases]) =>
    aliases.some((a) => has(global, a))
      ? { ok: true, what: `grant ${name}` }
      : fail(
          `grant ${name}`,
          `the user lacks it: GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO <user>`,
        ),
  );
  // SELECT may be granted globally or per database; the table checks below prove it per table.
  return findings;
}

async function checkTables(conn: mysql.Connection, mappings: CompiledConfig['mappings']): Promise<Finding[]> {
  const findings: Finding[] = [];
  for (const [i, mapping] of mappings.entries()) {
    const [db, table] = splitTable(mapping.table);
    const [rows] = await conn.query<mysql.RowDataPacket[]>(
      'SELECT COLUMN_NAME AS name, COLUMN_KEY AS k FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
      [db, table],
    );
    if (rows.length === 0) {
      findings.push(
        fail(
          `mappings[${i}].table ${mapping.table} exists`,
          'no such table, or the user has no SELECT on it',
        ),
      );
      continue;
    }
    const columns = new Set(rows.map((r) => String(r.name)));
    const missing: string[] = [];
    for (const [j, key] of mapping.keys.entries()) {
      for (const c of key.template.columns)
        if (!columns.has(c)) missing.push(`mappings[${i}].keys[${j}].key: {${c}}`);
      for (const c of key.columns ?? [])
        if (!columns.has(c)) missing.push(`mappings[${i}].keys[${j}].columns: ${c}`);
    }
    for (const c of mapping.onlyWhenChanged ?? [])
      if (!columns.has(c)) missing.push(`mappings[${i}].onlyWhenChanged: ${c}`);
    if (missing.length > 0) {
      findings.push(
        fail(
          `columns of ${mapping.table}`,
          `no such column for ${missing.join(', ')}; it has ${[...columns].join(', ')}`,
        ),
      );
    } else {
      findings.push({ ok: true, what: `table ${mapping.table} and its mapped columns` });
    }
    if (!rows.some((r) => r.k === 'PRI')) {
      findings.push({
        ok: true,
        warning: true,
        what: `${mapping.table} has no primary key: all its changes share one partition`,
      });
    }
  }
  return findings;
}

function fail(what: string, why: string): Finding {
  return { ok: false, what, why };
}
