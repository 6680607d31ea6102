-- The 10 most-engaged content items (by events) per UTC day; ties broken by content_id.
-- LIMIT n BY is ClickHouse's cheap top-n-per-group.
SELECT
  toString(toDate(event_ts, 'UTC')) AS day_utc,
  row_number() OVER (PARTITION BY day_utc ORDER BY events DESC, content_id) AS rank,
  toString(content_id) AS content_id,
  any(content_type) AS content_type,
  count() AS events,
  ifNull(sum(engagement_seconds), 0) AS engagement_seconds
FROM engagement.events_enriched FINAL
WHERE content_id IS NOT NULL
GROUP BY day_utc, content_id
ORDER BY day_utc, events DESC, content_id
LIMIT 10 BY day_utc;
