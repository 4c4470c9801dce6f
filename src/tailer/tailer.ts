import { EventEmitter } from 'node:events';
import type { Kafka, Producer } from 'kafkajs';
import type { CompiledConfig, StartPosition } from '../config/types.js';
import { encodeChangeEvent, messageKey, type Op } from '../core/change-event.js';
import { withDeadline } from '../core/deadline.js';
import { CachesyncError, errorKind, FatalError, UnavailableError } from '../core/errors.js';
import { backoffDelay, pause, retry, type BackoffPolicy } from '../core/retry.js';
import { createKafka, ensureTopics, partitionCount, Partitioners } from '../kafka/kafka-client.js';
import { partitionFor } from '../kafka/partitioner.js';
import { classifyMysqlError } from './mysql-errors.js';
import type { Logger } from '../observability/logger.js';
import { observeTailer, type Metrics } from '../observability/metrics.js';
import type { ColumnKind } from '../core/key-template.js';
import { BinlogSource, type BinlogPosition, type SourceItem } from './binlog-source.js';
import { readColumnKinds, readServerState } from './source-checks.js';
import { sourceConnectionOptions } from './source-connection.js';
import {
  binlogWentBackwards,
  nextEpoch,
  planResume,
  resolveStart,
  type ServerState,
} from './source-epoch.js';
import { ChangeQueue } from './change-queue.js';
import { KafkaCheckpointStore, type Checkpoint, type CheckpointStore } from './checkpoint-store.js';
import { Checkpointer, type CheckpointerEvents } from './checkpointer.js';
import { errorText, Publisher, type PublisherEvents } from './publisher.js';

export type TailerState =
  'starting' | 'streaming' | 'paused' | 'reconnecting' | 'stopping' | 'stopped' | 'failed';

/** The binlog position a stored checkpoint needs is gone from the server: resuming would skip changes. */
export class BinlogPurgedError extends CachesyncError {
  constructor(position: string, checkpointTopic: string, cause: unknown) {
    super(
      `the binlog the checkpoint points to (${position}) is no longer on the server (purged), so the ` +
        `changes made since then cannot be read and the cache may have missed them. cachesync will not ` +
        `skip ahead on its own. To recover: delete the checkpoint topic ${checkpointTopic} so the tailer ` +
        `starts at the end of the binlog (or at source.start), start cachesync, then run \`cachesync ` +
        `snapshot\` to load the refresh keys from the tables as they are now (and \`cachesync verify ` +
        `--repair\` to delete keys of rows deleted meanwhile); invalidate keys the gap may have left ` +
        `stale must be deleted from Redis.`,
      { retriable: false, cause },
    );
  }
}

export interface TailerOptions {
  config: Pick<CompiledConfig, 'source' | 'kafka' | 'tailer' | 'mappings'>;
  logger: Logger;
  metrics: Metrics;
  kafka?: Kafka;
  checkpoints?: CheckpointStore;
  /** Backoff between binlog reconnects and failed produce requests. */
  backoff?: BackoffPolicy;
  /** How often the server is checked for a binlog reset or a swap under the connection. Default 2 s. */
  watchIntervalMs?: number;
  /** Kinds of the key-template columns by table; read from the database when not given. */
  columnKinds?: ReadonlyMap<string, Record<string, ColumnKind>>;
  /**
   * A server that has not answered for this long is taken as down: a produce request outstanding,
   * or a binlog stream with neither events nor heartbeats. Default 3 s.
   */
  stallMs?: number;
  /** The binlog heartbeat period asked of the server. Default 1 s. */
  heartbeatMs?: number;
}

/** Which server a stalled tailer waits for. */
export type TailerWaitingOn = 'kafka' | 'mysql';

