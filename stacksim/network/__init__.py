"""Regions, the round trips between them, egress prices and data-residency rules.

Round trips: a measured pair (``catalog/data/region_rtt.csv``) is used as measured. Any other
pair is estimated from physics: light in fibre covers about 200 km per millisecond (refractive
index ~1.47, so c / 1.47), and real routes are longer than the great circle, so

    rtt_ms = fixed_ms + 2 * distance_km / 200 * route_factor

with ``fixed_ms`` and ``route_factor`` fitted by least squares to the measured pairs (the fit and
its error are printed by ``stacksim catalog regions``). Within one region the round trip is
``INTRA_REGION_RTT_MS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from stacksim.catalog.stack import egress_prices, measured_rtts, regions

FIBRE_KM_PER_MS = 200.0  # c / 1.47 (refractive index of silica fibre) ~ 204 km/ms; the usual rule of thumb
EARTH_RADIUS_KM = 6371.0
# Between availability zones of one region, best-of-50 pings measured 0.25-3.37 ms (xkyle.com, via
# shared/facts/REFERENCE.md section 6); 1 ms is the middle of that range on a log scale.
INTRA_REGION_RTT_MS = 1.0
# One token of English text is about 4 characters (OpenAI, "What are tokens and how to count
# them", help.openai.com); requests and responses travel as UTF-8 text, so ~4 bytes per token.
BYTES_PER_TOKEN = 4.0
ANY = "any"
GLOBAL = "global"


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class RttFit:
    fixed_ms: float
    route_factor: float
    n: int
    median_ape: float  # in-sample median absolute percentage error
    loo_median_ape: float  # leave-one-pair-out


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    d = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    x = 2.0 * d / FIBRE_KM_PER_MS
    A = np.vstack([np.ones_like(x), x]).T
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(max(a, 0.0)), float(b)


@lru_cache(maxsize=1)
def rtt_fit() -> RttFit:
    cat = regions()
    pts: list[tuple[float, float]] = []
    for m in measured_rtts():
        ra, rb = cat.get(m.a), cat.get(m.b)
        if ra is None or rb is None or None in (ra.lat, ra.lon, rb.lat, rb.lon):
            continue
        pts.append((great_circle_km(ra.lat, ra.lon, rb.lat, rb.lon), m.rtt_ms))  # type: ignore[arg-type]
    if len(pts) < 2:
        return RttFit(INTRA_REGION_RTT_MS, 1.5, len(pts), float("nan"), float("nan"))
    a, b = _fit(pts)
    ape = [abs(a + b * 2 * d / FIBRE_KM_PER_MS - y) / y for d, y in pts]
    loo = []
    for i in range(len(pts)):
        rest = pts[:i] + pts[i + 1:]
        ai, bi = _fit(rest)
        d, y = pts[i]
        loo.append(abs(ai + bi * 2 * d / FIBRE_KM_PER_MS - y) / y)
    return RttFit(a, b, len(pts), float(np.median(ape)), float(np.median(loo)))


@dataclass
class Place:
    id: str
    jurisdiction: str
    lat: float | None
    lon: float | None
    egress_usd_per_gb: float
    source: str = ""


@dataclass
class RegionMap:
    """The regions a scenario uses: jurisdictions, round trips, egress prices."""

    places: dict[str, Place] = field(default_factory=dict)
    _rtt: dict[tuple[str, str], float] = field(default_factory=dict)

    def jurisdiction(self, region: str) -> str:
        return self.places[region].jurisdiction

    def rtt_s(self, a: str, b: str) -> float:
        # A `global` endpoint (a provider's default API, cross-region inference profiles) answers
        # from a point of presence near the caller: counted as within the caller's region.
        if a == b or a == GLOBAL or b == GLOBAL:
            return INTRA_REGION_RTT_MS / 1000.0
        key = (a, b) if a < b else (b, a)
        v = self._rtt.get(key)
        if v is None:
            v = self._estimate(key[0], key[1])
            self._rtt[key] = v
        return v / 1000.0

    def _estimate(self, a: str, b: str) -> float:
        pa, pb = self.places[a], self.places[b]
        if None in (pa.lat, pa.lon, pb.lat, pb.lon):
            raise ValueError(f"no measured round trip between {a} and {b}, and no location to estimate it")
        fit = rtt_fit()
        d = great_circle_km(pa.lat, pa.lon, pb.lat, pb.lon)  # type: ignore[arg-type]
        return fit.fixed_ms + fit.route_factor * 2.0 * d / FIBRE_KM_PER_MS

    def egress_usd(self, src: str, dst: str, tokens: float) -> float:
        """Price of moving `tokens` worth of text from `src` to `dst` (0 within a region)."""
        if src == dst:
            return 0.0
        return self.places[src].egress_usd_per_gb * tokens * BYTES_PER_TOKEN / 1e9


def default_egress_usd_per_gb() -> tuple[float, str]:
    """The catalog's AWS inter-region transfer price (the common case between cloud regions)."""
    rows = [e for e in egress_prices() if e.cloud == "aws" and "inter" in e.kind.lower()]
    if not rows:
        rows = [e for e in egress_prices() if "inter" in e.kind.lower()]
    if not rows:
        return 0.0, "no egress price in the catalog"
    rows.sort(key=lambda e: e.usd_per_gb)
    mid = rows[len(rows) // 2]
    return mid.usd_per_gb, mid.source


def build_region_map(custom: dict[str, tuple[str | None, float | None, float | None, float | None]]) -> RegionMap:
    """All catalog regions plus the scenario's custom/overridden ones:
    custom[id] = (jurisdiction, lat, lon, egress_usd_per_gb)."""
    cat = regions()
    default_egress, src = default_egress_usd_per_gb()
    rm = RegionMap()
    for rid, info in cat.items():
        rm.places[rid] = Place(rid, info.jurisdiction, info.lat, info.lon, default_egress, src)
    rm.places[GLOBAL] = Place(GLOBAL, GLOBAL, None, None, default_egress, src)
    for rid, (jur, lat, lon, egress) in custom.items():
        base = rm.places.get(rid)
        rm.places[rid] = Place(
            rid,
            jur if jur is not None else (base.jurisdiction if base else ""),
            lat if lat is not None else (base.lat if base else None),
            lon if lon is not None else (base.lon if base else None),
            egress if egress is not None else (base.egress_usd_per_gb if base else default_egress),
            "scenario" if egress is not None else src,
        )
    seen: dict[tuple[str, str], list[float]] = {}
    for m in measured_rtts():
        key = (m.a, m.b) if m.a < m.b else (m.b, m.a)
        seen.setdefault(key, []).append(m.rtt_ms)
    for key, vals in seen.items():  # two sources for one pair: their mean
        rm._rtt[key] = float(np.mean(vals))
    return rm


def allowed(jurisdictions: frozenset[str] | None, jurisdiction: str) -> bool:
    """Residency rule: None (no class) or `any` allows everything except nothing; a `global`
    endpoint (cross-region inference) is allowed only where any jurisdiction is."""
    if jurisdictions is None or ANY in jurisdictions:
        return True
    return jurisdiction in jurisdictions
