"""KV-cache tiers (engine.kv_offload): prefix blocks evicted from HBM kept in host memory and on
SSD. An exact timeline where a re-hit from CPU (and from SSD) costs bytes / bandwidth + latency
more than an HBM hit; a replayed Mooncake trace on a small KV cache, where offload never lowers
the hit rate and lowers the mean TTFT; the compiled scheduler against its twin; bad settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stacksim import load_scenario_text
from stacksim.catalog import get_accelerator
from stacksim.cli import app
from stacksim.engine.simulation import Simulation
from stacksim.kernels import naive
from stacksim.metrics.summary import Result, build_result
from stacksim.serving.kv_offload import CPU_LATENCY_MS, SSD_LATENCY_MS, SSD_READ_GB_PER_S

from .test_prefix_cache import MOONCAKE, needs_mooncake

# A tiny model: 2 layers x (K, V) x 1 KV head x head_dim 64 x 2 bytes = 512 bytes of KV per token.
TINY_KV_BYTES_PER_TOKEN = 2 * 2 * 1 * 64 * 2
SCENARIO = """
horizon_s: {horizon}
drain: true
pools: {{g: {{accelerator: {acc}, count: 1, price_usd_per_gpu_hour: 1.0}}}}
models:
  tiny:
    architecture: {{params_total_b: 0.1, num_layers: 2, hidden_size: 512, num_attention_heads: 8, num_kv_heads: 1,
                   head_dim: 64, intermediate_size: 1024, vocab_size: 32000, max_context: 131072}}
deployments:
  d:
    model: tiny
    pool: g
    engine: {{version: "0.6", max_num_seqs: {seqs}, max_num_batched_tokens: {budget}, enable_chunked_prefill: {chunked},
              runtime_overhead_gb: {overhead}, max_model_len: {mml}{offload}}}
workloads:
  w:
    target: d
    arrival: {{kind: trace, format: mooncake, path: {path}, time_scale: {scale}}}
    input_tokens: {{kind: trace}}
    output_tokens: {out}
    max_requests: {n}
