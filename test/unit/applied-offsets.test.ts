import { describe, expect, it } from 'vitest';
import { AppliedOffsets } from '../../src/consumer/applied-offsets.js';

describe('AppliedOffsets', () => {
  it('commits the offset after the last change applied, once', () => {
    const offsets = new AppliedOffsets();
    offsets.assign({ t: [0, 1] });
    expect(offsets.uncommitted()).toEqual([]);
    offsets.applied('t', 0, '41');
    offsets.applied('t', 1, '9');
    const topics = offsets.uncommitted();
    expect(topics).toEqual([
      {
        topic: 't',
        partitions: [
          { partition: 0, offset: '42' },
          { partition: 1, offset: '10' },
        ],
      },
    ]);
    offsets.committed(topics);
    expect(offsets.uncommitted()).toEqual([]);
    offsets.applied('t', 1, '19');
    expect(offsets.uncommitted()).toEqual([{ topic: 't', partitions: [{ partition: 1, offset: '20' }] }]);
  });

  it('never moves a partition back: a batch fetched again repeats changes already applied', () => {
    const offsets = new AppliedOffsets();
    offsets.applied('t', 0, '100');
    offsets.applied('t', 0, '50');
    expect(offsets.nextOf('t', 0)).toBe(101n);
  });

  it('keeps offsets past 2^53 exact', () => {
    const offsets = new AppliedOffsets();
    offsets.applied('t', 0, '9007199254740993');
    expect(offsets.uncommitted()[0]!.partitions[0]!.offset).toBe('9007199254740994');
  });

  it('forgets partitions the member no longer holds, and what their late batches apply', () => {
    const offsets = new AppliedOffsets();
    offsets.assign({ t: [0, 1] });
    offsets.applied('t', 0, '5');
    offsets.applied('t', 1, '7');
    offsets.assign({ t: [1] });
    // A batch of partition 0 still being applied when the rebalance took it.
    offsets.applied('t', 0, '9');
    expect(offsets.nextOf('t', 0)).toBeUndefined();
    expect(offsets.uncommitted()).toEqual([{ topic: 't', partitions: [{ partition: 1, offset: '8' }] }]);
  });
});
