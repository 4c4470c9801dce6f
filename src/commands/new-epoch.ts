import type { CompiledConfig, StartPosition } from '../config/types.js';
import { parseStart, START_FORMS } from '../config/schema.js';
import { ConfigError } from '../core/errors.js';
import { createKafka, ensureTopics } from '../kafka/kafka-client.js';
import type { Logger } from '../observability/logger.js';
import type { BinlogPosition } from '../tailer/binlog-source.js';
import { KafkaCheckpointStore, type Checkpoint } from '../tailer/checkpoint-store.js';
import { readServerState, readSourceHead } from '../tailer/source-checks.js';
import { nextEpoch } from '../tailer/source-epoch.js';

/**
 * `cachesync new-epoch [--start <position>]`: after the database was restored from a backup (or
 * whenever binlog positions stop comparing with those read before and the tailer cannot tell),
 * stores a checkpoint in a new source epoch, so every change the tailer reads from `start` on is
 * newer than every change read before. Run it while the tailer is stopped.
 */
export async function runNewEpoch(
  config: CompiledConfig,
  logger: Logger,
  opts: { start?: string },
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  const start: StartPosition | undefined = parseStart(opts.start ?? 'end');
  if (!start) throw new ConfigError(`--start ${opts.start ?? ''}: expected ${START_FORMS}`);
  const server = await readServerState(config.source);
  const oldest = server.binlogs[0];
  if (!oldest) throw new Error('the source has no binlog: is log_bin on?');
  let from: BinlogPosition;
  switch (start.kind) {
    case 'end':
      from = await readSourceHead(config.source);
      break;
    case 'beginning':
      from = { file: oldest.name, pos: 4 };
      break;
    case 'gtid':
      // Resuming goes by the GTID; the file names where the server's binlog history starts.
      from = { file: oldest.name, pos: 4, gtidSet: start.gtidSet };
      break;
    case 'file':
      from = { file: start.filename, pos: start.position };
      break;
  }
  const kafka = createKafka(config.kafka, logger, '-epoch');
  await ensureTopics(kafka, config.kafka);
  const store = new KafkaCheckpointStore(kafka, config.kafka.checkpointTopic);
  try {
    const previous = await store.load().catch((err: Error) => {
      // A malformed checkpoint is what this command replaces.
      logger.warn({ err: err.message }, 'the stored checkpoint is unreadable; replacing it');
      return undefined;
    });
    const now = Date.now();
    const checkpoint: Checkpoint = {
      ...from,
      commitTsMs: now,
      savedAtMs: now,
      epoch: nextEpoch(previous?.epoch, now),
      server: server.identity,
    };
    await store.save(checkpoint);
    const at = `${from.file}:${from.pos}${from.gtidSet ? ` (gtid ${from.gtidSet})` : ''}`;
    out.write(
      `new source epoch ${checkpoint.epoch} (was ${previous ? previous.epoch : 'none'}): the tailer resumes at ` +
        `${at} on ${server.identity}, and every change it reads from there is newer than every change read before\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}
