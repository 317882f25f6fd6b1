"""The Portkey-style gateway (``gateway: {kind: portkey, configs: ...}``).

Each rule is checked against what the Portkey-AI/gateway source does (shared/facts/REFERENCE.md
section 1.2: src/handlers/handlerUtils.ts ``tryTargetsRecursively``, src/handlers/retryHandler.ts,
src/services/conditionalRouter.ts): load-balance weights, fallback on status codes, retries with
async-retry's 1 s / 2 s / 4 s backoff or the 429's Retry-After (capped at 60 s of waiting in
total), inheritance of retry / cache / request_timeout, conditional routing, the exact cache,
residency (stacksim's addition), call accounting, determinism, bad input and the CLI.

Small scenarios are built as dicts and checked through the call table and the attempt log
(``sim.gateway.a_*``), never wall-clock time. The gateway's own overhead is set to zero where a
test predicts exact times, so that every provider sees a request a fixed time after it arrives.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from stacksim.cli import app
from stacksim.engine.simulation import Simulation
from stacksim.errors import ScenarioError
from stacksim.gateway.portkey import evaluate
from stacksim.metrics.summary import Result, build_result
from stacksim.network import build_region_map
from stacksim.scenario import load_scenario_text
from tests.gateway_helpers import endpoint, workload

REPO = Path(__file__).resolve().parents[1]
DOCS_CONFIG = REPO / "tests" / "data" / "portkey_docs_config.json"
GPT4O, CLAUDE, LLAMA = "gpt-4o", "claude-sonnet-4-5-20250929", "llama-3.3-70b-versatile"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# --------------------------------------------------------------------------- helpers


def once_at(target_: str, t: float, **kw: Any) -> dict[str, Any]:
    """One call arriving at time t (a deterministic stream's first arrival is at 1 / rate)."""
    return {
        **workload(target_, **kw),
        "arrival": {"kind": "deterministic", "rate_per_s": 1.0 / t},
        "max_requests": 1,
    }


def leaf(key: str, model: str = GPT4O, **kw: Any) -> dict[str, Any]:
    """A Portkey provider target naming a providers: entry."""
    return {"virtual_key": key, "override_params": {"model": model}, **kw}


def outage(
    provider: str,
    mode: str = "error",
    at: float = 0.0,
    duration: float = 10_000.0,
    status: int = 503,
) -> dict[str, Any]:
    f: dict[str, Any] = {
        "kind": "provider_outage",
        "provider": provider,
        "at_s": at,
        "duration_s": duration,
        "mode": mode,
    }
    if mode == "error":
        f["status"] = status
    return f


def scenario(
    configs: dict[str, Any],
    providers: dict[str, Any],
    workloads: dict[str, Any],
    faults: list[dict[str, Any]] | None = None,
    horizon: float = 30.0,
    **gw: Any,
) -> dict[str, Any]:
    return {
        "name": "portkey-test",
        "horizon_s": horizon,
        "drain": True,
        "providers": providers,
        "gateway": {
            "kind": "portkey",
            "regions": ["us-east"],
            "overhead": {"median_ms": 0.0},
            "configs": configs,
            **gw,
        },
        "workloads": workloads,
        "faults": faults or [],
    }


def run(sc: dict[str, Any], seed: int = 1) -> tuple[Simulation, Result]:
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "portkey-test.yaml")
    sim = Simulation(rs, seed=seed).run()
    return sim, build_result(sim)


def gateway_calls(res: Result) -> pd.DataFrame:
    return res.requests[res.requests["via"] == "gateway"]


def attempts_by_call(sim: Simulation) -> dict[int, list[tuple[float, float, str, int, str]]]:
    """call -> its attempts (start, end, target label, http, kind) in start order."""
    gw = sim.gateway
    assert gw is not None
    out: dict[int, list[tuple[float, float, str, int, str]]] = defaultdict(list)
    for c, t, s, e, h, k in zip(gw.a_call, gw.a_target, gw.a_start, gw.a_end, gw.a_http, gw.a_kind):
        out[c].append((s, e, gw.targets[t].label, h, k))
    for v in out.values():
        v.sort()
    return out


def calls_of(res: Result, wl: str) -> pd.DataFrame:
    calls = gateway_calls(res)
    return calls[calls["workload"] == wl]


def load_error(sc: dict[str, Any], file: str = "portkey-test.yaml") -> str:
    with pytest.raises(ScenarioError) as exc:
        load_scenario_text(yaml.safe_dump(sc, sort_keys=False), file)
    return str(exc.value)


# --------------------------------------------------------------------------- 1. conditional rules

