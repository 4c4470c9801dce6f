import { setTimeout as sleep } from 'node:timers/promises';
import type { Cluster, Redis } from 'ioredis';
import type { CompiledConfig, CompiledKey } from '../config/types.js';
import { RedisApplier, type OpOutcome } from '../consumer/redis-applier.js';
import { createRedis } from '../consumer/redis-client.js';
import { refreshOp, type CacheOp } from '../core/cache-plan.js';
import { MessageError } from '../core/errors.js';
import { retry } from '../core/retry.js';
import { versionBefore } from '../core/version.js';
import { createKafka } from '../kafka/kafka-client.js';
import type { Logger } from '../observability/logger.js';
import { KafkaCheckpointStore } from '../tailer/checkpoint-store.js';
import { TableReader, type RowsRead } from '../tailer/table-reader.js';
import { Progress } from './progress.js';
import { selectMappings } from './table-option.js';
import { metaPrefixFor } from '../core/version-guard.js';

export interface SnapshotOptions {
  table?: string[];
  /** Cap on rows read per second, so a big table cannot hurt the database. Default: no cap. */
  rowsPerSecond?: number;
  /** Rows per consistent read. Default 1000. */
  chunkSize?: number;
  /** Checked between chunks: true stops the snapshot where it is (it resumes there next time). */
  aborted?: () => boolean;
}

/** Where an interrupted snapshot of a table resumes: after this primary key. */
interface ResumePoint {
  after: unknown[];
  rows: number;
}

/** How long an interrupted snapshot's resume point is kept. */
type WriteOp = Extract<CacheOp, { kind: 'set' | 'hash' }>;

const RESUME_TTL_MS = 7 * 24 * 3600_000;

/**
 * `cachesync snapshot`: loads the refresh keys of the mapped tables from their current contents,
 * while the pipeline runs and the application writes. Each primary-key chunk is read in its own
 * consistent snapshot and written through the versioned apply with the version of the binlog
 * position it was read at: a change committed after the read wins and an older one loses,
 * whichever reaches Redis first. A killed snapshot resumes after its last finished chunk.
 */
export async function runSnapshot(
  config: CompiledConfig,
  logger: Logger,
  opts: SnapshotOptions,
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): Promise<number> {
  const mappings = selectMappings(config, opts.table);
  const log = logger.child({ component: 'snapshot' });
  const epoch = await sourceEpoch(config, logger);
  const redis = createRedis(config.redis);
  const applier = new RedisApplier(redis, { metaPrefix: metaPrefixFor(config.source.name) });
  let failed = 0;
  try {
    for (const mapping of mappings) {
      const keys = mapping.keys
        .filter((k) => k.action === 'refresh')
        // The snapshot writes values; a delayed re-delete belongs to a change, not to a load.
        .map((k): CompiledKey => ({ ...k, delayedRedeleteMs: undefined }));
      if (keys.length === 0) {
        out.write(`${mapping.table}: invalidate keys only, nothing to load\n`);
        continue;
      }
      const resumeKey = `${applier.metaPrefix}snapshot:{${mapping.table}}`;
      const reader = await TableReader.open(config.source, mapping.table);
      try {
        const resume = await loadResume(redis, resumeKey);
        if (resume) {
          log.info({ table: mapping.table, rowsBefore: resume.rows }, 'resuming an interrupted snapshot');
        }
        const progress = new Progress(err, `loaded ${mapping.table}`, 100_000, reader.estimatedRows);
        const counts: Record<OpOutcome | 'failed', number> = { applied: 0, stale: 0, failed: 0 };
        const chunkSize = Math.min(opts.chunkSize ?? 1000, opts.rowsPerSecond ?? Infinity);
        const startedAt = Date.now();
        let rowsRead = resume?.rows ?? 0;
        let rowsThisRun = 0;
        let next: Promise<RowsRead> = reader.readChunk(resume?.after, chunkSize);
        for (;;) {
          const { rows, position } = await next;
          if (opts.aborted?.()) {
            log.info({ table: mapping.table, rows: rowsRead }, 'snapshot stopped; it resumes here');
            return failed > 0 ? 1 : 0;
          }
          if (rows.length === 0) break;
          const last = rows[rows.length - 1]!.pk;
          // Read the next chunk while this one is written: one read and one write in flight.
          next = reader.readChunk(last, chunkSize);
          next.catch(() => undefined);
          const version = versionBefore(epoch, position.file, position.pos);
          const ops: WriteOp[] = [];
          for (const row of rows) {
            for (const key of keys) {
              try {
                const op = refreshOp(row.values, key, version);
                if (op) ops.push(op);
              } catch (e) {
                counts.failed++;
                log.error({ table: mapping.table, err: (e as Error).message }, 'row cannot be mapped');
              }
            }
          }
          for (const outcome of await applyAll(applier, ops, log, opts.aborted)) counts[outcome]++;
          rowsRead += rows.length;
          rowsThisRun += rows.length;
          await redis.set(
            resumeKey,
            JSON.stringify({ after: encodePk(last), rows: rowsRead }),
            'PX',
            RESUME_TTL_MS,
          );
          progress.tick(rows.length);
          if (opts.rowsPerSecond) {
            const due = startedAt + (rowsThisRun * 1000) / opts.rowsPerSecond;
            if (due > Date.now()) await sleep(due - Date.now());
          }
        }
        progress.done();
        await redis.del(resumeKey);
        failed += counts.failed;
        out.write(
          `${mapping.table}: ${rowsRead} rows loaded` +
            (resume ? ` (resumed after ${resume.rows})` : '') +
            `; keys written ${counts.applied}, skipped ${counts.stale} (a newer change was there), ` +
            `failed ${counts.failed}\n`,
        );
      } finally {
        await reader.close();
      }
    }
  } finally {
    redis.disconnect();
  }
  return failed > 0 ? 1 : 0;
}

