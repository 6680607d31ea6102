import { enrichedEvent, enrichesCleanly, enrichmentIssues } from '../domain/enrich.js';
import type { EngagementEventRow, EnrichedEvent } from '../domain/types.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { ContentDimension } from './content-dimension.js';

/**
 * enrich() against the content dimension, with its issues counted (metric) and a negative
 * duration logged: the one way the stream, the Kafka workers and anything else enrich an event.
 */
export function enrichCounted(
  row: EngagementEventRow,
  dimension: ContentDimension,
  committedAt: string,
  processedAt: string,
  metrics: Metrics,
  logger: Logger,
): EnrichedEvent {
  const content = row.content_id === null ? undefined : (dimension.peek(row.content_id) ?? undefined);
  const event = enrichedEvent(row, content, committedAt, processedAt);
  if (enrichesCleanly(row, content)) return event;
  for (const reason of enrichmentIssues(row, content)) {
    metrics.enrichmentIssues.inc({ reason });
    if (reason === 'negative_duration') {
      logger.warn(
        { event_id: row.id, duration_ms: row.duration_ms },
        'negative duration_ms: derived fields set to NULL',
      );
    }
  }
  return event;
}
