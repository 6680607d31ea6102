-- Average engagement (engagement_pct: fraction of the content's length) per content item.
-- Run with the dataset as default: bq query --use_legacy_sql=false --dataset_id=PROJECT:DATASET < this.sql
-- events_enriched_unique: one row per event_id (insertId dedup alone is best-effort).
-- Add `AND event_ts >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 30 DAY)`: the table is
-- partitioned by DATE(event_ts), so a time filter limits the bytes scanned (and billed).
SELECT
  content_id,
  ANY_VALUE(content_type) AS content_type,
  COUNT(*) AS events,
  COUNT(engagement_pct) AS events_with_pct,
  ROUND(AVG(engagement_pct), 4) AS avg_engagement_pct
FROM events_enriched_unique
WHERE content_id IS NOT NULL
GROUP BY content_id
ORDER BY avg_engagement_pct DESC NULLS LAST, content_id;