"""
BASE: dict[str, object] = {
    "horizon": 100000, "acc": "h100-sxm", "seqs": 4, "budget": 8192, "chunked": "true", "overhead": 0, "mml": 16384,
    "offload": "", "scale": 1.0, "out": "{kind: fixed, value: 1}", "n": 1000,
}


def scenario(**kw: object) -> str:
    spec = dict(BASE)
    spec.update(kw)
    return SCENARIO.format(**spec)


def run(reference: bool = False, **kw: object) -> Result:
    return build_result(Simulation(load_scenario_text(scenario(**kw), "offload.yaml"), reference=reference).run())


def step(p: np.ndarray, done: int, c: int) -> float:
    """A prefill-only step of one chunk of ``c`` tokens after ``done``, ending the prompt (naive cost twin)."""
    return naive.step_time(p, float(c), c * (done + (c + 1) / 2.0), float(done), 0.0, 0.0, 1.0)


# ------------------------------------------------------------------ an exact timeline


def three_requests(tmp_path: Path, big: bool) -> dict[str, object]:
    """A trace: prompt A (1024 tokens, hash blocks 1 and 2) at 0 s; at 10 s either a prompt that
    fills the KV cache to the admission watermark (``big``: A is evicted from HBM, both its
    512-token blocks, since fewer than 512 tokens stay free) or a short unrelated one; A again at
    100 s. The KV cache is sized to about 20k tokens and max_model_len to what it admits."""
    kv0 = load_scenario_text(scenario(path=MOONCAKE), "probe.yaml").deployments["d"].plan.kv_per_gpu_gb
    overhead = kv0 - 20_000 * TINY_KV_BYTES_PER_TOKEN / 1024**3  # leaves about 20k tokens of KV
    plan = load_scenario_text(scenario(path=MOONCAKE, overhead=overhead), "probe.yaml").deployments["d"].plan
    total = plan.num_blocks
    mml = (total - int(0.01 * total)) * 16  # core.ADMIT_WATERMARK: what one request may take
    assert int(0.01 * total) * 16 < 512  # A's blocks cannot stay in what is left free
    n1 = mml - 1 if big else 1024
    rows = [
        {"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]},
        {"timestamp": 10_000, "input_length": n1, "output_length": 1, "hash_ids": list(range(1000, 1000 + -(-n1 // 512)))},
        {"timestamp": 100_000, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]},
    ]
    path = tmp_path / ("big.jsonl" if big else "small.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"path": path, "overhead": overhead, "mml": mml, "horizon": 1000}


def ttft(res: Result, i: int) -> float:
    r = res.requests.iloc[i]
    return float(r.first_token_s - r.arrival_s)


CPU_GBPS, CPU_MS = 0.001, 3.0  # a slow link makes the load visible: ~0.5 s for 1008 tokens
SSD_GBPS, SSD_MS = 0.002, 5.0


@pytest.mark.parametrize("reference", [False, True])
def test_a_cpu_hit_costs_bytes_over_bandwidth_plus_latency(reference: bool, tmp_path: Path) -> None:
    """A's second request hits 1008 tokens (1023 capped, rounded to 16-token blocks). From HBM its
    prefill is one 16-token step; evicted to host memory, the same step also loads 1008 tokens x
    512 bytes over the host link: exactly 1008 x 512 / (0.001 GB/s) + 3 ms more. Without offload
    the evicted prompt is computed again."""
    small = three_requests(tmp_path, big=False)
    big = three_requests(tmp_path, big=True)
    cpu = f", kv_offload: {{cpu_gib: 1.0, cpu_to_gpu_gb_per_s: {CPU_GBPS}, cpu_latency_ms: {CPU_MS}}}"
    hbm = run(reference, **small)
    p = load_scenario_text(scenario(**small), "x.yaml").deployments["d"].params
    assert hbm.requests.cached_tokens.tolist() == [0, 0, 1008]
    assert ttft(hbm, 2) == pytest.approx(step(p, 1008, 16), rel=1e-12)

    gone = run(reference, **big)  # no offload: evicted means recomputed
    assert gone.requests.cached_tokens.tolist() == [0, 0, 0]
    assert gone.summary["deployments"]["d"]["prefix_cache"]["evicted_tokens"] >= 1024
    assert "offload" not in gone.summary["deployments"]["d"]["prefix_cache"]

    off = run(reference, offload=cpu, **big)
    assert off.requests.cached_tokens.tolist() == [0, 0, 1008]
    load = 1008 * TINY_KV_BYTES_PER_TOKEN / (CPU_GBPS * 1e9) + CPU_MS / 1000.0
    assert ttft(off, 2) - ttft(hbm, 2) == pytest.approx(load, rel=1e-9)
    assert ttft(gone, 2) == pytest.approx(step(p, 0, 1024), rel=1e-12)
    # The first two requests never see the lower tier: same times as without offload.
    np.testing.assert_array_equal(off.requests.first_token_s.to_numpy()[:2], gone.requests.first_token_s.to_numpy()[:2])
    o = off.summary["deployments"]["d"]["prefix_cache"]["offload"]
    assert o["cached_tokens_by_tier"] == {"gpu": 0, "cpu": 1008, "ssd": 0}
    assert o["hit_share_by_tier"]["cpu"] == 1.0
    assert o["loads"] == 1 and o["loaded_tokens"] == {"cpu": 1008, "ssd": 0}
    assert o["load_stall_s"] == pytest.approx(load, rel=1e-9)
    assert o["offloaded_tokens"]["to_cpu"] >= 1024 and o["dropped_tokens"] == 0


@pytest.mark.parametrize("reference", [False, True])
def test_an_ssd_hit_adds_the_read_then_the_host_copy(reference: bool, tmp_path: Path) -> None:
    """The CPU tier holds one 512-token block: A's tail (evicted first) is pushed down to the SSD
    by its head. The hit's 512 head tokens come from host memory, its 496 tail tokens from the
    SSD: read 496 x 512 bytes at 0.002 GB/s + 5 ms, then copy all 1008 tokens over the host link."""
    small = three_requests(tmp_path, big=False)
    big = three_requests(tmp_path, big=True)
    cpu_gib = 512 * TINY_KV_BYTES_PER_TOKEN / 1024**3
    tiers = (f", kv_offload: {{cpu_gib: {cpu_gib!r}, cpu_to_gpu_gb_per_s: {CPU_GBPS}, cpu_latency_ms: {CPU_MS}, "
             f"ssd_gib: 1.0, ssd_read_gb_per_s: {SSD_GBPS}, ssd_latency_ms: {SSD_MS}}}")
    hbm = run(reference, **small)
    res = run(reference, offload=tiers, **big)
    assert res.requests.cached_tokens.tolist() == [0, 0, 1008]
    load = (496 * TINY_KV_BYTES_PER_TOKEN / (SSD_GBPS * 1e9) + SSD_MS / 1000.0
            + 1008 * TINY_KV_BYTES_PER_TOKEN / (CPU_GBPS * 1e9) + CPU_MS / 1000.0)
    assert ttft(res, 2) - ttft(hbm, 2) == pytest.approx(load, rel=1e-9)
    o = res.summary["deployments"]["d"]["prefix_cache"]["offload"]
    assert o["cpu_capacity_tokens"] == 512
    assert o["cached_tokens_by_tier"] == {"gpu": 0, "cpu": 512, "ssd": 496}
    assert o["loaded_tokens"] == {"cpu": 512, "ssd": 496}
    assert o["offloaded_tokens"]["to_ssd"] >= 512


def test_defaults_come_from_the_pcie_generation_and_the_ssd_datasheet(tmp_path: Path) -> None:
    """Omitted rates: PCIe 5.0 x16 (H100) = 32 GT/s x 16 lanes x 128/130 / 8 = 63.0 GB/s, x 256/276
    TLP efficiency; PCIe 4.0 (A100) half that; the SSD figures of the Kioxia CD7 datasheet."""
    pcie5 = 32 * 16 * (128 / 130) / 8 * (256 / 276)
    for acc, gbps in (("h100-sxm", pcie5), ("a100-sxm-80gb", pcie5 / 2)):
        assert get_accelerator(acc).pcie_gen in (4, 5)
        rs = load_scenario_text(scenario(acc=acc, path=MOONCAKE, offload=", kv_offload: {cpu_gib: 64, ssd_gib: 512}"),
                                "x.yaml")
        ko = rs.deployments["d"].kv_offload
        assert ko is not None
        assert ko.cpu_to_gpu_gb_per_s == pytest.approx(gbps, rel=1e-12)
        assert ko.cpu_latency_ms == CPU_LATENCY_MS == 0.007
        assert (ko.ssd_read_gb_per_s, ko.ssd_latency_ms) == (SSD_READ_GB_PER_S, SSD_LATENCY_MS) == (6.45, 0.075)
        assert ko.cpu_capacity_tokens == 64 * 1024**3 // TINY_KV_BYTES_PER_TOKEN
        assert "PCIe" in ko.cpu_basis and "Kioxia CD7" in ko.ssd_basis


# ------------------------------------------------------------------ a replayed Mooncake trace

# Llama-3.1-8B on one H100 with 30% of its memory for vLLM: a KV cache of 56k tokens, against
# the first 1000 Mooncake conversations (prompts of 7k tokens on average, 21.6% of their tokens
# reusable with an unbounded cache): HBM alone keeps little of what later turns reuse.
PRESSED = """
horizon_s: 100000
drain: true
pools: {{g: {{accelerator: h100-sxm, count: 1, price_usd_per_gpu_hour: 1.0}}}}
deployments:
  d:
    model: llama-3.1-8b
    pool: g
    engine: {{version: "0.6", max_num_seqs: 32, gpu_memory_utilization: 0.3, max_model_len: 32768{offload}}}
