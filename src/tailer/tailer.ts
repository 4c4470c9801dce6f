import { EventEmitter } from 'node:events';
import type { Kafka, Message, Producer } from 'kafkajs';
import { CompressionTypes, Partitioners } from 'kafkajs';
import type { CompiledConfig, StartPosition } from '../config/types.js';
import { encodeChangeEvent, messageKey, type ChangeEvent, type Op } from '../core/change-event.js';
import type { Row } from '../core/key-template.js';
import { DLQ_HEADERS } from '../consumer/dead-letters.js';
import { withDeadline } from '../core/deadline.js';
import { CachesyncError, errorKind, FatalError, UnavailableError } from '../core/errors.js';
import { backoffDelay, pause, retry, type BackoffPolicy } from '../core/retry.js';
import { binlogFileIndex } from '../core/version.js';
import { createKafka, ensureTopics, partitionCount } from '../kafka/kafka-client.js';
import { classifyKafkaError, isTooLarge, needsNewProducer } from '../kafka/kafka-errors.js';
import { classifyMysqlError } from './mysql-errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
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
import { KafkaCheckpointStore, type Checkpoint, type CheckpointStore } from './checkpoint-store.js';

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

/** A change waiting for Kafka, held as the message it is sent as. */
interface QueuedChange {
  kind: 'change';
  key: string;
  value: string;
  op: Op;
  /** `db.table`. */
  table: string;
}

type Queued = QueuedChange | Extract<SourceItem, { kind: 'commit' }>;

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

const COMMIT_SAVE_INTERVAL_MS = 1000;

/**
 * Reads the binlog and publishes every change of a mapped table to the change topic, keyed by row,
 * in binlog order. The checkpoint advances only to transaction boundaries whose changes Kafka has
 * all acknowledged; a broken binlog connection is re-opened from the last boundary read; a slow or
 * absent Kafka pauses binlog reading instead of growing memory.
 */
export class Tailer extends EventEmitter<{ state: [TailerState] }> {
  private state_: TailerState = 'starting';
  private closing = false;
  private source: BinlogSource | undefined;
  private readonly queue: Queued[] = [];
  private queueHead = 0;
  private bufferedChanges = 0;
  /** JSON bytes of the changes in the queue. */
  private bufferedBytes = 0;
  /** Per mapped table, the columns its keys are rendered from (what an oversized change keeps). */
  private readonly keyColumns: Map<string, Set<string>>;
  private wake: (() => void) | undefined;
  /** Last boundary read: a new binlog connection resumes here. */
  private resumeFrom: BinlogPosition | StartPosition;
  /** Epoch and server of `resumeFrom` (undefined before the first boundary of a first start). */
  private resumeEpoch: number | undefined;
  private resumeServer: string | undefined;
  /** Identity of the server the current binlog connection reads. */
  private sourceServer: string | undefined;
  private acked: Checkpoint | undefined;
  private lastSavedAtMs = 0;
  private savedVersion: string | undefined;
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
  /** When the produce request in flight was sent (epoch ms), if one is. */
  private sendingSinceMs: number | undefined;
  /** When the binlog stream last delivered anything, heartbeats included (epoch ms). */
  private lastBinlogMs = Date.now();
  private watchdog: NodeJS.Timeout | undefined;
  /** Stream failures in a row with no transaction read in between: each waits longer. */
  private fruitlessReconnects = 0;

