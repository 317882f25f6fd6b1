"""Autoscaling (serving/autoscale.py): bounds, the provisioning and load delay on a step up,
scale-down stabilisation and draining, scale to zero with a cold start, spend from replica-hours
on a hand-computed case, and bad configurations.

Traffic with a shape in time (a step, an idle gap) is a Mooncake-format trace written next to the
scenario; everything is simulated time, nothing reads a clock.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacksim.catalog import get_model
from stacksim.engine.simulation import Simulation
from stacksim.errors import ScenarioError
from stacksim.metrics import COMPLETED
from stacksim.metrics.summary import Result, build_result
from stacksim.scenario import load_scenario_text
from stacksim.serving.autoscale import OFF, PROVISIONING, SERVING, Autoscaler

PRICE = 3.0


def run(sc: dict[str, Any], where: Path | None = None, seed: int = 1) -> tuple[Simulation, Result]:
    file = str(where / "scenario.yaml") if where is not None else "autoscale-test.yaml"
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), file)
    sim = Simulation(rs, seed=seed).run()
    return sim, build_result(sim)


def trace(where: Path, records: list[tuple[float, int, int]]) -> str:
    """A Mooncake JSONL trace of (time_s, input, output); its time counts from the first record."""
    lines = [json.dumps({"timestamp": t * 1000.0, "input_length": i, "output_length": o}) for t, i, o in sorted(records)]
    (where / "trace.jsonl").write_text("\n".join(lines) + "\n")
    return "trace.jsonl"


def scenario(autoscaling: dict[str, Any], workload: dict[str, Any], *, replicas: int = 1, count: int = 4, tp: int = 1,
             purchase: str = "on_demand", horizon_s: float = 1500.0, lb: str = "least_outstanding") -> dict[str, Any]:
    return {
        "name": "autoscale",
        "horizon_s": horizon_s,
        "drain": True,
        "pools": {"p": {"accelerator": "h100-sxm", "count": count, "purchase": purchase, "price_usd_per_gpu_hour": PRICE}},
        "deployments": {"d": {"model": "llama-3.1-8b", "pool": "p", "replicas": replicas, "tensor_parallel": tp,
                              "load_balancer": {"kind": lb}, "engine": {"version": "0.6", "max_num_seqs": 32, "max_model_len": 4096},
                              "autoscaling": autoscaling}},
        "workloads": {"w": {"target": "d", **workload}},
    }


def from_trace(path: str) -> dict[str, Any]:
    return {"arrival": {"kind": "trace", "path": path}, "input_tokens": {"kind": "trace"}, "output_tokens": {"kind": "trace"}}


def holds(asc: Autoscaler, end: float, start: int) -> list[tuple[int, float, float, float | None]]:
    """(slot, billing start, billing end, ready time) of every hold, rebuilt from the event log:
    a hold starts at provisioning (or at 0 for the starting replicas) and ends at release/cancel."""
    out = []
    open_: dict[int, list[Any]] = {i: [i, 0.0, None, 0.0] for i in range(start)}
    for t, ev, i in asc.events:
        if ev == "provision":
            open_[i] = [i, t, None, None]
        elif ev == "ready":
            open_[i][3] = t
        elif ev in ("release", "cancel"):
            h = open_.pop(i)
            out.append((i, h[1], t, h[3]))
    out += [(i, h[1], end, h[3]) for i, h in open_.items()]
    return out


def counts_after(asc: Autoscaler, start: int) -> list[tuple[float, int]]:
    """(time, replicas provisioning or serving) after each event: the HPA's current count."""
    n = len(asc.state)
    state = ["serving" if i < start else "off" for i in range(n)]
    out = []
    for t, ev, i in asc.events:
        state[i] = {"provision": "provisioning", "ready": "serving", "cancel": "off", "drain": "draining", "release": "off"}[ev]
        out.append((t, sum(s in ("provisioning", "serving") for s in state)))
    return out


# --------------------------------------------------------------------------- a load step


STEP_AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "provisioning_s": 45.0,
                    "metric": {"kind": "queue_depth", "target_per_replica": 4}}


def step_trace(where: Path) -> str:
    """1 request/s (long answers) for 1500 s; 30 more per second between 300 and 600 s."""
    rec = [(float(t), 500, 300) for t in range(1500)]
    rec += [(300.0123 + k / 30.0, 500, 100) for k in range(9000)]
    return trace(where, rec)


