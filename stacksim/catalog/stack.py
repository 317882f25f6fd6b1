"""Catalogs of the stack around the GPUs: hosted API providers (latency, prices, limits),
their regional endpoints, regions, measured inter-region round trips and egress prices.

Read from ``data/providers.csv``, ``provider_regions.csv``, ``regions.csv``, ``region_rtt.csv``
and ``egress_prices.csv``; every row names its source (``data/PROVIDERS_SOURCES.md`` lists them).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache

from stacksim.catalog import DATA, UnknownId, _f, _i


@dataclass(frozen=True)
class ProviderModel:
    """One model as one provider serves it (a black box)."""

    provider: str
    model: str
    catalog_model: str
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    output_tps_p50: float | None
    output_tps_p10: float | None
    context_window_tokens: int | None
    usd_per_1m_input: float | None
    usd_per_1m_output: float | None
    usd_per_1m_cached_input: float | None
    rpm_limit: int | None
    tpm_limit: int | None
    limit_tier: str
    latency_source: str
    price_source: str
    limits_source: str
    notes: str

    @property
    def family(self) -> str:
        return self.catalog_model or self.model


@dataclass(frozen=True)
class ProviderRegion:
    provider: str
    region: str
    jurisdiction: str
    endpoint: str
    price_uplift: float
    source: str


@dataclass(frozen=True)
class RegionInfo:
    id: str
    name: str
    jurisdiction: str
    aws_region: str
    lat: float | None
    lon: float | None
    source: str


@dataclass(frozen=True)
class Rtt:
    a: str
    b: str
    rtt_ms: float
    source: str


@dataclass(frozen=True)
class EgressPrice:
    cloud: str
    kind: str
    usd_per_gb: float
    source: str


def _rows(name: str) -> list[dict[str, str]]:
    path = DATA / name
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(fh)]


@lru_cache(maxsize=1)
def provider_models() -> dict[str, dict[str, ProviderModel]]:
    """provider id -> model id -> ProviderModel."""
    out: dict[str, dict[str, ProviderModel]] = {}
    for r in _rows("providers.csv"):
        if not r.get("provider") or not r.get("model"):
            continue
        pm = ProviderModel(
            provider=r["provider"].lower(),
            model=r["model"],
            catalog_model=r.get("catalog_model", ""),
            ttft_p50_s=_f(r, "ttft_p50_s"),
            ttft_p90_s=_f(r, "ttft_p90_s"),
            output_tps_p50=_f(r, "output_tps_p50"),
            output_tps_p10=_f(r, "output_tps_p10"),
            context_window_tokens=_i(r, "context_window_tokens"),
            usd_per_1m_input=_f(r, "usd_per_1m_input"),
            usd_per_1m_output=_f(r, "usd_per_1m_output"),
            usd_per_1m_cached_input=_f(r, "usd_per_1m_cached_input"),
            rpm_limit=_i(r, "rpm_limit"),
            tpm_limit=_i(r, "tpm_limit"),
            limit_tier=r.get("limit_tier", ""),
            latency_source=r.get("latency_source", ""),
            price_source=r.get("price_source", ""),
            limits_source=r.get("limits_source", ""),
            notes=r.get("notes", ""),
        )
        out.setdefault(pm.provider, {})[pm.model] = pm
    return out


def providers() -> list[str]:
    return sorted(provider_models())


def get_provider_model(provider: str, model: str) -> ProviderModel:
    table = provider_models()
    if provider not in table:
        raise UnknownId("provider", provider, providers())
    models = table[provider]
    if model in models:
        return models[model]
    by_family = [m for m in models.values() if m.catalog_model and m.catalog_model == model]
    if len(by_family) == 1:
        return by_family[0]
    raise UnknownId(f"{provider} model", model, sorted(models))


@lru_cache(maxsize=1)
def provider_regions() -> dict[str, list[ProviderRegion]]:
    out: dict[str, list[ProviderRegion]] = {}
    for r in _rows("provider_regions.csv"):
        if not r.get("provider"):
            continue
        pr = ProviderRegion(
            provider=r["provider"].lower(),
            region=r["region"],
            jurisdiction=r.get("jurisdiction", ""),
            endpoint=r.get("endpoint", ""),
            price_uplift=_f(r, "price_uplift") or 0.0,
            source=r.get("source", ""),
        )
        out.setdefault(pr.provider, []).append(pr)
    return out


@lru_cache(maxsize=1)
def regions() -> dict[str, RegionInfo]:
    out: dict[str, RegionInfo] = {}
    for r in _rows("regions.csv"):
        if not r.get("id"):
            continue
        out[r["id"]] = RegionInfo(
            id=r["id"], name=r.get("name", ""), jurisdiction=r.get("jurisdiction", ""),
            aws_region=r.get("aws_region", ""), lat=_f(r, "lat"), lon=_f(r, "lon"), source=r.get("source", ""),
        )
    return out


@lru_cache(maxsize=1)
def measured_rtts() -> list[Rtt]:
    return [
        Rtt(r["a"], r["b"], float(r["rtt_ms"]), r.get("source", ""))
        for r in _rows("region_rtt.csv")
        if r.get("a") and r.get("b") and r.get("rtt_ms")
    ]


@lru_cache(maxsize=1)
def egress_prices() -> list[EgressPrice]:
    return [
        EgressPrice(r.get("cloud", "").lower(), r.get("kind", ""), float(r["usd_per_gb"]), r.get("source", ""))
        for r in _rows("egress_prices.csv")
        if r.get("usd_per_gb")
    ]


@lru_cache(maxsize=1)
def _endpoint_hosts() -> list[tuple[str, str, str, str]]:
    return [(r["provider"], r["host"].lower(), r["code"].lower(), r["region"]) for r in _rows("endpoint_regions.csv") if r.get("provider")]


def endpoint_region(provider: str, host: str = "", code: str = "") -> str | None:
    """The catalog region of a provider's endpoint host (``bedrock-runtime.eu-central-1.amazonaws.com``),
    or of a provider region code (``westeurope``, ``eu-central-1``), from ``data/endpoint_regions.csv``;
    None when the table has no row for it."""
    host, code = host.lower(), code.lower()
    for p, tmpl, c, region in _endpoint_hosts():
        if p == provider and ((host and host == tmpl.replace("{code}", c)) or (code and code == c)):
            return region
    return None
