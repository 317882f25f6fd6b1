"""Pre-routing must be an optimisation only.

For state-independent balancers (round robin, random) ``DeploymentRuntime.bind_requests`` routes
every request up front and the replicas take their arrivals in at iteration boundaries, with no
arrival events. Setting ``prerouting_disabled`` on a deployment makes the same balancers route
each request when it arrives (the path the state-dependent balancers always take). Both paths
must give identical per-request results, at light load, at heavy load and under KV-cache
preemption.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacksim import Result, load_scenario_text, run_scenario
from stacksim.engine.simulation import Simulation
from stacksim.metrics.summary import build_result
from tests.test_properties import scenario_dicts, to_yaml

SEEDS = (0, 1, 2)

# name -> (accelerator, gpu_memory_utilization, rate_per_s): 4 replicas of Llama-3.1-8B.
LOADS: dict[str, tuple[str, float, float]] = {
    "light": ("h100-sxm", 0.9, 5.0),  # mostly idle replicas and long decode stretches
    "heavy": ("h100-sxm", 0.9, 40.0),  # queues build up; no preemption
    "preempting": ("a100-sxm-40gb", 0.6, 30.0),  # small KV cache: hundreds of preemptions
}


def scenario(load: str, balancer: str, drain: bool, horizon: float = 60.0) -> str:
    acc, gmu, rate = LOADS[load]
    return yaml.safe_dump(
        {
            "name": f"prerouting-{load}",
            "horizon_s": horizon,
            "warmup_s": 5,
            "drain": drain,
            "pools": {"p": {"accelerator": acc, "count": 4}},
            "deployments": {
                "d": {
                    "model": "llama-3.1-8b",
                    "pool": "p",
                    "replicas": 4,
                    "engine": {
                        "kind": "vllm",
                        "max_num_seqs": 64,
                        "max_num_batched_tokens": 2048,
                        "max_model_len": 8192,
                        "gpu_memory_utilization": gmu,
                    },
                    "load_balancer": {"kind": balancer},
                }
            },
            "workloads": {
                "w": {
                    "target": "d",
                    "arrival": {"kind": "poisson", "rate_per_s": rate},
                    # The tail beyond max_model_len is rejected on both paths.
                    "input_tokens": {"kind": "lognormal", "median": 1000, "sigma": 0.8, "max": 9000},
                    "output_tokens": {"kind": "lognormal", "median": 150, "sigma": 0.9, "max": 3000},
                }
            },
        },
        sort_keys=False,
    )


def run(text: str, seed: int, prerouting: bool) -> Result:
    """Run with pre-routing on (the default) or off, and check which path was really taken."""
    sim = Simulation(load_scenario_text(text, "prerouting.yaml"), seed=seed)
    taken: list[bool] = []
    for dep in sim.deployments.values():
        dep.prerouting_disabled = not prerouting
        bind = dep.bind_requests

        def spy(rids: np.ndarray, times: np.ndarray, _bind: Any = bind) -> bool:
            routed = bool(_bind(rids, times))
            taken.append(routed)
            return routed

        dep.bind_requests = spy  # type: ignore[method-assign]
    sim.run()
    assert taken == [prerouting] * len(sim.deployments), "the run did not take the intended path"
    return build_result(sim)


def frame_diff(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """A readable account of the rows and columns where two request tables differ."""
    cols = [c for c in a.columns if not a[c].equals(b[c])]
    rows = np.zeros(len(a), dtype=bool)
    for c in cols:
        x, y = a[c], b[c]
        rows |= ~((x == y) | (x.isna() & y.isna())).to_numpy()
    show = ["request_id", "arrival_s", "status", "replica", "admitted_s", "finish_s"]
    both = pd.concat([a.loc[rows, show], b.loc[rows, show[2:]].add_suffix("_at_arrival")], axis=1)
    return f"columns {cols}, {int(rows.sum())} rows:\n{both.head(10).to_string()}"


def assert_same(pre: Result, late: Result) -> None:
    """Identical tables: every non-float column (ids, token counts, replica, status,
    preemptions) exactly; timestamps to within 1e-12 relative, i.e. a few ulps (SimPy's clock is
    delay-based: see test_idle_replica_admits_within_an_ulp_of_arrival_when_prerouted)."""
    a, b = pre.requests, late.requests
    try:
        frames_match(a, b)
    except AssertionError:
        pytest.fail("pre-routed and at-arrival request tables differ: " + frame_diff(a, b))


def frames_match(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Raise AssertionError unless the tables agree as :func:`assert_same` requires."""
    assert a.shape == b.shape and list(a.columns) == list(b.columns)
    floats = [c for c in a.columns if a[c].dtype.kind == "f"]
    others = [c for c in a.columns if c not in floats]
    pd.testing.assert_frame_equal(a[others], b[others], check_exact=True)
    for c in floats:
        np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-12, atol=0, equal_nan=True, err_msg=c)


