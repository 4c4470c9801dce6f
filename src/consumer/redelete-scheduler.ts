import type { EventEmitter } from 'node:events';
import { errorMessage, isProgrammerError } from '../core/errors.js';
import { backoffDelay, pause, type BackoffPolicy } from '../core/retry.js';
import type { Logger } from '../observability/logger.js';
import { REDELETE_BATCH, type RedisApplier } from './redis-applier.js';

/** What the delayed-delete scheduler reports (the metrics module turns it into series). */
export interface RedeleteEvents {
  /** Due delayed deletes run in one round; sent only when some ran. */
  redeletesRun: [count: number];
  /** Delayed deletes scheduled and not yet run, as last read from Redis (0 if it could not be read). */
  redeletesPending: [count: number];
  /** The schedule is full: a partition waits another round for it to drain. */
  redeletesFull: [{ pending: number; max: number }];
}

export interface RedeleteSchedulerOptions {
  applier: Pick<RedisApplier, 'runDueRedeletes' | 'pendingRedeletes'>;
  /** Past this many scheduled deletes, partitions whose changes schedule more wait. */
  maxPending: number;
  /** Delay between runs of due delayed deletes. */
  pollMs: number;
  retryPolicy: BackoffPolicy;
  /** Aborted at close: the loop and every wait end at once. */
  signal: AbortSignal;
  logger: Logger;
  events: Pick<EventEmitter<RedeleteEvents>, 'emit'>;
  /** Told of a programmer error in the loop: the consumer stops for good. */
  fail: (err: unknown) => void;
}

/**
 * Runs the delayed deletes (`delayedRedelete`) as they come due, and keeps their schedule bounded:
 * a chunk that schedules more waits while it is full.
 */
export class RedeleteScheduler {
  private loop: Promise<void> | undefined;

  constructor(private readonly opts: RedeleteSchedulerOptions) {}

  /** Starts running due deletes; they need only Redis, not the consumer group. Idempotent. */
  start(): void {
    this.loop ??= this.run();
  }

  /** Settles once the loop has ended (the signal aborted), or at once if it never started. */
  stopped(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  /**
   * Holds the partition while the delayed-delete schedule is full, so it stays bounded; the
   * schedule drains as its deletes come due. Returns false if stopped meanwhile.
   */
  async waitForRoom(heartbeat: () => Promise<void>, live: () => boolean): Promise<boolean> {
    const { applier, maxPending: max, events } = this.opts;
    for (let attempt = 1; ; attempt++) {
      const pending = await applier.pendingRedeletes().catch(() => 0);
      events.emit('redeletesPending', pending);
      if (pending < max) return true;
      if (!live()) return false;
      if (attempt === 1)
        this.opts.logger.warn({ pending, max }, 'delayed-delete schedule full; waiting for it to drain');
      events.emit('redeletesFull', { pending, max });
      if (!(await pause(backoffDelay(this.opts.retryPolicy, attempt), this.opts.signal))) return false;
      await heartbeat().catch(() => undefined);
    }
  }

  private async run(): Promise<void> {
    const { applier, events } = this.opts;
    let lastGauge = 0;
    do {
      try {
        // Everything due in this poll, a batch per round trip: the schedule drains as fast as it fills.
        let ran = 0;
        for (let round = REDELETE_BATCH; round === REDELETE_BATCH && !this.opts.signal.aborted;) {
          round = await applier.runDueRedeletes();
          ran += round;
        }
        if (ran > 0) events.emit('redeletesRun', ran);
        if (Date.now() - lastGauge > 1000) {
          events.emit('redeletesPending', await applier.pendingRedeletes());
          lastGauge = Date.now();
        }
      } catch (err) {
        if (isProgrammerError(err)) {
          this.opts.fail(err);
          return;
        }
        this.opts.logger.debug({ err: errorMessage(err) }, 'delayed deletes not run; Redis unavailable');
      }
    } while (await pause(this.opts.pollMs, this.opts.signal));
  }
}
