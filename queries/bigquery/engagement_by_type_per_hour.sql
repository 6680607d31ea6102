-- Events and engaged seconds per event type per UTC hour.
SELECT
  FORMAT_TIMESTAMP('%Y-%m-%d %H:00:00', TIMESTAMP_TRUNC(event_ts, HOUR, 'UTC'), 'UTC') AS hour_utc,
  IFNULL(event_type, 'unknown') AS event_type,
  COUNT(*) AS events,
  IFNULL(SUM(engagement_seconds), 0) AS engagement_seconds
FROM events_enriched_unique
GROUP BY hour_utc, event_type
ORDER BY hour_utc, event_type;