CTX = {
    "metadata": {"plan": "paid", "region": "eu"},
    "params": {"max_tokens": 500, "stream": True},
    "url": {"pathname": "/v1/chat/completions"},
}


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"metadata.plan": {"$eq": "paid"}}, True),
        ({"metadata.plan": {"$eq": "free"}}, False),
        ({"metadata.plan": "paid"}, True),  # a bare value is an equality
        ({"metadata.plan": "free"}, False),
        ({"metadata.plan": {"$ne": "free"}}, True),
        ({"metadata.plan": {"$ne": "paid"}}, False),
        ({"params.max_tokens": {"$gt": 499}}, True),
        ({"params.max_tokens": {"$gt": 500}}, False),
        ({"params.max_tokens": {"$gte": 500}}, True),
        ({"params.max_tokens": {"$lt": 500}}, False),
        ({"params.max_tokens": {"$lte": 500}}, True),
        ({"params.max_tokens": {"$lt": "501"}}, True),  # parseFloat on both sides
        ({"params.max_tokens": {"$gt": 100, "$lt": 1000}}, True),  # operators of one key: all
        ({"params.max_tokens": {"$gt": 100, "$lt": 200}}, False),
        ({"metadata.plan": {"$in": ["trial", "paid"]}}, True),
        ({"metadata.plan": {"$in": ["trial", "free"]}}, False),
        ({"metadata.plan": {"$nin": ["trial", "free"]}}, True),
        ({"metadata.plan": {"$nin": ["paid"]}}, False),
        ({"metadata.plan": {"$regex": "^pa"}}, True),
        ({"metadata.plan": {"$regex": "^fr"}}, False),
        ({"url.pathname": {"$regex": "chat/completions$"}}, True),
        ({"metadata.plan": "paid", "metadata.region": "us"}, False),  # keys of one query: all
        ({"metadata.plan": "paid", "metadata.region": "eu"}, True),
        ({"$and": [{"metadata.plan": "paid"}, {"params.max_tokens": {"$gte": 500}}]}, True),
        ({"$and": [{"metadata.plan": "paid"}, {"params.max_tokens": {"$gt": 500}}]}, False),
        ({"$or": [{"metadata.plan": "free"}, {"params.max_tokens": {"$gt": 100}}]}, True),
        ({"$or": [{"metadata.plan": "free"}, {"metadata.region": "us"}]}, False),
        (
            {
                "$or": [
                    {"$and": [{"metadata.plan": "paid"}, {"metadata.region": "eu"}]},
                    {"metadata.plan": "free"},
                ]
            },
            True,
        ),
        # A missing field is undefined: never equal, always "not equal", NaN in comparisons.
        ({"metadata.tier": {"$eq": "gold"}}, False),
        ({"metadata.tier": {"$ne": "gold"}}, True),
        ({"metadata.tier": {"$gt": 0}}, False),
        ({"metadata.tier": {"$lte": 0}}, False),
        ({"metadata.tier": {"$in": ["gold"]}}, False),
        ({"metadata.tier": {"$nin": ["gold"]}}, True),
    ],
)
def test_evaluate_conditional_queries(query: dict[str, Any], expected: bool) -> None:
    assert evaluate(query, CTX) is expected


def test_conditional_routes_by_metadata_and_max_tokens_and_fails_without_default() -> None:
    tiered = {
        "strategy": {
            "mode": "conditional",
            "conditions": [
                {"query": {"metadata.plan": {"$eq": "paid"}}, "then": "premium"},
                {"query": {"params.max_tokens": {"$gt": 1000}}, "then": "long"},
            ],
            "default": "basic",
        },
        "targets": [
            {"name": "premium", **leaf("anthropic", CLAUDE)},
            {"name": "basic", "provider": "groq", "override_params": {"model": LLAMA}},
            {"name": "long", **leaf("openai")},
        ],
    }
    strict = {
        "strategy": {
            "mode": "conditional",
            "conditions": [{"query": {"metadata.plan": {"$in": ["paid"]}}, "then": "premium"}],
        },
        "targets": [{"name": "premium", **leaf("anthropic", CLAUDE)}],
    }
    sc = scenario(
        {"tiered": tiered, "strict": strict},
        {
            "anthropic": endpoint("anthropic", "global"),
            "openai": endpoint("openai", "us-east"),
            "groq": endpoint("groq", "us-east"),  # `provider: groq` finds this entry
        },
        {
            "paid": workload("tiered", rate=3.0, out=2000, tags={"plan": "paid"}),
            "free": workload("tiered", rate=3.0, out=100, tags={"plan": "free"}),
            "free_long": workload("tiered", rate=3.0, out=2000, tags={"plan": "free"}),
            "strict_paid": workload("strict", rate=1.0, tags={"plan": "paid"}),
            "strict_free": workload("strict", rate=1.0, tags={"plan": "free"}),
        },
        horizon=20,
    )
    sim, res = run(sc)
    gw = sim.gateway
    assert gw is not None
    expected = {
        "paid": "tiered:premium",  # the first matching rule wins over max_tokens > 1000
        "free": "tiered:basic",
        "free_long": "tiered:long",
        "strict_paid": "strict:premium",
    }
    tried: dict[str, set[str]] = defaultdict(set)
    wl_names = sim.workload_names
    assert sim.calls is not None
    for cid, tries in attempts_by_call(sim).items():
        tried[wl_names[int(sim.calls.workload[cid])]] |= {t for _, _, t, _, _ in tries}
    for wl, label in expected.items():
        mine = calls_of(res, wl)
        assert len(mine) > 10, wl
        assert (mine["outcome"] == "ok").all(), mine["outcome"].value_counts()
        assert (mine["target"] == label).all(), mine["target"].value_counts()
        assert tried[wl] == {label}
    # No rule matches and there is no default: Portkey's RouterError, nothing is tried.
    bad = calls_of(res, "strict_free")
    assert len(bad) > 10
    assert (bad["outcome"] == "router_error").all() and (bad["http_status"] == 400).all()
    assert (bad["status"] != "completed").all() and (bad["attempts"] == 0).all()
    assert "strict_free" not in tried


# --------------------------------------------------------------------------- 2. loadbalance


@pytest.mark.parametrize(
    "weights, shares",
    [((0.7, 0.3, 0.0), (0.7, 0.3, 0.0)), ((2.0, None), (2 / 3, 1 / 3))],
    ids=["0.7-0.3-0", "default-weight-1"],
)
def test_loadbalance_weighted_split(
    weights: tuple[float | None, ...], shares: tuple[float, ...]
) -> None:
    keys = ["pa", "pb", "pc"][: len(weights)]
    targets = [leaf(k, **({} if w is None else {"weight": w})) for k, w in zip(keys, weights)]
    sc = scenario(
        {"lb": {"strategy": {"mode": "loadbalance"}, "targets": targets}},
        {k: endpoint() for k in keys},
        {"w": workload("lb", rate=40.0)},
        horizon=50,
    )
    _, res = run(sc, seed=7)
    calls = gateway_calls(res)
    n = len(calls)
    assert n > 1500
    assert (calls["outcome"] == "ok").all() and (calls["attempts"] == 1).all()
    att = res.summary["gateway"]["targets"]
    for k, p in zip(keys, shares):
        label = f"lb:{k}/{GPT4O}"
        got = int((calls["target"] == label).sum())
        assert att[label]["attempts"] == got
        if p == 0.0:
            assert got == 0  # weight 0: out of rotation
        else:
            sd = math.sqrt(n * p * (1 - p))
            assert abs(got - n * p) <= 4 * sd, (label, got, n * p)


