"""The memo entries steps hand to later steps, as JSON and back.

In-process the steps pass Python objects through ``ctx.memo``; across processes (the AWS task
groups' ``state.json``, the predictions' manifest) the same entries travel as JSON. ``encode``
makes a value JSON-native (numpy scalars to numbers, pydantic models to dicts, tuples to lists,
dict keys to strings); ``decode`` turns an entry back into the types the steps use (int version
keys, ``GateResult`` objects, ``(value, samples)`` tuples).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel

from stagewise.registry.records import GateResult

SCORE_KEYS = ("rows_scored", "per_version", "weights", "observations", "rollout_id", "serving", "drift_counts")
"""The score step's hand-over: what monitor, rollout and publish read."""


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(doc: Any) -> str:
    """Compact JSON of ``doc`` (numpy scalars, pydantic models, sets and tuples allowed)."""
    return json.dumps(doc, default=_json_default, separators=(",", ":"))


def encode(value: Any) -> Any:
    """A memo value as JSON-native data (dict keys become strings)."""
    return json.loads(dumps(value))


_DECODE = {
    "gates": lambda v: [GateResult.model_validate(g) for g in v],
    "per_version": lambda v: {int(k): s for k, s in v.items()},
    "weights": lambda v: {int(k): w for k, w in v.items()},
    "observations": lambda v: {k: (o[0], int(o[1])) for k, o in v.items()},
}


def decode(key: str, value: Any) -> Any:
    """A memo value from JSON in the types the steps use (int version keys, tuples)."""
    return _DECODE[key](value) if key in _DECODE and value is not None else value
