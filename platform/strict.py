"""One pydantic base for the data Stagewise declares and stores: stack settings, model specs and
registry records. Unknown keys are refused (a typo is an error, not a silent default), instances
are immutable, and a field may be given by its name or its alias."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of every declared record: ``extra="forbid"``, ``frozen=True``, ``populate_by_name=True``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
