"""The base every scenario model shares: strict pydantic models and the name pattern."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)]


class Strict(BaseModel):
    # strict: YAML values are already typed, so `count: true` or `rate_per_s: "5"` are errors,
    # not silently converted; allow_inf_nan=False: `.inf` and `.nan` are never valid numbers.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Loose(Strict):
    """A section of an external vocabulary (LiteLLM, Portkey): extra keys are kept (and reported
    as ignored in the run's summary), never silently dropped."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
