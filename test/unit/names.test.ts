import { describe, expect, it } from 'vitest';
import { uniqueName } from '../support/names.js';

describe('uniqueName', () => {
  it('gives different names each call', () => {
    expect(uniqueName('a')).not.toBe(uniqueName('a'));
  });
});
