import ZongJi, {
  type BinlogEvent,
  type DeleteRowsEvent,
  type QueryEvent,
  type TableMapEvent,
  type UpdateRowsEvent,
  type WriteRowsEvent,
} from '@vlasky/zongji';
import type { StartPosition } from '../config/types.js';
import { RowChangeEncoder, type ChangeEvent, type Op } from '../core/change-event.js';
import { parseTableDdl } from '../core/ddl.js';
import type { ColumnKind, Row } from '../core/key-template.js';
import { normalizeRowInPlace } from '../core/row-value.js';
import { makeVersion, versionPrefix } from '../core/version.js';
import type { SourceConnectionOptions } from './source-connection.js';

/** A point in the binlog where a transaction has just ended: a safe place to resume from. */
export interface BinlogPosition {
  file: string;
  pos: number;
  /** The server's GTID position covering every transaction up to here (MariaDB `0-1-42`, MySQL set). */
  gtidSet?: string;
}

/** A row change, encoded as the message it is published as. */
export interface EncodedChange {
  /** The message key: `<db>.<table>:<primary key values>`. */
  key: string;
  /** The change event's JSON. */
  value: string;
}

/** What the source hands on, in binlog order. */
export type SourceItem =
  /** The row changes of one binlog rows event: one table, one op, already encoded. */
  | {
      kind: 'rows';
      table: string;
      op: Exclude<Op, 't'>;
      changes: EncodedChange[];
      /** The server's commit time of their transaction, epoch ms. */
      commitTsMs: number;
    }
  /** A change built as an object: table-level (`t`) changes. */
  | { kind: 'change'; event: ChangeEvent }
  /**
   * Everything before this item belongs to transactions that are complete. `epoch` and `server`
   * say whose binlog the position is in and which epoch versioned the changes before it.
   */
  | { kind: 'commit'; position: BinlogPosition; commitTsMs: number; epoch: number; server: string };

export interface BinlogSourceOptions {
  /** Source epoch of every version this source reads (see version.ts). */
  epoch: number;
  /** Identity of the server read (`mariadb:<server_id>`, `mysql:<server_uuid>`). */
  server: string;
  connection: SourceConnectionOptions;
  serverId: number;
  /** Mapped tables, as `db.table`; changes of other tables are not read. */
  tables: ReadonlySet<string>;
  /** Kinds of each mapped table's key-template columns, carried by its table-level changes. */
  columnKinds?: ReadonlyMap<string, Record<string, ColumnKind>>;
  onItem: (item: SourceItem) => void;
  /** The stream broke: the owner stops this source and starts a new one from its last commit. */
  onError: (err: Error) => void;
  /**
   * Asks the server for a heartbeat event after this long without events (MariaDB and MySQL
   * `@master_heartbeat_period` on the dump connection), so a dead stream can be told from an idle
   * one. Default: none.
   */
  heartbeatMs?: number;
  /** Any event arrived, heartbeats included: the stream is alive and, after a heartbeat, caught up. */
  onAlive?: (kind: 'event' | 'heartbeat') => void;
  now?: () => number;
}

interface QueryConnection {
  query(sql: string, callback: (err: Error | null) => void): void;
}

const ROW_OPS: Record<string, Exclude<Op, 't'>> = { writerows: 'c', updaterows: 'u', deleterows: 'd' };

/**
 * One binlog connection (zongji) turned into change events of the mapped tables and commit
 * markers. It has no reconnect of its own: the tailer replaces a broken source with a new one
 * started from the last commit marker.
 */