workloads:
  w:
    target: d
    arrival: {{kind: trace, format: mooncake, path: {path}, time_scale: {scale}}}
    input_tokens: {{kind: trace}}
    output_tokens: {{kind: fixed, value: 64}}
    max_requests: 1000
"""


def pressed(offload: str = "", scale: float = 1.0) -> Result:
    text = PRESSED.format(offload=offload and f", kv_offload: {offload}", path=MOONCAKE, scale=scale)
    return build_result(Simulation(load_scenario_text(text, "pressed.yaml")).run())


def mean_ttft(res: Result) -> float:
    df = res.requests
    return float((df.first_token_s - df.arrival_s).mean())


@needs_mooncake
@pytest.mark.parametrize("scale", [1.0, 4.0], ids=["bursty", "one-at-a-time"])
def test_offload_never_lowers_the_hit_rate_and_lowers_mean_ttft(scale: float) -> None:
    """Every tier layout keeps at least the hit rate and at most the mean TTFT of HBM alone; those
    with room for the trace's reuse distances (hundreds of thousands of tokens: a few GiB of host
    memory catch nothing here) reuse over three times as much and cut the mean TTFT (a reloaded
    prefix is not prefilled again; a PCIe 5.0 load of 7k tokens of Llama-3.1-8B KV takes 16 ms,
    its prefill about a second). At the trace's pace (bursts that queue) and slowed 4x."""
    base = pressed(scale=scale)
    pc0 = base.summary["deployments"]["d"]["prefix_cache"]
    assert pc0["evicted_blocks"] > 0 and pc0["hit_rate"] < 0.1
    for tiers in ("{cpu_gib: 4}", "{cpu_gib: 8, ssd_gib: 32}", "{cpu_gib: 256}", "{cpu_gib: 2, ssd_gib: 512}"):
        res = pressed(tiers, scale)
        pc = res.summary["deployments"]["d"]["prefix_cache"]
        assert pc["prompt_tokens"] == pc0["prompt_tokens"]
        assert pc["hit_rate"] >= pc0["hit_rate"], tiers
        assert mean_ttft(res) <= mean_ttft(base), tiers
        o = pc["offload"]
        by = o["cached_tokens_by_tier"]
        assert by["gpu"] + by["cpu"] + by["ssd"] == pc["cached_tokens"] and min(by.values()) >= 0
        assert o["loaded_tokens"]["cpu"] >= by["cpu"] and o["loaded_tokens"]["ssd"] >= by["ssd"]
        if tiers in ("{cpu_gib: 256}", "{cpu_gib: 2, ssd_gib: 512}"):  # room for most evicted prefixes
            assert pc["hit_rate"] > 3 * pc0["hit_rate"]
            assert mean_ttft(res) < 0.97 * mean_ttft(base)
            assert o["load_stall_s"] > 0
        if "ssd" in tiers:
            assert by["ssd"] > 0 and o["offloaded_tokens"]["to_ssd"] > 0


