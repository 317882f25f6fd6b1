"""Published results, reproduced (scenarios/papers/): each paper's figure against the tolerance
docs/model.md states ("Published results, reproduced"). Where stacksim does not reproduce a figure the
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


@pytest.fixture(scope="module")
def melange_at_papers_prices() -> list:
    """Mélange's method at the prices of its own solver example (A10G $1.01, A100 $3.67;
    melange/main.py): 37 request-size buckets profiled on both types (60 s runs), the ILP at 1 and
    16 req/s, both fleets run to check their SLO."""
    return R.melange(rates=(1.0, 16.0), horizon_s=60.0, paper_prices=True)


@pytest.mark.slow
def test_melange_method_mixes_never_cost_more_and_meet_the_slo(melange_at_papers_prices: list) -> None:
    """What is reproduced: Mélange's allocation itself. The ILP's mix never costs more than the
    cheapest single type, and both fleets, each request routed by its size bucket, meet the
    120 ms TPOT SLO for >= 99% of requests when simulated."""
    row = melange_at_papers_prices[0]
    assert len(row.detail["shares"]) >= 20 and sum(row.detail["shares"].values()) == pytest.approx(1.0)
    for r in row.detail["per_rate"]:
        assert r["mix_usd_per_h"] <= r["single_usd_per_h"] + 1e-9
        assert r["attainment"]["mix"] >= 0.99 and r["attainment"]["single"] >= 0.99, r
    assert all(s >= -1e-9 for s in row.detail["grid"].values())


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not reproduced: at 1 req/s two A10Gs are the cheapest fleet and no mix beats "
                   "them (0%); in stacksim the A10G serves fewer requests per dollar than the A100 in every bucket, "
                   "so savings come only from whole replicas (docs/model.md, 'Published results, reproduced')")
def test_melange_mix_saves_at_every_rate(melange_at_papers_prices: list) -> None:
    """Mélange, Mixed 80/20 (Arena-shaped chats, PubMed-shaped documents), 120 ms TPOT: "13-51% cost
    reduction" over rates, i.e. at least 13% at each rate."""
    assert min(r["saving"] for r in melange_at_papers_prices[0].detail["per_rate"]) >= 0.13


@pytest.mark.xfail(strict=True, reason="not reproduced: stacksim has the A10G at about 0.56x the A100's requests per "
                   "dollar on 25/25-token requests, where Mélange measured up to 1.72x (README gives the sensitivity "
                   "to the A10G's tensor rate and to per-sequence CPU cost)")
def test_melange_a10g_beats_the_a100_per_dollar_on_small_requests() -> None:
    """Mélange's blog, plot 1 (Llama-2-7B): the A10G has up to 72% more requests per dollar than the
    A100 on small requests. Checked on the grid's smallest bucket, 25 prompt / 25 answer tokens."""
    row = R.melange_size_effect(horizon_s=60.0, sizes=(25,))[0]
    assert row.stacksim > 0.0, row.detail
