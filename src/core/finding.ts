/** One result of `cachesync check`. */
export interface Finding {
  ok: boolean;
  /** What was checked, e.g. `binlog_format = ROW`. */
  what: string;
  /** Why it failed and how to fix it. */
  why?: string;
  /** Passed, but worth knowing. */
  warning?: boolean;
}
