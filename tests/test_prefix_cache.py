"""Prefix caching (vLLM V1 automatic prefix caching): the LRU block cache on its own, the hit
rate of a replayed Mooncake trace against a direct computation from its hash ids, exact prefill
times with and without a hit, eviction under a small KV cache, and the compiled scheduler against
its reference twin with blocks attached."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stacksim import load_scenario_text
from stacksim.engine.simulation import Simulation
from stacksim.kernels import naive
from stacksim.metrics import RequestTable
from stacksim.metrics.summary import Result, build_result, write_result
from stacksim.serving.prefix_cache import ACQUIRE, INSERT, RELEASE, PrefixCache, hit_tokens

from .conftest import SHARED
from .test_scheduler import random_scenarios

MOONCAKE = SHARED / "workloads" / "mooncake_fast25" / "conversation_trace.jsonl"
needs_mooncake = pytest.mark.skipif(not MOONCAKE.exists(), reason=f"{MOONCAKE} not found (shared data)")

# ------------------------------------------------------------------ the cache on its own


def table(*prompts: tuple[list[int], int], bt: int = 16) -> RequestTable:
    """A request table with one request per (hash ids, prompt tokens)."""
    reqs = RequestTable()
    n = len(prompts)
    reqs.add_many(np.zeros(n), np.array([p for _, p in prompts]), np.ones(n, dtype=np.int64), 0)
    for rid, (ids, _) in enumerate(prompts):
        reqs.set_blocks(rid, np.array(ids), bt)
    return reqs


def test_hit_stops_at_the_first_missing_block() -> None:
    reqs = table(([1, 2, 3], 48), ([1, 2, 9, 3], 64), ([9, 1, 2], 48), ([1, 2, 3, 4], 64))
    c = PrefixCache(reqs, block_size=16)
    c.apply([(INSERT, 0, 10**6), (RELEASE, 0, 10**6)], 10**6)
    assert c.longest_prefix([1, 2, 9, 3]) == 2  # 3 is cached but follows a miss
    assert c.longest_prefix([9, 1, 2]) == 0
    assert c.lookup(1, 64) == 32
    assert c.lookup(2, 48) == 0
    assert c.lookup(3, 64) == 48  # three of four blocks
    assert c.lookup(0, 48) == 32  # the whole prompt is cached, but its last token is always computed


def test_hit_tokens_caps_and_rounds() -> None:
    # capped at n - 1, then down to whole engine blocks (vLLM reuses full blocks only)
    assert hit_tokens(14, 512, 6758, 6758, 16) == 6752
    assert hit_tokens(14, 512, 6758, 6758, 1) == 6757
    # the blocks cover the prompt only: after a preemption (n = prompt + output) the hit stops there
    assert hit_tokens(14, 512, 6758, 6758 + 40, 1) == 6758
    assert hit_tokens(3, 512, 6758, 6758, 16) == 1536
    assert hit_tokens(0, 512, 6758, 6758, 16) == 0
    assert hit_tokens(1, 10, 100, 100, 16) == 0  # less than one engine block


def test_eviction_is_lru_tail_first_and_respects_capacity() -> None:
    reqs = table(([1, 2, 3], 48), ([4, 5], 32), ([1, 2], 32))
    c = PrefixCache(reqs, block_size=16)
    big = 10**6
    c.apply([(INSERT, 0, big), (RELEASE, 0, big), (INSERT, 1, big), (RELEASE, 1, big)], big)
    assert c.evictable_tokens == 80 and len(c) == 5
    # Request 2 reuses 1 and 2 (its lookup caps at 31 tokens: one block) and releases them:
    # block 1 becomes the most recently used.
    assert c.lookup(2, 32) == 16  # recorded in the table, where ACQUIRE reads it
    c.apply([(ACQUIRE, 2, big)], big)
    assert c.evictable_tokens == 64 and c.refs == {1: 1}
    c.evict_to(64)  # pinned blocks are never evicted
    assert len(c) == 5
    c.apply([(RELEASE, 2, big)], big)
    # LRU order now: 3 2 (request 0, tail first) 5 4 (request 1, tail first) 1 (request 2)
    order = []
    for cap in (64, 48, 32, 16, 0):
        c.evict_to(cap)
        assert c.evictable_tokens <= cap
        order.append(sorted(c.tokens))
    assert order == [[1, 2, 4, 5], [1, 4, 5], [1, 4], [1], []]
    assert c.evicted_blocks == 5 and c.evicted_tokens == 80


def test_evictions_happen_where_blocks_were_taken() -> None:
    """An event carries the fewest free blocks since the previous one: a step that took the
    free blocks and then finished a request evicts before that request's blocks enter the LRU."""
    reqs = table(([1, 2], 32), ([3, 4], 32))
    c = PrefixCache(reqs, block_size=16)
    c.apply([(INSERT, 0, 100), (RELEASE, 0, 100)], 100)
    c.apply([(INSERT, 1, 100), (RELEASE, 1, 0)], 100)  # free blocks ran out before request 1 finished
    assert sorted(c.tokens) == [3, 4] and c.evicted_blocks == 2


