import type { KeyTemplate } from '../core/key-template.js';

/**
 * The compiled form of the config file: validated once at load, defaults filled in, durations in
 * milliseconds. Every component takes its slice of this, never the raw YAML.
 */
export interface CompiledConfig {
  /** Absolute path of the file this came from (for messages). */
  file: string;
  source: SourceConfig;
  kafka: KafkaConfig;
  redis: RedisConfig;
  metrics: MetricsConfig;
  tailer: TailerConfig;
  consumer: ConsumerConfig;
  audit: AuditConfig;
  snapshot: SnapshotConfig;
  log: LogConfig;
  mappings: CompiledMapping[];
}

/** Where a tailer with no checkpoint starts reading the binlog. */
export type StartPosition =
  | { kind: 'end' }
  | { kind: 'beginning' }
  /** A MariaDB GTID position (`0-1-1234`) or a MySQL GTID set (`uuid:1-5`). */
  | { kind: 'gtid'; gtidSet: string }
  | { kind: 'file'; filename: string; position: number };

export interface SourceConfig {
  /**
   * Names this source when several share one Redis: its version guards and delayed-delete schedule
   * live under `cachesync:<name>:` instead of `cachesync:` (see metaPrefixFor).
   */
  name?: string;
  host: string;
  /** Default 3306. */
  port: number;
  user: string;
  /** From `password`, or read from `passwordFile` (trailing newline trimmed). */
  password: string;
  /** Replica server id of the binlog connection: unique among the server's replicas. */
  serverId: number;
  /** Default `{ kind: 'end' }`; config `start: end | beginning | <gtid> | <file>:<pos>`. */
  start: StartPosition;
  /** Default 10 000. */
  connectTimeoutMs: number;
  /** TLS to the database, for the binlog connection and every query connection; none when undefined. */
  tls?: TlsConfig;
}

/**
 * TLS to one server, with the PEM files already read (config `caFile`, `certFile`, `keyFile`).
 * Without `ca` the system CAs are trusted. The field names are Node's `tls.connect` options.
 */
export interface TlsConfig {
  ca?: string;
  /** A client certificate, with its `key`. */
  cert?: string;
  key?: string;
  /** Check the server's certificate chain and host name. Default true. */
  rejectUnauthorized: boolean;
}

export type SaslMechanism = 'plain' | 'scram-sha-256' | 'scram-sha-512';

export interface SaslConfig {
  mechanism: SaslMechanism;
  username: string;
  /** From `password` or `passwordFile` (trailing newline trimmed). */
  password: string;
}

export interface KafkaConfig {
  brokers: string[];
  /** Default `cachesync`. */
  clientId: string;
  /** Change events. Default `cachesync.changes`. */
  topic: string;
  /** Dead letters. Default `cachesync.dlq`. */
  dlqTopic: string;
  /** Durable tailer checkpoints (a compacted topic). Default `<topic>.checkpoint`. */
  checkpointTopic: string;
  /** Consumer group. Default `cachesync`. */
  groupId: string;
  /** Partitions of topics cachesync creates. Default 6. */
  partitions: number;
  /** Replication factor of topics cachesync creates. Default -1 (the broker's default). */
  replicationFactor: number;
  /** TLS to the brokers (`tls: true`: the system CAs); none when undefined. */
  tls?: TlsConfig;
  /** SASL authentication; none when undefined. */
  sasl?: SaslConfig;
}

export interface RedisConfig {
  /** The url names one node of a Redis Cluster; the client discovers the rest. Default false. */
  cluster: boolean;
  /** `redis://[user:pass@]host:port/db` or `rediss://...`; `password` or `passwordFile` sets the password. */
  url: string;
  /**
   * From `password` or `passwordFile` (trailing newline trimmed), when given; overrides a password
   * in the url. `password` spares the user from percent-encoding a secret into the url.
   */
  password?: string;
  /** A Redis ACL user (config `username`, or the user in the url); the `default` user when undefined. */
  username?: string;
  /** TLS settings; set exactly when the url is `rediss://`. */
  tls?: TlsConfig;
}

