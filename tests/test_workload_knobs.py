"""The knobs users set: load stages, shared-prefix prompts, length distributions and engine
settings, in scenarios and as `stacksim predict` flags.

Every blis-training run (shared/calibration/raw/blis-training/default_args/*) is checked against
its bundled scenario (scenarios/blis/) and its `predict` flags: the generated traffic has exactly
the run's stages (int(rate x duration) requests each, the last on the stage's end), prompts of
system + question tokens cycling through num_groups x num_prompts_per_group distinct prompts, the
group's system prompt shared as leading block hashes, and output_len tokens per answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from stacksim import load_scenario_text, run_scenario
from stacksim.cli import app
from stacksim.engine.rng import Streams
from stacksim.engine.simulation import Simulation
from stacksim.errors import ScenarioError, StackSimError
from stacksim.predict import PredictArgs, _check, _scenario_yaml
from stacksim.scenario import load_scenario
from stacksim.scenario import schema as S
from stacksim.workload.arrivals import stage_arrivals
from stacksim.workload.shared_prefix import plan_prompts, prompt_blocks, stage_positions

from .conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
BLIS = SHARED / "calibration" / "raw" / "blis-training" / "default_args"
RUNS = sorted(p.name for p in BLIS.iterdir()) if BLIS.is_dir() else []
runner = CliRunner()
MODEL_IDS = {"meta-llama/Llama-2-7b-hf": "llama-2-7b", "meta-llama/Llama-2-70b-hf": "llama-2-70b",
             "mistralai/Mixtral-8x7B-v0.1": "mixtral-8x7b", "codellama/CodeLlama-34b-Instruct-hf": "codellama-34b"}


def _scenario_of(run: str) -> Path:
    """The bundled scenario whose header names the run directory."""
    hits = [p for p in sorted((REPO / "scenarios" / "blis").glob("*.yaml"))
            if f"default_args/{run}\n" in p.read_text(encoding="utf-8")]
    assert len(hits) == 1, f"expected one scenarios/blis file naming {run}, found {hits}"
    return hits[0]


def _traffic(sim: Simulation, wi: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, ...]], int]:
    ids = sim.workload_ids[wi]
    blocks = [tuple(sim.reqs.blocks[int(r)][0].tolist()) for r in ids]
    bt = {sim.reqs.blocks[int(r)][1] for r in ids}
    assert len(bt) == 1
    return sim.reqs.arrival_s[ids], sim.reqs.input_tokens[ids], sim.reqs.output_tokens[ids], blocks, bt.pop()


def _check_blis_traffic(sim: Simulation, name: str, cfg: dict[str, Any], gap_s: float) -> None:
    """The generated traffic is exactly the inference-perf run's load."""
    sp, load = cfg["data"]["shared_prefix"], cfg["load"]
    w = sim.rs.scenario.workloads[name]
    t, inp, out, blocks, bt = _traffic(sim)
    # Stages: the same draws the simulation made, with the stage of each arrival.
    t2, stage = stage_arrivals(w.arrival, Streams(sim.seed).get(f"arrivals/{name}"), sim.horizon, None)
    assert np.array_equal(t, t2)
    start = 0.0
    for k, st in enumerate(load["stages"]):
        tk = t[stage == k]
        assert len(tk) == int(st["rate"] * st["duration"])  # inference-perf's count
        assert np.all(np.diff(tk) > 0) and tk[0] > start
        assert tk[-1] == pytest.approx(start + st["duration"], abs=1e-9)  # constant: the last on the stage's end
        start = float(tk[-1]) + gap_s
    # Prompts: system + question tokens, output_len tokens out.
    assert np.all(inp == sp["system_prompt_len"] + sp["question_len"])
    assert np.all(out == sp["output_len"])
    n_prompts = sp["num_groups"] * sp["num_prompts_per_group"]
    assert len(set(blocks)) == n_prompts
    # Each stage cycles through the shuffled prompts from the start (inference-perf's request numbers).
    for k in range(len(load["stages"])):
        bk = [b for b, s in zip(blocks, stage) if s == k]
        assert all(bk[i] == bk[i + n_prompts] for i in range(len(bk) - n_prompts))
        assert len(set(bk[:n_prompts])) == n_prompts
    if len(load["stages"]) > 1:  # the same shuffled order in every stage
        assert [b for b, s in zip(blocks, stage) if s == 0][:n_prompts] == [b for b, s in zip(blocks, stage) if s == 1][:n_prompts]
    # The system prompt's whole blocks are shared within a group and nowhere else.
    sys_blocks = sp["system_prompt_len"] // bt
    heads = {b[:sys_blocks] for b in blocks}
    assert len(heads) == sp["num_groups"]
    for head in heads:
        members = {b for b in blocks if b[:sys_blocks] == head}
        assert len(members) == sp["num_prompts_per_group"]
        assert len({b[sys_blocks] for b in members}) == sp["num_prompts_per_group"]  # questions differ


