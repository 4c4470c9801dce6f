import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { runSnapshot, snapshotInProgress } from './commands/snapshot.js';
import type { CompiledConfig } from './config/types.js';
import { ChangeConsumer } from './consumer/change-consumer.js';
import type { Logger } from './observability/logger.js';
import { HttpServer, type HealthSource } from './observability/http-server.js';
import { Metrics } from './observability/metrics.js';
import { mappingProblems, streamProblems } from './tailer/source-checks.js';
import { Tailer } from './tailer/tailer.js';
import {
  ConfigError,
  FatalError,
  describeBug,
  errorKind,
  errorMessage,
  isProgrammerError,
} from './core/errors.js';
import { OncePerKind, retry, type BackoffPolicy } from './core/retry.js';
import { classifyKafkaError, kafkaErrorType } from './kafka/kafka-errors.js';
import { classifyMysqlError } from './tailer/mysql-errors.js';

export type Role = 'all' | 'tailer' | 'consumer';
export const ROLES: readonly Role[] = ['all', 'tailer', 'consumer'];

export interface RuntimeOptions {
  role: Role;
  logger: Logger;
  metrics?: Metrics;
  /** How long close() waits for in-flight work. Default 30 s. */
  graceMs?: number;
  /** Install SIGTERM/SIGINT handlers before starting, so a stop during start-up is clean. */
  handleSignals?: boolean;
  /** Backoff between start-up attempts while a server is not up yet. Default 200 ms to 5 s. */
  startBackoff?: BackoffPolicy;
}

/**
 * The composition root: wires the compiled config to the tailer and/or consumer, serves metrics and
 * health, and owns start-up and shutdown. `done` settles when the process should exit: resolved
 * after a clean stop, rejected when a component failed for good.
 */
