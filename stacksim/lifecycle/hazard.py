"""Per-provider hazards of retirement, fitted to the deprecation history.

**Lifetimes** (release -> shutdown, in days) are one observation per table row that has both
dates; a shutdown after the data's as-of date had not happened yet, so that lifetime is
right-censored at the as-of date. Two small families are fitted by maximum likelihood with
censoring (``scipy.optimize``): lognormal and Weibull. The one with the lower AIC summed over the
three providers is used for all of them (one family keeps the providers comparable); both AICs
are reported. On the table as of 2026-11-28 that is lognormal (summed AIC 687.4 vs 689.6).

**Notices** (announcement -> actual shutdown, so a date that slipped counts with its slip) are
taken once per distinct announcement (REFERENCE.md section 3 counts them that way) and drawn
from that empirical distribution: the observed notices are few and policy-shaped (60 days,
3 and 6 months, Google's 365 days), which no two-parameter family describes better than the
data themselves.

The lifetimes come from models that were deprecated: the table lists no model still served
without an announcement, so the fit describes lifetimes *of models that get retired* and errs
towards early retirement. :func:`fit_provider_hazards` states this in each fit's ``basis``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special, stats

from stacksim.lifecycle.data import DATA_AS_OF, LABS, Row, load_rows

FAMILIES = ("lognormal", "weibull")


@dataclass(frozen=True)
class Lifetimes:
    """Durations in days and whether each ended in a shutdown (1) or was censored (0)."""

    days: np.ndarray
    event: np.ndarray

    @property
    def n(self) -> int:
        return int(self.days.size)


def lifetimes(rows: tuple[Row, ...], lab: str, as_of: date) -> Lifetimes:
    """Release -> shutdown for every row of ``lab`` with both dates; censored at ``as_of``."""
    days, event = [], []
    for r in rows:
        if r.lab != lab or r.release is None or r.shutdown is None or r.release >= as_of:
            continue
        if r.shutdown <= as_of:
            days.append((r.shutdown - r.release).days)
            event.append(1)
        else:
            days.append((as_of - r.release).days)
            event.append(0)
    return Lifetimes(np.asarray(days, dtype=float), np.asarray(event, dtype=int))


def notice_events(rows: tuple[Row, ...], lab: str, as_of: date) -> list[tuple[date, date, date]]:
    """Distinct announcements of ``lab`` known at ``as_of``: (announced, scheduled, shutdown)."""
    seen: dict[tuple[date, date], date] = {}
    for r in rows:
        if r.lab != lab or r.announced is None or r.shutdown is None or r.scheduled is None:
            continue
        if r.announced > as_of:
            continue
        seen.setdefault((r.announced, r.shutdown), r.scheduled)
    return sorted((a, s, d) for (a, d), s in seen.items())


def km_median(life: Lifetimes) -> float:
    """Kaplan-Meier median. Where the curve sits exactly at 0.5 over an interval, the middle of
    that interval (so with no censoring it is the ordinary sample median)."""
    t, d = life.days, life.event
    s = 1.0
    times = np.unique(t[d == 1])
    for i, tt in enumerate(times):
        at_risk = int(np.sum(t >= tt))
        s *= 1.0 - int(np.sum((t == tt) & (d == 1))) / at_risk
        if abs(s - 0.5) < 1e-12:
            return float((tt + times[i + 1]) / 2) if i + 1 < times.size else float(tt)
        if s < 0.5:
            return float(tt)
    return math.inf


def _nll(family: str, p: np.ndarray, t: np.ndarray, d: np.ndarray) -> float:
    if family == "lognormal":
        mu, sigma = p[0], math.exp(p[1])
        z = (np.log(t) - mu) / sigma
        ll = d * (stats.norm.logpdf(z) - math.log(sigma) - np.log(t)) + (1 - d) * stats.norm.logsf(z)
    else:
        k, lam = math.exp(p[0]), math.exp(p[1])
        x = t / lam
        ll = d * (math.log(k / lam) + (k - 1) * np.log(x)) - x**k
    return float(-np.sum(ll))


@dataclass(frozen=True)
class HazardFit:
    """A provider's fitted lifetime distribution and its observed notices."""

    lab: str
    family: str  # lognormal | weibull
    params: dict[str, float]  # lognormal: mu, sigma of ln(days); weibull: shape, scale_days
    n_lifetimes: int
    n_censored: int
    empirical_median_days: float  # Kaplan-Meier
    aic: dict[str, float]  # per family, on this provider's lifetimes
    notice_days: tuple[int, ...]  # one per distinct announcement, sorted
    scheduled_notice_days: tuple[int, ...]  # the same announcements, before any slip
    slips_days: tuple[int, ...]  # the slips among them (> 0)
    as_of: date
    basis: str = field(default="", compare=False)

    # -- the lifetime distribution ------------------------------------------------------------

    def sf(self, t: np.ndarray | float) -> np.ndarray:
        """P(lifetime > t days)."""
        t = np.maximum(np.asarray(t, dtype=float), 1e-9)
        if self.family == "lognormal":
            return stats.norm.sf((np.log(t) - self.params["mu"]) / self.params["sigma"])
        return np.exp(-((t / self.params["scale_days"]) ** self.params["shape"]))

    def quantile(self, q: float) -> float:
        if self.family == "lognormal":
            return float(math.exp(self.params["mu"] + self.params["sigma"] * stats.norm.ppf(q)))
        k, lam = self.params["shape"], self.params["scale_days"]
        return float(lam * (-math.log1p(-q)) ** (1 / k))

    @property
    def median_days(self) -> float:
        return self.quantile(0.5)

    @property
    def mean_days(self) -> float:
        if self.family == "lognormal":
            return float(math.exp(self.params["mu"] + self.params["sigma"] ** 2 / 2))
        k, lam = self.params["shape"], self.params["scale_days"]
        return float(lam * special.gamma(1 + 1 / k))

    def sample_lifetime(self, rng: np.random.Generator, older_than_days: float, n: int) -> np.ndarray:
        """``n`` lifetimes drawn given lifetime > ``older_than_days`` (inverse survival)."""
        s0 = float(self.sf(max(older_than_days, 0.0)))
        v = rng.uniform(0.0, 1.0, n) * s0  # P(T > t) = v, uniform on (0, S(t0))
        v = np.maximum(v, 1e-300)
        if self.family == "lognormal":
            t = np.exp(self.params["mu"] + self.params["sigma"] * stats.norm.isf(v))
        else:
            t = self.params["scale_days"] * (-np.log(v)) ** (1 / self.params["shape"])
        return np.maximum(t, older_than_days)

    def sample_notice(self, rng: np.random.Generator, n: int, longer_than_days: float = 0.0) -> np.ndarray:
        """``n`` notices (days) resampled from the observed ones, given notice > ``longer_than_days``;
        where none was that long, the longest observed (the announcement is overdue)."""
        obs = np.asarray(self.notice_days, dtype=float)
        ok = obs[obs > longer_than_days]
        if ok.size == 0:
            return np.full(n, max(float(obs.max()), longer_than_days))
        return ok[rng.integers(0, ok.size, n)]

    @property
    def notice_median_days(self) -> float:
        return float(np.median(self.notice_days))

    @property
    def notice_mean_days(self) -> float:
        return float(np.mean(self.notice_days))

    def assumed_age_days(self) -> float:
        """The median age of a model found in service at a random moment (the equilibrium age
        density S(a) / mean lifetime of renewal theory): the age assumed when none is known."""
        mean = self.mean_days
        target = 0.5 * mean

        def cum(a: float) -> float:
            return integrate.quad(lambda x: float(self.sf(x)), 0.0, a, limit=200)[0] - target

        return float(optimize.brentq(cum, 0.0, self.quantile(0.999)))

    def summary(self) -> dict[str, object]:
        """A JSON-ready description (rounded)."""
        return {
            "family": self.family,
            "params": {k: round(v, 4) for k, v in self.params.items()},
            "median_lifetime_days": round(self.median_days, 1),
            "empirical_median_lifetime_days": round(self.empirical_median_days, 1),
            "mean_lifetime_days": round(self.mean_days, 1),
            "n_lifetimes": self.n_lifetimes,
            "n_censored": self.n_censored,
            "aic": {k: round(v, 2) for k, v in self.aic.items()},
            "notice_median_days": round(self.notice_median_days, 1),
            "notice_mean_days": round(self.notice_mean_days, 1),
            "n_announcements": len(self.notice_days),
            "scheduled_notice_median_days": round(float(np.median(self.scheduled_notice_days)), 1),
            "slips_days": list(self.slips_days),
            "assumed_age_days_when_unknown": round(self.assumed_age_days(), 1),
        }


