"""Model lifecycles: the deprecation history as read, the per-provider hazards fitted to it, the
matching of hosted model ids, and the deprecation-risk Monte Carlo (never wall-clock)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from datetime import date

import numpy as np
import pytest
import yaml

from stacksim.lifecycle import ModelUse, deprecation_risk, fit_provider_hazards, lifecycle_table
from stacksim.lifecycle.data import DATA_AS_OF, LABS, load_rows
from stacksim.lifecycle.hazard import Lifetimes, _fit_one, km_median, lifetimes, notice_events
from stacksim.lifecycle.match import NO_DATA, Match, find
from stacksim.lifecycle.risk import SELF_HOSTED, _draw, _Plan, add_months
from stacksim.scenario import load_scenario_text
from stacksim.scenario.schema import Scenario
from stacksim.scenario.schema_lifecycle import Lifecycle
from tests.conftest import ROOT

# Fitted median lifetime vs the Kaplan-Meier median of the same data. With 10-30 lifetimes per
# provider the KM median itself moves by more than this between neighbouring order statistics
# (Anthropic's 5th and 6th lifetimes are 397 and 485 d), so 10% is a tight check of the fit.
MEDIAN_TOLERANCE = 0.10


def spec(**kw: object) -> Lifecycle:
    base: dict[str, object] = {"start_date": date(2026, 12, 1), "horizon_months": 12, "simulations": 2000}
    base.update(kw)
    return Lifecycle.model_validate(base)


def use(provider: str, model: str, share: float = 0.1, spend: float = 100.0, *,
        catalog_model: str | None = None, self_hosted: bool = False, requests: int = 0,
        input_tokens: int = 0, output_tokens: int = 0) -> ModelUse:
    return ModelUse(provider, model, catalog_model, self_hosted, share, spend,
                    requests=requests, input_tokens=input_tokens, output_tokens=output_tokens)


def by_key(out: dict, key: str) -> dict:
    return next(m for m in out["models"] if m["key"] == key)


# --------------------------------------------------------------------------- the history


def test_history_reproduces_reference_counts_and_medians() -> None:
    """REFERENCE.md section 3 ([C]): lifetime medians per row, history (<= 2025) and with 2026."""
    rows = load_rows()
    assert len(rows) == 97
    assert {lab: sum(r.lab == lab for r in rows) for lab in LABS} == {"OpenAI": 51, "Anthropic": 19, "Google": 27}
    expected = {"OpenAI": (17, 458, 30, 556), "Anthropic": (6, 490, 10, 441), "Google": (9, 274, 14, 321)}
    for lab, (n_hist, med_hist, n_all, med_all) in expected.items():
        hist = [r.lifetime_days for r in rows if r.lab == lab and r.lifetime_days is not None
                and r.status_flag == "verified-history"]
        every = [r.lifetime_days for r in rows if r.lab == lab and r.lifetime_days is not None]
        assert (len(hist), len(every)) == (n_hist, n_all), lab
        assert np.median(hist) == med_hist and np.median(every) == med_all, lab


def test_notices_per_distinct_announcement() -> None:
    """Anthropic's notices are REFERENCE.md's 62, 63, 76, 114, 181, 189 d plus 2026's 60, 61, 62;
    OpenAI's 2023-2025 median is 181.5 d; Google's stable models carry 365 d from release."""
    anth = sorted((d - a).days for a, _, d in notice_events(load_rows(), "Anthropic", DATA_AS_OF))
    assert anth == [60, 61, 62, 62, 63, 76, 114, 181, 189]
    oai = [(d - a).days for a, _, d in notice_events(load_rows(), "OpenAI", date(2025, 12, 31))]
    assert len(oai) == 18 and np.median(oai) == 181.5
    goog = [(s - a).days for a, s, _ in notice_events(load_rows(), "Google", DATA_AS_OF)]
    assert set(goog) == {365}


def test_slips_are_read_from_the_notes() -> None:
    rows = {r.ids[0]: r for r in load_rows()}
    sonnet = rows["claude-3-5-sonnet-20240620"]
    assert (sonnet.scheduled, sonnet.shutdown, sonnet.slip_days) == (date(2025, 10, 22), date(2025, 10, 28), 6)
    flash = rows["gemini-2.5-flash"]
    assert (flash.scheduled, flash.shutdown) == (date(2026, 6, 17), date(2026, 12, 1))
    assert rows["text-bison@001"].slip_days == 182
    # Dates in notes that are not a moved schedule: a legacy note, page versions that disagree.
    assert rows["gpt-4-0314"].slip_days == 0
    assert rows["gpt-4o-realtime-preview-2024-10-01"].shutdown == date(2025, 9, 10)
    # No published schedule ever moved earlier.
    assert all(r.slip_days >= 0 for r in load_rows())


def test_lifecycle_table_has_every_row() -> None:
    table = lifecycle_table()
    assert len(table) == 97
    assert {"provider", "model", "release_date", "announced", "shutdown", "lifetime_days", "censored",
            "notice_days", "fitted_median_shutdown"} <= set(table.columns)
    assert int(table["censored"].sum()) == 4  # gpt-5 and o3 snapshots, gemini-2.5-pro/flash


# --------------------------------------------------------------------------- the hazards


def test_km_median_is_the_sample_median_without_censoring() -> None:
    for n in (5, 6, 11):
        t = np.arange(1.0, n + 1) * 37
        assert km_median(Lifetimes(t, np.ones(n, dtype=int))) == np.median(t)


def test_mle_with_censoring_recovers_known_parameters() -> None:
    """Draw lognormal and Weibull lifetimes, censor the longest third, fit: the parameters return."""
    rng = np.random.default_rng(11)
    n, cut = 4000, 700.0
    t = np.exp(rng.normal(6.2, 0.45, n))
    life = Lifetimes(np.minimum(t, cut), (t <= cut).astype(int))
    assert 0.2 < 1 - life.event.mean() < 0.5
    p, _ = _fit_one("lognormal", life)
    assert p["mu"] == pytest.approx(6.2, abs=0.03) and p["sigma"] == pytest.approx(0.45, abs=0.03)
    t = 600.0 * rng.weibull(2.5, n)
    life = Lifetimes(np.minimum(t, cut), (t <= cut).astype(int))
    p, _ = _fit_one("weibull", life)
    assert p["shape"] == pytest.approx(2.5, rel=0.06) and p["scale_days"] == pytest.approx(600, rel=0.03)


def test_fitted_median_reproduces_the_empirical_median() -> None:
    """The family in use (lognormal: its median is exp(mu), which the data pin down well). The
    Weibull misses OpenAI's median by 12% (623 vs 557 d) and is not used."""
    fits = fit_provider_hazards()
    for lab, fit in fits.items():
        km = km_median(lifetimes(load_rows(), lab, DATA_AS_OF))
        assert fit.empirical_median_days == km
        assert abs(fit.median_days - km) <= MEDIAN_TOLERANCE * km, (lab, fit.median_days, km)
        assert fit.sf(fit.median_days) == pytest.approx(0.5)


