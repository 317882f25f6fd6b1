"""Disaggregated prefill/decode (serving/disagg.py): the KV transfer's time on a hand-computed
case, every request accounted for with its two legs, TTFT from the side the group names, the
decode side never recomputing a transferred prompt (both scheduler twins), failures, spend, the
seed article's claim, and bad configurations naming their field.

Everything is simulated time; nothing reads a clock.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import yaml

from stacksim.engine.simulation import Simulation
from stacksim.errors import ScenarioError
from stacksim.metrics.summary import Result, build_result
from stacksim.scenario import load_scenario_text
from stacksim.serving.disagg import LINK_DEFAULTS, transfer_seconds

KV_PER_TOKEN_8B = 32 * 2 * 8 * 128 * 2  # Llama-3.1-8B: layers x (K, V) x KV heads x head dim x bf16 bytes = 131,072


def scenario(*, prefill: dict[str, Any] | None = None, decode: dict[str, Any] | None = None, group: dict[str, Any] | None = None,
             workload: dict[str, Any] | None = None, count: int = 4, horizon_s: float = 20.0, **extra: Any) -> dict[str, Any]:
    eng = {"max_model_len": 16384}
    sc: dict[str, Any] = {
        "name": "disagg",
        "horizon_s": horizon_s,
        "drain": True,
        "pools": {"h100": {"accelerator": "h100-sxm", "count": count, "price_usd_per_gpu_hour": 2.0}},
        "deployments": {
            "pre": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 1, "engine": dict(eng), **(prefill or {})},
            "dec": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 1, "engine": dict(eng), **(decode or {})},
        },
        "disaggregated": {"g": {"prefill": "pre", "decode": "dec", **(group or {})}},
        "workloads": {"w": {"target": "g", "arrival": {"kind": "poisson", "rate_per_s": 4.0},
                            "input_tokens": {"kind": "uniform", "low": 100, "high": 6000},
                            "output_tokens": {"kind": "uniform", "low": 1, "high": 200}, **(workload or {})}},
    }
    sc.update(extra)
    return sc


def run(sc: dict[str, Any], seed: int = 1, reference: bool = False) -> tuple[Simulation, Result]:
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "disagg-test.yaml")
    sim = Simulation(rs, seed=seed, reference=reference).run()
    return sim, build_result(sim)


def clients(res: Result) -> Any:
    return res.requests[(res.requests["via"] == "disaggregated").to_numpy()].reset_index(drop=True)


# --------------------------------------------------------------------------- the transfer


def test_kv_transfer_time_is_bytes_over_bandwidth_plus_latency() -> None:
    """One 4,000-token prompt of Llama-3.1-8B: 4,000 x 131,072 B = 524.288 MB over 100 Gb/s is
    41.94304 ms, plus 2 ms of latency; with the prefill on TP2 each GPU sends half the bytes over
    its own link, so the wire time halves."""
    one = {"arrival": {"kind": "offline"}, "max_requests": 1, "input_tokens": {"kind": "fixed", "value": 4000},
           "output_tokens": {"kind": "fixed", "value": 50}}
    link = {"transfer": {"link": "rdma", "bandwidth_gbps": 100.0, "latency_ms": 2.0}}
    expected = 4000 * KV_PER_TOKEN_8B * 8 / 100e9 + 0.002
    assert expected == pytest.approx(0.04394304, abs=1e-12)
    assert transfer_seconds(4000 * KV_PER_TOKEN_8B, 100.0, 0.002) == pytest.approx(expected, abs=1e-15)
    for tp, want in ((1, expected), (2, 4000 * KV_PER_TOKEN_8B / 2 * 8 / 100e9 + 0.002)):
        sim, res = run(scenario(workload=one, group=link, prefill={"tensor_parallel": tp}))
        c = clients(res).iloc[0]
        assert c["transfer_start_s"] == c["prefill_done_s"]  # an idle link: no wait
        assert c["transfer_end_s"] - c["prefill_done_s"] == pytest.approx(want, abs=1e-12)
        kv = res.summary["disaggregated"]["g"]["kv_transfer"]
        assert kv["transfers"] == 1
        assert kv["gb"] == pytest.approx(4000 * KV_PER_TOKEN_8B / 1e9, abs=1e-6)  # all GPUs together
        assert kv["time_ms"]["p50"] == pytest.approx(want * 1000.0, abs=1e-3)
        # The decode leg arrives when the KV has.
        dec = sim.reqs.arrival_s[int(c["decode_request_id"])]
        assert dec == pytest.approx(c["transfer_end_s"], abs=1e-12)


def test_transfers_out_of_one_prefill_replica_queue_for_its_link() -> None:
    """Two prompts prefilled in the same step leave together: the second waits for the first's
    wire time (not its latency), first come first served."""
    two = {"arrival": {"kind": "offline"}, "max_requests": 2, "input_tokens": {"kind": "fixed", "value": 3000},
           "output_tokens": {"kind": "fixed", "value": 20}}
    _, res = run(scenario(workload=two, group={"transfer": {"bandwidth_gbps": 50.0, "latency_ms": 5.0}}))
    c = clients(res).sort_values("transfer_start_s")
    wire = 3000 * KV_PER_TOKEN_8B * 8 / 50e9
    assert c["prefill_done_s"].nunique() == 1
    start = c["transfer_start_s"].to_numpy()
    assert start[1] - start[0] == pytest.approx(wire, abs=1e-12)
    assert (c["transfer_end_s"] - c["transfer_start_s"]).to_numpy() == pytest.approx([wire + 0.005] * 2, abs=1e-12)
    assert res.summary["disaggregated"]["g"]["kv_transfer"]["link_wait_ms"]["p99"] > 0


def test_link_defaults_are_the_documented_figures() -> None:
    rdma, tcp, nvlink = LINK_DEFAULTS["rdma"], LINK_DEFAULTS["tcp"], LINK_DEFAULTS["nvlink"]
    assert rdma[0] == pytest.approx(348.0)  # 400 Gb/s x 0.87
    assert tcp[0] == pytest.approx(190.0 / 4.6)  # 41.3 GB/s per 8-GPU host -> Gb/s per GPU
    assert nvlink[0] is None  # from the catalog
    sc = scenario(group={"transfer": {"link": "nvlink"}})
    rs = load_scenario_text(yaml.safe_dump(sc), "disagg-test.yaml")
    assert rs.disaggregated["g"].bandwidth_gbps == pytest.approx(450 * 8)  # H100 NVLink4, 450 GB/s one way
    assert "bandwidth_gbps: 3600.0" in __import__("stacksim.scenario", fromlist=["resolved_yaml"]).resolved_yaml(rs)


# --------------------------------------------------------------------------- the flow


@pytest.mark.parametrize("first_token", ["decode", "prefill"])
def test_every_request_accounted_for_with_ttft_from_the_named_side(first_token: str) -> None:
    sim, res = run(scenario(group={"first_token": first_token}))
    s = res.summary
    r = s["requests"]
    assert r["arrived"] > 50
    assert r["arrived"] == r["completed"] + r["failed"] + r["rejected"] + r["in_flight"]
    assert r["completed"] == r["arrived"]  # drained, nothing failed
    g = s["disaggregated"]["g"]
    assert g["requests"]["arrived"] == r["arrived"] and g["requests"]["completed"] == r["arrived"]
    assert g["ratio"] == "1P1D"
    c = clients(res)
    reqs = sim.reqs
    pre = c["prefill_request_id"].to_numpy()
    one_token = c["output_tokens"].to_numpy() == 1
    dec = c["decode_request_id"].to_numpy()
    # Legs: the prefill leg is the same prompt with one output token, arriving with the client.
    assert (reqs.output_tokens[pre] == 1).all()
    assert (reqs.input_tokens[pre] == c["input_tokens"].to_numpy()).all()
    assert (reqs.arrival_s[pre] == c["arrival_s"].to_numpy()).all()
    finish = c["finish_s"].to_numpy()
    if first_token == "decode":
        assert (dec >= 0).all()  # every request goes through the decode side, 1-token answers too
        assert np.array_equal(c["first_token_s"].to_numpy(), reqs.first_token_s[dec])
    else:
        # DistServe/Splitwise: the prefill's token is the first; a 1-token answer ends there.
        assert np.array_equal(c["first_token_s"].to_numpy(), reqs.first_token_s[pre])
        assert (dec[one_token] == -1).all() and (dec[~one_token] >= 0).all()
        assert np.array_equal(finish[one_token], reqs.finish_s[pre[one_token]])
    has = dec >= 0
    assert np.array_equal(finish[has], reqs.finish_s[dec[has]])
    assert (reqs.output_tokens[dec[has]] == c["output_tokens"].to_numpy()[has]).all()
    # Both serving rows are kept, so each deployment counts its own legs.
    assert s["deployments"]["pre"]["requests"]["completed"] == len(c)
    assert s["deployments"]["dec"]["requests"]["completed"] == int(has.sum())
    # The prefill side never decodes; all inter-token gaps are the decode side's.
    assert sim.deployments["pre"].itl_hist.sum() == 0
    assert sim.deployments["dec"].itl_hist.sum() > 0
    # The client's TTFT and end-to-end time span both legs.
    ttft = (c["first_token_s"] - c["arrival_s"]).to_numpy()
    assert (ttft >= (reqs.first_token_s[pre] - reqs.arrival_s[pre]) - 1e-12).all()


def test_decode_side_prefills_one_token_of_a_transferred_prompt() -> None:
    """A 4,001-token prompt: the decode replica finds 4,000 tokens (250 whole blocks of 16)
    present and computes exactly one, the last, whose logits give the first token."""
    one = {"arrival": {"kind": "offline"}, "max_requests": 1, "input_tokens": {"kind": "fixed", "value": 4001},
           "output_tokens": {"kind": "fixed", "value": 10}}
    sim, res = run(scenario(workload=one))
    d = int(clients(res).iloc[0]["decode_request_id"])
    assert sim.reqs.cached_tokens[d] == 4000
    pc = res.summary["deployments"]["dec"]["prefix_cache"]
    assert pc["prompt_tokens"] - pc["cached_tokens"] == 1


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_decode_never_recomputes_a_transferred_prompt(prefix_caching: bool) -> None:
    """Random prompts under KV pressure (small cache, preemptions): every decode row's cached
    tokens at its first admission are the prompt less one, rounded down to whole 16-token
    blocks; with prefix caching off the decode deployment still gets the transferred KV (its
    cache then only holds transferred prompts)."""
    sc = scenario(decode={"engine": {"max_model_len": 16384, "prefix_caching": prefix_caching, "gpu_memory_utilization": 0.3}},
                  workload={"arrival": {"kind": "poisson", "rate_per_s": 12.0}, "output_tokens": {"kind": "uniform", "low": 100, "high": 600}})
    sim, res = run(sc)
    c = clients(res)
    dec = c["decode_request_id"].to_numpy()
    assert (dec >= 0).all()
    inp = c["input_tokens"].to_numpy()
    assert np.array_equal(sim.reqs.cached_tokens[dec], (inp - 1) // 16 * 16)
    assert res.summary["deployments"]["dec"]["preemptions"] > 0  # the cache was under pressure
    assert res.summary["disaggregated"]["g"]["decode_prefix_cache_forced"] is (not prefix_caching)
    assert res.summary["requests"]["completed"] == len(c)


def test_both_scheduler_twins_agree_on_a_disaggregated_run() -> None:
    """The transferred-KV preset goes through PrefixCache.lookup, which both the compiled
    scheduler and its plain-Python twin call: identical per-request records."""
    sc = scenario(workload={"arrival": {"kind": "poisson", "rate_per_s": 8.0}}, horizon_s=10.0)
    _, fast = run(sc)
    _, ref = run(sc, reference=True)
    cols = ["arrival_s", "admitted_s", "first_token_s", "finish_s", "cached_tokens", "preemptions", "transfer_end_s"]
    assert fast.requests[cols].equals(ref.requests[cols])
    assert fast.summary["disaggregated"] == ref.summary["disaggregated"]


@pytest.mark.parametrize("side", ["pre", "dec"])
def test_a_failure_on_either_side_fails_the_request(side: str) -> None:
    sc = scenario(faults=[{"kind": "replica_failure", "deployment": side, "replica": 0, "at_s": 5.0, "repair_s": 2.0}])
    sim, res = run(sc)
    r = res.summary["requests"]
    assert r["failed"] > 0
    assert r["arrived"] == r["completed"] + r["failed"] + r["rejected"] + r["in_flight"]
    assert r["in_flight"] == 0
    c = clients(res)
    failed = c[(c["status"] == "failed").to_numpy()]
    legs = failed["decode_request_id" if side == "dec" else "prefill_request_id"].to_numpy()
    assert (legs >= 0).all()
    assert (sim.reqs.status[legs] == 5).all()  # the leg on the failed side failed too
    assert ((failed["finish_s"] >= 5.0) & (failed["finish_s"] <= 7.0 + 1e-9)).all()
    assert sim.disagg is not None and sim.disagg.pending == 0


def test_rejections_on_either_side() -> None:
    """A prompt too long for the prefill side is rejected at once; one that fits the prefill
    side but whose answer does not fit the decode side's max_model_len is rejected there after
    its prefill (vLLM's proxy does not check either)."""
    sc = scenario(decode={"engine": {"max_model_len": 4096}}, prefill={"engine": {"max_model_len": 8192}},
                  workload={"input_tokens": {"kind": "uniform", "low": 3000, "high": 9000},
                            "output_tokens": {"kind": "fixed", "value": 100}})
    _, res = run(sc)
    c = clients(res)
    inp = c["input_tokens"].to_numpy()
    st = c["status"].astype(str).to_numpy()
    assert (st[inp + 1 > 8192] == "rejected").all()
    assert (st[(inp + 1 <= 8192) & (inp + 100 > 4096)] == "rejected").all()
    late = (inp + 1 <= 8192) & (inp + 100 > 4096)
    assert (c["decode_request_id"].to_numpy()[late] >= 0).all()  # it did reach the decode side
    assert (st[inp + 100 <= 4096] == "completed").all()
    r = res.summary["requests"]
    assert r["arrived"] == r["completed"] + r["rejected"]


def test_spend_follows_both_legs() -> None:
    """Each deployment's dollars go to the legs it served; a client's row carries both legs',
    and with every GPU of the pool in use the rows add up to the run's accelerator spend."""
    sc = scenario(count=2, workload={"arrival": {"kind": "poisson", "rate_per_s": 3.0}})
    _, res = run(sc)
    s = res.summary
    assert s["spend"]["gpu_usd"] == pytest.approx(s["deployments"]["pre"]["spend_usd"] + s["deployments"]["dec"]["spend_usd"], abs=2e-6)
    assert res.requests["gpu_cost_usd"].sum() == pytest.approx(s["spend"]["gpu_usd"], rel=1e-4)
    assert (res.requests["gpu_cost_usd"] > 0).all()


# --------------------------------------------------------------------------- bad configurations


def _problem(sc: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ScenarioError) as err:
        load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "disagg-test.yaml")
    p = err.value.problems[0]
    assert p.line is not None
    return p.field or "", p.message


