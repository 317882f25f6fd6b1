"""The dashboard (streamlit.testing AppTest): load a scenario, change a knob, run, see the
numbers move; a broken scenario shows the loader's message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> float:
    """A tile's number as shown: '$3,291', '3.92k', '30.7%' (as 0.307), '0.978'."""
    for m in at.metric:
        if m.label == label:
            v = m.value.replace(",", "").lstrip("$")
            scale = {"k": 1e3, "M": 1e6, "%": 0.01}.get(v[-1], 1.0)
            return float(v.rstrip("kM%")) * scale
    raise KeyError(label)


def tile(at: AppTest, label: str) -> object:
    return next(m for m in at.metric if m.label == label)


def run_bundled(name: str) -> AppTest:
    at = app()
    at.selectbox(key="scenario").select(name).run()
    at.button(key="run").click().run()
    assert not at.exception, (name, at.exception)
    return at


def test_run_then_change_a_knob() -> None:
    at = app()
    assert at.selectbox(key="scenario").value == "quickstart.yaml"
    at.button(key="run").click().run()
    assert not at.exception, at.exception
    p99 = metric(at, "p99 TTFT (ms)")
    spend = metric(at, "spend $/month")
    assert p99 > 0 and spend > 0
    # Halve the fleet: two replicas on two GPUs. Latency goes up, spend halves.
    at.number_input(key="count:h100").set_value(2)
    at.number_input(key="replicas:chat").set_value(2)
    at.button(key="run").click().run()
    assert not at.exception, at.exception
    assert metric(at, "spend $/month") == pytest.approx(spend / 2, rel=0.01)
    assert metric(at, "p99 TTFT (ms)") > p99


def test_pin_shows_deltas() -> None:
    at = app()
    at.button(key="run").click().run()
    at.button(key="pin").click().run()
    at.number_input(key="rate:chat").set_value(30.0)
    at.button(key="run").click().run()
    deltas = {m.label: m.delta for m in at.metric}
    assert deltas["output tok/s"] not in (None, "", "0.0")


def test_broken_yaml_shows_the_loader_message() -> None:
    at = app()
    text = at.text_area[0].value
    at.text_area[0].set_value(text.replace("count: 4", "count: -4")).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert errors and "field 'pools.h100.count'" in errors[0] and "greater than or equal to 1" in errors[0]
    at.text_area[0].set_value("pools: [unclosed\n").run()
    assert any("malformed YAML" in e.value for e in at.error)


def test_every_bundled_scenario_loads() -> None:
    at = app()
    for name in at.selectbox(key="scenario").options:
        if name == "upload a YAML file...":
            continue
        at.selectbox(key="scenario").select(name).run()
        assert not at.exception, (name, at.exception)
        assert not at.error, (name, [e.value for e in at.error])


def test_side_by_side_second_scenario() -> None:
    """N seeds of the comparison's own (not the sidebar's), the same statistics and table as
    `stacksim compare`: readable cells, a difference with its paired interval, a % change, and
    the few-seeds warning below compare.MIN_SEEDS."""
    import stacksim.compare as cmp

    at = app()
    at.sidebar.number_input(key="seed:quickstart.yaml").set_value(7).run()
    at.button(key="run").click().run()
    at.number_input(key="compare_seeds").set_value(3).run()
    at.selectbox(key="compare").select("two-tier-fleet.yaml").run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "two-tier-fleet" in d.value.columns)
    assert list(table.columns) == ["metric", "this scenario (quickstart)", "two-tier-fleet",
                                   "two-tier-fleet - this scenario (quickstart)", "change"]
    row = table.set_index("metric").loc["spend total ($/month)"]
    assert row["this scenario (quickstart)"] == "10,191 ± 0" and row["change"] == "+187.6%"
    ttft = table.set_index("metric").loc["TTFT p99 (ms)"]
    assert re.fullmatch(r"\+[\d,.]+ \[\+[\d,.]+, \+[\d,.]+\] \*", ttft.iloc[2]), ttft.iloc[2]
    # The same numbers as the CLI's statistics over seeds 0..2 (the sidebar's seed 7 plays no part).
    quick, two = (Path(APP).parents[1] / "scenarios" / f for f in ("quickstart.yaml", "two-tier-fleet.yaml"))
    res = cmp.compare([quick, two], seeds=3, workers=1)
    assert ttft.iloc[2] == cmp.fmt_diff("ms", res["metrics"]["ttft_p99_ms"]["differences"]["two-tier-fleet"])
    assert any("too unstable" in w.value for w in at.warning)


