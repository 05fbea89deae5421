"""Benchmark: how often `stagewise run` finishes unaided on a flaky AWS, by fault rate and retry
configuration.

Not a test: it prints figures. It starts a private embedded AWS (its own ``STAGEWISE_HOME`` and
port), generates a dataset, makes one clean run (v1), then runs ``stagewise run --json`` on the same
data again and again with faults injected at the botocore layer (``STAGEWISE_FAULTS=rate=R,seed=S``:
throttling, 500/503, connection resets and lost responses, on every service; see
``stagewise.platform.runtime.faults``) under each retry configuration (botocore's own
``AWS_RETRY_MODE`` and ``AWS_MAX_ATTEMPTS``, which ``AwsClients`` honours). A run that stops with
exit 5 is resumed with AWS healthy again (``--resume``); the table counts

    retries | fault rate | runs | finished unaided | exit 5, resumed to exit 0 | other | faults | median wall (s)

and, per configuration, the highest rate at which every run finished unaided. Whether a finished
run's results equal a clean run's is what ``tests/test_flaky_aws.py`` checks; this script measures
how often a run gets there without help, and what it costs in time.

    .venv/bin/python benchmarks/flaky_aws.py                              # defaults below
    .venv/bin/python benchmarks/flaky_aws.py --rates 0.05,0.2 --seeds 2   # a quick look
    .venv/bin/python benchmarks/flaky_aws.py --json                       # one JSON document

The faults are drawn per attempt (a hash of seed, service, operation and attempt number), so a seed
gives the same faults to the same calls: differences between configurations come from the retries.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "stagewise"
FAULT_LINE = re.compile(r"faults injected .*?: (\d+) AWS attempts, (\d+) faults")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stagewise(env: dict[str, str], *args: str, timeout: float = 900) -> tuple[int, dict, str, float]:
    """Run ``stagewise ARGS``; returns exit code, its JSON document (or {}), stderr, wall seconds."""
    t = time.monotonic()
    proc = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    wall = time.monotonic() - t
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        doc = {}
    return proc.returncode, doc, proc.stderr, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="0.05,0.1,0.2,0.3", help="fault rates, comma-separated (0..1)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per rate and configuration (seeds 1..N)")
    parser.add_argument("--configs", default="standard:4,standard:9,adaptive:9",
                        help="retry configurations MODE:ATTEMPTS (botocore's AWS_RETRY_MODE, AWS_MAX_ATTEMPTS)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows in the generated dataset")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    configs = [tuple(c.split(":")) for c in args.configs.split(",")]

    with tempfile.TemporaryDirectory(prefix="stagewise-flaky-") as tmp:
        home = Path(tmp)
        env = {**os.environ, "STAGEWISE_HOME": str(home / "home"), "STAGEWISE_EMBEDDED_PORT": str(free_port())}
        for name in ("STAGEWISE_FAULTS", "STAGEWISE_FAILPOINTS", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS"):
            env.pop(name, None)
        data = home / "customers.parquet"
        code, _, err, _ = stagewise(env, "data", "generate", "--rows", str(args.rows), "--out", str(data))
        if code:
            print(f"data generate failed (exit {code}):\n{err}", file=sys.stderr)
            return 1
        stagewise(env, "local", "up")
        try:
            code, doc, err, clean_wall = stagewise(env, "run", "--data", str(data), "--json")
            if code:
                print(f"the clean run failed (exit {code}):\n{err}", file=sys.stderr)
                return 1
            rows = []
            for mode, attempts in configs:
                for rate in rates:
                    row = {"retries": f"{mode}, {attempts} attempts", "mode": mode, "attempts": int(attempts), "rate": rate,
                           "runs": 0, "unaided": 0, "resumed": 0, "other": [], "aws_attempts": 0, "faults": 0, "walls": []}
                    for seed in range(1, args.seeds + 1):
                        faulted = {**env, "STAGEWISE_FAULTS": f"rate={rate},seed={seed}", "AWS_RETRY_MODE": mode,
                                   "AWS_MAX_ATTEMPTS": attempts}
                        code, doc, err, wall = stagewise(faulted, "run", "--data", str(data), "--json")
                        row["runs"] += 1
                        row["walls"].append(wall)
                        for m in FAULT_LINE.finditer(err):
                            row["aws_attempts"] += int(m.group(1))
                            row["faults"] += int(m.group(2))
                        if code == 0:
                            row["unaided"] += 1
                        elif code == 5 and doc.get("run_id"):
                            again, _, _, _ = stagewise(env, "run", "--resume", doc["run_id"], "--json")
                            if again == 0:
                                row["resumed"] += 1
                            else:
                                row["other"].append(f"exit 5, resume exit {again}")
                        else:
                            row["other"].append(f"exit {code}: {doc.get('error', err[-200:])}")
                        print(f"  {row['retries']}, rate {rate:g}, seed {seed}: exit {code} in {wall:.1f} s", file=sys.stderr)
                    row["median_wall"] = statistics.median(row["walls"])
                    rows.append(row)
        finally:
            stagewise(env, "local", "down")

    highest = {}
    for mode, attempts in configs:
        label = f"{mode}, {attempts} attempts"
        ok = [r["rate"] for r in rows if r["retries"] == label and r["unaided"] == r["runs"]]
        highest[label] = max(ok) if ok else None
    if args.json:
        print(json.dumps({"rows": args.rows, "clean_wall": clean_wall, "results": rows, "highest_unaided_rate": highest}, indent=1))
        return 0
    print(f"{args.rows:,} rows; clean run {clean_wall:.1f} s; {args.seeds} seeds per cell")
    print(f"{'retries':<22} {'rate':>5} {'runs':>4} {'unaided':>7} {'resumed':>7} {'other':>5} {'faults':>12} {'wall s':>7}")
    for r in rows:
        print(f"{r['retries']:<22} {r['rate']:>5.0%} {r['runs']:>4} {r['unaided']:>7} {r['resumed']:>7} {len(r['other']):>5} "
              f"{r['faults']:>5}/{r['aws_attempts']:<6} {r['median_wall']:>7.1f}")
        for what in r["other"]:
            print(f"    {what}")
    for label, rate in highest.items():
        print(f"highest rate with every run finished unaided, {label}: {'none' if rate is None else f'{rate:.0%}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
