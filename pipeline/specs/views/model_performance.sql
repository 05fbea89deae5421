-- model_performance: per run date and model version, the rows scored and their mean prediction, and
-- on the labelled rows the version did NOT train on (in_training = false; rows it trained on are
-- never evidence): how many, MAE, RMSE and R^2 (1 - SSE / (sum(y^2) - sum(y)^2 / n)).
-- Standard SQL: runs as is on DuckDB (`stagewise query`) and Athena (Trino).
SELECT run_date, model_version,
       count(*) AS rows_scored,
       avg(prediction) AS mean_prediction,
       sum(CASE WHEN in_training = false AND engagement_score IS NOT NULL THEN 1 ELSE 0 END) AS labeled,
       avg(CASE WHEN in_training = false THEN abs(prediction - engagement_score) END) AS mae,
       sqrt(avg(CASE WHEN in_training = false THEN (prediction - engagement_score) * (prediction - engagement_score) END)) AS rmse,
       1 - sum(CASE WHEN in_training = false THEN (prediction - engagement_score) * (prediction - engagement_score) END)
         / nullif(sum(CASE WHEN in_training = false THEN engagement_score * engagement_score END)
                  - sum(CASE WHEN in_training = false THEN engagement_score END)
                    * sum(CASE WHEN in_training = false THEN engagement_score END)
                    / count(CASE WHEN in_training = false THEN engagement_score END), 0) AS r2
FROM engagement_results
GROUP BY run_date, model_version
ORDER BY run_date, model_version
