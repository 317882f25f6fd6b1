"""Deprecation risk over a planning horizon: a Monte Carlo of every hosted model's retirement.

Per simulation each hosted model gets a retirement date:

- a shutdown date published in the table -> that date, with probability 1 (published dates only
  ever moved later in the table, never earlier, so a date after the horizon is probability 0);
- an announcement without a date -> the announcement plus a notice drawn from the provider's
  observed notices (longer than the time already elapsed at the as-of date);
- no announcement -> a lifetime drawn from the provider's fitted hazard given the model was in
  service at the as-of date (from its release date, or an assumed age stated in the output),
  and a notice drawn before it (never before the release);
- self-hosted -> never ("self-hosted: weights you run do not retire");
- open weights on a host, or a lab without history -> not modelled, and said so.

Distinct models are drawn independently; the same lifecycle served by several hosts (OpenAI's
gpt-4o on openai and azure-openai) is one draw, so a fallback to it hedges nothing. Each
lifecycle draws from its own named stream of the run's seed (``lifecycle/<lab>/<model>``).
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np

from stacksim.catalog.stack import provider_models
from stacksim.engine.rng import Streams
from stacksim.lifecycle import migration
from stacksim.lifecycle.data import DATA_AS_OF, LABS, load_rows
from stacksim.lifecycle.hazard import HazardFit, fit_provider_hazards, schedules
from stacksim.lifecycle.match import Match, find, normalise
from stacksim.scenario.schema_lifecycle import Lifecycle

SELF_HOSTED = "self-hosted: weights you run do not retire"
_LITELLM_DATE = re.compile(r"litellm deprecation_date (\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class ModelUse:
    """One model a scenario calls, with the weights its share of the risk is counted in.

    ``traffic_share`` is its share of all calls (shares over the list sum to at most 1) and
    ``spend_usd`` what it cost over the caller's period. The optional counts and latency let a
    route's replacement be compared with it (see :mod:`stacksim.lifecycle.migration`).
    """

    provider: str  # catalog provider id (openai, anthropic, bedrock ...) or a deployment name
    model: str  # the provider's model id
    catalog_model: str | None
    self_hosted: bool
    traffic_share: float
    spend_usd: float
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float | None = None  # mean per call, as observed

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass
class _Plan:
    use: ModelUse
    kind: str  # self-hosted | not-modelled | known | announced | hazard
    match: Match | None = None
    identity: str = ""
    release: date | None = None
    release_basis: str = ""
    assumed_age_days: float | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def add_months(d: date, months: int) -> date:
    """``d`` plus calendar months, the day clipped to the month's length (Jan 31 + 1 = Feb 28)."""
    m = d.month - 1 + months
    y, m = d.year + m // 12, m % 12 + 1
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def _r(x: Any, nd: int) -> Any:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else round(x, nd)


def _third_party_hint(use: ModelUse) -> str | None:
    pm = provider_models().get(use.provider.lower(), {}).get(use.model)
    m = _LITELLM_DATE.search(pm.notes) if pm else None
    if m is None:
        return None
    return (f"the provider catalog notes litellm 1.110.2 lists deprecation_date {m.group(1)} for this "
            "entry (third-party metadata, not an announcement: not used)")


def _plan(use: ModelUse, as_of: date, fits: dict[str, HazardFit]) -> _Plan:
    if use.self_hosted:
        return _Plan(use, "self-hosted", reason=SELF_HOSTED)
    m = find(use.provider, use.model, use.catalog_model, load_rows())
    hint = _third_party_hint(use)
    notes = list(m.notes) + ([hint] if hint else [])
    if m.lab is None:
        return _Plan(use, "not-modelled", m, reason=notes[0] if notes else "no lifecycle data", notes=notes[1:])
    row = m.row
    # A row is known at the as-of date if its announcement was made by then (rows without an
    # announcement date, Google's shutdown-only entries, are taken as known).
    known = row is not None and (row.announced is None or row.announced <= as_of)
    if known and row is not None and row.shutdown is not None:
        why = f"shutdown {row.shutdown} published (table row '{row.model}')"
        if row.shutdown < as_of:
            why += ", already past at the as-of date"
        if row.slip_days > 0:
            why += f"; first scheduled {row.scheduled}, moved {row.slip_days} d later"
        n_sched = schedules(load_rows(), m.lab)
        n_slip = len(fits[m.lab].slips_days)
        notes.append(f"{m.lab} moved {n_slip} of {n_sched} published schedules, always later: the date is the earliest")
        return _Plan(use, "known", m, f"{m.lab}/{row.model}", m.release, m.release_basis, reason=why, notes=notes)
    if known and row is not None and row.announced is not None:
        why = f"deprecation announced {row.announced} without a date: a {m.lab} notice is drawn"
        return _Plan(use, "announced", m, f"{m.lab}/{row.model}", m.release, m.release_basis, reason=why, notes=notes)
    fit = fits[m.lab]
    base, when = normalise(use.model)
    plan = _Plan(use, "hazard", m, f"{m.lab}/{base}@{when or m.release or ''}", m.release, m.release_basis, notes=notes)
    if m.release is None:
        plan.assumed_age_days = fit.assumed_age_days()
        plan.release = as_of - timedelta(days=round(plan.assumed_age_days))
        plan.release_basis = (
            f"unknown: assumed {plan.assumed_age_days:.0f} d old at {as_of}, the median age of a model of "
            f"{m.lab}'s found in service under the fitted lifetime"
        )
    plan.reason = (f"no announcement in the table: {m.lab} {fit.family} hazard from release {plan.release}, "
                   f"given in service at {as_of}")
    return plan


