import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** What this process used during one phase of the benchmark. */
/** How often the event loop is probed, ms; each probe that comes late records how late. */
const LOOP_PROBE_MS = 10;

export interface PhaseUsage {
  /** Peak resident set size, bytes (sampled). */
  peakRssBytes: number;
  /** User plus system CPU time, seconds. */
  cpuSeconds: number;
  wallSeconds: number;
  /**
   * How late timers fired, ms: time the event loop was busy with something else. The bench and
   * cachesync share this loop, so this is how much the bench's own timestamps may be late.
   */
  eventLoopDelayMs: { p50: number; p99: number; max: number };
}

/**
 * Samples this process's resident set size on a timer (keeping the peak) and measures CPU time
 * and event-loop delay, overall and per named phase. The timer is unref'd: it never holds the
 * process open.
 */
export class ProcessSampler {
  private timer: NodeJS.Timeout | undefined;
  private peak_ = 0;
  private current: { name: string; startedAt: number; cpu: NodeJS.CpuUsage; peakRss: number } | undefined;
  private loopDelay: IntervalHistogram | undefined;
  private readonly phases = new Map<string, PhaseUsage>();

  constructor(private readonly intervalMs = 100) {}

  /** Starts sampling; later samples count towards `phase` (and the overall peak). */
  start(phase: string): void {
    this.timer ??= setInterval(() => this.sample(), this.intervalMs).unref();
    this.enter(phase);
  }

  /** Ends the current phase and starts the next. */
  enter(phase: string): void {
    this.endPhase();
    this.loopDelay = monitorEventLoopDelay({ resolution: LOOP_PROBE_MS });
    this.loopDelay.enable();
    this.current = { name: phase, startedAt: performance.now(), cpu: process.cpuUsage(), peakRss: 0 };
    this.sample();
  }

  /** Ends the current phase and stops sampling. Idempotent. */
  stop(): void {
    this.endPhase();
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Peak RSS seen so far, bytes. */
  get peakRssBytes(): number {
    return this.peak_;
  }

  /** Usage of each phase that has ended, in the order they ran. */
  get usageByPhase(): Record<string, PhaseUsage> {
    return Object.fromEntries(this.phases);
  }

  private endPhase(): void {
    const phase = this.current;
    const delay = this.loopDelay;
    if (!phase || !delay) return;
    this.sample();
    delay.disable();
    const cpu = process.cpuUsage(phase.cpu);
    // The histogram holds the time between probes; the delay is what exceeds the probe interval.
    const ms = (ns: number) => Math.max(0, ns / 1e6 - LOOP_PROBE_MS);
    this.phases.set(phase.name, {
      peakRssBytes: phase.peakRss,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      wallSeconds: (performance.now() - phase.startedAt) / 1000,
      // With nothing recorded yet the histogram reports huge sentinels; count them as no delay.
      eventLoopDelayMs:
        delay.count > 0
          ? { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) }
          : { p50: 0, p99: 0, max: 0 },
    });
    this.current = undefined;
    this.loopDelay = undefined;
  }

  private sample(): void {
    const rss = process.memoryUsage.rss();
    this.peak_ = Math.max(this.peak_, rss);
    if (this.current) this.current.peakRss = Math.max(this.current.peakRss, rss);
  }
}
