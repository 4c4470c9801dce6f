import type { ColumnKind, Row } from './key-template.js';
import { valueText } from './row-value.js';
import { futureVersionProblem, isVersion, type Version } from './version.js';

/** c = insert, u = update, d = delete, t = truncate or drop of the whole table. */
export type Op = 'c' | 'u' | 'd' | 't';

/** Where a change was read from. */
export interface ChangeSource {
  /** Binlog file holding the transaction. */
  file: string;
  /** Position where the transaction starts in that file. */
  pos: number;
  /** The transaction's GTID (`domain-server-seq` on MariaDB, `uuid:n` on MySQL), when there is one. */
  gtid?: string;
  /** The server's commit time, epoch ms (second resolution: the binlog has no finer). */
  ts_ms: number;
  /** Orders every change of the stream; see version.ts. */
  version: Version;
}

/**
 * One row change as published on the change topic. Row images hold JSON-safe values: what mysql2
 * returns with `dateStrings` and `supportBigNumbers`, binary values as base64 strings.
 */
export interface ChangeEvent {
  op: Op;
  db: string;
  table: string;
  /** Primary key columns and values; empty for a table-level (`t`) event. */
  pk: Row;
  before: Row | null;
  after: Row | null;
  source: ChangeSource;
  /** When the tailer read the change, epoch ms (for end-to-end latency). */
  ts_ms: number;
  /**
   * Table-level (`t`) changes: the kind of each key-template column, so consumers delete only the
   * keys the templates can render (see key-filter.ts). Absent: every column counts as text.
   */
  columnKinds?: Record<string, ColumnKind>;
  /**
   * Set when the change was too large for Kafka: the images hold only the primary key and the key
   * columns, and consumers delete its keys instead of writing them (the full change is in the DLQ).
   */
  oversized?: boolean;
}

/** `<db>.<table>:<pk values joined by ':'>`, so one row's changes share a partition. */
export function messageKey(event: Pick<ChangeEvent, 'db' | 'table' | 'pk'>): string {
  const values = Object.values(event.pk).map((v) => (v === null || v === undefined ? '' : valueText(v)));
  return values.length > 0 ? `${event.db}.${event.table}:${values.join(':')}` : `${event.db}.${event.table}`;
}

export function encodeChangeEvent(event: ChangeEvent): string {
  return JSON.stringify(event);
}

/**
 * Encodes the row changes of one binlog rows event: the parts every row of the event shares (op,
 * table, binlog coordinates, read time) are rendered once, and each row adds its images and seq.
 * The text is the same JSON object as {@link encodeChangeEvent} of the equivalent event, with the
 * keys in the same order; only fewer objects are built on the way (the tailer's hottest path).
 */
export class RowChangeEncoder {
  private readonly head: string;
  private readonly sourceHead: string;
  private readonly tail: string;
  private readonly keyHead: string;

  /**
   * `source.version` of each row is `versionPrefix` followed by the seq passed to {@link encode}.
   * Images handed to {@link encode} must be JSON-safe already (see normalizeRowInPlace).
   */
  constructor(
    readonly op: Exclude<Op, 't'>,
    readonly db: string,
    readonly table: string,
    source: Omit<ChangeSource, 'version'>,
    private readonly versionPrefix: string,
    readAtMs: number,
    private readonly pkColumns: readonly string[],
  ) {
    this.head = `{"op":"${op}","db":${JSON.stringify(db)},"table":${JSON.stringify(table)},"pk":`;
    this.sourceHead =
      `,"source":{"file":${JSON.stringify(source.file)},"pos":${source.pos}` +
      (source.gtid !== undefined ? `,"gtid":${JSON.stringify(source.gtid)}` : '') +
      `,"ts_ms":${source.ts_ms},"version":${JSON.stringify(versionPrefix).slice(0, -1)}`;
    this.tail = `"},"ts_ms":${readAtMs}}`;
    this.keyHead = `${db}.${table}`;
  }

  /** The message key and value of one row change: seq orders it within its transaction (from 1). */
  encode(before: Row | null, after: Row | null, seq: number): { key: string; value: string } {
    const image = (before ?? after)!;
    const pk: Record<string, unknown> = {};
    let key = this.keyHead;
    for (let i = 0; i < this.pkColumns.length; i++) {
      const column = this.pkColumns[i]!;
      const value = image[column] ?? null;
      pk[column] = value;
      key += ':' + (value === null ? '' : valueText(value));
    }
    // Joined, not concatenated: `+` builds a tree of string parts that the tailer would hold (and
    // the GC promote) until Kafka acknowledges the change, to be flattened only when it is sent.
    const value = [
      this.head,
      JSON.stringify(pk),
      ',"before":',
      JSON.stringify(before),
      ',"after":',
      JSON.stringify(after),
      this.sourceHead,
      seq,
      this.tail,
    ].join('');
    return { key, value };
  }
}

const OPS: readonly string[] = ['c', 'u', 'd', 't'];

/**
 * Parses and checks a change event; throws a message saying what is malformed. A version from the
 * future (see futureVersionProblem) is malformed too: applied, its guard would hide every real
 * change of the key.
 */
export function decodeChangeEvent(value: Buffer | string | null, nowMs = Date.now()): ChangeEvent {
  if (value === null) throw new Error('empty message value');
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString());
  } catch (err) {
    throw new Error(`message value is not JSON: ${(err as Error).message}`);
  }
  const e = parsed as Partial<ChangeEvent>;
  const isRow = (r: unknown) => r === null || (typeof r === 'object' && !Array.isArray(r));
  if (typeof e !== 'object' || e === null) throw new Error('message value is not a JSON object');
  if (typeof e.op !== 'string' || !OPS.includes(e.op))
    throw new Error(`op must be one of c, u, d, t; got ${String(e.op)}`);
  if (typeof e.db !== 'string' || typeof e.table !== 'string')
    throw new Error('db and table must be strings');
  if (!isRow(e.before) || !isRow(e.after) || typeof e.pk !== 'object' || e.pk === null) {
    throw new Error('pk must be an object; before and after objects or null');
  }
  if (e.op === 'c' && !e.after) throw new Error('an insert needs an after image');
  if (e.op === 'd' && !e.before) throw new Error('a delete needs a before image');
  if (e.op === 'u' && (!e.before || !e.after)) throw new Error('an update needs before and after images');
  if (!e.source || !isVersion(e.source.version)) throw new Error('source.version is missing or malformed');
  const future = futureVersionProblem(e.source.version, nowMs);
  if (future) throw new Error(future);
  if (
    e.columnKinds !== undefined &&
    (typeof e.columnKinds !== 'object' ||
      e.columnKinds === null ||
      Object.values(e.columnKinds).some((k) => k !== 'integer' && k !== 'text'))
  ) {
    throw new Error('columnKinds must map column names to "integer" or "text"');
  }
  return e as ChangeEvent;
}
