"""Multi-LoRA (engine.lora, workloads.<w>.lora, load_balancer lora_affinity): adapter sizes and
load times by hand, an exact event log on a tiny scenario, the scheduler's invariants checked
from each replica's log (a request never runs without its adapter in a GPU slot; never more than
max_loras distinct adapters held), the compiled scheduler against its twin, the LoRA step cost
against its naive twin, affinity routing against round robin, and bad settings named by field."""

from __future__ import annotations

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
from stacksim.metrics import RI_LORA, RequestTable
from stacksim.metrics.summary import build_result
from stacksim.scenario.schema_lora import Lora
from stacksim.serving import core_lora as CL
from stacksim.serving import lora as L
from stacksim.serving.costmodel import cost_params, memory_plan
from stacksim.serving.lora import LoraTraffic, adapter_bytes, per_gpu_dims, resolve_lora

LLAMA8 = get_model("llama-3.1-8b")
H100 = get_accelerator("h100-sxm")


def run(text: str, reference: bool = False, seed: int | None = None):  # type: ignore[no-untyped-def]
    rs = load_scenario_text(text, "lora.yaml")
    sim = Simulation(rs, seed=seed, reference=reference).run()
    return sim, build_result(sim)


# --------------------------------------------------------------------------- sizes and times


def test_adapter_bytes_is_rank_times_dims_times_layers() -> None:
    """Llama-3.1-8B (hidden 4096, 32 heads and 8 KV heads of 128, MLP 14336, 32 layers), rank 16,
    every linear layer: 16 x (2 x 8192 + 2 x 5120 + 3 x 18432) x 32 x 2 bytes = 83,886,080 (the
    size of a bf16 r=16 all-linear PEFT adapter of Llama-3-8B, ~84 MB)."""
    per_layer = (4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 3 * (4096 + 14336)
    assert per_layer == 81920
    assert adapter_bytes(LLAMA8, 16, "all_linear") == 16 * per_layer * 32 * 2 == 83_886_080
    assert adapter_bytes(LLAMA8, 8, "attention") == 8 * (8192 + 5120 + 5120 + 8192) * 32 * 2


def test_tensor_parallel_shards_half_of_lora() -> None:
    """vLLM's default (fully_sharded_loras: false): column-parallel layers keep A whole and slice
    B, row-parallel ones slice A and keep B; KV heads replicate beyond 8 ranks."""
    tp1 = sum(a + b for a, b in per_gpu_dims(LLAMA8, 1, "all_linear"))
    tp4 = per_gpu_dims(LLAMA8, 4, "all_linear")
    assert tp1 == 81920
    assert tp4 == [(4096, 1024), (4096, 256), (4096, 256), (1024, 4096), (4096, 3584), (4096, 3584), (3584, 4096)]
    tp16 = dict(zip(["q", "k", "v", "o", "g", "u", "d"], per_gpu_dims(LLAMA8, 16, "all_linear")))
    assert tp16["k"] == (4096, 128)  # one of 8 KV heads per rank, replicated


def spec(**kw):  # type: ignore[no-untyped-def]
    return Lora.model_validate({"adapters": {"a": {"rank": 16}, "b": {"rank": 8, "target_modules": "attention"}}, **kw})


def test_load_time_is_bytes_over_bandwidth() -> None:
    """From the host cache: the GPU's adapter bytes / host-to-GPU rate; from disk: the whole
    adapter / disk rate first. Default host rate: PCIe 5.0 x16 at 128b/130b (63.0 GB/s) x 256/276."""
    rl = resolve_lora(spec(load={"from_cpu_gb_per_s": 25.0, "from_disk_gb_per_s": 1.0}), LLAMA8, H100, 1, 1, False)
    a = rl.index["a"]
    assert rl.load_cpu_s[a] == pytest.approx(83_886_080 / 25e9, rel=1e-12)
    assert rl.load_disk_s[a] == pytest.approx(83_886_080 / 1e9 + 83_886_080 / 25e9, rel=1e-12)
    default = resolve_lora(spec(), LLAMA8, H100, 1, 1, False)
    assert default.host_gb_per_s == pytest.approx(32 * 16 * 128 / 130 / 8 * 256 / 276, rel=1e-12)
    assert 58.0 < default.host_gb_per_s < 59.0
    assert "PCIe 5.0" in default.host_basis
    a100 = resolve_lora(spec(), LLAMA8, get_accelerator("a100-sxm-80gb"), 1, 1, False)
    assert a100.host_gb_per_s == pytest.approx(default.host_gb_per_s / 2)
    tp2 = resolve_lora(spec(), LLAMA8, H100, 2, 1, False)  # each GPU copies its own shard over its own link
    assert tp2.load_cpu_s[a] < default.load_cpu_s[a]


def test_gpu_slots_come_out_of_the_kv_cache() -> None:
    """vLLM pre-allocates max_loras slots of max_lora_rank for every linear layer."""
    rl = resolve_lora(spec(max_loras=4, max_lora_rank=64), LLAMA8, H100, 1, 1, False)
    assert rl.slot_bytes_per_gpu == 4 * 64 * 81920 * 32 * 2
    args = (LLAMA8, H100, 1, 1, "bf16", "auto", 16, 0.9, 8192, 256, 1.5)
    plain, with_lora = memory_plan(*args), memory_plan(*args, lora_bytes_per_gpu=rl.slot_bytes_per_gpu)
    assert with_lora.lora_slots_per_gpu_gb == pytest.approx(rl.slot_bytes_per_gpu / 2**30)
    per_block = plain.kv_bytes_per_token_per_gpu * 16
    assert with_lora.num_blocks == int((plain.kv_per_gpu_gb * 2**30 - rl.slot_bytes_per_gpu) // per_block)
    assert memory_plan(*args, lora_bytes_per_gpu=0.0) == plain


# --------------------------------------------------------------------------- the step cost


def lora_params(tp: int = 1, pp: int = 1) -> np.ndarray:
    return cost_params(LLAMA8, H100, tp, pp, "bf16", "auto", "calibrated")


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    tp=st.sampled_from([1, 2, 4]),
    pp=st.sampled_from([1, 2, 3]),
    batch=st.lists(st.tuples(st.sampled_from([None, "a", "b", "c"]), st.integers(1, 600)), min_size=1, max_size=12),
    n_dec=st.integers(0, 64),
    ctx=st.integers(0, 3000),
)
def test_lora_step_time_matches_naive(tp: int, pp: int, batch: list, n_dec: int, ctx: int) -> None:  # type: ignore[type-arg]
    """The compiled step with the scheduler's aggregates (each token's flops-per-token of its
    adapter summed, each distinct adapter's bytes once) equals the token-by-token, layer-by-layer,
    matrix-by-matrix sum; with no adapter it is step_time exactly, and LoRA never makes it cheaper."""
    sp = Lora.model_validate({"max_lora_rank": 64, "adapters": {
        "a": {"rank": 16}, "b": {"rank": 64, "target_modules": "attention"}, "c": {"rank": 8}}})
    rl = resolve_lora(sp, LLAMA8, H100, tp, pp, False)
    p = lora_params(tp, pp)
    shapes = {n: (rl.ranks[rl.index[n]], LLAMA8.num_layers / pp, per_gpu_dims(LLAMA8, tp, sp.adapters[n].target_modules))
              for n in rl.names}
    n_pf = sum(t for _, t in batch)
    pairs = sum(t * (t + 1) / 2.0 for _, t in batch)
    flops, nbytes, seen = 0.0, 0.0, set()
    for name, t in batch:
        if name is not None:
            flops += t * rl.flops_per_token[rl.index[name]]
            if name not in seen:
                seen.add(name)
                nbytes += rl.read_bytes[rl.index[name]]
    args = (float(n_pf), pairs, 0.0, float(n_dec), float(n_dec * ctx), float(n_dec + len(batch)))
    fast = K.step_time_lora(p, *args, flops, nbytes)
    slow = naive.step_time_lora(p, *args, batch, shapes)
    assert fast == pytest.approx(slow, rel=1e-9)
    assert fast >= K.step_time(p, *args)
    assert K.step_time_lora(p, *args, 0.0, 0.0) == K.step_time(p, *args)  # bit for bit


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 128), ctx=st.integers(1, 4000), k=st.integers(1, 200), flops=st.floats(0, 1e12),
       nbytes=st.floats(0, 1e9))