@pytest.mark.skipif(not RUNS, reason="shared/calibration/raw/blis-training is not beside the checkout")
@pytest.mark.parametrize("run", RUNS)
def test_blis_run_as_a_scenario(run: str) -> None:
    """scenarios/blis/<file> says what the run's config.yaml and exp-config.yaml say, and
    generates exactly that traffic."""
    cfg = yaml.safe_load((BLIS / run / "results" / "config.yaml").read_text())
    exp = yaml.safe_load((BLIS / run / "exp-config.yaml").read_text())
    rs = load_scenario(_scenario_of(run))
    sc = rs.scenario
    (dep,) = sc.deployments.values()
    (wname, w), = sc.workloads.items()
    assert dep.model == MODEL_IDS[cfg["server"]["model_name"]]
    assert dep.tensor_parallel == exp["tensor_parallelism"]
    assert sc.pools[dep.pool].accelerator == "h100-sxm" and sc.pools[dep.pool].count == exp["tensor_parallelism"]
    eng = dep.engine
    assert (eng.kind, eng.max_num_seqs, eng.max_num_batched_tokens, eng.max_model_len) == \
        ("vllm", exp["max_num_seqs"], exp["max_num_batched_tokens"], exp["max_model_len"])
    assert eng.prefix_caching and eng.gpu_memory_utilization == 0.9 and eng.kv_cache_dtype == "auto"
    assert isinstance(w.arrival, S.MultiStage)
    assert w.arrival.process == "inference_perf_" + cfg["load"]["type"]
    assert [(s.rate_per_s, s.duration_s) for s in w.arrival.stages] == \
        [(s["rate"], s["duration"]) for s in cfg["load"]["stages"]]
    sp = cfg["data"]["shared_prefix"]
    assert cfg["data"]["type"] == "shared_prefix" and "enable_multi_turn_chat" not in sp
    assert w.shared_prefix is not None and not w.shared_prefix.multi_turn
    assert {k: getattr(w.shared_prefix, k) for k in ("num_groups", "num_prompts_per_group", "system_prompt_len",
                                                     "question_len")} == {k: v for k, v in sp.items() if k != "output_len"}
    assert w.output_tokens == S.FixedLength(kind="fixed", value=sp["output_len"])
    assert cfg["server"]["ignore_eos"] and cfg["api"]["type"] == "completion"
    assert sc.horizon_s == w.arrival.nominal_end_s and sc.drain
    _check_blis_traffic(Simulation(rs), wname, cfg, w.arrival.gap_s)


def _predict_args(cfg: dict[str, Any], exp: dict[str, Any], **kw: Any) -> PredictArgs:
    sp, load = cfg["data"]["shared_prefix"], cfg["load"]
    stages = ",".join(f"{s['rate']:g}x{s['duration']:g}" for s in load["stages"])
    precision = "bf16" if "mixtral" in cfg["server"]["model_name"].lower() else "fp16"
    return PredictArgs(
        model=MODEL_IDS[cfg["server"]["model_name"]], gpu="h100-sxm", tp=exp["tensor_parallelism"], precision=precision,
        isl=sp["system_prompt_len"] + sp["question_len"], osl=sp["output_len"], stages=stages,
        arrival=f"inference-perf-{load['type']}", stage_gap_s=2.0 if len(load["stages"]) > 1 else None,
        system_prompt_len=sp["system_prompt_len"], num_groups=sp["num_groups"], prompts_per_group=sp["num_prompts_per_group"],
        max_num_seqs=exp["max_num_seqs"], max_num_batched_tokens=exp["max_num_batched_tokens"],
        max_model_len=exp["max_model_len"], engine_version="0.15.1", **kw)


