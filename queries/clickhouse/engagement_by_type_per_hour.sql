-- Events and engaged seconds per event type per UTC hour (event_ts is DateTime64 in UTC).
SELECT
  formatDateTime(toStartOfHour(event_ts), '%Y-%m-%d %H:00:00', 'UTC') AS hour_utc,
  ifNull(event_type, 'unknown') AS event_type,
  count() AS events,
  ifNull(sum(engagement_seconds), 0) AS engagement_seconds
FROM engagement.events_enriched FINAL
GROUP BY hour_utc, event_type
ORDER BY hour_utc, event_type;