export class Runtime {
  readonly metrics: Metrics;
  readonly done: Promise<void>;
  private tailer: Tailer | undefined;
  private consumer: ChangeConsumer | undefined;
  private http: HttpServer | undefined;
  private stopping: Promise<void> | undefined;
  private initialSnapshot: Promise<void> | undefined;
  private failure: unknown;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };
  private readonly log: Logger;
  /** Aborted by stop(): start-up retries end at once. */
  private readonly stopSignal = new AbortController();

  private constructor(
    private readonly config: CompiledConfig,
    private readonly opts: RuntimeOptions,
  ) {
    this.metrics = opts.metrics ?? new Metrics();
    this.log = opts.logger.child({ role: opts.role });
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    // Callers may await `done` late; a rejection must not count as unhandled meanwhile.
    this.done.catch(() => undefined);
  }

  /**
   * Starts the health server first (so probes answer during start-up), then the roles side by side.
   * A server that is not up yet, or answers with a transient error, is waited for; what only an
   * operator can fix (config, credentials, privileges) throws at once.
   */
  static async start(config: CompiledConfig, opts: RuntimeOptions): Promise<Runtime> {
    const runtime = new Runtime(config, opts);
    if (opts.handleSignals) runtime.installSignalHandlers();
    try {
      await runtime.startComponents();
    } catch (err) {
      await runtime.stop();
      throw err;
    }
    return runtime;
  }

  /** Port the metrics server listens on (useful with `metrics.port: 0`). */
  get metricsPort(): number | undefined {
    return this.http?.port;
  }

  get health(): HealthSource {
    const states = () => ({
      ...(this.runsTailer ? { tailer: this.tailer?.state ?? 'starting' } : {}),
      ...(this.runsConsumer ? { consumer: this.consumer?.state ?? 'starting' } : {}),
    });
    const waitingOn = () => {
      const out: Record<string, string> = {};
      const tailer = this.tailer?.waitingOn;
      const consumer = this.consumer?.waitingOn;
      if (tailer) out.tailer = tailer;
      if (consumer) out.consumer = consumer;
      return out;
    };
    return {
      live: () => !Object.values(states()).includes('failed'),
      ready: () =>
        (!this.runsTailer || this.tailer?.ready === true) &&
        (!this.runsConsumer || this.consumer?.ready === true),
      describe: states,
      waitingOn,
    };
  }

  private get runsTailer(): boolean {
    return this.opts.role !== 'consumer';
  }

  private get runsConsumer(): boolean {
    return this.opts.role !== 'tailer';
  }

  private async startComponents(): Promise<void> {
    const { config, metrics } = this;
    this.http = await HttpServer.start({
      host: config.metrics.host,
      port: config.metrics.port,
      registry: metrics.registry,
      health: this.health,
    });
    this.log.info({ port: this.http.port }, 'serving /metrics, /healthz and /readyz');
    // The roles start side by side: the tailer does not wait for the consumers' group join, and
    // either may come up before the servers it needs.
    const starts: Promise<void>[] = [];
    if (this.runsConsumer) starts.push(this.startConsumer());
    if (this.runsTailer) starts.push(this.startTailer());
    const results = await Promise.allSettled(starts);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  private async startConsumer(): Promise<void> {
    const deps = { config: this.config, logger: this.opts.logger, metrics: this.metrics };
    const consumer = await this.untilUp('consumer', () => ChangeConsumer.create(deps));
    this.consumer = consumer;
    consumer.on(
      'state',
      (s) => s === 'failed' && this.fail(consumer.failure ?? new Error('the consumer failed')),
    );
    await this.untilUp('consumer', () => consumer.run());
  }

  private async startTailer(): Promise<void> {
    const config = this.config;
    // A mapping that names a missing table or column would fail on every change: refuse to start.
    const problems = await this.untilUp('tailer', () => mappingProblems(config));
    if (problems.length > 0) {
      const lines = problems.map((p) => `  ${p}`).join('\n');
      throw new ConfigError(`${config.file}: the mappings do not match the database:\n${lines}`);
    }
    const blockers = await this.untilUp('tailer', () => streamProblems(config));
    if (blockers.length > 0) {
      throw new FatalError(
        `the source's binlog cannot be streamed with its settings:\n${blockers.map((b) => `  ${b}`).join('\n')}`,
      );
    }
    const deps = { config, logger: this.opts.logger, metrics: this.metrics };
    const tailer = await this.untilUp('tailer', () => Tailer.create(deps));
    this.tailer = tailer;
    const firstStart = tailer.checkpoint === undefined;
    tailer.run().catch((err: unknown) => this.fail(err));
    if (config.snapshot.onFirstStart) this.initialSnapshot = this.runInitialSnapshot(tailer, firstStart);
  }

  /**
   * `snapshot.onFirstStart`: on the tailer's first start, once it stored its first checkpoint (so
   * the snapshot's versions carry its epoch), loads the refresh keys from the tables; a later start
   * that finds that snapshot unfinished (a crash, a stop) continues it. Its failure is logged, not
   * fatal: the stream goes on, and `cachesync snapshot` can be run by hand.
   */
  private async runInitialSnapshot(tailer: Tailer, firstStart: boolean): Promise<void> {
    const log = this.opts.logger.child({ component: 'snapshot' });
    try {
      if (!firstStart && !(await snapshotInProgress(this.config))) return;
      while (tailer.state !== 'streaming' && tailer.state !== 'paused') {
        if (this.stopping || tailer.state === 'failed') return;
        await sleep(100);
      }
      log.info({ firstStart }, 'loading the refresh keys from the tables (snapshot.onFirstStart)');
      const lines = new Writable({
        write: (chunk: Buffer, _encoding, done) => {
          for (const line of chunk.toString().split('\n')) if (line.trim()) log.info(line.trim());
          done();
        },
      });
      const code = await runSnapshot(
        this.config,
        this.opts.logger,
        { aborted: () => this.stopping !== undefined },
        lines,
        lines,
      );
      if (code !== 0) log.error('the first-start snapshot could not write every key; see the lines above');
    } catch (err) {
      log.error(
        { err: (err as Error).message },
        'the first-start snapshot failed; run `cachesync snapshot` by hand',
      );
    }
  }

  /**
   * Runs a start-up step until it succeeds. An outage (a server not up yet, Kafka electing a leader
   * or loading a coordinator, a topic not yet known right after its creation) is retried with
   * backoff and logged once per kind; anything else is thrown.
   */
  private async untilUp<T>(role: string, step: () => Promise<T>): Promise<T> {
    const once = new OncePerKind();
    return retry(
      async () => {
        try {
          return await step();
        } catch (err) {
          throw classifyStartError(err);
        }
      },
      this.opts.startBackoff ?? { initialMs: 200, maxMs: 5000 },
      {
        signal: this.stopSignal.signal,
        onRetry: (err) => {
          if (once.report(startErrorKind(err)))
            this.log.warn(
              { err: errorMessage(err), component: role },
              'a server is not ready yet; waiting for it (logged once per kind)',
            );
        },
      },
    );
  }

  private fail(err: unknown): void {
    if (this.stopping) return;
    this.failure = err;
    this.log.error(
      { err: isProgrammerError(err) ? describeBug(err) : errorMessage(err), kind: errorKind(err) },
      'fatal error; stopping',
    );
    void this.stop();
  }

  /** Drains and stops every component within the grace period. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopSignal.abort();
      const graceMs = this.opts.graceMs ?? 30_000;
      this.log.info({ graceMs }, 'stopping');
      // The snapshot stops between chunks (it resumes there on the next start).
      await this.initialSnapshot;
      // Tailer first, so everything it read reaches Kafka while consumers still run.
      await this.tailer
        ?.close(graceMs)
        .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'tailer close'));
      await this.consumer
        ?.close(graceMs)
        .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'consumer close'));
      await this.http
        ?.close()
        .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'http close'));
      this.log.info('stopped');
      if (this.failure !== undefined) this.settle.reject(this.failure);
      else this.settle.resolve();
    })();
    return this.stopping;
  }

  /** SIGTERM and SIGINT drain and stop; a second signal exits at once. */
  installSignalHandlers(): void {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        this.log.warn({ signal }, 'second signal; exiting now');
        process.exit(1);
      }
      signalled = true;
      this.log.info({ signal }, 'signal received; draining');
      void this.stop();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
}

/** A start-up failure in the taxonomy: Kafka's and MySQL's errors sorted, the rest as they are. */
function classifyStartError(err: unknown): unknown {
  if (errorKind(err) !== 'outage') return err;
  const e = err as { name?: string; errno?: unknown; sqlState?: unknown };
  if (typeof e.name === 'string' && e.name.startsWith('KafkaJS')) return classifyKafkaError(err);
  if (typeof e.errno === 'number' && e.sqlState !== undefined) return classifyMysqlError(err, 'MySQL');
  return err;
}

/** What "the same failure" means for logging once per kind: the server's error type or code. */
function startErrorKind(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause ?? err;
  const e = cause as { name?: string; code?: string | number; errno?: string | number };
  return [kafkaErrorType(err) ?? '', String(e.code ?? e.errno ?? ''), e.name ?? ''].join(':');
}
