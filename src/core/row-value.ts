import type { Row } from './key-template.js';

/**
 * Makes a decoded binlog value JSON-safe, keeping its exact text: binary as base64, 64-bit
 * integers beyond 2^53 as strings, JSON column values as they are.
 */
export function normalizeValue(value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return value.toString('base64');
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number' && !Number.isSafeInteger(value) && Number.isInteger(value))
    return String(value);
  if (value instanceof Date) return value.toISOString();
  return value;
}

export function normalizeRow(row: Readonly<Record<string, unknown>>): Row {
  const out: Record<string, unknown> = {};
  for (const [column, value] of Object.entries(row)) out[column] = normalizeValue(value);
  return out;
}

/**
 * normalizeRow without the copy, for a row nobody else holds (a freshly decoded binlog row): only
 * the values that need it are replaced, so the common row of strings and small numbers costs one
 * pass and no allocation.
 */
export function normalizeRowInPlace(row: Record<string, unknown>): Row {
  for (const column in row) {
    const value = row[column];
    if (typeof value === 'string' || (typeof value === 'number' && Number.isSafeInteger(value))) continue;
    row[column] = normalizeValue(value);
  }
  return row;
}

/** The text form of a row value: scalars as themselves, objects (JSON columns) as JSON. */
export function valueText(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return value;
    case 'number':
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? '1' : '0';
    default:
      return JSON.stringify(value) ?? '';
  }
}