/** True while some table's snapshot was started and not finished (a resume point is stored). */
export async function snapshotInProgress(config: CompiledConfig): Promise<boolean> {
  const redis = createRedis(config.redis);
  try {
    const applier = new RedisApplier(redis);
    for (const mapping of config.mappings) {
      if ((await redis.exists(`${applier.metaPrefix}snapshot:{${mapping.table}}`)) > 0) return true;
    }
    return false;
  } finally {
    redis.disconnect();
  }
}

/**
 * Applies a chunk's writes, retrying while Redis is unavailable. A write Redis rejects (a key of
 * another type) fails alone: the rest of the chunk is still written.
 */
async function applyAll(
  applier: RedisApplier,
  ops: readonly WriteOp[],
  log: Logger,
  aborted?: () => boolean,
): Promise<(OpOutcome | 'failed')[]> {
  const policy = { initialMs: 100, maxMs: 5000 };
  const onRetry = (e: unknown, attempt: number) =>
    log.warn({ err: (e as Error).message, attempt }, 'Redis unavailable; retrying the chunk');
  try {
    return await retry(() => applier.apply(ops), policy, { onRetry, ...(aborted ? { aborted } : {}) });
  } catch (e) {
    if (!(e instanceof MessageError)) throw e;
  }
  return Promise.all(
    ops.map((op) =>
      retry(() => applier.apply([op]), policy, { onRetry, ...(aborted ? { aborted } : {}) }).then(
        (o) => o[0] ?? 'applied',
        (e: unknown) => {
          if (!(e instanceof MessageError)) throw e;
          log.error({ key: op.key, err: e.message }, 'key not written');
          return 'failed' as const;
        },
      ),
    ),
  );
}

/**
 * The source epoch of the tailer's stored checkpoint, which the snapshot's versions must carry to
 * compare with the stream's; 0 when no tailer has stored one yet.
 */
async function sourceEpoch(config: CompiledConfig, logger: Logger): Promise<number> {
  const kafka = createKafka(config.kafka, logger, '-snapshot');
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(config.kafka.checkpointTopic)) return 0;
  } finally {
    await admin.disconnect();
  }
  const checkpoint = await new KafkaCheckpointStore(kafka, config.kafka.checkpointTopic).load();
  return checkpoint?.epoch ?? 0;
}

async function loadResume(redis: Redis | Cluster, key: string): Promise<ResumePoint | undefined> {
  const text = await redis.get(key);
  if (!text) return undefined;
  const point = JSON.parse(text) as { after: unknown[]; rows: number };
  return { after: decodePk(point.after), rows: point.rows };
}

/** Primary key values survive JSON: binary values as `{ base64 }`. */
function encodePk(pk: readonly unknown[]): unknown[] {
  return pk.map((v) => (Buffer.isBuffer(v) ? { base64: v.toString('base64') } : v));
}

function decodePk(pk: readonly unknown[]): unknown[] {
  return pk.map((v) =>
    v !== null && typeof v === 'object' && 'base64' in v ? Buffer.from(String(v.base64), 'base64') : v,
  );
}
