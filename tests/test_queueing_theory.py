"""Analytic queueing checks: the simulator against textbook formulas, over several seeds.

In the style of Ciw's tests: run a configuration that *is* a textbook queue, measure over many
seeds, and require the Student-t confidence interval of (measured / theory) to contain 1.

How an LLM replica becomes a textbook server: ``max_num_seqs: 1`` (one sequence at a time, so
one server), a 1-token prompt and a geometric answer length (``output_tokens: exponential``,
mean M). A request's service time S = finish - admitted is then one 1-token prefill plus
(tokens - 1) decode steps of an almost constant duration, so S is close to exponential
(CV^2 = 1 - 1/M for a geometric count of fixed steps). Waits are measured per request as
admitted - arrival. Service moments are measured from the simulated requests themselves, so
the formulas are checked, not the cost model.

Runs use ``drain: true`` (every request that arrived finishes, so no survivor bias at the
horizon) and ``warmup_s`` (requests arriving in the empty-start transient are dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from stacksim import Result, load_scenario_text, run_scenario

SEEDS = tuple(range(10))
MEAN_TOKENS = 50  # M: mean answer length, geometric
TARGET_RHO = 0.7
REQUESTS_PER_SEED = 40_000
WARMUP_REQUESTS = 2_000
MODEL, ACCELERATOR = "llama-3.1-8b", "h100-sxm"
QUICKSTART = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"


def t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two-sided Student-t confidence interval of the mean of ``x``."""
    x = np.asarray(x, dtype=float)
    m = float(x.mean())
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - half, m + half