def _fit_one(family: str, life: Lifetimes) -> tuple[dict[str, float], float]:
    t, d = life.days, life.event
    logt = np.log(t)
    if family == "lognormal":
        x0 = np.array([float(np.mean(logt)), math.log(max(float(np.std(logt)), 0.05))])
    else:
        x0 = np.array([math.log(2.0), float(np.mean(logt))])
    res = optimize.minimize(
        lambda p: _nll(family, p, t, d), x0, method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 10_000},
    )
    if not res.success:
        raise RuntimeError(f"{family} fit did not converge: {res.message}")
    if family == "lognormal":
        params = {"mu": float(res.x[0]), "sigma": float(math.exp(res.x[1]))}
    else:
        params = {"shape": float(math.exp(res.x[0])), "scale_days": float(math.exp(res.x[1]))}
    return params, 2 * 2 + 2 * float(res.fun)  # AIC = 2k + 2 NLL, k = 2 parameters


def fit_provider_hazards(as_of: date | None = None, family: str | None = None) -> dict[str, HazardFit]:
    """Fit every provider (OpenAI, Anthropic, Google) to the deprecation table.

    ``family`` forces one family; by default the one with the lower AIC summed over providers.
    """
    return dict(_fit_provider_hazards(as_of or DATA_AS_OF, family))


