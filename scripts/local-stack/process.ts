import { spawn } from 'node:child_process';
import { accessSync, constants, openSync, closeSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Where each required binary comes from on Debian, for the error a newcomer sees. */
const DEBIAN_PACKAGES: Record<string, string> = {
  mariadbd: 'mariadb-server',
  'mariadb-install-db': 'mariadb-server',
  'redis-server': 'redis-server',
  java: 'openjdk-17-jre-headless',
  mvn: 'maven',
};

/** Finds an executable on PATH (plus the sbin dirs, where Debian puts mariadbd) or throws naming the package. */
export function findBinary(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this dir
    }
  }
  const pkg = DEBIAN_PACKAGES[name];
  throw new Error(
    `${name} was not found on PATH. The local stack needs it` +
      (pkg ? `: install the Debian package ${pkg} (apt-get install ${pkg}).` : '.'),
  );
}

/** Starts a long-running server detached from this process, logging to a file, and records its pid. */
export function spawnDaemon(
  bin: string,
  args: string[],
  opts: { logFile: string; pidFile: string; cwd?: string },
) {
  const fd = openSync(opts.logFile, 'a');
  try {
    const child = spawn(bin, args, { detached: true, stdio: ['ignore', fd, fd], cwd: opts.cwd });
    if (child.pid === undefined) throw new Error(`could not start ${bin}`);
    child.unref();
    writeFileSync(opts.pidFile, String(child.pid));
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

export function readPid(pidFile: string): number | undefined {
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Stops the process recorded in pidFile, and only that one: SIGTERM, then SIGKILL after the grace
 * period. With signal 'SIGKILL' it is killed at once (the fault tests' crash).
 */
export async function stopByPidFile(
  pidFile: string,
  opts: { graceMs?: number; signal?: NodeJS.Signals } = {},
): Promise<void> {
  const pid = readPid(pidFile);
  if (pid === undefined) return;
  if (isAlive(pid)) {
    process.kill(pid, opts.signal ?? 'SIGTERM');
    const deadline = Date.now() + (opts.graceMs ?? 30_000);
    while (isAlive(pid) && Date.now() < deadline) await sleep(50);
    if (isAlive(pid)) {
      process.kill(pid, 'SIGKILL');
      while (isAlive(pid)) await sleep(50);
    }
  }
  rmSync(pidFile, { force: true });
}

export function portInUse(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Polls probe until it resolves true, failing with the server's log tail if the process dies or time runs out. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  opts: { timeoutMs: number; pid?: number; logFile?: string },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    const died = opts.pid !== undefined && !isAlive(opts.pid);
    if (died || Date.now() > deadline) {
      const tail = opts.logFile ? logTail(opts.logFile) : '';
      throw new Error(`${what} ${died ? 'exited during start-up' : 'did not become ready in time'}.${tail}`);
    }
    await sleep(200);
  }
}

function logTail(file: string): string {
  try {
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n').slice(-15);
    return `\nLast lines of ${file}:\n${lines.join('\n')}`;
  } catch {
    return '';
  }
}

/**
 * Runs a server start again while its port is busy for a moment: the default ports sit below the
 * kernel's ephemeral range, but a base port chosen inside it (CACHESYNC_*_BASE_PORT) can be held
 * by another program's outgoing connection, and a server stopped just before may not have let go
 * of it yet; such a port frees itself. A failed start's error ends with the server's log, which
 * names the cause ("Address already in use"); any other failure is thrown at once.
 */
export async function retryWhilePortBusy(start: () => Promise<void>, attempts = 20): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await start();
      return;
    } catch (err) {
      if (attempt >= attempts || !/Address already in use/.test(String((err as Error).message))) throw err;
      await sleep(500);
    }
  }
}