def test_upload_a_broken_file_shows_the_error_and_a_good_one_runs() -> None:
    at = app()
    at.selectbox(key="scenario").select("upload").run()
    good = (Path(APP).parents[1] / "scenarios" / "quickstart.yaml").read_bytes()
    at.file_uploader(key="upload").upload("mine.yaml", good.replace(b"replicas: 4", b"replicas: four"), "application/x-yaml").run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert errors and "mine.yaml" in errors[0] and "deployments.chat.replicas" in errors[0]
    at.file_uploader(key="upload").upload("mine.yaml", good, "application/x-yaml").run()
    at.button(key="run").click().run()
    assert not at.exception, at.exception
    assert metric(at, "p99 TTFT (ms)") > 0


def test_sweep_results_tab(tmp_path: Path) -> None:
    from stacksim.sweep.runner import run_sweep

    base = Path(APP).parents[1] / "scenarios" / "quickstart.yaml"
    (tmp_path / "s.yaml").write_text(f"base: {base}\nparameters:\n  workloads.chat.arrival.rate_per_s: [5, 10]\n  horizon_s: [120.0]\n")
    run_sweep(tmp_path / "s.yaml", tmp_path / "out", workers=1)
    at = app()
    at.text_input(key="sweep_dir").set_value(str(tmp_path / "out")).run()
    assert not at.exception, at.exception
    assert len(at.dataframe[-1].value) == 2


def test_gateway_scenarios_run_and_show_the_gateway() -> None:
    """Scenarios with a gateway (and none or some deployments) run and show the gateway table."""
    at = app()
    for name in ("starting-fresh-2026.yaml", "sovereign-eu-2026.yaml"):
        at.selectbox(key="scenario").select(name).run()
        at.button(key="run").click().run()
        assert not at.exception, (name, at.exception)
        assert any("**gateway**" in m.value for m in at.markdown), name


def test_spend_agents_and_deprecation_panels() -> None:
    """A scenario with a lifecycle section shows the projected month, spend by a chosen dimension and the risk."""
    at = app()
    at.selectbox(key="scenario").select("starting-fresh-2026.yaml").run()
    at.button(key="run").click().run()
    assert not at.exception, at.exception
    md = [m.value for m in at.markdown]
    assert any(m.startswith("**a month, projected:") for m in md)
    assert any(m.startswith("**deprecation risk") for m in md)
    at.selectbox(key="spend_dim").select("provider").run()
    assert not at.exception, at.exception


def test_gpu_mix_tab_plans_the_scenario_as_edited() -> None:
    """The GPU-mix tab plans the selected deployment over chosen accelerator types (the planner of
    `stacksim mix`) and shows each rate's cheapest single type and mix; bad rates are named."""
    at = app()
    at.multiselect(key="mix_accs").set_value(["h100-sxm", "a100-sxm-80gb"]).run()
    at.number_input(key="mix_horizon").set_value(30.0)
    at.number_input(key="mix_tpot").set_value(200.0)
    at.number_input(key="mix_ttft").set_value(0.0)  # the quickstart's 500 ms no 16k-token prompt meets
    at.text_input(key="mix_rates").set_value("2, 12x").run()
    at.button(key="mix_run").click().run()
    assert any("not a list of numbers" in e.value for e in at.error)
    at.text_input(key="mix_rates").set_value("2, 12").run()
    at.button(key="mix_run").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["req/s"]) == [2.0, 12.0]
    assert (table["mix $/h"] <= table["single $/h"] + 1e-9).all()
    assert (table["SLO met (mix)"] >= 99.0).all()  # shown as a percentage
    assert table["saving"].between(0.0, 100.0).all() and "index" not in table.columns