export class BinlogSource {
  private readonly zongji: ZongJi;
  private readonly now: () => number;
  /** Primary key columns by table id, from the table map events (binlog_row_metadata=FULL). */
  private readonly primaryKeys = new Map<number, string[]>();
  private txFile = '';
  private txPos = -1;
  private versionPrefix = '';
  /** The XA transaction being read (between XA START and its prepare): its changes are held. */
  private xa: { xid: string; items: SourceItem[] } | undefined;
  /** The xid of the XA transaction whose XA COMMIT or XA ROLLBACK group is being read (MariaDB). */
  private completingXa: string | undefined;
  /** Prepared XA transactions, by xid, whose fate (XA COMMIT / XA ROLLBACK) is still to come. */
  private readonly preparedXa = new Map<string, SourceItem[]>();
  private seq = 0;
  private paused = false;
  private stopped = false;

  constructor(private readonly opts: BinlogSourceOptions) {
    this.now = opts.now ?? Date.now;
    this.zongji = new ZongJi({
      ...opts.connection,
      // Keep DATETIME(6) microseconds and the server's own text for dates; exact big numbers.
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
  }

  /** Server flavour, known once started. */
  get isMariaDb(): boolean {
    return this.zongji.isMariaDb;
  }

  /** Connects and starts streaming; resolves once the server accepted the dump request. */
  start(from: StartPosition | BinlogPosition): Promise<void> {
    return new Promise((resolve, reject) => {
      let ready = false;
      this.zongji.on('ready', () => {
        ready = true;
        resolve();
      });
      this.zongji.on('error', (err: Error) => {
        if (this.stopped) return;
        if (!ready) reject(err);
        else this.opts.onError(err);
      });
      this.zongji.on('binlog', (event: BinlogEvent) => {
        this.opts.onAlive?.(event.getEventName() === 'heartbeat' ? 'heartbeat' : 'event');
        try {
          this.handle(event);
        } catch (err) {
          this.opts.onError(err as Error);
        }
      });
      const includeSchema: Record<string, string[]> = {};
      for (const t of this.opts.tables) {
        const [db, table] = splitTable(t);
        (includeSchema[db] ??= []).push(table);
      }
      this.zongji.start({ serverId: this.opts.serverId, includeSchema, ...startOptions(from) });
      if (this.opts.heartbeatMs !== undefined) {
        // Queued on the dump connection ahead of zongji's own set-up queries, so it holds for the
        // dump request. The period is in nanoseconds.
        const connection = (this.zongji as unknown as { connection?: QueryConnection }).connection;
        connection?.query(
          `SET @master_heartbeat_period = ${Math.round(this.opts.heartbeatMs * 1e6)}`,
          (err) => {
            if (err && !ready) reject(err);
          },
        );
      }
    });
  }

  /**
   * Where the stream stands now; right after start() that is where it started, a boundary. After a
   * start by GTID the file is not known until the server's first event: undefined until then.
   */
  position(): BinlogPosition | undefined {
    const { filename, position } = this.zongji.options as {
      filename?: string;
      position?: number | string;
    };
    if (typeof filename !== 'string' || filename === '' || position === undefined) return undefined;
    const gtidSet = this.zongji.gtidSet;
    // A start at the end takes the position from SHOW BINARY LOGS, which big-number settings return as text.
    return { file: filename, pos: Number(position), ...(gtidSet ? { gtidSet } : {}) };
  }

  /** Stops reading from the socket: the server holds the rest (backpressure). */
  pause(): void {
    if (this.paused || this.stopped) return;
    this.paused = true;
    this.connection()?.pause();
  }

  resume(): void {
    if (!this.paused || this.stopped) return;
    this.paused = false;
    this.connection()?.resume();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2000);
      this.zongji.once('stopped', () => {
        clearTimeout(timer);
        resolve();
      });
      this.zongji.stop();
    });
  }

  private connection(): { pause(): void; resume(): void } | undefined {
    return (
      (this.zongji as unknown as { connection?: { pause(): void; resume(): void } }).connection ?? undefined
    );
  }

  private handle(event: BinlogEvent): void {
    const name = event.getEventName();
    switch (name) {
      case 'tablemap': {
        const map = event as TableMapEvent;
        const names = map.columnNames;
        if (map.primaryKey && names)
          this.primaryKeys.set(
            map.tableId,
            map.primaryKey.map((i) => names[i] ?? `@${i}`),
          );
        return;
      }
      case 'writerows':
      case 'updaterows':
      case 'deleterows':
        this.emitRows(event as WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent, ROW_OPS[name]!);
        return;
      case 'xid':
        this.emitCommit(event);
        return;
      case 'mariadbgtid': {
        // MariaDB marks the groups of XA transactions in their GTID event, with the xid.
        const gtid = event as unknown as MariadbXaGtid;
        this.completingXa = gtid.completedXa ? mariadbXid(gtid) : undefined;
        if (gtid.preparedXa) this.xa = { xid: mariadbXid(gtid), items: [] };
        return;
      }
      case 'xaprepare': {
        // The end of an XA transaction's first phase: its rows wait for XA COMMIT or XA ROLLBACK.
        const xa = this.xa;
        this.xa = undefined;
        if (!xa) return;
        if ((event as unknown as { onePhase?: boolean }).onePhase) {
          for (const item of xa.items) this.opts.onItem(item);
          this.emitCommit(event);
        } else {
          this.preparedXa.set(xa.xid, xa.items);
        }
        return;
      }
      case 'query': {
        const query = event as QueryEvent;
        const sql = query.query.trim();
        const xa = /^XA\s+(START|BEGIN|COMMIT|ROLLBACK)\s+(.*?)(\s+ONE\s+PHASE)?\s*;?$/i.exec(sql);
        if (xa?.[1] && xa[2] !== undefined) {
          const verb = xa[1].toUpperCase();
          const xid = this.completingXa ?? xa[2].trim();
          if (verb === 'START' || verb === 'BEGIN') {
            this.xa ??= { xid, items: [] };
            return;
          }
          this.completingXa = undefined;
          // A transaction prepared earlier ends: its rows reach Kafka only if it commits.
          const items = this.preparedXa.get(xid) ?? (this.xa?.xid === xid ? this.xa.items : []);
          this.preparedXa.delete(xid);
          if (this.xa?.xid === xid) this.xa = undefined;
          if (verb === 'COMMIT') for (const item of items) this.opts.onItem(item);
          this.emitCommit(event);
          return;
        }
        if (/^(BEGIN|XA END|SAVEPOINT)/i.test(sql)) return;
        this.emitTableDdl(query);
        // COMMIT of a non-transactional engine, or DDL (its own transaction): a boundary.
        this.emitCommit(event);
        return;
      }
      default:
        return;
    }
  }

  private emitRows(event: WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent, op: Exclude<Op, 't'>): void {
    const meta = event.tableMap[event.tableId];
    if (!meta) return;
    const db = meta.parentSchema;
    const table = meta.tableName;
    const qualified = `${db}.${table}`;
    if (!this.opts.tables.has(qualified)) return;
    const { file, pos } = this.transaction();
    const encoder = new RowChangeEncoder(
      op,
      db,
      table,
      { file, pos, ...(event.gtid ? { gtid: event.gtid } : {}), ts_ms: event.timestamp },
      this.versionPrefix,
      this.now(),
      this.primaryKeys.get(event.tableId) ?? [],
    );
    const changes: EncodedChange[] = new Array<EncodedChange>(event.rows.length);
    for (let i = 0; i < event.rows.length; i++) {
      // zongji decodes a fresh object per row image and keeps none: they are normalized in place.
      const raw = event.rows[i] as Record<string, unknown>;
      let before: Row | null = null;
      let after: Row | null = null;
      if (op === 'u') {
        const pair = raw as { before: Record<string, unknown>; after: Record<string, unknown> };
        before = normalizeRowInPlace(pair.before);
        after = normalizeRowInPlace(pair.after);
      } else if (op === 'c') after = normalizeRowInPlace(raw);
      else before = normalizeRowInPlace(raw);
      changes[i] = encoder.encode(before, after, ++this.seq);
    }
    this.emitItem({ kind: 'rows', table: qualified, op, changes, commitTsMs: event.timestamp });
  }

  private emitTableDdl(event: QueryEvent): void {
    const ddl = parseTableDdl(event.query, event.schema);
    if (!ddl) return;
    const readAt = this.now();
    const affected = new Set(ddl.tables.map(({ db, table }) => `${db}.${table}`));
    for (const mapped of this.opts.tables) {
      if (ddl.databases?.includes(splitTable(mapped)[0])) affected.add(mapped);
    }
    for (const qualified of affected) {
      if (!this.opts.tables.has(qualified)) continue;
      const [db, table] = splitTable(qualified);
      const columnKinds = this.opts.columnKinds?.get(qualified);
      this.emitChange({
        op: 't',
        db,
        table,
        pk: {},
        before: null,
        after: null,
        source: this.source(event),
        ts_ms: readAt,
        ...(columnKinds ? { columnKinds } : {}),
      });
    }
  }

  /**
   * The transaction being read: zongji holds filename/position at the transaction's start until its
   * commit, so this pair names the transaction, and seq orders the changes inside it.
   */
  private transaction(): { file: string; pos: number } {
    const { filename } = this.zongji.options as { filename: string };
    const pos = Number((this.zongji.options as { position: number | string }).position);
    if (filename !== this.txFile || pos !== this.txPos) {
      this.txFile = filename;
      this.txPos = pos;
      this.seq = 0;
      this.versionPrefix = versionPrefix(this.opts.epoch, filename, pos);
    }
    return { file: filename, pos };
  }

  private source(event: BinlogEvent): ChangeEvent['source'] {
    const { file, pos } = this.transaction();
    return {
      file,
      pos,
      ...(event.gtid ? { gtid: event.gtid } : {}),
      ts_ms: event.timestamp,
      version: makeVersion(this.opts.epoch, file, pos, ++this.seq),
    };
  }

  /** Hands a change on, or holds it while its XA transaction's fate is unknown. */
  private emitChange(event: ChangeEvent): void {
    this.emitItem({ kind: 'change', event });
  }

  private emitItem(item: SourceItem): void {
    if (this.xa) this.xa.items.push(item);
    else this.opts.onItem(item);
  }

  private emitCommit(event: BinlogEvent): void {
    // While a prepared XA transaction is held in memory, no later point is safe to resume from:
    // a restart must read its prepare again.
    if (this.preparedXa.size > 0) return;
    const position = this.position();
    if (!position) return;
    this.opts.onItem({
      kind: 'commit',
      position,
      commitTsMs: event.timestamp,
      epoch: this.opts.epoch,
      server: this.opts.server,
    });
  }
}

