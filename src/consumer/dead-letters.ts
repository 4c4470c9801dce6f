import type { IHeaders, KafkaMessage, Producer } from 'kafkajs';

/** Why and where a message failed, carried as headers on its dead letter. */
export interface FailureInfo {
  error: Error;
  attempts: number;
  topic: string;
  partition: number;
  offset: string;
  firstFailureMs: number;
  lastFailureMs: number;
}

/** Header names on a dead letter. */
export const DLQ_HEADERS = {
  error: 'cachesync.error',
  errorClass: 'cachesync.error.class',
  attempts: 'cachesync.attempts',
  topic: 'cachesync.original.topic',
  partition: 'cachesync.original.partition',
  offset: 'cachesync.original.offset',
  firstFailure: 'cachesync.first.failure',
  lastFailure: 'cachesync.last.failure',
} as const;

/** The original key and value, with the failure in headers (times as ISO-8601). */
export function deadLetter(
  message: KafkaMessage,
  info: FailureInfo,
): { key: Buffer | null; value: Buffer | null; headers: IHeaders } {
  return {
    key: message.key,
    value: message.value,
    headers: {
      ...(message.headers ?? {}),
      [DLQ_HEADERS.error]: info.error.message,
      [DLQ_HEADERS.errorClass]: info.error.name,
      [DLQ_HEADERS.attempts]: String(info.attempts),
      [DLQ_HEADERS.topic]: info.topic,
      [DLQ_HEADERS.partition]: String(info.partition),
      [DLQ_HEADERS.offset]: info.offset,
      [DLQ_HEADERS.firstFailure]: new Date(info.firstFailureMs).toISOString(),
      [DLQ_HEADERS.lastFailure]: new Date(info.lastFailureMs).toISOString(),
    },
  };
}

/** Writes dead letters to the DLQ topic, acknowledged by all in-sync replicas. */
export class DeadLetterWriter {
  constructor(
    private readonly producer: Producer,
    private readonly topic: string,
  ) {}

  async write(letters: { message: KafkaMessage; info: FailureInfo }[]): Promise<void> {
    if (letters.length === 0) return;
    await this.producer.send({
      topic: this.topic,
      acks: -1,
      messages: letters.map(({ message, info }) => deadLetter(message, info)),
    });
  }
}