def test_family_is_chosen_by_summed_aic() -> None:
    fits = fit_provider_hazards()
    f0 = fits["OpenAI"]
    total = {k: sum(f.aic[k] for f in fits.values()) for k in f0.aic}
    assert f0.family == min(total, key=total.__getitem__)
    assert all(f.family == f0.family for f in fits.values())
    assert fits["OpenAI"].n_censored == 2 and fits["Google"].n_censored == 2


def test_conditional_lifetime_draws_follow_the_survival_function() -> None:
    fit = fit_provider_hazards()["OpenAI"]
    age, h = 600.0, 365.0
    t = fit.sample_lifetime(np.random.default_rng(3), age, 40_000)
    assert t.min() >= age
    want = 1 - float(fit.sf(age + h)) / float(fit.sf(age))
    got = float(np.mean(t <= age + h))
    assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / t.size)


def test_notice_draws_come_from_the_observed_notices() -> None:
    fit = fit_provider_hazards()["Anthropic"]
    n = fit.sample_notice(np.random.default_rng(0), 500, longer_than_days=100)
    assert set(n.tolist()) <= {114.0, 181.0, 189.0}
    assert set(fit.sample_notice(np.random.default_rng(0), 5, longer_than_days=400).tolist()) == {400.0}


# --------------------------------------------------------------------------- matching


