"""Spend: prices by purchase type, the run's spend summed by hand, idle reserved capacity,
attribution, the monthly projection with budgets, and the price catalog's provenance."""

from __future__ import annotations

import copy
import csv
from typing import Any

import numpy as np
import pytest
import yaml

from stacksim.catalog import get_accelerator
from stacksim.engine.simulation import Simulation
from stacksim.errors import ScenarioError
from stacksim.finops import build_prices
from stacksim.finops.pricing import DATA, RESERVED_DISCOUNT, SPOT_RATIO, pool_price
from stacksim.metrics.summary import Result, build_result
from stacksim.scenario import load_scenario_text
from stacksim.scenario.schema import Pool


def run(sc: dict[str, Any], seed: int = 1) -> tuple[Simulation, Result]:
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "spend-test.yaml")
    sim = Simulation(rs, seed=seed).run()
    return sim, build_result(sim)


def fixed(n: int) -> dict[str, Any]:
    return {"kind": "fixed", "value": n}


BASE: dict[str, Any] = {
    "name": "spend",
    "horizon_s": 120,
    "pools": {
        "od": {"accelerator": "h100-sxm", "count": 2, "price_usd_per_gpu_hour": 4.0},
        "res": {"accelerator": "a100-sxm-80gb", "count": 4, "purchase": "reserved_1y", "price_usd_per_gpu_hour": 1.5},
    },
    "deployments": {"small": {"model": "llama-3.1-8b", "pool": "od", "replicas": 1}},
    "providers": {"oa": {"provider": "openai", "region": "us-east", "rpm_limit": 1_000_000, "tpm_limit": 1_000_000_000}},
    "gateway": {
        "regions": ["us-east"],
        "model_list": [{"model_name": "gpt", "litellm_params": {"model": "oa/gpt-4o"}}],
        "teams": {"a": {"max_budget": 0.02, "budget_duration": "1d"}},
    },
    "workloads": {
        "direct": {"target": "small", "arrival": {"kind": "poisson", "rate_per_s": 2.0}, "input_tokens": fixed(300),
                   "output_tokens": fixed(50), "tags": {"team": "b"}},
        "api": {"target": "gpt", "arrival": {"kind": "poisson", "rate_per_s": 1.0}, "input_tokens": fixed(200),
                "output_tokens": fixed(20), "tags": {"team": "a"}},
    },
}


# --------------------------------------------------------------------------- prices


def pool(**kw: Any) -> Pool:
    return Pool.model_validate({"accelerator": "h100-sxm", "count": 1, **kw})


def test_prices_by_purchase_type() -> None:
    acc = get_accelerator("h100-sxm")
    od, basis = pool_price(pool(), acc)
    assert od == acc.default_price_usd_per_gpu_hour and "on demand" in basis
    for kind, d in RESERVED_DISCOUNT.items():
        p, b = pool_price(pool(purchase=kind), acc)
        assert p == pytest.approx(od * (1 - d)) and kind in b
    spot, b = pool_price(pool(purchase="spot"), acc)  # the catalog's only H100 spot row: GCP a3-highgpu-1g
    assert spot == pytest.approx(6.571) and "GCP" in b
    a100 = get_accelerator("a100-sxm-80gb")  # no spot row: on demand x the spot ratio
    s2, b2 = pool_price(Pool.model_validate({"accelerator": "a100-sxm-80gb", "count": 1, "purchase": "spot"}), a100)
    assert s2 == pytest.approx(a100.default_price_usd_per_gpu_hour * SPOT_RATIO) and "ratio" in b2
    hs, b3 = pool_price(pool(purchase="reserved_1y", price_provider="Hyperstack"), acc)
    assert hs == pytest.approx(2.72) and "term not stated" in b3
    aws, _ = pool_price(pool(price_provider="aws"), acc)
    assert aws == pytest.approx(6.88)
    neo, _ = pool_price(pool(price_tier="neocloud"), acc)
    with open(DATA, newline="", encoding="utf-8") as f:
        rows = [float(r["usd_per_gpu_hour"]) for r in csv.DictReader(f) if r["accelerator"] == "h100-sxm"
                and r["purchase"] == "on_demand" and r["tier"] == "neocloud"]
    assert neo == pytest.approx(float(np.median(rows)))


