"""Faults, regions and data residency.

Residency is checked as a property over random mixes of provider endpoints and self-hosted
deployments in regions of different jurisdictions, recomputed from the attempt log with this
file's own region -> jurisdiction table (not the simulator's). Region loss, replica failures and
spot preemptions are checked on small scenarios from the per-request tables; bad input on the
field path the error names; round trips against the catalog's measured pairs.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacksim.engine.simulation import Simulation
from stacksim.errors import ScenarioError
from stacksim.metrics import COMPLETED, FAILED
from stacksim.metrics.summary import build_result
from stacksim.network import (
    FIBRE_KM_PER_MS,
    INTRA_REGION_RTT_MS,
    build_region_map,
    great_circle_km,
    rtt_fit,
)
from stacksim.scenario import load_scenario_text
from tests.test_gateway import endpoint, run, workload

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "stacksim" / "catalog" / "data"

# From stacksim/catalog/data/regions.csv, written out here so the check does not reuse the code
# under test. `global`: a provider's worldwide endpoint.
JURISDICTION = {
    "us-east": "us",
    "us-west": "us",
    "eu-west": "eu",
    "eu-central": "eu",
    "uk": "uk",
    "in-west": "in",
    "jp": "jp",
    "global": "global",
}
CLASSES = {"eu": ["eu"], "us": ["us"], "euuk": ["eu", "uk"], "india": ["in"], "anywhere": ["any"]}


def allowed_here(cls: str | None, region: str) -> bool:
    if cls is None or "any" in CLASSES[cls]:
        return True
    return JURISDICTION[region] in CLASSES[cls]


def small_deployment(pool: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "model": "llama-3.1-8b",
        "pool": pool,
        "replicas": replicas,
        "engine": {"version": "0.6", "max_num_seqs": 32, "max_num_batched_tokens": 2048, "max_model_len": 4096},
    }


def h100(region: str, count: int = 1, **kw: Any) -> dict[str, Any]:
    return {"accelerator": "h100-sxm", "count": count, "region": region, **kw}


# --------------------------------------------------------------------------- 10. residency property

SERVE_REGIONS = ["us-east", "eu-west", "eu-central", "uk", "in-west", "jp"]


@st.composite
def residency_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n_groups = draw(st.integers(1, 2))
    providers: dict[str, Any] = {}
    pools: dict[str, Any] = {}
    deployments: dict[str, Any] = {}
    model_list = []
    any_errors = False
    for g in range(n_groups):
        for _ in range(draw(st.integers(1, 3))):
            i = len(model_list)
            if draw(st.booleans()) and len(deployments) < 2:
                region = draw(st.sampled_from(SERVE_REGIONS))
                pools[f"p{i}"] = h100(region)
                deployments[f"d{i}"] = small_deployment(f"p{i}")
                model = f"hosted_vllm/d{i}"
            else:
                region = draw(st.sampled_from([*SERVE_REGIONS, "global"]))
                err = draw(st.sampled_from([0.0, 0.0, 0.3]))
                any_errors = any_errors or err > 0
                providers[f"e{i}"] = endpoint(region=region, error_rate=err)
                model = f"e{i}/gpt-4o-mini"
            model_list.append({"model_name": f"g{g}", "litellm_params": {"model": model}})
    gw_regions = draw(st.lists(st.sampled_from(SERVE_REGIONS), min_size=1, max_size=3, unique=True))
    workloads = {}
    for w in range(draw(st.integers(1, 3))):
        spec = workload(
            f"g{draw(st.integers(0, n_groups - 1))}",
            rate=2.0,
            inp=100,
            out=10,
            region=draw(st.sampled_from(SERVE_REGIONS)),
        )
        cls = draw(st.sampled_from([None, *CLASSES]))
        if cls is not None:
            spec["residency"] = cls
        workloads[f"w{w}"] = spec
    router: dict[str, Any] = {"num_retries": 1}
    if n_groups == 2 and draw(st.booleans()):
        router["fallbacks"] = [{"g0": ["g1"]}]
    return {
        "name": "residency",
        "horizon_s": 8,
        "drain": True,
        "regions": {},
        "residency": {k: {"allowed_jurisdictions": v} for k, v in CLASSES.items()},
        "pools": pools,
        "deployments": deployments,
        "providers": providers,
        "gateway": {"regions": gw_regions, "model_list": model_list, "router_settings": router},
        "workloads": workloads,
        "_errors": any_errors,
    }


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(sc=residency_scenarios(), seed=st.integers(0, 1000))
def test_residency_never_violated(sc: dict[str, Any], seed: int) -> None:
    errors = sc.pop("_errors")
    if not sc["deployments"]:
        del sc["pools"], sc["deployments"]
    sim, res = run(sc, seed=seed)
    gw = sim.gateway
    assert gw is not None and sim.calls is not None
    assert res.summary["gateway"]["residency"]["violations"] == 0
    names = sim.workload_names
    cls_of = [sc["workloads"][w].get("residency") for w in names]
    wl = sim.calls.workload
    # Every attempt went to a region its call's class allows (recomputed independently).
    for cid, t in zip(gw.a_call, gw.a_target):
        region = gw.targets[t].region
        assert allowed_here(cls_of[wl[cid]], region), (names[wl[cid]], region)
    calls = res.requests[res.requests["via"] == "gateway"]
    assert (calls["status"] != "running").all()  # drained
    for cid, r in zip(calls["call"], calls["gateway_region"]):
        if isinstance(r, str):
            assert allowed_here(cls_of[wl[cid]], r)
    fb = {k: v for d in sc["gateway"]["router_settings"].get("fallbacks", []) for k, v in d.items()}
    attempted = set(gw.a_call)
    for name, cls in zip(names, cls_of):
        w = sc["workloads"][name]
        groups = [w["target"], *fb.get(w["target"], [])]
        regions = [gw.targets[i].region for g in groups for i in gw.plan.groups[g]]
        reachable = any(allowed_here(cls, r) for r in regions)
        entry = any(allowed_here(cls, r) for r in sc["gateway"]["regions"])
        mine = calls[calls["workload"] == name]
        if not (reachable and entry):
            # Nothing it may use: every call fails closed, and never reaches a deployment.
            assert (mine["outcome"] == "residency_fail_closed").all(), mine[
                "outcome"
            ].value_counts()
            assert (mine["http_status"] == 503).all() and (mine["status"] == "failed").all()
            assert not set(mine["call"]) & attempted
        elif not errors:
            assert not (mine["outcome"] == "residency_fail_closed").any()
            assert (mine["outcome"] == "ok").all(), mine["outcome"].value_counts()


def test_residency_fail_closed_with_only_forbidden_targets() -> None:
    """The deterministic corner of the property: an EU class, only US targets -> all fail closed,
    while an unrestricted workload on the same group is served."""
    sc = {
        "name": "closed",
        "horizon_s": 10,
        "drain": True,
        "residency": {"eu": {"allowed_jurisdictions": ["eu"]}},
        "providers": {"us": endpoint(region="us-east")},
        "gateway": {
            "regions": ["eu-west", "us-east"],
            "model_list": [{"model_name": "m", "litellm_params": {"model": "us/gpt-4o-mini"}}],
        },
        "workloads": {
            "eu": workload("m", residency="eu", region="eu-west"),
            "free": workload("m", region="us-east"),
        },
    }
    _, res = run(sc)
    calls = res.requests[res.requests["via"] == "gateway"]
    eu, free = calls[calls["workload"] == "eu"], calls[calls["workload"] == "free"]
    assert len(eu) > 5 and (eu["outcome"] == "residency_fail_closed").all()
    assert (eu["gateway_region"] == "eu-west").all() and (eu["attempts"] == 0).all()
    assert (free["outcome"] == "ok").all() and (free["gateway_region"] == "us-east").all()
    assert res.summary["gateway"]["residency"]["failed_closed"] == len(eu)


# --------------------------------------------------------------------------- 11. region loss


@pytest.mark.parametrize("eu_west_kind", ["provider", "self"])
def test_region_loss_shifts_eu_traffic_to_eu_central_only(eu_west_kind: str) -> None:
    t0, t1 = 20.0, 40.0
    sc: dict[str, Any] = {
        "name": "region-loss",
        "horizon_s": 60,
        "drain": True,
        "residency": {"eu": {"allowed_jurisdictions": ["eu"]}},
        "providers": {"euc": endpoint(region="eu-central"), "use": endpoint(region="us-east")},
        "gateway": {
            "regions": ["eu-central", "us-east"],
            "model_list": [
                {"model_name": "m", "litellm_params": {"model": "euc/gpt-4o-mini"}},
                {"model_name": "m", "litellm_params": {"model": "use/gpt-4o-mini"}},
            ],
            "router_settings": {"num_retries": 2},
        },
        "workloads": {
            "eu": workload("m", rate=4.0, inp=200, out=20, residency="eu", region="eu-central"),
            "free": workload("m", rate=4.0, inp=200, out=20, region="us-east"),
        },
        "faults": [{"kind": "region_loss", "region": "eu-west", "at_s": t0, "duration_s": t1 - t0}],
    }
    if eu_west_kind == "provider":
        sc["providers"]["euw"] = endpoint(region="eu-west")
        sc["gateway"]["model_list"].insert(
            0, {"model_name": "m", "litellm_params": {"model": "euw/gpt-4o-mini"}}
        )
    else:
        sc["pools"] = {"pw": h100("eu-west", count=2)}
        sc["deployments"] = {"dw": small_deployment("pw", replicas=2)}
        sc["gateway"]["model_list"].insert(
            0, {"model_name": "m", "litellm_params": {"model": "hosted_vllm/dw"}}
        )
    sim, res = run(sc, seed=5)
    gw = sim.gateway
    assert gw is not None and sim.calls is not None
    wl = sim.calls.workload
    eu_w = sim.workload_names.index("eu")
    region_of = [t.region for t in gw.targets]
    eu_attempts = [
        (s, region_of[t], h)
        for c, t, s, h in zip(gw.a_call, gw.a_target, gw.a_start, gw.a_http)
        if wl[c] == eu_w
    ]
    # EU data never leaves the EU, with or without the loss.
    assert {r for _, r, _ in eu_attempts} <= {"eu-west", "eu-central"}
    # Before the loss eu-west served EU calls; during it, only eu-central did.
    assert any(r == "eu-west" and h == 200 and s < t0 for s, r, h in eu_attempts)
    during = [(r, h) for s, r, h in eu_attempts if t0 + 0.1 <= s < t1 - 0.1]
    assert during and all(r == "eu-central" for r, h in during if h == 200)
    if eu_west_kind == "provider":  # found by failing: answered 503
        assert all(h == 503 for r, h in during if r == "eu-west")
    else:  # known down (no live replica): not even tried
        assert not any(r == "eu-west" for r, _ in during)
    assert any(
        r == "eu-west" and h == 200 and s >= t1 + 1.0 for s, r, h in eu_attempts
    )  # back afterwards
    calls = res.requests[res.requests["via"] == "gateway"]
    eu_calls = calls[calls["workload"] == "eu"]
    in_window = eu_calls[(eu_calls["arrival_s"] >= t0) & (eu_calls["arrival_s"] < t1 - 1.0)]
    assert len(in_window) > 30
    assert set(in_window[in_window["status"] == "completed"]["served_region"].astype(str)) == {
        "eu-central"
    }
    # An unrestricted workload may go to us-east.
    free = calls[calls["workload"] == "free"]
    assert (free["served_region"] == "us-east").any()
    assert res.summary["gateway"]["residency"]["violations"] == 0


# --------------------------------------------------------------------------- 12. replica failure

FAIL_AT, REPAIR_S = 20.0, 15.0


def replica_failure_scenario(mode: str) -> dict[str, Any]:
    return {
        "name": "replica-failure",
        "horizon_s": 60,
        "drain": True,
        "pools": {"p": h100("us-east", count=4)},
        "deployments": {
            "d": small_deployment("p", replicas=2),
            "direct": small_deployment("p", replicas=2),
        },
        "gateway": {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "hosted_vllm/d"}}],
            "in_flight_on_failure": mode,
        },
        "workloads": {
            "via-gw": workload("m", rate=8.0, inp=500, out=300),
            "direct": workload("direct", rate=8.0, inp=500, out=300),
        },
        "faults": [
            {
                "kind": "replica_failure",
                "deployment": "d",
                "replica": 0,
                "at_s": FAIL_AT,
                "repair_s": REPAIR_S,
            },
            {
                "kind": "replica_failure",
                "deployment": "direct",
                "replica": 0,
                "at_s": FAIL_AT,
                "repair_s": REPAIR_S,
            },
        ],
    }


def _serving(sim: Simulation, dep: str) -> dict[str, np.ndarray]:
    r = sim.reqs
    n = r.n
    sel = r.deployment[:n] == sim.deployment_names.index(dep)
    return {
        k: getattr(r, k)[:n][sel] for k in ("arrival_s", "finish_s", "status", "replica", "call")
    }


@pytest.mark.parametrize("mode", ["retry", "lose"])
def test_replica_failure_retry_or_lose(mode: str) -> None:
    sim, res = run(replica_failure_scenario(mode), seed=2)
    s = _serving(sim, "d")
    killed = (s["status"] == FAILED) & (s["finish_s"] == FAIL_AT)
    assert killed.sum() > 0 and (s["replica"][killed] == 0).all()
    assert (s["status"] == FAILED).sum() == killed.sum()  # nothing else failed
    calls = res.requests[res.requests["via"] == "gateway"].set_index("call")
    hit = calls.loc[s["call"][killed]]
    if mode == "retry":
        assert (
            (hit["attempts"] > 1).all()
            and (hit["outcome"] == "ok").all()
            and (hit["status"] == "completed").all()
        )
        assert (calls["status"] == "completed").all()
    else:
        assert (
            (hit["outcome"] == "lost").all()
            and (hit["status"] == "failed").all()
            and (hit["attempts"] == 1).all()
        )
        assert (calls.drop(index=hit.index)["outcome"] == "ok").all()
    # The failed replica takes no work while it is being repaired, and does again afterwards.
    for dep in ("d", "direct"):
        s = _serving(sim, dep)
        on0 = s["replica"] == 0
        assert not (on0 & (s["arrival_s"] > FAIL_AT) & (s["arrival_s"] < FAIL_AT + REPAIR_S)).any()
        assert (on0 & (s["arrival_s"] > FAIL_AT + REPAIR_S)).any()
        assert (
            (s["replica"] == 1) & (s["arrival_s"] > FAIL_AT) & (s["arrival_s"] < FAIL_AT + REPAIR_S)
        ).any()
    assert res.summary["deployments"]["d"]["replica_failures"] == 1


def test_replica_failure_direct_requests_fail_and_are_counted() -> None:
    sim, res = run(replica_failure_scenario("retry"), seed=2)
    s = _serving(sim, "direct")
    killed = s["status"] == FAILED
    assert killed.sum() > 0
    assert (s["finish_s"][killed] == FAIL_AT).all() and (s["replica"][killed] == 0).all()
    assert (s["arrival_s"][killed] < FAIL_AT).all()
    df = res.requests
    direct = df[df["via"] == "direct"]
    assert (direct["status"] == "failed").sum() == killed.sum()
    req = res.summary["requests"]
    assert req["arrived"] == req["completed"] + req["failed"] + req["rejected"] + req["in_flight"]
    assert req["failed"] == killed.sum()  # the gateway's calls were all retried to completion
    dep = res.summary["deployments"]["direct"]["requests"]
    assert dep["arrived"] == dep["completed"] + dep["failed"] + dep["rejected"]
    faults = {f["target"]: f for f in res.summary["faults"]}
    assert faults["direct[0]"]["serving_requests_killed"] == killed.sum()


# --------------------------------------------------------------------------- 13. spot preemption


def spot_scenario(
    purchase: str, notice: float = 5.0, restore: float = 10.0, at: float = 20.0
) -> str:
    return yaml.safe_dump(
        {
            "name": "spot",
            "horizon_s": 60,
            "drain": True,
            "pools": {"spot": h100("us-east", count=2, purchase=purchase)},
            "deployments": {"d": small_deployment("spot", replicas=2)},
            "workloads": {
                "w": {
                    "target": "d",
                    "arrival": {"kind": "poisson", "rate_per_s": 6.0},
                    "input_tokens": {"kind": "fixed", "value": 300},
                    "output_tokens": {"kind": "uniform", "low": 10, "high": 1500},
                }
            },
            "faults": [
                {
                    "kind": "spot_preemption",
                    "pool": "spot",
                    "at_s": at,
                    "notice_s": notice,
                    "restore_s": restore,
                }
            ],
        },
        sort_keys=False,
    )


def test_spot_preemption_needs_a_spot_pool() -> None:
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(spot_scenario("on_demand"), "spot.yaml")
    msg = str(ei.value)
    assert "field 'faults[0].pool'" in msg and "spot" in msg
    load_scenario_text(spot_scenario("spot"), "spot.yaml")  # the same with purchase: spot is fine


def test_spot_preemption_notice_then_kill() -> None:
    at, notice, restore = 20.0, 5.0, 10.0
    sim = Simulation(
        load_scenario_text(spot_scenario("spot", notice, restore, at), "spot.yaml"), seed=3
    )
    states: dict[float, list[tuple[bool, bool]]] = {}

    def probe(env: Any):  # type: ignore[no-untyped-def]
        for t in (at - 1.0, at + notice / 2, at + notice + 1.0, at + notice + restore + 1.0):
            yield env.timeout(t - env.now)
            states[t] = [(r.accepting, r.up) for r in sim.deployments["d"].replicas]

    sim.env.process(probe(sim.env))
    sim.run()
    assert states[at - 1.0] == [(True, True)] * 2
    assert states[at + notice / 2] == [(False, True)] * 2  # notice: drains, takes nothing new
    assert states[at + notice + 1.0] == [(False, False)] * 2  # killed
    assert states[at + notice + restore + 1.0] == [(True, True)] * 2  # restored
    r = sim.reqs
    n = r.n
    arr, fin, status, rep = r.arrival_s[:n], r.finish_s[:n], r.status[:n], r.replica[:n]
    # Arriving while the pool is on notice or gone: refused at once, on no replica.
    blocked = (arr >= at) & (arr < at + notice + restore)
    assert blocked.sum() > 20
    assert (
        (status[blocked] == FAILED).all()
        and (fin[blocked] == arr[blocked]).all()
        and (rep[blocked] == -1).all()
    )
    # Already running at the notice: those done within it completed, the rest died at the kill.
    running = (arr < at) & (fin > at)
    assert ((status == COMPLETED) & running & (fin < at + notice)).any()
    killed = running & (status == FAILED)
    assert killed.any() and (fin[killed] == at + notice).all()
    assert not ((status == FAILED) & ~blocked & ~killed).any()
    assert ((arr > at + notice + restore) & (status == COMPLETED)).any()
    res = build_result(sim)
    req = res.summary["requests"]
    assert req["arrived"] == req["completed"] + req["failed"] + req["rejected"] + req["in_flight"]


# --------------------------------------------------------------------------- 14. bad input

BASE: dict[str, Any] = {
    "name": "bad",
    "horizon_s": 10,
    "residency": {"eu": {"allowed_jurisdictions": ["eu"]}},
    "providers": {"oa": endpoint()},
    "gateway": {"model_list": [{"model_name": "m", "litellm_params": {"model": "oa/gpt-4o"}}]},
    "workloads": {"w": workload("m")},
}


def _edit(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    sc = yaml.safe_load(yaml.safe_dump(BASE))
    node = sc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return sc


@pytest.mark.parametrize(
    "path, value, field, words",
    [
        (
            ("gateway", "model_list", 0, "litellm_params", "model"),
            "openia/gpt-4o",
            "gateway.model_list[0].litellm_params.model",
            ["openia", "unknown provider prefix"],
        ),
        (
            ("gateway", "model_list", 0, "litellm_params", "model"),
            "gpt-4o",
            "gateway.model_list[0].litellm_params.model",
            ["provider prefix"],
        ),
        (
            ("gateway", "model_list", 0, "litellm_params", "model"),
            "hosted_vllm/nope",
            "gateway.model_list[0].litellm_params.model",
            ["nope"],
        ),
        (("providers", "oa", "region"), "mars-1", "providers.oa.region", ["mars-1", "eu-west"]),
        (("providers", "oa", "provider"), "openaii", "providers.oa.provider", ["openaii"]),
        (("gateway", "regions"), ["us-east", "atlantis"], "gateway.regions", ["atlantis"]),
        (("workloads", "w", "region"), "atlantis", "workloads.w.region", ["atlantis"]),
        (("workloads", "w", "residency"), "gdpr", "workloads.w.residency", ["gdpr", "eu"]),
        (
            ("residency", "eu", "allowed_jurisdictions"),
            ["europe"],
            "residency.eu.allowed_jurisdictions",
            ["europe"],
        ),
        (("workloads", "w", "target"), "nothing", "workloads.w.target", ["nothing", "m"]),
    ],
)
def test_bad_input_names_the_field(
    path: tuple[Any, ...], value: Any, field: str, words: list[str]
) -> None:
    text = yaml.safe_dump(_edit(path, value), sort_keys=False)
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(text, "bad.yaml")
    msg = str(ei.value)
    assert f"field '{field}'" in msg, msg  # the project writes list indexes as [i]
    assert ei.value.problems[0].field == field  # named first (later problems may follow from it)
    assert ei.value.problems[0].line is not None
    for w in words:
        assert w in msg, msg
    load_scenario_text(yaml.safe_dump(BASE), "good.yaml")  # the unedited scenario is valid


# --------------------------------------------------------------------------- 15. round trips


def _measured() -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    with (CATALOG / "region_rtt.csv").open() as f:
        for row in csv.DictReader(f):
            key = (row["a"], row["b"]) if row["a"] < row["b"] else (row["b"], row["a"])
            out.setdefault(key, []).append(float(row["rtt_ms"]))
    return out


def test_rtt_measured_pairs_exact() -> None:
    rm = build_region_map({})
    measured = _measured()
    assert measured[("eu-west", "us-east")] == [80.5]
    assert (
        rm.rtt_s("us-east", "eu-west")
        == rm.rtt_s("eu-west", "us-east")
        == pytest.approx(0.0805, abs=1e-15)
    )
    for (a, b), values in measured.items():
        got = rm.rtt_s(a, b) * 1000.0
        assert rm.rtt_s(b, a) == rm.rtt_s(a, b)
        if len(values) == 1:
            assert got == pytest.approx(values[0], abs=1e-9), (a, b)
        else:  # two sources for one pair: their mean
            assert got == pytest.approx(sum(values) / len(values), abs=1e-9), (a, b, got, values)
    assert rm.rtt_s("uk", "uk") == INTRA_REGION_RTT_MS / 1000.0
    assert rm.rtt_s("global", "jp") == INTRA_REGION_RTT_MS / 1000.0


def test_rtt_estimate_positive_and_grows_with_distance() -> None:
    rm = build_region_map({})
    measured = _measured()
    fit = rtt_fit()
    assert 1.0 <= fit.route_factor <= 3.0
    assert fit.fixed_ms >= 0.0 and fit.n >= 20
    origin = "eu-west"
    others = ["uk", "gulf", "in-west", "kr"]
    assert not any(tuple(sorted((origin, o))) in measured for o in others)
    places = rm.places
    dist = [
        great_circle_km(places[origin].lat, places[origin].lon, places[o].lat, places[o].lon)
        for o in others
    ]  # type: ignore[arg-type]
    est = [rm.rtt_s(origin, o) for o in others]
    assert all(e > 0 for e in est)
    order = np.argsort(dist)
    assert list(np.array(est)[order]) == sorted(est)
    assert dist[0] < dist[-1] and est[0] < est[-1]
    for d, e in zip(dist, est):
        assert e * 1000.0 == pytest.approx(
            fit.fixed_ms + fit.route_factor * 2.0 * d / FIBRE_KM_PER_MS
        )
        # Never faster than light in fibre over the great circle.
        assert e * 1000.0 >= 2.0 * d / FIBRE_KM_PER_MS
    # A custom region with only a location gets an estimate; one with none cannot.
    rm2 = build_region_map({"lab": ("eu", 48.9, 2.4, None), "nowhere": ("eu", None, None, None)})
    assert 0 < rm2.rtt_s("lab", "eu-west") < rm2.rtt_s("lab", "jp")
    with pytest.raises(ValueError):
        rm2.rtt_s("nowhere", "jp")
    assert math.isfinite(fit.median_ape)
