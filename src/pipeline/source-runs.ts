/**
 * The events of one Kafka partition fetch, in order: copies dropped, the rest in runs of one
 * source (the Postgres cluster a native message names). Pure; the worker writes each run as
 * batches of its own.
 *
 * - A capture restart re-publishes from its last confirmed commit: copies carry positions at or
 *   below what the run already kept, and are dropped. Keeping positions strictly increasing also
 *   lets Redis trim a batch that straddles its watermark.
 * - Another cluster's positions (Postgres moved, capture restarted against it) do not compare
 *   with this one's: a new run starts, where nothing is taken for a copy of the old cluster's.
 * - Messages that name no cluster (a capture older than the field) and the upgraded capture's
 *   that follow them are the same cluster: one run, so the upgraded capture's copies still drop.
 */
export class SourceRuns {
  private readonly starts: { from: number; source: string | undefined }[] = [];
  private high = '';
  private kept = 0;

  /** True when the event at `position` from `source` is kept (it is then the next kept event). */
  keep(position: string, source: string | undefined): boolean {
    const run = this.starts.at(-1);
    if (!run || (run.source !== undefined && source !== undefined && run.source !== source)) {
      this.starts.push({ from: this.kept, source });
      this.high = '';
    } else if (run.source === undefined && source !== undefined) {
      run.source = source;
    }
    if (position <= this.high) return false;
    this.high = position;
    this.kept += 1;
    return true;
  }

  /** Each run as the range [from, to) of the kept events, with its source; empty runs left out. */
  runs(): { from: number; to: number; source: string | undefined }[] {
    return this.starts
      .map(({ from, source }, i) => ({ from, to: this.starts[i + 1]?.from ?? this.kept, source }))
      .filter((r) => r.to > r.from);
  }
}