def assert_ci_near_one(ratios: np.ndarray, what: str) -> tuple[float, float, float]:
    """The 95% CI of the ratios contains 1, or (if it is very tight) lies within 1 +- 5%."""
    m, lo, hi = t_interval(ratios)
    assert (lo <= 1.0 <= hi) or (0.95 <= lo and hi <= 1.05), (
        f"{what}: mean ratio {m:.4f}, 95% CI [{lo:.4f}, {hi:.4f}], per seed {np.round(ratios, 4)}"
    )
    return m, lo, hi


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load a = lam/mu < c.

    C(c, a) = [a^c / c! * c / (c - a)] / [sum_{k<c} a^k / k! + a^c / c! * c / (c - a)].
    """
    if not 0 <= a < c:
        raise ValueError("needs 0 <= a < c")
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def queue_yaml(rate: float, horizon: float, warmup: float, replicas: int = 1, balancer: str = "round_robin") -> str:
    """One deployment of one-sequence replicas, 1-token prompts, geometric answers."""
    return yaml.safe_dump(
        {
            "name": "textbook-queue",
            "horizon_s": horizon,
            "warmup_s": warmup,
            "drain": True,
            "pools": {"p": {"accelerator": ACCELERATOR, "count": replicas}},
            "deployments": {
                "d": {
                    "model": MODEL,
                    "pool": "p",
                    "replicas": replicas,
                    "engine": {"kind": "vllm", "version": "0.6", "max_num_seqs": 1, "max_num_batched_tokens": 16, "max_model_len": 8192},
                    "load_balancer": {"kind": balancer},
                }
            },
            "workloads": {
                "w": {
                    "target": "d",
                    "arrival": {"kind": "poisson", "rate_per_s": rate},
                    "input_tokens": {"kind": "fixed", "value": 1},
                    "output_tokens": {"kind": "exponential", "mean": MEAN_TOKENS},
                }
            },
        },
        sort_keys=False,
    )


@dataclass(frozen=True)
class QueueSample:
    """Per-request service times and waits of the measured (post-warm-up) requests of one run."""

    rate: float
    service: np.ndarray
    wait: np.ndarray
    result: Result

    @property
    def es(self) -> float:
        return float(self.service.mean())

    @property
    def es2(self) -> float:
        return float(np.mean(self.service**2))

    @property
    def cv2(self) -> float:
        return float(self.service.var() / self.es**2)


def measured(res: Result, warmup: float) -> tuple[np.ndarray, np.ndarray]:
    df = res.requests
    assert res.summary["requests"]["in_flight"] == 0 and res.summary["requests"]["rejected"] == 0
    m = df[(df["status"] == "completed") & (df["arrival_s"] >= warmup)]
    return (m["finish_s"] - m["admitted_s"]).to_numpy(), (m["admitted_s"] - m["arrival_s"]).to_numpy()


@cache
def pilot_service_mean() -> float:
    """E[S] from a lightly loaded pilot run (a single server's S does not depend on load)."""
    rate = 0.2
    res = run_scenario(load_scenario_text(queue_yaml(rate, 20_000 / rate, 0.0), "pilot.yaml"), seed=12345)
    s, _ = measured(res, 0.0)
    return float(s.mean())


@cache
def queue_run(seed: int, servers: int) -> QueueSample:
    """One seed of the single-server (round robin over 1 replica) or c-server (shared queue) queue."""
    rate = TARGET_RHO * servers / pilot_service_mean()
    horizon = REQUESTS_PER_SEED / rate
    warmup = WARMUP_REQUESTS / rate
    balancer = "round_robin" if servers == 1 else "shared_queue"
    res = run_scenario(load_scenario_text(queue_yaml(rate, horizon, warmup, servers, balancer), "q.yaml"), seed=seed)
    s, w = measured(res, warmup)
    return QueueSample(rate, s, w, res)


# --------------------------------------------------------------------------- service times


def test_service_time_is_one_geometric_run_of_decode_steps() -> None:
    """Proves the construction: S is M decode-step times on average (mean S / (M x median TPOT)
    within 3%), the decode step is near-constant and memory-bound (between the weight-read time
    16 GB / 3.35 TB/s and 3x that), and S has the squared CV of a geometric count (1 - 1/M,
    +-0.1), i.e. the server is close to exponential."""
    q = queue_run(0, 1)
    df = q.result.requests
    tpot = df["tpot_s"].dropna().to_numpy()
    step = float(np.median(tpot))
    assert np.std(tpot) / step < 0.02, "decode steps of a one-sequence batch should barely vary"
    weights_read_s = 8.03e9 * 2 / 3.35e12
    assert weights_read_s <= step <= 3 * weights_read_s, step
    assert q.es / (MEAN_TOKENS * step) == pytest.approx(1.0, abs=0.03)
    assert q.cv2 == pytest.approx(1 - 1 / MEAN_TOKENS, abs=0.1)
    # The busy time behind summary utilisation is exactly the summed service time.
    summary = q.result.summary
    df_all = q.result.requests
    busy_s = float((df_all["finish_s"] - df_all["admitted_s"]).sum())
    util = summary["deployments"]["d"]["utilisation"]
    assert util * summary["time"]["end_s"] == pytest.approx(busy_s, rel=1e-4)


def test_drain_ends_when_last_request_finishes() -> None:
    """Proves ``drain: true`` stops the clock when the last request ends: end_s == max(horizon,
    last finish), so utilisation = rho and throughput = arrival rate. (Regression: end_s used to
    be the end of the drain's horizon/10 chunk, diluting utilisation, throughput and spend.)"""
    q = queue_run(0, 1)
    summary = q.result.summary
    last = float(q.result.requests["finish_s"].max())
    assert summary["time"]["end_s"] == pytest.approx(max(summary["time"]["horizon_s"], last), abs=1e-6)
    assert summary["deployments"]["d"]["utilisation"] == pytest.approx(q.rate * q.es, rel=0.03)
    assert summary["throughput"]["requests_per_s"] == pytest.approx(q.rate, rel=0.03)


# --------------------------------------------------------------------------- M/G/1 and M/M/1


def test_mg1_mean_wait_matches_pollaczek_khinchine() -> None:
    """Proves the single-server queue is an M/G/1 queue: across 10 seeds, the 95% CI of
    measured mean wait / (lam E[S^2] / (2 (1 - rho))) contains 1 (rho ~ 0.7, E[S] and E[S^2]
    from the simulated service times)."""
    ratios = []
    for seed in SEEDS:
        q = queue_run(seed, 1)
        rho = q.rate * q.es
        assert 0.6 < rho < 0.8
        theory = q.rate * q.es2 / (2 * (1 - rho))
        ratios.append(q.wait.mean() / theory)
    assert_ci_near_one(np.array(ratios), "M/G/1 Wq / Pollaczek-Khinchine")


def test_mm1_mean_wait_within_cv_tolerance() -> None:
    """Proves the M/M/1 formula Wq = rho / (mu - lam) (mu = 1/E[S]) holds to within what the
    service CV^2 explains: P-K says Wq(M/G/1) / Wq(M/M/1) = (1 + CV^2) / 2, so the measured
    ratio must lie within |1 - CV^2| / 2 plus its 95% CI half-width of 1."""
    ratios, cv2s = [], []
    for seed in SEEDS:
        q = queue_run(seed, 1)
        mu = 1 / q.es
        rho = q.rate / mu
        ratios.append(q.wait.mean() / (rho / (mu - q.rate)))
        cv2s.append(q.cv2)
    m, lo, hi = t_interval(np.array(ratios))
    cv2 = float(np.mean(cv2s))
    slack = abs(1 - cv2) / 2 + (hi - lo) / 2
    assert abs(m - 1) <= slack + 1e-9, (m, lo, hi, cv2)
    # And the P-K correction factor itself is inside the CI (or within 5%).
    assert_ci_near_one(np.array(ratios) / ((1 + cv2) / 2), "M/M/1 ratio / ((1 + CV^2) / 2)")


# --------------------------------------------------------------------------- M/M/c


def test_mmc_shared_queue_matches_erlang_c() -> None:
    """Proves the shared-queue balancer over 4 one-sequence replicas is an M/M/c queue: across
    10 seeds (rho per server ~ 0.7) the 95% CI of measured mean wait / Erlang-C mean wait
    C(c, a) / (c mu - lam) contains 1, and so does that of the measured share of requests that
    wait at all / C(c, a)."""
    c = 4
    wait_ratios, pwait_ratios = [], []
    for seed in SEEDS:
        q = queue_run(seed, c)
        mu = 1 / q.es
        a = q.rate / mu
        assert 0.6 < a / c < 0.8
        pc = erlang_c(c, a)
        wait_ratios.append(q.wait.mean() / (pc / (c * mu - q.rate)))
        pwait_ratios.append(float(np.mean(q.wait > 0)) / pc)
        # All four replicas served (the queue is shared, not pinned to one replica).
        assert set(q.result.requests["replica"].unique()) == set(range(c))
    assert_ci_near_one(np.array(wait_ratios), "M/M/4 Wq / Erlang C")
    assert_ci_near_one(np.array(pwait_ratios), "M/M/4 P(wait) / Erlang C")


def test_erlang_c_formula() -> None:
    """Proves the test's own Erlang C: c = 1 reduces to rho (M/M/1), and a textbook value
    (c = 2, a = 1: C = 1/3)."""
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 0.0) == 0.0