# --------------------------------------------------------------------------- 3. fallback


def fallback_scenario(
    codes: list[int] | None, down: list[str], n: int = 2, inp: int = 200
) -> dict[str, Any]:
    strategy: dict[str, Any] = {"mode": "fallback"}
    if codes is not None:
        strategy["on_status_codes"] = codes
    keys = ["pa", "pb", "pc"][:n]
    models = [GPT4O, CLAUDE, CLAUDE]
    provs = ["openai", "anthropic", "anthropic"]
    return scenario(
        {"fb": {"strategy": strategy, "targets": [leaf(k, m) for k, m in zip(keys, models)]}},
        {k: endpoint(p, "us-east" if p == "openai" else "global") for k, p in zip(keys, provs)},
        {"w": workload("fb", rate=2.0, inp=inp)},
        [outage(k) for k in down],
        horizon=15,
    )


@pytest.mark.parametrize(
    "codes, down, n, chain, final",
    [
        ([429], ["pa"], 2, [("pa", 503)], (503, "error")),  # 503 not listed: no fallback
        ([503], ["pa"], 2, [("pa", 503), ("pb", 200)], (200, "ok")),
        ([429, 503], ["pa"], 2, [("pa", 503), ("pb", 200)], (200, "ok")),
        (None, ["pa"], 2, [("pa", 503), ("pb", 200)], (200, "ok")),  # no codes: any non-200
        (None, ["pa", "pb"], 3, [("pa", 503), ("pb", 503), ("pc", 200)], (200, "ok")),
        (None, ["pa", "pb", "pc"], 3, [("pa", 503), ("pb", 503), ("pc", 503)], (503, "error")),
        (None, [], 2, [("pa", 200)], (200, "ok")),
    ],
)
def test_fallback_on_status_codes(
    codes: list[int] | None,
    down: list[str],
    n: int,
    chain: list[tuple[str, int]],
    final: tuple[int, str],
) -> None:
    sim, res = run(fallback_scenario(codes, down, n))
    calls = gateway_calls(res)
    assert len(calls) > 15
    model = {"pa": GPT4O, "pb": CLAUDE, "pc": CLAUDE}
    labels = [(f"fb:{k}/{model[k]}", h) for k, h in chain]
    for cid, tries in attempts_by_call(sim).items():
        assert [(t, h) for _, _, t, h, _ in tries] == labels, cid
    assert (calls["http_status"] == final[0]).all() and (calls["outcome"] == final[1]).all()
    assert (calls["attempts"] == len(chain)).all()
    assert (calls["fallbacks"] == len(chain) - 1).all()
    assert (calls["retries"] == 0).all()
    assert res.summary["gateway"]["fallbacks"] == (len(chain) - 1) * len(calls)


@pytest.mark.parametrize("codes", [None, [503]])
def test_fallback_on_a_400_only_without_codes(codes: list[int] | None) -> None:
    """A prompt too long for gpt-4o (128k) but not for Claude (200k): the 400 moves the call on
    only when no on_status_codes are given."""
    sim, res = run(fallback_scenario(codes, [], 2, inp=150_000))
    calls = gateway_calls(res)
    assert len(calls) > 15
    first = (f"fb:pa/{GPT4O}", 400, "context_window")
    for tries in attempts_by_call(sim).values():
        got = [(t, h, k) for _, _, t, h, k in tries]
        if codes is None:
            assert got == [first, (f"fb:pb/{CLAUDE}", 200, "ok")]
        else:
            assert got == [first]
    if codes is None:
        assert (calls["outcome"] == "ok").all() and (calls["fallbacks"] == 1).all()
    else:
        assert (calls["outcome"] == "context_window").all()
        assert (calls["http_status"] == 400).all() and (calls["fallbacks"] == 0).all()


# --------------------------------------------------------------------------- 4. retry


def test_retry_backoff_is_1_2_4_s_after_each_answer() -> None:
    configs = {
        "r3": leaf("pa", retry={"attempts": 3}),
        "r2": leaf("pb", retry=2),  # shorthand: default codes 429, 500, 502, 503, 504
        "r4_listed": leaf("pc", retry={"attempts": 4, "on_status_codes": [500, 503]}),
        "r3_not_listed": leaf("pd", retry={"attempts": 3, "on_status_codes": [429]}),
        "none": leaf("pe"),
    }
    keys = ["pa", "pb", "pc", "pd", "pe"]
    sc = scenario(
        configs,
        {k: endpoint() for k in keys},
        {name: workload(name, rate=1.0) for name in configs},
        [outage(k) for k in keys],
        horizon=15,
    )
    sim, res = run(sc)
    retries = {"r3": 3, "r2": 2, "r4_listed": 4, "r3_not_listed": 0, "none": 0}
    assert sim.calls is not None
    seen: set[str] = set()
    for cid, tries in attempts_by_call(sim).items():
        wl = sim.workload_names[int(sim.calls.workload[cid])]
        seen.add(wl)
        k = retries[wl]
        assert len(tries) == k + 1, (wl, tries)
        assert all(h == 503 and kind == "error" for _, _, _, h, kind in tries)
        for i in range(1, len(tries)):
            s0, e0 = tries[i - 1][:2]
            s1 = tries[i][0]
            # An error answers after the round trip; then async-retry waits 1 s * 2^(i-1).
            assert e0 - s0 > 0
            assert s1 - s0 == pytest.approx((e0 - s0) + 2.0 ** (i - 1), abs=1e-9), (wl, i)
    assert seen == set(configs)
    for wl, k in retries.items():
        mine = calls_of(res, wl)
        assert len(mine) > 5
        assert (mine["retries"] == k).all() and (mine["attempts"] == k + 1).all()
        assert (mine["outcome"] == "error").all() and (mine["http_status"] == 503).all()
        assert (mine["status"] == "failed").all()


