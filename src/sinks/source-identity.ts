import { describeError, type ErrorCode, PipelineError } from '../errors.js';

/**
 * The one stream whose positions recognise replays (direct mode: the replication slot) and how
 * to learn its source's identity (the Postgres system identifier). A sink stores the identity
 * with the stream's position, so that a position written for another source (Postgres
 * dump/restored into a new cluster, whose LSNs restart lower) is never compared with this one's.
 */
export interface PositionedStream {
  stream: string;
  sourceId: () => Promise<string>;
}

/** The positioned stream's identity, read once per process. */
export class SourceIdentity {
  private id: string | null = null;

  /** `failure`: the code and sink named when the identity cannot be read (a transient error). */
  constructor(
    private readonly positioned: PositionedStream | undefined,
    private readonly failure: { code: ErrorCode; sink: string },
  ) {}

  /** The identity when `stream` is the positioned stream, else null (its batches have none). */
  async of(stream: string): Promise<string | null> {
    const positioned = this.positioned;
    if (!positioned || positioned.stream !== stream) return null;
    if (this.id === null) {
      try {
        this.id = await positioned.sourceId();
      } catch (err) {
        throw new PipelineError(
          this.failure.code,
          `${this.failure.sink} sink: cannot read the source's identity: ${describeError(err)}`,
          'transient',
          undefined,
          { cause: err },
        );
      }
    }
    return this.id;
  }
}
