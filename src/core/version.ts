/**
 * A change's version orders every change read from one server's binlog: the binlog file's index,
 * the position where its transaction starts, and its sequence within the transaction. It is a
 * fixed-width string, so versions compare with plain string comparison in TypeScript and in Redis
 * Lua alike: `0000000003:0000000000012345:0000002`.
 */
export type Version = string;

const FILE_DIGITS = 10;
const POS_DIGITS = 16;
const SEQ_DIGITS = 7;

/** `binlog.000042` -> 42. Throws on a name without a numeric suffix (never seen on MySQL or MariaDB). */
export function binlogFileIndex(filename: string): number {
  const match = /\.(\d+)$/.exec(filename);
  if (!match?.[1]) throw new RangeError(`binlog file name "${filename}" has no numeric suffix`);
  return Number(match[1]);
}

export function makeVersion(filename: string, txPosition: number, seq: number): Version {
  return [
    String(binlogFileIndex(filename)).padStart(FILE_DIGITS, '0'),
    String(txPosition).padStart(POS_DIGITS, '0'),
    String(seq).padStart(SEQ_DIGITS, '0'),
  ].join(':');
}

/** Negative if a is older than b, 0 if equal, positive if newer. */
export function compareVersions(a: Version, b: Version): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function isVersion(value: unknown): value is Version {
  return typeof value === 'string' && /^\d{10}:\d{16}:\d{7}$/.test(value);
}