# ------------------------------------------------------------------- 5. Retry-After headers


def ra_scenario(
    times: dict[str, float],
    use_headers: bool = True,
    attempts: int = 5,
    gateway_region: str = "us-east",
    provider_region: str = "us-east",
    tpm: int = 1_000_000_000,
) -> dict[str, Any]:
    """rpm_limit 1 on one endpoint: each call's arrival time is given."""
    retry = {"attempts": attempts, "on_status_codes": [429], "use_retry_after_headers": use_headers}
    return scenario(
        {"ra": leaf("oa", retry=retry)},
        {"oa": endpoint(region=provider_region, rpm_limit=1, tpm_limit=tpm)},
        {name: once_at("ra", t) for name, t in times.items()},
        horizon=max(times.values()) + 1.0,
        regions=[gateway_region],
    )


def tries_of(sim: Simulation, wl: str) -> list[tuple[float, float, str, int, str]]:
    assert sim.calls is not None
    i = sim.workload_names.index(wl)
    (cid,) = [c for c in range(sim.calls.n) if int(sim.calls.workload[c]) == i]
    return attempts_by_call(sim)[cid]


def test_retry_after_waits_exactly_until_the_window_admits() -> None:
    sim, res = run(ra_scenario({"a": 1.0, "b": 21.0}))
    (a,) = tries_of(sim, "a")
    b = tries_of(sim, "b")
    assert a[3] == 200
    assert [h for _, _, _, h, _ in b] == [429, 200]
    # The provider saw A at a.start + rtt/2 and B at b1.start + rtt/2 (same round trip): its
    # sliding window admits B 60 s after A, and B waits exactly that instead of a 1 s backoff.
    retry_after = a[0] + 60.0 - b[0][0]
    assert retry_after == pytest.approx(40.0, abs=0.01)
    assert b[1][0] - b[0][1] == pytest.approx(retry_after, abs=1e-9)
    calls = calls_of(res, "b")
    assert calls["outcome"].tolist() == ["ok"] and calls["retries"].tolist() == [1]

    # Without use_retry_after_headers: the backoff (1+2+4+8+16 s) ends before the window opens.
    sim2, res2 = run(ra_scenario({"a": 1.0, "b": 21.0}, use_headers=False))
    b2 = tries_of(sim2, "b")
    assert [h for _, _, _, h, _ in b2] == [429] * 6
    for i in range(1, 6):
        assert b2[i][0] - b2[i - 1][1] == pytest.approx(2.0 ** (i - 1), abs=1e-9)
    calls2 = calls_of(res2, "b")
    assert calls2["outcome"].tolist() == ["provider_rate_limited"]
    assert calls2["http_status"].tolist() == [429]


def test_retry_after_over_60_s_fails_at_once() -> None:
    """A request larger than the whole TPM limit is never admitted (Retry-After infinite):
    with the headers it fails on the first 429; without, it is retried with the backoff."""
    sim, res = run(ra_scenario({"a": 1.0}, tpm=100))
    assert [h for _, _, _, h, _ in tries_of(sim, "a")] == [429]
    calls = calls_of(res, "a")
    assert calls["outcome"].tolist() == ["provider_rate_limited"]
    assert calls["retries"].tolist() == [0]
    sim2, _ = run(ra_scenario({"a": 1.0}, tpm=100, use_headers=False, attempts=2))
    assert [h for _, _, _, h, _ in tries_of(sim2, "a")] == [429, 429, 429]


def test_retry_after_of_exactly_60_s_fails_at_once() -> None:
    """Two calls reach the rpm-1 provider at the same instant: the second's Retry-After is the
    whole window, 60 s, which Portkey does not wait (retryAfter >= MAX_RETRY_LIMIT_MS)."""
    sim, res = run(ra_scenario({"x": 1.0, "y": 1.0}))
    gw = sim.gateway
    assert gw is not None
    tx, ty = tries_of(sim, "x"), tries_of(sim, "y")
    assert tx[0][0] == ty[0][0]
    # What the provider computed: its clock is the attempt start plus half the round trip.
    now = tx[0][0] + gw.rm.rtt_s("us-east", "us-east") / 2.0
    assert (now + 60.0) - now == 60.0  # the boundary itself, not a rounding either side
    got = sorted([[h for _, _, _, h, _ in tx], [h for _, _, _, h, _ in ty]])
    assert got == [[200], [429]]
    calls = gateway_calls(res).sort_values("http_status")
    assert calls["outcome"].astype(str).tolist() == ["ok", "provider_rate_limited"]
    assert calls["retries"].tolist() == [0, 0]


@pytest.mark.parametrize("b_after_a", ["30", "60-rtt/2"])
def test_retry_after_total_wait_capped_at_60_s(b_after_a: str) -> None:
    """rpm 1. A is admitted; B's first 429 says "wait RA1"; C slips in just after A leaves the
    window and before B's retry reaches the provider, so B's retry gets a 429 with RA2 ~ 60 s.
    B is retried again only if RA1 + RA2 stays within 60 s (Portkey's remainingRetryTimeout)."""
    gw_region, prov_region = "eu-west", "us-east"
    rtt = build_region_map({}).rtt_s(gw_region, prov_region)
    assert rtt > 0.02  # the window C must hit is rtt wide
    a = 1.0
    b = a + (30.0 if b_after_a == "30" else 60.0 - rtt / 2)
    c = a + 60.0 + rtt / 10
    sim, res = run(
        ra_scenario({"a": a, "b": b, "c": c}, gateway_region=gw_region, provider_region=prov_region)
    )
    (ta,) = tries_of(sim, "a")
    (tc,) = tries_of(sim, "c")
    tb = tries_of(sim, "b")
    assert ta[3] == 200 and tc[3] == 200
    ra1 = ta[0] + 60.0 - tb[0][0]
    assert tb[1][0] - tb[0][1] == pytest.approx(ra1, abs=1e-9)
    assert tb[0][0] < tc[0] < tb[1][0]  # C reached the provider between B's two tries
    ra2 = tc[0] + 60.0 - tb[1][0]
    assert ra2 > 60.0 - rtt and ra2 < 60.0
    calls = calls_of(res, "b")
    if b_after_a == "30":
        # RA1 = 30 s leaves 30 s; RA2 ~ 60 s is more: the 429 is answered at once.
        assert ra1 + ra2 > 60.0
        assert [h for _, _, _, h, _ in tb] == [429, 429]
        assert calls["outcome"].tolist() == ["provider_rate_limited"]
        assert calls["http_status"].tolist() == [429] and calls["retries"].tolist() == [1]
        # Answered with no further wait: the call ends half a round trip after its last 429.
        assert float(calls["finish_s"].iloc[0]) - tb[1][1] < 0.01
    else:
        assert ra1 + ra2 <= 60.0
        assert [h for _, _, _, h, _ in tb] == [429, 429, 200]
        assert tb[2][0] - tb[1][1] == pytest.approx(ra2, abs=1e-9)
        assert calls["outcome"].tolist() == ["ok"] and calls["retries"].tolist() == [2]


