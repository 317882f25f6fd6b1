"""Hostile and huge inputs (#23): a run is sized before anything is generated and refused past its
limits (one message, exit 2, by validate as by run); sweeps, optimize, mix, compare and predict
count their runs the same way; a watched run draws nothing into its results, and Ctrl-C stops it
cleanly with a partial result (exit 130).

No test here builds the huge run: each would allocate gigabytes, and the point is that the
estimate refuses it first (a refused run never reaches Simulation, which the tests check).
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from stacksim import load_scenario_text, run_scenario
from stacksim.cli import app
from stacksim.engine import simulation as simulation_mod
from stacksim.engine.simulation import Tick
from stacksim.errors import ScenarioError
from stacksim.scenario.schema_limits import DEFAULT_MAX_REQUESTS, DEFAULT_MAX_RUNS
from stacksim.scenario.size import run_size, sci
from stacksim.workload import arrivals

runner = CliRunner()

SMALL: dict[str, Any] = {
    "name": "limits-test",
    "seed": 7,
    "horizon_s": 20,
    "pools": {"h100": {"accelerator": "h100-sxm", "count": 1}},
    "deployments": {"chat": {"model": "llama-3.2-3b", "pool": "h100", "replicas": 1, "engine": {"max_model_len": 8192}}},
    "workloads": {
        "chat": {
            "target": "chat",
            "arrival": {"kind": "poisson", "rate_per_s": 5},
            "input_tokens": {"kind": "lognormal", "median": 500, "sigma": 0.7, "max": 4000},
            "output_tokens": {"kind": "fixed", "value": 50},
        }
    },
}


def scenario(**changes: Any) -> dict[str, Any]:
    sc = copy.deepcopy(SMALL)
    sc.update(changes)
    return sc


def with_arrival(arrival: dict[str, Any], **workload: Any) -> dict[str, Any]:
    sc = scenario()
    sc["workloads"]["chat"]["arrival"] = arrival
    sc["workloads"]["chat"].update(workload)
    return sc


def write(tmp: Path, data: dict[str, Any], name: str = "s.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def load(data: dict[str, Any]):  # type: ignore[no-untyped-def]
    return load_scenario_text(yaml.safe_dump(data, sort_keys=False), "s.yaml")


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything builds a run: a refused scenario must never reach the engine."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("an oversized run reached Simulation()")

    monkeypatch.setattr(simulation_mod.Simulation, "__init__", refuse)


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as e:
        load(data)
    assert len(e.value.problems) == 1, "one clear message"
    return str(e.value)


# --------------------------------------------------------------------------- run-size limits


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("change", [{"horizon_s": 1e9}, {"rate": 1e7}, {"rate": 2**63}])
def test_a_huge_run_is_refused_with_its_estimate(tmp_path: Path, command: str, change: dict[str, Any],
                                                 no_simulation: None) -> None:
    sc = scenario(horizon_s=change.get("horizon_s", 20))
    if "rate" in change:
        sc["workloads"]["chat"]["arrival"]["rate_per_s"] = change["rate"]
    path = write(tmp_path, sc)
    res = runner.invoke(app, [command, str(path)] + (["--out", str(tmp_path / "o")] if command == "run" else []))
    assert res.exit_code == 2, res.output
    out = res.output.replace("\n", " ")
    assert out.count("error:") == 1 and "Traceback" not in out
    if change.get("rate") == 2**63:  # refused here, or by a bound on rate_per_s itself: either way at that field
        assert "'workloads.chat.arrival.rate_per_s'" in out
        return
    expected = 5 * 1e9 if "horizon_s" in change else 1e7 * 20
    assert f"this run would simulate {sci(expected)} requests" in out
    assert "field 'workloads.chat.arrival.rate_per_s'" in out and "line 20" in out
    assert f"the limit is {DEFAULT_MAX_REQUESTS:,}" in out and "raise `limits.max_requests`" in out
    assert "Traceback" not in out


def test_limits_section_raises_and_lowers_the_limit() -> None:
    big = scenario(horizon_s=2e7, limits={"max_requests": 200_000_000})  # 1e8 requests: allowed by the file
    assert load(big).size.requests == pytest.approx(1e8)
    msg = refusal(scenario(limits={"max_requests": 50}))  # 5/s x 20 s = 100 > 50
    assert "this run would simulate 100 requests" in msg and "the limit is 50" in msg
    with pytest.raises(ScenarioError, match="greater than or equal to 1"):
        load(scenario(limits={"max_requests": 0}))
    with pytest.raises(ScenarioError, match="unknown key 'max_request'"):
        load(scenario(limits={"max_request": 5}))


def test_max_requests_bounds_a_renewal_process_but_not_multi_stage() -> None:
    """A renewal process stops drawing at max_requests; multi_stage builds every stage first."""
    capped = load(with_arrival({"kind": "poisson", "rate_per_s": 1e12}, max_requests=1000))
    assert capped.size.requests == 1000
    stages = {"kind": "multi_stage", "process": "inference_perf_constant",
              "stages": [{"rate_per_s": 1e6, "duration_s": 10}, {"rate_per_s": 2e6, "duration_s": 5}]}
    msg = refusal(scenario(horizon_s=20) | {"workloads": {"chat": {**SMALL["workloads"]["chat"], "arrival": stages,
                                                                   "max_requests": 10}}})
    assert "this run would simulate 2.0e7 requests" in msg and "field 'workloads.chat.arrival.stages'" in msg


def test_deterministic_arrivals_never_build_past_max_requests() -> None:
    """Same times as building them all and cutting, without building 10^12 of them."""
    spec = load(with_arrival({"kind": "deterministic", "rate_per_s": 7.0})).scenario.workloads["chat"].arrival
    rng = np.random.default_rng(0)
    for limit in (None, 1, 50, 139, 140, 141, 10_000):
        full = 1 / 7.0 * np.arange(1, int(np.ceil(20 * 7.0)) + 2)
        full = full[full < 20][:limit]
        np.testing.assert_array_equal(arrivals.deterministic(spec, rng, 20.0, limit), full)
    huge = spec.model_copy(update={"rate_per_s": 1e12})
    assert len(arrivals.deterministic(huge, rng, 1e9, 5)) == 5


def test_closed_loop_and_offline_have_their_own_bounds() -> None:
    think = load(with_arrival({"kind": "closed_loop", "clients": 10, "think_time_s": 2.0}))
    assert think.size.requests == 10 * (1 + 20 / 2.0)  # a client sends at most one request per think time
    busy = load(with_arrival({"kind": "closed_loop", "clients": 10}))
    assert busy.size.requests == 10  # the first requests; the rest depend on latency
    assert "clients' first requests" in busy.size.parts[0].how
    msg = refusal(with_arrival({"kind": "closed_loop", "clients": 10**9}))
    assert "field 'workloads.chat.arrival.clients'" in msg
    msg = refusal(with_arrival({"kind": "offline"}, max_requests=10**9))
    assert "this run would simulate 1.0e9 requests (max_requests 1,000,000,000 at time zero)" in msg
    assert "field 'workloads.chat.max_requests'" in msg


def test_a_trace_counts_its_rows_inside_the_horizon(tmp_path: Path) -> None:
    rows = [{"timestamp": 1000 * i, "input_length": 100 + i, "output_length": 10, "hash_ids": [i]} for i in range(50)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sc = with_arrival({"kind": "trace", "path": "t.jsonl"})
    sc["workloads"]["chat"]["input_tokens"] = {"kind": "trace"}
    sc["workloads"]["chat"]["output_tokens"] = {"kind": "trace"}
    rs = load_scenario_text(yaml.safe_dump(sc), str(tmp_path / "s.yaml"))
    assert rs.size.requests == 20  # one a second for 50 s, 20 of them inside horizon_s 20
    assert rs.size.tokens == pytest.approx(20 * (np.mean([100 + i for i in range(50)]) + 10))


def test_tokens_are_limited_too() -> None:
    sc = scenario(limits={"max_tokens": 10_000})
    msg = refusal(sc)  # 100 requests x (~640 + 50) tokens
    assert "prompt and answer tokens" in msg and "raise `limits.max_tokens`" in msg
    # a prompt longer than max_model_len is rejected on arrival: it costs no tokens
    long = with_arrival({"kind": "poisson", "rate_per_s": 5})
    long["workloads"]["chat"]["input_tokens"] = {"kind": "fixed", "value": 10**6}
    assert load(long).size.tokens == 100 * 8192


def test_agent_fleets_count_tasks_times_their_calls() -> None:
    fixed = {"kind": "fixed", "value": 10}
    sc = scenario()
    sc["tools"] = {"search": {"latency": {"median_ms": 100}, "result_tokens": fixed}}
    sc["agents"] = {"a": {"model": "chat", "system_prompt_tokens": 100, "steps": [
        {"kind": "llm", "input_tokens": fixed, "output_tokens": fixed},
        {"kind": "loop", "count": {"kind": "fixed", "value": 3}, "steps": [
            {"kind": "tool", "tool": "search"},
            {"kind": "branch", "p": 0.5, "steps": [{"kind": "llm", "input_tokens": fixed, "output_tokens": fixed}]}]}]}}
    sc["fleets"] = {"f": {"agent": "a", "arrival": {"kind": "poisson", "rate_per_s": 0.5}}}
    size = run_size(load(sc))
    fleet = next(p for p in size.parts if p.path[0] == "fleets")
    assert fleet.requests == pytest.approx(0.5 * 20 * (1 + 3 * (1 + 0.5)))  # 10 tasks x 5.5 calls
    assert fleet.tokens == pytest.approx(0.5 * 20 * (1 + 3 * 0.5) * 120)
    sc["fleets"]["f"]["arrival"]["rate_per_s"] = 1e6
    msg = refusal(sc)
    assert "1e6 tasks/s x horizon_s 20 = 2.0e7 tasks x 5.5 calls a task" in msg
    assert "field 'fleets.f.arrival.rate_per_s'" in msg


def test_the_estimate_is_close_to_what_a_run_makes() -> None:
    rs = load(scenario(horizon_s=60))
    res = run_scenario(rs)
    assert abs(res.summary["requests"]["arrived"] - rs.size.requests) < 4 * np.sqrt(rs.size.requests)  # Poisson


def test_bundled_scenarios_are_within_the_default_limits() -> None:
    from stacksim import load_scenario

    root = Path(__file__).resolve().parents[1] / "scenarios"
    for p in sorted(root.glob("*.yaml")):
        rs = load_scenario(p)
        assert rs.size is not None and 0 < rs.size.requests < DEFAULT_MAX_REQUESTS / 100, p.name


# --------------------------------------------------------------------------- predict, compare, sweeps


@pytest.mark.parametrize("args,flag", [
    (["--offline", "--requests", "1000000000"], "--requests"),
    (["--qps", "5", "--requests", "1000000000"], "--requests"),
    (["--stages", "1000000x1000"], "--stages"),
])
def test_predict_is_bounded_the_same_way(args: list[str], flag: str, no_simulation: None) -> None:
    res = runner.invoke(app, ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", *args])
    assert res.exit_code == 2, res.output
    assert res.output.count("error:") == 1 and flag in res.output and f"{DEFAULT_MAX_REQUESTS:,}" in res.output


def test_compare_refuses_a_billion_seeds(tmp_path: Path, no_simulation: None) -> None:
    a, b = write(tmp_path, scenario(), "a.yaml"), write(tmp_path, scenario(), "b.yaml")
    res = runner.invoke(app, ["compare", str(a), str(b), "--seeds", "1000000000"])
    assert res.exit_code == 2 and "2,000,000,000 runs" in res.output and f"{DEFAULT_MAX_RUNS:,}" in res.output


def _base(tmp: Path) -> None:
    write(tmp, scenario(), "base.yaml")


def test_a_billion_point_sweep_is_refused_before_it_is_built(tmp_path: Path) -> None:
    _base(tmp_path)
    (tmp_path / "sw.yaml").write_text("""
