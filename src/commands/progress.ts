/**
 * Progress of a long job: a line rewritten in place on a terminal, a plain log line every
 * `every` items otherwise.
 */
export class Progress {
  private count = 0;
  private lastDraw = 0;
  private readonly tty: boolean;

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly verb: string,
    private readonly every = 10_000,
  ) {
    this.tty = Boolean((out as NodeJS.WriteStream).isTTY);
  }

  tick(n = 1): void {
    this.count += n;
    if (this.tty) {
      const now = Date.now();
      if (now - this.lastDraw > 100) {
        this.out.write(`\r${this.verb} ${this.count}`);
        this.lastDraw = now;
      }
    } else if (Math.floor(this.count / this.every) > Math.floor((this.count - n) / this.every)) {
      this.out.write(`${this.verb} ${this.count}\n`);
    }
  }

  done(): void {
    if (this.tty && this.count > 0) this.out.write(`\r${this.verb} ${this.count}\n`);
  }
}
