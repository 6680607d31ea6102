-- Average engagement (engagement_pct: fraction of the content's length) per content item.
-- Events with unknown content or NULL engagement_pct are left out of the average, not counted as 0.
-- Add `WHERE event_ts >= now() - INTERVAL 30 DAY` to look at a recent window.
SELECT
  content_id::VARCHAR AS content_id,
  any_value(content_type) AS content_type,
  count(*) AS events,
  count(engagement_pct) AS events_with_pct,
  round(avg(engagement_pct), 4) AS avg_engagement_pct
FROM engagement.events_enriched
WHERE content_id IS NOT NULL
GROUP BY content_id
ORDER BY avg_engagement_pct DESC NULLS LAST, content_id;
