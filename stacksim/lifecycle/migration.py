"""What running a route on its replacement changes: latency and spend, where they can be known.

The replacement is the model the deprecation table recommends (its ``recommended_replacement``
column, whose later entries are the newer recommendations: "replacements drift", REFERENCE.md
section 3) when that model is in the run or in the provider catalog, else the route's next model.
Both models are compared like for like: the primary's tokens priced at each one's catalog price,
and each one's catalog latency (TTFT p50 + output tokens / output speed p50) for the primary's
mean output length; where the catalog lacks a figure, what the caller observed in the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stacksim.catalog import UnknownId
from stacksim.catalog.stack import ProviderModel, get_provider_model, provider_models
from stacksim.lifecycle.data import Row
from stacksim.lifecycle.match import normalise

_CANDIDATE = re.compile(r"[a-z][a-z0-9.\-]*\d[a-z0-9.\-]*", re.IGNORECASE)


@dataclass(frozen=True)
class Use:
    """The figures of one model a change is computed from (a view of a ``ModelUse``)."""

    key: str
    provider: str
    model: str
    catalog_model: str | None
    spend_usd: float
    requests: int
    input_tokens: int
    output_tokens: int
    latency_s: float | None


def catalog_entry(provider: str, model: str, catalog_model: str | None = None) -> ProviderModel | None:
    for m in (model, catalog_model):
        if not m:
            continue
        try:
            return get_provider_model(provider, m)
        except UnknownId:
            continue
    return None


def _same(a: str, b: str) -> bool:
    (ba, da), (bb, db) = normalise(a), normalise(b)
    return ba == bb and (da is None or db is None or da == db)


def recommended(row: Row | None, provider: str, uses: list[Use]) -> tuple[Use | ProviderModel, str] | None:
    """The table's recommended replacement, if it is a model of the run or of the catalog at
    ``provider``: (the model, the id as the table writes it). The latest recommendation first."""
    if row is None or not row.replacement:
        return None
    for cand in reversed(_CANDIDATE.findall(row.replacement)):
        for u in uses:
            if u.provider == provider and (_same(cand, u.model) or (u.catalog_model and _same(cand, u.catalog_model))):
                return u, cand
        for pm in provider_models().get(provider, {}).values():
            if _same(cand, pm.model) or (pm.catalog_model and _same(cand, pm.catalog_model)):
                return pm, cand
    return None


def _price(pm: ProviderModel | None, u: Use) -> float | None:
    if pm is None or pm.usd_per_1m_input is None or pm.usd_per_1m_output is None:
        return None
    return (u.input_tokens * pm.usd_per_1m_input + u.output_tokens * pm.usd_per_1m_output) / 1e6


def _latency(pm: ProviderModel | None, u: Use) -> float | None:
    if pm is None or pm.ttft_p50_s is None or not pm.output_tps_p50 or u.requests <= 0:
        return None
    return pm.ttft_p50_s + (u.output_tokens / u.requests) / pm.output_tps_p50


@dataclass(frozen=True)
class Change:
    latency_change_s: float | None
    spend_change_usd: float | None
    basis: str


def change(primary: Use, target: Use | ProviderModel) -> Change:
    """Latency (s per call) and spend (USD, over the caller's spend period) of serving the
    primary's traffic on ``target`` instead; None where neither the catalog nor the run says."""
    if isinstance(target, Use):
        t_pm = catalog_entry(target.provider, target.model, target.catalog_model)
        t_use: Use | None = target
    else:
        t_pm, t_use = target, None
    p_pm = catalog_entry(primary.provider, primary.model, primary.catalog_model)
    spend: float | None = None
    latency: float | None = None
    basis: list[str] = []
    new, old = _price(t_pm, primary), _price(p_pm, primary)
    if new is not None and old is not None:
        spend = new - old
        basis.append("spend: the primary's tokens at both catalog prices")
    elif new is not None and primary.spend_usd > 0:
        spend = new - primary.spend_usd
        basis.append("spend: the primary's tokens at the replacement's catalog price vs the primary's spend")
    elif t_use is not None and t_use.requests > 0 and primary.requests > 0:
        spend = t_use.spend_usd / t_use.requests * primary.requests - primary.spend_usd
        basis.append("spend: the replacement's observed cost per call times the primary's calls")
    else:
        basis.append("spend: unknown (no catalog prices or token counts for both)")
    lat_new, lat_old = _latency(t_pm, primary), _latency(p_pm, primary)
    if lat_new is not None and lat_old is not None:
        latency = lat_new - lat_old
        basis.append("latency: catalog TTFT p50 + the primary's mean output / catalog output speed p50")
    elif t_use is not None and t_use.latency_s is not None and primary.latency_s is not None:
        latency = t_use.latency_s - primary.latency_s
        basis.append("latency: mean latency observed in the run")
    elif lat_new is not None and primary.latency_s is not None:
        latency = lat_new - primary.latency_s
        basis.append("latency: the replacement's catalog latency vs the primary's observed mean")
    else:
        basis.append("latency: unknown (no catalog speeds or observed latencies for both)")
    return Change(latency, spend, "; ".join(basis))