def test_lora_decode_stretch_matches_step_by_step(n: int, ctx: int, k: int, flops: float, nbytes: float) -> None:
    p = lora_params()
    out = np.zeros(k)
    last = K.decode_stretch_times_lora(p, n, float(n * ctx), k, out, flops, nbytes)
    ref = np.cumsum([naive.iteration_time(p, 0, 0, 0, n, n * (ctx + i), n * (ctx + i), n, flops, nbytes) for i in range(k)])
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert last == out[-1]


def test_lora_costs_little_at_small_batch_and_reads_each_adapter_once() -> None:
    """At batch 1 decode is memory-bound: a rank-16 adapter adds its 84 MB to the 16 GB of weights
    read (~0.5%); sixteen sequences on one adapter read it once, on sixteen adapters sixteen times."""
    rl = resolve_lora(spec(max_loras=16), LLAMA8, H100, 1, 1, False)
    p = lora_params()
    a = rl.index["a"]
    base = K.step_time(p, 0, 0, 0, 1, 1000, 1)
    one = K.step_time_lora(p, 0, 0, 0, 1, 1000, 1, rl.flops_per_token[a], rl.read_bytes[a])
    assert 1.0 < one / base < 1.01
    same = K.step_time_lora(p, 0, 0, 0, 16, 16000, 16, 16 * rl.flops_per_token[a], rl.read_bytes[a])
    many = K.step_time_lora(p, 0, 0, 0, 16, 16000, 16, 16 * rl.flops_per_token[a], 16 * rl.read_bytes[a])
    # Memory-bound: fifteen more adapters cost exactly their bytes at the achieved bandwidth.
    assert many - same == pytest.approx(15 * rl.read_bytes[a] / (p[K.MEM_BW] * p[K.EFF_MEM]), rel=1e-6)


