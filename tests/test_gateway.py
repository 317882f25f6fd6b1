"""The LiteLLM-style gateway: routing strategies, cooldowns, sliding-window limits, budgets,
fallbacks, timeouts, the exact cache, call accounting and determinism.

The routing strategies, cooldowns and limit windows are unit-tested on hand-built
``TargetPlan`` objects (shared/facts/REFERENCE.md section 1.1 gives LiteLLM's rules); the rest
runs small gateway scenarios built from YAML text and checks the call table and the attempt
log (``sim.gateway.a_*``), never wall-clock time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stacksim.engine.simulation import Simulation
from stacksim.gateway.limits import Cooldowns, SlidingCount, SlidingSum
from stacksim.gateway.plan import TIMEOUT_PENALTY, TargetPlan
from stacksim.gateway.routing import (
    CostBased,
    LatencyBased,
    LeastBusy,
    SimpleShuffle,
    Usage,
    UsageBased,
)
from stacksim.metrics import COMPLETED, FAILED
from stacksim.metrics.summary import Result, build_result
from stacksim.scenario import load_scenario, load_scenario_text
from tests.gateway_helpers import endpoint, workload

REPO = Path(__file__).resolve().parents[1]
STARTING_FRESH = REPO / "scenarios" / "starting-fresh-2026.yaml"

# --------------------------------------------------------------------------- helpers


def target(i: int, **kw: Any) -> TargetPlan:
    """A provider deployment of group 'g' with only the fields a strategy reads set."""
    return TargetPlan(
        index=i,
        group="g",
        label=f"t{i}",
        kind="provider",
        region="us-east",
        jurisdiction="us",
        context_window=10**6,
        **kw,
    )


def run(sc: dict[str, Any], seed: int = 1) -> tuple[Simulation, Result]:
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "gateway-test.yaml")
    sim = Simulation(rs, seed=seed).run()
    return sim, build_result(sim)


def attempts_by_call(sim: Simulation) -> dict[int, list[tuple[float, float, int, int, str]]]:
    """call -> its attempts (start, end, target index, http, kind) in start order."""
    gw = sim.gateway
    assert gw is not None
    out: dict[int, list[tuple[float, float, int, int, str]]] = defaultdict(list)
    for c, t, s, e, h, k in zip(gw.a_call, gw.a_target, gw.a_start, gw.a_end, gw.a_http, gw.a_kind):
        out[c].append((s, e, t, h, k))
    for v in out.values():
        v.sort()
    return out


def max_in_any_window(times: list[float], window: float = 60.0) -> int:
    """Largest number of `times` inside any half-open window [a, a + window), a an element."""
    ts = sorted(times)
    best, j = 0, 0
    for i, a in enumerate(ts):
        j = max(j, i)
        while j < len(ts) and ts[j] < a + window:
            j += 1
        best = max(best, j - i)
    return best


# --------------------------------------------------------------------------- 1. routing strategies


def test_simple_shuffle_weights_from_first_candidate() -> None:
    rng = np.random.default_rng(0)
    s = SimpleShuffle(rng)
    n = 4000
    a, b = target(0, weight=3.0), target(1, weight=1.0)
    hits = sum(s.pick([a, b], 0.0, 10) is a for _ in range(n))
    sd = math.sqrt(n * 0.75 * 0.25)
    assert abs(hits - 0.75 * n) <= 4 * sd, hits

    # The first candidate has no weight but an rpm: rpm weights every candidate (the second's
    # weight is ignored), 1:3.
    a, b = target(0, rpm=100), target(1, rpm=300, weight=1000.0)
    hits = sum(s.pick([a, b], 0.0, 10) is a for _ in range(n))
    assert abs(hits - 0.25 * n) <= 4 * sd, hits

    # Only tpm on the first: tpm is used.
    a, b = target(0, tpm=1000), target(1, tpm=1000, rpm=1)
    hits = sum(s.pick([a, b], 0.0, 10) is a for _ in range(n))
    assert abs(hits - 0.5 * n) <= 4 * math.sqrt(n * 0.25), hits

    # A missing value counts 0: the second candidate (no weight) is never picked.
    a, b = target(0, weight=1.0), target(1)
    assert all(s.pick([a, b], 0.0, 10) is a for _ in range(500))
    # ... and order matters: with the weightless one first, the pick is uniform.
    hits = sum(s.pick([b, a], 0.0, 10) is b for _ in range(n))
    assert abs(hits - 0.5 * n) <= 4 * math.sqrt(n * 0.25), hits
    assert s.pick([], 0.0, 10) is None


def test_least_busy_picks_min_in_flight_first_on_ties() -> None:
    u = Usage(3)
    lb = LeastBusy(u)
    t0, t1, t2 = target(0), target(1), target(2)
    u.in_flight[:] = [2, 1, 1]
    assert lb.pick([t0, t1, t2], 0.0, 10) is t1
    assert lb.pick([t0, t2, t1], 0.0, 10) is t2  # ties: the first in list order
    u.in_flight[:] = [0, 0, 0]
    assert lb.pick([t2, t0, t1], 0.0, 10) is t2
    # start/end move the counter.
    u.start(2, 0.0)
    assert lb.pick([t2, t0, t1], 0.0, 10) is t0
    u.end(2, 1.0, 100, ok=True)
    assert lb.pick([t2, t0, t1], 0.0, 10) is t2
    assert lb.pick([], 0.0, 10) is None


def test_usage_based_v2_limits_and_lowest_tpm() -> None:
    u = Usage(3)
    ub = UsageBased(u, np.random.default_rng(0))
    a, b, c = target(0, tpm=1000), target(1, rpm=5), target(2)
    # Lowest TPM used this minute wins.
    u.tpm[:] = [100, 50, 70]
    u.minute[:] = [0, 0, 0]
    assert ub.pick([a, b, c], 10.0, 10) is b
    # tpm_used + input > tpm skips; == tpm is still allowed.
    u.tpm[:] = [900, 950, 960]
    assert ub.pick([a, c], 10.0, 100) is a  # 900 + 100 == 1000: allowed, and the lowest
    assert ub.pick([a, c], 10.0, 101) is c  # 1001 > 1000: skipped
    # rpm_used + 1 >= rpm skips: rpm 5 allows 4 per minute.
    u.tpm[:] = [0, 0, 0]
    u.rpm[:] = [0, 3, 0]
    assert ub.pick([b], 10.0, 1) is b
    u.rpm[1] = 4
    assert ub.pick([b], 10.0, 1) is None
    # None qualifies: None (a 429 "No deployments available").
    u.tpm[0] = 1000
    assert ub.pick([a, b], 10.0, 1) is None
    # A new UTC minute resets the counters.
    assert ub.pick([a, b], 60.0, 1) in (a, b)
    assert u.rpm_used(1, 60.0) == 0 and u.tpm_used(0, 60.0) == 0
    # Ties on TPM are broken at random: both get picked.
    u2 = Usage(2)
    ub2 = UsageBased(u2, np.random.default_rng(1))
    picks = {ub2.pick([target(0), target(1)], 0.0, 1).index for _ in range(200)}  # type: ignore[union-attr]
    assert picks == {0, 1}


def test_latency_based_unseen_penalty_ttl_window() -> None:
    u = Usage(3)
    lat = LatencyBased(3, u, np.random.default_rng(0), window=3, ttl_s=100.0, buffer=0.0)
    t0, t1, t2 = target(0), target(1), target(2)
    # One sample: response time / completion tokens.
    lat.observe(0, 0.0, 2.0, 100, timed_out=False)
    assert lat.latency(0, 1.0) == pytest.approx(0.02)
    # Unseen deployments count 0 and are tried first.
    assert lat.latency(1, 1.0) == 0.0
    assert all(lat.pick([t0, t1], 1.0, 10) is t1 for _ in range(50))
    # A timeout is a 1000 s sample.
    lat.observe(1, 1.0, 5.0, 10, timed_out=True)
    assert lat.latency(1, 2.0) == TIMEOUT_PENALTY
    assert lat.pick([t0, t1], 2.0, 10) is t0
    # Only the last `window` samples count.
    for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        lat.observe(2, 10.0 + i, v, 1, timed_out=False)
    assert lat.latency(2, 20.0) == pytest.approx(4.0)
    # Samples older than the TTL are dropped (kept while ts > now - ttl).
    assert lat.latency(0, 99.9) == pytest.approx(0.02)
    assert lat.latency(0, 100.0) == 0.0
    # After the TTL deployment 0 counts as unseen again and wins over 1 (penalised) and 2.
    assert lat.pick([t1, t2, t0], 100.0, 10) is t0
    # Over its RPM this minute: skipped even though it is the fastest.
    t0_limited = target(0, rpm=2)
    u.start(0, 100.0)
    assert lat.pick([t0_limited, t2], 100.0, 10) is t2
    # A buffer widens the set picked from at random.
    wide = LatencyBased(2, Usage(2), np.random.default_rng(3), window=10, ttl_s=3600.0, buffer=1.0)
    wide.observe(0, 0.0, 1.0, 1, timed_out=False)
    wide.observe(1, 0.0, 1.5, 1, timed_out=False)
    assert {wide.pick([t0, t1], 1.0, 1).index for _ in range(100)} == {0, 1}  # type: ignore[union-attr]
    narrow = LatencyBased(
        2, Usage(2), np.random.default_rng(3), window=10, ttl_s=3600.0, buffer=0.0
    )
    narrow.observe(0, 0.0, 1.0, 1, timed_out=False)
    narrow.observe(1, 0.0, 1.5, 1, timed_out=False)
    assert {narrow.pick([t0, t1], 1.0, 1).index for _ in range(100)} == {0}  # type: ignore[union-attr]


def test_cost_based_cheapest_no_random_tie_break() -> None:
    u = Usage(4)
    cb = CostBased(u)
    a = target(0, usd_in_per_token=2e-6, usd_out_per_token=8e-6)
    b = target(1, usd_in_per_token=1e-6, usd_out_per_token=4e-6)
    c = target(2, usd_in_per_token=4e-6, usd_out_per_token=1e-6)  # same total as b
    d = target(
        3, usd_in_per_token=1e-7, usd_out_per_token=1e-7, rpm=1
    )  # cheapest, but rpm 1 allows none
    assert cb.pick([a, b, c], 0.0, 10) is b
    assert all(cb.pick([a, c, b], 0.0, 10) is c for _ in range(50))  # ties: first in order, always
    assert cb.pick([d, a, b], 0.0, 10) is b
    assert cb.pick([d], 0.0, 10) is None


def test_latency_based_samples_only_successes_and_timeouts() -> None:
    out = 20
    sc = {
        "name": "latency-samples",
        "horizon_s": 60,
        "drain": True,
        # 'a' is the faster one (so it keeps being picked) and fails 30% of the time.
        "providers": {"a": endpoint(error_rate=0.3, latency_scale=0.5), "b": endpoint()},
        "gateway": {
            "model_list": [
                {"model_name": "m", "litellm_params": {"model": "a/gpt-4o-mini"}},
                {"model_name": "m", "litellm_params": {"model": "b/gpt-4o-mini"}},
            ],
            "router_settings": {
                "routing_strategy": "latency-based-routing",
                "num_retries": 2,
                "timeout": 3,
                "disable_cooldowns": True,
                "routing_strategy_args": {"max_latency_list_size": 100_000},
            },
        },
        "workloads": {"w": workload("m", rate=2.0, out=out)},
        "faults": [
            {
                "kind": "provider_outage",
                "provider": "a",
                "at_s": 20,
                "duration_s": 10,
                "mode": "timeout",
            }
        ],
    }
    sim, _ = run(sc)
    gw = sim.gateway
    assert gw is not None and isinstance(gw.strategy, LatencyBased)
    kinds = [k for t, k in zip(gw.a_target, gw.a_kind) if t == 0]
    assert {"ok", "error", "timeout"} <= set(kinds)  # the case is exercised
    for ti in range(2):
        expected = [
            (e - s) / out if h == 200 else TIMEOUT_PENALTY
            for t, s, e, h, k in zip(gw.a_target, gw.a_start, gw.a_end, gw.a_http, gw.a_kind)
            if t == ti and (h == 200 or k == "timeout")
        ]
        got = [v for _, v in gw.strategy.samples[ti]]
        assert len(got) == len(expected), (ti, len(got), len(expected))
        assert got == pytest.approx(expected)


# --------------------------------------------------------------------------- 2. cooldowns


def test_cooldown_429_in_group_of_two_lasts_exactly_cooldown() -> None:
    cd = Cooldowns(2, cooldown_s=5.0, allowed_fails=None)
    cd.record(0, 10.0, 429, group_size=2)
    assert cd.cooled(0, 10.0)
    assert cd.cooled(0, 15.0 - 1e-9)
    assert not cd.cooled(0, 15.0)
    assert not cd.cooled(1, 10.0)
    assert cd.events == [(0, 10.0, 15.0)]
    # Failing again while cooled keeps the first deadline (LiteLLM issue #40130).
    cd.record(0, 13.0, 429, group_size=2)
    assert not cd.cooled(0, 15.0)
    assert len(cd.events) == 1
    # After the deadline, a new 429 cools again from then.
    cd.record(0, 16.0, 429, group_size=2)
    assert cd.cooled(0, 21.0 - 1e-9) and not cd.cooled(0, 21.0)


def test_cooldown_429_single_deployment_and_400_never() -> None:
    cd = Cooldowns(1, cooldown_s=5.0, allowed_fails=None)
    for k in range(20):
        cd.record(0, float(k), 429, group_size=1)
    assert not cd.cooled(0, 19.5)
    cd2 = Cooldowns(2, cooldown_s=5.0, allowed_fails=None)
    for k in range(20):
        cd2.record(0, float(k), 400, group_size=2)
    assert not cd2.cooled(0, 19.5)
    # 400 never cools under the legacy allowed_fails logic either.
    cd3 = Cooldowns(1, cooldown_s=5.0, allowed_fails=0)
    for k in range(10):
        cd3.record(0, float(k) / 10, 400, group_size=1)
    assert not cd3.cooled(0, 0.95)
    assert cd.events == cd2.events == cd3.events == []
    # cooldown 0 (disable_cooldowns) never cools.
    cd4 = Cooldowns(2, cooldown_s=0.0, allowed_fails=None)
    cd4.record(0, 1.0, 429, group_size=2)
    assert not cd4.cooled(0, 1.0)
    # 401 / 404 (not retryable) cool at once, even a single deployment.
    for status in (401, 404):
        cd5 = Cooldowns(1, cooldown_s=5.0, allowed_fails=None)
        cd5.record(0, 1.0, status, group_size=1)
        assert cd5.cooled(0, 1.0) and not cd5.cooled(0, 6.0)


def test_cooldown_allowed_fails_legacy_window() -> None:
    cd = Cooldowns(1, cooldown_s=5.0, allowed_fails=2)
    cd.record(0, 0.0, 500, group_size=1)
    cd.record(0, 1.0, 429, group_size=1)
    assert not cd.cooled(0, 1.0)
    cd.record(0, 2.0, 503, group_size=1)  # the third failure within 5 s: more than allowed_fails
    assert cd.cooled(0, 2.0) and cd.cooled(0, 7.0 - 1e-9) and not cd.cooled(0, 7.0)
    # Failures spread out beyond the window never add up.
    cd = Cooldowns(1, cooldown_s=5.0, allowed_fails=2)
    for t in (0.0, 3.0, 6.0, 9.0, 12.0):  # at most 2 in any 5 s
        cd.record(0, t, 500, group_size=1)
    assert cd.events == []
    cd.record(0, 13.0, 500, group_size=1)  # 9, 12, 13: three within 5 s
    assert cd.cooled(0, 13.0)


def test_cooldown_5xx_failure_rate_needs_five_calls() -> None:
    cd = Cooldowns(2, cooldown_s=5.0, allowed_fails=None)
    for k in range(4):
        cd.record(0, 1.0 + k, 500, group_size=2)
    assert not cd.cooled(0, 4.5)  # 4 calls, all failed: too few
    cd.record(0, 5.0, 500, group_size=2)
    assert cd.cooled(0, 5.0)  # 5 calls, 100% failed
    # Exactly half is not more than half.
    cd = Cooldowns(2, cooldown_s=5.0, allowed_fails=None)
    for k in range(3):
        cd.record(0, 1.0 + k, 200, group_size=2)
    for k in range(3):
        cd.record(0, 10.0 + k, 500, group_size=2)
    assert not cd.cooled(0, 12.0)  # 3 of 6
    cd.record(0, 13.0, 500, group_size=2)
    assert cd.cooled(0, 13.0)  # 4 of 7
    # The count is per minute: failures at 58 and 59 do not count at 60+.
    cd = Cooldowns(2, cooldown_s=5.0, allowed_fails=None)
    for t in (56.0, 57.0, 58.0, 59.0, 60.0, 61.0, 62.0, 63.0):
        cd.record(0, t, 502, group_size=2)
    assert not cd.cooled(0, 63.0)
    cd.record(0, 64.0, 502, group_size=2)  # 5 failures in minute 1
    assert cd.cooled(0, 64.0)
    # A single-deployment group never cools on 5xx (v2 logic).
    cd = Cooldowns(1, cooldown_s=5.0, allowed_fails=None)
    for k in range(50):
        cd.record(0, k / 10, 500, group_size=1)
    assert cd.events == []


# --------------------------------------------------------------------------- 3. sliding windows

QUARTERS = st.lists(st.integers(0, 2400), min_size=0, max_size=120).map(
    lambda xs: sorted(x * 0.25 for x in xs)
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(times=QUARTERS, limit=st.integers(1, 12))
def test_sliding_count_never_exceeds_limit_in_any_window(times: list[float], limit: int) -> None:
    sc = SlidingCount(limit)
    admitted, refused = [], []
    for t in times:
        if sc.allows(t):
            sc.add(t)
            admitted.append(t)
        else:
            refused.append(t)
    assert max_in_any_window(admitted) <= limit
    # Not stricter than it must be: a refusal means `limit` admissions in (t - 60, t].
    for t in refused:
        assert sum(1 for a in admitted if t - 60.0 < a <= t) == limit


@settings(max_examples=100, deadline=None, derandomize=True)
@given(times=QUARTERS, limit=st.integers(50, 500), data=st.data())
def test_sliding_sum_never_exceeds_limit_in_any_window(
    times: list[float], limit: int, data: st.DataObject
) -> None:
    ss = SlidingSum(limit)
    admitted: list[tuple[float, int]] = []
    for t in times:
        amount = data.draw(st.integers(1, 100))
        if ss.allows(t, amount):
            ss.add(t, amount)
            admitted.append((t, amount))
    for a, _ in admitted:
        assert sum(x for s, x in admitted if a <= s < a + 60.0) <= limit


def test_key_rpm_limit_holds_in_any_60s_through_the_gateway() -> None:
    limit = 40
    sc = {
        "name": "key-rpm",
        "horizon_s": 300,
        "providers": {"oa": endpoint()},
        "gateway": {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "oa/gpt-4o"}}],
            "keys": {"k1": {"rpm_limit": limit}},
        },
        "workloads": {
            "heavy": workload("m", rate=3.0, tags={"key": "k1"}),
            "free": workload("m", rate=1.0),  # no key: never rate limited
        },
    }
    sim, res = run(sc)
    df = res.requests
    gw = df[df["via"] == "gateway"]
    heavy = gw[gw["workload"] == "heavy"]
    limited = heavy[heavy["outcome"] == "rate_limited"]
    assert len(limited) > 0 and (limited["http_status"] == 429).all()
    assert (gw[gw["workload"] == "free"]["outcome"] != "rate_limited").all()
    # Admission time = the first attempt's start (no cache, no guardrails, the provider never 429s).
    att = attempts_by_call(sim)
    admitted = heavy[heavy["outcome"] != "rate_limited"]["call"].tolist()
    firsts = [att[c][0][0] for c in admitted if c in att]
    # (calls still in their first attempt at the horizon are not in the log yet)
    assert len(admitted) - len(firsts) <= 5
    assert max_in_any_window(firsts) <= limit
    assert len(firsts) >= 4 * limit  # and the limit is used, not starved (5 minutes)
    # No rate-limited call ever reached a deployment.
    assert not set(limited["call"]) & set(att)


# --------------------------------------------------------------------------- 4. budgets

# 2^-10 USD per input token x 128 tokens = 1/8 USD per call, exactly; output free.
CALL_USD = 0.125


def budget_scenario(max_budget: float, duration: str | None, horizon: float) -> dict[str, Any]:
    team: dict[str, Any] = {"max_budget": max_budget}
    if duration is not None:
        team["budget_duration"] = duration
    return {
        "name": "budget",
        "horizon_s": horizon,
        "drain": True,
        "providers": {"oa": endpoint()},
        "gateway": {
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {
                        "model": "oa/gpt-4o",
                        "input_cost_per_token": 2.0**-10,
                        "output_cost_per_token": 0.0,
                    },
                }
            ],
            "teams": {"t": team},
        },
        "workloads": {
            "spender": workload("m", rate=3.0, inp=128, out=100, tags={"team": "t"}),
            "other": workload("m", rate=0.5, inp=128, out=100),
        },
    }


def test_budget_cap_no_admission_after_first_rejection_and_bounded_overshoot() -> None:
    B = 1.0
    sim, res = run(budget_scenario(B, None, horizon=30.0))
    gw = sim.gateway
    assert gw is not None
    p = gw.principals[("team", "t")]
    assert p.budget is not None and p.budget.hit_at
    first_reject = p.budget.hit_at[0]
    df = res.requests
    mine = df[(df["via"] == "gateway") & (df["workload"] == "spender")]
    rejected = mine[mine["outcome"] == "budget_exceeded"]
    assert len(rejected) == len(p.budget.hit_at) > 0
    assert (rejected["status"] == "rejected").all() and (rejected["http_status"] == 400).all()
    att = attempts_by_call(sim)
    admitted = mine[mine["outcome"] != "budget_exceeded"]
    starts = {c: att[c][0][0] for c in admitted["call"]}
    ends = {c: att[c][-1][1] for c in admitted["call"]}
    assert max(starts.values()) < first_reject  # nothing admitted after the first refusal
    assert not set(rejected["call"]) & set(att)
    # Every admitted call completed (drain) and cost exactly 1/8.
    assert (admitted["outcome"] == "ok").all()
    assert np.allclose(admitted["cost_usd"], CALL_USD)
    spent = float(admitted["cost_usd"].sum())
    assert spent == pytest.approx(p.budget.spent)
    assert spent > B
    # The overshoot comes only from calls in flight when the cap was crossed.
    order = sorted(ends, key=ends.get)  # type: ignore[arg-type]
    running = 0.0
    crossing_t = None
    for c in order:
        running += CALL_USD
        if running >= B:
            crossing_t = ends[c]
            break
    assert crossing_t is not None and crossing_t <= first_reject + 1e-9
    in_flight = [c for c in admitted["call"] if starts[c] <= crossing_t < ends[c]]
    assert spent <= B + CALL_USD * (len(in_flight) + 1) + 1e-12
    principal = res.summary["gateway"]["principals"]["team:t"]
    assert principal["max_overshoot_usd"] == pytest.approx(spent - B, abs=1e-6)
    assert principal["budget_rejections"] == len(rejected)
    assert principal["first_budget_rejection_s"] == pytest.approx(first_reject, abs=1e-3)
    # The team without a budget is not touched.
    other = df[(df["via"] == "gateway") & (df["workload"] == "other")]
    assert (other["outcome"] == "ok").all()


def test_budget_duration_resets_spend() -> None:
    B, window = 1.0, 20.0
    sim, res = run(budget_scenario(B, "20s", horizon=70.0))
    gw = sim.gateway
    assert gw is not None
    p = gw.principals[("team", "t")]
    assert p.budget is not None
    att = attempts_by_call(sim)
    df = res.requests
    mine = df[(df["via"] == "gateway") & (df["workload"] == "spender")]
    admitted = [att[c][0][0] for c in mine[mine["outcome"] != "budget_exceeded"]["call"]]
    rejects = p.budget.hit_at
    for k in range(3):  # windows [0, 20), [20, 40), [40, 60)
        lo, hi = k * window, (k + 1) * window
        adm = [t for t in admitted if lo <= t < hi]
        rej = [t for t in rejects if lo <= t < hi]
        assert adm, f"window {k} admitted nothing: the spend did not reset"
        assert rej, f"window {k} never hit the cap"
        assert max(adm) < min(rej)  # within a window nothing is admitted after the first refusal


# --------------------------------------------------------------------------- 5. fallbacks


def fallback_scenario(down: list[str], num_retries: int = 2, **gw_extra: Any) -> dict[str, Any]:
    return {
        "name": "fallbacks",
        "horizon_s": 30,
        "drain": True,
        "providers": {
            "pa": endpoint(),
            "pb": endpoint(region="eu-west"),
            "pc": endpoint(region="uk"),
            "pd": endpoint(region="jp"),
        },
        "gateway": {
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "pa/gpt-4o"}},
                {"model_name": "b", "litellm_params": {"model": "pb/gpt-4o"}},
                {"model_name": "c", "litellm_params": {"model": "pc/gpt-4o"}},
                {"model_name": "big", "litellm_params": {"model": "pd/gpt-4o"}},
            ],
            "router_settings": {
                "num_retries": num_retries,
                "fallbacks": [{"a": ["b", "c"]}],
                **gw_extra,
            },
        },
        "workloads": {"w": workload("a", rate=1.0)},
        "faults": [
            {
                "kind": "provider_outage",
                "provider": p,
                "at_s": 0,
                "duration_s": 10_000,
                "mode": "error",
                "status": 503,
            }
            for p in down
        ],
    }


@pytest.mark.parametrize("down, chain", [(["pa"], ["a", "b"]), (["pa", "pb"], ["a", "b", "c"])])
def test_fallbacks_tried_in_order(down: list[str], chain: list[str]) -> None:
    retries = 2
    sim, res = run(fallback_scenario(down, retries))
    gw = sim.gateway
    assert gw is not None
    calls = res.requests[res.requests["via"] == "gateway"]
    assert len(calls) > 10
    assert (calls["outcome"] == "ok").all()
    region = {"b": "eu-west", "c": "uk"}[chain[-1]]
    assert (calls["target"] == f"p{chain[-1]}/gpt-4o@{region}").all()
    expected = [g for g in chain[:-1] for _ in range(1 + retries)] + [chain[-1]]
    for cid, tries in attempts_by_call(sim).items():
        assert [gw.targets[t].group for _, _, t, _, _ in tries] == expected, cid
        assert [h for _, _, _, h, _ in tries] == [503] * (len(expected) - 1) + [200]
    assert (calls["attempts"] == len(expected)).all()
    assert (calls["fallbacks"] == len(chain) - 1).all()
    assert (calls["retries"] == retries * (len(chain) - 1)).all()


def test_all_fallbacks_down_fails_after_every_group() -> None:
    _, res = run(fallback_scenario(["pa", "pb", "pc"], num_retries=1))
    calls = res.requests[res.requests["via"] == "gateway"]
    assert (calls["status"] == "failed").all() and (calls["outcome"] == "error").all()
    assert (calls["http_status"] == 503).all()
    assert (calls["attempts"] == 3 * 2).all()


def test_context_window_error_uses_context_window_fallbacks_without_retry() -> None:
    sc = fallback_scenario([], num_retries=2, context_window_fallbacks=[{"a": ["big"]}])
    sc["gateway"]["model_list"][0]["model_info"] = {"max_input_tokens": 100}
    sim, res = run(sc)
    gw = sim.gateway
    assert gw is not None
    calls = res.requests[res.requests["via"] == "gateway"]
    assert len(calls) > 10
    assert (calls["outcome"] == "ok").all() and (calls["target"] == "pd/gpt-4o@jp").all()
    assert (
        (calls["retries"] == 0).all()
        and (calls["attempts"] == 2).all()
        and (calls["fallbacks"] == 1).all()
    )
    for tries in attempts_by_call(sim).values():
        assert [(gw.targets[t].group, h, k) for _, _, t, h, k in tries] == [
            ("a", 400, "context_window"),
            ("big", 200, "ok"),
        ]
    # Without context_window_fallbacks, the general fallbacks take it (still no retry).
    sc2 = fallback_scenario([], num_retries=2)
    sc2["gateway"]["model_list"][0]["model_info"] = {"max_input_tokens": 100}
    _, res2 = run(sc2)
    calls2 = res2.requests[res2.requests["via"] == "gateway"]
    assert (calls2["target"] == "pb/gpt-4o@eu-west").all() and (calls2["attempts"] == 2).all()


# --------------------------------------------------------------------------- 6. timeouts


@pytest.mark.parametrize("deployment_timeout", [None, 1.25])
def test_timeout_outage_attempts_end_exactly_at_timeout(deployment_timeout: float | None) -> None:
    T = 2.5
    sc = fallback_scenario([], num_retries=1, timeout=T, disable_cooldowns=True)
    sc["faults"] = [
        {
            "kind": "provider_outage",
            "provider": "pa",
            "at_s": 0,
            "duration_s": 10_000,
            "mode": "timeout",
        }
    ]
    sc["gateway"]["router_settings"]["fallbacks"] = []
    if deployment_timeout is not None:
        sc["gateway"]["model_list"][0]["litellm_params"]["timeout"] = deployment_timeout
    sim, res = run(sc)
    gw = sim.gateway
    assert gw is not None
    expected = deployment_timeout or T
    assert len(gw.a_start) > 10
    for s, e, h, k in zip(gw.a_start, gw.a_end, gw.a_http, gw.a_kind):
        assert e - s == pytest.approx(expected, abs=1e-9)
        assert (h, k) == (408, "timeout")
    calls = res.requests[res.requests["via"] == "gateway"]
    done = calls[calls["status"] != "running"]
    assert (done["outcome"] == "timeout").all() and (done["http_status"] == 408).all()
    assert (done["attempts"] == 2).all()


# --------------------------------------------------------------------------- 7. exact cache


def test_exact_cache_hits_after_first_completion() -> None:
    sc = {
        "name": "cache",
        "horizon_s": 60,
        "providers": {"oa": endpoint()},
        "gateway": {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "oa/gpt-4o"}}],
            "litellm_settings": {"cache": True},
        },
        "workloads": {"w": workload("m", rate=4.0, prompts={"unique": 1})},
    }
    _, res = run(sc)
    calls = res.requests[res.requests["via"] == "gateway"].sort_values("arrival_s")
    ok = calls[calls["outcome"] == "ok"]
    first_done = float(ok["finish_s"].min())
    later = calls[calls["arrival_s"] > first_done]
    assert len(later) > 100
    assert (later["outcome"] == "cache_hit").all()
    assert (later["cache_hit"] == "exact").all()
    assert (later["cost_usd"] == 0.0).all() and (later["attempts"] == 0).all()
    # Misses only before the first answer came back, and those were paid for.
    assert (ok["arrival_s"] < first_done).all() and (ok["cost_usd"] > 0).all()
    assert res.summary["gateway"]["cache"]["exact_hits"] == len(
        calls[calls["cache_hit"] == "exact"]
    )
    # Cache off: no hits at all.
    sc["gateway"]["litellm_settings"]["cache"] = False
    _, res_off = run(sc)
    assert res_off.summary["gateway"]["cache"]["exact_hits"] == 0


# ----------------------------------------------------------------- 8-9. accounting, determinism


def starting_fresh(**extra: Any) -> Any:
    return load_scenario(STARTING_FRESH, overrides={"horizon_s": 300, "warmup_s": 10, **extra})


# The bundled outage moved into the short horizon, so failures, retries and fallbacks happen.
EARLY_OUTAGE = [
    {
        "kind": "provider_outage",
        "provider": "anthropic",
        "at_s": 60,
        "duration_s": 120,
        "mode": "error",
        "status": 503,
    }
]


@pytest.mark.parametrize("faults", [None, EARLY_OUTAGE], ids=["bundled", "early-outage"])
def test_every_call_accounted_for(faults: list[dict[str, Any]] | None) -> None:
    rs = starting_fresh(**({"faults": faults} if faults else {}))
    sim = Simulation(rs).run()
    res = build_result(sim)
    for sect in (res.summary["gateway"]["calls"], res.summary["requests"]):
        assert (
            sect["arrived"]
            == sect["completed"] + sect["rejected"] + sect["failed"] + sect["in_flight"]
        )
    g = res.summary["gateway"]["calls"]
    calls = res.requests[res.requests["via"] == "gateway"]
    assert g["arrived"] == len(calls) == res.summary["requests"]["arrived"] > 1000
    assert sum(res.summary["gateway"]["outcomes"].values()) == g["arrived"] - g["in_flight"]
    assert sim.gateway is not None and sim.calls is not None
    assert sim.gateway.pending == int((sim.calls.state == 0).sum())
    # Every finished attempt is logged once; a call still running may have one attempt open.
    logged = res.attempts["call"].value_counts()
    done = calls[calls["status"] != "running"]
    assert (
        logged.reindex(done["call"], fill_value=0).to_numpy() == done["attempts"].to_numpy()
    ).all()
    assert 0 <= int(calls["attempts"].sum()) - len(res.attempts) <= g["in_flight"]
    if faults:
        assert res.summary["gateway"]["fallbacks"] > 0
        assert (
            res.summary["gateway"]["targets"]["anthropic/claude-sonnet-4-5-20250929@global"][
                "errors_by_status"
            ].get("503", 0)
            > 0
        )


def test_same_seed_same_result() -> None:
    a = build_result(Simulation(starting_fresh(faults=EARLY_OUTAGE), seed=3).run())
    b = build_result(Simulation(starting_fresh(faults=EARLY_OUTAGE), seed=3).run())
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.attempts is not None and b.attempts is not None
    pd.testing.assert_frame_equal(a.attempts, b.attempts)
    assert a.summary == b.summary
    c = build_result(Simulation(starting_fresh(faults=EARLY_OUTAGE), seed=4).run())
    assert not a.requests["arrival_s"].equals(c.requests["arrival_s"])


# --------------------------------------------------------------------------- 6b. a timeout cancels queued work


def _overloaded(timeout: float, balancer: str = "least_outstanding") -> dict[str, Any]:
    """One replica that runs one sequence at a time behind LiteLLM, fed three times faster than
    it serves: the queue grows and attempts time out while waiting."""
    return {
        "name": "cancel", "seed": 3, "horizon_s": 60, "drain": True,
        "pools": {"g": {"accelerator": "h100-sxm", "count": 1, "price_usd_per_gpu_hour": 1.0}},
        "deployments": {"d": {"model": "llama-3.1-8b", "pool": "g", "replicas": 1,
                              "engine": {"max_num_seqs": 1, "max_model_len": 4096},
                              "load_balancer": {"kind": balancer}}},
        "gateway": {"model_list": [{"model_name": "m", "litellm_params": {"model": "hosted_vllm/d"}}],
                    "router_settings": {"num_retries": 0, "timeout": timeout}},
        "workloads": {"w": {"target": "m", "arrival": {"kind": "poisson", "rate_per_s": 3.0},
                            "input_tokens": {"kind": "fixed", "value": 200}, "output_tokens": {"kind": "fixed", "value": 100}}},
    }


@pytest.mark.parametrize("balancer", ["least_outstanding", "shared_queue"])
def test_a_timed_out_request_still_queued_is_dropped_not_served(balancer: str) -> None:
    """vLLM aborts a request whose connection closes: a request the gateway times out while it
    still waits in a queue (a replica's, or the deployment's shared one) fails then and never
    reaches the GPU; one already admitted runs to its end. Every serving request is accounted for."""
    sim, res = run(_overloaded(2.0, balancer))
    r = sim.reqs
    n = r.n
    status, admitted = np.asarray(r.status[:n]), np.asarray(r.admitted_s[:n])
    finish, arrival = np.asarray(r.finish_s[:n]), np.asarray(r.arrival_s[:n])
    dropped = status == FAILED
    assert dropped.sum() > 10, "the case is exercised"
    assert np.isnan(admitted[dropped]).all()  # never admitted, so never on the GPU
    waited = finish[dropped] - arrival[dropped]
    assert waited.max() - waited.min() < 1e-9 and waited[0] <= 2.0  # all dropped at their timeout
    assert set(status.tolist()) == {COMPLETED, FAILED}  # none left queued or running
    # Every timed-out attempt is a dropped request or one admitted in time that ran on.
    timeouts = sum(k == "timeout" for v in attempts_by_call(sim).values() for (*_x, k) in v)
    ran_on = int(((status == COMPLETED) & (finish - arrival > waited[0])).sum())
    assert timeouts == int(dropped.sum()) + ran_on and ran_on > 0
    d = res.summary["deployments"]["d"]["requests"]
    assert (d["completed"], d["failed"]) == (int((status == COMPLETED).sum()), int(dropped.sum()))


def test_a_request_held_for_a_cold_start_is_dropped_at_its_timeout() -> None:
    """Scale to zero: requests that arrive while the first replica is still provisioning are held;
    those whose attempt times out first are dropped from the hold, not served later."""
    sc = _overloaded(2.0)
    sc["workloads"]["w"]["arrival"] = {"kind": "poisson", "rate_per_s": 0.5}
    sc["deployments"]["d"]["replicas"] = 0
    sc["deployments"]["d"]["autoscaling"] = {"min_replicas": 0, "max_replicas": 1, "metric": {"kind": "concurrency", "target_per_replica": 4},
                                             "provisioning_s": 20.0, "model_load_s": 10.0}
    sim, _ = run(sc)
    r = sim.reqs
    n = r.n
    status, admitted = np.asarray(r.status[:n]), np.asarray(r.admitted_s[:n])
    finish, arrival = np.asarray(r.finish_s[:n]), np.asarray(r.arrival_s[:n])
    # A cold start takes 30 s and every attempt gives up after 2 s: each request is dropped from the
    # hold at its timeout (with nothing held, the autoscaler lets the new replica go again).
    assert n >= 5 and (status == FAILED).all() and np.isnan(admitted).all()
    assert np.allclose(finish - arrival, (finish - arrival)[0]) and (finish - arrival)[0] <= 2.0
    a = sim.deployments["d"].autoscaler
    assert a is not None and not a.pending and not a.held_since and a.cold_starts >= 1
