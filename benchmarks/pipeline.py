"""Benchmark: the local pipeline against XGBoost alone, per step, on this machine.

Not a test: it prints figures. In one process, for each size it generates the dataset, runs every
step of the local pipeline against a private embedded AWS, then times XGBoost's own ``fit`` (same
train split, same hyperparameters) and ``predict`` (every row) on the same data, and prints

    step | seconds | rows/s | peak RSS (MiB)

and the ratio ``pipeline wall / (fit + predict)`` (imports excluded: they happen before timing).
The CLI's cold start (process start to the first step) is measured separately with the modules
that cost the most to import (``python -X importtime``).

    .venv/bin/python benchmarks/pipeline.py                  # 100,000 and 1,000,000 rows
    .venv/bin/python benchmarks/pipeline.py --sizes 100000   # one size
    .venv/bin/python benchmarks/pipeline.py --json           # one JSON document

Targets (issue 7): ratio <= 1.5 at 100,000 rows and <= 1.25 at 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class PeakRSS:
    """Samples this process's resident set size every 20 ms (``/proc/self/statm``); ``peak`` in MiB."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.02)

    def reset(self) -> None:
        self.peak = self.current()

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_size(rows: int, rss: PeakRSS, home: Path) -> dict:
    """Run the pipeline and XGBoost alone on ``rows`` customers; per-step seconds and peak RSS."""
    import numpy as np

    from stagewise.pipeline import modeling
    from stagewise.pipeline.definition import PIPELINE
    from stagewise.pipeline.generator import generate_customers, write_dataset
    from stagewise.pipeline.runner import new_run_id, run_pipeline
    from stagewise.pipeline.spec import load_spec
    from stagewise.pipeline.steps import RunContext
    from stagewise.platform.environment import connect

    data = home / f"customers-{rows}.parquet"
    t = time.perf_counter()
    write_dataset(generate_customers(rows, seed=rows % 1000 + 1), data)
    generate_s = time.perf_counter() - t
    spec = load_spec("engagement")
    conn = connect("dev", project_dir=REPO, start_embedded=True, provision=True)
    run_id = new_run_id()
    workdir = home / "runs" / run_id
    workdir.mkdir(parents=True)
    ctx = RunContext(run_id=run_id, settings=conn.settings, resources=conn.resources, clients=conn.clients, spec=spec,
                     data_source=str(data), workdir=workdir, actor="benchmark")
    steps: list[dict] = []
    marks: dict[str, float] = {}

    def on_step(name: str, phase: str, rec) -> None:
        if phase == "start":
            rss.reset()
            marks[name] = time.perf_counter()
        else:
            steps.append({"step": name, "seconds": rec.seconds, "status": rec.status, "peak_rss_mib": rss.peak})

    t = time.perf_counter()
    result = run_pipeline(ctx, PIPELINE, on_step=on_step)
    wall = time.perf_counter() - t
    if result.exit_code:
        raise SystemExit(f"the pipeline failed at {rows} rows: {result.error}")

    # XGBoost alone, same data, split and hyperparameters
    df = ctx.memo["frame"]
    X = modeling.feature_matrix(df, spec)
    y = df[spec.target.name].to_numpy(dtype="float64")
    train_idx, _ = modeling.split_holdout(len(df), spec)
    rss.reset()
    t = time.perf_counter()
    model = modeling.train_model(X.iloc[train_idx], y[train_idx], spec)
    fit_s = time.perf_counter() - t
    fit_rss = rss.peak
    rss.reset()
    t = time.perf_counter()
    np.asarray(model.predict(X))
    predict_s = time.perf_counter() - t
    return {
        "rows": rows, "generate_seconds": generate_s, "pipeline_seconds": wall, "steps": steps,
        "xgboost_fit_seconds": fit_s, "xgboost_fit_peak_rss_mib": fit_rss,
        "xgboost_predict_seconds": predict_s, "xgboost_predict_peak_rss_mib": rss.peak,
        "ratio": wall / (fit_s + predict_s),
    }


def cold_start() -> dict:
    """Process start to a parsed CLI (``stagewise --help``), and the slowest imports of the CLI."""
    exe = Path(sys.executable).parent / "stagewise"
    t = time.perf_counter()
    subprocess.run([str(exe), "--help"], check=True, capture_output=True)
    help_s = time.perf_counter() - t
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import stagewise.pipeline.cli"],
                         capture_output=True, text=True, check=True).stderr
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].strip()))
    top = [{"module": name.strip(), "cumulative_ms": us / 1000} for us, name in sorted(rows, reverse=True)
           if name.strip().count(".") == 0][:8]
    return {"cli_help_seconds": help_s, "slowest_top_level_imports": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    t = time.perf_counter()
    import great_expectations  # noqa: F401 - imported before timing: the ratio excludes imports
    import xgboost  # noqa: F401

    import stagewise.pipeline.runner  # noqa: F401
    import stagewise.pipeline.validation  # noqa: F401
    imports_s = time.perf_counter() - t
    home = Path(tempfile.mkdtemp(prefix="stagewise-bench-"))
    os.environ["STAGEWISE_HOME"] = str(home)
    os.environ["STAGEWISE_EMBEDDED_PORT"] = str(_free_port())
    from stagewise.platform.embedded import EmbeddedAWS

    results = []
    try:
        with PeakRSS() as rss:
            for rows in args.sizes:
                results.append(bench_size(rows, rss, home))
    finally:
        EmbeddedAWS(home).down()
    doc = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "imports_seconds": imports_s,
           "sizes": results, "cold_start": cold_start()}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in results:
        table = Table(title=f"{r['rows']:,} rows (generation {r['generate_seconds']:.1f} s, not counted)")
        for col in ("step", "seconds", "rows/s", "peak RSS MiB"):
            table.add_column(col, justify="left" if col == "step" else "right")
        for s in r["steps"]:
            table.add_row(s["step"], f"{s['seconds']:.2f}", f"{r['rows'] / s['seconds']:,.0f}" if s["seconds"] > 0 else "-",
                          f"{s['peak_rss_mib']:,.0f}")
        table.add_row("[bold]pipeline", f"[bold]{r['pipeline_seconds']:.2f}", f"{r['rows'] / r['pipeline_seconds']:,.0f}", "")
        table.add_row("xgboost fit", f"{r['xgboost_fit_seconds']:.2f}", "", f"{r['xgboost_fit_peak_rss_mib']:,.0f}")
        table.add_row("xgboost predict", f"{r['xgboost_predict_seconds']:.2f}", "", f"{r['xgboost_predict_peak_rss_mib']:,.0f}")
        target = 1.5 if r["rows"] <= 100_000 else 1.25
        verdict = "[green]met" if r["ratio"] <= target else "[red]missed"
        table.add_row("[bold]ratio", f"[bold]{r['ratio']:.2f}", f"target <= {target}", verdict)
        console.print(table)
    cs = doc["cold_start"]
    console.print(f"CLI cold start (`stagewise --help`): {cs['cli_help_seconds']:.2f} s; slowest imports: "
                  + ", ".join(f"{t['module']} {t['cumulative_ms']:.0f} ms" for t in cs["slowest_top_level_imports"]))


if __name__ == "__main__":
    main()