# --------------------------------------------------------------------------- 6. inheritance


def test_retry_inherited_unless_a_target_gives_its_own() -> None:
    config = {
        "retry": {"attempts": 3},
        "strategy": {"mode": "fallback"},
        "targets": [
            leaf("pa"),  # inherits 3
            {  # a nested strategy with its own retry, inherited by its leaf
                "retry": {"attempts": 1},
                "strategy": {"mode": "single"},
                "targets": [leaf("pb")],
            },
            leaf("pc", retry={"attempts": 0}),  # its own: no retry
            leaf("pd", retry={"attempts": 2, "on_status_codes": [500]}),  # 503 not listed
            leaf("pe"),
        ],
    }
    keys = ["pa", "pb", "pc", "pd", "pe"]
    sc = scenario(
        {"inh": config},
        {k: endpoint() for k in keys},
        {"w": workload("inh", rate=1.0)},
        [outage(k) for k in keys[:-1]],
        horizon=10,
    )
    sim, res = run(sc)
    expected = ["pa"] * 4 + ["pb"] * 2 + ["pc"] + ["pd"] + ["pe"]
    tries_all = attempts_by_call(sim)
    assert len(tries_all) > 5
    for tries in tries_all.values():
        assert [t.split(":")[1].split("/")[0] for _, _, t, _, _ in tries] == expected
        assert [h for _, _, _, h, _ in tries] == [503] * 8 + [200]
    calls = gateway_calls(res)
    assert (calls["outcome"] == "ok").all()
    assert (calls["retries"] == 4).all() and (calls["fallbacks"] == 4).all()


def test_request_timeout_inherited_and_overridden_ends_try_with_408() -> None:
    config = {
        "request_timeout": 2000,
        "retry": {"attempts": 1, "on_status_codes": [408]},
        "strategy": {"mode": "fallback"},
        "targets": [
            leaf("pa"),  # inherits 2 s
            leaf("pb", request_timeout=500),
            {"strategy": {"mode": "single"}, "targets": [leaf("pc", retry={"attempts": 0})]},
        ],
    }
    keys = ["pa", "pb", "pc"]
    sc = scenario(
        {"to": config},
        {k: endpoint() for k in keys},
        {"w": workload("to", rate=0.5)},
        [outage(k, mode="timeout") for k in keys],
        horizon=20,
    )
    sim, res = run(sc)
    gw = sim.gateway
    assert gw is not None
    expected = [("pa", 2.0), ("pa", 2.0), ("pb", 0.5), ("pb", 0.5), ("pc", 2.0)]
    tries_all = attempts_by_call(sim)
    assert len(tries_all) > 5
    for tries in tries_all.values():
        assert len(tries) == len(expected)
        for (s, e, t, h, k), (key, dur) in zip(tries, expected):
            assert t.startswith(f"to:{key}/")
            assert e - s == pytest.approx(dur, abs=1e-9)
            assert (h, k) == (408, "timeout")
        # 408 is listed: retried after the 1 s backoff.
        assert tries[1][0] - tries[0][1] == pytest.approx(1.0, abs=1e-9)
        assert tries[3][0] - tries[2][1] == pytest.approx(1.0, abs=1e-9)
    calls = gateway_calls(res)
    assert (calls["outcome"] == "timeout").all() and (calls["http_status"] == 408).all()
    assert (calls["status"] == "failed").all()


def test_without_request_timeout_a_try_waits_for_the_client() -> None:
    """No request_timeout anywhere: a provider that never answers holds the call until the
    client's own 600 s timeout (the OpenAI SDK's default), not the parent's or anyone's."""
    sc = scenario(
        {"c": leaf("pa")},
        {"pa": endpoint()},
        {"w": once_at("c", 1.0)},
        [outage("pa", mode="timeout")],
        horizon=40,
    )  # a drain runs up to 20 horizons
    sim, _ = run(sc)
    (t,) = tries_of(sim, "w")
    assert t[1] - t[0] == pytest.approx(600.0, abs=1e-9) and t[3] == 408


# --------------------------------------------------------------------------- 7. cache


def first_ok_end(sim: Simulation, label: str) -> dict[int, float]:
    """prompt -> end of the first successful attempt at target `label`."""
    gw = sim.gateway
    assert gw is not None and sim.calls is not None
    out: dict[int, float] = {}
    for c, t, e, h in zip(gw.a_call, gw.a_target, gw.a_end, gw.a_http):
        if h == 200 and gw.targets[t].label == label:
            p = int(sim.calls.prompt[c])
            out[p] = min(out.get(p, math.inf), e)
    return out