# --------------------------------------------------------------------------- an exact log

TINY = """
horizon_s: {horizon}
drain: true
pools: {{g: {{accelerator: h100-sxm, count: 1}}}}
deployments:
  d:
    model: llama-3.1-8b
    pool: g
    engine:
      version: "0.6"
      max_num_seqs: 8
      max_num_batched_tokens: 512
      max_model_len: 4096
      lora:
        max_loras: 1
        max_cpu_loras: 2
        adapters: {{a1: {{rank: 16}}, a2: {{rank: 8, target_modules: attention}}}}
        load: {{from_cpu_gb_per_s: 20.0, from_disk_gb_per_s: 1.0}}
workloads:
{workloads}
"""


def one(name: str, at: float, adapter: str | None, inp: int = 100, out: int = 3) -> str:
    lora = f", lora: {adapter}" if adapter else ""
    return (f"  {name}: {{target: d, arrival: {{kind: deterministic, rate_per_s: {1 / at}}}, max_requests: 1, "
            f"input_tokens: {{kind: fixed, value: {inp}}}, output_tokens: {{kind: fixed, value: {out}}}{lora}}}")


def test_exact_event_log_loads_from_disk_then_host_cache() -> None:
    """a1 at 1 s loads from disk; a1 again at 2 s is resident; a2 at 3 s loads from disk into the
    only GPU slot (a1 stays in the host cache); a1 at 4 s comes back from the host cache. Each
    first token = arrival + its step's loads + the LoRA prefill step."""
    wl = "\n".join([one("w1", 1.0, "a1"), one("w2", 2.0, "a1"), one("w3", 3.0, "a2"), one("w4", 4.0, "a1")])
    text = TINY.format(horizon=5, workloads=wl)
    sim, res = run(text)
    rl = sim.rs.deployments["d"].lora
    log = sim.deployments["d"].replicas[0].lora_log.frame()
    loads = log[log.event.str.startswith(("load", "evict"))]
    df = res.requests.set_index("workload", drop=False)
    t = df.arrival_s
    assert list(zip(loads.t_s, loads.event, loads.adapter)) == [
        (t["w1"], "load_disk", "a1"), (t["w3"], "evict_gpu", "a1"), (t["w3"], "load_disk", "a2"),
        (t["w4"], "evict_gpu", "a2"), (t["w4"], "load_cpu", "a1")]
    p = sim.rs.deployments["d"].params
    a1, a2 = rl.index["a1"], rl.index["a2"]
    shapes = {n: (rl.ranks[rl.index[n]], 32, per_gpu_dims(LLAMA8, 1, rl.targets[rl.index[n]])) for n in rl.names}

    def prefill(name: str) -> float:
        return naive.step_time_lora(p, 100.0, 100 * 101 / 2.0, 0.0, 0.0, 0.0, 1.0, [(name, 100)], shapes)

    assert rl.load_disk_s[a1] == pytest.approx(83_886_080 / 1e9 + 83_886_080 / 20e9)
    assert df.loc["w1", "first_token_s"] == pytest.approx(t["w1"] + rl.load_disk_s[a1] + prefill("a1"), rel=1e-12)
    assert df.loc["w2", "first_token_s"] == pytest.approx(t["w2"] + prefill("a1"), rel=1e-12)
    assert df.loc["w3", "first_token_s"] == pytest.approx(t["w3"] + rl.load_disk_s[a2] + prefill("a2"), rel=1e-12)
    assert df.loc["w4", "first_token_s"] == pytest.approx(t["w4"] + rl.load_cpu_s[a1] + prefill("a1"), rel=1e-12)
    assert (df.admitted_s == df.arrival_s).all()
    s = res.summary["deployments"]["d"]["lora"]
    assert s["loads"] == {"from_cpu": 1, "from_disk": 2}
    assert s["evictions"] == {"gpu": 2, "cpu": 0}
    assert s["load_wait_ms"]["count"] == 3
    assert s["load_stall_s"] == pytest.approx(rl.load_disk_s[a1] + rl.load_disk_s[a2] + rl.load_cpu_s[a1], abs=1e-6)
    assert s["adapters"]["a1"]["requests"] == 3 and s["adapters"]["a2"]["requests"] == 1
    assert list(res.requests.sort_values("arrival_s").lora) == ["a1", "a1", "a2", "a1"]
    pd.testing.assert_frame_equal(res.requests, run(text, reference=True)[1].requests)