def _with(sc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(sc)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("path, value, field, words", [
    (("disaggregated", "g", "prefill"), "nope", "disaggregated.g.prefill", "no deployment named 'nope'"),
    (("disaggregated", "g", "decode"), "pre", "disaggregated.g.decode", "also the prefill deployment"),
    (("deployments", "dec", "model"), "llama-3.1-70b", "disaggregated.g.decode", "serves llama-3.1-70b"),
    (("deployments", "dec", "engine", "kv_cache_dtype"), "fp8", "disaggregated.g.decode", "kv_cache_dtype"),
    (("disaggregated", "g", "transfer"), {"link": "nvlink"}, None, None),  # same H100 pool: valid
    (("workloads", "w", "target"), "pre", "workloads.w.target", "target the group ('g')"),
    (("disaggregated", "g", "transfer"), {"link": "infiniband"}, "disaggregated.g.transfer.link", "rdma"),
    (("disaggregated", "g", "transfer"), {"bandwidth_gbps": 0}, "disaggregated.g.transfer.bandwidth_gbps", "greater than 0"),
    (("workloads", "w", "arrival"), {"kind": "closed_loop", "clients": 4}, "workloads.w.arrival.kind", "open-loop"),
])
def test_bad_config_names_the_field(path: tuple[str, ...], value: Any, field: str | None, words: str | None) -> None:
    sc = _with(scenario(), path, value)
    if path == ("deployments", "dec", "model"):
        sc = _with(sc, ("deployments", "dec", "tensor_parallel"), 4)
        sc = _with(sc, ("pools", "h100", "count"), 5)
    if field is None:
        load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "disagg-test.yaml")
        return
    got_field, message = _problem(sc)
    assert got_field == field
    assert words in message


