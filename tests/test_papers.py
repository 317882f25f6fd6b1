"""Published results, reproduced (scenarios/papers/): each paper's figure against the tolerance
README.md states ("Published results, reproduced"). Where stacksim does not reproduce a figure the
README says so and why, and the test is a strict xfail of the paper's claim: it fails loudly the
day stacksim starts to reproduce it, so the README can be updated.

Everything is simulated time; nothing reads a clock.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PAPERS = Path(__file__).resolve().parents[1] / "scenarios" / "papers"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "workloads" / "azure_llm_2023"

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="the shared Azure LLM inference traces are not beside the checkout")


def _reproduce() -> ModuleType:
    spec = importlib.util.spec_from_file_location("papers_reproduce", PAPERS / "reproduce.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["papers_reproduce"] = mod
    spec.loader.exec_module(mod)
    return mod


R = _reproduce()


def test_every_paper_scenario_validates() -> None:
    from stacksim.scenario import load_scenario

    files = sorted(PAPERS.glob("*.yaml"))
    assert {f.name.split("-")[0] for f in files} == {"splitwise", "distserve", "melange"}
    for f in files:
        load_scenario(f)


def test_splitwise_phase_splitting_gains_per_dollar_on_coding() -> None:
    """Splitwise: "1.4x higher throughput at 20% lower cost" = 1.75x throughput per dollar.
    Tolerance (README): within a factor 1.5 of 1.75x (1.17x to 2.63x). Splitwise-HA
    2P3T against Baseline-H100 with 4 machines, coding trace, 90 s runs (the runner: 180 s and
    eleven designs). The iso-power-and-cost throughput gain (2.35x published) is not reproduced in
    size; only its direction is asserted."""
    rows = R.splitwise("coding", designs=[("Baseline-H100", 4, 0), ("Splitwise-HA", 2, 3)], horizon_s=90.0)
    per_usd, iso = rows[0].stacksim, rows[1].stacksim
    assert 1.75 / 1.5 <= per_usd <= 1.75 * 1.5, rows[0].detail
    assert iso > 1.0, rows[1].detail


@pytest.mark.slow
def test_distserve_disaggregation_gains_goodput_per_gpu() -> None:
    """DistServe (OPT-13B, ShareGPT-shaped lengths, TTFT 200 / TPOT 100 ms, 90% attainment).
    Tolerances (README): disaggregated / vLLM per-GPU goodput >= 1.5x; disaggregated goodput within
    a factor 1.25 of DistServe's simulator (1.56 req/s per GPU, simdistserve/README.md); attainment
    at 1 req/s per GPU within 15 points of DistServe's simulator for vLLM TP1 (62%) and within
    5 points for the disaggregated unit (98%; figure_11a.json). This test runs what the runner
    runs (120 s runs; 60 s ones landed a hair under the goodput band): 1.41 vs 0.020 req/s per
    GPU; attainment 69% and 94.5%."""
    rows = R.distserve(horizon_s=120.0)
    ratio, att_vllm, att_dist = (r.stacksim for r in rows)
    detail = rows[0].detail
    assert ratio >= 1.5, detail
    assert 1.56 / 1.25 <= detail["disaggregated_per_gpu"] <= 1.56 * 1.25, detail
    assert abs(att_vllm - 0.62) <= 0.15, detail
    assert abs(att_dist - 0.98) <= 0.05, detail


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not reproduced at catalog prices, even with Arena/PubMed-shaped lengths: the "
                   "H100 and A100 serve about as many requests per dollar as each other and more than the L40S in both "
                   "buckets, so the cheapest fleet is one type at every rate; README gives the profile")
def test_melange_mix_saves_on_the_mixed_workload() -> None:
    """Mélange, Mixed 80/20 (Arena-shaped chats, PubMed-shaped documents), 120 ms TPOT: 13-51% saving
    over rates. The claim asserted: the best mix saves at least 13% at one of 2, 8 and 32 req/s
    (catalog L40S, A100, H100 at catalog prices)."""
    rows = R.melange(horizon_s=60.0)
    assert rows[0].stacksim >= 0.13, rows[0].detail


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not reproduced at Mélange's own prices either: on Arena-shaped chats the A10G "
                   "(at $1.01 against the A100's $3.67) serves 8-12% of an A100's requests and needs 28% to pay, so "
                   "no mix beats the cheapest single type (A10Gs at 2 req/s, A100s above); README gives the profile")
def test_melange_mix_saves_at_the_papers_prices() -> None:
    """The same claim at the prices of Mélange's own solver example (A10G $1.01, A100 $3.67;
    melange/main.py)."""
    rows = R.melange(horizon_s=60.0, paper_prices=True)
    assert rows[0].stacksim >= 0.13, rows[0].detail
