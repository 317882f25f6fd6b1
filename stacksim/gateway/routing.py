"""LiteLLM's routing strategies as small policy objects, chosen by ``routing_strategy``.

Each ``pick(cands, now, tokens)`` gets the healthy candidates of one model group (cooled-down
deployments already removed, as LiteLLM removes them before the strategy runs) in model_list
order and returns one, or None when every candidate is over its limits ("No deployments
available", a 429). The rules follow the code quoted in shared/facts/REFERENCE.md section 1.1.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stacksim.gateway.plan import TIMEOUT_PENALTY

if TYPE_CHECKING:
    from stacksim.gateway.plan import GatewayPlan, TargetPlan


class Usage:
    """Per-deployment counters the strategies read: in flight, and this UTC minute's requests
    and tokens (LiteLLM's `{id}:rpm:{HH-MM}` / `{id}:tpm:{HH-MM}` keys)."""

    def __init__(self, n: int):
        self.in_flight = [0] * n
        self.minute = [-1] * n
        self.rpm = [0] * n
        self.tpm = [0] * n

    def _at(self, t: int, now: float) -> None:
        m = int(now // 60.0)
        if self.minute[t] != m:
            self.minute[t] = m
            self.rpm[t] = 0
            self.tpm[t] = 0

    def rpm_used(self, t: int, now: float) -> int:
        self._at(t, now)
        return self.rpm[t]

    def tpm_used(self, t: int, now: float) -> int:
        self._at(t, now)
        return self.tpm[t]

    def start(self, t: int, now: float) -> None:
        self._at(t, now)
        self.rpm[t] += 1
        self.in_flight[t] += 1

    def end(self, t: int, now: float, tokens: int, ok: bool) -> None:
        self.in_flight[t] -= 1
        if ok:
            self._at(t, now)
            self.tpm[t] += tokens


def within_limits(t: TargetPlan, usage: Usage, now: float, tokens: int) -> bool:
    """lowest_tpm_rpm_v2: skip if tpm_used + input_tokens > tpm, or rpm_used + 1 >= rpm."""
    if t.tpm is not None and usage.tpm_used(t.index, now) + tokens > t.tpm:
        return False
    return not (t.rpm is not None and usage.rpm_used(t.index, now) + 1 >= t.rpm)


class Strategy(Protocol):
    def pick(self, cands: list[TargetPlan], now: float, tokens: int) -> TargetPlan | None: ...


class SimpleShuffle:
    """Weights from the *first* candidate's params: weight, else rpm, else tpm (a missing value
    counts 0); none set: uniform. Stateless."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, cands: list[TargetPlan], now: float, tokens: int) -> TargetPlan | None:
        if not cands:
            return None
        first = cands[0]
        for attr in ("weight", "rpm", "tpm"):
            if getattr(first, attr) is not None:
                w = np.array([float(getattr(c, attr) or 0.0) for c in cands])
                if w.sum() > 0:
                    return cands[int(np.searchsorted(np.cumsum(w), self.rng.random() * w.sum(), side="right"))]
                break
        return cands[int(self.rng.integers(len(cands)))]


class LeastBusy:
    """Fewest in-flight requests; unseen deployments count 0; the first minimum in model_list order."""

    def __init__(self, usage: Usage):
        self.usage = usage

    def pick(self, cands: list[TargetPlan], now: float, tokens: int) -> TargetPlan | None:
        if not cands:
            return None
        return min(cands, key=lambda c: self.usage.in_flight[c.index])


class UsageBased:
    """usage-based-routing(-v2): among deployments within their TPM/RPM this minute, the lowest
    TPM used; ties at random. None qualifies: a 429."""

    def __init__(self, usage: Usage, rng: np.random.Generator):
        self.usage = usage
        self.rng = rng

    def pick(self, cands: list[TargetPlan], now: float, tokens: int) -> TargetPlan | None:
        ok = [c for c in cands if within_limits(c, self.usage, now, tokens)]
        if not ok:
            return None
        used = [self.usage.tpm_used(c.index, now) for c in ok]
        low = min(used)
        best = [c for c, u in zip(ok, used) if u == low]
        return best[int(self.rng.integers(len(best)))] if len(best) > 1 else best[0]


class LatencyBased:
    """latency-based-routing: the mean of each deployment's last `window` samples of
    (response time / completion tokens), samples older than the TTL dropped, a timeout counted as
    a 1000 s sample; a deployment with no samples counts 0 (tried first). Random pick among those
    within (1 + buffer) x the lowest. Over their TPM/RPM this minute: skipped."""

    def __init__(self, n: int, usage: Usage, rng: np.random.Generator, window: int, ttl_s: float, buffer: float):
        self.samples: list[deque[tuple[float, float]]] = [deque(maxlen=window) for _ in range(n)]
        self.usage = usage
        self.rng = rng
        self.ttl = ttl_s
        self.buffer = buffer

    def observe(self, t: int, now: float, response_s: float, completion_tokens: int, timed_out: bool) -> None:
        v = TIMEOUT_PENALTY if timed_out else response_s / max(completion_tokens, 1)
        self.samples[t].append((now, v))

    def latency(self, t: int, now: float) -> float:
        vals = [v for ts, v in self.samples[t] if ts > now - self.ttl]
        return float(np.mean(vals)) if vals else 0.0

    def pick(self, cands: list[TargetPlan], now: float, tokens: int) -> TargetPlan | None:
        ok = [c for c in cands if within_limits(c, self.usage, now, tokens)]
        if not ok:
            return None
        lat = [self.latency(c.index, now) for c in ok]
        low = min(lat)
        near = [c for c, v in zip(ok, lat) if v <= (1.0 + self.buffer) * low]
        return near[int(self.rng.integers(len(near)))] if len(near) > 1 else near[0]


class CostBased:
    """cost-based-routing: the cheapest (input + output price per token) within TPM/RPM; no
    random tie-break (model_list order)."""

    def __init__(self, usage: Usage):
        self.usage = usage

    def pick(self, cands: list[TargetPlan], now: float, tokens: int) -> TargetPlan | None:
        ok = [c for c in cands if within_limits(c, self.usage, now, tokens)]
        if not ok:
            return None
        return min(ok, key=lambda c: c.usd_in_per_token + c.usd_out_per_token)


def make_strategy(plan: GatewayPlan, usage: Usage, rng: np.random.Generator) -> Strategy:
    s = plan.strategy
    if s == "simple-shuffle":
        return SimpleShuffle(rng)
    if s == "least-busy":
        return LeastBusy(usage)
    if s in ("usage-based-routing", "usage-based-routing-v2"):
        return UsageBased(usage, rng)
    if s == "latency-based-routing":
        return LatencyBased(len(plan.targets), usage, rng, plan.latency_window, plan.latency_ttl_s, plan.latency_buffer)
    if s == "cost-based-routing":
        return CostBased(usage)
    raise ValueError(f"unknown routing strategy {s!r}")
