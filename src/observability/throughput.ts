/** Events per second over a sliding window, sampled from a monotonically growing total. */
export class ThroughputMeter {
  private readonly samples: { at: number; total: number }[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly readTotal: () => Promise<number> | number,
    private readonly windowMs = 5_000,
  ) {}

  start(): void {
    this.timer = setInterval(async () => {
      const now = Date.now();
      this.samples.push({ at: now, total: await this.readTotal() });
      while (this.samples.length > 2 && this.samples[0].at < now - this.windowMs) this.samples.shift();
    }, 500);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  get perSecond(): number {
    if (this.samples.length < 2) return 0;
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    return last.at === first.at ? 0 : ((last.total - first.total) * 1000) / (last.at - first.at);
  }
}
