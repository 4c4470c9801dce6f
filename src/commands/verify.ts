import type { Cluster, Redis } from 'ioredis';
import type { CompiledConfig, CompiledKey, CompiledMapping } from '../config/types.js';
import { KeyInspector } from '../consumer/key-inspector.js';
import { scanOwnedKeys } from '../consumer/key-scan.js';
import { RedisApplier } from '../consumer/redis-applier.js';
import { createRedis } from '../consumer/redis-client.js';
import { compareKey, driftKind, type KeyDifference } from '../core/cache-compare.js';
import { refreshOp, type CacheOp } from '../core/cache-plan.js';
import { keyFilter } from '../core/key-filter.js';
import type { KeyTemplate, Row } from '../core/key-template.js';
import { retry } from '../core/retry.js';
import { compareVersions, versionBefore, type Version } from '../core/version.js';
import { createKafka } from '../kafka/kafka-client.js';
import { comparePositions, PipelineWatch } from '../kafka/pipeline-watch.js';
import type { Logger } from '../observability/logger.js';
import { TableReader, type ReadPosition, type ReadRow } from '../tailer/table-reader.js';
import { formatTable } from './format-table.js';
import { Progress } from './progress.js';
import { selectMappings } from './table-option.js';
import { metaPrefixFor } from '../core/version-guard.js';

/** One line of the report: a refresh key template of a table. */
export interface VerifyResult {
  table: string;
  key: string;
  /** Rows compared with their key. */
  checked: number;
  missing: number;
  stale: number;
  extra: number;
}

export interface VerifyOptions {
  table?: string[];
  repair?: boolean;
  json?: boolean;
  /** Rows read per consistent read. Default 1000. */
  chunkSize?: number;
  /** How long a re-check waits for the pipeline to catch up past a read. Default 30 s. */
  catchUpTimeoutMs?: number;
}

/** Differences held for re-checking before they are re-checked (bounds memory). */
const MAX_SUSPECTS = 5000;
/** Extra keys remembered so that a key SCAN returns twice is counted once. */
const MAX_REMEMBERED_EXTRA = 100_000;
/** Re-checks of a difference that a newer change keeps explaining, before it is left alone. */
const ROUNDS = 4;

type WriteOp = Extract<CacheOp, { kind: 'set' | 'hash' }>;

/**
 * `cachesync verify`: compares every refresh key with its row and reports, per key template,
 * missing keys, stale keys and extra keys (of rows that no longer exist). A difference is drift only
 * if it survives the pipeline catching up past the read that found it; `--repair` then writes or
 * deletes the key through the version guards, with the version of that read. Exit 1 on drift,
 * 0 without (also when every drift was repaired).
 */
export async function runVerify(
  config: CompiledConfig,
  logger: Logger,
  opts: VerifyOptions,
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): Promise<number> {
  const mappings = selectMappings(config, opts.table).filter((m) =>
    m.keys.some((k) => k.action === 'refresh'),
  );
  const log = logger.child({ component: 'verify' });
  const redis = createRedis(config.redis);
  const kafka = createKafka(config.kafka, logger, '-verify');
  const watch = new PipelineWatch(kafka, config.kafka);
  const results: VerifyResult[] = [];
  let repairFailures = 0;
  let repaired = 0;
  try {
    await watch.start();
    if (!watch.checkpoint) {
      log.warn('no tailer checkpoint found: differences cannot be re-checked against a running pipeline');
    }
    for (const mapping of mappings) {
      const reader = await TableReader.open(config.source, mapping.table);
      try {
        const verifier = new TableVerifier({
          mapping,
          redis,
          reader,
          inspector: new KeyInspector(redis, metaPrefixFor(config.source.name)),
          applier: new RedisApplier(redis, { metaPrefix: metaPrefixFor(config.source.name) }),
          watch,
          epoch: checkpointEpoch(watch),
          repair: opts.repair ?? false,
          chunkSize: opts.chunkSize ?? 1000,
          catchUpTimeoutMs: opts.catchUpTimeoutMs ?? 30_000,
          progress: new Progress(err, `verified ${mapping.table}`, 100_000, reader.estimatedRows),
          log: log.child({ table: mapping.table }),
        });
        await verifier.run();
        results.push(...verifier.results);
        repaired += verifier.repaired;
        repairFailures += verifier.repairFailures;
      } finally {
        await reader.close();
      }
    }
  } finally {
    await watch.close();
    redis.disconnect();
  }
  const drift = results.reduce((sum, r) => sum + r.missing + r.stale + r.extra, 0);
  if (opts.json) {
    out.write(`${JSON.stringify({ results }, null, 2)}\n`);
  } else {
    out.write(
      formatTable(
        ['TABLE', 'KEY', 'CHECKED', 'MISSING', 'STALE', 'EXTRA'],
        results.map((r) => [
          r.table,
          r.key,
          String(r.checked),
          String(r.missing),
          String(r.stale),
          String(r.extra),
        ]),
      ),
    );
    if (drift === 0) out.write('no drift: every refresh key matches its row\n');
    else {
      const sum = (k: 'missing' | 'stale' | 'extra') => results.reduce((s, r) => s + r[k], 0);
      out.write(
        `drift: ${drift} key(s) differ from the database (${sum('missing')} missing, ` +
          `${sum('stale')} stale, ${sum('extra')} extra)\n`,
      );
      if (opts.repair) {
        out.write(
          `repaired ${repaired}` +
            (repairFailures > 0 ? `; ${repairFailures} could not be repaired (see the log)` : '') +
            '\n',
        );
      }
    }
  }
  if (drift === 0) return 0;
  return opts.repair && repairFailures === 0 ? 0 : 1;
}

