import type { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cluster, Redis } from 'ioredis';
import type { CompiledConfig, CompiledKey, CompiledMapping } from '../config/types.js';
import { compareKey, driftKind, type DriftKind } from '../core/cache-compare.js';
import type { CacheOp } from '../core/cache-plan.js';
import { refreshOp } from '../core/cache-plan.js';
import type { ChangeEvent } from '../core/change-event.js';
import type { Row } from '../core/key-template.js';
import { compareVersions, versionBefore, versionEpoch } from '../core/version.js';
import type { Logger } from '../observability/logger.js';
import { NoSnapshotPositionError, TableReader } from '../tailer/table-reader.js';
import { KeyInspector } from './key-inspector.js';
import type { OpOutcome } from './redis-applier.js';
import { metaPrefixFor } from '../core/version-guard.js';

/** What the audit reports (the metrics module turns it into series). */
export interface AuditEvents {
  /**
   * Due samples of one table compared with their rows: `checked` were counted (found consistent, or
   * still different after their last check), `inconsistent` of them differed, by kind. Sent only
   * when some were counted.
   */
  audited: [{ table: string; checked: number; inconsistent: { kind: DriftKind; count: number }[] }];
}

export interface AuditorOptions {
  config: Pick<CompiledConfig, 'source' | 'mappings' | 'audit'>;
  redis: Redis | Cluster;
  events: Pick<EventEmitter<AuditEvents>, 'emit'>;
  logger: Logger;
  random?: () => number;
  /** Samples waiting for their check; past it new samples are dropped. Default 1000. */
  maxPending?: number;
}

/** A written key waiting to be compared with its row. */
interface Sample {
  mapping: CompiledMapping;
  key: CompiledKey;
  pk: Row;
  epoch: number;
  dueAt: number;
  checks: number;
}

/** Checks of one sample: a difference still there after the last counts as inconsistent. */
const MAX_CHECKS = 3;
const BATCH = 200;

/**
 * The continuous audit: a sample of the refresh keys the consumer writes is compared with its row
 * after a delay, and the result counted (`cachesync_audit_checked_total`,
 * `cachesync_audit_inconsistent_total{table,kind}`), so staleness is a number one can alert on.
 *
 * A difference is counted only when no change explains it: one the key's version guard shows was
 * applied after the read is newer than the read (checked again later), and one not applied yet is
 * given two more delays (doubling) to arrive. Bounded: at most `maxPending` samples wait.
 */
export class Auditor {
  private queue: Sample[] = [];
  private closing = false;
  private loop: Promise<void> | undefined;
  private readonly readers = new Map<string, Promise<TableReader | undefined>>();
  private readonly inspector: KeyInspector;
  private readonly mappings: Map<string, CompiledMapping>;
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly maxPending: number;

  constructor(private readonly opts: AuditorOptions) {
    this.inspector = new KeyInspector(opts.redis, metaPrefixFor(opts.config.source.name));
    this.mappings = new Map(opts.config.mappings.map((m) => [m.table, m]));
    this.log = opts.logger.child({ component: 'audit' });
    this.random = opts.random ?? Math.random;
    this.maxPending = opts.maxPending ?? 1000;
  }

  get enabled(): boolean {
    return this.opts.config.audit.sampleRate > 0;
  }

  start(): void {
    if (this.enabled) this.loop ??= this.run();
  }

  /** Offers the writes of an applied change for sampling. */
  offer(event: ChangeEvent, ops: readonly CacheOp[], outcomes: readonly OpOutcome[]): void {
    if (!this.enabled || event.op === 'd' || event.op === 't') return;
    const mapping = this.mappings.get(`${event.db}.${event.table}`);
    if (!mapping) return;
    ops.forEach((op, i) => {
      if ((op.kind !== 'set' && op.kind !== 'hash') || outcomes[i] !== 'applied') return;
      if (this.random() >= this.opts.config.audit.sampleRate || this.queue.length >= this.maxPending) return;
      const key = mapping.keys.find((k) => k.path === op.path);
      if (!key) return;
      this.queue.push({
        mapping,
        key,
        pk: event.pk,
        epoch: versionEpoch(op.version),
        dueAt: Date.now() + this.opts.config.audit.delayMs,
        checks: 0,
      });
    });
  }

