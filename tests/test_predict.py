"""`stacksim predict` and the load patterns it rests on (offline burst, closed loop)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stacksim import load_scenario_text, run_scenario
from stacksim.cli import app

runner = CliRunner()
KEYS = {"output_tokens_per_s", "output_tokens_per_s_per_gpu", "requests_per_s", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}


@pytest.mark.parametrize("load", [["--offline"], ["--qps", "4"], ["--concurrency", "16"]])
def test_json_layout(load: list[str]) -> None:
    """--json prints exactly one JSON object with the documented keys, each latency an object
    with mean, p50, p90, p99."""
    res = runner.invoke(app, ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--isl", "200", "--osl", "50",
                              "--requests", "200", *load, "--json"])
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert KEYS <= set(d)
    for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(d[k]) == {"mean", "p50", "p90", "p99"}
        assert d[k]["p50"] <= d[k]["p90"] <= d[k]["p99"]
    assert d["completed"] == 200
    assert d["output_tokens_per_s_per_gpu"] == pytest.approx(d["output_tokens_per_s"] / d["gpus"], rel=1e-3)


def test_offline_beats_light_load_on_throughput_and_loses_on_ttft() -> None:
    base = ["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--isl", "500", "--osl", "200", "--requests", "300", "--json"]
    off = json.loads(runner.invoke(app, [*base, "--offline"]).stdout)
    light = json.loads(runner.invoke(app, [*base, "--qps", "1"]).stdout)
    assert off["output_tokens_per_s"] > 5 * light["output_tokens_per_s"]
    assert off["ttft_ms"]["p50"] > 10 * light["ttft_ms"]["p50"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model", "llama-3.1-8x", "--gpu", "h100-sxm", "--offline"], "llama-3.1-8b"),
        (["--model", "llama-3.1-8b", "--gpu", "h100-sx", "--offline"], "h100-sxm"),
        (["--model", "llama-3.1-405b", "--gpu", "h100-sxm", "--offline"], "does not fit"),
        (["--model", "llama-3.1-8b", "--gpu", "h100-sxm"], "exactly one load pattern"),
        (["--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--offline", "--qps", "2"], "exactly one load pattern"),
        (["--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--offline", "--tp", "0"], "--tp must be >= 1"),
        (["--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--offline", "--tp", "3"], "--tp"),
        (["--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--offline", "--precision", "fp7"], "--precision"),
        (["--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--tp", "2", "--ep", "3", "--offline"], "--ep must be 1"),
        (["--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--qps", "-1"], "--qps"),
    ],
)
def test_bad_input_exits_2(args: list[str], fragment: str) -> None:
    res = runner.invoke(app, ["predict", *args])
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert fragment in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


CLOSED = """
horizon_s: {horizon}
drain: true
pools: {{g: {{accelerator: h100-sxm, count: 2}}}}
deployments: {{d: {{model: llama-3.1-8b, pool: g, replicas: 2, load_balancer: {{kind: {lb}}}}}}}
workloads:
  w:
    target: d
    arrival: {{kind: closed_loop, clients: {clients}, think_time_s: {think}}}
    {limit}
    input_tokens: {{kind: uniform, low: 50, high: 800}}
    output_tokens: {{kind: uniform, low: 5, high: 200}}
"""


@pytest.mark.parametrize("lb", ["round_robin", "least_outstanding"])
@pytest.mark.parametrize("think", [0.0, 0.5])
def test_closed_loop_keeps_at_most_n_in_flight(lb: str, think: float) -> None:
    """With N clients, never more than N requests are in the system; each client's next request
    arrives exactly think_time_s after one of its requests finished."""
    n = 8
    res = run_scenario(load_scenario_text(CLOSED.format(horizon=30, lb=lb, clients=n, think=think, limit=""), "c.yaml"))
    df = res.requests
    assert res.summary["requests"]["in_flight"] == 0
    assert (df["status"] == "completed").all()
    events = np.concatenate([np.c_[df.arrival_s, np.ones(len(df))], np.c_[df.finish_s, -np.ones(len(df))]])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]  # finishes before arrivals at equal times
    assert np.cumsum(events[:, 1]).max() == n
    later = df.arrival_s.to_numpy()[n:]
    finishes = np.sort(df.finish_s.to_numpy())
    assert np.all(np.min(np.abs(later[:, None] - (finishes[None, :] + think)), axis=1) < 1e-9)
    assert df.arrival_s.max() < 30


def test_closed_loop_max_requests() -> None:
    res = run_scenario(load_scenario_text(CLOSED.format(horizon=1000, lb="round_robin", clients=4, think=0.0, limit="max_requests: 37"), "c.yaml"))
    assert res.summary["requests"]["arrived"] == 37
    assert res.summary["requests"]["completed"] == 37


def test_offline_needs_max_requests() -> None:
    from stacksim import ScenarioError

    text = CLOSED.format(horizon=10, lb="round_robin", clients=1, think=0.0, limit="").replace(
        "{kind: closed_loop, clients: 1, think_time_s: 0.0}", "{kind: offline}"
    )
    with pytest.raises(ScenarioError, match="needs max_requests"):
        load_scenario_text(text, "o.yaml")
