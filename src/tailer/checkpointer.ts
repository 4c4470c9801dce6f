import type { Logger } from '../observability/logger.js';
import { retry, type BackoffPolicy } from '../core/retry.js';
import type { Checkpoint, CheckpointStore } from './checkpoint-store.js';

export interface CheckpointerEvents {
  /** A checkpoint was stored: everything before it is acknowledged by Kafka. */
  checkpointSaved: [Checkpoint];
}

const SAVE_INTERVAL_MS = 1000;

/**
 * The tailer's checkpoint: the last transaction boundary whose changes Kafka has all acknowledged,
 * stored at most once a second (and when forced: at the first start and at shutdown).
 */
export class Checkpointer {
  private acked_: Checkpoint | undefined;
  private savedKey: string | undefined;
  private lastSavedAtMs = 0;

  constructor(
    private readonly opts: {
      store: CheckpointStore;
      initial: Checkpoint | undefined;
      backoff: BackoffPolicy;
      logger: Logger;
      events: { emit(name: 'checkpointSaved', checkpoint: Checkpoint): unknown };
      /** True once the tailer gave up on a graceful stop: saves stop retrying. */
      abandoned: () => boolean;
    },
  ) {
    this.acked_ = opts.initial;
  }

  /** The last acknowledged boundary (stored, or to be stored by the next save). */
  get acked(): Checkpoint | undefined {
    return this.acked_;
  }

  /** Everything before `checkpoint` is acknowledged. */
  advance(checkpoint: Checkpoint): void {
    this.acked_ = checkpoint;
  }

  /**
   * Stores the acknowledged checkpoint, at most once a second unless forced. `must` retries until
   * it is stored (or the tailer is abandoned); otherwise a failure is logged and the next save
   * covers it, since a restart from an older point only repeats changes.
   */
  async save(force: boolean, must = false): Promise<void> {
    const cp = this.acked_;
    if (!cp) return;
    const key = `${cp.epoch}:${cp.server ?? ''}:${cp.file}:${cp.pos}:${cp.gtidSet ?? ''}`;
    if (key === this.savedKey) return;
    if (!force && Date.now() - this.lastSavedAtMs < SAVE_INTERVAL_MS) return;
    const toSave = { ...cp, savedAtMs: Date.now() };
    try {
      await retry(() => this.opts.store.save(toSave), this.opts.backoff, {
        maxAttempts: must ? undefined : 1,
        aborted: this.opts.abandoned,
      });
    } catch (err) {
      if (must) throw err;
      this.opts.logger.warn(
        { err: err instanceof Error ? err.message : String(err) },
        'could not store the checkpoint; will retry',
      );
      return;
    }
    this.savedKey = key;
    this.lastSavedAtMs = toSave.savedAtMs;
    this.opts.events.emit('checkpointSaved', cp);
    this.opts.logger.debug({ file: cp.file, pos: cp.pos, gtid: cp.gtidSet }, 'checkpoint stored');
  }

  close(): Promise<void> {
    return this.opts.store.close();
  }
}
