"""SIGTERM (a Fargate Spot notice) becomes one exception in the main thread, at a point where
Python is in control: never inside a native library's callback, where it would be printed, lost,
and XGBoost could crash (a bug seen as a segfault when the signal landed in DMatrix construction).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from stagewise.platform.contract import Sigterm, native_code, sigterm_checkpoint


class Stop(BaseException):
    pass


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode of the main thread


class _KillingIter(xgb.DataIter):
    """One batch; sends SIGTERM to this process from inside XGBoost's ctypes callback."""

    def __init__(self) -> None:
        super().__init__()
        self.done = False
        self.after_signal = False

    def next(self, input_data) -> bool:
        if self.done:
            return False
        _sigterm_self()
        self.after_signal = True  # reached: the handler did not raise inside the callback
        rng = np.random.default_rng(0)
        input_data(data=rng.normal(size=(50, 3)), label=rng.normal(size=50))
        self.done = True
        return True

    def reset(self) -> None:
        self.done = False


def test_sigterm_inside_a_dmatrix_callback_is_raised_once_when_xgboost_returns():
    it = _KillingIter()
    built = []
    with Sigterm(Stop).installed() as sig:
        with pytest.raises(Stop):
            with native_code():
                built.append(xgb.QuantileDMatrix(it))
        assert sig.received
        sigterm_checkpoint()  # already raised: nothing more
    assert it.after_signal and len(built) == 1 and built[0].num_row() == 50


def test_a_held_sigterm_is_raised_at_the_next_checkpoint_not_later():
    reached = []
    with Sigterm(Stop).installed():
        with pytest.raises(Stop):
            with native_code():
                _sigterm_self()
                reached.append("after signal")
                sigterm_checkpoint()
                reached.append("after checkpoint")
    assert reached == ["after signal"]


def test_outside_native_code_sigterm_raises_at_once_and_deferred_work_finishes():
    with Sigterm(Stop).installed() as sig:
        with pytest.raises(Stop):
            _sigterm_self()
            pytest.fail("SIGTERM did not interrupt")
    with Sigterm(Stop).installed() as sig:
        with sig.deferred():
            _sigterm_self()
            finished = True
        assert finished and sig.received
        sigterm_checkpoint()  # recorded while deferred: not raised later


def test_training_stops_between_boosting_rounds():
    from stagewise.pipeline import modeling
    from stagewise.pipeline.spec import load_spec

    spec = load_spec("engagement")
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(400, 4)), columns=list("abcd"))
    rounds = []

    def progress(done: int, total: int) -> None:
        rounds.append(done)
        if done == 3:
            _sigterm_self()

    with Sigterm(Stop).installed():
        with pytest.raises(Stop):
            modeling.train_model(X, rng.uniform(size=400), spec, progress=progress, n_jobs=1)
    assert rounds[-1] in (3, 4)  # raised at the end of round 3 or, at the latest, after round 4
