import type { Op } from '../core/change-event.js';
import type { SourceItem } from './binlog-source.js';

/**
 * A change waiting for Kafka, held as the message it is sent as: kafkajs takes this object as the
 * message itself (key, value, partition). `partition` is absent only for a table-level change,
 * which goes to every partition.
 */
export interface QueuedChange {
  kind: 'change';
  key: string;
  value: string;
  partition?: number;
  op: Op;
  /** `db.table`. */
  table: string;
}

export type QueuedCommit = Extract<SourceItem, { kind: 'commit' }>;

type Queued = QueuedChange | QueuedCommit;

/** The changes of the next produce request and what sending them acknowledges. */
export interface Batch {
  changes: QueuedChange[];
  /** The last transaction boundary among them: once they are sent, the checkpoint may move here. */
  lastCommit: QueuedCommit | undefined;
  /** Queue index after the batch. */
  readonly end: number;
}

/**
 * The tailer's buffer: changes read from the binlog and not yet acknowledged by Kafka, with the
 * transaction boundaries between them, in binlog order. It counts what it holds (changes and JSON
 * bytes) so that the tailer can pause the binlog when it is full.
 */
export class ChangeQueue {
  private items: Queued[] = [];
  private head = 0;
  private changes_ = 0;
  private bytes_ = 0;

  /** Changes held. */
  get changes(): number {
    return this.changes_;
  }

  /** JSON bytes of the changes held (string length: the events are ASCII but for text values). */
  get bytes(): number {
    return this.bytes_;
  }

  get empty(): boolean {
    return this.head >= this.items.length;
  }

  /** Items (changes and boundaries) not yet taken by a batch. */
  get length(): number {
    return this.items.length - this.head;
  }

  pushChange(change: QueuedChange): void {
    this.items.push(change);
    this.changes_++;
    this.bytes_ += change.value.length;
  }

  pushCommit(commit: QueuedCommit): void {
    this.items.push(commit);
  }

  /**
   * The next batch: up to `maxChanges` changes and `maxBytes` of them (at least one change), plus
   * the boundaries among them. A table-level change counts once per partition, as it is sent.
   * The batch stays in the queue until {@link release}.
   */
  nextBatch(maxChanges: number, maxBytes: number, partitions: number): Batch {
    const changes: QueuedChange[] = [];
    let lastCommit: QueuedCommit | undefined;
    let bytes = 0;
    let i = this.head;
    for (; i < this.items.length; i++) {
      const item = this.items[i]!;
      if (item.kind === 'commit') {
        lastCommit = item;
        continue;
      }
      const size = item.value.length * (item.op === 't' ? partitions : 1);
      if (changes.length === maxChanges || (changes.length > 0 && bytes + size > maxBytes)) break;
      changes.push(item);
      bytes += size;
    }
    return { changes, lastCommit, end: i };
  }

  /** Drops a batch that Kafka acknowledged (it must be the oldest one). */
  release(batch: Batch): void {
    this.head = batch.end;
    this.changes_ -= batch.changes.length;
    for (const c of batch.changes) this.bytes_ -= c.value.length;
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
  }
}