/** The fields of MariaDB's GTID event that mark XA transactions. */
interface MariadbXaGtid {
  preparedXa?: boolean;
  completedXa?: boolean;
  xidFormatId?: number;
  xidGtrid?: Buffer;
  xidBqual?: Buffer;
}

function mariadbXid(gtid: MariadbXaGtid): string {
  return `${gtid.xidFormatId ?? 0}:${gtid.xidGtrid?.toString('hex') ?? ''}:${gtid.xidBqual?.toString('hex') ?? ''}`;
}

function startOptions(from: StartPosition | BinlogPosition): Record<string, unknown> {
  if ('file' in from) {
    // Resume: a GTID position survives failover and purged-file renames; file:pos otherwise.
    return from.gtidSet !== undefined
      ? { gtidSet: from.gtidSet }
      : { filename: from.file, position: from.pos };
  }
  switch (from.kind) {
    case 'end':
      return { startAtEnd: true };
    case 'beginning':
      return { gtidSet: '' };
    case 'gtid':
      return { gtidSet: from.gtidSet };
    case 'file':
      return { filename: from.filename, position: from.position };
  }
}

export function splitTable(qualified: string): [string, string] {
  const dot = qualified.indexOf('.');
  return [qualified.slice(0, dot), qualified.slice(dot + 1)];
}
