import client from 'prom-client';

/** How often the event-loop lag metrics sample the loop (see createMetrics). */
export const EVENT_LOOP_SAMPLE_MS = 100;

/**
 * The process's Prometheus metrics, in one registry. Components receive `Metrics` and
 * record into it; the HTTP server exposes it at /metrics and /api/stats reads it.
 */
export function createMetrics() {
  const registry = new client.Registry();
  // The event-loop lag histogram samples on a timer of its own. prom-client's default, every
  // 10 ms, was three quarters of an idle pipeline's wake-ups (133 -> 45 a second at 2 events/s)
  // and cost a bare Node process here 9 ms of CPU a second. A stall that matters (100 ms or
  // more) is still caught (bench/results/2026-12-02-fixed-costs-and-gc.md).
  client.collectDefaultMetrics({
    register: registry,
    // The defaults' names start process_ or nodejs_ already: engagement_process_cpu_seconds_total.
    prefix: 'engagement_',
    eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
  });
  const sinkLabels = ['sink'] as const;
  return {
    registry,
    eventsReceived: new client.Counter({
      name: 'engagement_events_received_total',
      help: 'engagement_events inserts read from the source',
      registers: [registry],
    }),
    eventsDelivered: new client.Counter({
      name: 'engagement_events_delivered_total',
      help: 'events durably accepted by a sink',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    batchesDelivered: new client.Counter({
      name: 'engagement_batches_delivered_total',
      help: 'batches durably accepted by a sink',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    sinkWriteSeconds: new client.Histogram({
      name: 'engagement_sink_write_seconds',
      help: 'time for a sink to accept one batch',
      labelNames: sinkLabels,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    commitToSinkSeconds: new client.Histogram({
      name: 'engagement_commit_to_sink_seconds',
      help: 'source commit -> sink acknowledgement, per event (batch max)',
      labelNames: sinkLabels,
      // Up to hours: a sink that was down for an hour must not show as "30 s".
      buckets: [
        0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400,
      ],
      registers: [registry],
    }),
    sinkErrors: new client.Counter({
      name: 'engagement_sink_errors_total',
      help: 'failed batch writes (retried)',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    sinkSpills: new client.Counter({
      name: 'engagement_sink_spills_total',
      help: 'times a slow sink that alone held the in-flight window set its unsent events aside in the dead-letter table (EXTERNAL_SPILL_AFTER)',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    sinkUp: new client.Gauge({
      name: 'engagement_sink_up',
      help: '1 while the sink is up or behind (engagement_sink_state), 0 during an outage (down: failing, retried; failed: needs an operator)',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    sinkLastSuccess: new client.Gauge({
      name: 'engagement_sink_last_success_timestamp_seconds',
      help: 'unix time of the last accepted batch',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    deadLetters: new client.Counter({
      name: 'engagement_dead_letters_total',
      help: 'events newly dead-lettered (an event already pending for the sink, retried or replayed, counts once)',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    externalRequests: new client.Counter({
      name: 'engagement_external_requests_total',
      help: 'HTTP requests to the external system by outcome',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    circuitOpen: new client.Gauge({
      name: 'engagement_external_circuit_open',
      help: '1 while the external circuit breaker is open',
      registers: [registry],
    }),
    enrichmentIssues: new client.Counter({
      name: 'engagement_enrichment_issues_total',
      help: 'events whose derived fields are NULL for a bad input',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    ignoredChanges: new client.Counter({
      name: 'engagement_ignored_changes_total',
      help: 'updates/deletes/truncates of engagement_events (counted, not propagated)',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    badRows: new client.Counter({
      name: 'engagement_bad_rows_total',
      help: 'source rows that could not be decoded (dead-lettered)',
      registers: [registry],
    }),
    confirmedLsnBytes: new client.Gauge({
      name: 'engagement_confirmed_lsn_bytes',
      help: 'LSN confirmed to Postgres, as a byte position',
      registers: [registry],
    }),
    // The figures of `engagement status`, polled from Postgres by the running pipeline.
    slotActive: new client.Gauge({
      name: 'engagement_slot_active',
      help: '1 when the replication slot has a consumer attached',
      registers: [registry],
    }),
    slotInvalidated: new client.Gauge({
      name: 'engagement_slot_invalidated',
      help: '1 when the slot is missing or invalidated (wal_status lost): changes were lost, backfill needed',
      registers: [registry],
    }),
    slotLagBytes: new client.Gauge({
      name: 'engagement_slot_lag_bytes',
      help: 'pg_current_wal_lsn() minus the slot confirmed_flush_lsn',
      registers: [registry],
    }),
    slotLagSeconds: new client.Gauge({
      name: 'engagement_slot_lag_seconds',
      help: 'replay lag of the walsender (0 when caught up)',
      registers: [registry],
    }),
    slotRetainedBytes: new client.Gauge({
      name: 'engagement_slot_retained_wal_bytes',
      help: 'WAL kept for the slot: pg_current_wal_lsn() minus restart_lsn',
      registers: [registry],
    }),
    slotSafeWalSizeBytes: new client.Gauge({
      name: 'engagement_slot_safe_wal_size_bytes',
      help: 'WAL that may still be written before max_slot_wal_keep_size invalidates the slot (-1: no limit)',
      registers: [registry],
    }),
    sinkLagSeconds: new client.Gauge({
      name: 'engagement_sink_lag_seconds',
      help: 'now minus the commit time of the oldest event not yet accepted by the sink (0 when none pending), every second',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    sinkEventsReceived: new client.Counter({
      name: 'engagement_sink_events_received_total',
      help: 'events handed to a sink (accepted ones: engagement_events_delivered_total)',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    sinkState: new client.Gauge({
      name: 'engagement_sink_state',
      help: "1 for the sink's current state: up, behind (lag past LAG_WARN_SECONDS), down (retrying), failed (needs an operator)",
      labelNames: ['sink', 'state'] as const,
      registers: [registry],
    }),
    deadLettersPending: new client.Gauge({
      name: 'engagement_dead_letters_pending',
      help: 'dead letters not yet replayed (engagement dlq list)',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    deadLettersOldestSeconds: new client.Gauge({
      name: 'engagement_dead_letters_oldest_pending_seconds',
      help: 'age of the oldest pending dead letter (since its first failure; 0 when none)',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    deadLettersRedriven: new client.Counter({
      name: 'engagement_dead_letters_redriven_total',
      help: 'dead letters re-sent automatically and accepted (marked replayed)',
      labelNames: sinkLabels,
      registers: [registry],
    }),
    backfillsInProgress: new client.Gauge({
      name: 'engagement_backfills_in_progress',
      help: 'backfills not finished (running or killed and resumable)',
      registers: [registry],
    }),
    inFlightBatches: new client.Gauge({
      name: 'engagement_in_flight_batches',
      help: 'batches dispatched but not yet accepted by all sinks',
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
