-- churn_performance: per run date and model version, on the labelled rows the version did not train
-- on (in_training = false): rows, churners, flagged (the version's decision), precision and recall of
-- the decision, and the mean predicted probability beside the churn rate (calibration at a glance).
-- Standard SQL: runs as is on DuckDB (`stagewise query`) and Athena (Trino).
SELECT run_date, model_version,
       count(*) AS rows_evaluated,
       sum(CASE WHEN churned_30d = 1 THEN 1 ELSE 0 END) AS churners,
       sum(CASE WHEN decision THEN 1 ELSE 0 END) AS flagged,
       sum(CASE WHEN decision AND churned_30d = 1 THEN 1 ELSE 0 END) * 1.0
         / nullif(sum(CASE WHEN decision THEN 1 ELSE 0 END), 0) AS precision,
       sum(CASE WHEN decision AND churned_30d = 1 THEN 1 ELSE 0 END) * 1.0
         / nullif(sum(CASE WHEN churned_30d = 1 THEN 1 ELSE 0 END), 0) AS recall,
       avg(prediction) AS mean_probability,
       avg(churned_30d) AS churn_rate
FROM churn_results
WHERE in_training = false AND churned_30d IS NOT NULL
GROUP BY run_date, model_version
ORDER BY run_date, model_version