def test_cache_is_per_prompt_and_target() -> None:
    """Half the draws go to a target that always fails: its calls never hit the answers cached
    for the same prompts on the other target."""
    config = {
        "cache": {"mode": "simple"},
        "strategy": {"mode": "loadbalance"},
        "targets": [leaf("down"), leaf("good")],
    }
    sc = scenario(
        {"lb": config},
        {"good": endpoint(), "down": endpoint()},
        {"w": workload("lb", rate=4.0, prompts={"unique": 5, "zipf_s": 1.0})},
        [outage("down")],
        horizon=40,
    )
    sim, res = run(sc, seed=2)
    assert sim.calls is not None
    done = first_ok_end(sim, f"lb:good/{GPT4O}")
    assert len(done) == 5
    calls = gateway_calls(res).copy()
    calls["prompt"] = [int(sim.calls.prompt[c]) for c in calls["call"]]
    first = calls["prompt"].map(done)
    assert set(calls["outcome"].astype(str)) == {"ok", "cache_hit", "error"}
    before = calls[calls["arrival_s"] < first - 1e-3]
    after = calls[calls["arrival_s"] > first + 1e-3]
    assert len(before) + len(after) == len(calls)
    # Before its prompt's first answer came back, no call hits.
    assert set(before["outcome"].astype(str)) <= {"ok", "error"} and len(before) > 0
    # After it, every call drawn to the good target hits; those drawn to the down one still fail.
    assert set(after["outcome"].astype(str)) == {"cache_hit", "error"}
    hits = after[after["outcome"] == "cache_hit"]
    assert (hits["attempts"] == 0).all() and (hits["cost_usd"] == 0).all()
    assert (hits["cache_hit"] == "exact").all() and (hits["status"] == "completed").all()
    errs = after[after["outcome"] == "error"]
    assert len(errs) > 20 and (errs["attempts"] == 1).all()
    assert res.summary["gateway"]["cache"]["exact_hits"] == len(hits)


def test_cache_max_age_of_the_target_overrides_the_parent() -> None:
    """Parent cache max_age 1000 s, the target's own 3 s: an answer is reused for 3 s only."""
    max_age = 3.0
    config = {
        "cache": {"mode": "simple", "max_age": 1000},
        "strategy": {"mode": "single"},
        "targets": [leaf("pa", cache={"mode": "simple", "max_age": max_age})],
    }
    sc = scenario(
        {"c": config},
        {"pa": endpoint()},
        {"w": workload("c", rate=3.0, prompts={"unique": 1})},
        horizon=40,
    )
    sim, res = run(sc, seed=4)
    gw = sim.gateway
    assert gw is not None
    ends = sorted(e for e, h in zip(gw.a_end, gw.a_http) if h == 200)
    calls = gateway_calls(res)
    half_in = gw.rm.rtt_s("us-east", "us-east") / 2.0  # client to gateway; overhead 0
    checked = misses_late = 0
    for t_arr, outcome in zip(calls["arrival_s"], calls["outcome"].astype(str)):
        t = t_arr + half_in  # the cache lookup
        last = max((e for e in ends if e <= t), default=None)
        if last is not None and abs(last + max_age - t) < 1e-3:
            continue  # too close to the expiry instant to call
        expect_hit = last is not None and last + max_age > t
        assert (outcome == "cache_hit") == expect_hit, (t, last, outcome)
        checked += 1
        misses_late += int(last is not None and not expect_hit)
    assert checked > 100
    assert misses_late >= 5  # the 1000 s of the parent would have made these hits
    assert (calls["outcome"] == "cache_hit").sum() > 50


# --------------------------------------------------------------------------- 8. residency


def test_residency_skips_forbidden_targets_and_fails_closed() -> None:
    configs = {
        "fb": {"strategy": {"mode": "fallback"}, "targets": [leaf("oa-us"), leaf("az-eu")]},
        # Skipped, not tried: a forbidden target is passed over whatever on_status_codes say.
        "fb429": {
            "strategy": {"mode": "fallback", "on_status_codes": [429]},
            "targets": [leaf("oa-us"), leaf("az-eu")],
        },
        "lb": {
            "strategy": {"mode": "loadbalance"},
            "targets": [leaf("oa-us", weight=0.9), leaf("az-eu", weight=0.1)],
        },
        "closed": {"strategy": {"mode": "fallback"}, "targets": [leaf("oa-us"), leaf("oa-global")]},
        "cond": {
            "strategy": {
                "mode": "conditional",
                "conditions": [{"query": {"metadata.route": {"$eq": "eu"}}, "then": "eu"}],
                "default": "us",
            },
            "targets": [{"name": "us", **leaf("oa-us")}, {"name": "eu", **leaf("az-eu")}],
        },
    }
    eu = {"residency": "eu-only", "region": "eu-west"}
    sc = scenario(
        configs,
        {
            "oa-us": endpoint("openai", "us-east"),
            "oa-global": endpoint("openai", "global"),
            "az-eu": endpoint("azure-openai", "eu-west"),
        },
        {
            "eu_fb": workload("fb", **eu),
            "eu_fb429": workload("fb429", **eu),
            "eu_lb": workload("lb", **eu),
            "eu_closed": workload("closed", **eu),
            "eu_cond_us": workload("cond", tags={"route": "us"}, **eu),
            "eu_cond_eu": workload("cond", tags={"route": "eu"}, **eu),
            "us_fb": workload("fb", region="us-east"),
            "us_lb": workload("lb", rate=10.0, region="us-east"),
        },
        horizon=20,
        regions=["eu-west", "us-east"],
    )
    sc["residency"] = {"eu-only": {"allowed_jurisdictions": ["eu"]}}
    sim, res = run(sc)
    gw = sim.gateway
    assert gw is not None and sim.calls is not None
    region = {t.label: t.region for t in gw.targets}
    for cid, tries in attempts_by_call(sim).items():
        wl = sim.workload_names[int(sim.calls.workload[cid])]
        if wl.startswith("eu_"):
            assert all(region[t] == "eu-west" for _, _, t, _, _ in tries), (wl, tries)
    for wl in ("eu_fb", "eu_fb429", "eu_lb", "eu_cond_eu"):
        mine = calls_of(res, wl)
        assert len(mine) > 15
        assert (mine["outcome"] == "ok").all() and (mine["attempts"] == 1).all()
        assert (mine["served_region"] == "eu-west").all()
        assert (mine["gateway_region"] == "eu-west").all()
    for wl in ("eu_closed", "eu_cond_us"):
        mine = calls_of(res, wl)
        assert len(mine) > 15
        assert (mine["outcome"] == "residency_fail_closed").all()
        assert (mine["attempts"] == 0).all() and (mine["status"] == "failed").all()
    # Unrestricted traffic takes the forbidden-for-EU targets as configured.
    us_fb = calls_of(res, "us_fb")
    assert (us_fb["target"] == "fb:oa-us/gpt-4o").all()
    us_lb = calls_of(res, "us_lb")
    n = len(us_lb)
    got = int((us_lb["target"] == "lb:oa-us/gpt-4o").sum())
    assert abs(got - 0.9 * n) <= 4 * math.sqrt(n * 0.09)
    r = res.summary["gateway"]["residency"]
    assert r["violations"] == 0
    assert r["failed_closed"] == len(calls_of(res, "eu_closed")) + len(calls_of(res, "eu_cond_us"))


