import { CachesyncError } from '../core/errors.js';
import { binlogFileIndex } from '../core/version.js';
import type { StartPosition } from '../config/types.js';
import type { BinlogPosition } from './binlog-source.js';
import type { Checkpoint } from './checkpoint-store.js';

/** What the tailer learns from the server before it opens a binlog connection. */
export interface ServerState {
  /** `mariadb:<server_id>` or `mysql:<server_uuid>`: which server's binlog this is. */
  identity: string;
  /** SHOW BINARY LOGS, oldest first. */
  binlogs: { name: string; size: number }[];
  /** MariaDB `gtid_binlog_pos` (`0-1-42,1-3-7`); undefined on MySQL. */
  mariadbGtidPos?: string;
}

/** Where to read from, in which epoch, and why the epoch changed (when it did). */
export interface ResumePlan {
  epoch: number;
  from: BinlogPosition;
  /** Set when this plan starts a new epoch: the reason, for the log. */
  newEpoch?: string;
}

/**
 * The epoch after `current`: greater than it, and at least the current time in seconds, so an epoch
 * started after a lost checkpoint is still newer than those before it (while clocks move forward).
 */
export function nextEpoch(current: number | undefined, nowMs: number): number {
  return Math.max((current ?? 0) + 1, Math.floor(nowMs / 1000));
}

/**
 * Decides how to resume from a checkpoint on the server found. Binlog coordinates compare only
 * within one server's unbroken binlog history; when that history changed, the epoch moves on so
 * every change read from now on is newer than every change read before:
 * - another server (failover): resume by GTID, new epoch;
 * - the same server whose binlog went backwards (RESET MASTER, a restore from a backup): read its
 *   binlog from the oldest file it has, new epoch;
 * - otherwise: resume where the checkpoint points, same epoch.
 * `resumeFrom` is the last boundary read (at or after the checkpoint). Throws when the position
 * cannot be carried to another server (no GTID).
 */
export function planResume(
  checkpoint: Pick<Checkpoint, 'epoch' | 'server'>,
  resumeFrom: BinlogPosition,
  server: ServerState,
  nowMs: number,
): ResumePlan {
  const epoch = checkpoint.epoch;
  if (checkpoint.server !== undefined && checkpoint.server !== server.identity) {
    if (resumeFrom.gtidSet === undefined) {
      throw new CachesyncError(
        `the checkpoint was read from server ${checkpoint.server}, but the source is now ${server.identity}, ` +
          'and without a GTID position a binlog position cannot be found on another server. Run ' +
          '`cachesync new-epoch --start <position>` with the position on the new server to resume from.',
        { retriable: false },
      );
    }
    return {
      epoch: nextEpoch(epoch, nowMs),
      from: { ...resumeFrom },
      newEpoch: `the source is another server (${checkpoint.server} before, ${server.identity} now): a failover`,
    };
  }
  const backwards = binlogWentBackwards(resumeFrom, server);
  if (backwards !== undefined && checkpoint.server !== undefined) {
    const oldest = server.binlogs[0];
    if (oldest) {
      return {
        epoch: nextEpoch(epoch, nowMs),
        from: { file: oldest.name, pos: 4 },
        newEpoch: `the binlog of ${server.identity} went backwards (${backwards}): RESET MASTER or a restore`,
      };
    }
  }
  return { epoch, from: resumeFrom };
}

/**
 * `source.start: beginning` is the oldest binlog file the server still has. An empty GTID position
 * would ask for the server's whole GTID history, which a server that purged binlogs no longer
 * holds (MariaDB refuses it as purged).
 */
export function resolveStart(
  from: BinlogPosition | StartPosition,
  server: ServerState,
): BinlogPosition | StartPosition {
  const oldest = server.binlogs[0];
  if ('kind' in from && from.kind === 'beginning' && oldest) return { file: oldest.name, pos: 4 };
  return from;
}

/** Why the server's binlog is behind a position read from it before, or undefined if it is not. */
export function binlogWentBackwards(position: BinlogPosition, server: ServerState): string | undefined {
  const last = server.binlogs[server.binlogs.length - 1];
  if (!last) return undefined;
  const at = binlogFileIndex(position.file);
  const head = binlogFileIndex(last.name);
  if (head < at) return `its newest file is ${last.name}, the checkpoint is in ${position.file}`;
  if (head === at && last.size < position.pos) {
    return `${last.name} ends at ${last.size}, the checkpoint is at ${position.pos}`;
  }
  if (position.gtidSet !== undefined && server.mariadbGtidPos !== undefined) {
    const now = mariadbSeqByDomain(server.mariadbGtidPos);
    for (const [domain, seq] of mariadbSeqByDomain(position.gtidSet)) {
      const current = now.get(domain);
      if (current === undefined || current < seq) {
        return `GTID domain ${domain} is at ${current ?? 'nothing'}, the checkpoint at ${seq}`;
      }
    }
  }
  return undefined;
}

/** `0-1-42,1-3-7` -> domain -> sequence number. A MySQL GTID set yields nothing. */
function mariadbSeqByDomain(position: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const entry of position.split(',')) {
    const m = /^\s*(\d+)-(\d+)-(\d+)\s*$/.exec(entry);
    if (m?.[1] && m[3]) out.set(m[1], BigInt(m[3]));
  }
  return out;
}
