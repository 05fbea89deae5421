-- high_value: customers of the newest engagement run predicted to be daily-active on at least 70% of
-- the next 30 days and spending at least 100 USD a month on gigs: who to keep happy.
-- Standard SQL: runs as is on DuckDB (`stagewise query`) and Athena (Trino).
SELECT customer_id_hash, run_date, model_version, prediction, transaction_revenue_month, subscription_tier, country
FROM engagement_results
WHERE run_id = (SELECT max(run_id) FROM engagement_results)
  AND prediction >= 0.7
  AND transaction_revenue_month >= 100
ORDER BY transaction_revenue_month DESC