def test_kv_too_large_for_the_decode_replica() -> None:
    """The prefill side (H100, 128k context) accepts prompts whose KV one L4 decode replica
    (24 GB, 16 GB of it weights) cannot hold: rejected with both numbers and the fix."""
    sc = scenario(prefill={"engine": {"max_model_len": 131072}}, decode={"pool": "l4", "engine": {"max_model_len": 16384}})
    sc["pools"]["l4"] = {"accelerator": "l4", "count": 1, "price_usd_per_gpu_hour": 0.8}
    field, message = _problem(sc)
    assert field == "disaggregated.g.decode"
    assert "KV too large for the decode replica" in message and "131072" in message
    assert "deployments.pre.engine.max_model_len" in message


def test_nvlink_needs_one_nvlink_domain() -> None:
    sc = scenario(decode={"pool": "h200"}, group={"transfer": {"link": "nvlink"}})
    sc["pools"]["h200"] = {"accelerator": "h200", "count": 1, "price_usd_per_gpu_hour": 3.0}
    field, message = _problem(sc)
    assert field == "disaggregated.g.transfer.link"
    assert "h100-sxm" in message and "h200" in message
    # Different accelerators over RDMA are fine (prefill on H100, decode on H200).
    ok = copy.deepcopy(sc)
    ok["disaggregated"]["g"]["transfer"] = {"link": "rdma"}
    _, res = run(ok)
    assert res.summary["disaggregated"]["g"]["requests"]["completed"] == res.summary["requests"]["arrived"]


