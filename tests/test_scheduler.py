"""The replica scheduler: exact timelines on tiny deterministic scenarios, and the compiled
scheduler against its plain-Python reference twin on random scenarios."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stacksim import load_scenario_text
from stacksim.engine.simulation import Simulation
from stacksim.kernels import naive
from stacksim.metrics.summary import build_result

TINY = """
name: tiny
seed: 0
horizon_s: {horizon}
drain: true
pools:
  gpu: {{accelerator: h100-sxm, count: 1}}
deployments:
  d:
    model: llama-3.1-8b
    pool: gpu
    engine: {{kind: vllm, version: "0.6", max_num_seqs: 8, max_num_batched_tokens: 512, block_size: 16, max_model_len: 4096}}
    load_balancer: {{kind: {lb}}}
workloads:
  w:
    target: d
    arrival: {{kind: deterministic, rate_per_s: 1.0}}
    input_tokens: {{kind: fixed, value: {inp}}}
    output_tokens: {{kind: fixed, value: {out}}}
"""


def run(text: str, reference: bool = False, seed: int | None = None) -> pd.DataFrame:
    rs = load_scenario_text(text, "tiny.yaml")
    sim = Simulation(rs, seed=seed, reference=reference).run()
    return build_result(sim).requests


def _p() -> np.ndarray:
    rs = load_scenario_text(TINY.format(horizon=1.5, lb="round_robin", inp=10, out=2), "tiny.yaml")
    return rs.deployments["d"].params


def step(p: np.ndarray, pf: list[tuple[int, int]], n_dec: int, ctx_sum: int, logits: int) -> float:
    """A step with prefill chunks [(done, chunk)] and n_dec decodes, via the naive twin."""
    n_pf = sum(c for _, c in pf)
    pairs = sum(c * (d + (c + 1) / 2.0) for d, c in pf)
    read = sum(d for d, _ in pf)
    return naive.step_time(p, float(n_pf), pairs, float(read), float(n_dec), float(ctx_sum), float(logits))


@pytest.mark.parametrize("lb", ["round_robin", "least_outstanding"])
def test_exact_timeline_single_request(lb: str) -> None:
    """One 600-token prompt, budget 512: prefill in two chunks (512 + 88), the first token at the
    end of the second, then three decode steps over contexts 600, 601, 602."""
    df = run(TINY.format(horizon=1.5, lb=lb, inp=600, out=4))
    assert len(df) == 1
    r = df.iloc[0]
    p = _p()
    t = 1.0  # deterministic arrivals at 1/rate
    assert r.arrival_s == t and r.admitted_s == t
    t = t + step(p, [(0, 512)], 0, 0, 0)
    t = t + step(p, [(512, 88)], 0, 0, 1)
    assert r.first_token_s == pytest.approx(t, rel=1e-12)
    dec = 0.0
    for ctx in (600, 601, 602):
        dec += step(p, [], 1, ctx, 1)
    assert r.finish_s == pytest.approx(t + dec, rel=1e-12)
    assert r.status == "completed"


def test_exact_timeline_arrival_joins_at_next_boundary() -> None:
    """A second request arriving during the first one's decode stretch is admitted at the first
    iteration boundary after its arrival, and its prefill is chunked to the budget left after
    the running decode (512 - 1 = 511 tokens)."""
    df = run(TINY.format(horizon=2.5, lb="round_robin", inp=600, out=300))
    r0, r1 = df.iloc[0], df.iloc[1]
    p = _p()
    t = 1.0 + step(p, [(0, 512)], 0, 0, 0)
    t = t + step(p, [(512, 88)], 0, 0, 1)
    assert r0.first_token_s == pytest.approx(t, rel=1e-12)
    ctx = 600
    while t < 2.0:  # r0 decodes alone until the boundary at or after r1's arrival
        t += step(p, [], 1, ctx, 1)
        ctx += 1
    assert r1.admitted_s == pytest.approx(t, rel=1e-12)
    t += step(p, [(0, 511)], 1, ctx, 1)  # r0's decode + r1's first chunk
    ctx += 1
    t += step(p, [(511, 89)], 1, ctx, 2)  # r0's decode + r1's last chunk: both sample a token
    assert r1.first_token_s == pytest.approx(t, rel=1e-12)


def test_async_scheduling_admits_an_arrival_one_step_later() -> None:
    """With asynchronous scheduling the engine planned step n+1 before step n ended, so a request
    arriving during step n joins step n+2: r1 waits one more decode iteration of r0 than in
    :func:`test_exact_timeline_arrival_joins_at_next_boundary`. An idle engine takes r0 at once."""
    text = TINY.format(horizon=2.5, lb="round_robin", inp=600, out=300).replace(
        "max_num_batched_tokens: 512,", "max_num_batched_tokens: 512, async_scheduling: true,")
    df = run(text)
    r0, r1 = df.iloc[0], df.iloc[1]
    p = _p()
    assert r0.admitted_s == 1.0  # idle: no lag
    t = 1.0 + step(p, [(0, 512)], 0, 0, 0)
    t = t + step(p, [(512, 88)], 0, 0, 1)
    assert r0.first_token_s == pytest.approx(t, rel=1e-12)
    ctx = 600
    while t < 2.0:  # the iteration during which r1 arrives
        t += step(p, [], 1, ctx, 1)
        ctx += 1
    t += step(p, [], 1, ctx, 1)  # the iteration planned before r1 arrived
    ctx += 1
    assert r1.admitted_s == pytest.approx(t, rel=1e-12)
    t += step(p, [(0, 511)], 1, ctx, 1)
    ctx += 1
    t += step(p, [(511, 89)], 1, ctx, 2)
    assert r1.first_token_s == pytest.approx(t, rel=1e-12)
    pd.testing.assert_frame_equal(df, run(text, reference=True))


def test_no_chunked_prefill_runs_prefill_alone() -> None:
    """Without chunked prefill a step is all prefill or all decode (vLLM V0)."""
    text = TINY.format(horizon=1.5, lb="round_robin", inp=300, out=3).replace(
        "max_num_batched_tokens: 512,", "max_num_batched_tokens: 4096, enable_chunked_prefill: false,"
    )
    r = run(text).iloc[0]
    p = _p()
    t = 1.0 + step(p, [(0, 300)], 0, 0, 1)
    assert r.first_token_s == pytest.approx(t, rel=1e-12)
    assert r.finish_s == pytest.approx(t + step(p, [], 1, 300, 1) + step(p, [], 1, 301, 1), rel=1e-12)


RANDOM = """
name: random
seed: {seed}
horizon_s: {horizon}
warmup_s: 1
drain: {drain}
pools:
  gpu: {{accelerator: {acc}, count: 8, price_usd_per_gpu_hour: 1.0}}
