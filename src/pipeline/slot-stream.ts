import type { Logger } from '../logger.js';
import { ReplicationSource, type ReplicationSourceOptions } from '../source/replication-source.js';
import { withDeadline, type ShutdownTimes } from './deadline.js';
import type { Dispatcher, DispatcherStopReport, DispatchUnit } from './dispatcher.js';
import type { TransactionAssembler } from './transaction-assembler.js';

/**
 * The front of every slot-fed mode (direct mode and `capture`): the replication source
 * feeding an assembler, whose batches a Dispatcher hands to the destinations and whose
 * positions the Dispatcher's Checkpoint confirms back to the source.
 */

/** What the source needs besides the assembler; `onHalt` is told after the open batch was handed on. */
export type SlotSourceOptions = Pick<
  ReplicationSourceOptions,
  'databaseUrl' | 'slotName' | 'publicationName' | 'shape' | 'logger' | 'metrics' | 'onHalt'
> & {
  /** SHUTDOWN_TIMEOUT_MS: a predecessor still stopping releases the slot within it. */
  shutdownTimeoutMs?: number;
};

/** How long past SHUTDOWN_TIMEOUT_MS a busy slot is waited for (a predecessor's exit and reap). */
const SLOT_RELEASE_GRACE_MS = 10_000;

/** The replication source wired to the assembler it feeds. */
export function slotSource<B extends DispatchUnit>(
  options: SlotSourceOptions,
  assembler: TransactionAssembler<B>,
): ReplicationSource {
  return new ReplicationSource({
    databaseUrl: options.databaseUrl,
    slotName: options.slotName,
    publicationName: options.publicationName,
    shape: options.shape,
    logger: options.logger,
    metrics: options.metrics,
    slotBusyWaitMs: (options.shutdownTimeoutMs ?? 20_000) + SLOT_RELEASE_GRACE_MS,
    onDisconnect: async () => {
      // The source replays from the confirmed commit: a half-read transaction starts over.
      assembler.resetTransaction();
      assembler.kick();
    },
    isDrained: () => assembler.isDrained(),
    onHalt: (error) => {
      // Hand on the complete transactions before the halt point; nothing after it.
      assembler.kick();
      options.onHalt?.(error);
    },
  });
}

/**
 * The first half of a slot-fed mode's stop(): stops taking changes, hands on what is open and
 * waits for the destinations until `drainBy` (then `afterDrain` may cancel what is left),
 * and stops streaming by `deadline`. What was not confirmed replays on the next start.
 */
export async function drainSlotStream<B extends DispatchUnit>(
  parts: {
    assembler: TransactionAssembler<B>;
    dispatcher: Dispatcher<B>;
    source: ReplicationSource;
    logger: Logger;
  },
  times: ShutdownTimes,
  afterDrain: (report: DispatcherStopReport) => void,
): Promise<DispatcherStopReport> {
  parts.assembler.close();
  const report = await parts.dispatcher.stop(times.drainBy);
  afterDrain(report);
  await withDeadline(parts.source.stop(), times.deadline, () =>
    parts.logger.warn('shutdown: replication stream did not close in time'),
  );
  return report;
}