# --------------------------------------------------------------------------- drain: all equal


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("load", list(LOADS))
@pytest.mark.parametrize("balancer", ["round_robin", "random"])
def test_paths_agree_when_every_request_finishes(balancer: str, load: str, seed: int) -> None:
    """Proves pre-routing changes nothing when the run drains: the request tables are identical
    bit for bit (every timestamp, replica, status and preemption count) and so is the whole
    summary (levels, utilisation, KV occupancy, spend), at light, heavy and preempting load."""
    text = scenario(load, balancer, drain=True)
    pre, late = run(text, seed, True), run(text, seed, False)
    assert pre.summary["requests"]["in_flight"] == 0
    if load == "preempting":
        assert pre.summary["requests"]["preemptions"] > 100
    if load != "light":
        assert pre.summary["requests"]["rejected"] > 0
    assert_same(pre, late)
    assert pre.to_json() == late.to_json()


@settings(deadline=None, max_examples=30, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    sc=scenario_dicts(),
    seed=st.integers(0, 2**16),
    balancer=st.sampled_from(["round_robin", "random"]),
)
def test_paths_agree_on_random_scenarios(sc: dict[str, Any], seed: int, balancer: str) -> None:
    """Proves the same on random small scenarios (the property tests' generator: 1-4 replicas,
    any engine limits, chunked prefill on/off, tight KV caches, rejections), drained."""
    sc["drain"] = True
    sc["deployments"]["d"]["load_balancer"] = {"kind": balancer}
    text = to_yaml(sc)
    pre, late = run(text, seed, True), run(text, seed, False)
    assert_same(pre, late)
    assert pre.to_json() == late.to_json()


# --------------------------------------------------------------------------- no drain


def test_paths_agree_at_the_horizon() -> None:
    """The two paths give identical request tables and summaries for runs cut at the horizon
    too (requests arriving in a replica's last, unfinished iteration are queued at the end),
    over 2 balancers x 3 loads x 3 seeds."""
    failures = []
    for balancer in ("round_robin", "random"):
        for load in LOADS:
            text = scenario(load, balancer, drain=False)
            for seed in SEEDS:
                pre, late = run(text, seed, True), run(text, seed, False)
                try:
                    frames_match(pre.requests, late.requests)
                    assert pre.to_json() == late.to_json()
                except AssertionError:
                    failures.append(f"{balancer}/{load}/seed {seed}: " + frame_diff(pre.requests, late.requests))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("balancer", ["round_robin", "random"])
def test_no_arrived_request_is_left_pending(balancer: str) -> None:
    """Every request that arrived before the end of a run has been
    routed: none is 'pending' and every unfinished one has a replica, over 6 seeds of the
    preempting load cut at the horizon. Those that arrived within the engine's front-end latency
    of the end are still in the API server (serving/deployment.submit) and are left out."""
    pending = {}
    for seed in range(6):
        rs = load_scenario_text(scenario("preempting", balancer, drain=False), "p.yaml")
        res = run_scenario(rs, seed=seed)
        df = res.requests
        df = df[df["arrival_s"] < res.summary["time"]["end_s"] - rs.deployments["d"].frontend_s]
        bad = df[(df["status"] == "pending") | ((df["status"] != "rejected") & (df["replica"] < 0))]
        if len(bad):
            pending[seed] = bad["request_id"].tolist()
    assert not pending, f"seed -> arrived requests never routed: {pending}"


