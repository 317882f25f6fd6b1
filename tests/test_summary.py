"""The summary's pool figures: spend and utilisation count every GPU of the pool, used or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacksim import load_scenario_text, run_scenario

QUICKSTART = (Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml").read_text()


def test_idle_gpus_lower_pool_utilisation_and_cost_money() -> None:
    text = QUICKSTART.replace("count: 4", "count: 8").replace("horizon_s: 600", "horizon_s: 120").replace("warmup_s: 60", "warmup_s: 10")
    s = run_scenario(load_scenario_text(text, "q.yaml")).summary
    pool, dep = s["pools"]["h100"], s["deployments"]["chat"]
    assert pool["gpus_used"] == 4 and pool["count"] == 8
    assert pool["utilisation"] == pytest.approx(dep["utilisation"] / 2, abs=2e-6)  # both rounded to 1e-6
    assert pool["idle_spend_usd"] == pytest.approx(pool["spend_usd"] / 2, abs=2e-6)  # rounded to 1e-6 USD
    assert pool["mean_queue"] == pytest.approx(dep["mean_queue"] * dep["replicas"], abs=1e-3)
    assert 0.0 <= pool["utilisation"] <= 1.0
