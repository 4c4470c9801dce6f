import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from '../scripts/local-stack/local-stack.js';
import { parsePrometheusText } from './stats.js';

/** The built command line: the bench runs what `npm run build` made, as a user would. */
export const CLI_ENTRY = join(REPO_ROOT, 'dist', 'cli.js');

/** The `--role` of a cachesync process the bench starts. */
export type CachesyncRole = 'tailer' | 'consumer' | 'all';

export interface CachesyncProcessOptions {
  config: string;
  role: CachesyncRole;
  /** Where the config's `metrics` section makes it listen. */
  metricsHost: string;
  metricsPort: number;
  /** Its stdout and stderr (the log) go here. */
  logFile: string;
  /** Flags for node itself, before the script (`--cpu-prof`, say). */
  nodeArgs?: string[];
}

/**
 * `node dist/cli.js run --config <file> --role <role>` in a process of its own: started, asked
 * whether it is ready, scraped, and stopped. Its log goes to a file; when it exits before it was
 * asked to, every wait wrapped in `guard` fails at once, naming that file.
 */
export class CachesyncProcess {
  /** Rejects when the process exits (or cannot start) before `stop` asked it to. */
  private readonly died: Promise<never>;
  private readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private stopping = false;
  /** When it was spawned (`performance.now()`). */
  readonly startedAt = performance.now();
  private readonly killOnExit = () => this.child.kill('SIGKILL');

  private constructor(
    private readonly child: ChildProcess,
    readonly pid: number,
    private readonly opts: CachesyncProcessOptions,
  ) {
    this.exit = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    this.died = this.exit.then(({ code, signal }) => {
      throw new Error(
        this.stopping
          ? 'cachesync was stopped'
          : `cachesync (--role ${opts.role}) exited unexpectedly with ${signal ?? `code ${code}`}; ` +
              `its log: ${opts.logFile}${lastLines(opts.logFile)}`,
      );
    });
    this.died.catch(() => undefined);
    // If this process is made to exit at once (a second Ctrl-C), the child must not live on.
    process.on('exit', this.killOnExit);
  }

  static start(opts: CachesyncProcessOptions): CachesyncProcess {
    const log = openSync(opts.logFile, 'a');
    try {
      const child = spawn(
        process.execPath,
        [...(opts.nodeArgs ?? []), CLI_ENTRY, 'run', '--config', opts.config, '--role', opts.role],
        {
          cwd: REPO_ROOT,
          stdio: ['ignore', log, log],
        },
      );
      if (child.pid === undefined) throw new Error(`could not start ${process.execPath} ${CLI_ENTRY}`);
      return new CachesyncProcess(child, child.pid, opts);
    } finally {
      closeSync(log);
    }
  }

  get logFile(): string {
    return this.opts.logFile;
  }

  get role(): CachesyncRole {
    return this.opts.role;
  }

  /** `work`, or a rejection as soon as the process dies. */
  guard<T>(work: Promise<T>): Promise<T> {
    return Promise.race([work, this.died]);
  }

  /** Waits until `/readyz` answers 200: connected and streaming. */
  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    let last = 'no answer yet';
    await this.guard(
      (async () => {
        for (;;) {
          try {
            const res = await fetch(`${this.baseUrl}/readyz`);
            last = await res.text();
            if (res.ok) return;
          } catch (err) {
            last = (err as Error).message;
          }
          if (performance.now() > deadline) {
            throw new Error(
              `cachesync not ready after ${timeoutMs / 1000} s (/readyz: ${last}); its log: ${this.opts.logFile}`,
            );
          }
          await sleep(100);
        }
      })(),
    );
  }

  /** The samples of one `GET /metrics`. */
  async scrape(): Promise<ReturnType<typeof parsePrometheusText>> {
    return this.guard(
      (async () => {
        const res = await fetch(`${this.baseUrl}/metrics`);
        if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
        return parsePrometheusText(await res.text());
      })(),
    );
  }

  /**
   * SIGTERM, then SIGKILL when it has not exited within `graceMs`. Idempotent. A non-zero exit on
   * SIGTERM is reported through `warn`, not thrown: the figures were taken by then.
   */
  async stop(warn: (msg: string) => void, graceMs = 20_000): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      if (this.child.exitCode === null && this.child.signalCode === null) {
        this.child.kill('SIGTERM');
        const timer = setTimeout(() => {
          warn(`cachesync did not stop within ${graceMs / 1000} s of SIGTERM; killing it`);
          this.child.kill('SIGKILL');
        }, graceMs);
        const { code, signal } = await this.exit;
        clearTimeout(timer);
        if (code !== 0)
          warn(`cachesync exited with ${signal ?? `code ${code}`}; its log: ${this.opts.logFile}`);
      }
    }
    await this.exit;
    process.off('exit', this.killOnExit);
  }

  /**
   * kill -9, as a crash would: no shutdown, nothing flushed. Resolves once it has exited; its
   * waits fail from then on, and `stop` does nothing more.
   */
  async kill(): Promise<void> {
    this.stopping = true;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exit;
    process.off('exit', this.killOnExit);
  }

  private get baseUrl(): string {
    return `http://${this.opts.metricsHost}:${this.opts.metricsPort}`;
  }
}

function lastLines(file: string, count = 10): string {
  try {
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n').slice(-count);
    return lines.length > 0 && lines[0] !== '' ? `; its last lines:\n${lines.join('\n')}` : '';
  } catch {
    return '';
  }
}
