/**
 * Progress of a long job: a line rewritten in place on a terminal (count, rate and, when the total
 * is known, an ETA), a plain log line every `every` items otherwise.
 */
export class Progress {
  private count = 0;
  private lastDraw = 0;
  private readonly startedAt = Date.now();
  private readonly tty: boolean;

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly verb: string,
    private readonly every = 10_000,
    /** Expected number of items (an estimate is fine), for the ETA. */
    private readonly total?: number,
  ) {
    this.tty = Boolean((out as NodeJS.WriteStream).isTTY);
  }

  tick(n = 1): void {
    this.count += n;
    if (this.tty) {
      const now = Date.now();
      if (now - this.lastDraw > 100) {
        this.out.write(`\r${this.line()}\x1b[K`);
        this.lastDraw = now;
      }
    } else if (Math.floor(this.count / this.every) > Math.floor((this.count - n) / this.every)) {
      this.out.write(`${this.line()}\n`);
    }
  }

  done(): void {
    if (this.tty && this.count > 0) this.out.write(`\r${this.line()}\x1b[K\n`);
  }

  private line(): string {
    const seconds = (Date.now() - this.startedAt) / 1000;
    if (!this.total && seconds < 1) return `${this.verb} ${this.count}`;
    const rate = seconds > 0 ? this.count / seconds : 0;
    let text = `${this.verb} ${this.count}`;
    if (this.total && this.total > this.count) text += ` of ~${this.total}`;
    if (seconds >= 1) text += `, ${Math.round(rate)}/s`;
    if (this.total && rate > 0 && this.total > this.count) {
      text += `, ETA ${formatSeconds((this.total - this.count) / rate)}`;
    }
    return text;
  }
}

function formatSeconds(s: number): string {
  if (s < 60) return `${Math.ceil(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
