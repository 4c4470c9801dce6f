/**
 * Samples this process's resident set size on a timer and keeps the peak, overall and per named
 * phase. The timer is unref'd: it never holds the process open.
 */
export class RssSampler {
  private timer: NodeJS.Timeout | undefined;
  private phase_ = 'start-up';
  private peak_ = 0;
  private readonly peaks = new Map<string, number>();

  constructor(private readonly intervalMs = 100) {}

  start(): void {
    this.sample();
    this.timer ??= setInterval(() => this.sample(), this.intervalMs).unref();
  }

  /** Later samples count towards this phase (and the overall peak). */
  enter(phase: string): void {
    this.sample();
    this.phase_ = phase;
    this.sample();
  }

  stop(): void {
    this.sample();
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Peak RSS seen so far, bytes. */
  get peak(): number {
    return this.peak_;
  }

  /** Peak RSS of each phase entered, bytes, in the order the phases ran. */
  get peakByPhase(): Record<string, number> {
    return Object.fromEntries(this.peaks);
  }

  private sample(): void {
    const rss = process.memoryUsage.rss();
    this.peak_ = Math.max(this.peak_, rss);
    this.peaks.set(this.phase_, Math.max(this.peaks.get(this.phase_) ?? 0, rss));
  }
}
