-- Share of events per device (NULL device counts as 'unknown', as on the live board).
SELECT
  IFNULL(device, 'unknown') AS device,
  COUNT(*) AS events,
  ROUND(COUNT(*) / SUM(COUNT(*)) OVER (), 4) AS share,
  ROUND(AVG(engagement_seconds), 3) AS avg_engagement_seconds
FROM events_enriched_unique
GROUP BY device
ORDER BY events DESC, device;
