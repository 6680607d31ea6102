-- Events and engaged seconds per event type per UTC hour.
SELECT
  strftime(date_trunc('hour', timezone('UTC', event_ts)), '%Y-%m-%d %H:00:00') AS hour_utc,
  coalesce(event_type, 'unknown') AS event_type,
  count(*) AS events,
  coalesce(sum(engagement_seconds), 0) AS engagement_seconds
FROM engagement.events_enriched
GROUP BY ALL
ORDER BY hour_utc, event_type;