deployments:
  d:
    model: llama-3.1-8b
    pool: gpu
    replicas: {replicas}
    engine:
      kind: vllm
      version: "0.6"
      max_num_seqs: {seqs}
      max_num_batched_tokens: {tokens}
      enable_chunked_prefill: {chunked}
      async_scheduling: {asy}
      block_size: {block}
      gpu_memory_utilization: {util}
      max_model_len: 4096
    load_balancer: {{kind: {lb}}}
workloads:
  w:
    target: d
    arrival: {{kind: {arrival}, rate_per_s: {rate}{cv}}}
    input_tokens: {{kind: lognormal, median: {inp}, sigma: 1.0, max: 5000}}
    output_tokens: {{kind: exponential, mean: {out}}}
"""


@st.composite
def random_scenarios(draw: st.DrawFn) -> str:
    chunked = draw(st.booleans())
    seqs = draw(st.integers(1, 64))
    arrival = draw(st.sampled_from(["poisson", "gamma", "deterministic"]))
    acc, util = draw(st.sampled_from([("h100-sxm", 0.9), ("l4", 0.85), ("a100-sxm-40gb", 0.5)]))
    return RANDOM.format(
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
        block=draw(st.sampled_from([8, 16, 32])),
        lb=draw(st.sampled_from(["round_robin", "least_outstanding", "random", "shared_queue"])),
        arrival=arrival,
        rate=draw(st.sampled_from([2, 10, 40])),
        cv=", cv: 2.0" if arrival == "gamma" else "",
        inp=draw(st.sampled_from([50, 400, 1500])),
        out=draw(st.sampled_from([5, 60, 300])),
    )


@settings(max_examples=30, deadline=None, derandomize=True)
@given(text=random_scenarios())
def test_compiled_scheduler_equals_reference(text: str) -> None:
    """Same decisions, same arithmetic: identical per-request records, preemptions included."""
    fast = run(text)
    ref = run(text, reference=True)
    pd.testing.assert_frame_equal(fast, ref)


@pytest.mark.parametrize("asy", ["false", "true"])
def test_preemption_happens_and_twins_agree(asy: str) -> None:
    """A KV cache far too small for the offered load preempts (and recomputes) requests."""
    text = RANDOM.format(
        seed=3, horizon=30, drain="true", acc="l4", util=0.85, replicas=1, seqs=64, tokens=2048,
        chunked="true", asy=asy, block=16, lb="round_robin", arrival="poisson", rate=6, cv="", inp=1500, out=300,
    )  # 30 s of arrivals take ~6 minutes to drain: overloaded, yet inside the drain limit (20 horizons)
    fast = run(text)
    ref = run(text, reference=True)
    assert fast["preemptions"].sum() > 0
    pd.testing.assert_frame_equal(fast, ref)
    assert fast["status"].isin(["completed", "rejected"]).all(), "drain: everything ends"
    assert (fast["status"] == "rejected").sum() == ((fast.input_tokens + fast.output_tokens) > 4096).sum()


def test_models_section_catalog_and_inline_architecture() -> None:
    """A deployment may name a catalog id directly, a `models:` entry with `catalog:`, or an
    inline architecture; an inline copy of Llama-3.1-8B's config behaves like the catalog's."""
    base = TINY.format(horizon=3.5, lb="round_robin", inp=300, out=20)
    inline = base.replace("    model: llama-3.1-8b\n", "    model: mine\n").replace(
        "deployments:",
        """models:
  mine:
    architecture:
      params_total_b: 8.03
      num_layers: 32
      hidden_size: 4096
      num_attention_heads: 32
      num_kv_heads: 8
      intermediate_size: 14336
      vocab_size: 128256
      max_context: 131072