/** What the tailer reports as it works; the metrics module turns these into series. */
export interface TailerEvents extends PublisherEvents, CheckpointerEvents {
  state: [TailerState];
  /** Row changes read from the binlog (one binlog rows event at a time). */
  read: [{ table: string; op: Op; rows: number }];
  /** How far behind the source the tailer reads, seconds (0 once the server says all is read). */
  sourceLag: [seconds: number];
  /** Changes read and not yet acknowledged by Kafka. */
  buffered: [changes: number];
  /** Binlog reading paused (the buffer is full) or resumed. */
  sourcePaused: [paused: boolean];
  /** A binlog connection is being re-opened. */
  reconnect: [];
  /** The source epoch of the binlog connection just opened. */
  epoch: [epoch: number];
}

/**
 * Reads the binlog and publishes every change of a mapped table to the change topic, keyed by row,
 * in binlog order. The checkpoint advances only to transaction boundaries whose changes Kafka has
 * all acknowledged; a broken binlog connection is re-opened from the last boundary read; a slow or
 * absent Kafka pauses binlog reading instead of growing memory.
 */
export class Tailer extends EventEmitter<TailerEvents> {
  private state_: TailerState = 'starting';
  private closing = false;
  private source: BinlogSource | undefined;
  private readonly queue = new ChangeQueue();
  private readonly publisher: Publisher;
  private readonly checkpointer: Checkpointer;
  private wake: (() => void) | undefined;
  /** Last boundary read: a new binlog connection resumes here. */
  private resumeFrom: BinlogPosition | StartPosition;
  /** Epoch and server of `resumeFrom` (undefined before the first boundary of a first start). */
  private resumeEpoch: number | undefined;
  private resumeServer: string | undefined;
  /** Identity of the server the current binlog connection reads. */
  private sourceServer: string | undefined;
  private reconnecting: Promise<void> | undefined;
  /** A fatal error from a reconnect, surfaced by the publish loop. */
  private fatal: Error | undefined;
  /** Set when close() ran out of grace: in-flight sends stop retrying. */
  private abandoned = false;
  private runPromise: Promise<void> | undefined;
  private readonly log: Logger;
  private readonly tables: Set<string>;
  private readonly backoff: BackoffPolicy;
  private readonly stallMs: number;
  private readonly heartbeatMs: number;
  /** Aborted by close(): backoffs end at once. */
  private readonly stop = new AbortController();
  /** When the binlog stream last delivered anything, heartbeats included (epoch ms). */
  private lastBinlogMs = Date.now();
  private watchdog: NodeJS.Timeout | undefined;
  /** Stream failures in a row with no transaction read in between: each waits longer. */
  private fruitlessReconnects = 0;

  private constructor(
    private readonly opts: TailerOptions,
    producer: Producer,
    newProducer: () => Producer,
    checkpoints: CheckpointStore,
    private readonly partitions: number,
    checkpoint: Checkpoint | undefined,
  ) {
    super();
    observeTailer(this, opts.metrics);
    this.log = opts.logger.child({ component: 'tailer' });
    this.tables = new Set(opts.config.mappings.map((m) => m.table));
    this.backoff = opts.backoff ?? { initialMs: 200, maxMs: 10_000 };
    this.stallMs = opts.stallMs ?? 3000;
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
    const abandoned = () => this.abandoned;
    this.publisher = new Publisher({
      producer,
      newProducer,
      topic: opts.config.kafka.topic,
      dlqTopic: opts.config.kafka.dlqTopic,
      partitions,
      compression: opts.config.tailer.compression,
      keyColumns: new Map(
        opts.config.mappings.map((m) => [m.table, new Set(m.keys.flatMap((k) => k.template.columns))]),
      ),
      backoff: this.backoff,
      logger: this.log,
      events: this,
      abandoned,
    });
    this.checkpointer = new Checkpointer({
      store: checkpoints,
      initial: checkpoint,
      backoff: this.backoff,
      logger: this.log,
      events: this,
      abandoned,
    });
    this.resumeFrom = checkpoint ?? opts.config.source.start;
    this.resumeEpoch = checkpoint?.epoch;
    this.resumeServer = checkpoint?.server;
  }

