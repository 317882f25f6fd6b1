"""Consumer and edge accelerators, and the edge scenario built on them.

The new catalog rows carry dense figures with their sources (GeForce cards at their FP32-accumulate
tensor rates); `scenarios/edge-2026.yaml` runs, accounts for every request, serves everything at
the edge until the 8B box fails and sends that box's traffic to the cloud while it is down; its
models fit a 24 GB card in the precisions the card supports.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stacksim.api import run_scenario
from stacksim.catalog import get_accelerator, get_model
from stacksim.finops.pricing import HOURS_PER_YEAR
from stacksim.metrics.summary import Result
from stacksim.scenario import ResolvedScenario, load_scenario
from stacksim.serving.costmodel import GIB, compute_precision, memory_plan

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "edge-2026.yaml"
HORIZON_S = 900.0  # covers the first 300 s of the 8B box's failure (600-1200 s)
FAULT_START_S, FAULT_END_S = 600.0, 1200.0
CLOUD = "openai/gpt-4o-mini@global"

# (id, memory GB, TB/s, dense BF16, dense FP8, dense INT8, dense FP4, TDP W): the values
# ACCELERATORS_SOURCES.md derives, written out here rather than read back from the CSV.
NEW_ROWS = [
    ("rtx-4090", 24, 1.008, 165.2, 330.3, 660.6, None, 450),
    ("rtx-5090", 32, 1.792, 209.5, 419.0, 838.0, 1676.0, 575),
    ("jetson-agx-orin-64gb", 64, 0.2048, 42.5, None, 85.0, None, 60),
]


@pytest.mark.parametrize("row", NEW_ROWS, ids=lambda r: r[0])
def test_new_accelerators_load_with_their_sources(row: tuple) -> None:
    """Each new row loads with its dense figures, a source and, where it has a price, a dated basis."""
    acc_id, mem, bw, bf16, fp8, int8, fp4, tdp = row
    acc = get_accelerator(acc_id)
    assert (acc.memory_gb, acc.memory_bandwidth_tbps, acc.tdp_w) == (mem, bw, tdp)
    assert (acc.peak_bf16_tflops, acc.peak_fp8_tflops, acc.peak_int8_tops, acc.peak_fp4_tflops) == (
        bf16,
        fp8,
        int8,
        fp4,
    )
    assert "NVIDIA" in acc.source and len(acc.source) > 80
    assert acc.scaleup_domain_gpus == 1  # no NVLink on any of them
    if acc.default_price_usd_per_gpu_hour is not None:
        assert re.search(r"\d{4}-\d{2}-\d{2}", acc.price_basis), acc.price_basis


def test_geforce_cards_use_the_fp32_accumulate_rate() -> None:
    """NVIDIA's GeForce tables quote sparse, FP16-accumulate figures: 1321 'AI TOPS' for the 4090,
    3352 for the 5090. The catalog holds the dense FP32-accumulate rates, a quarter of the sparse
    FP16-accumulate FP8 figure for BF16 and half of it for FP8."""
    for acc_id, sparse_fp8_fp16acc in (("rtx-4090", 1321.2), ("rtx-5090", 1676.0)):
        acc = get_accelerator(acc_id)
        assert acc.peak_fp8_tflops == pytest.approx(sparse_fp8_fp16acc / 4, rel=0.001)
        assert acc.peak_bf16_tflops == pytest.approx(sparse_fp8_fp16acc / 8, rel=0.001)
        assert acc.peak_int8_tops == pytest.approx(
            sparse_fp8_fp16acc / 2, rel=0.001
        )  # INT8 is full rate


@pytest.mark.parametrize(
    ("acc_id", "precision", "computes_in"),
    [
        ("rtx-4090", "fp8", "fp8"),  # Ada has FP8 tensor cores
        ("rtx-4090", "nvfp4", "fp8"),  # but no FP4: an FP4 checkpoint runs at the FP8 rate
        ("rtx-4090", "int4_awq", "bf16"),  # weight-only formats dequantise to BF16
        ("rtx-5090", "nvfp4", "fp4"),  # Blackwell GeForce has FP4
        ("jetson-agx-orin-64gb", "fp8", "bf16"),  # Ampere: FP8 weights, BF16 math
    ],
)
def test_precisions_the_cards_enable(acc_id: str, precision: str, computes_in: str) -> None:
    assert compute_precision(get_accelerator(acc_id), precision) == computes_in


@pytest.fixture(scope="module")
def resolved() -> ResolvedScenario:
    return load_scenario(SCENARIO, overrides={"horizon_s": HORIZON_S})


@pytest.fixture(scope="module")
def result(resolved: ResolvedScenario) -> Result:
    return run_scenario(resolved)


def test_every_request_is_accounted_for(result: Result) -> None:
    req = result.summary["requests"]
    assert req["arrived"] > 0
    assert req["arrived"] == req["completed"] + req["failed"] + req["rejected"] + req["in_flight"]
    calls = result.summary["gateway"]["calls"]
    assert calls["arrived"] == req["arrived"]
    assert (
        calls["arrived"]
        == calls["completed"] + calls["failed"] + calls["rejected"] + calls["in_flight"]
    )
    assert len(result.requests) == req["arrived"]
    assert req["failed"] == 0 and req["rejected"] == 0  # the fallback catches every call


def test_the_cloud_carries_the_assistant_while_the_8b_box_is_down(result: Result) -> None:
    """Before the failure every call is served at the edge; during it the assistant's calls fall
    back to gpt-4o-mini, and only those."""
    gw = result.summary["gateway"]
    assert gw["fallbacks"] > 0 and gw["calls_fallen_back"] > 0
    assert gw["targets"][CLOUD]["ok"] > 0

    (fault,) = result.summary["faults"]
    assert fault["kind"] == "replica_failure" and fault["target"] == "assistant-8b[0]"
    assert fault["start_s"] == FAULT_START_S
    assert fault["requests_during"] > 0
    assert fault["failed_during"] == 0
    assert 0 < fault["retried_during"] <= fault["requests_during"]

    df = result.requests
    cloud = df[df["target"] == CLOUD]
    assert len(cloud) > 0
    assert (cloud["workload"] == "associate-assistant").all()
    assert (cloud["fallbacks"] >= 1).all()
    # Calls killed on the replica at 600 s arrived shortly before it; nothing earlier went out.
    assert cloud["arrival_s"].min() > FAULT_START_S - 60.0
    before = df[df["finish_s"] < FAULT_START_S]
    assert len(before) > 0 and before["target"].str.startswith("hosted_vllm/").all()
    during = df[
        (df["workload"] == "associate-assistant")
        & (df["arrival_s"] >= FAULT_START_S)
        & (df["status"] == "completed")
    ]
    assert len(during) > 0 and (during["target"] == CLOUD).all()
    # The 3B box keeps serving its own traffic throughout.
    quick = df[df["workload"] == "shelf-lookup"]
    assert (quick["target"].dropna() == "hosted_vllm/quick-3b").all()


def test_edge_memory_plans_fit_a_24_gb_card(resolved: ResolvedScenario, result: Result) -> None:
    """3B in BF16 and 8B in FP8 each fit one RTX 4090 with room for a KV cache that holds the
    longest admitted request; the summary reports the same plan."""
    expected_weights_gib = {
        "quick-3b": get_model("llama-3.2-3b").params_total_b * 2,
        "assistant-8b": get_model("qwen3-8b").params_total_b * 1,
    }
    for name, rd in resolved.deployments.items():
        acc = rd.pool.accelerator
        assert acc.id == "rtx-4090"
        p = rd.plan
        usable = acc.memory_gb * rd.spec.engine.gpu_memory_utilization
        assert p.usable_per_gpu_gb == pytest.approx(usable)
        assert p.weights_per_gpu_gb == pytest.approx(expected_weights_gib[name] * 1e9 / GIB)
        assert (
            p.weights_per_gpu_gb
            + p.activations_per_gpu_gb
            + p.overhead_per_gpu_gb
            + p.kv_per_gpu_gb
            == pytest.approx(usable)
        )
        assert p.kv_per_gpu_gb > 4.0
        assert p.kv_capacity_tokens > rd.max_model_len == 16384
        mem = result.summary["deployments"][name]["memory_per_gpu_gb"]
        assert mem["weights"] == pytest.approx(p.weights_per_gpu_gb, abs=1e-3)
        assert mem["kv_cache"] == pytest.approx(p.kv_per_gpu_gb, abs=1e-3)
    # The 8B model would fit in BF16 too, with a KV cache four times smaller than in FP8.
    rd = resolved.deployments["assistant-8b"]
    eng = rd.spec.engine
    bf16 = memory_plan(
        rd.model,
        rd.pool.accelerator,
        1,
        1,
        "bf16",
        eng.kv_cache_dtype,
        eng.block_size,
        eng.gpu_memory_utilization,
        eng.max_num_batched_tokens,
        eng.max_num_seqs,
        eng.runtime_overhead_gb,
    )
    assert rd.max_model_len < bf16.kv_capacity_tokens < rd.plan.kv_capacity_tokens / 2


def test_owned_boxes_are_priced_from_capex_and_power(resolved: ResolvedScenario) -> None:
    """Capex over three years plus the 4090's 450 W at the stated electricity price, PUE 1."""
    pool = resolved.pools["store-4090"]
    owned = pool.spec.owned
    assert pool.spec.purchase == "owned" and owned is not None
    expected = (
        owned.capex_usd_per_gpu / (owned.amortization_years * HOURS_PER_YEAR)
        + 0.450 * owned.power_usd_per_kwh
    )
    assert pool.price_usd_per_gpu_hour == pytest.approx(expected)
    assert pool.price_basis.startswith("owned:")