/** The source epoch of the stored checkpoint: a read's version must compare with the stream's. */
function checkpointEpoch(watch: PipelineWatch): number {
  return watch.checkpoint?.epoch ?? 0;
}

interface VerifierContext {
  mapping: CompiledMapping;
  redis: Redis | Cluster;
  reader: TableReader;
  inspector: KeyInspector;
  applier: RedisApplier;
  watch: PipelineWatch;
  epoch: number;
  repair: boolean;
  chunkSize: number;
  catchUpTimeoutMs: number;
  progress: Progress;
  log: Logger;
}

/** A key that differed from its row at a read: the write the row asks for, with the read's version. */
interface RowSuspect {
  key: CompiledKey;
  pk: unknown[];
  op: WriteOp;
  position: ReadPosition;
}

/** A key of no row at a read. */
interface ExtraSuspect {
  key: CompiledKey;
  redisKey: string;
  values: Record<string, string>;
  position: ReadPosition;
}

class TableVerifier {
  readonly results: VerifyResult[];
  repaired = 0;
  repairFailures = 0;
  private readonly byPath = new Map<string, VerifyResult>();
  private readonly keys: CompiledKey[];
  private rowSuspects: RowSuspect[] = [];
  private extraSuspects: ExtraSuspect[] = [];
  private readonly countedExtra = new Set<string>();
  /** Set once the pipeline did not catch up in time: later differences are not waited for again. */
  private pipelineBehind = false;

  constructor(private readonly ctx: VerifierContext) {
    this.keys = ctx.mapping.keys.filter((k) => k.action === 'refresh');
    this.results = this.keys.map((k) => {
      const result = {
        table: ctx.mapping.table,
        key: k.template.source,
        checked: 0,
        missing: 0,
        stale: 0,
        extra: 0,
      };
      this.byPath.set(k.path, result);
      return result;
    });
  }

  async run(): Promise<void> {
    const { reader, chunkSize, progress } = this.ctx;
    let after: unknown[] | undefined;
    for (;;) {
      const { rows, position } = await reader.readChunk(after, chunkSize);
      if (rows.length === 0) break;
      await this.checkRows(rows, position);
      after = rows[rows.length - 1]!.pk;
      progress.tick(rows.length);
      if (this.rowSuspects.length >= MAX_SUSPECTS) await this.resolveRows();
    }
    await this.resolveRows();
    progress.done();
    // Extra keys: the keys each template owns, found by the same filter a truncate deletes by.
    for (const key of this.keys) {
      const match = key.template.matcher(reader.kinds);
      const filter = keyFilter(key.template, reader.kinds, this.ctx.inspector.metaPrefix);
      await scanOwnedKeys(this.ctx.redis, filter, async (keys) => {
        await this.checkScanned(
          key,
          keys.map((k) => ({ key: k, values: match(k) ?? {} })),
        );
        if (this.extraSuspects.length >= MAX_SUSPECTS) await this.resolveExtra();
      });
    }
    await this.resolveExtra();
  }

