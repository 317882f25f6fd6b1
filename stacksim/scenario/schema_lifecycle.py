"""The ``lifecycle:`` section: a planning horizon over which hosted models may be retired by
their providers (``stacksim.lifecycle``), and what migrating off one costs."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from stacksim.scenario.schema_base import Strict


def _iso_date(value: Any) -> Any:
    # YAML reads an unquoted 2026-12-01 as a date already; a quoted one (or a value set from the
    # command line or a sweep) arrives as text. An ISO date is unambiguous, so accept it; anything
    # else is left to the strict date check, which names what is valid.
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return value
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class Lifecycle(Strict):
    """Deprecation risk of the hosted models a scenario calls, over a planning horizon."""

    start_date: IsoDate = Field(description="First day of the planning horizon (YYYY-MM-DD).")
    horizon_months: int = Field(default=12, ge=1, le=120, description="Length of the horizon in calendar months.")
    simulations: int = Field(default=2000, ge=1, le=1_000_000, description="Monte Carlo draws of every model's retirement date.")
    migration_effort_usd: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="One-off cost of migrating off a model, keyed by 'provider/model', the provider's model id, "
        "or the catalog model id.",
    )
    default_migration_effort_usd: float | None = Field(
        default=None, ge=0, description="Migration cost of a model not named in migration_effort_usd. Omitted: no cost for it."
    )
    rerun_replacements: bool = Field(
        default=False, description="Also run the scenario again (same seed) once per gateway route that has a replacement, "
        "with the route's primary model swapped for it, and report the route's measured latency and spend change.")
    as_of: IsoDate | None = Field(
        default=None,
        description="The date the deprecation history is known up to (YYYY-MM-DD). Omitted: the table's as-of date "
        "(2026-11-28). Later shutdowns are censored when fitting; models are taken to be in service on it.",
    )
