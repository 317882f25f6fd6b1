"""Run-size limits: how big a run, or a set of runs, may be before stacksim refuses to start it.

A run is sized before anything is generated (:mod:`stacksim.scenario.size`): a scenario that
would simulate more requests or tokens than its ``limits:`` allow is refused at the door, by
``stacksim validate`` as by ``stacksim run``, with the estimate and the limit to raise. A sweep,
an optimize or a mix file counts its runs the same way (``limits.max_runs``).

The defaults are budgets, not properties of the model: raise them when the machine can take it.
"""

from __future__ import annotations

from pydantic import Field

from stacksim.scenario.schema_base import Strict

# Peak memory of a run grows by about 1 KB per request: measured with ru_maxrss on the quickstart
# at 200 requests/s (120,061 requests: 392 MB; 359,225 requests: 623 MB; +231 MB for +239,164
# requests, ~1.0 KB each: the RequestTable's 152-byte row of 6 float64 + 13 int64 columns
# (stacksim/metrics/__init__.py), the arrival processes' lists, the result DataFrame and its
# Parquet copy). 10^7 requests is then ~10 GB at the peak, what a 16 GB workstation can spare;
# the same run took ~5 s per 360k requests here, so ~2-3 minutes of wall time.
DEFAULT_MAX_REQUESTS = 10_000_000
# Tokens set the work (one event per batch iteration, serving/replica.py, and a prefix-block hash
# per block of prompt): 2 x 10^11 is DEFAULT_MAX_REQUESTS requests of 20,000 tokens each, room for
# prompts longer than the Mooncake conversation trace's (mean 12,035 input + 343 output tokens,
# shared/workloads/README.md) at the request limit.
DEFAULT_MAX_TOKENS = 200_000_000_000
# A sweep holds every point and every run's result row in memory and runs them one per worker:
# the quickstart takes ~0.85 s a run on one core here (600 simulated s, 12,064 requests), so
# 10^5 runs is about a day of one core, past any sweep worth waiting for in one go.
DEFAULT_MAX_RUNS = 100_000


class ScenarioLimits(Strict):
    """How big one run may be. A run is sized before it starts: requests are the arrivals of every
    workload (rate x horizon_s, or max_requests; a multi_stage workload: the sum of rate x duration
    of its stages, all generated up front; a trace: its rows inside the horizon; closed_loop:
    max_requests, else clients x (1 + horizon_s / think_time_s), or the clients alone without think
    time), plus every fleet's tasks times the calls of one task; tokens are requests times the
    mean prompt plus answer length."""

    max_requests: int = Field(
        default=DEFAULT_MAX_REQUESTS, ge=1,
        description="Most requests one run may simulate (default 10,000,000: peak memory is ~1 KB per request, so "
        "~10 GB; stacksim/scenario/schema_limits.py). Write digits, e.g. 50_000_000.")
    max_tokens: int = Field(
        default=DEFAULT_MAX_TOKENS, ge=1,
        description="Most prompt plus answer tokens one run may simulate (default 200,000,000,000: the request limit "
        "at 20,000 tokens a request).")


class RunLimits(Strict):
    """How many simulations a sweep, optimize or mix file may ask for (counted before any runs)."""

    max_runs: int = Field(
        default=DEFAULT_MAX_RUNS, ge=1,
        description="Most runs (design points x seeds; optimize: candidates x seeds; mix: profiles plus checks) "
        "(default 100,000: about a day of one core at the quickstart's ~0.85 s a run).")
