import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../../src/config/duration.js';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['2s', 2_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1.5s', 1_500],
    ['0.25m', 15_000],
    ['0', 0],
    ['0ms', 0],
  ])('reads %s as %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('rejects a bare number, since its unit would be a guess', () => {
    expect(() => parseDuration('500')).toThrow(
      'got "500": a duration needs a unit; expected a number with a unit ms, s, m or h, like 500ms, 2s, 1.5m or 1h (only 0 may go without)',
    );
  });

  it('rejects a negative duration', () => {
    expect(() => parseDuration('-5s')).toThrow('got "-5s": a duration cannot be negative; expected a number');
  });

  it.each(['abc', '5d', '1 h', '', 's', '1.s'])('rejects %j and names the valid forms', (text) => {
    expect(() => parseDuration(text)).toThrow(
      `got ${JSON.stringify(text)}; expected a number with a unit ms, s, m or h, like 500ms, 2s, 1.5m or 1h`,
    );
  });
});

describe('formatDuration', () => {
  it('writes the largest whole unit', () => {
    expect([
      formatDuration(3_600_000),
      formatDuration(90_000),
      formatDuration(2_000),
      formatDuration(1_500),
    ]).toEqual(['1h', '90s', '2s', '1500ms']);
  });
});