def test_spend_and_slo_tiles_equal_summary_json() -> None:
    """Every number on the spend, SLO and rejected tiles is the same number of summary.json (the
    summary the page offers for download), rounded for the tile. A stack of hosted APIs only
    spends on API tokens, not GPUs: the tile shows the total, and its split is one click away."""
    at = run_bundled("starting-fresh-2026.yaml")
    s = at.session_state["result"]["summary"]
    mo = s["spend"]["monthly"]
    assert mo["gpu_usd"] == 0 and mo["total_usd"] > 1000  # the old tile read $0
    assert tile(at, "spend $/month").value == f"${mo['total_usd']:,.0f}"
    assert metric(at, "spend $/month") == pytest.approx(mo["total_usd"], abs=0.5)
    assert mo["total_usd"] == pytest.approx(sum(v for k, v in mo.items() if k != "total_usd"), abs=0.02)
    split = next(d.value for d in at.dataframe if "hosted APIs" in d.value.index)
    assert split.loc["total", "a month (USD)"] == mo["total_usd"]
    assert split.loc["hosted APIs", "a month (USD)"] == mo["api_usd"]
    assert split.loc["egress", "a month (USD)"] == mo["egress_usd"]
    assert split.loc["total", "this run (USD)"] == s["spend"]["run"]["total_usd"]
    # SLO attainment counts served requests; the rejected share sits beside it and says so.
    slo_tile = tile(at, "SLO attainment")
    assert metric(at, "SLO attainment") == pytest.approx(s["slo"]["attainment_all"], abs=5e-4)
    assert "completed after warm-up" in slo_tile.help and "rejected" in slo_tile.help.lower()
    r = s["requests"]
    assert r["rejected_share"] == pytest.approx(r["rejected"] / r["arrived"], abs=1e-6)
    assert r["rejected_share"] > 0.2  # budgets turn many away in this scenario
    assert tile(at, "rejected").value == f"{r['rejected_share']:.1%}"
    assert "requests.rejected_share" in tile(at, "rejected").help


def test_gpu_tiles_and_plots() -> None:
    """With GPUs the spend tile is the month's total too (here all accelerators), and the page
    shows the latency CDFs and the levels over time."""
    at = run_bundled("quickstart.yaml")
    s = at.session_state["result"]["summary"]
    assert tile(at, "spend $/month").value == f"${s['spend']['monthly']['total_usd']:,.0f}"
    assert s["spend"]["monthly"]["total_usd"] == pytest.approx(s["spend"]["gpu_usd_per_month"], rel=1e-6)
    assert len(at.get("image")) == 2
    assert not any("No self-hosted pools" in c.value for c in at.caption)


def test_no_gpus_no_empty_level_plots() -> None:
    """A stack of hosted APIs only gets its latency CDFs and one line instead of four empty plots."""
    at = run_bundled("starting-fresh-2026.yaml")
    assert len(at.get("image")) == 1
    assert any(c.value.startswith("No self-hosted pools") for c in at.caption)


