"""Sticky, deterministic routing of keys (e.g. ``customer_id``) to champion or challenger.

A key's bucket is the first 8 bytes of sha256("<model>|<rollout id>|<key>") modulo 10,000, and the
key goes to the challenger when ``bucket < weight * 100`` (weight in percent, resolution 0.01
points). Because the rollout id is fixed for the life of a rollout, a key keeps its version while
the weight grows (the challenger's set of buckets only gets larger), and no state per key is stored.
The assignment needs the model record only, so a scoring job reads the registry once.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

from stagewise.registry.records import ModelRecord

BUCKETS = 10_000


def buckets(model: str, rollout_id: str, keys: Iterable[object]) -> np.ndarray:
    """The routing bucket (0..9,999) of each key, shape (n,), int64."""
    prefix = f"{model}|{rollout_id}|".encode()
    out = [
        int.from_bytes(hashlib.sha256(prefix + str(k).encode()).digest()[:8], "big") % BUCKETS for k in keys
    ]
    return np.asarray(out, dtype="int64")


def to_challenger(model: str, rollout_id: str, weight: float, keys: Iterable[object]) -> np.ndarray:
    """Boolean mask, shape (n,): True where the key is routed to the challenger at ``weight`` percent.

    At 0% and 100% every bucket is on the same side of the threshold, so no key is hashed.
    """
    threshold = round(weight * BUCKETS / 100)
    if threshold <= 0 or threshold >= BUCKETS:
        n = len(keys) if hasattr(keys, "__len__") else sum(1 for _ in keys)
        return np.full(n, threshold >= BUCKETS, dtype=bool)
    return buckets(model, rollout_id, keys) < threshold


def assign(record: ModelRecord, keys: Iterable[object]) -> np.ndarray:
    """The serving version of each key under the record's current rollout, shape (n,), int64.

    Raises:
        ValueError: the model has no champion (nothing can serve).
    """
    keys = list(keys)
    champion = record.champion
    if champion is None:
        raise ValueError(f"model {record.name!r} has no champion: nothing can serve")
    versions = np.full(len(keys), champion, dtype="int64")
    r = record.rollout
    if r is not None and not r.shadow and r.weight > 0:
        versions[to_challenger(record.name, r.id, r.weight, keys)] = r.challenger
    return versions
