import type mysql from 'mysql2/promise';
import type { SourceConfig } from '../config/types.js';
import { CachesyncError } from '../core/errors.js';
import { columnKindOf } from '../core/key-filter.js';
import type { ColumnKind, Row } from '../core/key-template.js';
import { normalizeRow } from '../core/row-value.js';
import { splitTable } from './binlog-source.js';
import { connectToSource } from './source-checks.js';

/** The binlog position a consistent read saw the database at: the end of the last transaction it sees. */
export interface ReadPosition {
  file: string;
  pos: number;
}

/** A row as read: its values (JSON-safe, as the stream writes them) and its primary key as the driver gave it. */
export interface ReadRow {
  values: Row;
  pk: unknown[];
}

export interface RowsRead {
  rows: ReadRow[];
  position: ReadPosition;
}

/** The server cannot tell the binlog position of a consistent read (MySQL): snapshot and verify need it. */
export class NoSnapshotPositionError extends CachesyncError {
  constructor(version: string) {
    super(
      `the server (${version}) does not report the binlog position of a consistent read ` +
        `(binlog_snapshot_file / binlog_snapshot_position, MariaDB 10.0+): snapshot and verify need it ` +
        `to order what they read against the stream. MySQL 8 is not supported by these commands yet.`,
      { retriable: false },
    );
  }
}

/**
 * Reads one table as the stream sees it: in primary-key chunks, each in its own consistent snapshot
 * whose binlog position (MariaDB's `binlog_snapshot_file` / `binlog_snapshot_position`) says which
 * changes the read includes, so what it read can be ordered against every change of the stream.
 * Values are read as the tailer reads the binlog (dateStrings, exact big numbers, binary as base64).
 */
export class TableReader {
  private constructor(
    private readonly conn: mysql.Connection,
    readonly table: string,
    /** Primary key columns, in key order. */
    readonly primaryKey: readonly string[],
    /** What each column renders in a key template, for filtering scanned keys. */
    readonly kinds: Readonly<Record<string, ColumnKind>>,
    /** The server's estimate of the table's row count (for progress). */
    readonly estimatedRows: number,
  ) {}

  /** Connects as the CDC user; throws ConfigError-like errors for a table it cannot read in key order. */
  static async open(source: SourceConfig, table: string): Promise<TableReader> {
    const probe = await connectToSource(source);
    let mariadb: boolean;
    let version: string;
    try {
      const [[row]] = await probe.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v');
      version = String(row?.v);
      mariadb = /mariadb/i.test(version);
    } finally {
      await probe.end().catch(() => undefined);
    }
    if (!mariadb) throw new NoSnapshotPositionError(version);
    const conn = await connectToSource(source, {
      dateStrings: true,
      supportBigNumbers: true,
      // MariaDB's JSON is LONGTEXT: the stream writes it as the text stored.
      jsonStrings: true,
    });
    try {
      await conn.query('SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      const [db, name] = splitTable(table);
      const [columns] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT COLUMN_NAME AS name, DATA_TYPE AS type FROM information_schema.COLUMNS
          WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
        [db, name],
      );
      if (columns.length === 0) throw new Error(`${table}: no such table, or no SELECT on it`);
      const [keys] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT COLUMN_NAME AS name FROM information_schema.KEY_COLUMN_USAGE
          WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`,
        [db, name],
      );
      if (keys.length === 0) {
        throw new Error(`${table} has no primary key: snapshot and verify read tables in primary-key order`);
      }
      const [[stats]] = await conn.query<mysql.RowDataPacket[]>(
        'SELECT TABLE_ROWS AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
        [db, name],
      );
      const kinds: Record<string, ColumnKind> = {};
      for (const c of columns) kinds[String(c.name)] = columnKindOf(String(c.type));
      return new TableReader(
        conn,
        table,
        keys.map((k) => String(k.name)),
        kinds,
        Number(stats?.n ?? 0),
      );
    } catch (err) {
      await conn.end().catch(() => undefined);
      throw err;
    }
  }

  /** Up to `limit` rows after the primary key `after` (from the start without it), in key order. */
  readChunk(after: readonly unknown[] | undefined, limit: number): Promise<RowsRead> {
    const order = this.primaryKey.map(quoteId).join(', ');
    const where = after ? `WHERE ${afterCondition(this.primaryKey)}` : '';
    const params = after ? afterParams(after) : [];
    return this.inSnapshot(
      `SELECT * FROM ${quoteTable(this.table)} ${where} ORDER BY ${order} LIMIT ${Math.max(1, Math.floor(limit))}`,
      params,
    );
  }

  /** The rows whose `columns` hold one of `tuples` (primary keys, or a key template's placeholder values). */
  readWhere(columns: readonly string[], tuples: readonly (readonly unknown[])[]): Promise<RowsRead> {
    if (tuples.length === 0)
      return this.inSnapshot('SELECT * FROM ' + quoteTable(this.table) + ' WHERE FALSE', []);
    const one = `(${columns.map(() => '?').join(', ')})`;
    const sql =
      `SELECT * FROM ${quoteTable(this.table)} WHERE (${columns.map(quoteId).join(', ')}) IN ` +
      `(${tuples.map(() => one).join(', ')})`;
    return this.inSnapshot(sql, tuples.flat());
  }

  async close(): Promise<void> {
    await this.conn.end().catch(() => undefined);
  }

  private async inSnapshot(sql: string, params: unknown[]): Promise<RowsRead> {
    await this.conn.query('START TRANSACTION WITH CONSISTENT SNAPSHOT');
    try {
      const [status] = await this.conn.query<mysql.RowDataPacket[]>("SHOW STATUS LIKE 'binlog_snapshot_%'");
      const value = (name: string) =>
        status.find((r) => String(r.Variable_name).toLowerCase() === name)?.Value as string | undefined;
      const file = value('binlog_snapshot_file');
      const pos = Number(value('binlog_snapshot_position'));
      if (!file || !Number.isFinite(pos))
        throw new Error('the server reports no binlog_snapshot_file: is log_bin on?');
      const [raw] = await this.conn.query<mysql.RowDataPacket[]>(sql, params);
      await this.conn.query('COMMIT');
      const rows = raw.map((r) => ({
        values: normalizeRow(r),
        pk: this.primaryKey.map((c) => r[c] as unknown),
      }));
      return { rows, position: { file, pos } };
    } catch (err) {
      await this.conn.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }
}

/** `(a > ?) OR (a = ? AND b > ?) ...`: rows after a composite key, in a form the range optimizer uses. */
function afterCondition(columns: readonly string[]): string {
  return columns
    .map((column, i) =>
      [...columns.slice(0, i).map((c) => `${quoteId(c)} = ?`), `${quoteId(column)} > ?`].join(' AND '),
    )
    .map((c) => `(${c})`)
    .join(' OR ');
}

function afterParams(after: readonly unknown[]): unknown[] {
  return after.flatMap((_, i) => after.slice(0, i + 1));
}

function quoteId(name: string): string {
  return `\`${name.replaceAll('`', '``')}\``;
}

function quoteTable(table: string): string {
  const [db, name] = splitTable(table);
  return `${quoteId(db)}.${quoteId(name)}`;
}