base: base.yaml
seeds: 2
parameters:
  workloads.chat.arrival.rate_per_s: {range: [1, 10], steps: 1000}
  deployments.chat.engine.max_num_seqs: {range: [1, 256], steps: 1000, integer: true}
  deployments.chat.engine.block_size: {range: [1, 64], steps: 1000, integer: true}
""")
    res = runner.invoke(app, ["sweep", str(tmp_path / "sw.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    out = res.output.replace("\n", " ")
    assert "this would run 2.0e9 simulations (a grid of 1,000 x 1,000 x 1,000 points x 2 seeds)" in out
    assert "raise `limits.max_runs`" in out and "line 4" in out
    assert not (tmp_path / "o").exists()
    (tmp_path / "n.yaml").write_text("base: base.yaml\ndesign: {kind: random, n: 1000000000000}\n"
                                     "parameters: {workloads.chat.arrival.rate_per_s: [1, 2]}\n")
    res = runner.invoke(app, ["sweep", str(tmp_path / "n.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "design.n 1,000,000,000,000 points x 1 seed" in res.output.replace("\n", " ")
    (tmp_path / "ok.yaml").write_text("base: base.yaml\nseeds: 3\nlimits: {max_runs: 6}\n"
                                      "parameters: {workloads.chat.arrival.rate_per_s: [1, 2]}\n")
    from stacksim.sweep.spec import load_sweep

    assert len(load_sweep(tmp_path / "ok.yaml").runs()) == 6
    (tmp_path / "ok.yaml").write_text((tmp_path / "ok.yaml").read_text().replace("max_runs: 6", "max_runs: 5"))
    with pytest.raises(ScenarioError, match="this would run 6 simulations"):
        load_sweep(tmp_path / "ok.yaml")


def test_optimize_and_mix_count_their_runs(tmp_path: Path) -> None:
    _base(tmp_path)
    knobs = "\n".join(f"  deployments.chat.engine.{k}: [{', '.join(str(16 * (i + 1)) for i in range(100))}]"
                      for k in ("max_num_seqs", "max_num_batched_tokens", "block_size"))
    (tmp_path / "opt.yaml").write_text(f"base: base.yaml\nconstraints: {{ttft_p99_ms: 500}}\nknobs:\n{knobs}\n")
    res = runner.invoke(app, ["optimize", str(tmp_path / "opt.yaml")])
    assert res.exit_code == 2, res.output
    assert "this would run 1.0e6 simulations (100 x 100 x 100 candidates x 1 seed)" in res.output.replace("\n", " ")
    edges = list(range(1, 2001))
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "deployment": "chat", "rates": [1.0],
                                                       "accelerators": {"h100-sxm": None}, "slo": {"tpot_ms": 50},
                                                       "input_edges": edges, "output_edges": edges}))
    res = runner.invoke(app, ["mix", str(tmp_path / "mix.yaml")])
    assert res.exit_code == 2, res.output
    assert "1 accelerators x 2,001 x 2,001 length buckets" in res.output.replace("\n", " ")


# --------------------------------------------------------------------------- watching and stopping a run


DRAINING = scenario(drain=True, workloads={
    "chat": SMALL["workloads"]["chat"],
    # one arrival on every chunk boundary (horizon / WATCH_STEPS = 0.02 s): the hardest case for chunking
    "tick": {"target": "chat", "arrival": {"kind": "deterministic", "rate_per_s": 50},
             "input_tokens": {"kind": "fixed", "value": 64}, "output_tokens": {"kind": "fixed", "value": 8}},
})


def _bytes(res) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    res.requests.to_parquet(buf, index=False)
    return res.to_json(), buf.getvalue()


def test_watching_a_run_never_changes_its_result() -> None:
    rs = load(DRAINING)
    plain = _bytes(run_scenario(rs))
    ticks: list[Tick] = []
    watched = _bytes(run_scenario(rs, watch=lambda t: ticks.append(t) and False, progress=lambda now, h: None))
    assert plain == watched  # byte for byte: summary.json and requests.parquet
    assert len([t for t in ticks if not t.draining]) == simulation_mod.WATCH_STEPS
    assert any(t.draining for t in ticks), "the drain is watched too"
    assert all(a.now_s < b.now_s for a, b in itertools.pairwise(ticks))
    assert all(0 <= t.finished <= t.arrived for t in ticks) and ticks[-1].arrived == json.loads(plain[0])["requests"]["arrived"]


def test_a_stopped_run_keeps_what_it_simulated() -> None:
    rs = load(DRAINING)
    res = run_scenario(rs, watch=lambda t: t.now_s >= 5.0)
    s = res.summary
    assert s["partial"]["stopped_at_s"] == pytest.approx(5.0, abs=0.05) and "of 20.0 simulated s" in s["partial"]["note"]
    assert s["time"]["end_s"] == s["partial"]["stopped_at_s"]
    r = s["requests"]
    assert r["arrived"] == r["completed"] + r["failed"] + r["rejected"] + r["in_flight"]
    assert (res.requests["arrival_s"] <= 5.0).all() and 0 < r["arrived"] < 20 * 55
    assert "partial" not in run_scenario(rs).summary


@pytest.mark.parametrize("bar", [False, True])
def test_cli_run_results_are_the_same_with_or_without_the_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             bar: bool) -> None:
    path = write(tmp_path, DRAINING)
    ref = run_scenario(load(DRAINING))
    from stacksim import cli

    drawn: list[Any] = []
    real_draw = cli._RunWatch._draw
    monkeypatch.setattr(cli._RunWatch, "__init__", _forced_init(cli._RunWatch.__init__, show=bar))
    monkeypatch.setattr(cli._RunWatch, "_draw", lambda self, t: (drawn.append(t), real_draw(self, t)))
    res = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "o"), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert bool(drawn) == bar
    assert (tmp_path / "o" / "summary.json").read_text() == ref.to_json()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "o" / "requests.parquet"), ref.requests)


def _forced_init(init: Any, **kw: Any) -> Any:
    def forced(self: Any, label: str, after_s: float = 1.5, show: bool | None = None) -> None:
        init(self, label, after_s=0.0, **kw)

    return forced


def test_ctrl_c_stops_cleanly_with_a_partial_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first Ctrl-C (a real SIGINT, sent at the 200th chunk) stops the run at the end of that chunk."""
    path = write(tmp_path, DRAINING)
    from stacksim import cli

    real_call = cli._RunWatch.__call__
    seen = {"n": 0}

    def call(self: Any, tick: Tick) -> bool:
        seen["n"] += 1
        if seen["n"] == 200:
            os.kill(os.getpid(), signal.SIGINT)
        return real_call(self, tick)

    monkeypatch.setattr(cli._RunWatch, "__call__", call)
    before = signal.getsignal(signal.SIGINT)
    res = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "o"), "--no-plots"])
    assert signal.getsignal(signal.SIGINT) is before, "the handler is put back"
    assert res.exit_code == 130, res.output
    assert "Traceback" not in res.output
    line = ("interrupted: stopped at 4.0 of 20.0 simulated s: counts, latencies and rates cover the simulated time "
            f"only; partial results in {tmp_path / 'o'}")
    assert [ln for ln in res.output.splitlines() if ln.startswith("interrupted")] == [line]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["partial"]["stopped_at_s"] == pytest.approx(4.0, abs=0.05)
    assert "partial run" in res.output