@pytest.fixture(scope="module")
def step_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulation, Result]:
    where = tmp_path_factory.mktemp("step")
    return run(scenario(STEP_AUTOSCALING, from_trace(step_trace(where))), where)


def test_step_up_adds_replicas_after_provisioning_and_load(step_run: tuple[Simulation, Result]) -> None:
    sim, res = step_run
    asc = sim.deployments["d"].autoscaler
    assert asc is not None
    m = get_model("llama-3.1-8b")
    load_s = m.params_total_b * 1e9 * 2 / 2e9  # bf16 weights over the default 2 GB/s
    a = res.summary["deployments"]["d"]["autoscaling"]
    assert a["model_load_s"] == pytest.approx(load_s)
    prov = [t for t, ev, _ in asc.events if ev == "provision"]
    assert prov and min(prov) >= 300.0, "nothing scales up before the load steps up at 300 s"
    assert min(prov) <= 300.0 + 15.0 + 1e-9, "the first evaluation after the step scales up"
    for _, start, _, ready in holds(asc, sim.end_time, 1):
        if start > 0:
            assert ready is not None and ready - start == pytest.approx(45.0 + load_s)
    assert a["peak_replicas"] <= 4 and a["scale_up_events"] >= 1


def test_spend_counts_provisioning_time(step_run: tuple[Simulation, Result]) -> None:
    sim, res = step_run
    asc = sim.deployments["d"].autoscaler
    assert asc is not None
    end = sim.end_time
    h = holds(asc, end, 1)
    billed_s = sum(b - a for _, a, b, _ in h)
    provisioning_s = sum((r if r is not None else b) - a for _, a, b, r in h if a > 0)
    a = res.summary["deployments"]["d"]["autoscaling"]
    d = res.summary["deployments"]["d"]
    assert provisioning_s > 0
    assert d["spend_usd"] == pytest.approx(billed_s / 3600 * PRICE, rel=1e-6)
    assert a["provisioning_usd"] == pytest.approx(provisioning_s / 3600 * PRICE, rel=1e-6)
    assert a["replica_hours"] == pytest.approx(billed_s / 3600, rel=1e-6)
    # Not the whole pool: 4 GPUs for the whole run would cost more.
    assert d["spend_usd"] < 4 * end / 3600 * PRICE
    assert res.summary["pools"]["p"]["spend_usd"] == pytest.approx(d["spend_usd"])


def test_scale_down_waits_for_the_window_and_drains(step_run: tuple[Simulation, Result]) -> None:
    sim, res = step_run
    asc = sim.deployments["d"].autoscaler
    assert asc is not None
    window = STEP_AUTOSCALING.get("scale_down_stabilization_s", 300.0)
    drains = [(t, c) for (t, c), (_, ev, _) in zip(counts_after(asc, 1), asc.events) if ev in ("drain", "cancel")]
    assert drains, "the load falls back after 600 s: the deployment scales down"
    for t, c in drains:
        # Every recommendation of the last window allows the smaller count, and one just
        # outside the window did not: the scale-down waited the whole window.
        recent = [r for tr, r in asc.recommendations if t - window < tr <= t]
        assert max(recent) <= c
        higher = [tr for tr, r in asc.recommendations if tr <= t and r > c]
        assert not higher or t - max(higher) >= window
    # Every request is accounted for: all completed, none lost to a drain.
    rq = res.summary["requests"]
    assert rq["arrived"] == rq["completed"] == 1500 + 9000 and rq["failed"] == 0 and rq["in_flight"] == 0
    # A replica drained with work finishes it before its release; that work completed.
    reqs = sim.reqs
    n = reqs.n
    busy_drains = []
    for i, start, end, _ in holds(asc, sim.end_time, 1):
        dr = [t for t, ev, j in asc.events if ev == "drain" and j == i and start <= t <= end]
        if dr and end > dr[0]:
            busy_drains.append((i, dr[0], end))
    assert busy_drains
    for i, t_drain, t_rel in busy_drains:
        on_it = (reqs.replica[:n] == i) & (reqs.arrival_s[:n] < t_drain) & (reqs.finish_s[:n] > t_drain)
        assert on_it.any()
        assert (reqs.status[:n][on_it] == COMPLETED).all() and (reqs.finish_s[:n][on_it] <= t_rel + 1e-9).all()
    # Released slots are out of rotation; levels and utilisation are over the replicas loaded.
    for i, s in enumerate(asc.state):
        if s == OFF:
            assert not sim.deployments["d"].replicas[i].accepting
    d = res.summary["deployments"]["d"]
    assert 0.0 <= d["utilisation"] <= 1.0
    assert "replicas" in res.timeseries["d"] and res.timeseries["d"]["busy"].max() <= 1.0 + 1e-9


