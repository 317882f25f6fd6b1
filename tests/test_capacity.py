"""Honest saturation: each deployment's sustainable capacity (serving/capacity.py) against a
max-load simulation, and an offered load above it reported as an overload (capacity, queue
growth, transient) by `predict`, `run`, the JSON and the dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stacksim import load_scenario_text, run_scenario
from stacksim.cli import app
from stacksim.predict import PredictArgs, _scenario_yaml
from stacksim.predict import predict as run_predict
from stacksim.serving.capacity import (
    capacity_message,
    replica_steady_state,
    sustainable_capacity,
    waiting_growth,
)

runner = CliRunner()
QUICKSTART = (Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml").read_text()
SHAPE = {"model": "llama-3.1-8b", "gpu": "h100-sxm", "isl": 500, "osl": 200}


def _deployment(**kw):  # type: ignore[no-untyped-def]
    return load_scenario_text(_scenario_yaml(PredictArgs(offline=True, requests=10, **kw)), None).deployments["model"]


def _capacity(**kw) -> float:  # type: ignore[no-untyped-def]
    return sustainable_capacity(_deployment(**kw), float(kw["isl"]), float(kw["osl"]))


def test_predict_past_capacity_says_overloaded_with_growth_and_transient() -> None:
    cap = _capacity(**SHAPE)
    qps, n = 3.0 * cap, 600
    d = run_predict(PredictArgs(qps=qps, requests=n, **SHAPE))
    assert d["overloaded"] is True
    assert d["capacity_rps"] == pytest.approx(cap, rel=1e-3)
    assert d["offered_rps"] == pytest.approx(qps, rel=1e-3)
    assert d["utilization_of_capacity"] == pytest.approx(3.0, rel=1e-3)
    assert d["queue_growth_rps"] == pytest.approx(qps - cap, rel=1e-3)
    assert d["transient_s"] == pytest.approx(n / qps, rel=0.15)  # the arrival window of n Poisson arrivals
    note = d["capacity_note"]
    assert note.startswith("OVERLOADED llama-3.1-8b: offered ")
    assert "transient, not a steady state" in note and "the queue grows" in note
    # The latencies it qualifies: the queue really built up (the last requests waited for seconds).
    assert d["max_wait_s"] > 0.5 * (qps - cap) * d["transient_s"] / cap


def test_predict_well_below_capacity_is_not_overloaded() -> None:
    cap = _capacity(**SHAPE)
    d = run_predict(PredictArgs(qps=0.2 * cap, requests=200, **SHAPE))
    assert d["overloaded"] is False
    assert d["utilization_of_capacity"] == pytest.approx(0.2, rel=1e-3)
    assert d["queue_growth_rps"] == 0.0
    assert d["capacity_note"].startswith("capacity llama-3.1-8b: ~") and "(20%)" in d["capacity_note"]


def test_predict_cli_prints_the_warning_and_json_carries_the_flag() -> None:
    base = ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--isl", "500", "--osl", "200", "--requests", "400"]
    cap = _capacity(**SHAPE)
    res = runner.invoke(app, [*base, "--qps", f"{3 * cap:.3f}"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    warn = [ln for ln in lines if ln.startswith("OVERLOADED")]
    assert len(warn) == 1 and "transient" in warn[0]
    assert lines.index(warn[0]) < next(i for i, ln in enumerate(lines) if ln.startswith("latency (ms)"))  # before the numbers
    d = json.loads(runner.invoke(app, [*base, "--qps", f"{3 * cap:.3f}", "--json"]).stdout)
    assert {"capacity_rps", "offered_rps", "overloaded", "queue_growth_rps", "transient_s"} <= set(d)
    assert d["overloaded"] is True
    d = json.loads(runner.invoke(app, [*base, "--offline", "--json"]).stdout)
    assert d["overloaded"] is False and d["offered_rps"] is None and d["capacity_rps"] > 0
    assert "max-load run" in d["capacity_note"]
    d = json.loads(runner.invoke(app, [*base, "--concurrency", "8", "--json"]).stdout)
    assert d["overloaded"] is False and "closed-loop" in d["capacity_note"]


@pytest.mark.parametrize(
    "shape",
    [
        {"model": "llama-3.1-8b", "gpu": "h100-sxm", "isl": 1000, "osl": 1000},  # max_num_seqs / KV
        {"model": "llama-3.1-8b", "gpu": "h100-sxm", "isl": 4000, "osl": 200},  # KV cache
        {"model": "llama-3.1-8b", "gpu": "l40s", "isl": 2000, "osl": 500},  # KV cache, a slower GPU
        {"model": "llama-3.1-70b", "gpu": "a100-sxm-80gb", "tp": 4, "isl": 2048, "osl": 128},
    ],
    ids=["8b-h100-1k1k", "8b-h100-4k200", "8b-l40s-2k500", "70b-a100-tp4"],
)
def test_capacity_matches_a_max_load_simulation(shape: dict) -> None:
    """The steady-state estimate against the completion rate of an offline run (every request
    at time zero), over its middle 60% of completions, once the batch has desynchronised."""
    cap = _capacity(**shape)
    res = run_scenario(load_scenario_text(_scenario_yaml(PredictArgs(offline=True, requests=1500, **shape)), None))
    df = res.requests
    fin = np.sort(df.loc[df["status"] == "completed", "finish_s"].to_numpy())
    k0, k1 = len(fin) // 5, 4 * len(fin) // 5
    simulated = (k1 - k0) / (fin[k1] - fin[k0])
    assert cap == pytest.approx(simulated, rel=0.15)
    c = res.summary["deployments"]["model"]["capacity"]
    assert c["load"] == "offline" and c["overloaded"] is False and c["capacity_rps"] == pytest.approx(cap, rel=1e-3)


def test_capacity_scales_with_replicas() -> None:
    one = _capacity(**SHAPE)
    three = _capacity(dp=3, **SHAPE)
    assert three == pytest.approx(3 * one, rel=1e-9)
    rd = _deployment(**SHAPE)
    ss = replica_steady_state(rd, 500.0, 200.0)
    assert ss.batch <= rd.spec.engine.max_num_seqs and ss.limit in ("max_num_seqs", "kv_cache", "token_budget")
    # Less prompt work (a prefix-cache hit rate) never lowers it.
    assert replica_steady_state(rd, 500.0, 200.0, cached=0.5).requests_per_s >= ss.requests_per_s


def test_waiting_growth_is_the_gap_between_arrivals_and_admissions() -> None:
    arrival = np.arange(1000) / 10.0  # 10 req/s for 100 s
    admitted = np.arange(1000) / 6.0  # admitted at 6 req/s: the queue grows 4 req/s
    slope, last = waiting_growth(arrival, admitted, 50.0, 99.9)
    assert slope == pytest.approx(4.0, rel=0.02)
    assert last == pytest.approx(99.9 * 4.0, abs=2)
    slope, last = waiting_growth(arrival, arrival + 0.05, 50.0, 99.9)  # admitted at once: no queue
    assert abs(slope) < 0.05 and last <= 1


def _quickstart(replicas: int, horizon: int = 120) -> str:
    return (QUICKSTART.replace("count: 4", f"count: {replicas}").replace("replicas: 4", f"replicas: {replicas}")
            .replace("horizon_s: 600", f"horizon_s: {horizon}").replace("warmup_s: 60", "warmup_s: 10"))


def test_run_summary_reports_an_overloaded_deployment(tmp_path: Path) -> None:
    """One replica where the quickstart has four, at 30 req/s: about 1.6x what it sustains."""
    text = _quickstart(1).replace("rate_per_s: 20", "rate_per_s: 30")
    s = run_scenario(load_scenario_text(text, "q.yaml")).summary
    c = s["deployments"]["chat"]["capacity"]
    assert c["load"] == "open" and c["offered_rps"] == 30.0
    assert c["overloaded"] is True and c["overload_basis"] == "estimate and run"
    assert c["queue_growth_rps"] == pytest.approx(30.0 - c["capacity_rps"], rel=1e-3)
    assert c["measured"]["queue_growth_rps"] == pytest.approx(c["queue_growth_rps"], rel=0.3)  # the run agrees
    assert c["transient_s"] == pytest.approx(120.0, rel=0.02)
    msg = capacity_message("chat", c)
    assert msg.startswith("OVERLOADED chat: offered 30.0 req/s > sustainable ~") and "120 s transient" in msg
    p = tmp_path / "q.yaml"
    p.write_text(text)
    res = runner.invoke(app, ["run", str(p), "--out", str(tmp_path / "out"), "--no-plots"])
    assert res.exit_code == 0, res.stderr
    assert "OVERLOADED chat: offered 30.0 req/s" in res.stdout
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["deployments"]["chat"]["capacity"]["overloaded"] is True


def test_run_summary_within_capacity_prints_the_headroom() -> None:
    s = run_scenario(load_scenario_text(_quickstart(4), "q.yaml")).summary
    c = s["deployments"]["chat"]["capacity"]
    assert c["overloaded"] is False and c["overload_basis"] is None
    assert 0.2 < c["utilization_of_capacity"] < 0.6
    assert c["capacity_rps"] == pytest.approx(4 * c["replica_capacity_rps"], rel=1e-3)
    assert abs(c["measured"]["queue_growth_rps"]) < 0.5
    assert capacity_message("chat", c).startswith("capacity chat: ~")


def test_dashboard_warns_of_an_overload() -> None:
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    at.number_input(key="count:h100").set_value(1)
    at.number_input(key="replicas:chat").set_value(1)
    at.number_input(key="rate:chat").set_value(30.0)  # one H100 sustains about 20 req/s of this load
    at.button(key="run").click().run()
    assert not at.exception, at.exception
    assert any(w.value.startswith("OVERLOADED chat") for w in at.warning)