@pytest.mark.skipif(not RUNS, reason="shared/calibration/raw/blis-training is not beside the checkout")
@pytest.mark.parametrize("run", RUNS)
def test_blis_run_as_predict_flags(run: str) -> None:
    """The same run as `stacksim predict` flags builds the scenario file's deployment and load."""
    cfg = yaml.safe_load((BLIS / run / "results" / "config.yaml").read_text())
    exp = yaml.safe_load((BLIS / run / "exp-config.yaml").read_text())
    a = _check(_predict_args(cfg, exp))
    rs = load_scenario_text(_scenario_yaml(a), None)
    ref = load_scenario(_scenario_of(run)).scenario
    (dep,), (rdep,) = rs.scenario.deployments.values(), ref.deployments.values()
    (w,), (rw,) = rs.scenario.workloads.values(), ref.workloads.values()
    for field in ("model", "tensor_parallel", "precision"):
        assert getattr(dep, field) == getattr(rdep, field)
    assert dep.engine.model_dump() == rdep.engine.model_dump()
    assert (w.arrival, w.shared_prefix, w.input_tokens, w.output_tokens, w.max_requests) == \
        (rw.arrival, rw.shared_prefix, rw.input_tokens, rw.output_tokens, None)
    sim = Simulation(rs)
    _check_blis_traffic(sim, "load", cfg, w.arrival.gap_s)


def test_blis_load_runs_end_to_end_through_predict() -> None:
    """A blis-shaped load, its stages scaled down to seconds, through the CLI: every request of
    every stage is sent and answered, and the prefix cache hits on the shared prompts."""
    res = runner.invoke(app, ["predict", "--model", "llama-2-7b", "--gpu", "h100-sxm", "--precision", "fp16",
                              "--stages", "5x20,10x20", "--arrival", "inference-perf-constant", "--stage-gap", "2",
                              "--isl", "566", "--osl", "64", "--system-prompt-len", "100", "--max-num-seqs", "128",
                              "--max-num-batched-tokens", "2048", "--max-model-len", "4096", "--json"])
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["requests"] == d["completed"] == 5 * 20 + 10 * 20
    assert d["load"].startswith("stages=5x20,10x20 inference-perf-constant")
    assert d["ttft_ms"]["p50"] < 100


# --------------------------------------------------------------------------- stages


def _stages(process: str, stages: list[tuple[float, float]], **kw: Any) -> S.MultiStage:
    return S.MultiStage.model_validate({"kind": "multi_stage", "process": process,
                                            "stages": [{"rate_per_s": r, "duration_s": d} for r, d in stages], **kw})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inference_perf_constant_fills_each_stage_exactly(seed: int) -> None:
    """int(rate x duration) requests, gaps an exponential draw rescaled to the stage: the last
    lands on the stage's end, and the next stage starts gap_s later."""
    spec = _stages("inference_perf_constant", [(5, 60), (2.5, 30), (0.7, 10)], gap_s=2.0)
    t, k = stage_arrivals(spec, np.random.default_rng(seed), spec.nominal_end_s, None)
    assert np.bincount(k).tolist() == [300, 75, 7]
    ends = [t[k == i][-1] for i in range(3)]
    assert ends == pytest.approx([60.0, 92.0, 104.0], abs=1e-9)
    assert np.all(np.diff(t) > 0)
    gaps = np.diff(t[k == 0])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.25)  # exponential, not even spacing


def test_inference_perf_poisson_counts_per_second() -> None:
    """inference-perf's poisson: a Poisson(rate) count each second, spread within the second as
    constant does (the last on the second's end); exactly int(rate x duration) requests."""
    spec = _stages("inference_perf_poisson", [(40, 500)])
    t, _ = stage_arrivals(spec, np.random.default_rng(3), 600, None)
    assert len(t) == 20000
    sec = np.ceil(t).astype(int) - 1
    counts = np.bincount(sec)[:-1]  # the last second may be cut short
    assert counts.mean() == pytest.approx(40, rel=0.03)
    assert counts.var() == pytest.approx(40, rel=0.15)  # Poisson: variance = mean
    busy_ends = t[np.r_[sec[1:] != sec[:-1], False]]
    assert np.allclose(busy_ends, np.round(busy_ends))