def test_base_model_requests_are_not_blocked_behind_a_waiting_adapter() -> None:
    """max_loras 1: while a long a1 request runs, an a2 request waits (skipped, as vLLM does), and
    a base-model request that arrives after it is admitted at once; a2 is admitted only when a1
    has left the batch."""
    wl = "\n".join([one("long", 1.0, "a1", out=400), one("other", 1.5, "a2"), one("base", 1.6, None)])
    res = run(TINY.format(horizon=3, workloads=wl))[1]
    df = res.requests.set_index("workload")
    assert df.loc["base", "admitted_s"] < df.loc["base", "arrival_s"] + 0.05
    assert df.loc["other", "admitted_s"] >= df.loc["long", "finish_s"]
    assert df.loc["base", "finish_s"] < df.loc["other", "admitted_s"]


# --------------------------------------------------------------------------- invariants from the log

MANY = """
seed: {seed}
horizon_s: {horizon}
drain: {drain}
pools: {{g: {{accelerator: {acc}, count: 4, price_usd_per_gpu_hour: 1.0}}}}
deployments:
  d:
    model: llama-3.1-8b
    pool: g
    replicas: {replicas}
    engine:
      max_num_seqs: {seqs}
      max_num_batched_tokens: {tokens}
      enable_chunked_prefill: {chunked}
      gpu_memory_utilization: {util}
      max_model_len: 4096
      lora:
        max_loras: {max_loras}
        max_cpu_loras: {max_cpu}
        adapters: {{{adapters}}}
    load_balancer: {{kind: {lb}}}
workloads:
  w:
    target: d
    arrival: {{kind: poisson, rate_per_s: {rate}}}
    input_tokens: {{kind: lognormal, median: {inp}, sigma: 1.0, max: 3000}}
    output_tokens: {{kind: exponential, mean: {out}}}
    lora:
      tenants: {{{tenants}}}
"""


