"""Sweeps: design expansion, path validation, failures recorded, identical results on any
number of workers, kill-and-resume loses and duplicates nothing, the report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from stacksim import ScenarioError
from stacksim.cli import app
from stacksim.sweep.runner import load_results, run_sweep
from stacksim.sweep.spec import expand, load_sweep

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

BASE = """
name: tiny-sweep-base
horizon_s: 60
pools: {h100: {accelerator: h100-sxm, count: 2}}
deployments: {chat: {model: llama-3.2-3b, pool: h100, replicas: 2, engine: {max_model_len: 8192}}}
workloads:
  chat:
    target: chat
    arrival: {kind: poisson, rate_per_s: 5}
    input_tokens: {kind: lognormal, median: 500, sigma: 0.7, max: 4000}
    output_tokens: {kind: lognormal, median: 100, sigma: 0.7, max: 1000}
"""


def write(tmp: Path, sweep: str) -> Path:
    (tmp / "base.yaml").write_text(BASE)
    p = tmp / "sweep.yaml"
    p.write_text(sweep)
    return p


GRID = """
base: base.yaml
seeds: 2
parameters:
  workloads.chat.arrival.rate_per_s: [2, 5, 10]
  deployments.chat.engine.max_num_seqs: {range: [16, 64], steps: 2, integer: true}
"""


def test_grid_expansion(tmp_path: Path) -> None:
    sw = load_sweep(write(tmp_path, GRID))
    assert len(sw.points) == 6 and len(sw.runs()) == 12
    assert {p["deployments.chat.engine.max_num_seqs"] for p in sw.points} == {16, 64}
    assert len({r.run_id for r in sw.runs()}) == 12


@pytest.mark.parametrize("kind", ["random", "lhs"])
def test_sampled_designs(tmp_path: Path, kind: str) -> None:
    sw = load_sweep(write(tmp_path, f"""
base: base.yaml
design: {{kind: {kind}, n: 7}}
parameters:
  workloads.chat.arrival.rate_per_s: {{range: [1, 10]}}
  deployments.chat.engine.block_size: [8, 16, 32]
"""))
    rates = [p["workloads.chat.arrival.rate_per_s"] for p in sw.points]
    assert len(rates) == 7 and all(1 <= r <= 10 for r in rates)
    if kind == "lhs":  # one sample in each of the 7 strata
        assert sorted(int((r - 1) / 9 * 7) for r in rates) == list(range(7))
    assert expand(sw.spec) == sw.points  # deterministic


def test_path_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    p = write(tmp_path, """
base: base.yaml
parameters:
  pools.h200.count: [1, 2]
""")
    with pytest.raises(ScenarioError) as exc:
        load_sweep(p)
    msg = str(exc.value)
    assert "'h200' does not exist under pools" in msg and "h100" in msg
    assert "line 4" in msg and "parameters.pools.h200.count" in msg


def test_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    p = write(tmp_path, """
base: base.yaml
parameters:
  deployments.chat.replicas: [1, 2, 3]
""")
    df = run_sweep(p, tmp_path / "out", workers=1)
    assert list(df["status"]) == ["ok", "ok", "failed"]
    assert "deployments need 3 accelerators but the pool has 2" in df["error"].iloc[2]


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_s"]).reset_index(drop=True)


def test_same_results_on_one_or_two_workers(tmp_path: Path) -> None:
    p = write(tmp_path, GRID)
    a = run_sweep(p, tmp_path / "a", workers=1)
    b = run_sweep(p, tmp_path / "b", workers=2)
    pd.testing.assert_frame_equal(_comparable(a), _comparable(b))
    assert (a["status"] == "ok").all()


def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    p = write(tmp_path, GRID.replace("seeds: 2", "seeds: 4"))
    out = tmp_path / "killed"
    env = {**os.environ, "STACKSIM_SWEEP_FLUSH_S": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "stacksim.cli", "sweep", str(p), "--out", str(out), "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "runs").glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = load_results(out)
    assert 0 < len(partial) < 24, "killed mid-way"
    resumed = run_sweep(p, out, workers=1)
    assert len(resumed) == 24 and resumed["run_id"].is_unique
    full = run_sweep(p, tmp_path / "full", workers=1)
    pd.testing.assert_frame_equal(_comparable(resumed), _comparable(full))


def test_duckdb_view_and_report(tmp_path: Path) -> None:
    import duckdb

    p = write(tmp_path, GRID)
    out = tmp_path / "out"
    run_sweep(p, out, workers=1)
    con = duckdb.connect(str(out / "sweep.duckdb"))
    n, worst = con.execute("SELECT count(*), max(ttft_p99_ms) FROM runs WHERE status = 'ok'").fetchone()
    assert n == 12 and worst > 0
    res = runner.invoke(app, ["sweep", "report", str(out)])
    assert res.exit_code == 0, res.stderr
    assert "Pareto front" in res.stdout and "sensitivity" in res.stdout
    assert (out / "plots" / "pareto_spend_vs_p99_ttft.png").exists()
    assert runner.invoke(app, ["sweep", "report", str(tmp_path / "nothing")]).exit_code == 2


def test_bundled_sweeps_load() -> None:
    for f in sorted((REPO / "scenarios" / "sweeps").glob("*.yaml")):
        assert load_sweep(f).runs()


def test_ray_backend_gives_identical_results(tmp_path: Path) -> None:
    """The same sweep on a local Ray (started by the backend: no dashboard, small object store)
    and on the process pool: identical rows but for wall time."""
    pytest.importorskip("ray")
    p = write(tmp_path, GRID)
    a = run_sweep(p, tmp_path / "local", workers=2)
    b = run_sweep(p, tmp_path / "ray", backend="ray", workers=2)
    pd.testing.assert_frame_equal(_comparable(a), _comparable(b))


def test_per_request_data(tmp_path: Path) -> None:
    """per_request: true stores each run's request table next to the runs."""
    p = write(tmp_path, "base: base.yaml\nper_request: true\nparameters:\n  workloads.chat.arrival.rate_per_s: [2, 4]\n")
    df = run_sweep(p, tmp_path / "out", workers=1)
    for rid, arrived in zip(df["run_id"], df["arrived"]):
        req = pd.read_parquet(tmp_path / "out" / "requests" / f"run-{rid}.parquet")
        assert len(req) == arrived