deployments:""",
    )
    aliased = base.replace("    model: llama-3.1-8b\n", "    model: m\n").replace(
        "deployments:", "models:\n  m: {catalog: llama-3.1-8b}\ndeployments:"
    )
    a, b, c = run(base), run(aliased), run(inline)
    pd.testing.assert_frame_equal(a, b)
    # The inline copy has no tied-embedding flag or source but the same shapes: within 1%.
    np.testing.assert_allclose(c["finish_s"], a["finish_s"], rtol=0.01)


@pytest.mark.parametrize("lb,version", [("round_robin", "0.6"), ("least_outstanding", "0.6"), ("shared_queue", "0.6"),
                                        ("shared_queue", "0.15"), ("least_outstanding", "0.15")])
def test_closed_loop_twins_agree(lb: str, version: str) -> None:
    """Closed-loop clients (requests created as others finish) give identical records on the
    compiled and the reference scheduler."""
    text = f"""
horizon_s: 20
drain: true
pools: {{g: {{accelerator: l4, count: 2, price_usd_per_gpu_hour: 1.0}}}}
deployments: {{d: {{model: llama-3.2-3b, pool: g, replicas: 2, engine: {{version: "{version}", max_num_seqs: 16, max_model_len: 4096}}, load_balancer: {{kind: {lb}}}}}}}
workloads:
  w:
    target: d
    arrival: {{kind: closed_loop, clients: 24, think_time_s: 0.2}}
    input_tokens: {{kind: lognormal, median: 800, sigma: 0.8, max: 3000}}
    output_tokens: {{kind: exponential, mean: 80}}
"""
    pd.testing.assert_frame_equal(run(text), run(text, reference=True))