# --------------------------------------------------------------------------- the seed article's claim

# Targets of MLPerf Inference v5.0's Llama-2-70B Interactive scenario (TTFT 450 ms, TPOT 40 ms,
# mlcommons.org, "LLM inference v5.0"), and the same TTFT with a tight TPOT of 15 ms (1.5x an
# unloaded Llama-3.1-8B decode step on an H100, ~10 ms). Goodput as DistServe defines it: the
# highest request rate at which 90% of requests meet both targets.
SLO_MLPERF = {"ttft_ms": 450.0, "tpot_ms": 40.0}
SLO_TIGHT = {"ttft_ms": 450.0, "tpot_ms": 15.0}


def _four_h100(inp: int, out: int, rate: float, prefill_replicas: int | None, slo: dict[str, float], horizon_s: float) -> dict[str, Any]:
    """Llama-3.1-8B on the same four H100s: four co-located replicas, or P prefill + (4 - P)
    decode replicas over the default RDMA link; vLLM defaults (chunked prefill, 8,192-token
    steps), least-outstanding balancing, fixed lengths, Poisson arrivals."""
    # The vLLM 0.6-0.9 profile the claim was reproduced with (README's table). Under vLLM 0.10+'s
    # (faster prefill GEMMs and a per-request API-server latency) co-location keeps up on long
    # prompts too: seed 1 gives -16% for disaggregation on long prompts, -21% on short.
    eng = {"version": "0.6", "max_model_len": 16384}
    lb = {"kind": "least_outstanding"}
    wl = {"arrival": {"kind": "poisson", "rate_per_s": rate}, "input_tokens": {"kind": "fixed", "value": inp},
          "output_tokens": {"kind": "fixed", "value": out}}
    sc: dict[str, Any] = {"name": "seed-claim", "seed": 1, "horizon_s": horizon_s, "warmup_s": horizon_s / 6, "drain": True,
                          "pools": {"h100": {"accelerator": "h100-sxm", "count": 4}}, "slo": slo}
    if prefill_replicas is None:
        sc["deployments"] = {"d": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 4, "engine": eng, "load_balancer": lb}}
        sc["workloads"] = {"w": {"target": "d", **wl}}
    else:
        sc["deployments"] = {
            "p": {"model": "llama-3.1-8b", "pool": "h100", "replicas": prefill_replicas, "engine": eng, "load_balancer": lb},
            "d": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 4 - prefill_replicas, "engine": eng, "load_balancer": lb}}
        sc["disaggregated"] = {"g": {"prefill": "p", "decode": "d"}}
        sc["workloads"] = {"w": {"target": "g", **wl}}
    return sc