def test_latency_lines_cover_every_served_request() -> None:
    """With a gateway and a disaggregated group in one scenario, the latency CDFs (dashboard and
    PNGs: report/plots.py's latency_groups) draw the group's clients and the gateway's calls;
    each request is on exactly one line."""
    import yaml

    from stacksim import load_scenario_text, run_scenario
    from stacksim.report.plots import latency_groups

    eng = {"max_model_len": 16384}
    sc = {
        "name": "disagg-and-gateway", "horizon_s": 20.0, "drain": True,
        "pools": {"h100": {"accelerator": "h100-sxm", "count": 2, "price_usd_per_gpu_hour": 2.0}},
        "deployments": {"pre": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 1, "engine": eng},
                        "dec": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 1, "engine": eng}},
        "disaggregated": {"g": {"prefill": "pre", "decode": "dec"}},
        "providers": {"anthropic": {"provider": "anthropic", "region": "global"}},
        "gateway": {"regions": ["us-east"],
                    "model_list": [{"model_name": "frontier", "litellm_params": {"model": "anthropic/claude-sonnet-4-5-20250929"}}]},
        "workloads": {
            "rag": {"target": "g", "arrival": {"kind": "poisson", "rate_per_s": 4.0},
                    "input_tokens": {"kind": "uniform", "low": 100, "high": 6000}, "output_tokens": {"kind": "uniform", "low": 1, "high": 200}},
            "chat": {"target": "frontier", "arrival": {"kind": "poisson", "rate_per_s": 2.0},
                     "input_tokens": {"kind": "fixed", "value": 500}, "output_tokens": {"kind": "fixed", "value": 50}},
        },
    }
    df = run_scenario(load_scenario_text(yaml.safe_dump(sc), "t.yaml"), seed=1).requests
    groups = dict(latency_groups(df))
    assert set(groups) == {"disaggregated g", "route frontier"}
    assert groups["disaggregated g"].sum() == (df["via"] == "disaggregated").sum() > 0
    cover = np.sum([sel.astype(int) for sel in groups.values()], axis=0)
    assert (cover == 1).all()  # every row once, none twice


def test_tables_read_as_words_and_percentages() -> None:
    """Pool and deployment tables: named columns (no raw field names, no row numbers), busy next
    to MFU and MBU, fractions as percentages equal to summary.json's x 100."""
    at = run_bundled("quickstart.yaml")
    s = at.session_state["result"]["summary"]
    tables = [d.value for d in at.dataframe]
    pools = next(t for t in tables if "pool" in t.columns)
    deps = next(t for t in tables if "deployment" in t.columns)
    for t in (pools, deps):
        assert not any("_" in str(c) for c in t.columns), list(t.columns)
        assert {"busy", "MFU", "MBU"} <= set(t.columns)
    row = deps.set_index("deployment").loc["chat"]
    d = s["deployments"]["chat"]
    assert row["busy"] == pytest.approx(d["utilisation"] * 100) and row["MFU"] == pytest.approx(d["mfu"] * 100)
    assert row["MBU"] == pytest.approx(d["mbu"] * 100) and 0 < row["MFU"] < row["busy"]
    assert pools.set_index("pool").loc["h100", "MBU"] == pytest.approx(s["pools"]["h100"]["mbu"] * 100)


def test_plots_have_units_and_slo_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every axis of the latency CDFs and the levels over time is labelled with its unit, and a
    CDF has a dashed line at its SLO target exactly when the scenario sets one."""
    import streamlit as st

    figures = []
    original = st.pyplot

    def record(fig, *args, **kwargs):  # type: ignore[no-untyped-def]
        figures.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(st, "pyplot", record)
    at = run_bundled("quickstart.yaml")
    targets = at.session_state["result"]["summary"]["slo"]["targets_ms"]
    cdf, levels = figures[-2:]
    for ax, key in zip(cdf.axes, ("ttft_ms", "tpot_ms", "e2e_ms")):
        assert ax.get_xlabel() == "ms (log scale)" and ax.get_ylabel() == "fraction of requests" and ax.get_title()
        slo = [ln for ln in ax.get_lines() if ln.get_label().startswith("SLO")]
        assert len(slo) == (1 if targets.get(key) else 0), key
        if slo:
            assert slo[0].get_xdata()[0] == targets[key]
    assert any(targets.values())
    for ax in levels.axes:
        assert "simulated time (s)" in ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
