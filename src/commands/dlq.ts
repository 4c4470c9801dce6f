import type { KafkaMessage } from 'kafkajs';
import type { CompiledConfig } from '../config/types.js';
import { DLQ_HEADERS } from '../consumer/dead-letters.js';
import { RedisApplier } from '../consumer/redis-applier.js';
import { createRedis } from '../consumer/redis-client.js';
import { planCacheOps, type CacheOp } from '../core/cache-plan.js';
import { decodeChangeEvent, type ChangeEvent } from '../core/change-event.js';
import { ConfigError } from '../core/errors.js';
import { compareVersions } from '../core/version.js';
import { formatDuration } from '../config/duration.js';
import { createKafka } from '../kafka/kafka-client.js';
import { guardLifetimeMs } from '../kafka/retention.js';
import { readTopicToEnd } from '../kafka/topic-reader.js';
import type { Logger } from '../observability/logger.js';
import { formatTable as table } from './format-table.js';
import { Progress } from './progress.js';
import { metaPrefixFor } from '../core/version-guard.js';

interface Letter {
  message: KafkaMessage;
  partition: number;
  event?: ChangeEvent;
  table: string;
  header: (name: string) => string | undefined;
}

function toLetter(message: KafkaMessage, partition: number): Letter {
  const header = (name: string) => {
    const value = message.headers?.[name];
    return value === undefined ? undefined : Array.isArray(value) ? String(value[0]) : String(value);
  };
  try {
    const event = decodeChangeEvent(message.value);
    return { message, partition, event, table: `${event.db}.${event.table}`, header };
  } catch {
    return { message, partition, table: '(undecodable)', header };
  }
}

/** A `--table` must name a mapped table; anything else is a typo that would silently match nothing. */
function checkTableOption(config: CompiledConfig, table: string | undefined): void {
  if (table === undefined || config.mappings.some((m) => m.table === table)) return;
  throw new ConfigError(
    `--table ${table}: not a mapped table; expected one of ${config.mappings.map((m) => m.table).join(', ')}`,
  );
}

/** `cachesync dlq list`: dead letters per table and error class. */
export async function dlqList(
  config: CompiledConfig,
  logger: Logger,
  opts: { table?: string; json?: boolean },
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  checkTableOption(config, opts.table);
  const groups = new Map<
    string,
    { table: string; errorClass: string; count: number; first: string; last: string; example: string }
  >();
  const kafka = createKafka(config.kafka, logger, '-dlq', { failFast: true });
  await readTopicToEnd(kafka, config.kafka.dlqTopic, (message, partition) => {
    const letter = toLetter(message, partition);
    if (opts.table && letter.table !== opts.table) return;
    const errorClass = letter.header(DLQ_HEADERS.errorClass) ?? 'unknown';
    const key = `${letter.table}\u0000${errorClass}`;
    const first = letter.header(DLQ_HEADERS.firstFailure) ?? '';
    const last = letter.header(DLQ_HEADERS.lastFailure) ?? '';
    const g = groups.get(key) ?? {
      table: letter.table,
      errorClass,
      count: 0,
      first,
      last,
      example: letter.header(DLQ_HEADERS.error) ?? '',
    };
    g.count++;
    if (first && (!g.first || first < g.first)) g.first = first;
    if (last > g.last) g.last = last;
    groups.set(key, g);
  });
  const rows = [...groups.values()].sort((a, b) => a.table.localeCompare(b.table) || b.count - a.count);
  const total = rows.reduce((sum, r) => sum + r.count, 0);
  if (opts.json) {
    out.write(`${JSON.stringify({ topic: config.kafka.dlqTopic, total, groups: rows }, null, 2)}\n`);
    return 0;
  }
  if (total === 0) {
    out.write(`no dead letters on ${config.kafka.dlqTopic}${opts.table ? ` for ${opts.table}` : ''}\n`);
    return 0;
  }
  out.write(
    table(
      ['TABLE', 'ERROR CLASS', 'COUNT', 'FIRST FAILURE', 'LAST FAILURE', 'EXAMPLE'],
      rows.map((r) => [r.table, r.errorClass, String(r.count), r.first, r.last, r.example.slice(0, 80)]),
    ),
  );
  out.write(`${total} dead letter(s) on ${config.kafka.dlqTopic}\n`);
  return 0;
}

const REPLAY_BATCH = 500;

/** What happened to one replayed letter. */
type ReplayOutcome = 'applied' | 'stale' | 'failed' | 'unmapped' | 'refused';

/**
 * `cachesync dlq replay`: puts dead letters through the same versioned apply as the consumer, so a
 * letter older than what Redis holds changes nothing. Exit 1 if any letter failed again.
 */
