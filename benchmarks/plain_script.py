"""The floor `stagewise run` is measured against: a plain Python script doing the same work.

Read the Parquet input, run the same expectation suite through Great Expectations with Data Docs,
fit XGBoost on 80% of the rows with the spec's hyperparameters, compute the holdout metrics,
predict every row and write the predictions as Parquet. No AWS, no registry, no drift, no review
queue, no uploads: what a data scientist would write by hand. ``benchmarks/pipeline.py`` times it
as a whole process beside ``stagewise run`` on the same file.

    .venv/bin/python benchmarks/plain_script.py data/customers.parquet /tmp/out
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main(data: Path, out: Path) -> None:
    import numpy as np
    import pandas as pd

    from stagewise.pipeline import modeling
    from stagewise.pipeline.spec import load_spec
    from stagewise.pipeline.validation import validate_frame

    spec = load_spec("engagement")
    df = pd.read_parquet(data)
    df = modeling.conform(df.drop(columns=[c for c in spec.ignored_columns if c in df.columns]), spec)  # another model's label
    report = validate_frame(df, spec, out / "data-docs")
    if not report.success:
        raise SystemExit(f"validation failed: {report.failed[:3]}")
    X = modeling.feature_matrix(df, spec)
    y = df[spec.target.name].to_numpy(dtype="float64")
    order = np.random.default_rng(42).permutation(len(df))
    cut = int(len(df) * 0.8)
    train, hold = order[:cut], order[cut:]
    model = modeling.train_model(X.iloc[train], y[train], spec)
    metrics = modeling.holdout_metrics(y[hold], modeling.predict(model, X.iloc[hold], spec), spec.task)
    predictions = pd.DataFrame({"prediction": modeling.predict(model, X, spec)})
    predictions.to_parquet(out / "predictions.parquet", index=False)
    print({k: round(float(v), 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp()))
