"""Expert parallelism with attention data parallelism (DEP): memory, step cost, checks, predict."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stacksim.catalog import get_accelerator, get_model
from stacksim.cli import app
from stacksim.errors import ScenarioError
from stacksim.kernels import cost as K
from stacksim.kernels import naive
from stacksim.scenario import load_scenario_text
from stacksim.serving.costmodel import (
    WEIGHT_BYTES,
    cost_params,
    kv_bytes_per_token_per_gpu,
    memory_plan,
)

DSV3, H200 = get_model("deepseek-v3"), get_accelerator("h200")
QWEN = get_model("qwen3-30b-a3b")


def test_dep_memory_holds_dense_weights_per_rank_and_a_share_of_the_experts() -> None:
    """DEP8: each GPU holds the dense layers whole and 1/8 of the experts; a token's (MLA) KV lives
    on one rank, so the replica holds about eight times the tokens TP8 does (MLA's latent is
    replicated on every TP rank)."""
    args = (DSV3, H200, 1, 1, "fp8", "auto", 16, 0.9, 8192, 256, 1.5)
    dep = memory_plan(*args, dp=8, ep=8)
    tp8 = memory_plan(DSV3, H200, 8, 1, "fp8", "auto", 16, 0.9, 8192, 256, 1.5)
    expert = DSV3.expert_params * WEIGHT_BYTES["fp8"]
    dense = DSV3.params_total_b * 1e9 * WEIGHT_BYTES["fp8"] - expert
    assert dep.weights_per_gpu_gb * 1024**3 == pytest.approx(dense + expert / 8, rel=1e-9)
    assert dep.gpus_per_replica == tp8.gpus_per_replica == 8
    assert dep.kv_bytes_per_token_per_gpu == pytest.approx(kv_bytes_per_token_per_gpu(DSV3, 1, 1, 2.0) / 8)
    room = dep.kv_per_gpu_gb * 1024**3
    assert dep.num_blocks == int(room // (dep.kv_bytes_per_token_per_gpu * 16))
    assert dep.kv_capacity_tokens > 4 * tp8.kv_capacity_tokens


@pytest.mark.parametrize(("tp", "dp"), [(1, 8), (2, 4), (4, 2)])
def test_dep_step_matches_the_naive_twin(tp: int, dp: int) -> None:
    p = cost_params(DSV3, H200, tp, 1, "fp8", "auto", "calibrated", dp=dp, ep=tp * dp)
    for args in ((0, 0, 0, 256, 256 * 2500, 256), (8192, 8192 * 1000, 0, 64, 64 * 900, 70), (0, 0, 0, 1, 700, 1)):
        assert K.step_time(p, *args) == pytest.approx(naive.step_time(p, *args), rel=1e-9)


def test_all_to_all_costs_two_transfers_per_moe_layer() -> None:
    """The only difference between DEP's step and the same step without its all-to-alls is
    layers x (2 latencies + tokens x bytes / link bandwidth)."""
    p = cost_params(QWEN, H200, 1, 1, "bf16", "auto", "calibrated", dp=4, ep=4)
    q = p.copy()
    q[K.NUM_A2A] = 0.0
    for tokens in (4.0, 256.0, 4096.0):
        extra = K.step_time(p, 0, 0, 0, tokens, tokens * 1000, tokens) - K.step_time(q, 0, 0, 0, tokens, tokens * 1000, tokens)
        want = QWEN.num_layers * (2 * p[K.COLLECTIVE_LATENCY_S] + tokens * p[K.A2A_BYTES_PER_TOKEN] / p[K.LINK_BW])
        assert extra == pytest.approx(want, rel=1e-9)
    # bytes: each GPU dispatches and combines 1/4 of the tokens to k = 8 experts, 3/4 of them off-GPU
    assert p[K.A2A_BYTES_PER_TOKEN] == pytest.approx(2 * 8 * QWEN.hidden_size * 2.0 * 0.75 / 4)


def test_dep_spreads_expert_flops_and_splits_dense_flops_by_rank() -> None:
    tp8 = cost_params(QWEN, H200, 4, 1, "bf16", "auto", "first_principles")
    dep = cost_params(QWEN, H200, 1, 1, "bf16", "auto", "first_principles", dp=4, ep=4)
    # Over a replica token, four GPUs do the same work either way.
    assert dep[K.LIN_FLOPS_PER_TOKEN] == pytest.approx(tp8[K.LIN_FLOPS_PER_TOKEN], rel=1e-9)
    assert dep[K.ATTN_FLOPS_PER_PAIR] == pytest.approx(tp8[K.ATTN_FLOPS_PER_PAIR], rel=1e-9)
    assert dep[K.DP] == 4 and tp8[K.DP] == 1 and tp8[K.NUM_A2A] == 0


def _scenario(model: str, tp: int, dp: int, ep: int, acc: str = "h200", extra: str = "") -> str:
    return f"""
name: dep
seed: 1
horizon_s: 10
pools: {{g: {{accelerator: {acc}, count: 8, price_usd_per_gpu_hour: 1.0}}}}
deployments:
  m: {{model: {model}, pool: g, tensor_parallel: {tp}, data_parallel: {dp}, expert_parallel: {ep}, precision: fp8,
       engine: {{max_model_len: 8192{extra}}}}}
workloads:
  w: {{target: m, arrival: {{kind: poisson, rate_per_s: 4}}, input_tokens: {{kind: fixed, value: 1000}},
       output_tokens: {{kind: fixed, value: 100}}}}
"""


@pytest.mark.parametrize(("model", "tp", "dp", "ep", "acc", "fragment"), [
    ("llama-3.1-70b", 1, 8, 8, "h200", "dense model"),
    ("qwen3-30b-a3b", 2, 2, 2, "h200", "must equal tensor_parallel x data_parallel (2 x 2 = 4)"),
    ("mixtral-8x7b", 1, 6, 6, "h200", "do not split evenly over 6 GPUs"),
    ("qwen3-30b-a3b", 1, 8, 8, "l40s", "scale-up domain"),
])
def test_bad_parallelism_is_named(model: str, tp: int, dp: int, ep: int, acc: str, fragment: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        load_scenario_text(_scenario(model, tp, dp, ep, acc), "dep.yaml")
    assert fragment in str(exc.value)


def test_engine_limits_are_per_rank_and_gpus_count_every_rank() -> None:
    rs = load_scenario_text(_scenario("qwen3-30b-a3b", 2, 4, 8), "dep.yaml")
    rd = rs.deployments["m"]
    assert rd.gpus == 8
    assert rd.spec.engine.max_num_seqs == 4 * 256 and rd.spec.engine.max_num_batched_tokens == 4 * 8192


def test_predict_dep() -> None:
    """'DEP4': 4 GPUs, attention data-parallel 4, expert-parallel 4."""
    res = CliRunner().invoke(app, ["predict", "--model", "qwen3-30b-a3b", "--gpu", "h100-sxm", "--dp", "4", "--ep", "4",
                                   "--precision", "fp8", "--isl", "1000", "--osl", "200", "--concurrency", "64",
                                   "--requests", "200", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["gpus"], out["dp"], out["ep"], out["completed"]) == (4, 4, 4, 200)
    bad = CliRunner().invoke(app, ["predict", "--model", "qwen3-30b-a3b", "--gpu", "h100-sxm", "--dp", "4", "--ep", "2",
                                   "--offline", "--requests", "10"])
    assert bad.exit_code == 2 and "--ep must be 1" in bad.output
