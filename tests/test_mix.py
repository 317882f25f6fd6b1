"""stacksim.sweep.mix: Mélange's request-size buckets and its cost-aware bin-packing ILP."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
            load[g] = load.get(g, 0.0) + rates[b] / slice_factor / tput[g][b]
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
    single = M.cheapest_single(rates, tput, prices)
    if single is not None:
        assert alloc.usd_per_h <= single.usd_per_h + 1e-9
