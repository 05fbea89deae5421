-- at_risk: customers of the newest engagement run who were active on at least 10 of the last 30
-- days but are predicted to be active on fewer than 30% of the next 30: a falling-off to act on.
-- Standard SQL: runs as is on DuckDB (`stagewise query`) and Athena (Trino).
SELECT customer_id_hash, run_date, model_version, prediction, days_active_last_30, days_since_last_login,
       sessions_per_week, subscription_tier
FROM engagement_results
WHERE run_id = (SELECT max(run_id) FROM engagement_results)
  AND days_active_last_30 >= 10
  AND prediction < 0.3
ORDER BY prediction ASC, days_active_last_30 DESC
