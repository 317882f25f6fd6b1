"""`stacksim optimize` finds the same optimum as a brute-force sweep, and explains the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stacksim import ScenarioError
from stacksim.cli import app
from stacksim.sweep.optimize import optimize
from stacksim.sweep.runner import run_sweep

BASE = """
name: opt-base
horizon_s: 60
warmup_s: 10
pools: {gpu: {accelerator: h100-sxm, count: 1}}
deployments: {chat: {model: llama-3.1-8b, pool: gpu, replicas: 1, engine: {max_model_len: 8192}}}
workloads:
  chat:
    target: chat
    arrival: {kind: poisson, rate_per_s: 12}
    input_tokens: {kind: lognormal, median: 1000, sigma: 0.7, max: 6000}
    output_tokens: {kind: lognormal, median: 150, sigma: 0.8, max: 1500}
"""
KNOBS = """
  pools.gpu.accelerator: [h100-sxm, a100-sxm-80gb, l40s]
  "pools.gpu.count,deployments.chat.replicas": [[1, 1], [2, 2], [3, 3]]
"""


def files(tmp: Path, constraints: str = "{ttft_p99_ms: 400, tpot_p99_ms: 40}") -> tuple[Path, Path]:
    (tmp / "base.yaml").write_text(BASE)
    opt = tmp / "opt.yaml"
    opt.write_text(f"base: base.yaml\nseeds: 2\nconstraints: {constraints}\nknobs:{KNOBS}")
    sweep = tmp / "sweep.yaml"
    sweep.write_text(f"base: base.yaml\nseeds: 2\nparameters:{KNOBS}")
    return opt, sweep


def test_optimum_equals_brute_force(tmp_path: Path) -> None:
    opt, sweep = files(tmp_path)
    res = optimize(opt)
    df = run_sweep(sweep, tmp_path / "brute", workers=2)
    ok = df[df.status == "ok"].copy()
    ok["meets"] = (ok.ttft_p99_ms <= 400) & (ok.tpot_p99_ms <= 40)
    per_point = ok.groupby("point").agg(meets=("meets", "all"), spend=("spend_usd_per_month", "first"))
    feasible = per_point[per_point.meets]
    assert not feasible.empty
    cheapest = feasible.spend.min()
    assert res["best"] is not None
    assert res["best"].spend_usd_per_month == pytest.approx(cheapest, rel=1e-9)
    # Every cheaper candidate was simulated and has a reason; dearer ones were skipped.
    for c in res["candidates"]:
        if c.spend_usd_per_month is not None and c.spend_usd_per_month < cheapest:
            assert c.status == "fails" and c.reason
        if c.spend_usd_per_month is not None and c.spend_usd_per_month > cheapest:
            assert c.status == "not simulated"


def test_no_feasible_candidate_exits_1_with_reasons(tmp_path: Path) -> None:
    opt, _ = files(tmp_path, "{ttft_p99_ms: 0.001}")
    res = CliRunner().invoke(app, ["optimize", str(opt), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "no candidate meets the constraints" in res.stdout


def test_unknown_metric_and_bad_path_are_errors(tmp_path: Path) -> None:
    opt, _ = files(tmp_path, "{ttft_p98_ms: 5}")
    with pytest.raises(ScenarioError, match="unknown metric 'ttft_p98_ms'"):
        optimize(opt)
    opt.write_text(opt.read_text().replace("ttft_p98_ms", "ttft_p99_ms").replace("pools.gpu.accelerator", "pools.gpu2.accelerator"))
    with pytest.raises(ScenarioError, match="'gpu2' does not exist under pools"):
        optimize(opt)


def test_bundled_optimize_files_load() -> None:
    from stacksim.sweep.optimize import load_optimize

    for f in sorted((Path(__file__).resolve().parents[1] / "scenarios" / "optimize").glob("*.yaml")):
        spec, _, _ = load_optimize(f)
        assert spec.knobs