def test_report_when_every_run_failed(tmp_path: Path) -> None:
    """A sweep whose every point is invalid still reports (the failures), without a traceback."""
    p = write(tmp_path, "base: base.yaml\nparameters:\n  deployments.chat.replicas: [5, 6]\n")
    out = tmp_path / "out"
    df = run_sweep(p, out, workers=1)
    assert (df.status == "failed").all()
    res = runner.invoke(app, ["sweep", "report", str(out)])
    assert res.exit_code == 0, res.stderr
    assert "2 failed" in res.stdout


# A random design over three values repeats its points: 30 runs, only 3 distinct run ids.
REPEATED = """
base: base.yaml
design: {kind: random, n: 30}
seed: 4
parameters:
  workloads.chat.arrival.rate_per_s: [5, 10, 15]
  horizon_s: [5]
"""


def _full(tmp: Path) -> pd.DataFrame:
    full = run_sweep(write(tmp, REPEATED), tmp / "full", workers=1)
    assert len(full) == 30 and full["run_id"].nunique() == 3 and (full["status"] == "ok").all()
    return full


def test_resume_with_repeated_points_after_workers_die_mid_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed (deterministically: the parent dies on its 9th result, with two workers' runs in
    flight and unflushed), the sweep resumes by run index and ends with every run exactly once."""
    import stacksim.sweep.runner as R

    p = write(tmp_path, REPEATED)
    out = tmp_path / "killed"
    monkeypatch.setattr(R, "FLUSH_EVERY_S", 0.0)  # every row is flushed as it arrives, as after a long run

    def die(done: int, total: int) -> None:
        if done == 9:
            raise KeyboardInterrupt  # the row in hand and the runs in flight are lost

    with pytest.raises(KeyboardInterrupt):
        run_sweep(p, out, workers=2, progress=die)
    partial = load_results(out)
    assert len(partial) == 8 and partial["run_id"].nunique() <= 3
    resumed = run_sweep(p, out, workers=2)
    assert sorted(resumed["run_index"]) == list(range(30))
    pd.testing.assert_frame_equal(_comparable(resumed), _comparable(_full(tmp_path)))


def test_resume_after_parts_lose_scattered_runs(tmp_path: Path) -> None:
    """Stored parts that hold an arbitrary subset of runs (as several killed workers leave
    them): the resume runs exactly the missing indices, even though every run id is stored."""
    full = _full(tmp_path)
    out = tmp_path / "cut"
    (out / "runs").mkdir(parents=True)
    keep = sorted({*full.drop_duplicates("run_id")["run_index"], 3, 17, 29})  # every id is already stored
    full.loc[keep[:3]].to_parquet(out / "runs" / "part-00000.parquet", index=False)
    full.loc[keep[3:]].to_parquet(out / "runs" / "part-00001.parquet", index=False)
    ran: list[int] = []
    resumed = run_sweep(tmp_path / "sweep.yaml", out, workers=2, progress=lambda done, total: ran.append(done))
    assert ran[0] == len(keep) and ran[-1] == 30 and len(ran) == 30 - len(keep) + 1
    assert sorted(resumed["run_index"]) == list(range(30))
    pd.testing.assert_frame_equal(_comparable(resumed), _comparable(full))
