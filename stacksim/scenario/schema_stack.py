"""Scenario sections around the serving core: regions, residency classes, hosted API provider
endpoints and faults. The gateway has its own module (:mod:`.schema_gateway`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from stacksim.scenario.schema_base import MAX_LATENCY_S, Name, Strict

# --------------------------------------------------------------------------- regions


class Region(Strict):
    """A region. Catalog ids (`stacksim catalog regions`) need nothing; a custom region gives its
    jurisdiction and location (the round trip to other regions is then estimated from the
    great-circle distance, with the model fitted to measured round trips)."""

    jurisdiction: str | None = Field(default=None, description="e.g. us, eu, uk, in, gulf, jp. Catalog regions know theirs.")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    egress_usd_per_gb: float | None = Field(
        default=None, ge=0, description="Price of data leaving this region for another one. Omitted: the catalog's cloud price."
    )


class ResidencyClass(Strict):
    """Where a request's data may be processed: a list of jurisdictions, or `any`."""

    allowed_jurisdictions: list[str] = Field(min_length=1, description="e.g. [eu] for 'EU data stays in the EU', or [any].")
    description: str = ""


# --------------------------------------------------------------------------- providers


class ProviderLatency(Strict):
    """Latency of one model at this endpoint, where the catalog has none or you measured your own."""

    ttft_p50_s: float = Field(gt=0, le=MAX_LATENCY_S)
    ttft_p90_s: float | None = Field(default=None, gt=0, le=MAX_LATENCY_S)
    output_tps_p50: float = Field(gt=0, description="Output tokens per second, median.")
    output_tps_p10: float | None = Field(default=None, gt=0)
    source: str = Field(min_length=1, description="Where these figures come from.")


class ProviderEndpoint(Strict):
    """A hosted API provider's endpoint in one region (a black box: latency and price from the
    provider catalog, `stacksim catalog providers`)."""

    provider: str = Field(description="Catalog provider id: openai, anthropic, google, groq, cerebras, together, ...")
    region: str | None = Field(default=None, description="Region of the endpoint. Omitted: the provider's first catalog region.")
    models: list[str] | None = Field(default=None, description="Restrict to these catalog models (default: all the provider serves).")
    rpm_limit: int | None = Field(default=None, ge=1, description="Requests per minute for this key. Omitted: the catalog tier.")
    tpm_limit: int | None = Field(default=None, ge=1, description="Tokens per minute for this key. Omitted: the catalog tier.")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share of calls answered 5xx outside outages.")
    content_policy_block_rate: float = Field(default=0.0, ge=0, le=1, description="Share of calls refused by content policy (400).")
    price_uplift: float | None = Field(default=None, ge=0, description="Extra share on token prices (0.1 = +10%). Omitted: the catalog's regional uplift.")
    latency_scale: float = Field(default=1.0, gt=0, description="Multiply the catalog's TTFT and time per output token.")
    latency: dict[str, ProviderLatency] = Field(default_factory=dict, description="Per model id: replaces the catalog's latency.")


# --------------------------------------------------------------------------- faults


class _Timing(Strict):
    at_s: float | None = Field(default=None, ge=0, description="Scheduled start. Or give rate_per_hour.")
    rate_per_hour: float | None = Field(default=None, gt=0, description="Faults drawn as a Poisson process at this rate.")

    @model_validator(mode="after")
    def _one(self) -> _Timing:
        if (self.at_s is None) == (self.rate_per_hour is None):
            raise ValueError("give exactly one of at_s (a scheduled fault) or rate_per_hour (drawn faults)")
        return self


class ReplicaFailure(_Timing):
    """A GPU or node failure: a replica goes away for `repair_s`; its requests fail."""

    kind: Literal["replica_failure"]
    deployment: str
    replica: int | None = Field(default=None, ge=0, description="Which replica (scheduled); drawn at random if omitted.")
    repair_s: float = Field(gt=0)


class SpotPreemption(_Timing):
    """The cloud takes back a spot pool's GPUs: every replica on the pool gets a notice, stops
    taking requests, and is killed when the notice ends; capacity returns after `restore_s`."""

    kind: Literal["spot_preemption"]
    pool: str
    notice_s: float = Field(
        default=120.0, ge=0,
        description="Warning before the kill. Default 120 s: the EC2 Spot two-minute interruption notice "
        "(AWS EC2 User Guide, 'Spot Instance interruption notices').",
    )
    restore_s: float = Field(gt=0)


class ProviderOutage(_Timing):
    """A hosted provider (or one of its endpoints) fails for `duration_s`."""

    kind: Literal["provider_outage"]
    provider: str = Field(description="A key of providers:, or a catalog provider id (all its endpoints).")
    duration_s: float = Field(gt=0)
    mode: Literal["error", "timeout"] = Field(default="error", description="error: answer `status` at once; timeout: never answer.")
    status: int = Field(default=503, ge=500, le=599)


class RegionLoss(_Timing):
    """A whole region goes dark: its pools' replicas, provider endpoints and gateway instances."""

    kind: Literal["region_loss"]
    region: str
    duration_s: float = Field(gt=0)


Fault = Annotated[ReplicaFailure | SpotPreemption | ProviderOutage | RegionLoss, Field(discriminator="kind")]

__all__ = ["Fault", "Name", "ProviderEndpoint", "ProviderOutage", "Region", "RegionLoss", "ReplicaFailure",
           "ResidencyClass", "SpotPreemption"]