def test_other_stage_processes() -> None:
    det = _stages("deterministic", [(4, 10), (2, 5)])
    t, k = stage_arrivals(det, np.random.default_rng(0), 15, None)
    assert np.allclose(t[k == 0], np.arange(1, 41) / 4) and np.allclose(t[k == 1], 10 + np.arange(1, 11) / 2)
    rates = []
    for seed in range(5):
        t, k = stage_arrivals(_stages("poisson", [(20, 100), (50, 100)]), np.random.default_rng(seed), 200, None)
        rates.append(np.bincount(k) / 100.0)
        assert t[k == 0].max() < 100 <= t[k == 1].min()
    assert np.mean(rates, axis=0) == pytest.approx([20, 50], rel=0.03)
    t, _ = stage_arrivals(_stages("gamma", [(10, 2000)], cv=3.0), np.random.default_rng(1), 2000, None)
    g = np.diff(t)
    assert g.std() / g.mean() == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize(
    ("arrival", "fragment"),
    [
        ({"process": "gamma", "stages": [{"rate_per_s": 1, "duration_s": 5}]}, "process gamma needs cv"),
        ({"process": "poisson", "cv": 2.0, "stages": [{"rate_per_s": 1, "duration_s": 5}]}, "cv applies to process: gamma"),
        ({"process": "inference_perf_constant", "stages": [{"rate_per_s": 0.1, "duration_s": 5}]}, "under one request"),
        ({"process": "poisson", "stages": []}, "stages"),
        ({"process": "constant", "stages": [{"rate_per_s": 1, "duration_s": 5}]}, "inference_perf_constant"),
        ({"process": "poisson", "stages": [{"rate_per_s": 0, "duration_s": 5}]}, "rate_per_s"),
        ({"process": "poisson", "stages": [{"rate_per_s": 1, "duration_s": 50}]}, "raise horizon_s to at least 50"),
    ],
)
def test_bad_stages_name_the_field(arrival: dict[str, Any], fragment: str) -> None:
    text = TINY.format(arrival=json.dumps({"kind": "multi_stage", **arrival}), extra="input_tokens: {kind: fixed, value: 8}",
                       engine="{}")
    with pytest.raises(ScenarioError) as exc:
        Simulation(load_scenario_text(text, "t.yaml"))
    msg = str(exc.value)
    assert fragment in msg and "workloads.w" in msg


TINY = """
horizon_s: 30
drain: true
pools: {{g: {{accelerator: h100-sxm, count: 1}}}}
deployments: {{d: {{model: llama-3.1-8b, pool: g, engine: {engine}}}}}
workloads:
  w:
    target: d
    arrival: {arrival}
    output_tokens: {{kind: fixed, value: 16}}
    {extra}
"""


# --------------------------------------------------------------------------- shared prefix


def _sp(**kw: Any) -> S.SharedPrefix:
    return S.SharedPrefix.model_validate({"num_groups": 3, "num_prompts_per_group": 2, "system_prompt_len": 40,
                                         "question_len": 30, **kw})


def test_shared_prefix_fills_and_checks_input_tokens() -> None:
    arr = {"kind": "deterministic", "rate_per_s": 1.0}
    sp = {"system_prompt_len": 40, "question_len": 30}
    w = S.Workload.model_validate({"target": "d", "arrival": arr, "output_tokens": {"kind": "fixed", "value": 5},
                                   "shared_prefix": sp})
    assert w.input_tokens == S.FixedLength(kind="fixed", value=70)
    S.Workload.model_validate(w.model_dump(mode="json"))  # the resolved form loads again
    bad = [({"input_tokens": {"kind": "fixed", "value": 71}}, "omit input_tokens or make it {kind: fixed, value: 70}"),
           ({"input_tokens": {"kind": "uniform", "low": 1, "high": 9}}, "got uniform"),
           ({"arrival": {"kind": "closed_loop", "clients": 2}}, "open-loop arrival"),
           ({"prompts": {"unique": 4}}, "give one")]
    for extra, fragment in bad:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            S.Workload.model_validate({"target": "d", "arrival": arr, "output_tokens": {"kind": "fixed", "value": 5},
                                       "shared_prefix": sp, **extra})
    with pytest.raises(ValueError, match="input_tokens is required"):
        S.Workload.model_validate({"target": "d", "arrival": arr, "output_tokens": {"kind": "fixed", "value": 5}})