# ----------------------------------------------------------- 9. accounting and determinism


def docs_scenario(horizon: float = 300.0) -> dict[str, Any]:
    return {
        "name": "pk-docs",
        "seed": 3,
        "horizon_s": horizon,
        "providers": {
            "openai-virtual-key": {
                "provider": "openai",
                "region": "global",
                "rpm_limit": 10000,
                "tpm_limit": 2000000,
            },
            "azure-virtual-key": {"provider": "azure-openai", "region": "eu-west"},
            "anthropic-virtual-key": {"provider": "anthropic", "region": "global"},
        },
        "gateway": {
            "kind": "portkey",
            "regions": ["us-east"],
            "configs": {
                "main": str(DOCS_CONFIG),
                "tiered": {
                    "strategy": {
                        "mode": "conditional",
                        "conditions": [
                            {"query": {"metadata.plan": {"$eq": "paid"}}, "then": "premium"}
                        ],
                        "default": "basic",
                    },
                    "targets": [
                        {"name": "premium", **leaf("anthropic-virtual-key", CLAUDE)},
                        {
                            "name": "basic",
                            "provider": "groq",
                            "override_params": {"model": LLAMA},
                            "retry": 2,
                        },
                    ],
                },
            },
        },
        "workloads": {
            "chat": workload("main", rate=2.0, inp=500, out=100),
            "paid": workload("tiered", rate=0.5, tags={"plan": "paid"}),
        },
        "faults": [outage("openai-virtual-key", at=100.0, duration=60.0)],
    }


def test_docs_config_every_call_accounted_for() -> None:
    sim, res = run(docs_scenario())
    gw = sim.gateway
    assert gw is not None and sim.calls is not None
    g = res.summary["gateway"]
    assert g["kind"] == "portkey"
    assert g["configs"]["main"] == (
        "fallback(loadbalance(openai-virtual-key/gpt-4o*0.7, azure-virtual-key/gpt-4o*0.3), "
        f"anthropic-virtual-key/{CLAUDE})"
    )
    calls = gateway_calls(res)
    for sect in (g["calls"], res.summary["requests"]):
        assert sect["arrived"] == (
            sect["completed"] + sect["rejected"] + sect["failed"] + sect["in_flight"]
        )
    assert g["calls"]["arrived"] == len(calls) > 500
    counts = calls["status"].value_counts()
    assert sum(
        int(counts.get(s, 0)) for s in ("completed", "failed", "rejected", "running")
    ) == len(calls)
    assert sum(g["outcomes"].values()) == len(calls) - g["calls"]["in_flight"]
    assert gw.pending == int((sim.calls.state == 0).sum())
    done = calls[calls["status"] != "running"]
    logged = res.attempts["call"].value_counts()
    assert (logged.reindex(done["call"], fill_value=0).to_numpy() == done["attempts"]).all()
    # During the OpenAI outage the root's retry (3 attempts, inherited by the load-balanced
    # leaves) runs out and the fallback takes Anthropic.
    fell = calls[calls["fallbacks"] > 0]
    assert len(fell) > 10
    assert (fell["target"] == f"main:anthropic-virtual-key/{CLAUDE}").all()
    assert ((fell["attempts"] == 5) & (fell["retries"] == 3)).all()
    assert fell["arrival_s"].between(99.0, 160.0).all()
    assert (calls_of(res, "paid")["target"].dropna() == "tiered:premium").all()


def test_same_seed_same_result() -> None:
    _, a = run(docs_scenario(120.0), seed=5)
    _, b = run(docs_scenario(120.0), seed=5)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.attempts is not None and b.attempts is not None
    pd.testing.assert_frame_equal(a.attempts, b.attempts)
    _, c = run(docs_scenario(120.0), seed=6)
    assert not a.requests["arrival_s"].equals(c.requests["arrival_s"])


# --------------------------------------------------------------------------- 10. bad input


def good_scenario() -> dict[str, Any]:
    sc = docs_scenario(60.0)
    sc["faults"] = []
    return sc