# A KV cache of about 150k tokens (the tiny model, 71.55 GiB of runtime overhead) under 300
# Mooncake conversations at 100x speed, long answers: hits, evictions and preemptions at once.
SMALL_KV = {"overhead": 71.55, "seqs": 128, "scale": 0.01, "mml": 32768, "n": 300,
            "out": "{kind: uniform, low: 1000, high: 8000}", "path": MOONCAKE}


# ------------------------------------------------------------------ the twins


@needs_mooncake
@pytest.mark.parametrize(
    "tiers",
    ["{cpu_gib: 64}", "{cpu_gib: 0.02, ssd_gib: 0.05}", "{cpu_gib: 0.02, ssd_gib: 64, cpu_to_gpu_gb_per_s: 0.5}"],
    ids=["cpu", "cpu+ssd-small", "cpu+ssd-slow-link"],
)
@pytest.mark.parametrize("chunked", ["true", "false"])
def test_twins_agree_with_offload(tiers: str, chunked: str) -> None:
    """Hits from every tier, cascades and drops, preemptions: the compiled scheduler and its
    reference twin give identical records and the same offload summary."""
    kw: dict[str, object] = dict(SMALL_KV, offload=f", kv_offload: {tiers}", chunked=chunked)
    if chunked == "false":
        kw.update(budget=33000, overhead=71.4)
    fast, ref = run(**kw), run(reference=True, **kw)
    pd.testing.assert_frame_equal(fast.requests, ref.requests)
    a, b = (r.summary["deployments"]["d"]["prefix_cache"] for r in (fast, ref))
    assert a == b
    assert a["offload"]["loads"] > 0