def test_prompt_plan_cycles_and_restarts_each_stage() -> None:
    stage = np.array([0] * 8 + [1] * 5)
    plan = plan_prompts(_sp(), "w", stage_positions(stage, 13), np.full(13, 9), np.random.default_rng(0))
    p = plan.prompt.tolist()
    assert sorted(p[:6]) == list(range(6)) and p[6:8] == p[:2] and p[8:13] == p[:5]
    assert np.all(plan.input_tokens == 70) and np.all(plan.turn == 0)


def test_multi_turn_prompts_grow_by_history() -> None:
    """Turn r of a session sends system + (r + 1) questions + the r earlier answers, and its
    blocks start with the previous turn's."""
    n = 18
    out = np.arange(10, 10 + n)
    plan = plan_prompts(_sp(multi_turn=True), "w", np.arange(n), out, np.random.default_rng(1))
    for s in range(6):
        mine = np.flatnonzero(plan.prompt == s)
        assert plan.turn[mine].tolist() == [0, 1, 2]
        hist = np.cumsum(np.r_[0, out[mine][:-1]])
        assert plan.input_tokens[mine].tolist() == (40 + (np.arange(3) + 1) * 30 + hist).tolist()
        b = [prompt_blocks(plan, int(i), 16) for i in mine]
        for r in range(2):
            full = int(plan.input_tokens[mine[r]]) // 16
            assert np.array_equal(b[r][:full], b[r + 1][:full])
            assert b[r + 1][full - 1] == b[r][full - 1]
    first = [prompt_blocks(plan, int(i), 16)[:2] for i in range(n)]  # 40 system tokens: 2 whole blocks
    assert len({tuple(f) for f in first}) == 3


def test_prefix_cache_hits_on_shared_system_prompts() -> None:
    """The first request of each prompt hits on its group's system prompt (whole 16-token
    blocks); a prompt sent again hits on all of it but the last partial block; prefix caching
    off, nothing."""
    extra = "shared_prefix: {num_groups: 2, num_prompts_per_group: 3, system_prompt_len: 100, question_len: 60}"
    arrival = '{kind: deterministic, rate_per_s: 1.0}'
    df = run_scenario(load_scenario_text(TINY.format(arrival=arrival, extra=extra, engine="{}"), "t.yaml")).requests
    hits = df.sort_values("arrival_s")["cached_tokens"].to_numpy()
    assert set(hits[6:]) == {144}  # a prompt sent before: its 160 tokens but the last, in whole blocks
    assert hits[0] == 0 and set(hits[:6]) == {0, 96}  # 100 system tokens: 6 whole blocks
    assert (hits[:6] == 96).sum() == 4  # two groups of three prompts: four first sends share a system prompt
    off = run_scenario(load_scenario_text(TINY.format(arrival=arrival, extra=extra, engine="{prefix_caching: false}"),
                                          "t.yaml")).requests
    assert (off["cached_tokens"] == 0).all()


def test_same_seed_same_prompts_and_workloads_independent() -> None:
    extra = "shared_prefix: {num_groups: 2, num_prompts_per_group: 3, system_prompt_len: 100, question_len: 60}"
    arrival = json.dumps({"kind": "multi_stage", "process": "inference_perf_constant",
                          "stages": [{"rate_per_s": 1, "duration_s": 10}, {"rate_per_s": 2, "duration_s": 10}]})
    text = TINY.format(arrival=arrival, extra=extra, engine="{}")
    a, b = Simulation(load_scenario_text(text, "t.yaml")), Simulation(load_scenario_text(text, "t.yaml"))
    assert _traffic(a)[0].tolist() == _traffic(b)[0].tolist() and _traffic(a)[3] == _traffic(b)[3]
    c = Simulation(load_scenario_text(text.replace("  w:", "  other:"), "t.yaml"))
    assert set(_traffic(c)[3]).isdisjoint(_traffic(a)[3])  # another workload's prompts are its own


