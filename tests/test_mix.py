"""stacksim.sweep.mix: Mélange's request-size buckets and its cost-aware bin-packing ILP."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stacksim.cli import app
from stacksim.sweep import mix as M


def test_a_request_joins_the_smallest_bucket_holding_both_lengths() -> None:
    edges = (25, 100, 250)
    assert M.bucket_of(np.array([1, 25, 26, 100, 101, 250, 999]), edges).tolist() == [0, 0, 1, 1, 2, 2, 2]
    shares = M.bucket_shares(np.array([10, 10, 30, 300]), np.array([5, 200, 30, 1]), edges, edges)
    assert shares == {(25, 25): 0.25, (25, 250): 0.25, (100, 100): 0.25, (250, 25): 0.25}
    assert math.isclose(sum(shares.values()), 1.0)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="as many input as output"):
        M.bucket_shares(np.array([1, 2]), np.array([1]), (25,), (25,))


def _brute_force(rates: dict, tput: dict, prices: dict, slice_factor: int) -> float:
    """Cheapest fleet by trying every assignment of every slice to every type."""
    slices = [(b, s) for b, r in rates.items() if r > 0 for s in range(slice_factor)]
    best = math.inf
    for combo in itertools.product(list(tput), repeat=len(slices)):
        if any(tput[g][b] <= 0 for (b, _s), g in zip(slices, combo, strict=True)):
            continue
        load: dict[str, float] = {}
        for (b, _s), g in zip(slices, combo, strict=True):
            load[g] = load.get(g, 0.0) + max(rates[b] / tput[g][b], M.MIN_LOAD) / slice_factor
        best = min(best, sum(prices[g] * math.ceil(x - 1e-9) for g, x in load.items()))
    return best


def test_melanges_own_solver_example() -> None:
    """melange-release melange/main.py: two buckets x two sizes, A10G $1.01 and A100 $3.67, 16 req/s."""
    cells = [(25, 25), (25, 100), (100, 25), (100, 100)]
    dist = [0.25, 0.125, 0.375, 0.25]
    rates = {c: 16 * d for c, d in zip(cells, dist, strict=True)}
    tput = {"A10G": dict(zip(cells, [5, 1, 10, 5], strict=True)), "A100": dict(zip(cells, [20, 2, 50, 20], strict=True))}
    prices = {"A10G": 1.01, "A100": 3.67}
    for sf in (1, 2):
        alloc = M.cheapest_mix(rates, tput, prices, sf)
        assert math.isclose(alloc.usd_per_h, _brute_force(rates, tput, prices, sf))
        assert all(math.isclose(sum(a.values()), 1.0) for a in alloc.assign.values())
    single = M.cheapest_single(rates, tput, prices)
    assert single is not None and M.cheapest_mix(rates, tput, prices, 1).usd_per_h <= single.usd_per_h


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_the_ilp_finds_the_brute_force_optimum(data: st.DataObject) -> None:
    n_buckets = data.draw(st.integers(1, 3))
    buckets = [(25 * (k + 1), 25) for k in range(n_buckets)]
    types = ["a", "b", "c"][: data.draw(st.integers(1, 3))]
    rate = st.floats(0.0, 20.0, allow_nan=False)
    rates = {b: data.draw(rate) for b in buckets}
    tput = {g: {b: data.draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.5, 20.0])) for b in buckets} for g in types}
    prices = {g: data.draw(st.floats(0.5, 10.0)) for g in types}
    sf = data.draw(st.integers(1, 2))
    served = all(rates[b] == 0 or any(tput[g][b] > 0 for g in types) for b in buckets)
    if not served:
        with pytest.raises(ValueError, match="no GPU type serves"):
            M.cheapest_mix(rates, tput, prices, sf)
        return
    alloc = M.cheapest_mix(rates, tput, prices, sf)
    assert alloc.usd_per_h == pytest.approx(_brute_force(rates, tput, prices, sf), rel=1e-9, abs=1e-9)
    # Each type's replicas hold the load the assignment puts on it.
    for g in types:
        load = sum(rates[b] * share / tput[g][b] for b, a in alloc.assign.items() for h, share in a.items() if h == g)
        assert load <= alloc.replicas.get(g, 0) + 1e-6
        assert g not in {h for a in alloc.assign.values() for h in a} or alloc.replicas[g] >= 1
    single = M.cheapest_single(rates, tput, prices)
    if single is not None:
        assert alloc.usd_per_h <= single.usd_per_h + 1e-9


# --------------------------------------------------------------------------- `stacksim mix`

REPO = Path(__file__).resolve().parents[1]
QUICK = """
base: {base}
deployment: chat
accelerators: {{h100-sxm: null, a100-sxm-80gb: 1.5}}
rates: [2, 12]
slo: {{tpot_ms: 60}}
input_edges: [1000]
output_edges: [100]
profile_horizon_s: 40
"""


def _mix_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mix.yaml"
    p.write_text(text.format(base=REPO / "scenarios" / "quickstart.yaml"))
    return p


def test_mix_command_plans_checks_and_writes(tmp_path: Path) -> None:
    """A small plan end to end: profiles, the ILP at two rates, both fleets simulated, outputs."""
    res = CliRunner().invoke(app, ["mix", str(_mix_file(tmp_path, QUICK)), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "cheapest mix" in res.output and "requests per dollar by bucket" in res.output
    doc = json.loads((tmp_path / "out" / "mix.json").read_text())
    assert doc["price_usd_per_replica_hour"] == {"h100-sxm": pytest.approx(3.49, abs=0.01), "a100-sxm-80gb": 1.5}
    assert [r["rate"] for r in doc["rows"]] == [2, 12]
    for r in doc["rows"]:
        assert r["mix"]["usd_per_h"] <= r["single"]["usd_per_h"] + 1e-9
        assert r["mix_attainment"] >= 0.99 and r["single_attainment"] >= 0.99
        assert r["mix"]["usd_per_h"] == pytest.approx(sum(
            n * doc["price_usd_per_replica_hour"][g] for g, n in r["mix"]["replicas"].items()))
    prof = pd.read_csv(tmp_path / "out" / "profile.csv")
    assert set(prof.accelerator) == {"h100-sxm", "a100-sxm-80gb"} and (prof.requests_per_s > 0).all()
    assert prof.groupby("accelerator").share.sum().round(9).eq(1.0).all()
    # A bigger rate never needs a cheaper fleet.
    assert doc["rows"][1]["mix"]["usd_per_h"] >= doc["rows"][0]["mix"]["usd_per_h"]
    assert (tmp_path / "out" / "cost_vs_rate.png").stat().st_size > 0


def test_mix_profile_falls_as_requests_grow(tmp_path: Path) -> None:
    from stacksim.sweep import mixplan as MP

    plan = MP.load_mix(_mix_file(tmp_path, QUICK))
    small, large = MP.profile(plan, "h100-sxm", (100, 50)), MP.profile(plan, "h100-sxm", (4000, 400))
    assert small > 2 * large > 0


@pytest.mark.parametrize(("edit", "field", "says"), [
    ("deployment: chat", "deployment", "no deployment 'nope'"),
    ("accelerators: {{h100-sxm: null, a100-sxm-80gb: 1.5}}", "accelerators.h100-sxn", "unknown accelerator id"),
    ("accelerators: {{h100-sxm: null, a100-sxm-80gb: 1.5}}", "accelerators.a10g", "no price for 'a10g'"),
    ("rates: [2, 12]", "rates", "rates must be > 0"),
    ("slo: {{tpot_ms: 60}}", "slo.tpot_ms", "greater than 0"),
    ("accelerators: {{h100-sxm: null, a100-sxm-80gb: 1.5}}", "accelerators.rtx-4090", "deployment 'chat' on rtx-4090: max_model_len"),
])
def test_bad_mix_files_name_line_and_field(tmp_path: Path, edit: str, field: str, says: str) -> None:
    bad = {"deployment": "deployment: nope", "accelerators.h100-sxn": "accelerators: {{h100-sxn: null}}",
           "accelerators.a10g": "accelerators: {{a10g: null}}", "rates": "rates: [2, -1]",
           "slo.tpot_ms": "slo: {{tpot_ms: -5}}", "accelerators.rtx-4090": "accelerators: {{rtx-4090: 1.0}}"}[field]
    p = _mix_file(tmp_path, QUICK.replace(edit, bad))
    res = CliRunner().invoke(app, ["mix", str(p)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"field '{field}'" in text and says in text and str(p.name) in text and "line " in text
    assert "Traceback" not in res.output


def test_bundled_mix_files_load() -> None:
    from stacksim.sweep import mixplan as MP

    files = sorted((REPO / "scenarios" / "mix").glob("*.yaml"))
    assert files
    for f in files:
        plan = MP.load_mix(f)
        assert plan.prices and sum(plan.shares.values()) == pytest.approx(1.0)


def test_profiles_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    from stacksim.sweep import mixplan as MP

    plan = MP.load_mix(_mix_file(tmp_path, QUICK))
    buckets = [(100, 50), (1000, 100), (4000, 400)]
    assert MP.profiles(plan, buckets, workers=2) == MP.profiles(plan, buckets, workers=1)


def test_workers_fork_from_a_server_while_threads_run() -> None:
    """sweep/runner.pool_context: plain fork in a single-threaded process (scripts without a main
    guard keep working), forkserver while another thread runs (forking it could copy a held lock)."""
    import threading

    from stacksim.sweep.runner import pool_context

    stop = threading.Event()
    if threading.active_count() == 1:
        assert pool_context().get_start_method() == "fork"
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert pool_context().get_start_method() == "forkserver"
    finally:
        stop.set()
        t.join()


def test_requests_no_type_serves_are_named_not_a_traceback(tmp_path: Path) -> None:
    """A 1 ms TPOT target no accelerator meets: exit 2 with the requests' sizes and share."""
    p = _mix_file(tmp_path, QUICK.replace("slo: {{tpot_ms: 60}}", "slo: {{tpot_ms: 1}}"))
    res = CliRunner().invoke(app, ["mix", str(p), "--workers", "1"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "no accelerator type serves requests of up to" in text and "of the traffic" in text
    assert "Traceback" not in res.output
