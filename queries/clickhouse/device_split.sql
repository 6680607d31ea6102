-- Share of events per device (NULL device counts as 'unknown', as on the live board).
SELECT
  ifNull(device, 'unknown') AS device,
  count() AS events,
  round(count() / sum(count()) OVER (), 4) AS share,
  round(avg(engagement_seconds), 3) AS avg_engagement_seconds
FROM engagement.events_enriched FINAL
GROUP BY device
ORDER BY events DESC, device;