def _draw(plan: _Plan, fit: HazardFit | None, as_of: date, start: date, n: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(retirement day relative to ``start``, notice days) for ``n`` simulations."""
    row = plan.match.row if plan.match else None
    if plan.kind == "known" and row is not None and row.shutdown is not None:
        known = float(row.notice_days) if row.notice_days is not None else math.nan
        return np.full(n, float((row.shutdown - start).days)), np.full(n, known)
    assert fit is not None
    if plan.kind == "announced" and row is not None and row.announced is not None:
        notice = fit.sample_notice(rng, n, longer_than_days=float((as_of - row.announced).days))
        return (row.announced - start).days + notice, notice
    assert plan.release is not None
    age = float((as_of - plan.release).days)
    life = fit.sample_lifetime(rng, max(age, 0.0), n)
    notice = np.minimum(fit.sample_notice(rng, n), life)  # no announcement before the release
    return (plan.release - start).days + life, notice


def _effort(use: ModelUse, spec: Lifecycle) -> float | None:
    for k in (use.key, use.model, use.catalog_model):
        if k and k in spec.migration_effort_usd:
            return spec.migration_effort_usd[k]
    return spec.default_migration_effort_usd


def _check(models: list[ModelUse], routes: dict[str, list[str]]) -> dict[str, int]:
    keys: dict[str, int] = {}
    for i, u in enumerate(models):
        if u.key in keys:
            raise ValueError(f"model '{u.key}' is listed twice; give each provider/model once")
        if u.traffic_share < 0 or u.spend_usd < 0 or not math.isfinite(u.traffic_share + u.spend_usd):
            raise ValueError(f"model '{u.key}': traffic_share and spend_usd must be finite and >= 0")
        keys[u.key] = i
    total = sum(u.traffic_share for u in models)
    if total > 1 + 1e-6:
        raise ValueError(f"traffic shares sum to {total:.6f}; they are shares of all calls (at most 1)")
    for name, members in routes.items():
        if not members:
            raise ValueError(f"route '{name}' lists no model")
        for m in members:
            _resolve(m, models, keys, name)
    return keys


def _resolve(name: str, models: list[ModelUse], keys: dict[str, int], route: str) -> int:
    if name in keys:
        return keys[name]
    hits = [i for i, u in enumerate(models) if name in (u.model, u.catalog_model)]
    if len(hits) == 1:
        return hits[0]
    what = "names several models" if hits else "is not one of the models"
    raise ValueError(f"route '{route}': '{name}' {what}; use one of: {', '.join(sorted(keys))}")


def deprecation_risk(models: list[ModelUse], routes: dict[str, list[str]], spec: Lifecycle,
                     seed: int) -> dict[str, Any]:
    """The deprecation-risk section of a run (``summary.json["deprecation_risk"]``).

    ``routes`` maps a route name to its models, primary first (each a ``provider/model`` key, or
    a model id that names one model of ``models``). Deterministic for a given ``seed``.
    """
    keys = _check(models, routes)
    as_of = spec.as_of or DATA_AS_OF
    start, end = spec.start_date, add_months(spec.start_date, spec.horizon_months)
    horizon = float((end - start).days)
    n = spec.simulations
    fits = fit_provider_hazards(as_of)
    plans = [_plan(u, as_of, fits) for u in models]
    streams = Streams(seed)

    m = len(models)
    days = np.full((n, m), np.inf)  # retirement day relative to start; inf: never
    notice = np.full((n, m), np.nan)
    modelled = np.array([p.kind != "not-modelled" for p in plans], dtype=bool)
    drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for j, p in enumerate(plans):
        if p.kind in ("self-hosted", "not-modelled"):
            continue
        if p.identity not in drawn:
            lab = p.match.lab if p.match else None
            rng = streams.get(f"lifecycle/{p.identity}")
            drawn[p.identity] = _draw(p, fits.get(lab or ""), as_of, start, n, rng)
        days[:, j], notice[:, j] = drawn[p.identity]
    retired = days <= horizon
    retired[:, ~modelled] = False

    per_model = []
    p_retire = retired.mean(axis=0)
    for j, (u, p) in enumerate(zip(models, plans)):
        per_model.append(_model_out(u, p, retired[:, j], days[:, j], notice[:, j], start, modelled[j], spec))
    shares = np.array([u.traffic_share for u in models])
    spend = np.array([u.spend_usd for u in models])
    efforts = [_effort(u, spec) for u in models]
    mig_share = retired[:, modelled] @ shares[modelled]
    mig_spend = retired[:, modelled] @ spend[modelled]
    cost = sum(float(p_retire[j]) * e for j, e in enumerate(efforts) if e is not None and modelled[j])
    overall = {
        "models": m,
        "models_modelled": int(modelled.sum()),
        "p_any_retirement": _r(retired[:, modelled].any(axis=1).mean() if modelled.any() else 0.0, 4),
        "expected_models_retiring": _r(p_retire[modelled].sum(), 3),
        "traffic_share_total": _r(shares.sum(), 6),
        "traffic_share_not_modelled": _r(shares[~modelled].sum(), 6),
        "expected_traffic_share_migrating": _r(mig_share.mean(), 6),
        "spend_usd_total": _r(spend.sum(), 2),
        "spend_usd_not_modelled": _r(spend[~modelled].sum(), 2),
        "expected_spend_migrating_usd": _r(mig_spend.mean(), 2),
        "p90_spend_migrating_usd": _r(np.quantile(mig_spend, 0.9), 2),
        "expected_migration_cost_usd": _r(cost, 2),
        "models_without_migration_effort": [
            u.key for j, u in enumerate(models) if efforts[j] is None and modelled[j] and not u.self_hosted
        ],
    }
    return {
        "as_of": as_of.isoformat(),
        "start_date": start.isoformat(),
        "horizon_end": end.isoformat(),
        "horizon_months": spec.horizon_months,
        "simulations": n,
        "seed": seed,
        "basis": _basis(fits, as_of),
        "hazards": {lab: fits[lab].summary() for lab in LABS},
        "overall": overall,
        "models": per_model,
        "routes": {name: _route_out(name, members, models, plans, keys, retired, modelled, p_retire)
                   for name, members in routes.items()},
    }


def _model_out(u: ModelUse, p: _Plan, retired: np.ndarray, days: np.ndarray, notice: np.ndarray,
               start: date, modelled: bool, spec: Lifecycle) -> dict[str, Any]:
    row = p.match.row if p.match else None
    pr = float(retired.mean()) if modelled else None
    when = notice_mean = None
    if pr:
        when = (start + timedelta(days=round(float(days[retired].mean())))).isoformat()
        ok = notice[retired]
        ok = ok[~np.isnan(ok)]
        notice_mean = float(ok.mean()) if ok.size else None
    effort = _effort(u, spec)
    before = float((retired & (days < 0)).mean()) if modelled else None
    return {
        "key": u.key,
        "provider": u.provider,
        "model": u.model,
        "catalog_model": u.catalog_model,
        "self_hosted": u.self_hosted,
        "lab": p.match.lab if p.match else None,
        "lifecycle": p.kind,
        "table_row": row.model if row else None,
        "match": p.match.how if p.match else None,
        "release_date": p.release.isoformat() if p.release else None,
        "release_date_basis": p.release_basis or None,
        "assumed_age_days": _r(p.assumed_age_days, 1),
        "announced": row.announced.isoformat() if row and row.announced and p.kind in ("known", "announced") else None,
        "known_shutdown": row.shutdown.isoformat() if row and row.shutdown and p.kind == "known" else None,
        "p_retire": _r(pr, 4),
        "p_retire_before_start": _r(before, 4),
        "expected_retirement_date": when,
        "expected_notice_days": _r(notice_mean, 1),
        "recommended_replacement": row.replacement if row and row.replacement else None,
        "traffic_share": _r(u.traffic_share, 6),
        "spend_usd": _r(u.spend_usd, 2),
        "expected_traffic_share_migrating": _r(pr * u.traffic_share, 6) if pr is not None else None,
        "expected_spend_migrating_usd": _r(pr * u.spend_usd, 2) if pr is not None else None,
        "migration_effort_usd": _r(effort, 2),
        "expected_migration_cost_usd": _r(pr * effort, 2) if pr is not None and effort is not None else None,
        "reason": p.reason,
        "notes": p.notes,
    }


def _route_out(name: str, members: list[str], models: list[ModelUse], plans: list[_Plan],
               keys: dict[str, int], retired: np.ndarray, modelled: np.ndarray,
               p_retire: np.ndarray) -> dict[str, Any]:
    idx = [_resolve(mm, models, keys, name) for mm in members]
    i0 = idx[0]
    p_primary = float(p_retire[i0]) if modelled[i0] else None
    p_all = float(retired[:, idx].all(axis=1).mean()) if modelled[idx].all() else None
    out: dict[str, Any] = {
        "models": [models[i].key for i in idx],
        "primary": models[i0].key,
        "p_lose_primary": _r(p_primary, 4),
        "p_lose_all": _r(p_all, 4),
        "replacement": None,
        "replacement_basis": None,
    }
    uses = [_as_use(u) for u in models]
    match = plans[i0].match
    row = match.row if match else None
    rec = migration.recommended(row, models[i0].provider, uses)
    target: migration.Use | Any = None
    if rec is not None:
        target, cand = rec
        tkey = target.key if isinstance(target, migration.Use) else f"{target.provider}/{target.model}"
        out["replacement"], out["replacement_basis"] = tkey, f"recommended_replacement column ('{cand}')"
    elif len(idx) > 1:
        target = uses[idx[1]]
        out["replacement"], out["replacement_basis"] = target.key, "the route's next model"
    if target is None:
        out["change_basis"] = "no replacement: no usable recommended_replacement and no second model on the route"
        return out
    if isinstance(target, migration.Use):
        j = keys[target.key]
        both = retired[:, i0] & retired[:, j]
        out["p_replacement_retires_too"] = _r(both.mean(), 4) if modelled[i0] and modelled[j] else None
    ch = migration.change(uses[i0], target)
    lat, sp = ch.latency_change_s, ch.spend_change_usd
    out["latency_change_s"] = _r(lat, 4)
    out["spend_change_usd"] = _r(sp, 2)
    out["expected_latency_change_s"] = _r(p_primary * lat, 4) if p_primary is not None and lat is not None else None
    out["expected_spend_change_usd"] = _r(p_primary * sp, 2) if p_primary is not None and sp is not None else None
    out["change_basis"] = ch.basis
    return out


def _as_use(u: ModelUse) -> migration.Use:
    return migration.Use(u.key, u.provider, u.model, u.catalog_model, u.spend_usd, u.requests,
                         u.input_tokens, u.output_tokens, u.latency_s)


def _basis(fits: dict[str, HazardFit], as_of: date) -> str:
    f0 = next(iter(fits.values()))
    aic = ", ".join(f"{k} {sum(f.aic[k] for f in fits.values()):.1f}" for k in f0.aic)
    parts = [
        (f"Deprecation history: shared/facts/model_deprecations.csv as of {as_of} "
         "(shutdowns after it are censored when fitting)."),
        ("Lifetimes (release -> shutdown) fitted per provider by maximum likelihood with "
         f"right-censoring; family {f0.family} (lowest AIC summed over providers: {aic})."),
    ]
    for lab, f in fits.items():
        pars = ", ".join(f"{k} {v:.4g}" for k, v in f.params.items())
        parts.append(
            f"{lab}: {pars}; median lifetime {f.median_days:.0f} d (Kaplan-Meier "
            f"{f.empirical_median_days:.0f} d, n={f.n_lifetimes}, {f.n_censored} censored); notice "
            f"median {f.notice_median_days:.0f} d over {len(f.notice_days)} announcements (actual "
            "shutdown, slips included)."
        )
    parts.append(
        "Known shutdown dates are used as published (probability 1 on that date); published dates "
        "only moved later in the history. Models with no announcement draw a lifetime given they "
        f"were in service on {as_of}, then a notice before it. The lifetimes are those of models "
        "that were deprecated (the table lists none still served without an announcement), so the "
        "hazard errs towards early retirement."
    )
    parts.append(
        "Hosts: azure-openai follows OpenAI's lifecycle, Bedrock/Vertex the lab whose model they "
        "serve; open-weight models on hosts and labs without history: no lifecycle data, host "
        f"deprecations not modelled. Self-hosted: probability 0 ({SELF_HOSTED})."
    )
    parts.append(
        "Distinct models are drawn independently (announcements often retire several models at "
        "once, so the chance of losing a whole route is understated); the same model on several "
        "hosts is one draw."
    )
    return " ".join(parts)