export interface MetricsConfig {
  /** GET /metrics, /healthz, /readyz. Default 9464; 0 picks a free port. */
  port: number;
  /** Default `0.0.0.0`. */
  host: string;
}

export interface TailerConfig {
  /** Change events read but not yet acknowledged by Kafka; past it the binlog is paused. Default 4000. */
  maxBufferedEvents: number;
  /**
   * Bytes of change events read but not yet acknowledged by Kafka (their JSON size); past it the
   * binlog is paused, like maxBufferedEvents. Default 64 MiB.
   */
  maxBufferedBytes: number;
  /** Max messages per produce request. Default 1 000. */
  batchSize: number;
  /**
   * Max bytes (uncompressed JSON) per produce request, so no partition's batch passes the broker's
   * `message.max.bytes`; a single larger change goes alone. Default 512 KiB.
   */
  maxBatchBytes: number;
  /** Compression of produce requests: `gzip` (built into kafkajs) or `none`. Default gzip. */
  compression: 'gzip' | 'none';
  /** How long a partly full batch waits for more events. Default 0: batches form while the previous send is in flight. */
  lingerMs: number;
}

export interface ConsumerConfig {
  /** Attempts for a message that fails because of itself, before it is dead-lettered. Default 5. */
  maxAttempts: number;
  /** First retry delay. Default 100 ms. */
  retryInitialMs: number;
  /** Retry delay cap. Default 10 s. */
  retryMaxMs: number;
  /** Partitions processed at once per consumer process. Default 3. */
  partitionsConcurrently: number;
  /** Delayed deletes scheduled and not yet run; past it the consumer waits before scheduling more. Default 100 000. */
  maxPendingRedeletes: number;
  /** Bytes one fetch from Kafka may return (kafkajs maxBytes; a partition gets at most a quarter). Default 256 KiB:
   * compressed, so several times that once decoded. */
  maxFetchBytes: number;
  /**
   * Consumer group session timeout: a crashed member's partitions move after this long. The broker
   * bounds it with group.min.session.timeout.ms (6 s by default). Default 6 s.
   */
  sessionTimeoutMs: number;
  /** Heartbeats to the group coordinator; at most a third of the session timeout. Default 1 s. */
  heartbeatIntervalMs: number;
  /**
   * How long a key's version guard lasts after its last change. Default: the longer retention of
   * the change and DLQ topics, read from Kafka (forever if either keeps messages forever), so no
   * older change can still arrive once a guard is gone.
   */
  guardTtlMs?: number;
}

/** The consumers' audit: re-reading a sample of the rows whose keys they wrote. */
export interface AuditConfig {
  /** Fraction of refresh writes audited, in [0, 1]; 0 turns the audit off. Default 0.01. */
  sampleRate: number;
  /** How long after the write the row and the key are compared. Default 2 000. */
  delayMs: number;
}

export interface SnapshotConfig {
  /**
   * The tailer's first start (no checkpoint yet) also loads the refresh keys from the tables, as
   * `cachesync snapshot` does; a start that finds that snapshot unfinished continues it. Default false.
   */
  onFirstStart: boolean;
}

export interface LogConfig {
  /** Default `info`. */
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

export type KeyAction = 'invalidate' | 'refresh';
export type ValueFormat = 'json' | 'hash';

export interface CompiledKey {
  /** Path in the file, e.g. `mappings[0].keys[1]`, for errors raised while applying. */
  path: string;
  template: KeyTemplate;
  action: KeyAction;
  /** Columns written by refresh; undefined means every column of the row. */
  columns?: string[];
  /** Default `json`. */
  format: ValueFormat;
  ttlMs?: number;
  /** Fraction in [0, 1): each TTL is spread uniformly by +-ttlJitter. Default 0. */
  ttlJitter: number;
  delayedRedeleteMs?: number;
}

export interface CompiledMapping {
  /** `db.table` as written. */
  table: string;
  db: string;
  name: string;
  keys: CompiledKey[];
  /** Updates touching none of these columns are ignored; undefined means every update counts. */
  onlyWhenChanged?: string[];
}