def many(n_adapters: int = 6, base_share: bool = True, **kw) -> str:  # type: ignore[no-untyped-def]
    adapters = ", ".join(f"t{i}: {{rank: {[8, 16][i % 2]}}}" for i in range(n_adapters))
    tenants = ", ".join(f"c{i}: t{i}" for i in range(n_adapters)) + (", free: null" if base_share else "")
    args = {"seed": 0, "horizon": 20, "drain": "true", "acc": "h100-sxm", "replicas": 2, "seqs": 32, "tokens": 1024,
            "chunked": "true", "util": 0.9, "max_loras": 2, "max_cpu": 3, "lb": "round_robin", "rate": 10, "inp": 300,
            "out": 60}
    args.update(kw)
    return MANY.format(adapters=adapters, tenants=tenants, **args)


def check_log(sim: Simulation, res) -> int:  # type: ignore[no-untyped-def]
    """Replay every replica's log: a request is admitted only with its adapter in a GPU slot (or
    loaded in that very step), no adapter is evicted while a held sequence uses it, never more
    than max_loras distinct adapters are held, and every request's first admission in the table
    is an ADMIT in its replica's log. Returns the number of ADMIT events checked."""
    rl = sim.rs.deployments["d"].lora
    df = res.requests.set_index("request_id")
    checked = 0
    admitted_here: dict[int, float] = {}
    for r in sim.deployments["d"].replicas:
        log = r.lora_log
        resident: set[int] = set()
        loading_at: dict[int, float] = {}
        held: dict[int, int] = {}
        holder: dict[int, int] = {}  # rid -> adapter while held
        first_admit: dict[int, float] = {}
        for t, kind, a, rid in zip(log.t, log.kind, log.adapter, log.rid):
            if kind in (L.LOAD_CPU, L.LOAD_DISK):
                assert a not in resident
                resident.add(a)
                loading_at[a] = t
                assert len(resident) <= rl.max_loras
            elif kind == L.EVICT_GPU:
                assert a in resident and held.get(a, 0) == 0, "evicted while in use"
                resident.discard(a)
            elif kind == L.ADMIT:
                assert a in resident, f"request {rid} admitted without adapter {a} loaded"
                assert rid not in holder
                holder[rid] = a
                held[a] = held.get(a, 0) + 1
                assert sum(1 for v in held.values() if v > 0) <= rl.max_loras
                first_admit.setdefault(rid, t)
                checked += 1
            elif kind == L.RELEASE:
                assert holder.pop(rid) == a
                held[a] -= 1
        for rid, t in first_admit.items():
            row = df.loc[rid]
            assert row.admitted_s == t
            assert row.replica == r.index
            assert rl.names[int(sim.reqs.RI[RI_LORA, rid]) - 1] == row.lora
            if loading_at.get(int(sim.reqs.RI[RI_LORA, rid])) == t:  # loaded in its own step: tokens after the load
                assert not row.first_token_s <= t  # (NaN: still in prefill when the run stopped)
        admitted_here.update(first_admit)
    with_adapter = df[df.lora.notna() & df.admitted_s.notna()]
    assert set(with_adapter.index) == set(admitted_here), "every admitted request with an adapter is in a log"
    return checked


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lb", ["round_robin", "lora_affinity", "shared_queue"])
def test_a_tenants_requests_never_run_without_its_adapter_loaded(seed: int, lb: str) -> None:
    """The issue's test, from the replica-side log of loads, evictions, admissions and releases and
    each request's admission time; a KV cache small enough to preempt is included."""
    text = many(n_adapters=7, seed=seed, lb=lb, util=0.3, rate=14, inp=800, out=150, max_loras=3, max_cpu=4)
    sim, res = run(text)
    assert check_log(sim, res) > 100
    s = res.summary["deployments"]["d"]["lora"]
    assert s["loads"]["from_cpu"] + s["loads"]["from_disk"] > 0
    assert sum(a["requests"] for a in s["adapters"].values()) == s["requests"]["with_adapter"]


