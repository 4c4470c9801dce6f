import { describe, expect, it } from 'vitest';
import { HEAP_GROWING_PERCENT, limitHeapGrowth } from '../../src/observability/heap-growth.js';

describe('limitHeapGrowth', () => {
  it('sets the daemon heap growth unless the operator chose one', () => {
    expect(limitHeapGrowth({}, [])).toBe(HEAP_GROWING_PERCENT);
    expect(limitHeapGrowth({ NODE_OPTIONS: '--heap-growing-percent=300' }, [])).toBeUndefined();
    expect(limitHeapGrowth({}, ['--heap-growing-percent=50'])).toBeUndefined();
  });
});