def test_set_blocks_validates() -> None:
    reqs = table(([1], 16))
    with pytest.raises(ValueError, match="not in the table"):
        reqs.set_blocks(5, np.array([1]), 16)
    with pytest.raises(ValueError, match="block_tokens"):
        reqs.set_blocks(0, np.array([1]), 0)


# ------------------------------------------------------------------ exact timelines

TWO = """
horizon_s: 2.5
drain: true
pools: {{gpu: {{accelerator: h100-sxm, count: 1}}}}
deployments:
  d:
    model: llama-3.1-8b
    pool: gpu
    engine: {{version: "0.6", max_num_seqs: 8, max_num_batched_tokens: 512, block_size: 16, max_model_len: 4096, prefix_caching: {pc}}}
workloads:
  w:
    target: d
    arrival: {{kind: deterministic, rate_per_s: 1.0}}
    input_tokens: {{kind: fixed, value: 2000}}
    output_tokens: {{kind: fixed, value: 2}}
"""


def run_two(pc: bool, reference: bool, ids: list[np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
    rs = load_scenario_text(TWO.format(pc=str(pc).lower()), "two.yaml")
    sim = Simulation(rs, reference=reference)
    for rid, h in enumerate(ids):
        sim.reqs.set_blocks(rid, h, 16)
    sim.run()
    return build_result(sim).requests, rs.deployments["d"].params


def step(p: np.ndarray, done: int, c: int, logits: int) -> float:
    """A prefill-only step: one chunk of ``c`` tokens after ``done`` (naive cost twin)."""
    return naive.step_time(p, float(c), c * (done + (c + 1) / 2.0), float(done), 0.0, 0.0, float(logits))


@pytest.mark.parametrize("reference", [False, True])
def test_a_hit_prefills_only_the_uncached_tokens(reference: bool) -> None:
    """Two identical 2000-token prompts a second apart. The first prefills in four chunks of the
    512-token budget; the second finds 1984 tokens cached (the last token is always computed,
    rounded down to 16-token blocks) and prefills 16 tokens in one step attending to them."""
    same = np.arange(125)  # 125 blocks of 16 tokens
    df, p = run_two(True, reference, [same, same])
    r0, r1 = df.iloc[0], df.iloc[1]
    ttft0 = step(p, 0, 512, 0) + step(p, 512, 512, 0) + step(p, 1024, 512, 0) + step(p, 1536, 464, 1)
    assert r0.cached_tokens == 0 and r0.first_token_s - r0.arrival_s == pytest.approx(ttft0, rel=1e-12)
    assert r1.cached_tokens == 1984
    assert r1.first_token_s - r1.arrival_s == pytest.approx(step(p, 1984, 16, 1), rel=1e-12)
    assert r1.first_token_s - r1.arrival_s < ttft0 / 4

    # A shared first half: 62 blocks = 992 tokens reused, 1008 computed (512 + 496).
    half = np.concatenate([same[:62], 1000 + np.arange(63)])
    df, p = run_two(True, reference, [same, half])
    r1 = df.iloc[1]
    assert r1.cached_tokens == 992
    assert r1.first_token_s - r1.arrival_s == pytest.approx(step(p, 992, 512, 0) + step(p, 1504, 496, 1), rel=1e-12)

    # Prefix caching off: the second prompt costs what the first did.
    df, _ = run_two(False, reference, [same, same])
    assert (df.cached_tokens == 0).all()
    ttft = (df.first_token_s - df.arrival_s).to_numpy()
    assert ttft[1] == pytest.approx(ttft0, rel=1e-12) and ttft[0] == pytest.approx(ttft0, rel=1e-12)


def test_without_blocks_a_cache_changes_nothing() -> None:
    """Requests that carry no blocks run bit for bit as with prefix caching off."""
    on, _ = run_two(True, False, [])
    off, _ = run_two(False, False, [])
    pd.testing.assert_frame_equal(on, off)


# ------------------------------------------------------------------ a replayed Mooncake trace

# A tiny model (512 bytes of KV per token) gives an H100 a KV cache of 150M tokens, far above the
# trace's footprint, and makes the replay take milliseconds; the cache rules do not depend on it.
MOONCAKE_SCENARIO = """
horizon_s: 100000
drain: true
pools: {{g: {{accelerator: h100-sxm, count: 1, price_usd_per_gpu_hour: 1.0}}}}
models:
  tiny:
    architecture: {{params_total_b: 0.1, num_layers: 2, hidden_size: 512, num_attention_heads: 8, num_kv_heads: 1,
                   head_dim: 64, intermediate_size: 1024, vocab_size: 32000, max_context: 131072}}
deployments:
  d:
    model: tiny
    pool: g
    engine: {{version: "0.6", max_num_seqs: {seqs}, block_size: {block}, max_num_batched_tokens: {budget},
              enable_chunked_prefill: {chunked}, runtime_overhead_gb: {overhead}, max_model_len: {mml},
              prefix_caching: {pc}}}
workloads:
  w:
    target: d
    arrival: {{kind: trace, format: mooncake, path: {path}, time_scale: {scale}}}
    input_tokens: {{kind: trace}}
    output_tokens: {out}
    max_requests: {n}
"""


def replay(reference: bool = False, **kw: object) -> Result:
    spec: dict[str, object] = {
        "seqs": 1, "block": 16, "budget": 8192, "chunked": "true", "overhead": 0, "mml": 131072, "pc": "true",
        "path": MOONCAKE, "scale": 1.0, "out": "{kind: fixed, value: 1}", "n": 1000,
    }
    spec.update(kw)
    rs = load_scenario_text(MOONCAKE_SCENARIO.format(**spec), "mooncake.yaml")
    return build_result(Simulation(rs, reference=reference).run())


def direct_hits(n: int, block_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Straight from the file: per request, the longest run of leading hash ids all seen in
    earlier requests, x 512 tokens, capped at input_length - 1 and rounded down to whole engine
    blocks; its input lengths; and the tokens of all distinct blocks (the cache footprint)."""
    seen: dict[int, int] = {}
    hits, inputs = [], []
    with open(MOONCAKE, encoding="utf-8") as fh:
        for _, line in zip(range(n), fh):
            rec = json.loads(line)
            ids, inp = rec["hash_ids"], rec["input_length"]
            k = 0
            while k < len(ids) and ids[k] in seen:
                k += 1
            hits.append(min(k * 512, inp - 1) // block_size * block_size)
            inputs.append(inp)
            for i, h in enumerate(ids):
                seen.setdefault(h, min(512, inp - 512 * i))
    return np.array(hits), np.array(inputs), sum(seen.values())


@needs_mooncake
@pytest.mark.parametrize("block", [1, 16])
def test_mooncake_replay_hit_rate_matches_the_hash_ids(block: int, tmp_path: Path) -> None:
    """The first 1000 conversation records, served one at a time (max_num_seqs 1; the trace's
    timestamps come in 3-second ticks of about ten requests, so no time_scale separates them), on
    a KV cache far above their footprint: every request's prefill ends before the next one's
    lookup and nothing is evicted, so each request reuses exactly the longest prefix of its
    hash_ids seen before. With 1-token engine blocks that is the plain formula (x 512, capped
    at input_length - 1); with vLLM's 16-token blocks the hit is rounded down to whole blocks,
    which costs 77 tokens over these 1000 requests (requests whose whole prompt hits)."""
    res = replay(block=block)
    df = res.requests
    hits, inputs, footprint = direct_hits(1000, block)
    summ = res.summary["deployments"]["d"]
    assert summ["kv_capacity_tokens_per_replica"] > 10 * footprint
    pc = summ["prefix_cache"]
    assert pc["evicted_blocks"] == 0 and pc["requests_with_blocks"] == 1000
    np.testing.assert_array_equal(df["input_tokens"], inputs)
    np.testing.assert_array_equal(df["cached_tokens"], hits)
    assert pc["prompt_tokens"] == inputs.sum() and pc["cached_tokens"] == hits.sum()
    assert pc["hit_rate"] == round(hits.sum() / inputs.sum(), 6)
    assert pc["hit_rate"] == pytest.approx(0.2157, abs=1e-4)
    if block == 16:
        unrounded, _, _ = direct_hits(1000, 1)
        assert unrounded.sum() - hits.sum() == 77
    write_result(res, tmp_path, plots=False)
    saved = pd.read_parquet(tmp_path / "requests.parquet")
    np.testing.assert_array_equal(saved["cached_tokens"], hits)
    assert json.loads((tmp_path / "summary.json").read_text())["deployments"]["d"]["prefix_cache"] == pc


@needs_mooncake
def test_no_reuse_when_off_and_less_with_a_small_cache() -> None:
    big = replay(n=600).summary["deployments"]["d"]["prefix_cache"]
    off = replay(n=600, pc="false")
    assert (off.requests["cached_tokens"] == 0).all()
    pc = off.summary["deployments"]["d"]["prefix_cache"]
    assert not pc["enabled"] and pc["cached_tokens"] == 0 and pc["hit_rate"] == 0.0 and pc["evicted_blocks"] == 0
    assert pc["prompt_tokens"] == big["prompt_tokens"] and big["hit_rate"] > 0.15
    # About 300k tokens of KV (runtime overhead eats the rest); prompts over 64k are rejected.
    small = replay(n=600, overhead=71.6, mml=65536)
    d = small.summary["deployments"]["d"]
    assert 65536 < d["kv_capacity_tokens_per_replica"] < 400_000
    pc = d["prefix_cache"]
    assert pc["evicted_blocks"] > 1000
    assert pc["hit_rate"] < 0.8 * big["hit_rate"]


# ------------------------------------------------------------------ the twins


@needs_mooncake
@pytest.mark.parametrize(
    "kw",
    [
        {"overhead": 71.55},  # small KV: evictions and preemptions
        {"overhead": 71.55, "budget": 1024},
        {"overhead": 71.4, "chunked": "false", "budget": 33000},
        {"overhead": 0},  # no eviction
    ],
    ids=["chunked", "small-budget", "unchunked", "large-kv"],
)
def test_twins_agree_on_a_mooncake_replay(kw: dict[str, object]) -> None:
    """Many requests at once on a small KV cache (hits, evictions, preemptions and recomputed
    prefixes): the compiled scheduler and its reference twin give identical records."""
    spec = dict(seqs=128, scale=0.01, mml=32768, n=300, out="{kind: uniform, low: 1000, high: 8000}", **kw)
    fast = replay(**spec)
    ref = replay(reference=True, **spec)
    pd.testing.assert_frame_equal(fast.requests, ref.requests)
    assert fast.summary["deployments"]["d"]["prefix_cache"] == ref.summary["deployments"]["d"]["prefix_cache"]
    assert (fast.requests["cached_tokens"] > 0).sum() > 200
    if kw["overhead"]:
        assert fast.summary["deployments"]["d"]["prefix_cache"]["evicted_blocks"] > 0
        assert fast.requests["preemptions"].sum() > 0


SHARED_PREFIX = """
horizon_s: 20
drain: true
pools: {{g: {{accelerator: l4, count: 2, price_usd_per_gpu_hour: 1.0}}}}
deployments:
  d:
    model: llama-3.1-8b
    pool: g
    replicas: 2
    precision: fp8
    engine: {{version: "0.6", max_num_seqs: 32, max_num_batched_tokens: {budget}, enable_chunked_prefill: {chunked}, max_model_len: 8192}}
    load_balancer: {{kind: {lb}}}
workloads:
  w:
    target: d
    arrival: {{kind: poisson, rate_per_s: 6}}
    input_tokens: {{kind: uniform, low: 1500, high: 4000}}
    output_tokens: {{kind: exponential, mean: 150}}
"""


@pytest.mark.parametrize(
    ("lb", "chunked", "budget"),
    [("round_robin", "true", 2048), ("least_outstanding", "true", 512), ("shared_queue", "false", 8192)],
)
def test_twins_agree_on_shared_system_prompts(lb: str, chunked: str, budget: int) -> None:
    """Synthetic agent-like prompts (64-token blocks): one of four system prompts, then a
    conversation turn that continues an earlier one half of the time; every balancer routes."""
    text = SHARED_PREFIX.format(lb=lb, chunked=chunked, budget=budget)
    frames = []
    for reference in (False, True):
        sim = Simulation(load_scenario_text(text, "shared.yaml"), reference=reference)
        rng = np.random.default_rng(7)
        convs: list[np.ndarray] = []
        for rid in range(sim.reqs.n):
            blocks = -(-int(sim.reqs.input_tokens[rid]) // 64)
            if convs and rng.random() < 0.5:
                base = convs[int(rng.integers(len(convs)))]
            else:
                base = 10_000 * (1 + int(rng.integers(4))) + np.arange(16)  # a 1024-token system prompt
            keep = min(len(base), blocks - 1)
            ids = np.concatenate([base[:keep], 1_000_000 + 1000 * rid + np.arange(blocks - keep)])
            sim.reqs.set_blocks(rid, ids, 64)
            convs.append(ids)
        frames.append(build_result(sim.run()).requests)
    fast, ref = frames
    pd.testing.assert_frame_equal(fast, ref)
    assert (fast["cached_tokens"] > 0).mean() > 0.5


def attach_conversations(sim: Simulation, seed: int, bt: int) -> None:
    """Blocks for every request but a tenth: a short shared system prompt or a continuation of
    an earlier request (sometimes of its whole prompt), then blocks of its own."""
    rng = np.random.default_rng(seed)
    convs: list[np.ndarray] = []
    for rid in range(sim.reqs.n):
        blocks = -(-int(sim.reqs.input_tokens[rid]) // bt)
        if convs and rng.random() < 0.6:
            base = convs[int(rng.integers(len(convs)))]
        else:
            base = 10_000 * (1 + int(rng.integers(3))) + np.arange(rng.integers(1, 20))
        keep = max(0, min(len(base), blocks - int(rng.integers(0, 3))))
        ids = np.concatenate([base[:keep], 1_000_000 + 1000 * rid + np.arange(max(blocks - keep, 0))])
        if rng.random() < 0.1:
            continue
        sim.reqs.set_blocks(rid, ids, bt)
        convs.append(ids)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(text=random_scenarios(), seed=st.integers(0, 100), bt=st.sampled_from([8, 16, 64]))
def test_twins_agree_on_random_scenarios_with_blocks(text: str, seed: int, bt: int) -> None:
    """The scheduler's random scenarios (every balancer, chunked or not, preemptions) with
    blocks attached: identical records from both twins."""
    frames = []
    for reference in (False, True):
        sim = Simulation(load_scenario_text(text, "random.yaml"), reference=reference)
        attach_conversations(sim, seed, bt)
        frames.append(build_result(sim.run()).requests)
    pd.testing.assert_frame_equal(frames[0], frames[1])
