"""The dashboard (streamlit.testing AppTest): load a scenario, change a knob, run, see the
numbers move; a broken scenario shows the loader's message."""

from __future__ import annotations

from pathlib import Path

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
    for m in at.metric:
        if m.label == label:
            v = m.value.replace(",", "")
            scale = {"k": 1e3, "M": 1e6}.get(v[-1], 1.0)
            return float(v.rstrip("kM")) * scale
    raise KeyError(label)


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
    at = app()
    at.button(key="run").click().run()
    at.selectbox(key="compare").select("two-tier-fleet.yaml").run()
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    assert list(table.columns) == ["this run (quickstart)", "two-tier-fleet"]
    assert table.loc["spend $/month", "two-tier-fleet"] > table.loc["spend $/month", "this run (quickstart)"]


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
    assert (table["SLO met (mix)"] >= 0.99).all()