# --------------------------------------------------------------------------- scale to zero


def test_scale_to_zero_and_cold_start(tmp_path: Path) -> None:
    path = trace(tmp_path, [(float(t), 300, 20) for t in range(10)] + [(900.0, 300, 20)])
    auto = {"min_replicas": 0, "max_replicas": 2, "provisioning_s": 30.0, "model_load_s": 10.0,
            "metric": {"kind": "kv_cache", "target_used": 0.6}}
    sim, res = run(scenario(auto, from_trace(path), horizon_s=1200.0, lb="round_robin"), tmp_path)
    dep = sim.deployments["d"]
    asc = dep.autoscaler
    assert asc is not None
    series = res.summary["deployments"]["d"]["autoscaling"]["replicas_over_time"]
    zero_at = [t for t, held, _ in series if held == 0]
    assert zero_at and zero_at[0] < 900.0, "idle, the deployment scaled to zero"
    assert zero_at[0] >= 10.0 + 300.0 - 15.0, "but only after the scale-down window"
    df = res.requests
    late = df[df["arrival_s"] == 900.0].iloc[0]
    assert late["status"] == "completed"
    assert late["ttft_s"] >= 30.0 + 10.0, "the request after the idle gap waited for provisioning and load"
    a = res.summary["deployments"]["d"]["autoscaling"]
    assert a["cold_starts"] == 1 and a["cold_start_requests"] == 1
    assert a["cold_start_wait_s"]["max"] == pytest.approx(40.0)
    assert res.summary["requests"]["completed"] == 11
    assert dep.any_up(), "scaled to zero is not down: the gateway may still route here"


# --------------------------------------------------------------------------- spend by hand


HAND = {"min_replicas": 0, "max_replicas": 2, "provisioning_s": 60.0, "model_load_s": 30.0,
        "metric": {"kind": "queue_depth", "target_per_replica": 1}}


def hand_scenario(where: Path, purchase: str) -> dict[str, Any]:
    # t=0: a prompt longer than max_model_len (rejected at once: no work); t=600.5: one request.
    path = trace(where, [(0.0, 5000, 10), (600.5, 100, 10)])
    return scenario(HAND, from_trace(path), replicas=2, tp=2, count=4, purchase=purchase, horizon_s=1200.0)


def test_spend_hand_computed_on_demand(tmp_path: Path) -> None:
    sim, res = run(hand_scenario(tmp_path, "on_demand"), tmp_path)
    # Two replicas from 0 until the first evaluation outside the 300 s window (t=300), nothing
    # until the cold start at 600.5, which serves at 690.5 and is drained at 990: the last
    # evaluation that saw the request waiting was at 690, and 990 is the first past 690 + 300.
    replica_s = 2 * 300.0 + (990.0 - 600.5)
    usd = replica_s * 2 * PRICE / 3600.0  # x 2 GPUs per replica (tensor_parallel 2)
    d = res.summary["deployments"]["d"]
    a = d["autoscaling"]
    assert sim.end_time == 1200.0
    assert a["replica_hours"] == pytest.approx(replica_s / 3600.0, abs=1e-6)
    assert d["spend_usd"] == pytest.approx(usd, abs=1e-6)
    assert a["provisioning_usd"] == pytest.approx(90.0 * 2 * PRICE / 3600.0, abs=1e-6)
    assert a["cold_starts"] == 1 and a["scale_down_events"] == 2
    assert res.requests.loc[res.requests["arrival_s"] == 600.5, "ttft_s"].iloc[0] >= 90.0
    pool = res.summary["pools"]["p"]
    assert pool["billing"] == "allocated_replica_hours"
    assert pool["spend_usd"] == pytest.approx(usd, abs=1e-6) and pool["idle_spend_usd"] == 0.0
    sp = res.summary["spend"]
    assert sp["gpu_usd"] == pytest.approx(usd, abs=1e-6)
    assert sp["pools"]["p"]["month_usd"] == pytest.approx(usd / (1200.0 / 3600.0) * 730.0, abs=0.01)
    assert "replica-hour" in sp["monthly_basis"] and "{" not in sp["monthly_basis"]
    assert res.requests["gpu_cost_usd"].sum() == pytest.approx(usd, abs=1e-6)