export async function dlqReplay(
  config: CompiledConfig,
  logger: Logger,
  opts: { table?: string; dryRun?: boolean; json?: boolean; force?: boolean },
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  checkTableOption(config, opts.table);
  const mappings = new Map(config.mappings.map((m) => [m.table, m]));
  const kafka = createKafka(config.kafka, logger, '-dlq', { failFast: true });
  const guardTtlMs = await guardLifetimeMs(kafka, config.kafka, config.consumer.guardTtlMs);
  const redis = createRedis(config.redis);
  const applier = new RedisApplier(redis, {
    versionTtlMs: guardTtlMs,
    metaPrefix: metaPrefixFor(config.source.name),
  });
  // A letter older than the guards' lifetime may be older than a change whose guard is gone:
  // applied, it could put an older value back. Only --force replays it.
  const expired = (letter: Letter) =>
    !opts.force &&
    guardTtlMs !== null &&
    letter.event !== undefined &&
    Date.now() - letter.event.ts_ms > guardTtlMs;
  const counts: Record<ReplayOutcome, number> = { applied: 0, stale: 0, failed: 0, unmapped: 0, refused: 0 };
  const failures: string[] = [];
  const progress = new Progress(out, opts.dryRun ? 'checked' : 'replayed');
  // Letters are applied a batch at a time: issued together, pipelined by the client, and still in
  // order on each connection, so a key's letters apply in DLQ order.
  let batch: Letter[] = [];
  const flush = async () => {
    const outcomes = await Promise.all(
      batch.map((letter) =>
        (expired(letter)
          ? Promise.resolve('refused' as const)
          : replayOne(letter, mappings, applier, opts.dryRun ?? false)
        ).catch((err: Error) => {
          const { message, partition } = letter;
          failures.push(
            `${letter.table} ${message.key?.toString() ?? ''} (partition ${partition}, offset ${message.offset}): ${err.message}`,
          );
          return 'failed' as const;
        }),
      ),
    );
    for (const outcome of outcomes) counts[outcome]++;
    progress.tick(outcomes.length);
    batch = [];
  };
  try {
    await readTopicToEnd(kafka, config.kafka.dlqTopic, async (message, partition) => {
      const letter = toLetter(message, partition);
      if (opts.table && letter.table !== opts.table) return;
      batch.push(letter);
      if (batch.length >= REPLAY_BATCH) await flush();
    });
    await flush();
  } finally {
    redis.disconnect();
    progress.done();
  }
  const verb = opts.dryRun ? 'would apply' : 'applied';
  if (opts.json) {
    out.write(`${JSON.stringify({ dryRun: opts.dryRun ?? false, ...counts, failures }, null, 2)}\n`);
  } else {
    out.write(
      `${verb} ${counts.applied}, skipped as stale ${counts.stale} (Redis holds a newer change), ` +
        `failed ${counts.failed}, unmapped ${counts.unmapped}` +
        (counts.refused > 0
          ? `, refused ${counts.refused}: older than the version guards' lifetime (${formatDuration(guardTtlMs ?? 0)}), ` +
            'so the guard of a newer change may be gone and replaying could put an older value back; ' +
            '--force replays them anyway'
          : '') +
        '\n',
    );
    for (const f of failures.slice(0, 20)) out.write(`  failed: ${f}\n`);
    if (failures.length > 20) out.write(`  ...and ${failures.length - 20} more\n`);
  }
  return counts.failed > 0 || counts.refused > 0 ? 1 : 0;
}

async function replayOne(
  letter: Letter,
  mappings: Map<string, CompiledConfig['mappings'][number]>,
  applier: RedisApplier,
  dryRun: boolean,
): Promise<ReplayOutcome> {
  if (!letter.event) throw new Error('the message is not a change event');
  const mapping = mappings.get(letter.table);
  if (!mapping) return 'unmapped';
  const ops = planCacheOps(letter.event, mapping);
  const outcomes = dryRun
    ? await Promise.all(ops.map((op) => wouldApply(applier, op)))
    : await applier.apply(ops);
  return outcomes.length > 0 && outcomes.every((o) => o === 'stale') ? 'stale' : 'applied';
}

async function wouldApply(applier: RedisApplier, op: CacheOp): Promise<'applied' | 'stale'> {
  if (op.kind !== 'set' && op.kind !== 'hash' && op.kind !== 'del') return 'applied';
  const current = await applier.currentVersion(op.key);
  if (current === null) return 'applied';
  const order = compareVersions(current, op.version);
  return order > 0 || (order === 0 && op.kind !== 'del') ? 'stale' : 'applied';
}
