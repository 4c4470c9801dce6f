// First: it replaces two kafkajs internals, which must happen before kafkajs loads.
import './kafkajs-fast-paths.js';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { constants as zlibConstants, gzip, unzip } from 'node:zlib';
import type * as Kafkajs from 'kafkajs';
import type { Kafka, KafkaConfig as KafkajsConfig, LogEntry, SASLOptions } from 'kafkajs';
import type { KafkaConfig } from '../config/types.js';
import { tlsFinding, type Finding } from '../core/finding.js';
import type { Logger } from '../observability/logger.js';

/**
 * kafkajs, for every module of cachesync: loaded here with `require`, after the fast paths above.
 * A static `import ... from 'kafkajs'` of a value anywhere in src/ would load it earlier (Node's
 * ESM loader runs an imported CommonJS module while it links the graph, before any module body),
 * so the rest of src/ imports only types from 'kafkajs' (the lint config enforces it).
 */
export const kafkajs = createRequire(import.meta.url)('kafkajs') as typeof Kafkajs;
export const { CompressionTypes, ConfigResourceTypes, Partitioners, logLevel } = kafkajs;

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

const gzipAsync = promisify(gzip);
const unzipAsync = promisify(unzip);

/**
 * kafkajs' gzip codec compresses at zlib's default level (6). The tailer compresses at level 1
 * instead: on change events (JSON with repeated field names) it keeps most of the size saving for
 * a fraction of the CPU, and the compression runs on libuv's thread pool either way. Decompression
 * reads every level.
 */
kafkajs.CompressionCodecs[CompressionTypes.GZIP] = () => ({
  compress: (encoder: { buffer: Buffer }) => {
    const input = encoder.buffer;
    return gzipAsync(input, { level: zlibConstants.Z_BEST_SPEED, chunkSize: outputChunk(input.length / 4) });
  },
  decompress: (buffer: Buffer) => unzipAsync(buffer, { chunkSize: outputChunk(buffer.length * 8) }),
});

/**
 * zlib's output chunk for an expected output size: zlib hands its output back a chunk at a time
 * (16 KiB by default), each a Buffer and a trip back to the event loop, then concatenates them.
 * A chunk sized to the output (change events compress about 5 to 9 times at level 1) makes that
 * one or two: decompressing a 250-event batch took 180 instead of 430 us of CPU. Bounded, so a
 * small message does not allocate a large buffer and a large one takes several chunks.
 */
export function outputChunk(expectedBytes: number): number {
  return Math.min(
    1024 * 1024,
    Math.max(zlibConstants.Z_DEFAULT_CHUNK, 2 ** Math.ceil(Math.log2(expectedBytes || 1))),
  );
}

/**
 * kafkajs logs these at warn or error while it retries them itself (a broker starting, a group
 * coordinator moving), or about choices made here on purpose; they are noise to an operator.
 */
const ROUTINE = [
  /coordinator is loading/i,
  /group coordinator is not available/i,
  /not the correct coordinator/i,
  /leadership election/i,
  /Limiting retries for the idempotent producer/,
  /switched default partitioner/,
  // Connection failures: cachesync reports the outage itself (readiness, one log line per kind).
  /Connection error|Failed to connect to seed broker|Connection timeout|ECONNREFUSED/i,
];

/**
 * How every client reaches the brokers: TLS and SASL from the config. The one place they are
 * applied, so the tailer, the consumers, the checks and the commands connect alike.
 */
export function kafkaSecurity(config: KafkaConfig): Pick<KafkajsConfig, 'ssl' | 'sasl'> {
  const { tls, sasl } = config;
  return {
    ...(tls
      ? {
          ssl: {
            ...(tls.ca === undefined ? {} : { ca: tls.ca }),
            ...(tls.cert === undefined ? {} : { cert: tls.cert }),
            ...(tls.key === undefined ? {} : { key: tls.key }),
            rejectUnauthorized: tls.rejectUnauthorized,
          },
        }
      : {}),
    ...(sasl
      ? {
          // kafkajs names the mechanisms as the config does; its union type needs one literal each.
          sasl: {
            mechanism: sasl.mechanism,
            username: sasl.username,
            password: sasl.password,
          } as SASLOptions,
        }
      : {}),
  };
}