def test_spend_hand_computed_reserved(tmp_path: Path) -> None:
    _, res = run(hand_scenario(tmp_path, "reserved_1y"), tmp_path)
    replica_s = 2 * 300.0 + (990.0 - 600.5)
    usd = replica_s * 2 * PRICE / 3600.0
    d = res.summary["deployments"]["d"]
    pool = res.summary["pools"]["p"]
    hours = 1200.0 / 3600.0
    assert d["spend_usd"] == pytest.approx(usd, abs=1e-6), "the deployment's own spend is its replica-hours"
    assert pool["billing"] == "whole_pool" and pool["spend_usd"] == pytest.approx(4 * hours * PRICE)
    mean_gpus = replica_s * 2 / 1200.0
    assert pool["gpus_used"] == pytest.approx(mean_gpus, abs=1e-6)
    assert pool["idle_spend_usd"] == pytest.approx((4 - mean_gpus) * hours * PRICE, abs=1e-6)
    assert res.summary["spend"]["pools"]["p"]["month_usd"] == pytest.approx(4 * PRICE * 730.0)


# --------------------------------------------------------------------------- invariants


@settings(deadline=None, max_examples=8, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    lo=st.integers(0, 2), span=st.integers(0, 3), start_off=st.integers(0, 3), rate=st.sampled_from([0.5, 4.0, 20.0]),
    metric=st.sampled_from([{"kind": "queue_depth", "target_per_replica": 2},
                            {"kind": "concurrency", "target_per_replica": 8},
                            {"kind": "kv_cache", "target_used": 0.3},
                            {"kind": "latency", "percentile": 90, "target_ms": 300}]),
    lb=st.sampled_from(["round_robin", "random", "least_outstanding", "shared_queue"]),
)
def test_bounds_hold_and_every_request_ends(lo: int, span: int, start_off: int, rate: float, metric: dict[str, Any], lb: str) -> None:
    hi = max(lo + span, 1)
    start = min(lo + start_off, hi)
    auto = {"min_replicas": lo, "max_replicas": hi, "provisioning_s": 20.0, "model_load_s": 5.0, "metric": metric,
            "scale_down_stabilization_s": 60.0}
    wl = {"arrival": {"kind": "gamma", "rate_per_s": rate, "cv": 3.0}, "max_requests": 2000,
          "input_tokens": {"kind": "uniform", "low": 100, "high": 2000}, "output_tokens": {"kind": "uniform", "low": 10, "high": 300}}
    sim, res = run(scenario(auto, wl, replicas=start, horizon_s=400.0, lb=lb, count=hi))
    asc = sim.deployments["d"].autoscaler
    assert asc is not None
    assert all(lo <= r <= hi for _, r in asc.recommendations)
    assert all(h <= hi for _, h, _ in asc.changes)
    assert all(c >= lo for _, c in counts_after(asc, start))
    rq = res.summary["requests"]
    assert rq["arrived"] == rq["completed"] and rq["failed"] == 0 and rq["in_flight"] == 0
    assert not asc.pending
    d = res.summary["deployments"]["d"]
    assert 0.0 <= d["utilisation"] <= 1.0
    assert 0 <= d["autoscaling"]["mean_replicas"] <= hi


