"""Engine profiles (serving/engines.py): SGLang's and TensorRT-LLM's start-up rules, trtllm-bench's
tuning heuristic, pipeline micro-batches in the step kernel, and the steady-state throughput the
calibration fits against whole simulations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stacksim.calibration import fit as F
from stacksim.calibration.data import Point
from stacksim.catalog import get_accelerator, get_model
from stacksim.cli import app
from stacksim.kernels import cost as K
from stacksim.kernels import naive
from stacksim.predict import PredictArgs, predict
from stacksim.scenario import load_scenario_text
from stacksim.serving import engines
from stacksim.serving.costmodel import calibrated_parameters, cost_params, memory_plan


def _scenario(engine: str, acc: str = "h100-sxm", tp: int = 1) -> str:
    engine = engine[:-1] + ", max_model_len: 4096}"  # fits even a 24 GB card
    return f"""
name: e
seed: 1
horizon_s: 20
pools: {{gpu: {{accelerator: {acc}, count: {tp}, price_usd_per_gpu_hour: 1.0}}}}
deployments:
  m: {{model: llama-3.1-8b, pool: gpu, tensor_parallel: {tp}, engine: {engine}}}
workloads:
  w: {{target: m, arrival: {{kind: poisson, rate_per_s: 2}}, input_tokens: {{kind: fixed, value: 500}},
       output_tokens: {{kind: fixed, value: 50}}}}
"""


@pytest.mark.parametrize(("acc", "tp", "chunk", "frac"), [("h100-sxm", 1, 8192, 0.88), ("l40s", 2, 8192, 0.87),
                                                          ("rtx-4090", 1, 2048, 0.88), ("b200", 4, 16384, 0.85),
                                                          ("h200", 8, 8192, 0.81)])
def test_sglang_fills_its_start_up_rules(acc: str, tp: int, chunk: int, frac: float) -> None:
    rs = load_scenario_text(_scenario("{kind: sglang}", acc, tp), None)
    eng = rs.deployments["m"].spec.engine
    assert (eng.kind, eng.max_num_batched_tokens, eng.gpu_memory_utilization) == ("sglang", chunk, frac)
    assert eng.max_num_seqs == 2048


def test_sglang_keeps_what_the_user_set() -> None:
    rs = load_scenario_text(_scenario("{kind: sglang, max_num_batched_tokens: 4096, gpu_memory_utilization: 0.7}"), None)
    eng = rs.deployments["m"].spec.engine
    assert (eng.max_num_batched_tokens, eng.gpu_memory_utilization) == (4096, 0.7)


def test_trtllm_kv_share_is_of_free_memory() -> None:
    """TensorRT-LLM's free_gpu_memory_fraction takes a share of what weights, activations and
    overhead leave; vLLM's gpu_memory_utilization a share of the whole GPU."""
    m, a = get_model("llama-3.1-8b"), get_accelerator("h100-sxm")
    args = (m, a, 1, 1, "bf16", "auto", 32, 0.9, 8192, 2048, 1.5)
    trt = memory_plan(*args, of_free_memory=True)
    vllm = memory_plan(*args)
    free = trt.memory_per_gpu_gb - trt.weights_per_gpu_gb - trt.activations_per_gpu_gb - trt.overhead_per_gpu_gb
    assert trt.kv_per_gpu_gb == pytest.approx(0.9 * free, rel=1e-9)
    assert vllm.kv_per_gpu_gb == pytest.approx(0.9 * vllm.memory_per_gpu_gb - (vllm.memory_per_gpu_gb - free), rel=1e-9)
    rs = load_scenario_text(_scenario("{kind: trtllm}"), None)
    assert rs.deployments["m"].plan.kv_per_gpu_gb == pytest.approx(trt.kv_per_gpu_gb, rel=1e-9)
    assert rs.deployments["m"].spec.engine.block_size == 32


@pytest.mark.parametrize(("kv", "isl", "osl", "pp", "want"), [
    (10.0, 128, 128, 1, (64, 2048)),  # at least 64 sequences and 2048 tokens
    (300.0, 1000, 1000, 1, (384, 2048)),  # 300 -> multiples of 128; 600 tokens -> the 2048 floor
    (3000.0, 128, 2048, 1, (3072, 3328)),  # 3000 -> multiples of 256; 3187.5 tokens -> multiples of 256
    (5000.0, 2048, 128, 2, (2048, 32768)),  # 4096 at most, per stage; tokens capped at 32768
])
def test_trtllm_bench_heuristic(kv: float, isl: int, osl: int, pp: int, want: tuple[int, int]) -> None:
    """Hand-worked cases of trtllm-bench's finetune_setting (bench/build/tuning.py)."""
    assert engines.trtllm_bench_settings(kv, isl, osl, pp) == want


