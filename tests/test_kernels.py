"""Every Numba kernel against its plain-Python twin (stacksim.kernels.naive), and the cost model
against physics and published measurements."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stacksim.catalog import get_accelerator, get_model
from stacksim.kernels import cost as K
from stacksim.kernels import naive
from stacksim.serving.costmodel import cost_params, memory_plan

from .conftest import SHARED

CASES = [
    ("llama-3.1-8b", "h100-sxm", 1, 1, "bf16"),
    ("llama-2-70b", "a100-sxm-80gb", 4, 1, "bf16"),
    ("llama-3.1-70b", "h200", 2, 2, "fp8"),
    ("mixtral-8x7b", "h100-sxm", 2, 1, "bf16"),
    ("deepseek-v3", "b200", 8, 1, "fp8"),
    ("qwen3-30b-a3b", "l40s", 1, 1, "int4_awq"),
    ("gpt-oss-120b", "mi300x", 1, 1, "mxfp4"),
]


def params(case: tuple[str, str, int, int, str]) -> np.ndarray:
    model, acc, tp, pp, prec = case
    return cost_params(get_model(model), get_accelerator(acc), tp, pp, prec, "auto")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    case=st.sampled_from(CASES),
    n_pf=st.integers(0, 8192),
    n_dec=st.integers(0, 512),
    ctx=st.integers(0, 4000),
    done=st.integers(0, 4000),
)
def test_step_time_matches_naive(case, n_pf: int, n_dec: int, ctx: int, done: int) -> None:
    """The compiled step time equals the layer-by-layer plain-Python sum."""
    p = params(case)
    pairs = n_pf * (done + (n_pf + 1) / 2.0)
    args = (float(n_pf), pairs, float(done if n_pf else 0), float(n_dec), float(n_dec * ctx), float(n_dec + (1 if n_pf else 0)))
    fast = K.step_time(p, *args)
    slow = naive.step_time(p, *args)
    assert fast == pytest.approx(slow, rel=1e-9, abs=1e-15)
    if n_pf + n_dec:
        assert fast > 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=st.sampled_from(CASES), n=st.integers(1, 256), ctx=st.integers(1, 5000), k=st.integers(1, 300))
def test_decode_stretch_matches_naive(case, n: int, ctx: int, k: int) -> None:
    p = params(case)
    out = np.zeros(k)
    last = K.decode_stretch_times(p, n, float(n * ctx), k, out)
    ref = naive.decode_stretch_times(p, n, float(n * ctx), k)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert last == out[-1]
    assert np.all(np.diff(out) > 0), "every iteration takes time"


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    ctx=st.lists(st.integers(1, 300), min_size=1, max_size=12),
    rem=st.lists(st.integers(1, 80), min_size=12, max_size=12),
    free=st.integers(0, 40),
    block=st.sampled_from([1, 4, 16]),
    cap=st.integers(1, 100),
)
def test_max_iterations_matches_naive(ctx: list[int], rem: list[int], free: int, block: int, cap: int) -> None:
    n = len(ctx)
    c = np.array(ctx + [0] * (12 - n), dtype=np.int64)
    r = np.array(rem, dtype=np.int64)
    assert K.max_iterations(c, r, n, free, block, cap) == naive.max_iterations(c, r, n, free, block, cap)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(x=st.floats(1e-9, 1e4))
def test_hist_index_matches_naive(x: float) -> None:
    assert K.hist_index(x) == naive.hist_index(x)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    times=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=40),
    values=st.lists(st.floats(0.0, 50.0), min_size=40, max_size=40),
    width=st.sampled_from([0.5, 1.0, 7.0]),
)
def test_level_set_matches_naive(times: list[float], values: list[float], width: float) -> None:
    """Time-weighted bins: the compiled integrator equals a direct per-bin overlap computation."""
    times = sorted(times)
    acc = np.zeros((int(100 / width) + 2, 4))
    state = np.zeros(K.LEVEL_STATE)
    state[9] = width
    for t, v in zip(times, values):
        K.level_set(acc, state, t, v, 2 * v, 0.0, 1.0)
    expected = naive.level_bins(times, values, width, acc.shape[0])
    np.testing.assert_allclose(acc[:, 0], expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(acc[:, 1], 2 * expected, rtol=1e-9, atol=1e-9)
    assert state[5] == pytest.approx(max(values[: len(times)]))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(gaps=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=50), dt=st.floats(0.0, 60.0))
def test_boundary_after_is_first_boundary_at_or_after(gaps: list[float], dt: float) -> None:
    cum = np.cumsum(gaps)
    k = len(cum)
    j = K.boundary_after(cum, k, dt)
    expected = int(np.searchsorted(cum, dt, side="left")) + 1
    assert j == min(expected, k)


def test_moe_reads_only_touched_experts() -> None:
    """A decode step of Mixtral at batch 1 reads about 2 of 8 experts; at batch 256, all of them."""
    p = params(("mixtral-8x7b", "h100-sxm", 1, 1, "bf16"))
    t1 = K.step_time(p, 0.0, 0.0, 0.0, 1.0, 100.0, 1.0)
    t256 = K.step_time(p, 0.0, 0.0, 0.0, 256.0, 25600.0, 256.0)
    dense = get_model("mixtral-8x7b").params_total_b * 2e9 / (3.35e12 * 0.84)
    assert t1 < 0.5 * dense
    assert t256 > 0.9 * dense


def test_memory_plan_llama8b_h100() -> None:
    """8.03B params in bf16 = 14.96 GiB; the rest of 0.9 x 80 GiB minus activations is KV."""
    plan = memory_plan(get_model("llama-3.1-8b"), get_accelerator("h100-sxm"), 1, 1, "bf16", "auto", 16, 0.9, 8192, 256, 1.5)
    assert plan.weights_per_gpu_gb == pytest.approx(8.03e9 * 2 / 2**30, rel=0.01)
    # 32 layers x 8 KV heads x 128 x 2 (K,V) x 2 bytes = 128 KiB per token
    assert plan.kv_bytes_per_token_per_gpu == 32 * 8 * 128 * 2 * 2
    assert plan.kv_capacity_tokens == plan.num_blocks * 16
    assert 400_000 < plan.kv_capacity_tokens < 480_000


def test_tensor_parallel_shards_weights_and_kv() -> None:
    m, a = get_model("llama-3.1-70b"), get_accelerator("h100-sxm")
    p4 = memory_plan(m, a, 4, 1, "bf16", "auto", 16, 0.9, 8192, 256, 1.5)
    p8 = memory_plan(m, a, 8, 1, "bf16", "auto", 16, 0.9, 8192, 256, 1.5)
    assert p8.weights_per_gpu_gb == pytest.approx(p4.weights_per_gpu_gb / 2)
    assert p8.kv_bytes_per_token_per_gpu == p4.kv_bytes_per_token_per_gpu / 2


SPLITWISE = SHARED / "calibration" / "splitwise_perf_model.csv"


@pytest.mark.skipif(not SPLITWISE.exists(), reason="shared/calibration not present")
@pytest.mark.parametrize("hw,acc", [("a100-80gb", "a100-sxm-80gb"), ("h100-80gb", "h100-sxm")])
def test_same_order_of_magnitude_as_splitwise(hw: str, acc: str) -> None:
    """Before calibration (issue #3) the roofline must already land within 5x of the measured
    Splitwise prefill and decode latencies of Llama-2-70B (DGX-A100/H100, 2023) everywhere.

    Rows whose prefill is faster than the accelerators' peak FLOPS allow are excluded as
    physically impossible (TP2 at batch 64 x 512 tokens: 794 ms on A100s that need >= 7 s)."""
    df = pd.read_csv(SPLITWISE)
    df = df[(df.model == "llama2-70b") & (df.hardware == hw)]
    g = df.groupby(["tensor_parallel", "prompt_size", "batch_size"])[["prompt_time", "token_time"]].median().reset_index()
    ratios = []
    peak = get_accelerator(acc).peak_bf16_tflops * 1e12
    for row in g.itertuples():
        p = cost_params(get_model("llama-2-70b"), get_accelerator(acc), int(row.tensor_parallel), 1, "bf16", "auto")
        n = row.batch_size * row.prompt_size
        if row.prompt_time / 1000 < 2 * 69e9 * n / (row.tensor_parallel * peak):
            continue
        pf = K.step_time(p, float(n), row.batch_size * row.prompt_size * (row.prompt_size + 1) / 2.0, 0.0, 0.0, 0.0, float(row.batch_size))
        dec = K.step_time(p, 0.0, 0.0, 0.0, float(row.batch_size), float(row.batch_size * (row.prompt_size + 64)), float(row.batch_size))
        ratios += [pf * 1000 / row.prompt_time, dec * 1000 / row.token_time]
    r = np.array(ratios)
    assert len(r) > 20
    assert np.all((r > 0.2) & (r < 5.0)), f"ratio range {r.min():.2f}..{r.max():.2f}"
    assert 0.3 < math.exp(np.mean(np.log(r))) < 2.0


def test_gpt_oss_active_count_excludes_only_the_input_embedding() -> None:
    """OpenAI counts gpt-oss's active parameters without the input embedding table (model card):
    only the output head's 0.58B is left to subtract, not both tables."""
    m = get_model("gpt-oss-120b")
    assert m.active_nonembedding_params == pytest.approx(5.1e9 - 201088 * 2880, rel=1e-9)
    dense = get_model("llama-3.1-8b")
    assert dense.active_nonembedding_params == pytest.approx(dense.params_active_b * 1e9 - dense.embedding_params)


def test_jit_cache_is_keyed_by_every_compiled_module() -> None:
    """Numba checks only a cached function's own file, not the kernels it inlines; the cache
    folder is keyed by a hash of every module with @njit functions, so the list must be whole."""
    from pathlib import Path

    from stacksim import kernels

    package = Path(kernels.__file__).resolve().parents[1]
    with_jit = {str(p.relative_to(package)) for p in package.rglob("*.py")
                if any(line.startswith("@njit") for line in p.read_text().splitlines())}
    assert with_jit == set(kernels.JIT_MODULES)
