import { spawn } from 'node:child_process';
import { constants } from 'node:os';

/**
 * Runs a TypeScript entry in a node process of its own process group, hands it every SIGINT and
 * SIGTERM this process gets, and resolves with its exit code.
 *
 * Why: under `tsx`, a process whose event loop does not acknowledge a signal within about 60 ms is
 * killed with SIGKILL, and the bench driver, inserting and polling, can be that busy, so Ctrl-C
 * would leave its servers and cachesync processes running. The detached child hears signals only
 * from here (an idle process that always acknowledges them in time) and so always gets to clean up.
 */
export function runDetached(entry: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), entry, ...args], {
    stdio: 'inherit',
    detached: true,
    env,
  });
  // One Ctrl-C can arrive more than once (from the terminal and relayed by npm or tsx); the child
  // takes a second signal as "stop now", so echoes within a second are dropped.
  let lastForwardedAt = -Infinity;
  const forward = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (now - lastForwardedAt < 1000) return;
    lastForwardedAt = now;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? constants.signals[signal] : 0)));
  });
}
