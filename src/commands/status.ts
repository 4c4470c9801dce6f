import type { CompiledConfig } from '../config/types.js';
import { createKafka } from '../kafka/kafka-client.js';
import type { Logger } from '../observability/logger.js';
import { KafkaCheckpointStore } from '../tailer/checkpoint-store.js';
import { readSourceHead } from '../tailer/source-checks.js';
import { formatTable } from './format-table.js';

/** What `cachesync status` reports. */
export interface Status {
  checkpoint: {
    file: string;
    pos: number;
    gtidSet?: string;
    /** Source epoch of the changes read up to the checkpoint. */
    epoch: number;
    /** Server the position belongs to, when known. */
    server?: string;
    commitTime: string;
    savedAt: string;
  } | null;
  source: { file: string; pos: number; gtidSet?: string } | null;
  /** Seconds the checkpoint is behind the source head; 0 when caught up. */
  sourceLagSeconds: number | null;
  consumerLag: { partition: number; committed: number | null; end: number; lag: number }[];
  dlqDepth: number;
}

/** `cachesync status`: checkpoint, source lag, consumer lag per partition, DLQ depth. */
export async function runStatus(
  config: CompiledConfig,
  logger: Logger,
  opts: { json?: boolean },
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  const status = await collectStatus(config, logger);
  if (opts.json) {
    out.write(`${JSON.stringify(status, null, 2)}\n`);
    return 0;
  }
  const cp = status.checkpoint;
  const src = status.source;
  const lines = [
    `checkpoint   ${cp ? `${cp.file}:${cp.pos}${cp.gtidSet ? ` (gtid ${cp.gtidSet})` : ''}, epoch ${cp.epoch}${cp.server ? ` on ${cp.server}` : ''}, commit time ${cp.commitTime}, stored ${cp.savedAt}` : 'none yet (the tailer has not run)'}`,
    `source head  ${src ? `${src.file}:${src.pos}${src.gtidSet ? ` (gtid ${src.gtidSet})` : ''}` : 'unreachable'}`,
    `source lag   ${status.sourceLagSeconds === null ? 'unknown' : status.sourceLagSeconds === 0 ? '0 s (caught up)' : `${status.sourceLagSeconds.toFixed(1)} s`}`,
    `dlq depth    ${status.dlqDepth} message(s) on ${config.kafka.dlqTopic}`,
    `consumer lag ${status.consumerLag.reduce((s, p) => s + p.lag, 0)} message(s) in group ${config.kafka.groupId}`,
  ];
  out.write(`${lines.join('\n')}\n\n`);
  out.write(
    formatTable(
      ['PARTITION', 'COMMITTED', 'END', 'LAG'],
      status.consumerLag.map((p) => [
        String(p.partition),
        p.committed === null ? '-' : String(p.committed),
        String(p.end),
        String(p.lag),
      ]),
    ),
  );
  return 0;
}

export async function collectStatus(config: CompiledConfig, logger: Logger): Promise<Status> {
  const kafka = createKafka(config.kafka, logger, '-status', { failFast: true });
  const [checkpoint, source] = await Promise.all([
    new KafkaCheckpointStore(kafka, config.kafka.checkpointTopic).load(),
    readSourceHead(config.source).catch((err: Error) => {
      logger.warn({ err: err.message }, 'source unreachable');
      return null;
    }),
  ]);
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [ends, committed, dlq] = await Promise.all([
      admin.fetchTopicOffsets(config.kafka.topic),
      admin.fetchOffsets({ groupId: config.kafka.groupId, topics: [config.kafka.topic] }),
      admin.fetchTopicOffsets(config.kafka.dlqTopic),
    ]);
    const committedBy = new Map(
      (committed[0]?.partitions ?? []).map((p) => [
        p.partition,
        Number(p.offset) >= 0 ? Number(p.offset) : null,
      ]),
    );
    const consumerLag = ends
      .map((e) => {
        const done = committedBy.get(e.partition) ?? null;
        const end = Number(e.high);
        return { partition: e.partition, committed: done, end, lag: end - (done ?? Number(e.low)) };
      })
      .sort((a, b) => a.partition - b.partition);
    const caughtUp = checkpoint && source && checkpoint.file === source.file && checkpoint.pos >= source.pos;
    return {
      checkpoint: checkpoint
        ? {
            file: checkpoint.file,
            pos: checkpoint.pos,
            ...(checkpoint.gtidSet ? { gtidSet: checkpoint.gtidSet } : {}),
            epoch: checkpoint.epoch,
            ...(checkpoint.server ? { server: checkpoint.server } : {}),
            commitTime: new Date(checkpoint.commitTsMs).toISOString(),
            savedAt: new Date(checkpoint.savedAtMs).toISOString(),
          }
        : null,
      source,
      sourceLagSeconds:
        !checkpoint || !source
          ? null
          : caughtUp
            ? 0
            : Math.max(0, (Date.now() - checkpoint.commitTsMs) / 1000),
      consumerLag,
      dlqDepth: dlq.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0),
    };
  } finally {
    await admin.disconnect();
  }
}
