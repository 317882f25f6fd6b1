"""Speculative decoding (engine.speculative): the expected-tokens formula, the spec kernels
against their naive twins, the compiled scheduler against the reference with speculation on,
the physics (acceptance 0 never helps; high acceptance at batch 1 gives the formula's speed-up),
the proposer's memory, and bad settings rejected with the field named."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stacksim import load_scenario_text
from stacksim.catalog import get_accelerator, get_model
from stacksim.engine.simulation import Simulation
from stacksim.errors import StackSimError
from stacksim.kernels import cost as K
from stacksim.kernels import naive
from stacksim.metrics.summary import build_result
from stacksim.serving.costmodel import (
    cost_params,
    expected_tokens_per_step,
    memory_plan,
    mtp_layer,
    speculation,
)

from .test_scheduler import RANDOM

DRAFT = "{method: draft_model, num_speculative_tokens: %d, acceptance_rate: %s, draft_model: llama-3.2-3b}"
NGRAM = "{method: ngram, num_speculative_tokens: %d, acceptance_rate: %s}"
MTP = "{method: mtp, num_speculative_tokens: %d, acceptance_rate: %s}"

OFFLINE = """
horizon_s: 5
drain: true
pools: {{g: {{accelerator: {acc}, count: {tp}}}}}
deployments:
  d:
    model: {model}
    pool: g
    tensor_parallel: {tp}
    precision: {prec}
    engine: {{max_num_seqs: {seqs}, max_model_len: 8192{spec}}}
workloads:
  w:
    target: d
    arrival: {{kind: offline}}
    max_requests: {n}
    input_tokens: {{kind: fixed, value: {inp}}}
    output_tokens: {{kind: fixed, value: {out}}}