  /** Stops sampling; a check stuck on an unresponsive database is abandoned after `graceMs`. */
  async close(graceMs = 2000): Promise<void> {
    this.closing = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.loop, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    for (const reader of this.readers.values()) void reader.then((r) => r?.close());
  }

  private async run(): Promise<void> {
    while (!this.closing) {
      await sleep(100);
      const now = Date.now();
      const due = this.queue.filter((s) => s.dueAt <= now).slice(0, BATCH);
      if (due.length === 0) continue;
      const taken = new Set(due);
      this.queue = this.queue.filter((s) => !taken.has(s));
      const byTable = new Map<string, Sample[]>();
      for (const s of due) byTable.set(s.mapping.table, [...(byTable.get(s.mapping.table) ?? []), s]);
      for (const [table, samples] of byTable) {
        try {
          await this.check(table, samples);
        } catch (err) {
          // The database or Redis is unavailable: these samples are dropped, the audit goes on
          // with a new connection.
          this.log.debug({ table, err: (err as Error).message }, 'audit check failed');
          const reader = this.readers.get(table);
          this.readers.delete(table);
          void reader?.then((r) => r?.close());
        }
      }
    }
  }

  private async check(table: string, samples: Sample[]): Promise<void> {
    const reader = await this.reader(table);
    if (!reader) return;
    const pkColumns = reader.primaryKey;
    const pkText = (row: Row) => JSON.stringify(pkColumns.map((c) => row[c] ?? null));
    const { rows, position } = await reader.readWhere(
      pkColumns,
      samples.map((s) => pkColumns.map((c) => s.pk[c] ?? null)),
    );
    const byPk = new Map(rows.map((r) => [pkText(r.values), r.values]));
    const checked: { sample: Sample; op: Extract<CacheOp, { kind: 'set' | 'hash' }> }[] = [];
    for (const sample of samples) {
      const row = byPk.get(pkText(sample.pk));
      // A row deleted since: its delete is on its way or applied; nothing to compare.
      if (!row) continue;
      const version = versionBefore(sample.epoch, position.file, position.pos);
      const op = refreshOp(row, sample.key, version, () => 0.5);
      if (op) checked.push({ sample, op });
    }
    const inspected = await this.inspector.inspectAll(checked.map((c) => c.op.key));
    let counted = 0;
    const inconsistent = new Map<DriftKind, number>();
    checked.forEach(({ sample, op }, i) => {
      const { state, version } = inspected[i]!;
      const difference = compareKey(op, state);
      const expires = sample.key.ttlMs !== undefined || sample.key.delayedRedeleteMs !== undefined;
      if (!difference || (difference === 'missing' && expires)) {
        counted++;
        return;
      }
      const newer = version !== null && compareVersions(version, op.version) >= 0;
      if (++sample.checks < MAX_CHECKS) {
        // Newer than the read, or a change still on its way: look again later.
        sample.dueAt = Date.now() + this.opts.config.audit.delayMs * 2 ** sample.checks;
        if (this.queue.length < this.maxPending) this.queue.push(sample);
        return;
      }
      if (newer) return;
      counted++;
      const kind = driftKind(difference);
      inconsistent.set(kind, (inconsistent.get(kind) ?? 0) + 1);
      this.log.warn({ table, key: op.key, difference }, 'audit: the key differs from its row');
    });
    if (counted > 0) {
      this.opts.events.emit('audited', {
        table,
        checked: counted,
        inconsistent: [...inconsistent].map(([kind, count]) => ({ kind, count })),
      });
    }
  }

  /** One reader per table, opened on first use; on a server that cannot say where a read stands, none. */
  private reader(table: string): Promise<TableReader | undefined> {
    let reader = this.readers.get(table);
    if (!reader) {
      reader = TableReader.open(this.opts.config.source, table).catch((err: unknown) => {
        if (err instanceof NoSnapshotPositionError) {
          this.log.warn({ table, err: err.message }, 'audit off for this table');
        } else {
          // Tried again with the next samples.
          this.readers.delete(table);
          this.log.debug({ table, err: (err as Error).message }, 'audit cannot read the table now');
        }
        return undefined;
      });
      this.readers.set(table, reader);
    }
    return reader;
  }
}
