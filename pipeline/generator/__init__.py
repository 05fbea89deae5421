"""Synthetic customer data for the ``engagement`` and ``churn`` model specs.

``stagewise data generate`` is built on this package; the README ("The data and the model spec")
tells what the data is and why its true functions are known. Every public name is imported from
here, ``stagewise.pipeline.generator``, which is also where the specs' ``reference`` functions
(``expected_engagement``, ``expected_churn``) are looked up. One module per job; a module imports
only modules below it in this list:

    perturbations   drift (``parse_drift``, ``with_drift``) and label noise (``with_label_noise``)
    customers       ``generate_customers``: seeds, chunks, the assembled frame
    labels          the engagement target and churn label, their true functions, the R^2 ceiling
    pii             customer ids, names, e-mails
    population      the 33 features, drawn from latent factors
    writer          ``write_dataset``: the Parquet file and its sha256
    common          the spec (the only import from outside the package), ``_sigmoid``, ``str`` dtype
"""

from __future__ import annotations

from .common import DEFAULT_SEED, SPEC_NAME
from .customers import generate_customers
from .labels import (
    CHURN_LABEL,
    HORIZON_DAYS,
    KAPPA,
    best_achievable_r2,
    expected_churn,
    expected_engagement,
    theoretical_best_r2,
)
from .perturbations import parse_drift, with_drift, with_label_noise
from .pii import _id_integers  # noqa: F401 - tests check the id bijection through this name
from .writer import ROW_GROUP_ROWS, write_dataset

__all__ = [
    "DEFAULT_SEED",
    "HORIZON_DAYS",
    "KAPPA",
    "ROW_GROUP_ROWS",
    "SPEC_NAME",
    "CHURN_LABEL",
    "best_achievable_r2",
    "expected_churn",
    "expected_engagement",
    "generate_customers",
    "parse_drift",
    "theoretical_best_r2",
    "with_drift",
    "with_label_noise",
    "write_dataset",
]
