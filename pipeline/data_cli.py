"""``stagewise data``: make the synthetic customer tables (``stagewise.pipeline.generator``)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from stagewise.platform.cli import JSON_OPT, emit_json, err, fail, handles_errors, out
from stagewise.platform.contract import ExitCode

data_app = typer.Typer(help="Datasets: the synthetic customer-engagement generator.", no_args_is_help=True)


@data_app.command("generate")
@handles_errors
def data_generate(
    rows: int = typer.Option(100_000, "--rows", "-n", min=1, help="Number of customers."),
    seed: int = typer.Option(7, "--seed", help="Random seed: the same seed gives the same file."),
    out_path: Path = typer.Option(Path("data/customers.parquet"), "--out", "-o", help="Output parquet file."),
    label_noise: float = typer.Option(0.0, "--label-noise", min=0.0, max=1.0,
                                      help="Share of rows whose label is replaced by noise (labels broken upstream)."),
    drift: str = typer.Option("", "--drift", help="Covariate shift FEATURE=SHIFT,...: numeric features move SHIFT "
                              "standard deviations; categorical/boolean ones get a SHIFT share of rows set to their last value."),
    as_json: bool = JSON_OPT,
) -> None:
    """Generate the customer-engagement dataset of a hybrid social/gig app (parquet).

    Examples:

      stagewise data generate --rows 100000 --out data/customers.parquet
      stagewise data generate --seed 9 --drift sessions_per_week=0.8 --out drifted.parquet
    """
    from stagewise.pipeline.generator import (  # deferred: numpy, pandas and pyarrow (~0.4 s)
        best_achievable_r2, generate_customers, parse_drift, with_drift, with_label_noise, write_dataset,
    )

    try:
        shifts = parse_drift(drift)
    except ValueError as e:
        fail(str(e), ExitCode.BAD_INPUT, as_json)

    t = time.perf_counter()
    with err.status(f"generating {rows:,} customers (seed {seed})"):
        df = generate_customers(rows, seed)
        if label_noise:
            df = with_label_noise(df, label_noise, seed)
        if shifts:
            df = with_drift(df, shifts, seed)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        digest = write_dataset(df, out_path)
    doc = {
        "path": str(out_path), "rows": len(df), "columns": len(df.columns), "seed": seed, "sha256": digest,
        "bytes": out_path.stat().st_size, "best_achievable_r2": round(best_achievable_r2(df), 4),
        "seconds": round(time.perf_counter() - t, 2),
    }
    if as_json:
        emit_json(doc)
    else:
        out.print(f"wrote {doc['rows']:,} rows x {doc['columns']} columns to [bold]{out_path}[/] "
                  f"({doc['bytes'] / 1e6:.1f} MB, sha256 {digest[:12]}…) in {doc['seconds']} s; "
                  f"best achievable R² {doc['best_achievable_r2']}")