/**
 * A kafkajs client whose log lines go through our logger (warn and up). `failFast` is for one-shot
 * commands (status, dlq): a couple of quick retries, short timeouts, and no retry log lines, so a
 * Kafka that is down fails the command within seconds with one line.
 */
export function createKafka(
  config: KafkaConfig,
  logger: Logger,
  clientIdSuffix = '',
  opts: { failFast?: boolean } = {},
): Kafka {
  const log = logger.child({ component: 'kafkajs' });
  return new kafkajs.Kafka({
    clientId: `${config.clientId}${clientIdSuffix}`,
    brokers: config.brokers,
    ...kafkaSecurity(config),
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, ...context } = entry;
        const text = `${message} ${String(context.error ?? '')}`;
        const routine = opts.failFast === true || ROUTINE.some((r) => r.test(text));
        log[routine ? 'debug' : (LEVELS[level] ?? 'info')](context, message);
      },
    retry: opts.failFast
      ? { initialRetryTime: 200, retries: 2, maxRetryTime: 1000 }
      : { initialRetryTime: 200, retries: 8, maxRetryTime: 10_000 },
    ...(opts.failFast ? { connectionTimeout: 3000, requestTimeout: 5000 } : {}),
  });
}

/** Creates cachesync's topics where missing (change and DLQ topics partitioned, checkpoints compacted). */
export async function ensureTopics(kafka: Kafka, config: KafkaConfig): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const wanted = [
      { topic: config.topic, numPartitions: config.partitions },
      { topic: config.dlqTopic, numPartitions: config.partitions },
      {
        topic: config.checkpointTopic,
        numPartitions: 1,
        configEntries: [{ name: 'cleanup.policy', value: 'compact' }],
      },
    ].filter((t) => !existing.has(t.topic));
    if (wanted.length === 0) return;
    await admin.createTopics({
      topics: wanted.map((t) => ({ ...t, replicationFactor: config.replicationFactor })),
      waitForLeaders: true,
    });
  } finally {
    await admin.disconnect();
  }
}

/** Number of partitions of a topic. */
export async function partitionCount(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    return meta.topics[0]?.partitions.length ?? 0;
  } finally {
    await admin.disconnect();
  }
}

/** `check`: can we reach the brokers, and which of our topics exist yet? */
export async function checkKafka(config: KafkaConfig): Promise<Finding[]> {
  const kafka = new kafkajs.Kafka({
    clientId: `${config.clientId}-check`,
    brokers: config.brokers,
    ...kafkaSecurity(config),
    logLevel: logLevel.NOTHING,
    retry: { retries: 1 },
    connectionTimeout: 3000,
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    const topics = new Set(await admin.listTopics());
    const where = `Kafka at ${config.brokers.join(',')}`;
    const findings: Finding[] = [
      { ok: true, what: `${where}: ${cluster.brokers.length} broker(s)` },
      tlsFinding(where, config.brokers[0]?.replace(/:\d+$/, '') ?? '', config.tls),
      config.sasl
        ? { ok: true, what: `${where}: SASL ${config.sasl.mechanism} as ${config.sasl.username}` }
        : { ok: true, what: `${where}: no SASL authentication` },
    ];
    for (const t of [config.topic, config.dlqTopic, config.checkpointTopic]) {
      findings.push(
        topics.has(t)
          ? { ok: true, what: `topic ${t} exists` }
          : { ok: true, warning: true, what: `topic ${t} is missing: cachesync run creates it` },
      );
    }
    return findings;
  } catch (err) {
    return [{ ok: false, what: `Kafka at ${config.brokers.join(',')} answers`, why: (err as Error).message }];
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}