def test_a_second_ctrl_c_stops_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from stacksim import cli

    w = cli._RunWatch("x", show=False)
    with w:
        os.kill(os.getpid(), signal.SIGINT)
        assert w(Tick(1.0, 2.0, 0, 0, False)) is True
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_closed_loop_without_think_time_stops_at_the_request_limit() -> None:
    """Clients without think time send as fast as they are served, so their count is known only by
    running: the run's limits.max_requests stops them, and the summary says when (found by
    tests/test_fuzz_inputs.py: 10 such clients made 12,090 requests under a limit of 50)."""
    text = """
name: closed-loop-limit
seed: 1
horizon_s: 60
limits: {max_requests: 50}
pools: {h100: {accelerator: h100-sxm, count: 1}}
deployments: {chat: {model: llama-3.2-3b, pool: h100, replicas: 1}}
workloads:
  chat:
    target: chat
    arrival: {kind: closed_loop, clients: 10}
    input_tokens: {kind: fixed, value: 100}
    output_tokens: {kind: fixed, value: 10}
"""
    s = run_scenario(load_scenario_text(text, "closed.yaml")).summary
    assert s["requests"]["arrived"] == 50
    assert s["limit_reached"]["max_requests"] == 50 and 0 < s["limit_reached"]["at_s"] < 60
    assert "raise limits.max_requests" in s["limit_reached"]["note"]
    unbounded = run_scenario(load_scenario_text(text.replace("limits: {max_requests: 50}\n", ""), "closed.yaml")).summary
    assert unbounded["requests"]["arrived"] > 1000 and "limit_reached" not in unbounded