@pytest.mark.parametrize("target", ["g", "pd"])
def test_shared_prefix_blocks_reach_disaggregated_and_gateway_targets(target: str) -> None:
    """Straight to a prefill/decode group ("g") or through the gateway ("pd"), the prefill
    replica sees the prompts' blocks and hits on them."""
    from .test_gateway_targets import disagg, run

    w = {"target": target, "arrival": {"kind": "deterministic", "rate_per_s": 2.0}, "output_tokens": {"kind": "fixed", "value": 20},
         "shared_prefix": {"num_groups": 2, "num_prompts_per_group": 3, "system_prompt_len": 256, "question_len": 100}}
    _, res = run(disagg(workloads={"w": w}))
    pc = res.summary["deployments"]["pre"]["prefix_cache"]
    assert pc["requests_with_blocks"] == 39 and pc["hit_rate"] > 0.85


# --------------------------------------------------------------------------- predict flags


def _built(**kw: Any) -> S.Scenario:
    a = _check(PredictArgs(model="llama-3.1-8b", gpu="h100-sxm", **kw))
    return load_scenario_text(_scenario_yaml(a), None).scenario


def test_engine_flags_reach_the_scenario() -> None:
    sc = _built(qps=1.0, max_num_seqs=64, max_num_batched_tokens=4096, gpu_memory_utilization=0.8,
                kv_offloading_size_gib=4.0, max_model_len=3000, kv_precision="fp8")
    e = sc.deployments["model"].engine
    assert (e.max_num_seqs, e.max_num_batched_tokens, e.gpu_memory_utilization, e.max_model_len, e.kv_cache_dtype) == \
        (64, 4096, 0.8, 3000, "fp8")
    assert e.kv_offload is not None and e.kv_offload.cpu_gib == 4.0 and e.prefix_caching
    assert not _built(qps=1.0, prefix_caching=False).deployments["model"].engine.prefix_caching
    d = _built(qps=1.0).deployments["model"].engine  # nothing given: vLLM's defaults
    assert (d.max_num_seqs, d.max_num_batched_tokens, d.gpu_memory_utilization, d.max_model_len) == (256, 8192, 0.9, 2000)
    s = _built(qps=1.0, engine="sglang").deployments["model"].engine
    assert s.max_num_batched_tokens is None and s.gpu_memory_utilization is None  # SGLang's own rules apply