# --------------------------------------------------------------------------- idle wake-ups


def idle_scenario(balancer: str) -> str:
    """8 replicas at 2 requests/s with tiny requests: nearly every request finds its replica
    idle, so the replica wakes up for it."""
    return yaml.safe_dump(
        {
            "name": "idle",
            "horizon_s": 30,
            "drain": True,
            "pools": {"p": {"accelerator": "h100-sxm", "count": 8}},
            "deployments": {
                "d": {
                    "model": "llama-3.1-8b",
                    "pool": "p",
                    "replicas": 8,
                    "engine": {"kind": "vllm", "version": "0.6", "max_num_seqs": 4, "max_num_batched_tokens": 512, "max_model_len": 4096},
                    "load_balancer": {"kind": balancer},
                }
            },
            "workloads": {
                "w": {
                    "target": "d",
                    "arrival": {"kind": "poisson", "rate_per_s": 2.0},
                    "input_tokens": {"kind": "uniform", "low": 1, "high": 200},
                    "output_tokens": {"kind": "uniform", "low": 1, "high": 3},
                }
            },
        },
        sort_keys=False,
    )


def late_admissions(prerouting: bool) -> dict[str, list[tuple[int, float]]]:
    """Requests admitted within 1 ns after arrival but not at exactly the arrival time."""
    out: dict[str, list[tuple[int, float]]] = {}
    for balancer in ("round_robin", "random"):
        for seed in range(6):
            df = run(idle_scenario(balancer), seed, prerouting).requests
            d = (df["admitted_s"] - df["arrival_s"]).to_numpy()
            assert (d >= 0).all()
            bad = np.flatnonzero((d < 1e-9) & (d != 0.0))
            if bad.size:
                out[f"{balancer}/seed {seed}"] = [(int(df["request_id"].iloc[i]), float(d[i])) for i in bad]
    return out


def test_idle_replica_admits_at_the_arrival_instant_when_routing_at_arrival() -> None:
    """Proves that, routing at arrival, a request that finds its replica idle is admitted at
    exactly its arrival time (2 balancers x 6 seeds, about 60 idle admissions each)."""
    assert late_admissions(prerouting=False) == {}


def test_idle_replica_admits_within_an_ulp_of_arrival_when_prerouted() -> None:
    """A pre-routed idle replica sleeps timeout(t_arrival - now); SimPy's clock is delay-based,
    so now + (t_arrival - now) can differ from t_arrival by an ulp. Admission is therefore within
    1e-12 s of arrival (not always bit-identical to routing at arrival), which is why the path
    comparisons above allow 1e-12 relative on timestamps."""
    for balancer in ("round_robin", "random"):
        for seed in range(6):
            df = run(idle_scenario(balancer), seed, True).requests
            d = (df["admitted_s"] - df["arrival_s"]).to_numpy()
            idle = d < 1e-9
            assert idle.sum() > 10
            assert (d[idle] >= 0).all() and (d[idle] < 1e-12).all()


# --------------------------------------------------------------------------- which path


@pytest.mark.parametrize(
    ("balancer", "static"),
    [("round_robin", True), ("random", True), ("least_outstanding", False), ("shared_queue", False)],
)
def test_only_state_independent_balancers_preroute(balancer: str, static: bool) -> None:
    """Proves bind_requests pre-routes exactly for the state-independent balancers, and never
    when prerouting_disabled is set."""
    text = scenario("light", balancer, drain=True, horizon=10.0)
    sim = Simulation(load_scenario_text(text, "p.yaml"), seed=0)
    dep = sim.deployments["d"]
    n = sim.reqs.n
    ids = np.arange(n)
    times = sim.reqs.arrival_s[:n].copy()
    assert bool(dep.bind_requests(ids, times)) is static
    sim2 = Simulation(load_scenario_text(text, "p.yaml"), seed=0)
    sim2.deployments["d"].prerouting_disabled = True
    assert sim2.deployments["d"].bind_requests(ids, times) is False
