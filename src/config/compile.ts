import type { ConfigFile } from './schema.js';
import type { CompiledConfig, CompiledKey, CompiledMapping } from './types.js';

/** Secrets read from `*File` fields, by the section they belong to. */
export interface FileSecrets {
  sourcePassword?: string;
  redisPassword?: string;
}

/**
 * Turns a validated file into the config components take: secrets resolved, durations renamed to
 * their `...Ms` fields, the key defaults filled in, and each key told its path for later messages.
 */
export function compileConfig(config: ConfigFile, file: string, secrets: FileSecrets): CompiledConfig {
  const { source, redis, tailer, consumer } = config;
  const redisPassword = redis.password ?? secrets.redisPassword;
  return {
    file,
    source: {
      host: source.host,
      port: source.port,
      user: source.user,
      password: chooseSecret(source.password, secrets.sourcePassword, 'source.password'),
      serverId: source.serverId,
      start: source.start,
      connectTimeoutMs: source.connectTimeout,
    },
    kafka: config.kafka,
    redis: {
      url: redis.url,
      cluster: redis.cluster,
      ...(redisPassword === undefined ? {} : { password: redisPassword }),
    },
    metrics: config.metrics,
    tailer: {
      maxBufferedEvents: tailer.maxBufferedEvents,
      batchSize: tailer.batchSize,
      lingerMs: tailer.linger,
    },
    consumer: {
      maxAttempts: consumer.maxAttempts,
      retryInitialMs: consumer.retryInitial,
      retryMaxMs: consumer.retryMax,
      partitionsConcurrently: consumer.partitionsConcurrently,
      maxPendingRedeletes: consumer.maxPendingRedeletes,
    },
    log: config.log,
    mappings: config.mappings.map(compileMapping),
  };
}

type FileMapping = ConfigFile['mappings'][number];
type FileKey = FileMapping['keys'][number];

function compileMapping(mapping: FileMapping, index: number): CompiledMapping {
  // The schema accepted the table only in `db.table` form.
  const dot = mapping.table.indexOf('.');
  return {
    table: mapping.table,
    db: mapping.table.slice(0, dot),
    name: mapping.table.slice(dot + 1),
    keys: mapping.keys.map((key, k) => compileKey(key, `mappings[${index}].keys[${k}]`)),
    onlyWhenChanged: mapping.onlyWhenChanged,
  };
}

function compileKey(key: FileKey, path: string): CompiledKey {
  return {
    path,
    template: key.key,
    action: key.action,
    columns: key.columns,
    format: key.format ?? 'json',
    ttlMs: key.ttl,
    ttlJitter: key.ttlJitter ?? 0,
    delayedRedeleteMs: key.delayedRedelete,
  };
}

function chooseSecret(plain: string | undefined, fromFile: string | undefined, path: string): string {
  const secret = plain ?? fromFile;
  // Validation requires one of the two, so this is a bug in this module, not in the user's file.
  if (secret === undefined) throw new Error(`${path}: validated config has no secret`);
  return secret;
}
