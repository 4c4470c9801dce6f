import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** What a process used during one measured phase (Linux: read from /proc). */
export interface PhaseUsage {
  /** User plus system CPU time of every thread, seconds. */
  cpuSeconds: number;
  /** The largest VmRSS seen, sampled every `intervalMs`. */
  peakRssBytes: number;
  /** VmHWM at the end of the phase: the process's peak resident set since it started. */
  hwmBytes: number;
}

let clockTicks: number | undefined;

/** Clock ticks per second, the unit of /proc/<pid>/stat's CPU times. */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime + stime of a process, seconds. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

/** VmRSS and VmHWM of a process, bytes. */
export function processMemory(pid: number): { rssBytes: number; hwmBytes: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM') };
}

/** Servers' CPU over a phase: the difference of two readings of each one's /proc. */
export class ServersCpu {
  private readonly atStart: Record<string, number>;

  /** `pids`: by server name (mariadb, kafka, redis). */
  constructor(private readonly pids: Record<string, number>) {
    this.atStart = this.read();
  }

  /** CPU seconds of each server since the start; NaN for one that went away (the report leaves it out). */
  stop(): Record<string, number> {
    const now = this.read();
    return Object.fromEntries(Object.keys(this.pids).map((name) => [name, now[name]! - this.atStart[name]!]));
  }

  private read(): Record<string, number> {
    return Object.fromEntries(
      Object.entries(this.pids).map(([name, pid]) => {
        try {
          return [name, processCpuSeconds(pid)];
        } catch {
          return [name, Number.NaN];
        }
      }),
    );
  }
}

/**
 * Measures other processes over one phase: CPU time as the difference of two readings, resident
 * set sampled on an unref'd timer. Also this process's own CPU over the same phase, and the
 * servers'.
 */
export class PhaseMonitor {
  private readonly timer: NodeJS.Timeout;
  private readonly cpuAtStart: number[];
  private readonly driverCpuAtStart = process.cpuUsage();
  private readonly servers: ServersCpu;
  private readonly peakRss: number[];

  constructor(
    private readonly pids: readonly number[],
    serverPids: Record<string, number>,
    intervalMs = 100,
  ) {
    this.cpuAtStart = pids.map(processCpuSeconds);
    this.peakRss = pids.map(() => 0);
    this.servers = new ServersCpu(serverPids);
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs).unref();
  }

  /**
   * Ends the phase and reads the figures (throws when a process is gone): each process's, and
   * their sums (for one process, its own).
   */
  stop(): PhaseUsage & {
    processes: PhaseUsage[];
    driverCpuSeconds: number;
    serversCpuSeconds: Record<string, number>;
  } {
    this.cancel();
    this.sample();
    const driver = process.cpuUsage(this.driverCpuAtStart);
    const processes = this.pids.map((pid, i) => ({
      cpuSeconds: processCpuSeconds(pid) - this.cpuAtStart[i]!,
      peakRssBytes: this.peakRss[i]!,
      hwmBytes: processMemory(pid).hwmBytes,
    }));
    const sum = (figure: keyof PhaseUsage) => processes.reduce((total, p) => total + p[figure], 0);
    return {
      cpuSeconds: sum('cpuSeconds'),
      peakRssBytes: sum('peakRssBytes'),
      hwmBytes: sum('hwmBytes'),
      processes,
      driverCpuSeconds: (driver.user + driver.system) / 1e6,
      serversCpuSeconds: this.servers.stop(),
    };
  }

  /** Stops sampling, for a phase that failed. Idempotent. */
  cancel(): void {
    clearInterval(this.timer);
  }

  private sample(): void {
    this.pids.forEach((pid, i) => {
      try {
        this.peakRss[i] = Math.max(this.peakRss[i]!, processMemory(pid).rssBytes);
      } catch {
        // the process is gone: its waits fail on their own
      }
    });
  }
}

/** This process's CPU over one phase, for the scenario that runs no cachesync. */
export function driverCpu(): { stop: () => number } {
  const start = process.cpuUsage();
  return {
    stop: () => {
      const used = process.cpuUsage(start);
      return (used.user + used.system) / 1e6;
    },
  };
}