@st.composite
def lora_scenarios(draw: st.DrawFn) -> str:
    chunked = draw(st.booleans())
    seqs = draw(st.integers(1, 48))
    max_loras = draw(st.integers(1, 4))
    return many(
        n_adapters=draw(st.integers(1, 8)),
        base_share=draw(st.booleans()),
        seed=draw(st.integers(0, 10_000)),
        horizon=draw(st.sampled_from([10, 20])),
        drain=draw(st.sampled_from(["true", "false"])),
        acc=(acc := draw(st.sampled_from(["h100-sxm", "l40s"]))),
        replicas=draw(st.integers(1, 3)),
        seqs=seqs,
        tokens=draw(st.integers(max(seqs, 16), 2048)) if chunked else 4096,
        chunked=str(chunked).lower(),
        util=draw(st.sampled_from([0.3, 0.9] if acc == "h100-sxm" else [0.9])),
        max_loras=max_loras,
        max_cpu=max_loras + draw(st.integers(0, 3)),
        lb=draw(st.sampled_from(["round_robin", "least_outstanding", "random", "shared_queue", "lora_affinity"])),
        rate=draw(st.sampled_from([3, 10, 25])),
        inp=draw(st.sampled_from([50, 400, 1500])),
        out=draw(st.sampled_from([5, 60, 300])),
    )


@settings(max_examples=25, deadline=None, derandomize=True)
@given(text=lora_scenarios())
def test_compiled_scheduler_equals_reference_with_lora(text: str) -> None:
    """Same decisions and arithmetic with adapters: identical per-request records and identical
    logs of loads, evictions, admissions and releases; the invariants hold on both."""
    fast_sim, fast = run(text)
    ref_sim, ref = run(text, reference=True)
    pd.testing.assert_frame_equal(fast.requests, ref.requests)
    for a, b in zip(fast_sim.deployments["d"].replicas, ref_sim.deployments["d"].replicas):
        assert a.lora_log.frame().equals(b.lora_log.frame())
        assert list(a.lora_log.wait_s) == list(b.lora_log.wait_s)
    assert fast.summary["deployments"]["d"]["lora"] == ref.summary["deployments"]["d"]["lora"]
    check_log(fast_sim, fast)


def test_preemption_with_adapters_twins_agree() -> None:
    text = many(n_adapters=5, seed=3, util=0.28, rate=12, inp=1500, out=300, replicas=1, seqs=64, max_loras=2)
    fast_sim, fast = run(text)
    assert fast.requests.preemptions.sum() > 0
    pd.testing.assert_frame_equal(fast.requests, run(text, reference=True)[1].requests)
    check_log(fast_sim, fast)


# --------------------------------------------------------------------------- routing


def test_affinity_routing_loads_fewer_adapters_than_round_robin() -> None:
    """24 tenants, each with its adapter, on 4 replicas of 4 GPU slots and 8 host-cache entries:
    round robin sends every adapter everywhere and keeps reloading; lora_affinity keeps each
    adapter where it is (or was last sent), so far fewer loads and less time stalled."""
    common = {"n_adapters": 24, "base_share": False, "replicas": 4, "max_loras": 4, "max_cpu": 8, "rate": 20,
              "horizon": 60, "seed": 5, "out": 80}
    rr = run(many(lb="round_robin", **common))[1].summary["deployments"]["d"]["lora"]
    aff = run(many(lb="lora_affinity", **common))[1].summary["deployments"]["d"]["lora"]
    loads = {k: v["loads"]["from_cpu"] + v["loads"]["from_disk"] for k, v in (("rr", rr), ("aff", aff))}
    assert loads["aff"] < 0.5 * loads["rr"], loads
    assert aff["load_stall_s"] < rr["load_stall_s"]


def test_affinity_routes_base_model_requests_by_load() -> None:
    """Without adapters, lora_affinity is least outstanding: the same records."""
    base = many(n_adapters=1, base_share=True, seed=2).replace("c0: t0, ", "")
    a = run(base.replace("kind: round_robin", "kind: lora_affinity"))[1].requests
    b = run(base.replace("kind: round_robin", "kind: least_outstanding"))[1].requests
    pd.testing.assert_frame_equal(a, b)


# --------------------------------------------------------------------------- base model unchanged

PLAIN = """
horizon_s: 10
pools: {g: {accelerator: h100-sxm, count: 1}}
deployments: {d: {model: llama-3.1-8b, pool: g, engine: {max_num_seqs: 16, max_model_len: 4096}}}
workloads:
  w: {target: d, arrival: {kind: poisson, rate_per_s: 5}, input_tokens: {kind: fixed, value: 200},
      output_tokens: {kind: fixed, value: 20}}
"""


