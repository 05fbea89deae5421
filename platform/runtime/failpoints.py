"""Failpoints: named places in the pipeline where a fault test makes the process die for real.

A failpoint is inert unless ``$STAGEWISE_FAILPOINTS`` names it. The variable holds comma-separated
``NAME=ACTION`` or ``NAME=ACTION@N`` entries; when the process reaches ``NAME`` for the ``N``-th
time (default: the first), it sends itself the signal of ``ACTION``:

    kill   SIGKILL: the process dies at once, nothing runs after (a crash, an OOM kill)
    term   SIGTERM: what Fargate Spot sends two minutes before it reclaims a task

Example: ``STAGEWISE_FAILPOINTS="score.part-published=kill@2"`` kills the run after the second
prediction part was copied to its final key and before the manifest is written. The fault tests
(``tests/test_faults.py``) kill real processes at these points and check that a re-run's results
equal a clean run's. The technique is the failpoint of FreeBSD's fail(9) and TiKV's ``fail-rs``.

Failpoints in the code (each is documented where it is called):

    validate.result-written    the validation result is staged, the Data Docs are not yet
    validate.file-published    a staged validation file was copied to its final key (once per file)
    train.uploaded             the model artifact is in S3, nothing is registered yet
    register.done              the version is registered, nothing is scored yet
    score.partition-staged     a partition's part is staged (once per partition)
    score.part-published       a staged part was copied to its final key (once per part)
    score.published            the predictions' manifest is written
    rollout.evaluated          the rollout controller's decision is in the registry
    publish.before-metrics     everything is done except the CloudWatch metrics
    publish.after-metrics      the metrics are sent, the run has not recorded its end
"""

from __future__ import annotations

import functools
import os
import signal

from stagewise.platform.contract import Env

ACTIONS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}

_hits: dict[str, int] = {}


class FailpointError(ValueError):
    """``$STAGEWISE_FAILPOINTS`` is malformed (the message names the entry)."""


@functools.lru_cache(maxsize=8)
def parse(text: str) -> dict[str, tuple[signal.Signals, int]]:
    """``"a=kill,b=term@2"`` -> ``{"a": (SIGKILL, 1), "b": (SIGTERM, 2)}``.

    Raises:
        FailpointError: an entry is not ``NAME=ACTION[@N]`` with a known action and ``N >= 1``.
    """
    points: dict[str, tuple[signal.Signals, int]] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, _, action = entry.partition("=")
        action, _, nth = action.partition("@")
        if not name or action not in ACTIONS or (nth and (not nth.isdigit() or int(nth) < 1)):
            raise FailpointError(
                f"{Env.FAILPOINTS} entry {entry!r} is not NAME=ACTION[@N] with ACTION one of {', '.join(ACTIONS)} and N >= 1")
        points[name.strip()] = (ACTIONS[action], int(nth or 1))
    return points


def failpoint(name: str) -> None:
    """Reached failpoint ``name``: if ``$STAGEWISE_FAILPOINTS`` arms it for this hit, send this
    process its signal (SIGKILL does not return; SIGTERM runs the process's handler).

    Raises:
        FailpointError: ``$STAGEWISE_FAILPOINTS`` is malformed.
    """
    text = os.environ.get(Env.FAILPOINTS)
    if not text:
        return
    armed = parse(text).get(name)
    if armed is None:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == armed[1]:
        os.kill(os.getpid(), armed[0])
