"""Gate evaluation: one function for offline gates (holdout) and online gates (rollout steps).

A gate (``metric comparator threshold``, ``min_samples``) is:
    * ``pass``         when the observed value satisfies the comparison on >= min_samples samples;
    * ``fail``         when it does not, on >= min_samples samples;
    * ``inconclusive`` when there are fewer samples, or no finite value was observed.
Inconclusive holds a rollout; fail rolls it back (``Registry.evaluate_rollout``).
"""

from __future__ import annotations

import math
import operator
from typing import Iterable, Mapping

from stagewise.registry.records import Gate, GateResult

COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def evaluate(gates: Iterable[Gate], observations: Mapping[str, tuple[float | None, int]],
             notes: Mapping[str, str] | None = None) -> list[GateResult]:
    """Evaluate ``gates`` against ``observations``.

    Args:
        gates: the gates.
        observations: metric -> (value, samples it was computed on). A metric absent here makes
            its gate inconclusive.
        notes: metric -> why its value is what it is (kept with the result).

    Returns:
        One ``GateResult`` per gate, in order.
    """
    results = []
    for g in gates:
        value, samples = observations.get(g.metric, (None, 0))
        if value is None or not math.isfinite(value) or samples < g.min_samples:
            outcome = "inconclusive"
        else:
            outcome = "pass" if COMPARE[g.comparator](value, g.threshold) else "fail"
        results.append(
            GateResult(
                metric=g.metric, comparator=g.comparator, threshold=g.threshold,
                value=None if value is None or not math.isfinite(value) else float(value),
                samples=int(samples), min_samples=g.min_samples, outcome=outcome,
                on_inconclusive=g.on_inconclusive, note=(notes or {}).get(g.metric, ""),
            )
        )
    return results


def parse_gate(text: str) -> Gate:
    """Parse ``metric>=threshold[:min_samples]``, e.g. ``approval_rate>=0.8:20``.

    Raises:
        ValueError: the text is not of that form.
    """
    body, _, samples = text.partition(":")
    for comp in (">=", "<=", ">", "<"):
        if comp in body:
            metric, threshold = body.split(comp, 1)
            try:
                return Gate(metric=metric.strip(), comparator=comp, threshold=float(threshold),
                            min_samples=int(samples) if samples else 0)
            except ValueError as e:
                raise ValueError(f"bad gate {text!r}: {e}") from e
    raise ValueError(f"bad gate {text!r}: expected metric>=threshold[:min_samples], e.g. approval_rate>=0.8:20")
