import type { Kafka } from 'kafkajs';
import { ConfigResourceTypes } from './kafka-client.js';

/**
 * The longest `retention.ms` of the given topics: how long Kafka can still deliver a message
 * (a redelivery, a replay from the beginning, a dead letter to replay). null when one keeps its
 * messages forever (-1).
 */
export async function longestRetentionMs(kafka: Kafka, topics: readonly string[]): Promise<number | null> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: topics.map((name) => ({
        type: ConfigResourceTypes.TOPIC,
        name,
        configNames: ['retention.ms'],
      })),
    });
    let longest: number | undefined;
    for (const resource of described.resources) {
      const value = Number(resource.configEntries.find((e) => e.configName === 'retention.ms')?.configValue);
      if (!Number.isFinite(value)) continue;
      if (value < 0) return null;
      longest = Math.max(longest ?? 0, value);
    }
    // Topics that could not be described: the broker's own default, 7 days.
    return longest ?? 7 * 24 * 3600_000;
  } finally {
    await admin.disconnect();
  }
}

/**
 * How long version guards must last: the configured lifetime, else as long as the change topic
 * or the DLQ topic can still deliver an older change (null: forever).
 */
export async function guardLifetimeMs(
  kafka: Kafka,
  config: { topic: string; dlqTopic: string },
  configuredMs: number | undefined,
): Promise<number | null> {
  if (configuredMs !== undefined) return configuredMs;
  return longestRetentionMs(kafka, [config.topic, config.dlqTopic]);
}