def test_matching_hosts_and_ids() -> None:
    rows = load_rows()
    m = find("anthropic", "claude-3-5-haiku-20241022", None, rows)
    assert (m.lab, m.how, m.row and m.row.model) == ("Anthropic", "exact", "claude-3-5-haiku-20241022")
    m = find("bedrock", "anthropic.claude-3-haiku-20240307-v1:0", None, rows)
    assert (m.lab, m.row and m.row.model) == ("Anthropic", "claude-3-haiku-20240307")
    m = find("vertex", "claude-3-haiku@20240307", None, rows)
    assert (m.how, m.row and m.row.model) == ("normalised", "claude-3-haiku-20240307")
    m = find("azure-openai", "gpt-4-0613", None, rows)
    assert (m.lab, m.row and m.row.model) == ("OpenAI", "gpt-4-0613")
    m = find("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4.5", rows)
    assert (m.row, m.release, m.release_basis) == (None, date(2025, 9, 29), "snapshot date in model id")
    m = find("openai", "gpt-4o", "gpt-4o", rows)  # an alias: not its retired 2024-05-13 snapshot
    assert m.row is None and m.release == date(2024, 5, 13) and "alias" in m.release_basis
    for provider, model in [("groq", "llama-3.3-70b-versatile"), ("together", "openai/gpt-oss-120b"),
                            ("bedrock", "meta.llama3-3-70b-instruct-v1:0"), ("mistral", "mistral-large-2512")]:
        assert find(provider, model, None, rows).lab is None
        assert NO_DATA in find(provider, model, None, rows).notes[0]


# --------------------------------------------------------------------------- the Monte Carlo


def test_known_shutdown_inside_the_horizon_retires_on_that_date() -> None:
    models = [use("openai", "gpt-5-2025-08-07")]  # published shutdown 2026-12-11
    m = by_key(deprecation_risk(models, {}, spec(horizon_months=1), seed=1), "openai/gpt-5-2025-08-07")
    assert (m["lifecycle"], m["p_retire"], m["expected_retirement_date"]) == ("known", 1.0, "2026-12-11")
    assert m["expected_notice_days"] == 183  # announced 2026-06-11


def test_known_shutdown_after_the_horizon_has_probability_zero() -> None:
    """Published dates only moved later in the history (never earlier), so a model whose published
    shutdown falls after the horizon does not retire within it, whatever its age."""
    models = [use("openai", "gpt-5-2025-08-07")]
    m = by_key(deprecation_risk(models, {}, spec(start_date=date(2026, 7, 1), horizon_months=3), seed=1),
               "openai/gpt-5-2025-08-07")
    assert m["p_retire"] == 0.0 and m["expected_retirement_date"] is None


def test_a_schedule_not_yet_announced_at_the_as_of_date_is_not_known() -> None:
    """The exception: looking from before its announcement (2026-06-11), the same model has only
    its provider's hazard, and may retire inside a horizon that ends before its published date."""
    models = [use("openai", "gpt-5-2025-08-07")]
    s = spec(start_date=date(2026, 1, 1), horizon_months=9, as_of=date(2026, 1, 1))
    m = by_key(deprecation_risk(models, {}, s, seed=1), "openai/gpt-5-2025-08-07")
    assert m["lifecycle"] == "hazard" and 0 < m["p_retire"] < 1


def test_an_announcement_without_a_date_draws_a_notice_longer_than_the_time_elapsed() -> None:
    """No row of the table is like this today; a row with its shutdown date removed stands in."""
    row = next(r for r in load_rows() if r.ids == ("claude-3-haiku-20240307",))  # announced 2026-02-19
    row = replace(row, shutdown=None, scheduled=None)
    fit = fit_provider_hazards()["Anthropic"]
    plan = _Plan(use("anthropic", "claude-3-haiku-20240307"), "announced", Match(lab="Anthropic", row=row))
    start = as_of = date(2026, 4, 1)  # 41 days after the announcement
    days, notice = _draw(plan, fit, as_of, start, 1000, np.random.default_rng(0))
    assert notice.min() > 41 and set(notice.tolist()) <= set(fit.notice_days)
    assert np.array_equal(days, (row.announced - start).days + notice)  # type: ignore[operator]


def test_a_model_shut_down_before_the_start_is_already_retired() -> None:
    models = [use("openai", "gpt-4-0613")]  # shut down 2026-10-23
    m = by_key(deprecation_risk(models, {}, spec(), seed=1), "openai/gpt-4-0613")
    assert m["p_retire"] == 1.0 and m["p_retire_before_start"] == 1.0
    assert "already past" in m["reason"]