def test_no_lora_configured_adds_nothing() -> None:
    """Without engine.lora: no lora columns or summary section, no LoRA region in the scheduler
    state (twin-vs-compiled and exact-timeline tests of test_scheduler.py run unchanged)."""
    sim, res = run(PLAIN)
    assert "lora" not in res.requests.columns and "lora" not in res.summary["deployments"]["d"]
    r = sim.deployments["d"].replicas[0]
    assert r.lora is None and r.lora_log is None and int(r.I[CL.LORA_OFF]) == 0
    assert (sim.reqs.RI[RI_LORA, : sim.reqs.n] == 0).all()


def test_base_model_requests_on_a_lora_deployment_cost_what_they_did() -> None:
    """A LoRA deployment serving only base-model requests runs them at the same step cost; only
    its KV cache is smaller (the adapter slots)."""
    with_lora = PLAIN.replace("max_model_len: 4096}", "max_model_len: 4096, lora: {adapters: {x: {rank: 16}}}}")
    a, b = run(PLAIN)[1], run(with_lora)[1]
    assert b.requests.lora.isna().all()
    pd.testing.assert_frame_equal(a.requests, b.requests.drop(columns="lora"))
    assert b.summary["deployments"]["d"]["kv_capacity_tokens_per_replica"] < a.summary["deployments"]["d"][
        "kv_capacity_tokens_per_replica"]
    assert b.summary["deployments"]["d"]["lora"]["requests"] == {"base_model": len(b.requests), "with_adapter": 0}


def test_adapters_key_prefix_blocks() -> None:
    """Equal prompts under different adapters never share prefix-cache blocks (vLLM hashes the
    LoRA id into each block); the base model's blocks are left as they were."""
    sc = load_scenario_text(many(n_adapters=2, base_share=True), "x.yaml")
    reqs = RequestTable(8)
    ids = reqs.add_many(np.zeros(6), np.full(6, 128), np.full(6, 4), 0)
    for rid in ids:
        reqs.set_blocks(int(rid), np.array([11, 22]), 64)
    traffic = LoraTraffic(sc.scenario, {"d": sc.deployments["d"].lora}, Simulation(sc).streams)
    traffic.assign(reqs, 0, ids)
    by_adapter: dict[int, set[tuple[int, ...]]] = {}
    for rid in ids.tolist():
        by_adapter.setdefault(int(reqs.RI[RI_LORA, rid]), set()).add(tuple(reqs.blocks[rid][0].tolist()))
    assert all(len(v) == 1 for v in by_adapter.values())
    keys = [next(iter(v)) for v in by_adapter.values()]
    assert len(set(keys)) == len(keys)
    if 0 in by_adapter:
        assert by_adapter[0] == {(11, 22)}


def test_tenant_shares_are_drawn_from_their_own_stream() -> None:
    text = many(n_adapters=2, base_share=True, horizon=5, rate=400, out=2, inp=50, drain="false")
    text = text.replace("free: null}", "free: null}\n      share: {c0: 6, c1: 3, free: 1}")
    res = run(text)[1]
    share = res.requests.lora_tenant.value_counts(normalize=True)
    assert share["w:c0"] == pytest.approx(0.6, abs=0.03)
    assert share["w:free"] == pytest.approx(0.1, abs=0.02)
    assert res.requests[res.requests.lora_tenant == "w:free"].lora.isna().all()


# --------------------------------------------------------------------------- bad settings

BAD = """
horizon_s: 5
pools: {{g: {{accelerator: {acc}, count: 2}}}}
deployments:
  d:
    model: {model}
    pool: g
    engine: {{max_model_len: 4096{engine}}}{lb}
workloads:
  w: {{target: d, arrival: {{kind: poisson, rate_per_s: 1}}, input_tokens: {{kind: fixed, value: 9}},
      output_tokens: {{kind: fixed, value: 9}}{wl}}}
"""
GOOD_LORA = ", lora: {max_loras: 2, adapters: {acme: {rank: 16}, globex: {rank: 8}}}"