"""

LLAMA = {"model": "llama-3.1-8b", "acc": "h100-sxm", "tp": 1, "prec": "bf16"}
DEEPSEEK = {"model": "deepseek-v3", "acc": "h200", "tp": 8, "prec": "fp8"}


def offline(spec: str | None, batch: int, inp: int, out: int, shape: dict | None = None, reference: bool = False):  # type: ignore[no-untyped-def]
    """``batch`` requests at time zero on one replica that runs them all at once."""
    text = OFFLINE.format(**(shape or LLAMA), seqs=batch, n=batch, inp=inp, out=out,
                          spec="" if spec is None else f", speculative: {spec}")
    rs = load_scenario_text(text, "spec.yaml")
    return build_result(Simulation(rs, reference=reference).run())


def tpot(df: pd.DataFrame) -> pd.Series:
    return (df.finish_s - df.first_token_s) / (df.output_tokens - 1)


# --------------------------------------------------------------------------- the formula


@pytest.mark.parametrize("a", [0.0, 0.3, 0.6, 0.8, 0.95])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_expected_tokens_is_the_mean_of_the_accepted_prefix_plus_one(a: float, k: int) -> None:
    """E = (1 - a^(k+1)) / (1 - a) (Leviathan et al. 2023, eq. 1) is the mean of 1 + the number of
    leading drafts accepted, each with probability a: P(m accepted) = a^m (1 - a) for m < k, a^k."""
    enumerated = sum((m + 1) * a**m * (1 - a) for m in range(k)) + (k + 1) * a**k
    assert expected_tokens_per_step(a, k) == pytest.approx(enumerated, rel=1e-12)
    assert 1.0 <= expected_tokens_per_step(a, k) <= k + 1


def test_expected_tokens_known_values() -> None:
    assert expected_tokens_per_step(0.0, 4) == 1.0  # nothing accepted: the target's own token
    assert expected_tokens_per_step(0.5, 1) == 1.5
    assert expected_tokens_per_step(0.8, 4) == pytest.approx(3.3616)  # (1 - 0.8^5) / 0.2


@settings(max_examples=200, deadline=None, derandomize=True)
@given(a=st.floats(0.0, 0.99), k=st.integers(1, 8), s0=st.integers(0, 10**6), j=st.integers(1, 5000))
def test_spec_tokens_rounds_the_expectation_step_by_step(a: float, k: int, s0: int, j: int) -> None:
    """Any j consecutive steps emit j E tokens to within one; E = 1 emits exactly one per step."""
    e = expected_tokens_per_step(a, k)
    t = K.spec_tokens(s0, j, e)
    assert t == naive.spec_tokens(s0, j, e)
    assert abs(t - j * e) < 1.0 + 1e-9
    assert K.spec_tokens(s0, 1, e) >= 1
    assert K.spec_tokens(s0, j, 1.0) == j


# --------------------------------------------------------------------------- kernels vs twins

CASES = [
    ("llama-3.1-8b", "h100-sxm", 1, "bf16", DRAFT),
    ("llama-3.1-8b", "h100-sxm", 1, "bf16", NGRAM),
    ("llama-3.1-70b", "h100-sxm", 4, "fp8", MTP),
    ("deepseek-v3", "h200", 8, "fp8", MTP),
    ("mixtral-8x7b", "h100-sxm", 2, "bf16", MTP),
]


def spec_params(case: tuple, k: int, a: float) -> np.ndarray:  # type: ignore[type-arg]
    model, acc, tp, prec, kind = case
    m = get_model(model)
    method = "draft_model" if kind is DRAFT else ("ngram" if kind is NGRAM else "mtp")
    draft = get_model("llama-3.2-3b") if method == "draft_model" else None
    sp = speculation(method, k, a, m, draft, tp, 1, 8192)
    return cost_params(m, get_accelerator(acc), tp, 1, prec, "auto", "calibrated", spec=sp)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=st.sampled_from(CASES), k=st.integers(1, 7), a=st.sampled_from([0.0, 0.5, 0.8]),
       n_pf=st.integers(0, 4096), n_dec=st.integers(0, 256), ctx=st.integers(0, 4000), done=st.integers(0, 4000))
def test_spec_step_time_matches_naive(case: tuple, k: int, a: float, n_pf: int, n_dec: int, ctx: int, done: int) -> None:  # type: ignore[type-arg]
    """The compiled speculative step equals the query-by-query, pass-by-pass plain-Python sum,
    and is never cheaper than the same step without speculation."""
    p = spec_params(case, k, a)
    pairs = n_pf * (done + (n_pf + 1) / 2.0)
    args = (float(n_pf), pairs, float(done if n_pf else 0), float(n_dec), float(n_dec * ctx), float(n_dec + (1 if n_pf else 0)))
    fast = K.spec_step_time(p, *args)
    assert fast == pytest.approx(naive.spec_step_time(p, *args), rel=1e-9, abs=1e-15)
    assert fast >= K.step_time(p, *args) * (1 - 1e-12)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=st.sampled_from(CASES), k=st.integers(1, 6), a=st.sampled_from([0.0, 0.7, 0.9]), n=st.integers(1, 128),
       ctx=st.integers(1, 4000), steps=st.integers(1, 200), s0=st.integers(0, 1000))
def test_spec_stretch_matches_naive(case: tuple, k: int, a: float, n: int, ctx: int, steps: int, s0: int) -> None:  # type: ignore[type-arg]
    p = spec_params(case, k, a)
    e = float(p[K.SPEC_TOKENS])
    out = np.zeros(steps)
    last = K.spec_stretch_times(p, n, float(n * ctx), steps, out, s0, e)
    np.testing.assert_allclose(out, naive.spec_stretch_times(p, n, float(n * ctx), steps, s0, e), rtol=1e-12)
    assert last == out[-1]
    assert np.all(np.diff(out) > 0)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    ctx=st.lists(st.integers(1, 300), min_size=1, max_size=12),
    rem=st.lists(st.integers(1, 80), min_size=12, max_size=12),
    free=st.integers(0, 40),
    block=st.sampled_from([1, 4, 16]),
    cap=st.integers(1, 100),
    e=st.sampled_from([1.0, 1.5, 2.44, 3.3616, 5.0]),
    s0=st.integers(0, 50),
)
def test_spec_max_iterations_matches_naive(ctx: list[int], rem: list[int], free: int, block: int, cap: int, e: float, s0: int) -> None:
    n = len(ctx)
    c = np.array(ctx + [0] * (12 - n), dtype=np.int64)
    r = np.array(rem, dtype=np.int64)
    assert K.spec_max_iterations(c, r, n, free, block, cap, s0, e) == naive.spec_max_iterations(c, r, n, free, block, cap, s0, e)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    ctx=st.lists(st.integers(1, 300), min_size=1, max_size=12),
    rem=st.lists(st.integers(1, 80), min_size=12, max_size=12),
    block=st.sampled_from([1, 4, 16]),
    e=st.sampled_from([1.0, 1.5, 2.44, 3.3616, 5.0]),
    s0=st.integers(0, 50),
    j=st.integers(1, 40),
    gaps=st.lists(st.floats(1e-3, 0.1), min_size=40, max_size=40),
    tally=st.booleans(),
)
def test_commit_spec_matches_naive(ctx: list[int], rem: list[int], block: int, e: float, s0: int, j: int,
                                   gaps: list[float], tally: bool) -> None:
    """Advancing by whole speculative steps equals emitting token by token: same contexts, blocks,
    finished slots, and inter-token histogram (a step's g tokens are g gaps of its time / g)."""
    n = len(ctx)
    c = np.array(ctx + [0] * (12 - n), dtype=np.int64)
    r = np.array(rem, dtype=np.int64)
    # commit_spec's contract: nobody finishes before the last step (the planner guarantees it)
    j = max(1, min(j, K.spec_max_iterations(c, r, n, 10**9, block, 10**6, s0, e)))
    cum = np.cumsum(gaps)[:j]
    c2, r2 = c.copy(), r.copy()
    h1, h2 = np.zeros(K.HIST_BINS), np.zeros(K.HIST_BINS)
    done = np.zeros(12, dtype=np.int64)
    blocks, nd, added = K.commit_spec(c, r, n, j, block, done, h1, cum, tally, s0, e)
    nblocks, finished, nadded = naive.commit_spec(c2, r2, n, j, block, h2, cum, tally, s0, e)
    assert (blocks, added) == (nblocks, nadded)
    assert sorted(done[:nd].tolist()) == sorted(finished)
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(r, r2)
    np.testing.assert_array_equal(h1, h2)
    assert (r[:n] >= 0).all(), "no sequence emits past its last token"
    assert h1.sum() == (added if tally else 0)


# --------------------------------------------------------------------------- twins


@st.composite
def spec_scenarios(draw: st.DrawFn) -> str:
    chunked = draw(st.booleans())
    seqs = draw(st.integers(1, 64))
    method = draw(st.sampled_from(["draft_model", "ngram", "mtp"]))
    arrival = draw(st.sampled_from(["poisson", "gamma", "deterministic"]))
    if method == "draft_model":  # the 3B draft next to the 8B target needs an 80 GB card
        acc, util = draw(st.sampled_from([("h100-sxm", 0.9), ("h100-sxm", 0.35)]))
    else:
        acc, util = draw(st.sampled_from([("h100-sxm", 0.9), ("l4", 0.85), ("a100-sxm-40gb", 0.5)]))
    k = draw(st.integers(1, 6))
    a = draw(st.sampled_from(["0.0", "0.5", "0.8", "0.95"]))
    spec = {"draft_model": DRAFT, "ngram": NGRAM, "mtp": MTP}[method] % (k, a)
    text = RANDOM.format(
        seed=draw(st.integers(0, 10_000)),
        horizon=draw(st.sampled_from([10, 30])),
        drain=draw(st.booleans()),
        acc=acc,
        util=util,
        replicas=draw(st.integers(1, 4)),
        seqs=seqs,
        tokens=draw(st.integers(max(seqs, 16), 2048)) if chunked else 4096,
        chunked=str(chunked).lower(),
        asy=str(draw(st.booleans())).lower(),
        block=draw(st.sampled_from([1, 8, 16, 32])),
        lb=draw(st.sampled_from(["round_robin", "least_outstanding", "random", "shared_queue"])),
        arrival=arrival,
        rate=draw(st.sampled_from([2, 10, 40])),
        cv=", cv: 2.0" if arrival == "gamma" else "",
        inp=draw(st.sampled_from([50, 400, 1500])),
        out=draw(st.sampled_from([5, 60, 300])),
    )
    return text.replace("      max_model_len: 4096\n", f"      max_model_len: 4096\n      speculative: {spec}\n")


def run(text: str, reference: bool = False) -> pd.DataFrame:
    rs = load_scenario_text(text, "spec.yaml")
    return build_result(Simulation(rs, reference=reference).run()).requests


@settings(max_examples=30, deadline=None, derandomize=True)
@given(text=spec_scenarios())
def test_compiled_scheduler_equals_reference_with_speculation(text: str) -> None:
    """Same decisions and arithmetic with speculation on: identical per-request records."""
    pd.testing.assert_frame_equal(run(text), run(text, reference=True))


@pytest.mark.parametrize("spec,util", [(NGRAM % (4, "0.8"), 0.26), (DRAFT % (3, "0.6"), 0.34)])
def test_preemption_with_speculation_twins_agree(spec: str, util: float) -> None:
    """A KV cache far too small for the load preempts requests mid-speculation; both twins agree
    and every request still ends with exactly its output tokens."""
    text = RANDOM.format(
        seed=3, horizon=30, drain="true", acc="h100-sxm", util=util, replicas=1, seqs=64, tokens=2048,
        chunked="true", asy="true", block=16, lb="round_robin", arrival="poisson", rate=10, cv="", inp=1500, out=300,
    ).replace("      max_model_len: 4096\n", f"      max_model_len: 4096\n      speculative: {spec}\n")
    fast = run(text)
    assert fast["preemptions"].sum() > 0
    pd.testing.assert_frame_equal(fast, run(text, reference=True))
    assert fast["status"].isin(["completed", "rejected"]).all()


# --------------------------------------------------------------------------- physics


@pytest.mark.parametrize("batch", [1, 16, 128, 256])
@pytest.mark.parametrize("inp,out", [(128, 256), (2000, 200)])
@pytest.mark.parametrize("spec", [NGRAM % (4, "0.0"), DRAFT % (4, "0.0"), NGRAM % (1, "0.0")])
def test_acceptance_zero_is_never_faster(batch: int, inp: int, out: int, spec: str) -> None:
    """With acceptance 0 a step emits one token but costs at least as much (k+1 verified
    positions, the proposer's passes, less KV room, less prefill budget): TPOT and throughput
    are never better than without speculation."""
    base = offline(None, batch, inp, out)
    sp = offline(spec, batch, inp, out)
    b, s = base.requests, sp.requests
    assert (s.status == "completed").all() and (b.status == "completed").all()
    assert tpot(s).mean() >= tpot(b).mean() * (1 - 1e-12)
    assert tpot(s).max() >= tpot(b).max() * (1 - 1e-12)
    assert s.finish_s.max() >= b.finish_s.max() * (1 - 1e-12), "throughput (same tokens, later end)"
    assert sp.summary["latency_ms"]["itl"]["mean"] >= base.summary["latency_ms"]["itl"]["mean"] * (1 - 0.02)


@pytest.mark.parametrize("batch", [1, 64])
def test_acceptance_zero_is_never_faster_mtp(batch: int) -> None:
    """The same for DeepSeek-V3's MTP layer (MoE: verifying more tokens touches more experts)."""
    base = offline(None, batch, 512, 128, DEEPSEEK).requests
    sp = offline(MTP % (2, "0.0"), batch, 512, 128, DEEPSEEK).requests
    assert tpot(sp).mean() >= tpot(base).mean() * (1 - 1e-12)
    assert sp.finish_s.max() >= base.finish_s.max() * (1 - 1e-12)


def test_verification_is_nearly_free_when_memory_bound_and_costly_when_compute_bound() -> None:
    """Verifying k+1 = 5 positions reads the weights once: at batch 1 (memory-bound) the step
    costs what a plain decode does; at batch 256 (compute-bound) it costs much more."""
    p = spec_params(CASES[1], 4, 0.8)
    ratio = [K.spec_step_time(p, 0, 0, 0, n, 1000.0 * n, n) / K.step_time(p, 0, 0, 0, n, 1000.0 * n, n) for n in (1, 256)]
    assert ratio[0] < 1.01
    assert ratio[1] > 1.5


@pytest.mark.parametrize("spec", [NGRAM % (4, "0.8"), DRAFT % (4, "0.8")])
def test_high_acceptance_at_batch_one_matches_the_formula(spec: str) -> None:
    """Acceptance 0.8 with k = 4 at batch 1: TPOT = TPOT without speculation x (step time with /
    without) / E, E = 3.3616 (to the rounding of the last step and the context's growth)."""
    inp, out = 500, 500
    base = offline(None, 1, inp, out)
    sp = offline(spec, 1, inp, out)
    text = OFFLINE.format(**LLAMA, seqs=1, n=1, inp=inp, out=out, spec=f", speculative: {spec}")
    p = load_scenario_text(text, "x.yaml").deployments["d"].params
    e = expected_tokens_per_step(0.8, 4)
    ctx = inp + out / 2.0  # step time grows linearly with the context: its mean is at the middle
    step_ratio = K.spec_step_time(p, 0, 0, 0, 1, ctx, 1) / K.step_time(p, 0, 0, 0, 1, ctx, 1)
    measured = tpot(sp.requests).iloc[0] / tpot(base.requests).iloc[0]
    assert measured == pytest.approx(step_ratio / e, rel=0.02)
    # Every emitted token after the first is one inter-token gap; their mean is the TPOT.
    itl = sp.summary["latency_ms"]["itl"]
    assert itl["count"] == out - 1
    assert itl["mean"] == pytest.approx(tpot(sp.requests).iloc[0] * 1000, rel=0.01)


def test_high_acceptance_gives_a_large_speed_up_at_batch_one() -> None:
    """EAGLE reports 2.7-3.5x lower latency for LLaMA2-Chat 70B at batch 1 (Li et al., ICML 2024,
    MT-bench, greedy) with ~0.8 acceptance; a free proposer with a = 0.8, k = 4 gives E = 3.36x at
    a memory-bound batch of 1, and a 70B target with an 8B draft about 2x."""
    base = tpot(offline(None, 1, 500, 500).requests).iloc[0]
    ngram = tpot(offline(NGRAM % (4, "0.8"), 1, 500, 500).requests).iloc[0]
    assert 3.0 < base / ngram < 3.4
    shape = {"model": "llama-3.1-70b", "acc": "h100-sxm", "tp": 4, "prec": "bf16"}
    draft8b = "{method: draft_model, num_speculative_tokens: 4, acceptance_rate: 0.8, draft_model: llama-3.1-8b}"
    b70 = tpot(offline(None, 1, 500, 500, shape).requests).iloc[0]
    s70 = tpot(offline(draft8b, 1, 500, 500, shape).requests).iloc[0]
    assert 1.7 < b70 / s70 < 3.0


def test_outputs_are_exact_with_speculation() -> None:
    """A request ends when it has its output tokens, however many a step proposes (the last step
    is capped): the same records' token counts, one first token at prefill, and the KV cache
    empty at the end."""
    r = offline(NGRAM % (7, "0.9"), 8, 300, 37)
    df = r.requests
    assert (df.status == "completed").all()
    assert (df.output_tokens == 37).all()
    assert r.summary["latency_ms"]["itl"]["count"] == 8 * 36


# --------------------------------------------------------------------------- memory


def test_draft_model_takes_weights_and_kv_from_the_cache() -> None:
    """The draft's weights share the GPU and each block also holds the draft's KV."""
    m, a, d = get_model("llama-3.1-8b"), get_accelerator("h100-sxm"), get_model("llama-3.2-3b")
    args = (m, a, 1, 1, "bf16", "auto", 16, 0.9, 8192, 256, 1.5)
    plain = memory_plan(*args)
    sp = memory_plan(*args, spec=speculation("draft_model", 4, 0.8, m, d, 1, 1, 8192))
    draft_w = d.params_total_b * 1e9 * 2
    draft_kv = d.num_layers * 2 * d.num_kv_heads * d.head_dim * 2
    assert sp.proposer_weights_per_gpu_gb == pytest.approx(draft_w / 2**30)
    assert sp.proposer_kv_bytes_per_token_per_gpu == draft_kv
    room = plain.kv_per_gpu_gb * 2**30 - draft_w
    assert sp.num_blocks == int(room // ((plain.kv_bytes_per_token_per_gpu + draft_kv) * 16))
    assert sp.num_blocks < 0.5 * plain.num_blocks
    ngram = memory_plan(*args, spec=speculation("ngram", 4, 0.8, m, None, 1, 1, 8192))
    assert ngram == plain, "n-gram lookup needs no memory"


def test_mtp_layer_is_one_layer_of_the_model() -> None:
    """DeepSeek-V3's MTP module: one decoder layer (README_WEIGHTS: 11.5B unique parameters,
    1.5B activated including the shared 0.9B head), its KV one more layer's latent."""
    m = get_model("deepseek-v3")
    layer = mtp_layer(m)
    sp = speculation("mtp", 1, 0.85, m, None, 8, 1, 8192)
    assert sp.proposer_params_b == pytest.approx(11.5, rel=0.06)
    head_b = m.vocab_size * m.hidden_size / 1e9
    assert layer.active_nonembedding_params / 1e9 + head_b == pytest.approx(1.5, rel=0.05)
    args = (m, get_accelerator("h200"), 8, 1, "fp8", "auto", 16, 0.9, 8192, 256, 1.5)
    plain, with_mtp = memory_plan(*args), memory_plan(*args, spec=sp)
    assert with_mtp.proposer_kv_bytes_per_token_per_gpu == pytest.approx(plain.kv_bytes_per_token_per_gpu / m.num_layers)
    assert with_mtp.num_blocks < plain.num_blocks


def test_summary_capacity_shrinks_with_a_draft_model() -> None:
    plain = offline(None, 1, 10, 2).summary["deployments"]["d"]["kv_capacity_tokens_per_replica"]
    draft = offline(DRAFT % (4, "0.8"), 1, 10, 2).summary["deployments"]["d"]["kv_capacity_tokens_per_replica"]
    assert draft < 0.5 * plain


# --------------------------------------------------------------------------- bad settings

BAD = """
horizon_s: 5
pools: {{g: {{accelerator: h100-sxm, count: 2}}}}
deployments:
  d:
    model: llama-3.1-8b
    pool: g
    pipeline_parallel: {pp}
    engine:
      max_model_len: 8192
      speculative: {spec}
workloads:
  w: {{target: d, arrival: {{kind: poisson, rate_per_s: 1}}, input_tokens: {{kind: fixed, value: 9}}, output_tokens: {{kind: fixed, value: 9}}}}
"""


@pytest.mark.parametrize(
    "spec,pp,field,fragment",
    [
        ("{method: draft_model, num_speculative_tokens: 4, acceptance_rate: 0.8}", 1, "engine.speculative.draft_model",
         "method draft_model needs draft_model"),
        ("{method: ngram, num_speculative_tokens: 0, acceptance_rate: 0.8}", 1, "engine.speculative.num_speculative_tokens",
         "greater than or equal to 1"),
        ("{method: ngram, num_speculative_tokens: 3, acceptance_rate: 1.0}", 1, "engine.speculative.acceptance_rate", "less than 1"),
        ("{method: ngram, num_speculative_tokens: 3, acceptance_rate: -0.1}", 1, "engine.speculative.acceptance_rate",
         "greater than or equal to 0"),
        ("{method: ngram, num_speculative_tokens: 3, acceptance_rate: 0.5, draft_model: llama-3.2-3b}", 1,
         "engine.speculative.draft_model", "applies to method: draft_model only"),
        ("{method: draft_model, num_speculative_tokens: 3, acceptance_rate: 0.5, draft_model: llama-3.2-1b}", 1,
         "engine.speculative.draft_model", "Did you mean: llama-3.2-3b"),
        ("{method: draft_model, num_speculative_tokens: 3, acceptance_rate: 0.5, draft_model: qwen3-8b}", 1,
         "engine.speculative.draft_model", "share the target's tokenizer"),
        ("{method: eagle, num_speculative_tokens: 3, acceptance_rate: 0.5}", 1, "engine.speculative.method",
         "'draft_model', 'mtp' or 'ngram'"),
        ("{method: mtp, num_speculative_tokens: 3, acceptance_rate: 0.5}", 2, "pipeline_parallel",
         "needs pipeline_parallel: 1"),
    ],
)
def test_bad_speculative_settings_name_the_field(spec: str, pp: int, field: str, fragment: str) -> None:
    with pytest.raises(StackSimError) as exc:
        load_scenario_text(BAD.format(spec=spec, pp=pp), "bad.yaml")
    msg = str(exc.value)
    assert f"field 'deployments.d.{field}'" in msg, msg
    assert fragment in msg, msg
    assert "bad.yaml, line" in msg


def test_acceptance_formula_rejects_what_the_schema_rejects() -> None:
    for a, k in [(1.0, 4), (-0.1, 4), (0.5, 0)]:
        with pytest.raises(ValueError):
            expected_tokens_per_step(a, k)
    assert math.isfinite(expected_tokens_per_step(0.999, 64))
