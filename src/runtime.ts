import type { CompiledConfig } from './config/types.js';
import { ChangeConsumer } from './consumer/change-consumer.js';
import type { Logger } from './observability/logger.js';
import { HttpServer, type HealthSource } from './observability/http-server.js';
import { Metrics } from './observability/metrics.js';
import { mappingProblems } from './tailer/source-checks.js';
import { Tailer } from './tailer/tailer.js';
import { ConfigError } from './core/errors.js';

export type Role = 'all' | 'tailer' | 'consumer';
export const ROLES: readonly Role[] = ['all', 'tailer', 'consumer'];

export interface RuntimeOptions {
  role: Role;
  logger: Logger;
  metrics?: Metrics;
  /** How long close() waits for in-flight work. Default 30 s. */
  graceMs?: number;
}

/**
 * The composition root: wires the compiled config to the tailer and/or consumer, serves metrics and
 * health, and owns shutdown. `done` settles when the process should exit: resolved after a clean
 * stop, rejected when a component failed for good.
 */
export class Runtime {
  readonly metrics: Metrics;
  readonly done: Promise<void>;
  private tailer: Tailer | undefined;
  private consumer: ChangeConsumer | undefined;
  private http: HttpServer | undefined;
  private stopping: Promise<void> | undefined;
  private failure: unknown;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };
  private readonly log: Logger;

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

  /** Starts the health server first (so probes answer during start-up), then the roles. */
  static async start(config: CompiledConfig, opts: RuntimeOptions): Promise<Runtime> {
    const runtime = new Runtime(config, opts);
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
    return {
      live: () => !Object.values(states()).includes('failed'),
      ready: () => Object.values(states()).every((s) => s === 'streaming'),
      describe: states,
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
    const deps = { config, logger: this.opts.logger, metrics };
    if (this.runsTailer) {
      // A mapping that names a missing table or column would fail on every change: refuse to start.
      const problems = await mappingProblems(config);
      if (problems.length > 0) {
        const lines = problems.map((p) => `  ${p}`).join('\n');
        throw new ConfigError(`${config.file}: the mappings do not match the database:\n${lines}`);
      }
    }
    if (this.runsConsumer) {
      this.consumer = await ChangeConsumer.create(deps);
      this.consumer.on(
        'state',
        (s) => s === 'failed' && this.fail(new Error('the consumer stopped for good')),
      );
      await this.consumer.run();
    }
    if (this.runsTailer) {
      this.tailer = await Tailer.create(deps);
      this.tailer.run().catch((err: unknown) => this.fail(err));
    }
  }

  private fail(err: unknown): void {
    if (this.stopping) return;
    this.failure = err;
    this.log.error({ err: err instanceof Error ? err.message : String(err) }, 'fatal error; stopping');
    void this.stop();
  }

  /** Drains and stops every component within the grace period. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const graceMs = this.opts.graceMs ?? 30_000;
      this.log.info({ graceMs }, 'stopping');
      // Tailer first, so everything it read reaches Kafka while consumers still run.
      await this.tailer
        ?.close(graceMs)
        .catch((err: unknown) => this.log.warn({ err: String(err) }, 'tailer close'));
      await this.consumer
        ?.close(graceMs)
        .catch((err: unknown) => this.log.warn({ err: String(err) }, 'consumer close'));
      await this.http?.close();
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