# --------------------------------------------------------------------------- Little's law


@pytest.mark.parametrize("balancer", ["round_robin", "least_outstanding"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_littles_law_on_quickstart_like_scenario(balancer: str, seed: int) -> None:
    """Proves summary.queueing obeys Little's law L = lam W (within 2%) on the quickstart's
    stack (4 replicas of Llama-3.1-8B, chat-like lengths, 20 requests/s, busy enough that
    requests queue), for two balancers and three seeds."""
    sc = yaml.safe_load(QUICKSTART.read_text())
    sc.update(horizon_s=300, warmup_s=30)
    sc["deployments"]["chat"]["load_balancer"] = {"kind": balancer}
    res = run_scenario(load_scenario_text(yaml.safe_dump(sc), str(QUICKSTART)), seed=seed)
    q = res.summary["queueing"]
    assert q["mean_in_system"] > 5  # a real queue, not an empty system
    assert q["mean_in_system"] == pytest.approx(q["arrival_rate_per_s"] * q["mean_time_in_system_s"], rel=0.02)
    # The measured arrival rate is the workload's.
    assert q["arrival_rate_per_s"] == pytest.approx(20.0, rel=0.05)


# --------------------------------------------------------------------------- arrivals


def arrival_yaml(arrival: dict[str, object], horizon: float) -> str:
    """Traffic only matters here: tiny requests on a wide deployment, run to the horizon."""
    return yaml.safe_dump(
        {
            "name": "arrivals",
            "horizon_s": horizon,
            "pools": {"p": {"accelerator": ACCELERATOR, "count": 1}},
            "deployments": {"d": {"model": MODEL, "pool": "p", "replicas": 1}},
            "workloads": {
                "w": {
                    "target": "d",
                    "arrival": arrival,
                    "input_tokens": {"kind": "fixed", "value": 1},
                    "output_tokens": {"kind": "fixed", "value": 1},
                }
            },
        },
        sort_keys=False,
    )


ARRIVAL_SEEDS = tuple(range(6))


def test_poisson_realised_rate_within_99pct_ci() -> None:
    """Proves Poisson arrivals are not clipped or thinned: per seed and pooled over 6 seeds,
    the exact (chi-square) 99% CI of the realised rate contains the nominal rate; gaps pass a
    Kolmogorov-Smirnov test against Exp(rate) (p > 0.001) and have CV ~ 1."""
    rate, horizon = 40.0, 500.0
    counts = []
    for seed in ARRIVAL_SEEDS:
        res = run_scenario(load_scenario_text(arrival_yaml({"kind": "poisson", "rate_per_s": rate}, horizon), "a.yaml"), seed=seed)
        t = np.sort(res.requests["arrival_s"].to_numpy())
        assert t[0] > 0 and t[-1] < horizon
        n = t.size
        counts.append(n)
        lo = stats.chi2.ppf(0.005, 2 * n) / 2 / horizon
        hi = stats.chi2.ppf(0.995, 2 * n + 2) / 2 / horizon
        assert lo <= rate <= hi, (seed, n / horizon, lo, hi)
        gaps = np.diff(np.concatenate([[0.0], t]))
        assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.001
        assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)
    total, span = sum(counts), horizon * len(ARRIVAL_SEEDS)
    lo = stats.chi2.ppf(0.005, 2 * total) / 2 / span
    hi = stats.chi2.ppf(0.995, 2 * total + 2) / 2 / span
    assert lo <= rate <= hi, (total / span, lo, hi)


def test_gamma_arrivals_have_requested_cv_and_rate() -> None:
    """Proves the Gamma renewal process (rate 40/s, cv = 2) has gap CV 2 and mean gap 1/rate:
    over 8 seeds of ~40k gaps, the 95% t-interval of (sample CV / 2) and of (realised rate /
    nominal) each contain 1 or lie within 1 +- 5%. (The sample CV of Gamma(1/4) gaps is skewed
    low at this size (about -0.5%); the generator itself is unbiased: 4M draws give CV^2 / 4 = 1
    within 0.3%.)"""
    rate, cv, horizon = 40.0, 2.0, 1000.0
    cvs, rates = [], []
    for seed in range(8):
        res = run_scenario(
            load_scenario_text(arrival_yaml({"kind": "gamma", "rate_per_s": rate, "cv": cv}, horizon), "g.yaml"),
            seed=seed,
        )
        t = np.sort(res.requests["arrival_s"].to_numpy())
        gaps = np.diff(t)
        assert (gaps >= 0).all()
        cvs.append(gaps.std(ddof=1) / gaps.mean() / cv)
        rates.append(t.size / horizon / rate)
    assert_ci_near_one(np.array(cvs), "gamma gap CV / 2")
    assert_ci_near_one(np.array(rates), "gamma rate / nominal")
