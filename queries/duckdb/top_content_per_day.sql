-- The 10 most-engaged content items (by events) per UTC day; ties broken by content_id.
WITH per_day AS (
  SELECT
    CAST(timezone('UTC', event_ts) AS DATE)::VARCHAR AS day_utc,
    content_id::VARCHAR AS content_id,
    any_value(content_type) AS content_type,
    count(*) AS events,
    coalesce(sum(engagement_seconds), 0) AS engagement_seconds
  FROM engagement.events_enriched
  WHERE content_id IS NOT NULL
  GROUP BY ALL
)
SELECT
  day_utc,
  row_number() OVER (PARTITION BY day_utc ORDER BY events DESC, content_id) AS rank,
  content_id,
  content_type,
  events,
  engagement_seconds
FROM per_day
QUALIFY rank <= 10
ORDER BY day_utc, rank;