def _goodput(inp: int, out: int, prefill_replicas: int | None, slo: dict[str, float], lo: float, hi: float,
             horizon_s: float) -> float:
    """Highest Poisson rate (to 3%) at which >= 90% of measured requests meet every SLO target."""
    def meets(rate: float) -> bool:
        _, res = run(_four_h100(inp, out, rate, prefill_replicas, slo, horizon_s))
        return (res.summary["slo"]["attainment_all"] or 0.0) >= 0.9

    while not meets(lo):
        lo, hi = lo / 2, lo
        if lo < 1e-3:
            return 0.0
    while meets(hi):
        lo, hi = hi, hi * 2
    while hi / lo > 1.03:
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return lo


def test_disaggregation_gains_more_on_long_prompts_than_on_short_ones() -> None:
    """The seed article: "Throughput wins of 30-50% on long-prompt workloads are real" (and
    little or nothing on short prompts). Llama-3.1-8B on four H100s, co-located (4 replicas) vs
    disaggregated (the best of 1P3D, 2P2D, 3P1D), goodput in requests/s. What this simulator
    gives with the calibration of stacksim/calibration/params_v1.json (seed 1, 120 s runs with
    20 s of warm-up, first token from the decode side; README has the table):

    ====================  ============================  ============================
    workload              MLPerf SLO (450 / 40 ms)      tight TPOT (450 / 15 ms)
    ====================  ============================  ============================
    long, 8,192 in / 256  2.89 vs 4.29 (3P1D): +48%     2.89 vs 3.65 (3P1D): +26%
    short, 256 in / 256   155.3 vs 112.3 (2P2D): -28%   134.0 vs 106.7 (1P3D): -20%
    ====================  ============================  ============================

    Why (an 8,192-token prefill on one H100 takes ~290 ms with this calibration): the 450 ms
    TTFT target binds for the long prompts in every layout, not TPOT, so a prompt misses as soon
    as it waits about half a prefill. A co-located replica admits a prompt at once but shares its
    8,192-token step with any other prompt there, and least-outstanding balancing counts the
    running decodes, not the prefills, so two prompts meet on one replica already at low prefill
    load. A prefill-only pool balances on prefills alone, and 3P1D's one decode replica keeps TPOT
    under 40 ms; under 15 ms that replica is the limit and the gain shrinks. Short prompts: the
    one or two prefill replicas saturate while four co-located replicas serve more. With the
    first token from the prefill side (DistServe) long gains +61%, short (1P3D) -30%.

    Asserted, at the MLPerf SLO on 60 s runs of 3P1D and 1P3D (seeds 1-5 give +35% to +86% on
    long prompts and -27% to -31% on short ones): disaggregation gains at least the article's
    30% on long prompts, loses on short ones, and the long prompts' TTFT target, not TPOT, is
    what stops the co-located replicas.
    """
    gain, co_rate = {}, {}
    for name, inp, p, lo, hi in (("long", 8192, 3, 3.0, 8.0), ("short", 256, 1, 120.0, 260.0)):
        co_rate[name] = _goodput(inp, 256, None, SLO_MLPERF, lo, hi, 60.0)
        dz = _goodput(inp, 256, p, SLO_MLPERF, lo, hi, 60.0)
        gain[name] = dz / co_rate[name] - 1.0
    assert gain["long"] >= 0.30, gain
    assert gain["short"] < 0.0, gain
    assert gain["long"] > gain["short"] + 0.3, gain
    # The mechanism: past its goodput the co-located layout fails on TTFT while TPOT holds.
    _, res = run(_four_h100(8192, 256, co_rate["long"] * 1.5, None, SLO_MLPERF, 60.0))
    att = res.summary["slo"]["attainment"]
    assert att["ttft_ms"] < 0.9 <= att["tpot_ms"], att