  private version(position: ReadPosition): Version {
    return versionBefore(this.ctx.epoch, position.file, position.pos);
  }

  /** Compares each row's keys with Redis; differences become suspects. */
  private async checkRows(rows: readonly ReadRow[], position: ReadPosition): Promise<void> {
    const version = this.version(position);
    const items: RowSuspect[] = [];
    for (const row of rows) {
      for (const key of this.keys) {
        const op = renderWrite(row.values, key, version);
        if (!op) continue;
        this.byPath.get(key.path)!.checked++;
        items.push({ key, pk: row.pk, op, position });
      }
    }
    const inspected = await this.ctx.inspector.inspectAll(items.map((i) => i.op.key));
    items.forEach((item, i) => {
      const difference = compareKey(item.op, inspected[i]!.state);
      if (difference && !excused(item.key, difference)) this.rowSuspects.push(item);
    });
  }

  /**
   * Re-checks differing keys once the pipeline has applied everything before their read. A key whose
   * version guard is older than the read should hold exactly the row as read: a difference is drift.
   * A key that a newer change wrote meanwhile is compared again with a fresh read of its row.
   */
  private async resolveRows(): Promise<void> {
    let pending = this.rowSuspects;
    this.rowSuspects = [];
    for (let round = 1; pending.length > 0; round++) {
      const caughtUp = await this.waitPast(pending.map((s) => s.position));
      const inspected = await this.ctx.inspector.inspectAll(pending.map((s) => s.op.key));
      const newer: RowSuspect[] = [];
      const repairs: WriteOp[] = [];
      pending.forEach((s, i) => {
        const { state, version } = inspected[i]!;
        const difference = compareKey(s.op, state);
        if (!difference || excused(s.key, difference)) return;
        if (caughtUp && version !== null && compareVersions(version, s.op.version) >= 0) {
          newer.push(s);
          return;
        }
        this.byPath.get(s.key.path)![driftKind(difference)]++;
        this.ctx.log.debug({ key: s.op.key, difference }, 'drift');
        if (this.ctx.repair) repairs.push({ ...s.op, replace: difference === 'type' });
      });
      await this.applyRepairs(repairs);
      if (newer.length === 0) break;
      if (round >= ROUNDS) {
        this.ctx.log.warn(
          { keys: newer.length },
          'keys changed again at every re-check; not counted as drift (the pipeline keeps writing them)',
        );
        break;
      }
      const { rows, position } = await this.ctx.reader.readWhere(
        this.ctx.reader.primaryKey,
        newer.map((s) => s.pk),
      );
      const byPk = new Map(rows.map((r) => [pkText(r.pk), r]));
      const version = this.version(position);
      pending = [];
      for (const s of newer) {
        // A row deleted since leaves its keys to the scan for extra keys.
        const row = byPk.get(pkText(s.pk));
        const op = row ? renderWrite(row.values, s.key, version) : undefined;
        if (row && op) pending.push({ key: s.key, pk: row.pk, op, position });
      }
    }
  }

  /** Keys the scan found: those no row renders any more are suspects. */
  private async checkScanned(
    key: CompiledKey,
    batch: readonly { key: string; values: Record<string, string> }[],
  ): Promise<void> {
    const fresh = batch.filter((b) => !this.countedExtra.has(b.key));
    const orphans = await this.orphans(key.template, fresh);
    for (const b of orphans.keys) {
      this.extraSuspects.push({ key, redisKey: b.key, values: b.values, position: orphans.position });
    }
  }

  /** Of scanned keys, those that no row of the table renders, as of one consistent read. */
  private async orphans<T extends { key: string; values: Record<string, string> }>(
    template: KeyTemplate,
    scanned: readonly T[],
  ): Promise<{ keys: T[]; position: ReadPosition }> {
    const columns = template.columns;
    const tuples = new Map<string, string[]>();
    for (const s of scanned) {
      const tuple = columns.map((c) => s.values[c] ?? '');
      tuples.set(JSON.stringify(tuple), tuple);
    }
    const { rows, position } = await this.ctx.reader.readWhere(columns, [...tuples.values()]);
    const rendered = new Set(rows.map((r) => safeRender(template, r.values)));
    return { keys: scanned.filter((s) => !rendered.has(s.key)), position };
  }

