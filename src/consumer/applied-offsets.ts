/** Offsets to commit for one topic, in the shape kafkajs commits them. */
export interface TopicOffsets {
  topic: string;
  partitions: { partition: number; offset: string }[];
}

interface Position {
  topic: string;
  partition: number;
  /** The offset after the last change applied to Redis: where a new owner must start. */
  next: bigint;
  /** The last `next` Kafka acknowledged as committed. */
  committed: bigint | undefined;
}

const key = (topic: string, partition: number) => `${topic}|${partition}`;

/**
 * Where each partition's applied changes end, apart from where kafkajs fetches: a member fetches a
 * batch ahead of what Redis has applied, so its fetch position (kafkajs's resolved offset) may not
 * be committed. Only an offset after changes applied in full is; a partition the member no longer
 * holds is forgotten at the next assignment.
 */
export class AppliedOffsets {
  private readonly positions = new Map<string, Position>();
  private assigned: Set<string> | undefined;

  /** The member's assignment after a (re)join: positions of other partitions are dropped. */
  assign(assignment: Record<string, readonly number[]>): void {
    this.assigned = new Set(
      Object.entries(assignment).flatMap(([topic, partitions]) => partitions.map((p) => key(topic, p))),
    );
    for (const k of this.positions.keys()) if (!this.assigned.has(k)) this.positions.delete(k);
  }

  /**
   * Every change of the partition up to and including `offset` is applied. Positions only move
   * forward: a batch fetched again after a rebalance repeats changes already applied.
   */
  applied(topic: string, partition: number, offset: string): void {
    const k = key(topic, partition);
    if (this.assigned && !this.assigned.has(k)) return;
    const next = BigInt(offset) + 1n;
    const position = this.positions.get(k);
    if (!position) this.positions.set(k, { topic, partition, next, committed: undefined });
    else if (next > position.next) position.next = next;
  }

  /** The offset after the last change applied, if any was since the member got the partition. */
  nextOf(topic: string, partition: number): bigint | undefined {
    return this.positions.get(key(topic, partition))?.next;
  }

  /** The positions that moved since they were last committed. */
  uncommitted(): TopicOffsets[] {
    const byTopic = new Map<string, TopicOffsets>();
    for (const p of this.positions.values()) {
      if (p.committed === p.next) continue;
      let t = byTopic.get(p.topic);
      if (!t) byTopic.set(p.topic, (t = { topic: p.topic, partitions: [] }));
      t.partitions.push({ partition: p.partition, offset: p.next.toString() });
    }
    return [...byTopic.values()];
  }

  /** Kafka acknowledged a commit of these offsets. */
  committed(topics: readonly TopicOffsets[]): void {
    for (const t of topics)
      for (const { partition, offset } of t.partitions) {
        const p = this.positions.get(key(t.topic, partition));
        if (p) p.committed = BigInt(offset);
      }
  }
}