  /** Connects to Kafka, creates missing topics and loads the checkpoint. */
  static async create(opts: TailerOptions): Promise<Tailer> {
    const started = Date.now();
    const since = () => Date.now() - started;
    const kafka = opts.kafka ?? createKafka(opts.config.kafka, opts.logger, '-tailer');
    await ensureTopics(kafka, opts.config.kafka);
    const topicsMs = since();
    const checkpoints =
      opts.checkpoints ?? new KafkaCheckpointStore(kafka, opts.config.kafka.checkpointTopic);
    const newProducer = () =>
      kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        createPartitioner: Partitioners.DefaultPartitioner,
      });
    const producer = newProducer();
    // Independent start-up steps run together: a restart after a crash is back at work sooner.
    let checkpointMs = 0;
    const [checkpoint, columnKinds, partitions] = await Promise.all([
      checkpoints.load().finally(() => (checkpointMs = since())),
      opts.columnKinds ?? readColumnKinds(opts.config),
      partitionCount(kafka, opts.config.kafka.topic),
      producer.connect(),
    ]).catch(async (err: unknown) => {
      await producer.disconnect().catch(() => undefined);
      throw err;
    });
    opts.logger
      .child({ component: 'tailer' })
      .info({ topicsMs, checkpointMs, totalMs: since() }, 'tailer connected to Kafka, checkpoint loaded');
    return new Tailer({ ...opts, columnKinds }, producer, newProducer, checkpoints, partitions, checkpoint);
  }

  get state(): TailerState {
    return this.state_;
  }

  /**
   * The server a stalled tailer waits for: Kafka while a produce request has been outstanding for
   * longer than the stall limit, MySQL while the binlog connection is being re-opened.
   */
  get waitingOn(): TailerWaitingOn | undefined {
    const sendingSinceMs = this.publisher.sendingSinceMs;
    if (sendingSinceMs !== undefined && Date.now() - sendingSinceMs > this.stallMs) return 'kafka';
    if (
      this.state_ === 'reconnecting' ||
      (this.state_ === 'starting' && this.source === undefined && this.runPromise)
    )
      return 'mysql';
    return undefined;
  }

  /** Ready: streaming, and neither Kafka nor MySQL has gone silent. */
  get ready(): boolean {
    return this.state_ === 'streaming' && this.waitingOn === undefined;
  }

  /** The last checkpoint stored (Kafka acknowledged everything before it). */
  get checkpoint(): Checkpoint | undefined {
    return this.checkpointer.acked;
  }

  /** Streams until close(); rejects only on a fatal error (such as a purged binlog). */
  run(): Promise<void> {
    this.runPromise ??= this.runLoops();
    return this.runPromise;
  }

  /** Stops reading, publishes what was read (within graceMs), stores the checkpoint. Idempotent. */
  async close(graceMs = 30_000): Promise<void> {
    if (this.closing) {
      await this.runPromise?.catch(() => undefined);
      return;
    }
    this.closing = true;
    this.stop.abort();
    clearInterval(this.watchdog);
    this.setState('stopping');
    await this.source?.stop();
    this.source = undefined;
    this.wake?.();
    const drained = this.runPromise?.catch(() => undefined) ?? Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    this.abandoned = true;
    await this.publisher.disconnect().catch(() => undefined);
    await this.checkpointer.close().catch(() => undefined);
    this.setState('stopped');
  }

  private async runLoops(): Promise<void> {
    try {
      this.watchdog = setInterval(() => this.checkStream(), Math.min(500, this.stallMs / 2));
      this.watchdog.unref();
      await this.connect();
      void this.watchSource();
      await this.publishLoop();
    } catch (err) {
      clearInterval(this.watchdog);
      this.setState('failed');
      throw err;
    }
  }

  /**
   * A binlog connection does not notice `RESET MASTER` (or a server swapped under its address):
   * the server just sends nothing more. So the server is looked at every few seconds, and a binlog
   * that went backwards of what was read, or another server, breaks the stream: the reconnect
   * plans the new epoch.
   */
  private async watchSource(): Promise<void> {
    const intervalMs = this.opts.watchIntervalMs ?? 2000;
    while (!this.closing) {
      await new Promise((r) => setTimeout(r, intervalMs).unref());
      const source = this.source;
      const from = this.resumeFrom;
      if (this.closing || !source || this.reconnecting || !('file' in from)) continue;
      // Until the first boundary read from this server, the position is the previous server's.
      if (this.resumeServer !== this.sourceServer) continue;
      let reason: string | undefined;
      try {
        const server = await readServerState(this.opts.config.source);
        if (server.identity !== this.sourceServer) {
          reason = `the server at the source address is now ${server.identity}`;
        } else if (source === this.source && from === this.resumeFrom) {
          reason = binlogWentBackwards(from, server);
        }
      } catch {
        continue; // an outage shows up on the binlog connection itself
      }
      if (reason && source === this.source) {
        this.onSourceError(source, new Error(`the source changed under the binlog connection: ${reason}`));
      }
    }
  }

  /**
   * A binlog stream that delivers neither events nor the heartbeats asked for is dead (a frozen
   * server, a dropped connection the socket has not noticed): replace it. A paused stream is left
   * alone, since pausing stops reading heartbeats too.
   */
  private checkStream(): void {
    const source = this.source;
    if (!source || this.closing || this.state_ !== 'streaming' || this.reconnecting) return;
    const silentMs = Date.now() - this.lastBinlogMs;
    if (silentMs <= Math.max(this.stallMs, 2 * this.heartbeatMs)) return;
    this.onSourceError(
      source,
      new UnavailableError(`the binlog stream sent nothing for ${silentMs} ms, heartbeats included`, {
        server: 'mysql',
      }),
    );
  }

  private setState(state: TailerState): void {
    if (state === this.state_) return;
    // Backpressure flips between these often under load; every other transition matters.
    const routine =
      (state === 'paused' && this.state_ === 'streaming') ||
      (state === 'streaming' && this.state_ === 'paused');
    this.log[routine ? 'debug' : 'info']({ from: this.state_, to: state }, 'tailer state');
    const was = this.state_;
    this.state_ = state;
    this.emit('state', state);
    if (state === 'paused' || was === 'paused') this.emit('sourcePaused', state === 'paused');
  }

  /** Opens a binlog connection from the last boundary read, retrying until it works or is fatal. */
  private async connect(): Promise<void> {
    await retry(
      async () => {
        if (this.closing) return;
        const server = await readServerState(this.opts.config.source);
        const plan = this.planResume(server);
        const source = new BinlogSource({
          epoch: plan.epoch,
          server: server.identity,
          connection: sourceConnectionOptions(this.opts.config.source),
          serverId: this.opts.config.source.serverId,
          tables: this.tables,
          columnKinds: this.opts.columnKinds,
          heartbeatMs: this.heartbeatMs,
          onItem: (item) => this.enqueue(item),
          onError: (err) => this.onSourceError(source, err),
          onAlive: (kind) => this.onBinlogAlive(kind),
        });
        try {
          // A frozen server accepts the connection and answers nothing: give up and try again.
          await withDeadline(
            source.start(plan.from),
            this.opts.config.source.connectTimeoutMs + this.stallMs,
            'opening the binlog stream',
            'mysql',
          );
          this.lastBinlogMs = Date.now();
        } catch (err) {
          await source.stop();
          throw this.classifyStartError(err);
        }
        if (this.closing) {
          await source.stop();
          return;
        }
        this.source = source;
        this.sourceServer = server.identity;
        if (plan.newEpoch && this.resumeEpoch !== undefined) {
          this.log.warn(
            {
              epoch: plan.epoch,
              previousEpoch: this.resumeEpoch,
              server: server.identity,
              reason: plan.newEpoch,
            },
            'new source epoch: every change read from now on is newer than every change read before',
          );
        }
        this.emit('epoch', plan.epoch);
        this.log.info(
          { from: describePosition(plan.from), server: server.identity, epoch: plan.epoch },
          'reading the binlog',
        );
        const start = source.position();
        if (!this.checkpointer.acked && start) {
          // The first start has no checkpoint: the point it started from is one, and must be
          // stored before anything is read, or a crash inside the first transaction would
          // restart "from the end" and skip it. (A start by GTID learns its file only from the
          // server's first event; until its first boundary a restart repeats the same start.)
          this.resumeFrom = start;
          this.resumeEpoch = plan.epoch;
          this.resumeServer = server.identity;
          this.checkpointer.advance({
            ...start,
            commitTsMs: Date.now(),
            savedAtMs: 0,
            epoch: plan.epoch,
            server: server.identity,
          });
          await this.checkpointer.save(true, true);
        }
        this.setState(
          this.queue.changes >= this.opts.config.tailer.maxBufferedEvents ? 'paused' : 'streaming',
        );
        if (this.state_ === 'paused') source.pause();
      },
      this.backoff,
      {
        signal: this.stop.signal,
        onRetry: (err, attempt, delayMs) => {
          this.emit('reconnect');
          this.log.warn({ err: errorText(err), attempt, delayMs }, 'binlog connection failed; retrying');
        },
      },
    );
  }

  /** Where and in which epoch the next binlog connection reads (see source-epoch.ts). */
  private planResume(server: ServerState): {
    epoch: number;
    from: BinlogPosition | StartPosition;
    newEpoch?: string;
  } {
    const now = Date.now();
    if (this.resumeEpoch === undefined) {
      return {
        epoch: nextEpoch(undefined, now),
        from: resolveStart(this.resumeFrom, server),
        newEpoch: 'first start, no checkpoint',
      };
    }
    if (!('file' in this.resumeFrom)) {
      return { epoch: this.resumeEpoch, from: resolveStart(this.resumeFrom, server) };
    }
    return planResume({ epoch: this.resumeEpoch, server: this.resumeServer }, this.resumeFrom, server, now);
  }

  private classifyStartError(err: unknown): unknown {
    const e = err as { errno?: number; message?: string };
    // ER_MASTER_FATAL_ERROR_READING_BINLOG: the file or GTID asked for is not in the binlog any more.
    if (e.errno === 1236 && /could not find|purged|first log file|GTID/i.test(e.message ?? '')) {
      return new BinlogPurgedError(
        describePosition(this.resumeFrom),
        this.opts.config.kafka.checkpointTopic,
        err,
      );
    }
    if (/same server_uuid|same server_id/i.test(e.message ?? '')) {
      return new FatalError(
        `another replica of the source uses server id ${this.opts.config.source.serverId}, and the ` +
          `server drops one of two binlog connections with the same id: give this tailer a unique ` +
          `source.serverId (${e.message ?? ''})`,
        { cause: err },
      );
    }
    return classifyMysqlError(err, 'the binlog connection');
  }

  private onBinlogAlive(kind: 'event' | 'heartbeat'): void {
    this.lastBinlogMs = Date.now();
    // The server sends a heartbeat only when it has nothing else to send: everything is read.
    if (kind === 'heartbeat') this.emit('sourceLag', 0);
  }

  private onSourceError(source: BinlogSource, err: Error): void {
    if (this.closing) return;
    // The server answers the dump request after zongji reported ready, so a purged binlog shows
    // up here, not as a failed start: reconnecting would only meet it again.
    const classified = this.classifyStartError(err);
    const kind = errorKind(classified);
    if (kind === 'fatal' || kind === 'programmer') {
      this.fatal = classified instanceof Error ? classified : err;
      this.wake?.();
      return;
    }
    if (source !== this.source || this.reconnecting) return;
    // A stream that breaks again before a single transaction came through makes no progress:
    // reconnecting at once would only hammer the server, so each such failure waits longer.
    const fruitless = ++this.fruitlessReconnects;
    const delayMs = fruitless > 1 ? backoffDelay(this.backoff, fruitless - 1) : 0;
    this.log.warn(
      { err: err.message, from: describePosition(this.resumeFrom), delayMs },
      'binlog stream broke; reconnecting',
    );
    this.setState('reconnecting');
    this.reconnecting = (async () => {
      this.source = undefined;
      await source.stop();
      if (!(await pause(delayMs, this.stop.signal))) return;
      // Changes of the unfinished transaction were queued already; the new stream sends them
      // again from its start (duplicates are harmless downstream, gaps would not be).
      this.emit('reconnect');
      await this.connect();
    })()
      .catch((fatal: unknown) => {
        this.fatal = fatal instanceof Error ? fatal : new Error(String(fatal));
        this.wake?.();
      })
      .finally(() => {
        this.reconnecting = undefined;
      });
  }

  private enqueue(item: SourceItem): void {
    switch (item.kind) {
      case 'rows': {
        for (const { key, value } of item.changes) {
          this.queue.pushChange({
            kind: 'change',
            key,
            value,
            partition: partitionFor(key, this.partitions),
            op: item.op,
            table: item.table,
          });
        }
        this.emit('read', { table: item.table, op: item.op, rows: item.changes.length });
        this.emit('sourceLag', Math.max(0, (Date.now() - item.commitTsMs) / 1000));
        break;
      }
      case 'change': {
        const e = item.event;
        const table = `${e.db}.${e.table}`;
        // A table-level change goes to every partition: it names none.
        this.queue.pushChange({
          kind: 'change',
          key: messageKey(e),
          value: encodeChangeEvent(e),
          op: e.op,
          table,
        });
        this.emit('read', { table, op: e.op, rows: 1 });
        this.emit('sourceLag', Math.max(0, (Date.now() - e.source.ts_ms) / 1000));
        break;
      }
      case 'commit':
        this.queue.pushCommit(item);
        this.resumeFrom = item.position;
        this.resumeEpoch = item.epoch;
        this.resumeServer = item.server;
        this.fruitlessReconnects = 0;
        this.emit('sourceLag', Math.max(0, (Date.now() - item.commitTsMs) / 1000));
        break;
    }
    if (item.kind !== 'commit') {
      const { maxBufferedEvents, maxBufferedBytes } = this.opts.config.tailer;
      const full = this.queue.changes >= maxBufferedEvents || this.queue.bytes >= maxBufferedBytes;
      if (full && this.state_ === 'streaming') {
        this.source?.pause();
        this.setState('paused');
      }
      this.emit('buffered', this.queue.changes);
    }
    this.wake?.();
  }

  private async publishLoop(): Promise<void> {
    const { batchSize, maxBatchBytes, lingerMs, maxBufferedEvents, maxBufferedBytes } =
      this.opts.config.tailer;
    while (!this.closing || !this.queue.empty) {
      if (this.fatal) throw this.fatal;
      if (this.queue.empty) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      if (this.queue.length < batchSize && lingerMs > 0 && !this.closing) {
        await new Promise((r) => setTimeout(r, lingerMs));
      }
      const batch = this.queue.nextBatch(batchSize, maxBatchBytes, this.partitions);
      if (batch.changes.length > 0) await this.publisher.send(batch.changes);
      this.queue.release(batch);
      this.emit('buffered', this.queue.changes);
      const commit = batch.lastCommit;
      if (commit) {
        this.checkpointer.advance({
          ...commit.position,
          commitTsMs: commit.commitTsMs,
          savedAtMs: 0,
          epoch: commit.epoch,
          server: commit.server,
        });
      }
      await this.checkpointer.save(this.closing && this.queue.empty);
      if (
        this.state_ === 'paused' &&
        this.queue.changes <= maxBufferedEvents / 2 &&
        this.queue.bytes <= maxBufferedBytes / 2
      ) {
        this.source?.resume();
        this.setState('streaming');
      }
    }
    await this.checkpointer.save(true);
  }
}

function describePosition(p: BinlogPosition | StartPosition): string {
  if ('file' in p) return p.gtidSet ? `gtid ${p.gtidSet} (${p.file}:${p.pos})` : `${p.file}:${p.pos}`;
  switch (p.kind) {
    case 'end':
    case 'beginning':
      return p.kind;
    case 'gtid':
      return `gtid ${p.gtidSet}`;
    case 'file':
      return `${p.filename}:${p.position}`;
  }
}
