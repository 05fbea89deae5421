-- model_performance: per run date and model version, the rows scored, the mean prediction and, on
-- the rows that carry the label, MAE, RMSE and R^2 (1 - SSE / (sum(y^2) - sum(y)^2 / n)).
-- Standard SQL: runs as is on DuckDB (`stagewise query`) and Athena (Trino).
SELECT run_date, model_version,
       count(*) AS rows_scored,
       avg(prediction) AS mean_prediction,
       count(engagement_score) AS labeled,
       avg(abs(prediction - engagement_score)) AS mae,
       sqrt(avg((prediction - engagement_score) * (prediction - engagement_score))) AS rmse,
       1 - sum((prediction - engagement_score) * (prediction - engagement_score))
         / nullif(sum(engagement_score * engagement_score) - sum(engagement_score) * sum(engagement_score) / count(engagement_score), 0) AS r2
FROM engagement_results
GROUP BY run_date, model_version
ORDER BY run_date, model_version
