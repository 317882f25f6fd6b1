"""Property tests: invariants that must hold for *every* small scenario, found with hypothesis.

Each example is a random small stack (1-4 replicas, random engine limits, chunked prefill on or
off, block size, memory utilisation low enough on small accelerators to force KV-cache
preemptions, any load balancer, Poisson traffic with lognormal or uniform lengths, some requests
longer than ``max_model_len`` so that they are rejected, drain on or off).

``derandomize=True`` makes the examples a function of the test source only, so CI is
reproducible: a failure here fails the same way on every run and every machine.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stacksim import Result, ScenarioError, load_scenario_text, run_scenario
from stacksim.engine.simulation import DRAIN_LIMIT_FACTOR, Simulation
from stacksim.metrics.summary import build_result

PROPERTY_SETTINGS = settings(
    deadline=None,
    max_examples=40,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

# Small models on small accelerators. gpu_memory_utilization is drawn from a wide range and,
# if the loader says the KV cache cannot hold one max_model_len sequence, raised in steps of 0.01
# until it can: examples near that edge have a KV cache of a few thousand tokens and preempt.
HARDWARE: tuple[tuple[str, str], ...] = (
    ("llama-3.1-8b", "a100-sxm-40gb"),
    ("llama-3.1-8b", "l4"),
    ("llama-3.2-3b", "l4"),
    ("llama-3.1-8b", "h100-sxm"),
)
BALANCERS = ("round_robin", "least_outstanding", "random", "shared_queue")


@st.composite
def scenario_dicts(draw: st.DrawFn, kv_pressure: bool = False) -> dict[str, Any]:
    """A random, valid, small scenario as a plain dict (dumped to YAML for the loader).

    ``kv_pressure`` restricts the draw to busy replicas with a KV cache near the smallest that
    fits, where preemption (recompute) is the common case rather than the exception.
    """
    replicas = draw(st.integers(1, 4), label="replicas")
    max_num_seqs = draw(st.integers(16 if kv_pressure else 1, 64), label="max_num_seqs")
    chunked = draw(st.booleans(), label="chunked")
    if chunked:
        mbt = draw(st.integers(max(64, max_num_seqs), 4096), label="max_num_batched_tokens")
        mml = 4096
    else:
        # Without chunked prefill a whole prompt must fit in one step: max_model_len <= budget.
        mbt = draw(st.integers(max(128, max_num_seqs), 4096), label="max_num_batched_tokens")
        mml = mbt
    block_size = draw(st.sampled_from([8, 16, 32]), label="block_size")
    model, acc = draw(st.sampled_from(HARDWARE), label="hardware")
    if kv_pressure or draw(st.booleans(), label="tight_kv"):
        gmu = 0.3  # raised below to the smallest 0.01 step that fits: a KV cache near the edge
    else:
        gmu = round(draw(st.floats(0.3, 0.95), label="gpu_memory_utilization"), 3)
    balancer = draw(st.sampled_from(BALANCERS), label="balancer")
    rate = round(draw(st.floats(5.0 if kv_pressure else 0.5, 25.0), label="rate_per_s"), 3)
    horizon = draw(st.sampled_from([20, 30, 45, 60]), label="horizon_s")
    drain = draw(st.booleans(), label="drain")
    warmup = draw(st.sampled_from([0, 5]), label="warmup_s")
    # Prompts: a sizeable share of max_model_len, with a tail beyond it (those get rejected).
    if draw(st.booleans(), label="lognormal_input"):
        inp: dict[str, Any] = {
            "kind": "lognormal",
            "median": round(mml * draw(st.floats(0.05, 0.5)), 1),
            "sigma": round(draw(st.floats(0.2, 1.2)), 3),
            "max": 2 * mml,
        }
    else:
        inp = {"kind": "uniform", "low": 1, "high": int(mml * draw(st.floats(0.3, 1.1)))}
    if draw(st.booleans(), label="lognormal_output"):
        out: dict[str, Any] = {
            "kind": "lognormal",
            "median": round(min(draw(st.floats(4.0, 300.0)), mml / 4), 1),
            "sigma": round(draw(st.floats(0.2, 1.2)), 3),
            "max": mml,
        }
    else:
        out = {"kind": "uniform", "low": 1, "high": draw(st.integers(1, 512))}
    sc: dict[str, Any] = {
        "name": "prop",
        "horizon_s": horizon,
        "warmup_s": warmup,
        "drain": drain,
        "pools": {"p": {"accelerator": acc, "count": replicas, "price_usd_per_gpu_hour": 1.0}},
        "deployments": {
            "d": {
                "model": model,
                "pool": "p",
                "replicas": replicas,
                "engine": {
                    "kind": "vllm",
                    "max_num_seqs": max_num_seqs,
                    "max_num_batched_tokens": mbt,
                    "enable_chunked_prefill": chunked,
                    "block_size": block_size,
                    "gpu_memory_utilization": gmu,
                    "max_model_len": mml,
                },
                "load_balancer": {"kind": balancer},
            }
        },
        "workloads": {
            "w": {
                "target": "d",
                "arrival": {"kind": "poisson", "rate_per_s": rate},
                "input_tokens": inp,
                "output_tokens": out,
            }
        },
    }
    engine = sc["deployments"]["d"]["engine"]
    while True:
        try:
            load_scenario_text(to_yaml(sc), "prop.yaml")
            return sc
        except ScenarioError:
            if engine["gpu_memory_utilization"] >= 0.95:
                raise
            engine["gpu_memory_utilization"] = round(min(0.95, engine["gpu_memory_utilization"] + 0.01), 3)


def to_yaml(sc: dict[str, Any]) -> str:
    return yaml.safe_dump(sc, sort_keys=False)


def simulate(sc: dict[str, Any], seed: int) -> tuple[Simulation, Result]:
    """Exactly what ``run_scenario`` does, keeping the Simulation for white-box checks."""
    sim = Simulation(load_scenario_text(to_yaml(sc), "prop.yaml"), seed=seed).run()
    return sim, build_result(sim)


# --------------------------------------------------------------------------- (i)-(iii), (v)


def check_accounting(sc: dict[str, Any], res: Result) -> None:
    """(i) arrived = completed + failed + rejected + in_flight, and the table agrees."""
    req = res.summary["requests"]
    df = res.requests
    assert req["arrived"] == len(df)
    assert req["arrived"] == req["completed"] + req["failed"] + req["rejected"] + req["in_flight"]
    counts = df["status"].value_counts()
    assert counts.get("completed", 0) == req["completed"]
    assert counts.get("failed", 0) == req["failed"]
    assert counts.get("rejected", 0) == req["rejected"]
    open_ = counts.get("pending", 0) + counts.get("queued", 0) + counts.get("running", 0)
    assert open_ == req["in_flight"]
    # Latency statistics cover exactly the measured requests (completed after the warm-up).
    measured = (df["status"] == "completed") & (df["arrival_s"] >= sc["warmup_s"])
    assert req["measured"] == int(measured.sum())
    assert res.summary["latency_ms"]["ttft"]["count"] == req["measured"]
    assert req["preemptions"] == int(df["preemptions"].sum())
    # Every request id appears once; arrivals are inside the horizon.
    assert df["request_id"].is_unique
    assert (df["arrival_s"] < sc["horizon_s"]).all()
    # Per-deployment counts add up to the global ones (there is one deployment).
    dep = res.summary["deployments"]["d"]["requests"]
    assert dep["arrived"] == req["arrived"]
    assert dep["completed"] == req["completed"]
    assert dep["rejected"] == req["rejected"]
    # Rejections are exactly the requests longer than max_model_len.
    mml = sc["deployments"]["d"]["engine"]["max_model_len"]
    too_long = (df["input_tokens"] + df["output_tokens"]) > mml
    assert ((df["status"] == "rejected") == too_long).all()
    if sc["drain"]:
        # A drain runs until every request ends, or gives up at DRAIN_LIMIT_FACTOR horizons
        # (an overloaded example may legitimately hit that limit).
        limit = DRAIN_LIMIT_FACTOR * sc["horizon_s"]
        end = res.summary["time"]["end_s"]
        assert end <= limit + 1e-9
        if end < limit:
            assert req["in_flight"] == 0, res.summary["time"]
    else:
        assert res.summary["time"]["end_s"] == sc["horizon_s"]


def check_levels(res: Result) -> None:
    """(ii) utilisation and KV occupancy are fractions."""
    for name, dep in res.summary["deployments"].items():
        for key in ("utilisation", "mean_kv_used", "peak_kv_used"):
            assert 0.0 <= dep[key] <= 1.0 + 1e-9, (name, key, dep[key])
        assert dep["mean_kv_used"] <= dep["peak_kv_used"] + 1e-6
        ts = res.timeseries[name]
        assert (ts["kv_used"] >= -1e-9).all() and (ts["kv_used"] <= 1.0 + 1e-9).all()
        assert (ts["busy"] >= -1e-9).all() and (ts["busy"] <= 1.0 + 1e-9).all()


def check_timestamps(res: Result) -> None:
    """(iii) completed requests: arrival <= admitted <= first token <= finish, TTFT > 0."""
    df = res.requests
    c = df[df["status"] == "completed"]
    for col in ("admitted_s", "first_token_s", "finish_s"):
        assert c[col].notna().all(), col
    assert (c["arrival_s"] <= c["admitted_s"]).all()
    assert (c["admitted_s"] <= c["first_token_s"]).all()
    assert (c["first_token_s"] <= c["finish_s"]).all()
    assert (c["ttft_s"] > 0).all()
    assert (c["e2e_s"] >= c["ttft_s"]).all()
    one = c["output_tokens"] == 1
    assert (c.loc[one, "first_token_s"] == c.loc[one, "finish_s"]).all()
    assert (c.loc[~one, "tpot_s"] > 0).all()
    assert (c["replica"] >= 0).all()
    assert (c["replica"] < res.summary["deployments"]["d"]["replicas"]).all()


def kv_state(replica: Any) -> tuple[int, int, int, int]:
    """(free blocks, blocks held by sequences on the replica, total blocks, open sequences).

    White-box: KV blocks are not in the public Result. Reads the compiled scheduler's state
    arrays (:mod:`stacksim.serving.core`) or the reference replica's attributes.
    """
    if hasattr(replica, "I"):
        from stacksim.serving import core_state as CS

        I = replica.I
        ms, B = int(I[CS.MAX_SEQS]), int(I[CS.BS])
        n, npf = int(I[CS.N]), int(I[CS.NPF])
        ctx = I[CS.IO : CS.IO + n]
        o_pf = CS.IO + 5 * ms
        done = I[o_pf + 1 : o_pf + npf * CS.PF_FIELDS : CS.PF_FIELDS]
        held = int(np.sum(-(-ctx // B)) + np.sum(-(-done // B)))
        return int(I[CS.FREE]), held, int(I[CS.TOTAL]), n + npf + int(I[CS.WQ_LEN])
    if hasattr(replica, "free") and hasattr(replica, "prefilling"):
        B = replica.B
        held = sum(-(-int(replica.ctx[i]) // B) for i in range(replica.n))
        held += sum(-(-st.done // B) for st in replica.prefilling)
        return replica.free, held, replica.total_blocks, replica.n + len(replica.prefilling) + len(replica.waiting)
    pytest.skip("replica KV state is not observable in this version")


def check_kv_conservation(sim: Simulation, drained: bool) -> None:
    """(v) KV blocks never leak: on every replica the free blocks plus the blocks held by the
    sequences still there equal the total, and after a complete drain every block is free and
    nothing is left queued, prefilling or decoding."""
    for dep in sim.deployments.values():
        for r in dep.replicas:
            free, held, total, open_ = kv_state(r)
            assert 0 <= free <= total
            assert free + held == total, (r.index, free, held, total)
            if drained:
                assert open_ == 0 and free == total, (r.index, free, total, open_)
        if drained:
            assert not dep.queue


def check_all(sc: dict[str, Any], seed: int) -> Result:
    sim, res = simulate(sc, seed)
    check_accounting(sc, res)
    check_levels(res)
    check_timestamps(res)
    drained = bool(sc["drain"]) and res.summary["requests"]["in_flight"] == 0
    check_kv_conservation(sim, drained)
    return res


@PROPERTY_SETTINGS
@given(sc=scenario_dicts(), seed=st.integers(0, 2**16))
def test_invariants_hold_for_random_scenarios(sc: dict[str, Any], seed: int) -> None:
    """Proves, for random small scenarios: every request is accounted for (summary and table
    agree, a drain leaves nothing in flight unless it hit its time limit, rejections are exactly
    the over-long requests); utilisation and KV occupancy stay in [0, 1]; completed requests'
    timestamps are ordered with TTFT > 0; and no KV block leaks (free + held == total on every
    replica, and all blocks free after a complete drain)."""
    check_all(sc, seed)


@PROPERTY_SETTINGS
@given(sc=scenario_dicts(kv_pressure=True), seed=st.integers(0, 2**16))
def test_invariants_hold_under_kv_pressure(sc: dict[str, Any], seed: int) -> None:
    """Proves the same invariants where preemption is the common case: busy replicas (16-64
    sequences, 5-25 requests/s) with the smallest KV cache that still fits one sequence, so
    requests are preempted, freed and recomputed, often several times."""
    res = check_all(sc, seed)
    event("preempted" if res.summary["requests"]["preemptions"] else "no preemption")


# --------------------------------------------------------------------------- (iv)


@settings(PROPERTY_SETTINGS, max_examples=20)
@given(sc=scenario_dicts(), seed=st.integers(0, 2**16))
def test_same_seed_same_result_other_seed_other_result(sc: dict[str, Any], seed: int) -> None:
    """Proves determinism: the same scenario and seed give byte-identical summary JSON and an
    identical request table on two runs; another seed gives a different table."""
    text = to_yaml(sc)
    a = run_scenario(load_scenario_text(text, "prop.yaml"), seed=seed)
    b = run_scenario(load_scenario_text(text, "prop.yaml"), seed=seed)
    assert a.to_json() == b.to_json()
    assert json.loads(a.to_json()) == a.summary
    pd.testing.assert_frame_equal(a.requests, b.requests, check_exact=True)
    c = run_scenario(load_scenario_text(text, "prop.yaml"), seed=seed + 1)
    assert c.summary["seed"] == seed + 1
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(a.requests, c.requests, check_exact=True)


# --------------------------------------------------------------------------- scaling


def _scaled(replicas: int, rate: float, balancer: str) -> str:
    return to_yaml(
        {
            "name": "scale",
            "horizon_s": 300,
            "warmup_s": 30,
            "pools": {"p": {"accelerator": "h100-sxm", "count": replicas}},
            "deployments": {
                "d": {
                    "model": "llama-3.1-8b",
                    "pool": "p",
                    "replicas": replicas,
                    "engine": {"kind": "vllm", "max_num_seqs": 64, "max_num_batched_tokens": 2048},
                    "load_balancer": {"kind": balancer},
                }
            },
            "workloads": {
                "w": {
                    "target": "d",
                    "arrival": {"kind": "poisson", "rate_per_s": rate},
                    "input_tokens": {"kind": "lognormal", "median": 1020, "sigma": 0.77, "max": 16000},
                    "output_tokens": {"kind": "lognormal", "median": 129, "sigma": 0.93, "max": 4000},
                }
            },
        }
    )


@pytest.mark.parametrize("balancer", BALANCERS)
@pytest.mark.parametrize(("replicas", "rate"), [(1, 4.0), (2, 12.0), (2, 20.0)])
def test_doubling_replicas_never_hurts_p99_ttft(replicas: int, rate: float, balancer: str) -> None:
    """Proves that, with the same traffic (same seed, so the same arrivals and lengths), doubling
    the replicas and the pool never makes p99 TTFT worse beyond a 5% (+1 ms) noise margin, from
    a lightly loaded to an overloaded starting point."""
    seed = 7
    small = run_scenario(load_scenario_text(_scaled(replicas, rate, balancer), "s.yaml"), seed=seed)
    big = run_scenario(load_scenario_text(_scaled(2 * replicas, rate, balancer), "s.yaml"), seed=seed)
    # Same traffic in both runs.
    pd.testing.assert_series_equal(small.requests["arrival_s"], big.requests["arrival_s"])
    p_small = small.summary["latency_ms"]["ttft"]["p99"]
    p_big = big.summary["latency_ms"]["ttft"]["p99"]
    assert p_big <= 1.05 * p_small + 1.0, (p_small, p_big)
    assert np.isfinite(p_big)


def test_shared_queue_spreads_work_over_replicas() -> None:
    """A shared queue in front of continuous-batching replicas uses
    them all: at 20 req/s on 4 replicas every replica serves at least 10% of the requests."""
    res = run_scenario(load_scenario_text(_scaled(4, 20.0, "shared_queue"), "s.yaml"), seed=7)
    share = res.requests["replica"].value_counts(normalize=True).reindex(range(4), fill_value=0.0)
    assert (share >= 0.10).all(), share.to_dict()


# --------------------------------------------------------------------------- found by the search


def _kv_edge(prompt: int, chunked: bool, max_model_len: int = 4088) -> str:
    """One request on a replica whose KV cache (516 blocks of 8 = 4128 tokens, of which
    (516 - 5) x 8 = 4088 are admissible above the 1% watermark) is just above max_model_len."""
    return to_yaml(
        {
            "name": "kv-edge",
            "horizon_s": 10,
            "drain": True,
            "pools": {"p": {"accelerator": "l4", "count": 1, "price_usd_per_gpu_hour": 1.0}},
            "deployments": {
                "d": {
                    "model": "llama-3.2-3b",
                    "pool": "p",
                    "engine": {
                        "kind": "vllm",
                        "max_num_seqs": 44,
                        "max_num_batched_tokens": 4091,
                        "enable_chunked_prefill": chunked,
                        "block_size": 8,
                        "gpu_memory_utilization": 0.34,
                        "max_model_len": max_model_len,
                    },
                }
            },
            "workloads": {
                "w": {
                    "target": "d",
                    "arrival": {"kind": "deterministic", "rate_per_s": 1.0},
                    "max_requests": 1,
                    "input_tokens": {"kind": "fixed", "value": prompt},
                    "output_tokens": {"kind": "fixed", "value": 1},
                }
            },
        }
    )


def test_kv_edge_prompt_that_fits_runs() -> None:
    """Proves the edge case below is about the watermark only: a 4050-token prompt (507 blocks)
    on the same replica completes, with and without chunked prefill, and so does a 4090-token
    prompt with chunked prefill."""
    for prompt, chunked in ((4050, False), (4050, True), (4087, False), (4087, True)):
        res = run_scenario(load_scenario_text(_kv_edge(prompt, chunked), "edge.yaml"))
        assert res.requests["status"].tolist() == ["completed"], (prompt, chunked)


def test_scenario_the_loader_accepts_does_not_crash_at_the_kv_edge() -> None:
    """A max_model_len whose longest prompt could never be admitted above the watermark
    (4091 > 4088 admissible tokens) is refused at the door with the number that fits, instead
    of crashing the run (found by a random search: llama-3.2-3b on l4 at 0.34 utilisation)."""
    with pytest.raises(ScenarioError, match="max_model_len <= 4088"):
        load_scenario_text(_kv_edge(4090, chunked=False, max_model_len=4091), "edge.yaml")