  private constructor(
    private readonly opts: TailerOptions,
    private producer: Producer,
    private readonly newProducer: () => Producer,
    private readonly checkpoints: CheckpointStore,
    private readonly partitions: number,
    checkpoint: Checkpoint | undefined,
  ) {
    super();
    this.log = opts.logger.child({ component: 'tailer' });
    this.tables = new Set(opts.config.mappings.map((m) => m.table));
    this.keyColumns = new Map(
      opts.config.mappings.map((m) => [m.table, new Set(m.keys.flatMap((k) => k.template.columns))]),
    );
    this.backoff = opts.backoff ?? { initialMs: 200, maxMs: 10_000 };
    this.stallMs = opts.stallMs ?? 3000;
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
    this.acked = checkpoint;
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
    if (this.sendingSinceMs !== undefined && Date.now() - this.sendingSinceMs > this.stallMs) return 'kafka';
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
    return this.acked;
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
    await this.producer.disconnect().catch(() => undefined);
    await this.checkpoints.close().catch(() => undefined);
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
    this.state_ = state;
    this.emit('state', state);
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
        this.opts.metrics.sourceEpoch.set(plan.epoch);
        this.log.info(
          { from: describePosition(plan.from), server: server.identity, epoch: plan.epoch },
          'reading the binlog',
        );
        const start = source.position();
        if (!this.acked && start) {
          // The first start has no checkpoint: the point it started from is one, and must be
          // stored before anything is read, or a crash inside the first transaction would
          // restart "from the end" and skip it. (A start by GTID learns its file only from the
          // server's first event; until its first boundary a restart repeats the same start.)
          this.resumeFrom = start;
          this.resumeEpoch = plan.epoch;
          this.resumeServer = server.identity;
          this.acked = {
            ...start,
            commitTsMs: Date.now(),
            savedAtMs: 0,
            epoch: plan.epoch,
            server: server.identity,
          };
          await this.maybeSaveCheckpoint(true, true);
        }
        this.setState(
          this.bufferedChanges >= this.opts.config.tailer.maxBufferedEvents ? 'paused' : 'streaming',
        );
        if (this.state_ === 'paused') source.pause();
      },
      this.backoff,
      {
        signal: this.stop.signal,
        onRetry: (err, attempt, delayMs) => {
          this.opts.metrics.binlogReconnects.inc();
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
    if (kind === 'heartbeat') this.opts.metrics.sourceLag.set(0);
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
      this.opts.metrics.binlogReconnects.inc();
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
    const { maxBufferedEvents, maxBufferedBytes } = this.opts.config.tailer;
    if (item.kind === 'change') {
      const e = item.event;
      // Held as the JSON it is sent as: a fraction of the memory of the decoded row images.
      const value = encodeChangeEvent(e);
      this.queue.push({ kind: 'change', key: messageKey(e), value, op: e.op, table: `${e.db}.${e.table}` });
      this.bufferedChanges++;
      this.bufferedBytes += value.length;
      this.opts.metrics.rowsRead.inc({ table: `${e.db}.${e.table}`, op: e.op });
      this.opts.metrics.sourceLag.set(Math.max(0, (Date.now() - e.source.ts_ms) / 1000));
      const full = this.bufferedChanges >= maxBufferedEvents || this.bufferedBytes >= maxBufferedBytes;
      if (full && this.state_ === 'streaming') {
        this.source?.pause();
        this.opts.metrics.sourcePaused.set(1);
        this.setState('paused');
      }
    } else {
      this.queue.push(item);
      this.resumeFrom = item.position;
      this.resumeEpoch = item.epoch;
      this.resumeServer = item.server;
      this.fruitlessReconnects = 0;
      this.opts.metrics.sourceLag.set(Math.max(0, (Date.now() - item.commitTsMs) / 1000));
    }
    this.opts.metrics.bufferedEvents.set(this.bufferedChanges);
    this.wake?.();
  }

  private async publishLoop(): Promise<void> {
    const { batchSize, lingerMs, maxBufferedEvents, maxBufferedBytes } = this.opts.config.tailer;
    while (!this.closing || this.queueHead < this.queue.length) {
      if (this.fatal) throw this.fatal;
      if (this.queueHead >= this.queue.length) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      if (this.queue.length - this.queueHead < batchSize && lingerMs > 0 && !this.closing) {
        await new Promise((r) => setTimeout(r, lingerMs));
      }
      const end = this.batchEnd(batchSize);
      const items = this.queue.slice(this.queueHead, end);
      const changes = items.filter((i): i is QueuedChange => i.kind === 'change');
      if (changes.length > 0) await this.send(changes);
      this.queueHead = end;
      this.bufferedChanges -= changes.length;
      for (const c of changes) this.bufferedBytes -= c.value.length;
      this.compactQueue();
      this.opts.metrics.bufferedEvents.set(this.bufferedChanges);
      const lastCommit = items.findLast((i) => i.kind === 'commit');
      if (lastCommit?.kind === 'commit') {
        this.acked = {
          ...lastCommit.position,
          commitTsMs: lastCommit.commitTsMs,
          savedAtMs: 0,
          epoch: lastCommit.epoch,
          server: lastCommit.server,
        };
      }
      await this.maybeSaveCheckpoint(this.closing && this.queueHead >= this.queue.length);
      if (
        this.state_ === 'paused' &&
        this.bufferedChanges <= maxBufferedEvents / 2 &&
        this.bufferedBytes <= maxBufferedBytes / 2
      ) {
        this.source?.resume();
        this.opts.metrics.sourcePaused.set(0);
        this.setState('streaming');
      }
    }
    await this.maybeSaveCheckpoint(true);
  }

  /**
   * Index after the items of the next batch: up to batchSize changes and maxBatchBytes of them (at
   * least one change), plus the markers among them.
   */
  private batchEnd(batchSize: number): number {
    const { maxBatchBytes } = this.opts.config.tailer;
    let count = 0;
    let bytes = 0;
    let i = this.queueHead;
    while (i < this.queue.length) {
      const item = this.queue[i]!;
      if (item.kind === 'change') {
        const size = item.value.length * (item.op === 't' ? this.partitions : 1);
        if (count === batchSize || (count > 0 && bytes + size > maxBatchBytes)) break;
        count++;
        bytes += size;
      }
      i++;
    }
    return i;
  }

  private compactQueue(): void {
    if (this.queueHead > 4096 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
  }

  /**
   * Sends until Kafka acknowledges: a Kafka outage holds the loop here (and so pauses the binlog).
   * A batch the broker finds too large is split; a single change too large for it is dead-lettered
   * and replaced by an event that invalidates its keys, so the cache cannot go stale and the
   * stream keeps moving.
   */
  private async send(changes: QueuedChange[]): Promise<void> {
    try {
      await this.sendBatch(changes);
    } catch (err) {
      if (errorKind(err) !== 'message' || !isTooLarge((err as Error).cause)) throw err;
      if (changes.length > 1) {
        const half = Math.ceil(changes.length / 2);
        await this.send(changes.slice(0, half));
        await this.send(changes.slice(half));
        return;
      }
      await this.replaceOversized(changes[0]!, err as Error);
    }
  }

  private async sendBatch(changes: QueuedChange[]): Promise<void> {
    const { topic } = this.opts.config.kafka;
    const messages: Message[] = [];
    for (const change of changes) {
      if (change.op === 't') {
        // Every partition must see a table-level change after the rows it holds, so it goes to all.
        for (let partition = 0; partition < this.partitions; partition++) {
          messages.push({ key: change.key, value: change.value, partition });
        }
      } else {
        messages.push({ key: change.key, value: change.value });
      }
    }
    const compression =
      this.opts.config.tailer.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
    await retry(
      async () => {
        const stop = this.opts.metrics.publishLatency.startTimer();
        this.sendingSinceMs = Date.now();
        try {
          await this.producer.send({ topic, messages, acks: -1, compression });
          this.opts.metrics.publishBatches.inc({ result: 'ok' });
        } catch (err) {
          this.opts.metrics.publishBatches.inc({ result: 'error' });
          if (needsNewProducer(err)) await this.replaceProducer(err);
          throw classifyKafkaError(err, `publishing to ${topic}`);
        } finally {
          this.sendingSinceMs = undefined;
          stop();
        }
      },
      this.backoff,
      {
        aborted: () => this.abandoned,
        onRetry: (err, attempt, delayMs) => {
          this.opts.metrics.retries.inc({ stage: 'publish', reason: 'kafka' });
          // Once when it starts, then now and then: an outage is one event, not one per retry.
          if (attempt === 1 || attempt % 20 === 0)
            this.log.warn(
              { err: errorText(err), attempt, delayMs, messages: messages.length },
              'publish failed; retrying',
            );
        },
      },
    );
    this.opts.metrics.publishBatchSize.observe(messages.length);
  }

  /**
   * A change larger than the broker accepts: its full image cannot be published. The change topic
   * gets the same change with only the columns its keys are rendered from, marked `oversized`, so
   * every consumer deletes its keys (through the version guards) instead of writing them; the DLQ
   * gets that event with the reason, for the operator.
   */
  private async replaceOversized(change: QueuedChange, err: Error): Promise<void> {
    const event = JSON.parse(change.value) as ChangeEvent;
    const slim = oversizedEvent(event, this.keyColumns.get(change.table) ?? new Set());
    const value = encodeChangeEvent(slim);
    const reason = `the change is ${change.value.length} bytes, more than the broker accepts (${err.message}); its keys are invalidated instead`;
    this.log.error(
      { table: change.table, key: change.key, bytes: change.value.length, gtid: event.source.gtid },
      'change too large for Kafka; dead-lettered, its keys invalidated',
    );
    const now = new Date().toISOString();
    await this.sendRaw(this.opts.config.kafka.dlqTopic, {
      key: change.key,
      value,
      headers: {
        [DLQ_HEADERS.error]: reason,
        [DLQ_HEADERS.errorClass]: 'MessageTooLarge',
        [DLQ_HEADERS.attempts]: '1',
        [DLQ_HEADERS.topic]: this.opts.config.kafka.topic,
        [DLQ_HEADERS.firstFailure]: now,
        [DLQ_HEADERS.lastFailure]: now,
      },
    });
    this.opts.metrics.dlqMessages.inc({ table: change.table, error_class: 'MessageTooLarge' });
    await this.sendBatch([{ ...change, value }]);
  }

  /** Sends one message to another topic (the DLQ), retrying outages like the change topic. */
  private async sendRaw(topic: string, message: Message): Promise<void> {
    await retry(
      async () => {
        try {
          await this.producer.send({ topic, messages: [message], acks: -1 });
        } catch (err) {
          if (needsNewProducer(err)) await this.replaceProducer(err);
          throw classifyKafkaError(err, `publishing to ${topic}`);
        }
      },
      this.backoff,
      { aborted: () => this.abandoned },
    );
  }

  /**
   * The idempotent producer's sequence no longer matches the broker's (OUT_OF_ORDER_SEQUENCE_NUMBER,
   * UNKNOWN_PRODUCER_ID): only a new producer, with a new id, can send again. Resending the batch
   * may duplicate it, which is harmless downstream.
   */
  private async replaceProducer(err: unknown): Promise<void> {
    this.log.warn({ err: errorText(err) }, 'the idempotent producer lost its sequence; replacing it');
    const old = this.producer;
    this.producer = this.newProducer();
    await old.disconnect().catch(() => undefined);
    await this.producer.connect();
  }

  /** Stores the acknowledged checkpoint, at most once a second unless forced; `must` retries until stored. */
  private async maybeSaveCheckpoint(force: boolean, must = false): Promise<void> {
    const cp = this.acked;
    if (!cp) return;
    const key = `${cp.epoch}:${cp.server ?? ''}:${cp.file}:${cp.pos}:${cp.gtidSet ?? ''}`;
    if (key === this.savedVersion) return;
    if (!force && Date.now() - this.lastSavedAtMs < COMMIT_SAVE_INTERVAL_MS) return;
    const toSave = { ...cp, savedAtMs: Date.now() };
    try {
      await retry(() => this.checkpoints.save(toSave), this.backoff, {
        maxAttempts: must ? undefined : 1,
        aborted: () => this.abandoned,
      });
    } catch (err) {
      if (must) throw err;
      // Not fatal: the next save covers it, and a restart from an older point only repeats changes.
      this.log.warn({ err: errorText(err) }, 'could not store the checkpoint; will retry');
      return;
    }
    this.savedVersion = key;
    this.lastSavedAtMs = toSave.savedAtMs;
    this.opts.metrics.checkpointTimestamp.set(cp.commitTsMs / 1000);
    this.opts.metrics.checkpointPosition.set({ part: 'file' }, binlogFileIndex(cp.file));
    this.opts.metrics.checkpointPosition.set({ part: 'offset' }, cp.pos);
    this.log.debug({ file: cp.file, pos: cp.pos, gtid: cp.gtidSet }, 'checkpoint stored');
  }
}

/**
 * The change with only its primary key and the columns its keys are rendered from, marked
 * `oversized`: enough for a consumer to delete every key the full change would have touched.
 */
function oversizedEvent(event: ChangeEvent, columns: ReadonlySet<string>): ChangeEvent {
  const keep = (row: Row | null): Row | null => {
    if (!row) return row;
    const out: Record<string, unknown> = {};
    for (const c of [...Object.keys(event.pk), ...columns]) if (c in row) out[c] = row[c];
    return out;
  };
  return { ...event, before: keep(event.before), after: keep(event.after), oversized: true };
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

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