def test_arrival_and_length_flags_reach_the_scenario() -> None:
    w = _built(qps=2.0, arrival="constant").workloads["load"]
    assert w.arrival == S.Deterministic(kind="deterministic", rate_per_s=2.0)
    w = _built(qps=2.0, arrival="gamma", cv=2.5).workloads["load"]
    assert w.arrival == S.GammaArrivals(kind="gamma", rate_per_s=2.0, cv=2.5)
    w = _built(stages="5x600, 10x600", arrival="inference-perf-poisson", requests=None).workloads["load"]
    assert isinstance(w.arrival, S.MultiStage) and w.arrival.process == "inference_perf_poisson"
    assert [(s.rate_per_s, s.duration_s) for s in w.arrival.stages] == [(5, 600), (10, 600)] and w.max_requests is None
    w = _built(qps=1.0, isl=800, isl_dist="lognormal:sigma=0.5,max=4000", osl_dist="uniform:10-90").workloads["load"]
    assert w.input_tokens == S.LognormalLength(kind="lognormal", median=800, sigma=0.5, max=4000)
    assert w.output_tokens == S.UniformLength(kind="uniform", low=10, high=90)
    w = _built(qps=1.0, osl=300, osl_dist="exponential").workloads["load"]
    assert w.output_tokens == S.ExponentialLength(kind="exponential", mean=300)
    trace = REPO / "tests" / "data"
    csvs = sorted(trace.glob("*.csv"))
    if csvs:
        w = _built(qps=1.0, isl_dist=f"empirical:{csvs[0]}").workloads["load"]
        assert isinstance(w.input_tokens, S.EmpiricalLength)
    w = _built(qps=1.0, isl=700, system_prompt_len=200, num_groups=4, prompts_per_group=8, multi_turn=True).workloads["load"]
    assert w.shared_prefix == S.SharedPrefix(num_groups=4, num_prompts_per_group=8, system_prompt_len=200,
                                             question_len=500, multi_turn=True)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--qps", "1", "--max-num-seqs", "0"], "--max-num-seqs must be >= 1"),
        (["--qps", "1", "--max-num-batched-tokens", "8"], "--max-num-batched-tokens must be >= 16"),
        (["--qps", "1", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization must be in (0, 1]"),
        (["--qps", "1", "--kv-offloading-size", "-4"], "--kv-offloading-size must be a positive"),
        (["--qps", "1", "--kv-offloading-size", "4", "--no-prefix-caching"], "drop --no-prefix-caching"),
        (["--qps", "1", "--max-model-len", "4"], "--max-model-len must be >= 16"),
        (["--qps", "1", "--arrival", "bursty"], "--arrival bursty: unknown"),
        (["--qps", "1", "--arrival", "gamma"], "--arrival gamma needs --cv"),
        (["--qps", "1", "--cv", "2"], "--cv applies to --arrival gamma"),
        (["--qps", "1", "--arrival", "gamma", "--cv", "0"], "--cv must be a positive"),
        (["--offline", "--arrival", "constant"], "--arrival applies to --qps and --stages"),
        (["--qps", "1", "--arrival", "inference-perf-constant"], "it needs --stages"),
        (["--stages", "5x600,10"], "--stages: '10' is not RATExSECONDS"),
        (["--stages", "5x-1"], "--stages"),
        (["--stages", "5x60", "--qps", "1"], "exactly one load pattern"),
        (["--stages", "5x60", "--requests", "10"], "drop --requests"),
        (["--stages", "0.1x5", "--arrival", "inference-perf-constant"], "under one request"),
        (["--qps", "1", "--stage-gap", "2"], "--stage-gap needs --stages"),
        (["--stages", "5x60", "--stage-gap", "-1"], "--stage-gap must be >= 0"),
        (["--qps", "1", "--isl-dist", "normal"], "--isl-dist: unknown distribution 'normal'"),
        (["--qps", "1", "--isl-dist", "lognormal"], "--isl-dist: lognormal needs sigma"),
        (["--qps", "1", "--isl-dist", "lognormal:sd=1"], "--isl-dist: lognormal takes sigma="),
        (["--qps", "1", "--osl-dist", "uniform:9-3"], "--osl-dist: uniform needs its bounds"),
        (["--qps", "1", "--osl-dist", "uniform:3-9", "--osl", "5"], "drop --osl"),
        (["--qps", "1", "--isl-dist", "empirical:/no/such.csv"], "--isl-dist: empirical needs a trace file"),
        (["--qps", "1", "--isl-dist", "fixed:3"], "--isl-dist: fixed takes no options"),
        (["--qps", "1", "--system-prompt-len", "1000"], "--system-prompt-len must be under --isl (1000)"),
        (["--qps", "1", "--system-prompt-len", "-1"], "--system-prompt-len must be >= 0"),
        (["--qps", "1", "--num-groups", "4"], "--num-groups shapes shared-prefix prompts: it needs --system-prompt-len"),
        (["--qps", "1", "--multi-turn"], "--multi-turn shapes shared-prefix prompts"),
        (["--qps", "1", "--system-prompt-len", "10", "--prompts-per-group", "0"], "--prompts-per-group must be >= 1"),
        (["--qps", "1", "--system-prompt-len", "10", "--isl-dist", "lognormal:sigma=1"], "drop --isl-dist"),
        (["--concurrency", "4", "--system-prompt-len", "10"], "needs an open-loop load"),
        (["--qps", "1", "--max-model-len", "200000"], "--max-model-len"),
    ],
)
def test_bad_predict_flags_exit_2_naming_the_flag(flags: list[str], fragment: str) -> None:
    res = runner.invoke(app, ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--requests", "20", *flags]
                        if "--stages" not in flags else ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", *flags])
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert fragment in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_predict_with_distributions_and_gamma_runs() -> None:
    res = runner.invoke(app, ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--qps", "4", "--arrival", "gamma",
                              "--cv", "2", "--isl", "300", "--isl-dist", "lognormal:sigma=0.6,max=2000",
                              "--osl-dist", "uniform:20-60", "--requests", "120", "--json"])
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["completed"] == 120 and d["isl"] == 300 and d["osl"] is None
    assert d["load"] == "qps=4 gamma cv=2"


def test_stacksim_error_is_what_check_raises() -> None:
    with pytest.raises(StackSimError, match="--stages"):
        _check(PredictArgs(model="m", gpu="g", stages="fast"))