def test_self_hosted_never_retires() -> None:
    models = [use("pool-a", "llama-3.3-70b", self_hosted=True, share=0.5, spend=900.0)]
    out = deprecation_risk(models, {"r": ["pool-a/llama-3.3-70b"]}, spec(horizon_months=120), seed=1)
    m = out["models"][0]
    assert (m["p_retire"], m["reason"], m["expected_migration_cost_usd"]) == (0.0, SELF_HOSTED, None)
    assert out["routes"]["r"]["p_lose_primary"] == 0.0


def test_open_weights_on_a_host_are_reported_not_modelled() -> None:
    models = [use("groq", "llama-3.3-70b-versatile", share=0.25, spend=40.0), use("openai", "gpt-4o", share=0.75)]
    out = deprecation_risk(models, {"r": ["groq/llama-3.3-70b-versatile"]}, spec(), seed=1)
    m = by_key(out, "groq/llama-3.3-70b-versatile")
    assert m["p_retire"] is None and NO_DATA in m["reason"]
    assert out["overall"]["traffic_share_not_modelled"] == 0.25
    assert out["routes"]["r"]["p_lose_primary"] is None


MIX = [
    use("openai", "gpt-4o", catalog_model="gpt-4o", share=0.3, spend=3000.0,
        requests=1000, input_tokens=2_000_000, output_tokens=300_000),
    use("azure-openai", "gpt-4o", catalog_model="gpt-4o", share=0.05, spend=500.0),
    use("anthropic", "claude-sonnet-4-5-20250929", catalog_model="claude-sonnet-4.5", share=0.2, spend=2000.0,
        requests=700, input_tokens=1_400_000, output_tokens=200_000),
    use("google", "gemini-2.5-flash", catalog_model="gemini-2.5-flash", share=0.1, spend=100.0),
    use("openai", "gpt-4o-mini", catalog_model="gpt-4o-mini", share=0.1, spend=50.0),
    use("groq", "llama-3.3-70b-versatile", share=0.1, spend=80.0),
    use("vllm", "llama-3.3-70b", self_hosted=True, share=0.15, spend=900.0),
]
ROUTES = {
    "chat": ["openai/gpt-4o", "azure-openai/gpt-4o"],
    "code": ["anthropic/claude-sonnet-4-5-20250929", "openai/gpt-4o"],
    "fast": ["gemini-2.5-flash", "gpt-4o-mini"],
}


def test_deterministic_per_seed_and_serialisable() -> None:
    s = spec(migration_effort_usd={"gpt-4o": 20_000.0}, default_migration_effort_usd=5_000.0)
    a = deprecation_risk(MIX, ROUTES, s, seed=5)
    assert a == deprecation_risk(MIX, ROUTES, s, seed=5)
    assert json.loads(json.dumps(a)) == a
    b = deprecation_risk(MIX, ROUTES, s, seed=6)
    assert by_key(a, "openai/gpt-4o-mini")["p_retire"] != by_key(b, "openai/gpt-4o-mini")["p_retire"]
    # Adding a model leaves the others' draws alone (named streams).
    c = deprecation_risk(MIX + [use("openai", "gpt-4.1", share=0.0)], ROUTES, s, seed=5)
    assert by_key(c, "openai/gpt-4o")["p_retire"] == by_key(a, "openai/gpt-4o")["p_retire"]


def test_probabilities_shares_and_costs_add_up() -> None:
    s = spec(migration_effort_usd={"openai/gpt-4o": 20_000.0}, default_migration_effort_usd=5_000.0)
    out = deprecation_risk(MIX, ROUTES, s, seed=5)
    ov = out["overall"]
    probs = [m["p_retire"] for m in out["models"] if m["p_retire"] is not None]
    assert all(0.0 <= p <= 1.0 for p in probs) and 0.0 <= ov["p_any_retirement"] <= 1.0
    assert ov["traffic_share_total"] == pytest.approx(1.0)
    share = sum(m["expected_traffic_share_migrating"] or 0.0 for m in out["models"])
    spend = sum(m["expected_spend_migrating_usd"] or 0.0 for m in out["models"])
    cost = sum(m["expected_migration_cost_usd"] or 0.0 for m in out["models"])
    assert ov["expected_traffic_share_migrating"] == pytest.approx(share, abs=1e-5)
    assert ov["expected_spend_migrating_usd"] == pytest.approx(spend, abs=0.05)
    assert ov["expected_migration_cost_usd"] == pytest.approx(cost, abs=0.05)
    assert ov["expected_traffic_share_migrating"] <= ov["traffic_share_total"] - ov["traffic_share_not_modelled"]
    gpt4o = by_key(out, "openai/gpt-4o")
    assert gpt4o["expected_migration_cost_usd"] == pytest.approx(gpt4o["p_retire"] * 20_000.0, abs=0.01)
    assert by_key(out, "openai/gpt-4o-mini")["migration_effort_usd"] == 5_000.0