@pytest.mark.parametrize("pp", [2, 4])
def test_pipeline_micro_batches_match_the_naive_twin(pp: int) -> None:
    p = cost_params(get_model("llama-3.1-70b"), get_accelerator("h100-sxm"), 2, pp, "fp8", "fp8", "calibrated")
    for args in ((0, 0, 0, 64, 64 * 1500, 64), (4096, 4096 * 2048, 0, 32, 32 * 900, 33), (0, 0, 0, 1, 700, 1),
                 (512, 512 * 256, 100, 3, 3000, 2)):
        assert K.step_time(p, *args) == pytest.approx(naive.step_time(p, *args), rel=1e-9)


def test_pipeline_parallel_raises_max_load_throughput() -> None:
    """Micro-batches in flight: pp=2 on twice the GPUs serves a full batch about twice as fast as
    pp=1 serves half of it (the RTX PRO 6000 table measures 1.9x; calibration/REPORT.md)."""
    def tput(pp: int) -> float:
        pt = Point("t", "trtllm", "x", "llama-3.3-70b", "rtx-pro-6000", 1, "fp4", "offline_tok_s", 0, 1000, 1000, 0.0, 1.0,
                   "test", pp=pp, kv="fp8")
        pr = F.prepare([pt])[0]
        return F.predict(F.DEFAULT, pr)
    assert 1.6 < tput(2) / tput(1) < 3.5


def test_steady_state_matches_the_simulator() -> None:
    """The calibration's steady-state formula against a whole `predict --offline` run."""
    pt = Point("t", "trtllm", "x", "llama-3.1-8b", "h100-sxm", 1, "fp8", "offline_tok_s", 0, 512, 512, 0.0, 1.0, "test",
               kv="fp8")
    pr = F.prepare([pt])[0]
    theta = np.array([calibrated_parameters().get(n, d) for n, d in zip(F.NAMES, F.DEFAULT)])
    steady = F.predict(theta, pr)
    sim = predict(PredictArgs(model="llama-3.1-8b", gpu="h100-sxm", precision="fp8", kv_precision="fp8", engine="trtllm",
                              engine_version="0.17", isl=512, osl=512, offline=True,
                              requests=int(3 * pr.batch)))["output_tokens_per_s"]
    assert sim == pytest.approx(steady, rel=0.12)
    assert sim < steady * 1.02  # ramp-up and drain only cost


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_predict_runs_every_engine_profile(engine: str) -> None:
    res = CliRunner().invoke(app, ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--engine", engine,
                                   "--isl", "256", "--osl", "64", "--qps", "4", "--requests", "40", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["engine"] == engine and out["completed"] == 40


def test_engine_overheads_differ_by_profile() -> None:
    """Same kernels for vLLM and SGLang of one era, their own fitted per-step overheads; TensorRT-LLM
    0.14-0.17 its own; the current SGLang and TensorRT-LLM bands borrow vLLM 0.10+'s profile."""
    m, a = get_model("llama-3.1-8b"), get_accelerator("h100-sxm")
    old = {e: cost_params(m, a, 1, 1, "bf16", "auto", "calibrated", e, engine_version=v)
           for e, v in (("vllm", "0.6"), ("sglang", "0.3"), ("trtllm", "0.17"))}
    params = calibrated_parameters()
    assert old["sglang"][K.EFF_MEM] == old["vllm"][K.EFF_MEM]
    assert old["sglang"][K.STEP_OVERHEAD_S] == pytest.approx(params["overhead_sglang"])
    assert old["trtllm"][K.STEP_OVERHEAD_S] == pytest.approx(params["overhead_trtllm"])
    new = {e: cost_params(m, a, 1, 1, "bf16", "auto", "calibrated", e) for e in ("vllm", "sglang", "trtllm")}
    assert new["vllm"][K.STEP_OVERHEAD_S] == pytest.approx(params["overhead_vllm-v1"])
    assert np.array_equal(new["sglang"], new["vllm"])
    # TensorRT-LLM 1.x: vLLM 0.10+'s memory side and step overhead, its own 0.14-0.17 matmul efficiency.
    differs = np.flatnonzero(new["trtllm"] != new["vllm"])
    assert differs.tolist() == [K.EFF_MAX]
    assert new["trtllm"][K.EFF_MAX] == old["trtllm"][K.EFF_MAX]


def test_unknown_engine_is_a_clear_error() -> None:
    res = CliRunner().invoke(app, ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--engine", "tgi",
                                   "--offline", "--requests", "10"])
    assert res.exit_code == 2
    assert "vllm, sglang, trtllm" in res.output


def test_trtllm_does_not_fit_names_its_own_memory_rule() -> None:
    """The error speaks of TensorRT-LLM's share of free memory, not of vLLM's share of the GPU."""
    res = CliRunner().invoke(app, ["predict", "--model", "llama-3.1-405b", "--gpu", "l4", "--engine", "trtllm",
                                   "--offline", "--requests", "10"])
    assert res.exit_code == 2
    assert "free_gpu_memory_fraction" in res.output and "does not fit" in res.output