def test_without_offload_nothing_changes(tmp_path: Path) -> None:
    """Omitting kv_offload is the plain prefix cache: a table with no offload section, and a
    run whose lower tiers never fill gives the same records as one without them."""
    big = three_requests(tmp_path, big=False)
    plain = run(**big)
    roomy = run(offload=", kv_offload: {cpu_gib: 1.0}", **big)  # nothing is ever evicted here
    pd.testing.assert_frame_equal(plain.requests, roomy.requests)
    assert roomy.summary["deployments"]["d"]["prefix_cache"]["offload"]["offloaded_tokens"]["to_cpu"] == 0


# ------------------------------------------------------------------ bad settings

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.parametrize(
    ("acc", "engine", "field", "says"),
    [
        ("h100-sxm", "kv_offload: {cpu_gib: -4}", "cpu_gib", "greater than 0"),
        ("h100-sxm", "kv_offload: {cpu_gib: 0}", "cpu_gib", "greater than 0"),
        ("h100-sxm", "kv_offload: {cpu_gib: 8, ssd_gib: -1}", "ssd_gib", "greater than 0"),
        ("h100-sxm", "kv_offload: {cpu_gib: 8, cpu_to_gpu_gb_per_s: 0}", "cpu_to_gpu_gb_per_s", "greater than 0"),
        ("h100-sxm", "kv_offload: {cpu_gib: 8, ssd_latency_ms: -1}", "ssd_latency_ms", "greater than or equal to 0"),
        ("h100-sxm", "kv_offload: {cpu_gib: 8, dram_gib: 4}", "dram_gib", "unknown key"),
        ("h100-sxm", "kv_offload: {}", "cpu_gib", "required field"),
        ("h100-sxm", "prefix_caching: false, kv_offload: {cpu_gib: 8}", "engine", "needs prefix_caching: true"),
        ("h100-sxm", "kv_offload: {cpu_gib: 0.000001}", "cpu_gib", "less than one KV block"),
        ("tpu-v5e", "kv_offload: {cpu_gib: 8}", "cpu_to_gpu_gb_per_s", "no PCIe generation"),
    ],
    ids=["negative-cpu", "zero-cpu", "negative-ssd", "zero-link", "negative-latency", "unknown-key", "no-cpu",
         "no-prefix-caching", "under-one-block", "no-pcie-gen"],
)
def test_bad_settings_exit_2_naming_the_field(acc: str, engine: str, field: str, says: str, tmp_path: Path) -> None:
    text = f"""\
horizon_s: 60
pools: {{g: {{accelerator: {acc}, count: 1, price_usd_per_gpu_hour: 1.0}}}}
deployments:
  d:
    model: llama-3.2-3b
    pool: g
    engine: {{max_model_len: 4096, {engine}}}
workloads:
  w:
    target: d
    arrival: {{kind: poisson, rate_per_s: 1}}
    input_tokens: {{kind: fixed, value: 100}}
    output_tokens: {{kind: fixed, value: 10}}
"""
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    err = ANSI.sub("", result.stderr)
    assert "Traceback" not in err
    assert "bad.yaml" in err and field in err and says in err, err
    assert err.count("bad.yaml") == 1, err  # one message