def test_owned_price_is_amortised_capex_plus_power() -> None:
    acc = get_accelerator("h100-sxm")
    p, basis = pool_price(pool(purchase="owned", owned={"capex_usd_per_gpu": 35040.0, "amortization_years": 4,
                                                        "power_usd_per_kwh": 0.10}), acc)
    capex = 35040.0 / (4 * 8760)
    power = 0.700 * 1.0 * 1.56 * 0.10  # 700 W TDP, at TDP, PUE 1.56
    assert p == pytest.approx(capex + power) and "owned" in basis


@pytest.mark.parametrize("patch, needle", [
    ({"purchase": "owned"}, "purchase: owned needs owned:"),
    ({"price_provider": "NoSuchCloud"}, "no prices from 'NoSuchCloud'"),
    ({"accelerator": "l4"}, "no on-demand price for l4"),
])
def test_bad_pool_prices_say_what_would_work(patch: dict[str, Any], needle: str) -> None:
    sc = copy.deepcopy(BASE)
    sc["pools"]["od"] = {"accelerator": "h100-sxm", "count": 2, **patch}
    with pytest.raises(ScenarioError) as exc:
        load_scenario_text(yaml.safe_dump(sc), "bad.yaml")
    assert needle in str(exc.value) and "pools.od" in str(exc.value)


def test_price_catalog_regenerates_from_the_shared_facts() -> None:
    with open(DATA, newline="", encoding="utf-8") as f:
        stored = list(csv.DictReader(f))
    assert stored == build_prices.rows()


# --------------------------------------------------------------------------- the run's spend


def test_spend_equals_the_hand_computed_sum() -> None:
    sim, res = run(BASE)
    s = res.summary
    sp = s["spend"]
    hours = s["time"]["end_s"] / 3600.0
    gpu = (2 * 4.0 + 4 * 1.5) * hours
    assert sp["run"]["gpu_usd"] == pytest.approx(gpu, rel=1e-6)
    calls = res.requests[res.requests["via"] == "gateway"]
    gw = sim.gateway
    assert gw is not None
    t = gw.targets[0]
    ok = calls["status"] == "completed"
    api = ok.sum() * (200 * t.usd_in_per_token + 20 * t.usd_out_per_token)
    assert sp["run"]["api_usd"] == pytest.approx(api, rel=1e-6)
    assert sp["run"]["total_usd"] == pytest.approx(gpu + api + sp["run"]["egress_usd"], rel=1e-6)
    # Month: pools at 730 h; the API at x 730 / hours, but team a's budget caps it at $0.02 a day.
    assert sp["monthly"]["gpu_usd"] == pytest.approx((2 * 4.0 + 4 * 1.5) * 730, abs=0.01)
    assert sp["monthly"]["api_usd"] == pytest.approx(0.02 * 730 / 24, abs=0.01)
    assert "team:a" in sp["monthly_basis"]


def test_reserved_capacity_is_charged_when_idle() -> None:
    _, res = run(BASE)
    res_pool = res.summary["spend"]["pools"]["res"]
    hours = res.summary["time"]["end_s"] / 3600.0
    assert res_pool["committed"] and res_pool["purchase"] == "reserved_1y"
    assert res_pool["run_usd"] == pytest.approx(4 * 1.5 * hours, rel=1e-6)
    assert res_pool["idle_run_usd"] == pytest.approx(res_pool["run_usd"], rel=1e-6)  # no deployment uses it
    assert res_pool["month_usd"] == pytest.approx(4 * 1.5 * 730, abs=0.01)


def test_attribution_adds_up_and_follows_the_tokens() -> None:
    _, res = run(BASE)
    df = res.requests
    sp = res.summary["spend"]
    dep_usd = res.summary["deployments"]["small"]["spend_usd"]
    direct = df[df["via"] == "direct"]
    assert direct["gpu_cost_usd"].sum() == pytest.approx(dep_usd, rel=1e-9)
    # Same lengths, nothing cached: every request that did its work got the same share.
    worked = direct[direct["status"].isin(["completed", "running"])]
    assert np.allclose(worked["gpu_cost_usd"], dep_usd / len(worked))
    for dim, split in sp["attribution"].items():
        total = sum(v["usd"] for v in split.values())
        assert total == pytest.approx(float(df["cost_total_usd"].sum()), rel=1e-6), dim
    team = sp["attribution"]["team"]
    assert team["b"]["usd"] == pytest.approx(dep_usd, rel=1e-6)
    assert team["a"]["usd"] == pytest.approx(sp["run"]["api_usd"] + sp["run"]["egress_usd"], rel=1e-6)
    assert set(sp["attribution"]["provider"]) >= {"self-hosted", "openai"}
    assert sp["unit_costs"]["usd_per_request"] > 0