def test_route_loss_is_the_primary_retirement() -> None:
    out = deprecation_risk(MIX, ROUTES, spec(), seed=5)
    for route in out["routes"].values():
        primary = by_key(out, route["primary"])
        assert route["p_lose_primary"] == primary["p_retire"]
        assert route["p_lose_all"] <= route["p_lose_primary"]
    # The same model on a second host is the same lifecycle: that fallback hedges nothing.
    assert out["routes"]["chat"]["p_lose_all"] == out["routes"]["chat"]["p_lose_primary"]
    code = out["routes"]["code"]
    assert code["replacement"] == "openai/gpt-4o" and code["replacement_basis"] == "the route's next model"
    assert code["spend_change_usd"] is not None and code["latency_change_s"] is not None
    assert code["expected_spend_change_usd"] == pytest.approx(code["p_lose_primary"] * code["spend_change_usd"], abs=0.02)


def test_recommended_replacement_is_used_when_it_is_known() -> None:
    models = [use("anthropic", "claude-3-haiku-20240307", spend=50.0, requests=10, input_tokens=10_000,
                  output_tokens=2_000)]
    r = deprecation_risk(models, {"old": ["anthropic/claude-3-haiku-20240307"]}, spec(), seed=1)["routes"]["old"]
    assert r["replacement"] == "anthropic/claude-haiku-4-5-20251001"
    assert r["replacement_basis"].startswith("recommended_replacement column")
    assert r["spend_change_usd"] is not None


def test_a_model_without_a_row_still_carries_risk_that_grows_with_the_horizon() -> None:
    models = [use("openai", "gpt-4o-mini"), use("anthropic", "claude-sonnet-4-5-20250929")]
    p: dict[str, list[float]] = {k: [] for k in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5-20250929")}
    for months in (1, 3, 12, 36):
        out = deprecation_risk(models, {}, spec(horizon_months=months), seed=2)
        for k, ps in p.items():
            ps.append(by_key(out, k)["p_retire"])
    for k, ps in p.items():
        assert all(b > a for a, b in itertools.pairwise(ps)), (k, ps)
        assert ps[-1] > 0.5, (k, ps)
    mini = by_key(deprecation_risk(models, {}, spec(), seed=2), "openai/gpt-4o-mini")
    assert mini["assumed_age_days"] > 0 and "assumed" in mini["release_date_basis"]
    assert mini["expected_notice_days"] > 0


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="not one of the models"):
        deprecation_risk(MIX, {"r": ["openai/gpt-9"]}, spec(), seed=1)
    with pytest.raises(ValueError, match="at most 1"):
        deprecation_risk([use("openai", "gpt-4o", share=0.7), use("openai", "gpt-4.1", share=0.7)], {}, spec(), seed=1)
    with pytest.raises(ValueError, match="listed twice"):
        deprecation_risk([use("openai", "gpt-4o"), use("openai", "gpt-4o")], {}, spec(), seed=1)


def test_add_months_clips_to_the_month() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2026, 12, 1), 12) == date(2027, 12, 1)


# --------------------------------------------------------------------------- the scenario section


def test_lifecycle_section_reads_yaml_dates() -> None:
    unquoted = yaml.safe_load("start_date: 2026-12-01\nhorizon_months: 6")
    assert Lifecycle.model_validate(unquoted).start_date == date(2026, 12, 1)
    quoted = yaml.safe_load("start_date: '2026-12-01'\nas_of: '2026-11-28'")
    assert Lifecycle.model_validate(quoted).as_of == date(2026, 11, 28)
    for bad in ("next year", 20261201, "2026-12-01T10:00:00"):
        with pytest.raises(ValueError):
            Lifecycle.model_validate({"start_date": bad})
    with pytest.raises(ValueError):
        Lifecycle.model_validate({"start_date": date(2026, 12, 1), "horizon_months": 0})
    assert Scenario.model_fields["lifecycle"].default is None


