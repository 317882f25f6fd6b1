"""Hosted API providers as black boxes: per-model TTFT and output-rate distributions from the
provider catalog (published measurements, each row sourced), per-key RPM / TPM limits that answer
429, content-window and content-policy refusals (400), background 5xx errors, and outages.

A provider's latency does not depend on our load: a hosted API serves far more traffic than one
customer sends, so its queueing is already inside the measured distributions. TTFT is drawn from
a lognormal through the catalog's p50 and p90; the output rate from a lognormal through p50 and
p10. Where a row gives only the median, the spread is the median spread of the catalog rows that
give both (LLMPerf's December 2023 runs give TTFT p90 for four providers; no source gives an
output-rate p10, so the rate is held at its median unless a scenario gives one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from stacksim.catalog.stack import ProviderModel, provider_models
from stacksim.gateway.limits import SlidingCount, SlidingSum

if TYPE_CHECKING:
    from stacksim.gateway.plan import EndpointPlan

Z90 = 1.2815515655446004  # standard normal quantile at 0.9
NEVER = math.inf

OK, BAD_REQUEST_CONTEXT, BAD_REQUEST_POLICY, RATE_LIMITED = 200, 400, 400, 429


@lru_cache(maxsize=1)
def default_spreads() -> tuple[float, float]:
    """Median lognormal sigma of TTFT and of output rate over catalog rows that give a tail."""
    st, sr = [], []
    for models in provider_models().values():
        for m in models.values():
            if m.ttft_p50_s and m.ttft_p90_s and m.ttft_p90_s > m.ttft_p50_s:
                st.append(math.log(m.ttft_p90_s / m.ttft_p50_s) / Z90)
            if m.output_tps_p50 and m.output_tps_p10 and m.output_tps_p50 > m.output_tps_p10:
                sr.append(math.log(m.output_tps_p50 / m.output_tps_p10) / Z90)
    # No spread published at all: TTFT and rate are held at their medians (the summary says so).
    return (float(np.median(st)) if st else 0.0, float(np.median(sr)) if sr else 0.0)


@dataclass
class Outcome:
    status: int
    kind: str  # ok, provider_rate_limited, context_window, content_policy, error, outage, timeout
    ttft_s: float  # from the provider receiving the request to the first token leaving it
    total_s: float  # to the last token leaving it (NEVER: no answer)
    retry_after_s: float | None = None  # a 429's Retry-After: until the limit's window admits the request


class ProviderModelState:
    def __init__(self, ep: EndpointPlan, pm: ProviderModel):
        self.pm = pm
        self.rpm = SlidingCount(ep.rpm_limit if ep.rpm_limit is not None else pm.rpm_limit)
        self.tpm = SlidingSum(ep.tpm_limit if ep.tpm_limit is not None else pm.tpm_limit)
        s_t, s_r = default_spreads()
        # Resolve refuses a model without a published (or scenario-given) median.
        assert pm.ttft_p50_s is not None and pm.output_tps_p50 is not None
        self.ttft_mu = math.log(pm.ttft_p50_s)
        self.ttft_sigma = math.log(pm.ttft_p90_s / pm.ttft_p50_s) / Z90 if pm.ttft_p90_s and pm.ttft_p50_s and pm.ttft_p90_s > pm.ttft_p50_s else s_t
        self.rate_mu = math.log(pm.output_tps_p50)
        self.rate_sigma = (math.log(pm.output_tps_p50 / pm.output_tps_p10) / Z90
                           if pm.output_tps_p50 and pm.output_tps_p10 and pm.output_tps_p50 > pm.output_tps_p10 else s_r)
        self.calls = 0
        self.rejected_429 = 0


class ProviderRuntime:
    """One endpoint (provider x region) at run time."""

    def __init__(self, ep: EndpointPlan, rng: np.random.Generator):
        self.ep = ep
        self.rng = rng
        self.models: dict[str, ProviderModelState] = {}
        self.outages = sorted(ep.outages)

    def outage(self, now: float) -> tuple[str, int] | None:
        for start, end, mode, status in self.outages:
            if start <= now < end:
                return mode, status
        return None

    def state(self, pm: ProviderModel) -> ProviderModelState:
        st = self.models.get(pm.model)
        if st is None:
            st = self.models[pm.model] = ProviderModelState(self.ep, pm)
        return st

    def call(self, pm: ProviderModel, context_window: int, inp: int, out: int, now: float) -> Outcome:
        st = self.state(pm)
        st.calls += 1
        down = self.outage(now)
        if down is not None:
            mode, status = down
            if mode == "timeout":
                return Outcome(0, "outage", NEVER, NEVER)
            return Outcome(status, "outage", 0.0, 0.0)
        if inp + out > context_window:
            return Outcome(BAD_REQUEST_CONTEXT, "context_window", 0.0, 0.0)
        # Limits count the request and its tokens (prompt + requested output, as OpenAI counts
        # max_tokens against TPM) when it is admitted.
        if not st.rpm.allows(now) or not st.tpm.allows(now, inp + out):
            st.rejected_429 += 1
            wait = max(st.rpm.admits_in(now), st.tpm.admits_in(now, inp + out))
            return Outcome(RATE_LIMITED, "provider_rate_limited", 0.0, 0.0, wait)
        st.rpm.add(now)
        st.tpm.add(now, inp + out)
        u = self.rng.random(2)
        if u[0] < self.ep.content_policy_block_rate:
            return Outcome(BAD_REQUEST_POLICY, "content_policy", 0.0, 0.0)
        if u[1] < self.ep.error_rate:
            return Outcome(500, "error", 0.0, 0.0)
        z = self.rng.standard_normal(2)
        scale = self.ep.latency_scale
        ttft = math.exp(st.ttft_mu + st.ttft_sigma * z[0]) * scale
        rate = math.exp(st.rate_mu + st.rate_sigma * z[1]) / scale
        return Outcome(OK, "ok", ttft, ttft + max(out - 1, 0) / rate)