@lru_cache(maxsize=8)
def _fit_provider_hazards(as_of: date, family: str | None) -> dict[str, HazardFit]:
    rows = load_rows()
    data = {lab: lifetimes(rows, lab, as_of) for lab in LABS}
    for lab, life in data.items():
        if life.n < 3 or int(life.event.sum()) < 2:
            raise ValueError(
                f"too few {lab} lifetimes before {as_of} to fit a hazard ({life.n}); "
                "choose a later as_of"
            )
    fits = {lab: {f: _fit_one(f, life) for f in FAMILIES} for lab, life in data.items()}
    if family is None:
        family = min(FAMILIES, key=lambda f: sum(fits[lab][f][1] for lab in LABS))
    elif family not in FAMILIES:
        raise ValueError(f"unknown hazard family '{family}'; valid: {', '.join(FAMILIES)}")
    out: dict[str, HazardFit] = {}
    for lab in LABS:
        life = data[lab]
        events = notice_events(rows, lab, as_of)
        if not events:
            raise ValueError(f"no {lab} announcement before {as_of}: no notice period to draw")
        notices = tuple(sorted((d - a).days for a, _, d in events))
        scheduled = tuple(sorted((s - a).days for a, s, _ in events))
        slips = tuple(sorted((d - s).days for _, s, d in _slip_events(rows, lab, as_of)))
        out[lab] = HazardFit(
            lab=lab,
            family=family,
            params=fits[lab][family][0],
            n_lifetimes=life.n,
            n_censored=int(life.n - life.event.sum()),
            empirical_median_days=km_median(life),
            aic={f: fits[lab][f][1] for f in FAMILIES},
            notice_days=notices,
            scheduled_notice_days=scheduled,
            slips_days=slips,
            as_of=as_of,
            basis=(
                f"{family} lifetime fitted by maximum likelihood to {life.n} {lab} release->shutdown "
                f"lifetimes ({int(life.n - life.event.sum())} censored at {as_of}); notices resampled "
                f"from {len(notices)} distinct announcements (actual shutdown, slips included); "
                "lifetimes of deprecated models only, so the hazard errs towards early retirement"
            ),
        )
    return out


def _slip_events(rows: tuple[Row, ...], lab: str, as_of: date) -> list[tuple[date | None, date, date]]:
    """Distinct published schedules of ``lab`` that moved: (announced, scheduled, actual)."""
    seen = {
        (r.scheduled, r.shutdown): r.announced
        for r in rows
        if r.lab == lab and r.scheduled is not None and r.shutdown is not None
        and r.slip_days > 0 and r.scheduled <= as_of
    }
    return [(a, s, d) for (s, d), a in sorted(seen.items())]


def schedules(rows: tuple[Row, ...], lab: str) -> int:
    """How many distinct shutdown schedules ``lab`` published (for "k of n moved")."""
    return len({(r.announced, r.scheduled) for r in rows if r.lab == lab and r.scheduled is not None})


def lifecycle_table(as_of: date | None = None) -> pd.DataFrame:
    """One row per model of the deprecation table: its known dates, lifetime and notice, whether
    its lifetime is censored at the as-of date, and the shutdown its provider's fitted median
    lifetime would have put it at (a back-test of the fit, row by row)."""
    as_of = as_of or DATA_AS_OF
    fits = fit_provider_hazards(as_of)
    recs = []
    for r in load_rows():
        fit = fits.get(r.lab)
        fitted = None
        if fit is not None and r.release is not None:
            fitted = r.release + timedelta(days=round(fit.median_days))
        recs.append({
            "provider": r.lab,
            "channel": r.channel,
            "model": r.model,
            "ids": ", ".join(r.ids),
            "release_date": r.release,
            "announced": r.announced,
            "scheduled_shutdown": r.scheduled,
            "shutdown": r.shutdown,
            "slip_days": r.slip_days,
            "lifetime_days": r.lifetime_days,
            "censored": bool(r.shutdown is not None and r.release is not None and r.shutdown > as_of),
            "notice_days": r.notice_days,
            "fitted_median_shutdown": fitted,
            "recommended_replacement": r.replacement,
            "status_flag": r.status_flag,
        })
    return pd.DataFrame.from_records(recs)
