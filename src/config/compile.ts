import type { ConfigFile } from './schema.js';
import type { CompiledConfig, CompiledKey, CompiledMapping, SaslConfig, TlsConfig } from './types.js';

/**
 * What the files named in the config hold (`*File` secrets, TLS certificates and keys), by the
 * dotted path of the field that names them, as in `source.tls.caFile`.
 */
export type FileContents = Readonly<Record<string, string>>;

/**
 * Turns a validated file into the config components take: secrets resolved, durations renamed to
 * their `...Ms` fields, the key defaults filled in, and each key told its path for later messages.
 */
export function compileConfig(config: ConfigFile, file: string, files: FileContents): CompiledConfig {
  const { source, kafka, redis, tailer, consumer } = config;
  const redisPassword = redis.password ?? files['redis.passwordFile'];
  const redisUser = redis.username ?? userInUrl(redis.url);
  const redisTls = redis.url.trim().toLowerCase().startsWith('rediss:')
    ? compileTls(redis.tls ?? { rejectUnauthorized: true }, 'redis', files)
    : undefined;
  const { tls: _kafkaTls, sasl: _kafkaSasl, ...kafkaRest } = kafka;
  return {
    file,
    source: {
      ...(source.name === undefined ? {} : { name: source.name }),
      host: source.host,
      port: source.port,
      user: source.user,
      password: chooseSecret(source.password, files['source.passwordFile'], 'source.password'),
      serverId: source.serverId,
      start: source.start,
      connectTimeoutMs: source.connectTimeout,
      ...(source.tls ? { tls: compileTls(source.tls, 'source', files) } : {}),
    },
    kafka: {
      ...kafkaRest,
      ...(kafka.tls ? { tls: compileTls(kafka.tls, 'kafka', files) } : {}),
      ...(kafka.sasl ? { sasl: compileSasl(kafka.sasl, files) } : {}),
    },
    redis: {
      url: redis.url,
      cluster: redis.cluster,
      ...(redisPassword === undefined ? {} : { password: redisPassword }),
      ...(redisUser === undefined ? {} : { username: redisUser }),
      ...(redisTls ? { tls: redisTls } : {}),
    },
    metrics: config.metrics,
    tailer: {
      maxBufferedEvents: tailer.maxBufferedEvents,
      maxBufferedBytes: tailer.maxBufferedBytes,
      batchSize: tailer.batchSize,
      maxBatchBytes: tailer.maxBatchBytes,
      lingerMs: tailer.linger,
      compression: tailer.compression,
    },
    consumer: {
      maxAttempts: consumer.maxAttempts,
      retryInitialMs: consumer.retryInitial,
      retryMaxMs: consumer.retryMax,
      partitionsConcurrently: consumer.partitionsConcurrently,
      maxPendingRedeletes: consumer.maxPendingRedeletes,
      maxFetchBytes: consumer.maxFetchBytes,
      sessionTimeoutMs: consumer.sessionTimeout,
      heartbeatIntervalMs: consumer.heartbeatInterval,
      ...(consumer.guardTtl === undefined ? {} : { guardTtlMs: consumer.guardTtl }),
    },
    audit: { sampleRate: config.audit.sampleRate, delayMs: config.audit.delay },
    snapshot: config.snapshot,
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

type FileTls = NonNullable<ConfigFile['source']['tls']>;

function compileTls(tls: FileTls, section: string, files: FileContents): TlsConfig {
  const ca = files[`${section}.tls.caFile`];
  const cert = files[`${section}.tls.certFile`];
  const key = files[`${section}.tls.keyFile`];
  return {
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
    rejectUnauthorized: tls.rejectUnauthorized,
  };
}

function compileSasl(sasl: NonNullable<ConfigFile['kafka']['sasl']>, files: FileContents): SaslConfig {
  return {
    mechanism: sasl.mechanism,
    username: sasl.username,
    password: chooseSecret(sasl.password, files['kafka.sasl.passwordFile'], 'kafka.sasl.password'),
  };
}

function userInUrl(url: string): string | undefined {
  try {
    const user = new URL(url).username;
    return user ? decodeURIComponent(user) : undefined;
  } catch {
    return undefined;
  }
}

function chooseSecret(plain: string | undefined, fromFile: string | undefined, path: string): string {
  const secret = plain ?? fromFile;
  // Validation requires one of the two, so this is a bug in this module, not in the user's file.
  if (secret === undefined) throw new Error(`${path}: validated config has no secret`);
  return secret;
}