@pytest.mark.parametrize(
    "engine,wl,lb,model,acc,field,fragment",
    [
        (", lora: {adapters: {acme: {rank: 32}}}", "", "", "llama-3.1-8b", "h100-sxm",
         "deployments.d.engine.lora.adapters.acme.rank", "exceeds max_lora_rank 16"),
        (", lora: {max_lora_rank: 24, adapters: {acme: {}}}", "", "", "llama-3.1-8b", "h100-sxm",
         "deployments.d.engine.lora.max_lora_rank", "32"),
        (", lora: {max_loras: 4, max_cpu_loras: 2, adapters: {acme: {}}}", "", "", "llama-3.1-8b", "h100-sxm",
         "deployments.d.engine.lora", "max_cpu_loras (2) must be >= max_loras (4)"),
        (", lora: {adapters: {}}", "", "", "llama-3.1-8b", "h100-sxm", "deployments.d.engine.lora.adapters", "at least 1"),
        (GOOD_LORA, ", lora: acme-v2", "", "llama-3.1-8b", "h100-sxm", "workloads.w.lora",
         "no adapter 'acme-v2' in deployments.d.engine.lora.adapters (it has: acme, globex). Did you mean: acme?"),
        (GOOD_LORA, ", lora: {tenants: {a: acme, b: initech}}", "", "llama-3.1-8b", "h100-sxm",
         "workloads.w.lora.tenants.b", "no adapter 'initech'"),
        (GOOD_LORA, ", lora: {tenants: {a: acme, b: null}, share: {a: 1}}", "", "llama-3.1-8b", "h100-sxm",
         "workloads.w.lora.share", "missing: b"),
        ("", ", lora: acme", "", "llama-3.1-8b", "h100-sxm", "workloads.w.lora", "deployment 'd' has no engine.lora"),
        ("", "", "\n    load_balancer: {kind: lora_affinity}", "llama-3.1-8b", "h100-sxm",
         "deployments.d.load_balancer.kind", "no engine.lora"),
        (GOOD_LORA + ", speculative: {method: ngram, num_speculative_tokens: 2, acceptance_rate: 0.5}", "", "",
         "llama-3.1-8b", "h100-sxm", "deployments.d.engine.lora", "not modelled"),
        (GOOD_LORA, "", "", "mixtral-8x7b", "h200", "deployments.d.engine.lora", "mixture-of-experts"),
        (", lora: {adapters: {acme: {target_modules: mlp}}}", "", "", "llama-3.1-8b", "h100-sxm",
         "deployments.d.engine.lora.adapters.acme.target_modules", "all_linear"),
        (GOOD_LORA, "", "", "llama-3.2-3b", "tpu-v5e", "deployments.d.engine.lora.load.from_cpu_gb_per_s",
         "no PCIe generation"),
    ],
)
def test_bad_lora_settings_name_the_field(engine: str, wl: str, lb: str, model: str, acc: str, field: str,
                                          fragment: str) -> None:
    text = BAD.format(engine=engine, wl=wl, lb=lb, model=model, acc=acc)
    if acc == "tpu-v5e":
        text = text.replace("count: 2}", "count: 2, price_usd_per_gpu_hour: 1.0}")
    with pytest.raises(StackSimError) as exc:
        load_scenario_text(text, "bad.yaml")
    msg = str(exc.value)
    assert f"field '{field}'" in msg, msg
    assert fragment in msg, msg
    assert "bad.yaml, line" in msg


def test_resolved_scenario_pins_the_defaults_and_runs_the_same() -> None:
    """scenario.resolved.yaml fills max_cpu_loras and the host copy rate in; it runs identically."""
    from stacksim.scenario import resolved_yaml

    text = many(n_adapters=3, seed=4, horizon=10)
    rs = load_scenario_text(text, "lora.yaml")
    resolved = resolved_yaml(rs)
    again = load_scenario_text(resolved, "resolved.yaml")
    lora = again.scenario.deployments["d"].engine.lora
    assert lora is not None and lora.max_cpu_loras == 3
    assert lora.load.from_cpu_gb_per_s == pytest.approx(rs.deployments["d"].lora.host_gb_per_s)
    pd.testing.assert_frame_equal(run(text)[1].requests, run(resolved)[1].requests)
