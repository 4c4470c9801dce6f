const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
type Unit = keyof typeof UNIT_MS;

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

const VALID_FORMS = 'expected a number with a unit ms, s, m or h, like 500ms, 2s, 1.5m or 1h';

/**
 * Parses a config duration (`500ms`, `2s`, `1.5m`, `1h`) into whole milliseconds.
 *
 * A bare number is rejected, except `0`, because `ttl: 60` could mean seconds or milliseconds and a
 * silent factor of 1000 is the kind of mistake nobody notices until production.
 *
 * @throws Error whose message says what was given and which forms are valid.
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (/^0+(?:\.0+)?$/.test(trimmed)) return 0;
  const match = DURATION.exec(trimmed);
  if (match) {
    return Math.round(Number(match[1]) * UNIT_MS[match[2] as Unit]);
  }
  const shown = JSON.stringify(text);
  if (/^-/.test(trimmed)) throw new Error(`got ${shown}: a duration cannot be negative; ${VALID_FORMS}`);
  if (/^\d+(?:\.\d+)?$/.test(trimmed)) {
    throw new Error(`got ${shown}: a duration needs a unit; ${VALID_FORMS} (only 0 may go without)`);
  }
  throw new Error(`got ${shown}; ${VALID_FORMS}`);
}

/** Formats milliseconds the way a user would write them in the config, for messages. */
export function formatDuration(ms: number): string {
  for (const unit of ['h', 'm', 's'] as const) {
    if (ms >= UNIT_MS[unit] && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`;
}
