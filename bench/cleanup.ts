/** Cleanup steps, run once, newest first, each whatever the others did. */
export class Cleanup {
  private readonly steps: Array<{ what: string; run: () => Promise<unknown> }> = [];
  private running: Promise<void> | undefined;

  constructor(private readonly warn: (msg: string) => void) {}

  add(what: string, run: () => Promise<unknown>): void {
    this.steps.push({ what, run });
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of [...this.steps].reverse()) {
        try {
          await step.run();
        } catch (err) {
          this.warn(`cleanup (${step.what}) failed: ${(err as Error).message}`);
        }
      }
    })();
    return this.running;
  }
}