def _edit(sc: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split("/")
    node: Any = sc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is _DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


_DELETE = object()
TIERED = "gateway/configs/tiered"


@pytest.mark.parametrize(
    "path, value, fragments",
    [
        (
            f"{TIERED}/targets/1/provider",
            "grok",
            [
                "gateway.configs.tiered.targets[1].provider",
                "unknown provider 'grok'",
                "anthropic",
                "groq",
                "openai",
                "together-ai",
                "vertex-ai",
            ],
        ),
        (
            f"{TIERED}/strategy/conditions/0/then",
            "gold",
            ["gateway.configs.tiered.strategy.conditions[0].then", "'gold'", "premium", "basic"],
        ),
        (
            f"{TIERED}/strategy/default",
            "gold",
            ["gateway.configs.tiered.strategy.default", "'gold'", "premium, basic"],
        ),
        (
            f"{TIERED}/strategy/conditions/0/query",
            {"metadata.plan": {"$like": "paid"}},
            ["conditions[0].query", "$like", "$eq", "$regex", "$nin"],
        ),
        (
            f"{TIERED}/strategy/conditions/0/query",
            {"body.plan": {"$eq": "paid"}},
            ["conditions[0].query", "body.plan", "metadata.", "params.max_tokens"],
        ),
        (
            "gateway/model_list",
            [{"model_name": "m", "litellm_params": {"model": "openai/gpt-4o"}}],
            ["'gateway'", "portkey", "model_list"],
        ),
        ("gateway/kind", _DELETE, ["'gateway'", "configs", "kind: portkey"]),
        (
            "gateway/configs/main",
            "/nonexistent/portkey_missing.json",
            ["gateway.configs.main", "/nonexistent/portkey_missing.json"],
        ),
    ],
    ids=[
        "unknown-provider",
        "then-missing",
        "default-missing",
        "unknown-operator",
        "unknown-field",
        "with-model-list",
        "configs-without-kind",
        "missing-file",
    ],
)
def test_bad_config_names_field_and_valid_values(
    path: str, value: Any, fragments: list[str]
) -> None:
    sc = good_scenario()
    _edit(sc, path, value)
    msg = load_error(sc)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in: {msg}"


BAD_SCHEMA = """{
  "strategy": {"mode": "fallback"},
  "targets": [
    {"virtual_key": "openai-virtual-key", "override_params": {"model": "gpt-4o"}},
    {"virtual_key": "azure-virtual-key", "weight": -1, "override_params": {"model": "gpt-4o"}}
  ]
}
"""
BAD_KEY = """{
  "strategy": {"mode": "fallback"},
  "targets": [
    {"virtual_key": "openai-virtual-key", "override_params": {"model": "gpt-4o"}},

    {"virtual_key": "no-such-key", "override_params": {"model": "gpt-4o"}}
  ]
}
"""
BAD_MODE = """{
  "strategy": {"mode": "roundrobin"},
  "targets": [
    {"virtual_key": "openai-virtual-key", "override_params": {"model": "gpt-4o"}}
  ]
}
"""


@pytest.mark.parametrize(
    "text, line, fragments",
    [
        (BAD_SCHEMA, 5, ["targets[1].weight", "greater than or equal to 0"]),
        (BAD_KEY, 6, ["no-such-key", "openai-virtual-key, azure-virtual-key"]),
        (BAD_MODE, 2, ["strategy.mode", "roundrobin", "loadbalance"]),
    ],
    ids=["negative-weight", "unknown-virtual-key", "unknown-mode"],
)
def test_bad_config_file_names_file_and_line(
    text: str, line: int, fragments: list[str], tmp_path: Path
) -> None:
    bad = tmp_path / "portkey_bad.json"
    bad.write_text(text, encoding="utf-8")
    sc = good_scenario()
    sc["gateway"]["configs"]["main"] = str(bad)
    msg = load_error(sc)
    assert str(bad) in msg, msg
    assert re.search(rf"{re.escape(str(bad))}, line {line}\b", msg), msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in: {msg}"


# --------------------------------------------------------------------------- 11. CLI


runner = CliRunner()


def test_cli_runs_the_docs_config(tmp_path: Path) -> None:
    path = tmp_path / "pk.yaml"
    path.write_text(yaml.safe_dump(docs_scenario(60.0), sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    text = ANSI.sub("", result.stdout)
    assert "Portkey configs" in text
    assert "config main: fallback(loadbalance(" in text
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["gateway"]["kind"] == "portkey"


def test_cli_bad_portkey_scenario_exits_2_without_traceback(tmp_path: Path) -> None:
    sc = good_scenario()
    sc["gateway"]["configs"]["tiered"]["targets"][1]["provider"] = "grok"
    path = tmp_path / "pk-bad.yaml"
    path.write_text(yaml.safe_dump(sc, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    err = ANSI.sub("", result.stderr)
    assert "Traceback" not in err + result.stdout
    assert err.startswith("error: ") and "unknown provider 'grok'" in err
    assert str(path) in err
    assert not out.exists()


def test_retry_after_on_the_last_try_is_waited_before_the_429() -> None:
    """retryHandler waits a valid Retry-After inside the try, so with no retries left the client
    still gets its 429 only after the wait."""
    sim, res = run(ra_scenario({"a": 1.0, "b": 21.0}, attempts=0))
    (a,) = tries_of(sim, "a")
    (b,) = tries_of(sim, "b")
    assert b[3] == 429
    calls = calls_of(res, "b")
    retry_after = a[0] + 60.0 - b[0]
    assert calls["outcome"].tolist() == ["provider_rate_limited"] and calls["retries"].tolist() == [0]
    # Answered after the attempt plus the Retry-After wait (plus the way back to the client).
    assert float(calls["finish_s"].iloc[0]) - b[1] == pytest.approx(retry_after, abs=0.01)


def test_override_max_tokens_caps_the_answer_and_other_params_are_reported_ignored() -> None:
    cfg = {
        "strategy": {"mode": "single", "sticky": True},
        "api_key": "sk-x",
        "targets": [leaf("pa", retry={"attempts": 1, "foo": 2},
                         override_params={"model": GPT4O, "max_tokens": 10, "temperature": 0.2})],
    }
    sim, res = run(scenario({"c": cfg}, {"pa": endpoint()}, {"w": workload("c", rate=2.0, out=50)}))
    calls = gateway_calls(res)
    assert len(calls) > 10 and (calls["outcome"] == "ok").all()
    gw = sim.gateway
    assert gw is not None
    t = gw.targets[0]
    # Billed for the 10 output tokens the cap allows, not the 50 asked for.
    want = 200 * t.usd_in_per_token + 10 * t.usd_out_per_token
    assert calls["cost_usd"].tolist() == pytest.approx([want] * len(calls))
    ignored = res.summary["gateway"]["ignored_settings"]
    assert ignored == sorted([
        "configs.c.config.api_key", "configs.c.config.strategy.sticky",
        "configs.c.config.targets[0].retry.foo", "configs.c.config.targets[0].override_params.temperature",
    ])
