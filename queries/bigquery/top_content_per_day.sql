-- The 10 most-engaged content items (by events) per UTC day; ties broken by content_id.
SELECT
  CAST(DATE(event_ts, 'UTC') AS STRING) AS day_utc,
  ROW_NUMBER() OVER (PARTITION BY DATE(event_ts, 'UTC') ORDER BY COUNT(*) DESC, content_id) AS rank,
  content_id,
  ANY_VALUE(content_type) AS content_type,
  COUNT(*) AS events,
  IFNULL(SUM(engagement_seconds), 0) AS engagement_seconds
FROM events_enriched_unique
WHERE content_id IS NOT NULL
GROUP BY day_utc, content_id, DATE(event_ts, 'UTC')
QUALIFY rank <= 10
ORDER BY day_utc, rank;
