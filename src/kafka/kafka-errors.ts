import { FatalError, isProgrammerError, MessageError, UnavailableError } from '../core/errors.js';

/** Kafka error types an operator must fix: retrying cannot help. */
const FATAL_TYPES = new Set([
  'TOPIC_AUTHORIZATION_FAILED',
  'GROUP_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'SASL_AUTHENTICATION_FAILED',
  'ILLEGAL_SASL_STATE',
  'UNSUPPORTED_SASL_MECHANISM',
  'INVALID_REPLICATION_FACTOR',
  'INVALID_PARTITIONS',
  'INVALID_CONFIG',
  'POLICY_VIOLATION',
  'INVALID_TOPIC_EXCEPTION',
  'UNSUPPORTED_VERSION',
  'INVALID_SESSION_TIMEOUT',
]);

/** What an operator changes, by Kafka error type. */
const FIXES: Record<string, string> = {
  TOPIC_AUTHORIZATION_FAILED: "grant cachesync's Kafka principal access to its topics",
  GROUP_AUTHORIZATION_FAILED:
    "grant cachesync's Kafka principal access to its consumer group (kafka.groupId)",
  CLUSTER_AUTHORIZATION_FAILED:
    "grant cachesync's Kafka principal IdempotentWrite and CreateTopics on the cluster, or create the topics beforehand",
  SASL_AUTHENTICATION_FAILED: 'check the Kafka credentials',
  INVALID_SESSION_TIMEOUT:
    "consumer.sessionTimeout is outside the broker's group.min.session.timeout.ms .. group.max.session.timeout.ms",
  INVALID_REPLICATION_FACTOR: 'set kafka.replicationFactor to at most the number of brokers',
  MESSAGE_TOO_LARGE: "raise the broker's message.max.bytes (or the topic's max.message.bytes)",
  RECORD_LIST_TOO_LARGE: "lower tailer.maxBatchBytes, or raise the topic's max.message.bytes",
};

/** Kafka error types caused by what is sent: the records are too large for the broker. */
const TOO_LARGE_TYPES = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE']);

/** Producer states that only a new producer clears (its idempotence sequence is lost). */
const PRODUCER_RESET_TYPES = new Set([
  'OUT_OF_ORDER_SEQUENCE_NUMBER',
  'UNKNOWN_PRODUCER_ID',
  'INVALID_PRODUCER_EPOCH',
  'INVALID_PRODUCER_ID_MAPPING',
]);

interface KafkaLikeError {
  name?: string;
  type?: string;
  retriable?: boolean;
  message?: string;
  cause?: unknown;
  originalError?: unknown;
}

/** kafkajs wraps the error that counted (`KafkaJSNumberOfRetriesExceeded` around a protocol error). */
function chain(err: unknown): KafkaLikeError[] {
  const out: KafkaLikeError[] = [];
  let current: unknown = err;
  while (current && typeof current === 'object' && out.length < 8) {
    const e = current as KafkaLikeError;
    out.push(e);
    current = e.cause ?? e.originalError;
  }
  return out;
}

/** The innermost Kafka error type in the chain, if any (`NOT_LEADER_FOR_PARTITION`, ...). */
export function kafkaErrorType(err: unknown): string | undefined {
  return chain(err)
    .map((e) => e.type)
    .findLast((t): t is string => typeof t === 'string');
}

/** True when the producer must be replaced: its idempotent sequence no longer matches the broker's. */
export function needsNewProducer(err: unknown): boolean {
  const type = kafkaErrorType(err);
  return type !== undefined && PRODUCER_RESET_TYPES.has(type);
}

/** True when the broker refused the records as too large (`message.max.bytes` and friends). */
export function isTooLarge(err: unknown): boolean {
  const type = kafkaErrorType(err);
  return type !== undefined && TOO_LARGE_TYPES.has(type);
}

/**
 * Sorts a kafkajs failure into the taxonomy: authorization, SASL and invalid-settings errors are
 * fatal (the operator must act), records too large are the message's fault, a bug stays a bug, and
 * everything else (leader elections, coordinators loading, unknown topics right after creation,
 * timeouts, lost connections, retries exhausted on any of those) is an outage.
 */
export function classifyKafkaError(err: unknown, what = 'Kafka'): Error {
  if (err instanceof UnavailableError || err instanceof FatalError || err instanceof MessageError) return err;
  if (isProgrammerError(err)) return err as Error;
  const message = err instanceof Error ? err.message : String(err);
  const type = kafkaErrorType(err);
  const fix = type !== undefined && FIXES[type] ? `; ${FIXES[type]}` : '';
  if (type !== undefined && FATAL_TYPES.has(type))
    return new FatalError(`${what}: ${message} (${type})${fix}`, { cause: err });
  if (type !== undefined && TOO_LARGE_TYPES.has(type))
    return new MessageError(`${what}: ${message} (${type})${fix}`, { cause: err });
  if (chain(err).some((e) => e.name === 'KafkaJSSASLAuthenticationError'))
    return new FatalError(`${what}: ${message}`, { cause: err });
  return new UnavailableError(`${what} unavailable: ${message}`, { cause: err, server: 'kafka' });
}