  /** Like resolveRows, for keys of no row: drift if still there with a guard older than the read. */
  private async resolveExtra(): Promise<void> {
    let pending = this.extraSuspects;
    this.extraSuspects = [];
    for (let round = 1; pending.length > 0; round++) {
      const caughtUp = await this.waitPast(pending.map((s) => s.position));
      const inspected = await this.ctx.inspector.inspectAll(pending.map((s) => s.redisKey));
      const newer: ExtraSuspect[] = [];
      const repairs: CacheOp[] = [];
      pending.forEach((s, i) => {
        const { state, version } = inspected[i]!;
        if (state.type === 'none' || this.countedExtra.has(s.redisKey)) return;
        const readVersion = this.version(s.position);
        if (caughtUp && version !== null && compareVersions(version, readVersion) >= 0) {
          newer.push(s);
          return;
        }
        // SCAN may return a key twice; remembering the keys counted (a bounded number) avoids
        // counting it twice.
        if (this.countedExtra.size >= MAX_REMEMBERED_EXTRA) this.countedExtra.clear();
        this.countedExtra.add(s.redisKey);
        this.byPath.get(s.key.path)!.extra++;
        this.ctx.log.debug({ key: s.redisKey }, 'extra key');
        if (this.ctx.repair) {
          repairs.push({ kind: 'del', key: s.redisKey, version: readVersion, path: s.key.path });
        }
      });
      await this.applyRepairs(repairs);
      if (newer.length === 0) break;
      if (round >= ROUNDS) {
        this.ctx.log.warn({ keys: newer.length }, 'keys changed again at every re-check; not counted');
        break;
      }
      const byTemplate = new Map<string, ExtraSuspect[]>();
      for (const s of newer) byTemplate.set(s.key.path, [...(byTemplate.get(s.key.path) ?? []), s]);
      pending = [];
      for (const group of byTemplate.values()) {
        const scanned = group.map((s) => ({ key: s.redisKey, values: s.values, suspect: s }));
        const orphans = await this.orphans(group[0]!.key.template, scanned);
        for (const o of orphans.keys) pending.push({ ...o.suspect, position: orphans.position });
      }
    }
  }

  /** Waits for the pipeline to pass the latest of the reads; false if it did not in time. */
  private async waitPast(positions: readonly ReadPosition[]): Promise<boolean> {
    if (this.pipelineBehind || positions.length === 0) return false;
    const latest = positions.reduce((a, b) => (comparePositions(a, b) >= 0 ? a : b));
    const caughtUp = await this.ctx.watch.waitPast(latest, this.ctx.catchUpTimeoutMs);
    if (!caughtUp) {
      this.pipelineBehind = true;
      this.ctx.log.warn(
        { position: `${latest.file}:${latest.pos}`, waitedMs: this.ctx.catchUpTimeoutMs },
        'the pipeline did not catch up past the read in time (is cachesync running?): differences are reported as they are',
      );
    }
    return caughtUp;
  }

  /** Writes or deletes through the version guards: a newer change is never overwritten. */
  private async applyRepairs(ops: readonly CacheOp[]): Promise<void> {
    if (ops.length === 0) return;
    try {
      const outcomes = await retry(
        () => this.ctx.applier.apply(ops),
        { initialMs: 100, maxMs: 2000 },
        {
          maxAttempts: 10,
        },
      );
      this.repaired += outcomes.length;
    } catch (err) {
      this.repairFailures += ops.length;
      this.ctx.log.error({ err: (err as Error).message, keys: ops.length }, 'repair failed');
    }
  }
}

/** A missing key is expected where keys expire (ttl) or are deleted again on purpose (delayedRedelete). */
function excused(key: CompiledKey, difference: KeyDifference): boolean {
  return difference === 'missing' && (key.ttlMs !== undefined || key.delayedRedeleteMs !== undefined);
}

/** The write a row asks for, without TTL jitter (the value, not its expiry, is compared). */
function renderWrite(row: Row, key: CompiledKey, version: Version): WriteOp | undefined {
  try {
    return refreshOp(row, key, version, () => 0.5);
  } catch {
    // A row the stream could not map either (a column missing): nothing to compare.
    return undefined;
  }
}

function safeRender(template: KeyTemplate, row: Row): string | undefined {
  try {
    return template.render(row);
  } catch {
    return undefined;
  }
}

function pkText(pk: readonly unknown[]): string {
  return JSON.stringify(pk.map((v) => (Buffer.isBuffer(v) ? v.toString('base64') : String(v))));
}
