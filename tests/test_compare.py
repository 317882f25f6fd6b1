"""`stacksim compare`: the paired intervals (t for means, bootstrap for percentiles) against scipy
on a known per-seed table, the few-seeds warning, the % change column, optional summary sections read
defensively, identical scenarios never differ significantly, more load is a significant latency
increase, --json / --out layouts, bad input exits 2 without a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import stacksim.compare as cmp
from stacksim.cli import app

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = (REPO / "scenarios" / "quickstart.yaml").read_text(encoding="utf-8")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
runner = CliRunner()
SEEDS = 3


def short(text: str, name: str | None = None, rate: float | None = None) -> str:
    """The quickstart cut to 90 simulated seconds (optionally renamed, or with another load)."""
    text = text.replace("horizon_s: 600", "horizon_s: 90").replace("warmup_s: 60", "warmup_s: 10")
    if name:
        text = text.replace("name: quickstart", f"name: {name}")
    if rate:
        text = text.replace("rate_per_s: 20}", f"rate_per_s: {rate:g}}}")
    return text


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compare")
    out = {}
    for key, text in {"base": short(QUICKSTART), "renamed": short(QUICKSTART, name="quickstart-copy"),
                      "heavy": short(QUICKSTART, name="heavy", rate=40)}.items():
        out[key] = d / f"{key}.yaml"
        out[key].write_text(text)
    assert "rate_per_s: 40}" in out["heavy"].read_text()
    return out


@pytest.fixture(scope="module")
def compared(files: dict[str, Path]) -> dict[str, Any]:
    """base, base again, a renamed copy and double the load, 3 seeds, through `--json`."""
    args = ["compare", str(files["base"]), str(files["base"]), str(files["renamed"]), str(files["heavy"]),
            "--seeds", str(SEEDS), "--json", "--workers", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, (r.stderr, r.exception)
    return json.loads(r.stdout)  # exactly one JSON object: json.loads rejects anything after it


# A known per-seed table: 6 shared seeds of a baseline A and a scenario X whose seeds move
# together (seed 3 is slow in both), so the paired interval is far narrower than an unpaired one.
TABLE_A = [100.0, 120.0, 95.0, 180.0, 110.0, 105.0]
TABLE_X = [112.0, 129.0, 108.0, 195.0, 118.0, 123.0]


def test_paired_t_interval_matches_scipy() -> None:
    got = cmp.paired(TABLE_A, TABLE_X)
    a, x = np.array(TABLE_A), np.array(TABLE_X)
    ci = stats.ttest_rel(x, a).confidence_interval(0.95)
    assert got["method"] == "paired t" and got["n_pairs"] == 6
    assert got["diff"] == pytest.approx(12.5)
    assert got["pct_change"] == pytest.approx(12.5 / a.mean() * 100)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    # The same interval by hand: mean(d) +- t_{0.975, 5} sd(d) / sqrt(6), d = 12, 9, 13, 15, 8, 18.
    d = x - a
    half = stats.t.ppf(0.975, 5) * d.std(ddof=1) / np.sqrt(6)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((12.5 - half, 12.5 + half), rel=1e-12)
    assert got["significant"] is True
    # Unpaired (Welch) the shared slow seed would swamp the difference: the interval spans 0.
    welch = stats.ttest_ind(x, a, equal_var=False).confidence_interval(0.95)
    assert welch.low < 0 < welch.high


def test_paired_bootstrap_interval_matches_scipy() -> None:
    got = cmp.paired(TABLE_A, TABLE_X, percentile=True)
    d = np.array(TABLE_X) - np.array(TABLE_A)
    ci = stats.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=9999, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval
    assert got["method"] == "paired bootstrap" and got["diff"] == pytest.approx(12.5)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    # Paired resampling of the two columns is the same bootstrap as resampling their differences.
    both = stats.bootstrap((np.array(TABLE_X), np.array(TABLE_A)), lambda x, a, axis: x.mean(axis) - a.mean(axis),
                           paired=True, n_resamples=9999, method="percentile", rng=np.random.default_rng(0))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(both.confidence_interval), rel=1e-12)
    assert 8 <= got["ci_low"] < 12.5 < got["ci_high"] <= 16 and got["significant"] is True
    assert cmp.paired(TABLE_A, TABLE_X, percentile=True) == got  # a fixed resampling stream


def test_paired_degenerate_cases() -> None:
    one = cmp.paired([1.0], [2.0])
    assert one["diff"] == 1.0 and one["ci_low"] is None and one["significant"] is None
    assert "unavailable" in one["note"]
    exact = cmp.paired([5.0, 5.0, 5.0], [7.0, 7.0, 7.0])  # a fleet's GPU spend: no seed changes it
    assert (exact["ci_low"], exact["ci_high"], exact["significant"]) == (2.0, 2.0, True)
    assert exact["pct_change"] == pytest.approx(40.0)
    same = cmp.paired([5.0, 5.0], [5.0, 5.0], percentile=True)
    assert same["significant"] is False
    assert cmp.paired([1.0, 2.0, 3.0], [2.0, 1.0, 3.0])["significant"] is False
    # A seed missing on either side is left out of both (pairs stay pairs); a zero baseline has no %.
    gap = cmp.paired([0.0, None, 0.0, 0.0], [1.0, 9.0, None, 3.0])
    assert gap["n_pairs"] == 2 and gap["diff"] == 2.0 and gap["pct_change"] is None
    assert cmp.paired([None, 1.0], [1.0, None])["n_pairs"] == 0


def test_few_seeds_warning_and_pct_column(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> None:
    """Below MIN_SEEDS a plain warning line in the table output, in the JSON, and on stderr with
    --json; none from MIN_SEEDS on. The change column is the difference over the baseline mean."""
    def fake(path: str, seed: int) -> dict[str, Any]:
        up = 1.1 if path.endswith("heavy.yaml") else 1.0
        return {"summary": {"latency_ms": {"ttft": {"p99": (100.0 + 7 * seed) * up}},
                            "throughput": {"requests_per_s": 20.0 * up + seed % 2}}}

    monkeypatch.setattr(cmp, "_run_one", fake)
    args = ["compare", str(files["base"]), str(files["heavy"]), "--workers", "1"]
    r = runner.invoke(app, [*args, "--seeds", "2"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    text = ANSI.sub("", r.stdout)
    warn = [line for line in text.splitlines() if line.startswith("warning:")]
    assert warn == [("warning: 2 seeds per scenario: the intervals (and *) are too unstable to act on below 5 seeds; "
                     "rerun with --seeds 5 or more")], text
    assert re.search(r"┃ change ┃", text) and re.search(r"TTFT p99 \(ms\).*│\s+\+10\.0% │", text), text
    r = runner.invoke(app, [*args, "--seeds", "2", "--json"])
    res = json.loads(r.stdout)
    assert res["warnings"] == [warn[0]] and warn[0] in ANSI.sub("", r.stderr)
    # Two seeds are too few to bootstrap: the percentile falls back to the (wide, honest) t interval.
    d = res["metrics"]["ttft_p99_ms"]["differences"]["heavy"]
    assert d["method"] == "paired t (under 5 seeds: too few to bootstrap)"
    ci = stats.ttest_rel(res["metrics"]["ttft_p99_ms"]["scenarios"]["heavy"]["values"],
                         res["metrics"]["ttft_p99_ms"]["scenarios"]["quickstart"]["values"]).confidence_interval()
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert res["metrics"]["requests_per_s"]["differences"]["heavy"]["method"] == "paired t"
    r = runner.invoke(app, [*args, "--seeds", str(cmp.MIN_SEEDS), "--json"])
    res = json.loads(r.stdout)
    assert res["warnings"] == [] and "warning" not in r.stderr
    assert res["metrics"]["ttft_p99_ms"]["differences"]["heavy"]["method"] == "paired bootstrap"


def test_extract_reads_optional_sections() -> None:
    s: dict[str, Any] = {
        "time": {"end_s": 1800.0},
        "requests": {"failed": 3, "rejected": 1},
        "latency_ms": {"ttft": {"p50": 10.0, "p90": None, "p99": float("nan")}, "e2e": {"p50": 100.0}},
        "slo": {"attainment_all": 0.9, "attainment": {"ttft_ms": 0.95}},
        "throughput": {"requests_per_s": 2.0, "output_tokens_per_s": 300.0},
        "spend": {"gpu_usd_per_month": 1000.0, "api_usd": 1.0, "egress_usd": 0.5},
        "gateway": {"residency": {"failed_closed": 2, "violations": ["a", "b", "c"]}},
        "agents": {"all": {"latency_s": {"p50": 4.0, "p90": 9.0}}},
        "deprecation_risk": {"overall": {"p_any_retirement": 0.25, "expected_migration_cost_usd": 1e4, "note": "x"}},
    }
    vals, meta, basis = cmp.extract(s)
    assert "ttft_p90_ms" not in vals and "ttft_p99_ms" not in vals and "e2e_p99_ms" not in vals
    assert vals["ttft_p50_ms"] == 10.0 and vals["agent_task_p90_s"] == 9.0
    assert vals["slo_attainment_ttft_ms"] == 0.95
    # Per-run amounts scaled to a 730 h month: the run is half an hour.
    assert vals["spend_api_usd_per_month"] == pytest.approx(1.0 * 730 / 0.5)
    assert vals["spend_total_usd_per_month"] == pytest.approx(1000 + 1.5 * 730 / 0.5)
    assert basis == cmp.SPEND_COMPUTED
    assert vals["residency_violations"] == 3 and vals["residency_failed_closed"] == 2
    assert vals["deprecation_p_any_retirement"] == 0.25 and "deprecation_note" not in vals
    assert (vals["failed_requests"], vals["rejected_requests"]) == (3, 1)
    assert meta["ttft_p50_ms"].unit == "ms"
    # A monthly split reported by the run is used as it is.
    s["spend"]["monthly"] = {"total_usd": 5.0, "gpu_usd": 4.0, "api_usd": 1.0}
    vals, _, basis = cmp.extract(s)
    assert basis == cmp.SPEND_MONTHLY
    s["spend"]["monthly_basis"] = "per-use costs x 2"
    assert cmp.extract(s)[2] == cmp.SPEND_MONTHLY + " (per-use costs x 2)"
    assert (vals["spend_total_usd_per_month"], vals["spend_gpu_usd_per_month"]) == (5.0, 4.0)
    assert "spend_egress_usd_per_month" not in vals


def test_json_layout(compared: dict[str, Any]) -> None:
    res = compared
    assert set(res) >= {"scenarios", "baseline", "seeds", "confidence", "method", "metrics", "failures"}
    assert res["seeds"] == list(range(SEEDS)) and "paired" in res["method"] and res["failures"] == []
    assert res["warnings"] and "too unstable" in res["warnings"][0]  # 3 seeds < MIN_SEEDS
    labels = [s["label"] for s in res["scenarios"]]
    assert len(set(labels)) == 4 and res["baseline"] == labels[0]
    for key in ("ttft_p50_ms", "ttft_p99_ms", "e2e_p90_ms", "slo_attainment_all", "requests_per_s",
                "output_tokens_per_s", "spend_total_usd_per_month", "spend_gpu_usd_per_month",
                "failed_requests", "rejected_requests"):
        m = res["metrics"][key]
        assert set(m) >= {"label", "unit", "scenarios", "differences"}
        for lb in labels:
            st = m["scenarios"][lb]
            assert set(st) >= {"mean", "std", "n", "values"} and len(st["values"]) == SEEDS
            assert st["mean"] == pytest.approx(np.mean(st["values"]))
        assert set(m["differences"]) == set(labels[1:])
        for d in m["differences"].values():
            assert set(d) >= {"diff", "pct_change", "ci_low", "ci_high", "significant", "method", "n_pairs"}
            assert d["method"].startswith("paired t") if SEEDS < cmp.MIN_SEEDS or not m["percentile"] \
                else d["method"] == "paired bootstrap"
    assert "agent_task_p50_s" not in res["metrics"]  # no scenario has agents: no row at all
    assert set(res["spend_basis"]) == set(labels)  # how each scenario's spend per month was read


def test_identical_scenarios_never_differ(compared: dict[str, Any]) -> None:
    """The same file twice, and a copy under another name: every interval includes zero."""
    labels = [s["label"] for s in compared["scenarios"]]
    for key, m in compared["metrics"].items():
        for lb in labels[1:3]:
            d = m["differences"][lb]
            assert d["significant"] is False, (key, lb, d)
            assert d["ci_low"] <= 0 <= d["ci_high"], (key, lb, d)


def test_heavier_load_is_a_significant_latency_increase(compared: dict[str, Any]) -> None:
    heavy = compared["scenarios"][3]["label"]
    for key in ("ttft_p50_ms", "e2e_p50_ms", "e2e_p90_ms", "requests_per_s"):
        d = compared["metrics"][key]["differences"][heavy]
        assert d["significant"] is True and d["ci_low"] > 0, (key, d)


def test_table_and_out_files(files: dict[str, Path], compared: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["compare", str(files["base"]), str(files["heavy"]), "--seeds", str(SEEDS),
                            "--out", str(out), "--workers", "1"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    text = ANSI.sub("", r.stdout)
    assert "quickstart" in text and "heavy - quickstart" in text
    assert re.search(r"end-to-end p50 \(ms\).*\[\+[\d,.]+, \+[\d,.]+\] \*", text), text
    assert "ttest_rel" in text and "bootstrap" in text and "spend per month" in text
    res = json.loads((out / "compare.json").read_text())
    # One worker or two, the same per-seed values (each run is a function of its file and seed).
    assert res["metrics"]["e2e_p50_ms"]["scenarios"]["heavy"]["values"] == \
        compared["metrics"]["e2e_p50_ms"]["scenarios"]["heavy"]["values"]
    lines = (out / "compare.csv").read_text().splitlines()
    assert lines[0].startswith("metric,unit,scenario,baseline,n,mean,std,diff,pct_change,ci_low,ci_high,significant,"
                               "interval,seed_0")
    assert len(lines) == 1 + 2 * len(res["metrics"])
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == sorted(f"{k}.png" for k in res["metrics"])
    assert (out / "plots" / "ttft_p99_ms.png").read_bytes()[:4] == b"\x89PNG"


def test_one_seed_has_no_interval(files: dict[str, Path]) -> None:
    r = runner.invoke(app, ["compare", str(files["base"]), str(files["heavy"]), "--seeds", "1", "--seed-base", "5",
                            "--json", "--workers", "1"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    res = json.loads(r.stdout)
    assert res["seeds"] == [5] and "unavailable" in res["method"]
    d = res["metrics"]["ttft_p50_ms"]["differences"]["heavy"]
    assert d["ci_low"] is None and d["significant"] is None


def test_missing_metrics_and_failed_runs(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> None:
    """A metric only one scenario has is '-' for the other; a failed run (heavy, seed 1) is left out
    of the statistics (heavy's agent p50 is over seeds 0 and 2: 3 and 5 s) and reported; exit 1."""
    def fake(path: str, seed: int) -> dict[str, Any]:
        if path.endswith("heavy.yaml"):
            if seed == 1:
                return {"error": "boom"}
            return {"summary": {"agents": {"all": {"latency_s": {"p50": 3.0 + seed, "p90": 9.0}}},
                                "requests": {"failed": 0, "rejected": 0}}}
        return {"summary": {"latency_ms": {"ttft": {"p50": 10.0 + seed}}, "requests": {"failed": 0, "rejected": 0}}}

    monkeypatch.setattr(cmp, "_run_one", fake)
    r = runner.invoke(app, ["compare", str(files["base"]), str(files["heavy"]), "--seeds", "3", "--workers", "1"])
    assert r.exit_code == 1, (r.stderr, r.exception)
    text = ANSI.sub("", r.stdout)
    row = next(line for line in text.splitlines() if "agent task p50" in line)
    assert re.search(r"│\s+-\s+│\s+4\.00 ± 1\.41\s+│\s+-\s+│", row), row
    assert "heavy seed 1: boom" in ANSI.sub("", r.stderr)
    assert "Traceback" not in r.stderr + r.stdout


def test_bad_file_exits_2_without_traceback(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(short(QUICKSTART).replace("accelerator: h100-sxm", "accelerator: h100-sxn"))
    line = 1 + bad.read_text().splitlines().index("    accelerator: h100-sxn")
    out = tmp_path / "out"
    r = runner.invoke(app, ["compare", str(files["base"]), str(bad), "--out", str(out)])
    assert r.exit_code == 2, (r.stderr, r.exception)
    err = ANSI.sub("", r.stderr)
    assert err.startswith(f"error: {bad}, line {line}, field 'pools.h100.accelerator'"), err
    assert "Traceback" not in err and r.stdout.strip() == "" and not out.exists()


@pytest.mark.parametrize("args", [["--seeds", "0"], ["--workers", "0"], ["--seed-base", "-1"], ["ONE"]])
def test_bad_options_exit_2(files: dict[str, Path], args: list[str]) -> None:
    paths = [str(files["base"])] if args == ["ONE"] else [str(files["base"]), str(files["heavy"])]
    r = runner.invoke(app, ["compare", *paths, *(a for a in args if a != "ONE")])
    assert r.exit_code == 2, (r.stderr, r.exception)
    assert ANSI.sub("", r.stderr).startswith("error: ") and "Traceback" not in r.stderr
