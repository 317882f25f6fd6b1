"""Accelerator prices by purchase type, each with its basis.

- on_demand: the median of the catalog's on-demand rows for the accelerator (catalog/data/
  gpu_price_points.csv, regenerated from shared/facts/gpu_prices.csv, each row dated and
  sourced), optionally at one provider or tier; with neither, the accelerator's catalog default
  (the same median the foundation used).
- spot: the median of spot rows where the catalog has some; otherwise on demand x SPOT_RATIO.
- reserved_1y / reserved_3y: no 1- or 3-year list prices from AWS, GCP or Azure could be read
  (shared/facts/REFERENCE.md 4.1), so on demand x (1 - discount): 1 year 37.5 % (the midpoint of
  "35-40 % off" for H100, digiterialabs, a third-party claim), 3 years 60 % (CoreWeave's "up to
  60 %" off on demand, an upper bound). A provider with its own reserved rows (Hyperstack,
  term unstated) is priced at those rows for reserved_1y.
- owned: the purchase amortised straight-line plus power at the accelerator's TDP times PUE.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stacksim.catalog import Accelerator
    from stacksim.scenario.schema import Pool

DATA = Path(__file__).resolve().parents[1] / "catalog" / "data" / "gpu_price_points.csv"
HOURS_PER_YEAR = 8760.0
RESERVED_DISCOUNT = {"reserved_1y": 0.375, "reserved_3y": 0.60}  # see the module docstring
# Spot / on-demand for the same SKU: GCP a3-highgpu-1g H100 6.571 / 10.9791 = 0.60 (2026-09);
# CoreWeave H100 spot $19.71 vs $49.24 per 8 GPUs = 0.40 (REFERENCE.md 4.1). Their midpoint:
SPOT_RATIO = 0.5


@dataclass(frozen=True)
class PricePoint:
    accelerator: str
    provider: str
    tier: str
    purchase: str
    usd_per_gpu_hour: float
    price_date: str
    sku: str
    source: str


@lru_cache(maxsize=1)
def price_points() -> tuple[PricePoint, ...]:
    with open(DATA, newline="", encoding="utf-8") as f:
        return tuple(PricePoint(r["accelerator"], r["provider"], r["tier"], r["purchase"], float(r["usd_per_gpu_hour"]),
                                r["price_date"], r["sku"], r["source"]) for r in csv.DictReader(f))


def providers() -> list[str]:
    return sorted({p.provider for p in price_points()})


def _select(acc: str, purchase: str, provider: str | None, tier: str | None) -> list[PricePoint]:
    return [p for p in price_points() if p.accelerator == acc and p.purchase == purchase
            and (provider is None or p.provider.lower() == provider.lower()) and (tier is None or p.tier == tier)]


def _describe(rows: list[PricePoint]) -> str:
    dates = sorted({p.price_date for p in rows})
    who = ", ".join(sorted({p.provider for p in rows}))
    return f"median of {len(rows)} row(s) ({who}; {dates[0]}..{dates[-1]}) in shared/facts/gpu_prices.csv" if len(dates) > 1 else \
        f"median of {len(rows)} row(s) ({who}; {dates[0]}) in shared/facts/gpu_prices.csv"


class PriceError(ValueError):
    pass


def on_demand(acc: Accelerator, provider: str | None, tier: str | None) -> tuple[float, str]:
    if provider is None and tier is None and acc.default_price_usd_per_gpu_hour is not None:
        return acc.default_price_usd_per_gpu_hour, f"on demand, catalog default: {acc.price_basis}"
    rows = _select(acc.id, "on_demand", provider, tier)
    if not rows:
        have = sorted({p.provider for p in price_points() if p.accelerator == acc.id and p.purchase == "on_demand"})
        where = " ".join(x for x in (provider, tier) if x)
        raise PriceError(f"no on-demand price for {acc.id} at {where or 'any provider'} in the catalog; "
                         f"providers with one: {', '.join(have) or 'none'}; or set price_usd_per_gpu_hour")
    return median(p.usd_per_gpu_hour for p in rows), f"on demand, {_describe(rows)}"


def pool_price(pool: Pool, acc: Accelerator) -> tuple[float, str]:
    """USD per accelerator-hour for a pool, and where it comes from."""
    if pool.price_usd_per_gpu_hour is not None:
        return pool.price_usd_per_gpu_hour, "scenario"
    prov, tier = pool.price_provider, pool.price_tier
    kind = pool.purchase
    if kind == "on_demand":
        return on_demand(acc, prov, tier)
    if kind == "spot":
        rows = _select(acc.id, "spot", prov, tier)
        if rows:
            return median(p.usd_per_gpu_hour for p in rows), f"spot, {_describe(rows)}"
        od, basis = on_demand(acc, prov, tier)
        return od * SPOT_RATIO, f"spot = {SPOT_RATIO:g} x ({basis}); ratio: GCP H100 spot/on-demand 0.60, CoreWeave 0.40"
    if kind in RESERVED_DISCOUNT:
        if kind == "reserved_1y" and prov is not None:
            rows = _select(acc.id, "reserved", prov, tier)
            if rows:
                return median(p.usd_per_gpu_hour for p in rows), f"reserved (term not stated by the provider), {_describe(rows)}"
        od, basis = on_demand(acc, prov, tier)
        d = RESERVED_DISCOUNT[kind]
        return od * (1 - d), f"{kind} = on demand x {1 - d:g} ({d:.1%} off: see stacksim/finops/pricing.py); on demand: {basis}"
    # owned
    o = pool.owned
    assert o is not None
    if acc.tdp_w is None:
        raise PriceError(f"{acc.id} has no TDP in the catalog, so its power cost is unknown; set price_usd_per_gpu_hour")
    capex = o.capex_usd_per_gpu / (o.amortization_years * HOURS_PER_YEAR)
    power = acc.tdp_w / 1000.0 * o.power_draw_fraction * o.pue * o.power_usd_per_kwh
    return capex + power, (f"owned: ${o.capex_usd_per_gpu:,.0f} over {o.amortization_years:g} years = ${capex:.4f}/h, plus power "
                           f"{acc.tdp_w:g} W x {o.power_draw_fraction:g} x PUE {o.pue:g} at ${o.power_usd_per_kwh:g}/kWh = ${power:.4f}/h")


def owned_split(pool: Pool, acc: Accelerator) -> tuple[float, float]:
    """(capex, power) USD per accelerator-hour of an owned pool."""
    o = pool.owned
    if o is None or acc.tdp_w is None:
        return 0.0, 0.0
    return (o.capex_usd_per_gpu / (o.amortization_years * HOURS_PER_YEAR),
            acc.tdp_w / 1000.0 * o.power_draw_fraction * o.pue * o.power_usd_per_kwh)