def test_a_scenario_with_a_lifecycle_section_loads() -> None:
    text = (ROOT / "scenarios" / "quickstart.yaml").read_text(encoding="utf-8")
    text += "\nlifecycle:\n  start_date: 2026-12-01\n  horizon_months: 18\n  migration_effort_usd: {gpt-4o: 25000}\n"
    rs = load_scenario_text(text, "quickstart+lifecycle.yaml")
    lc = rs.scenario.lifecycle
    assert lc is not None and lc.horizon_months == 18 and lc.migration_effort_usd == {"gpt-4o": 25000.0}


def gateway_scenario(lifecycle: dict, direct: bool) -> dict:
    """A gpt-4o route falling back to a self-hosted Llama-3.1-8B (plus direct traffic to it)."""
    fixed = lambda n: {"kind": "fixed", "value": n}
    wl = {"w": {"target": "gpt", "arrival": {"kind": "poisson", "rate_per_s": 2.0}, "input_tokens": fixed(100), "output_tokens": fixed(10)}}
    if direct:
        wl["d"] = {"target": "small", "arrival": {"kind": "poisson", "rate_per_s": 1.0}, "input_tokens": fixed(100), "output_tokens": fixed(10)}
    return {
        "name": "risk", "horizon_s": 60, "seed": 2,
        "pools": {"h100": {"accelerator": "h100-sxm", "count": 1}},
        "deployments": {"small": {"model": "llama-3.1-8b", "pool": "h100"}},
        "providers": {"oa": {"provider": "openai", "region": "us-east", "rpm_limit": 1_000_000, "tpm_limit": 1_000_000_000}},
        "gateway": {"model_list": [{"model_name": "gpt", "litellm_params": {"model": "oa/gpt-4o"}},
                                   {"model_name": "own", "litellm_params": {"model": "hosted_vllm/small"}}],
                    "router_settings": {"fallbacks": [{"gpt": ["own"]}]}},
        "workloads": wl,
        "lifecycle": lifecycle,
    }


def test_a_run_reports_deprecation_risk_for_its_routes() -> None:
    """The run wires its models and routes into the risk: a self-hosted deployment never
    retires, a route loses its primary exactly when its primary model retires."""
    import yaml

    from stacksim.engine.simulation import Simulation
    from stacksim.metrics.summary import build_result
    from stacksim.scenario import load_scenario_text

    sc = gateway_scenario({"start_date": "2026-12-01", "horizon_months": 12, "simulations": 500,
                           "default_migration_effort_usd": 1000.0}, direct=True)
    rs = load_scenario_text(yaml.safe_dump(sc), "risk.yaml")
    res = build_result(Simulation(rs).run())
    dr = res.summary["deprecation_risk"]
    models = {m["key"]: m for m in dr["models"]}
    assert models["small/llama-3.1-8b"]["p_retire"] == 0 and models["small/llama-3.1-8b"]["self_hosted"]
    gpt = models["openai/gpt-4o"]
    assert 0 < gpt["p_retire"] < 1
    assert dr["routes"]["gpt"]["models"] == ["openai/gpt-4o", "small/llama-3.1-8b"]
    assert dr["routes"]["gpt"]["p_lose_primary"] == gpt["p_retire"]
    assert dr["routes"]["gpt"]["p_lose_all"] == 0  # the self-hosted fallback does not retire
    assert dr["overall"]["expected_migration_cost_usd"] == pytest.approx(1000.0 * gpt["p_retire"])
    shares = sum(m["traffic_share"] for m in dr["models"])
    assert shares == pytest.approx(1.0, abs=1e-6)


def test_rerun_measures_a_route_on_its_replacement() -> None:
    """rerun_replacements runs the scenario again with the route's primary swapped for its
    replacement: here gpt-4o's route falls back to a self-hosted deployment, whose calls cost
    no API dollars, so the route's API spend falls to zero in the re-run."""
    import yaml

    from stacksim.engine.simulation import Simulation
    from stacksim.metrics.summary import build_result
    from stacksim.scenario import load_scenario_text

    sc = gateway_scenario({"start_date": "2026-12-01", "simulations": 200, "rerun_replacements": True}, direct=False)
    res = build_result(Simulation(load_scenario_text(yaml.safe_dump(sc), "rerun.yaml")).run())
    route = res.summary["deprecation_risk"]["routes"]["gpt"]
    assert route["replacement"] == "small/llama-3.1-8b"
    rr = route["rerun"]
    assert rr["done"] and rr["cost_usd"]["before"] > 0 and rr["cost_usd"]["after"] == 0
    assert rr["e2e_p50_ms"]["after"] is not None and rr["failed"]["after"] == 0
