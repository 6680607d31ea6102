/**
 * Backfill progress: a redrawn bar with rows/s and ETA on a terminal, plain lines (at most
 * one every few seconds) when output goes to a file or a pipe, so logs stay readable.
 */
export class ProgressReporter {
  private lastLineAt = 0;

  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly tty = Boolean(process.stderr.isTTY),
    private readonly lineEveryMs = 2_000,
  ) {}

  update(p: {
    rowsDone: number;
    rowsTotal: number;
    resumedFrom: number;
    elapsedMs: number;
    done: boolean;
  }): void {
    const rate = p.elapsedMs > 0 ? ((p.rowsDone - p.resumedFrom) / p.elapsedMs) * 1000 : 0;
    const fraction = p.rowsTotal > 0 ? Math.min(1, p.rowsDone / p.rowsTotal) : p.done ? 1 : 0;
    const left = Math.max(0, p.rowsTotal - p.rowsDone);
    const eta = p.done ? 'done' : rate > 0 ? `ETA ${formatDuration(left / rate)}` : 'ETA --';
    const figures = `${fmt(p.rowsDone)}/${fmt(p.rowsTotal)} rows  ${fmt(Math.round(rate))} rows/s  ${eta}`;
    if (this.tty) {
      const width = 30;
      const filled = Math.round(fraction * width);
      const bar = `[${'='.repeat(filled)}${filled < width ? '>' : ''}${' '.repeat(Math.max(0, width - filled - 1))}]`;
      this.out.write(
        `\r${bar} ${(fraction * 100).toFixed(1).padStart(5)}%  ${figures}\x1b[K${p.done ? '\n' : ''}`,
      );
      return;
    }
    const now = Date.now();
    if (!p.done && now - this.lastLineAt < this.lineEveryMs) return;
    this.lastLineAt = now;
    this.out.write(`backfill: ${(fraction * 100).toFixed(1)}%  ${figures}\n`);
  }
}

function fmt(n: number): string {
  return n.toLocaleString('en-US');
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