def test_faults_on_an_autoscaled_pool(tmp_path: Path) -> None:
    """A spot preemption of every slot: arrivals during the notice are held for a cold start,
    arrivals while every slot is down fail at once (as without autoscaling), every request is
    accounted for, and a slot that was off when the kill came stays out of rotation after the
    restore (a repair does not undo the autoscaler's decision)."""
    path = trace(tmp_path, [(float(t), 400, 200) for t in range(400)])
    auto = {"min_replicas": 1, "max_replicas": 3, "provisioning_s": 20.0, "model_load_s": 5.0,
            "metric": {"kind": "queue_depth", "target_per_replica": 20}, "scale_down_stabilization_s": 60.0}
    sc = scenario(auto, from_trace(path), horizon_s=500.0, count=3, purchase="spot")
    sc["faults"] = [{"kind": "spot_preemption", "pool": "p", "at_s": 200.0, "notice_s": 10.0, "restore_s": 30.0}]
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), str(tmp_path / "scenario.yaml"))
    sim = Simulation(rs, seed=1)
    dep = sim.deployments["d"]
    seen: dict[float, list[tuple[int, bool, bool]]] = {}

    def probe(env: Any):  # type: ignore[no-untyped-def]
        for t in (205.0, 215.0, 241.0):
            yield env.timeout(t - env.now)
            asc = dep.autoscaler
            assert asc is not None
            seen[t] = [(asc.state[i], r.up, r.accepting) for i, r in enumerate(dep.replicas)]

    sim.env.process(probe(sim.env))
    sim.run()
    res = build_result(sim)
    rq = res.summary["requests"]
    assert rq["arrived"] == 400 and rq["in_flight"] == 0
    assert rq["arrived"] == rq["completed"] + rq["failed"] + rq["rejected"]
    # Arrivals in [210, 240), every slot down, fail at once; those of the notice were held.
    df = res.requests
    assert (df.loc[(df["arrival_s"] >= 210) & (df["arrival_s"] < 240), "status"] == "failed").all()
    assert (df.loc[(df["arrival_s"] > 200) & (df["arrival_s"] < 210), "status"] == "completed").all()
    assert seen[205.0][1][0] == PROVISIONING, "a request held during the notice starts a cold start"
    assert [u for _, u, _ in seen[215.0]] == [False, False, False]
    assert seen[241.0][2] == (OFF, True, False), "restored, but off: not in rotation"
    assert seen[241.0][0] == (SERVING, True, True)


# --------------------------------------------------------------------------- bad input


BAD_BASE = {
    "horizon_s": 100,
    "pools": {"p": {"accelerator": "h100-sxm", "count": 2}},
    "deployments": {"d": {"model": "llama-3.1-8b", "pool": "p", "replicas": 1,
                          "autoscaling": {"min_replicas": 1, "max_replicas": 2, "provisioning_s": 60,
                                          "metric": {"kind": "kv_cache", "target_used": 0.5}}}},
    "workloads": {"w": {"target": "d", "arrival": {"kind": "poisson", "rate_per_s": 2},
                        "input_tokens": {"kind": "fixed", "value": 100}, "output_tokens": {"kind": "fixed", "value": 10}}},
}


@pytest.mark.parametrize(("edit", "field", "words"), [
    ({"min_replicas": 3}, "deployments.d.autoscaling", ("min_replicas (3)", "max_replicas (2)")),
    ({"max_replicas": 3}, "pools.p.count", ("autoscaling.max_replicas 3", "the pool has 2")),
    ({"min_replicas": 2}, "deployments.d", ("replicas (1", "autoscaling.min_replicas (2)")),
    ({"provisioning_s": None}, "deployments.d.autoscaling.provisioning_s", ()),
    ({"metric": {"kind": "queue_depth"}}, "deployments.d.autoscaling.metric", ("target_per_replica",)),
])
def test_bad_config_names_the_field(edit: dict[str, Any], field: str, words: tuple[str, ...]) -> None:
    sc = copy.deepcopy(BAD_BASE)
    a = sc["deployments"]["d"]["autoscaling"]
    for k, v in edit.items():
        if v is None:
            del a[k]
        else:
            a[k] = v
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "bad.yaml")
    msg = str(ei.value)
    assert f"field '{field}" in msg, msg
    for w in words:
        assert w in msg, msg


def test_zero_replicas_needs_autoscaling() -> None:
    sc = copy.deepcopy(BAD_BASE)
    del sc["deployments"]["d"]["autoscaling"]
    sc["deployments"]["d"]["replicas"] = 0
    with pytest.raises(ScenarioError) as ei:
        load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "bad.yaml")
    assert "field 'deployments.d'" in str(ei.value) and "replicas: 0 needs autoscaling" in str(ei.value)


def test_fixed_deployments_are_unchanged() -> None:
    """Without autoscaling, the summary has no autoscaling section and pools bill the whole pool."""
    sc = copy.deepcopy(BAD_BASE)
    del sc["deployments"]["d"]["autoscaling"]
    sim, res = run(sc)
    assert sim.deployments["d"].autoscaler is None and "autoscaling" not in res.summary["deployments"]["d"]
    assert res.summary["pools"]["p"]["billing"] == "whole_pool"
    assert "replicas" not in res.timeseries["d"]
    assert np.isclose(res.summary["pools"]["p"]["spend_usd"], 2 * 100 / 3600 * res.summary["pools"]["p"]["price_usd_per_gpu_hour"])
