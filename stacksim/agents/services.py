"""The services agents call besides models: MCP tools and vector stores, each a SimPy resource
with its own latency, capacity, limits and failures."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import simpy

from stacksim.gateway.limits import SlidingCount
from stacksim.gateway.runtime import lognormal_s
from stacksim.scenario.schema_agents import Tool, VectorStore
from stacksim.scenario.schema_gateway import LatencyMs

# pgvector default latency (VectorStore docstring): rivestack.io/pgvector-benchmarks, 250k x 1536,
# ef_search 80, 4 clients: p50 3.7 ms, p95 5.9 ms.
PGVECTOR_LATENCY = LatencyMs(median_ms=3.7, p95_ms=5.9)
# Same benchmark, ef_search 10: p50 2.9 ms, so latency grows (3.7 - 2.9) / (70 x 3.7) per unit of ef.
EF_SLOPE = (3.7 - 2.9) / (70 * 3.7)


class ToolService:
    def __init__(self, env: simpy.Environment, name: str, spec: Tool, rng: np.random.Generator):
        self.env, self.name, self.spec, self.rng = env, name, spec, rng
        self.res = simpy.Resource(env, capacity=spec.concurrency) if spec.concurrency else None
        self.rpm = SlidingCount(spec.rpm_limit)
        self.calls = self.failures = self.rate_limited = 0
        self.busy_s = 0.0
        self.wait_s = 0.0

    def call(self, rtt_s: float):  # type: ignore[no-untyped-def]
        """One call; returns (ok, status): half the round trip, a slot, the tool's latency, the way back."""
        env = self.env
        self.calls += 1
        yield env.timeout(rtt_s / 2.0)
        if not self.rpm.allows(env.now):
            self.rate_limited += 1
            yield env.timeout(rtt_s / 2.0)
            return False, 429
        self.rpm.add(env.now)
        t0 = env.now
        if self.res is not None:
            with self.res.request() as req:
                yield req
                self.wait_s += env.now - t0
                yield from self._serve()
        else:
            yield from self._serve()
        yield env.timeout(rtt_s / 2.0)
        if self.rng.random() < self.spec.failure_rate:
            self.failures += 1
            return False, 500
        return True, 200

    def _serve(self):  # type: ignore[no-untyped-def]
        d = lognormal_s(self.rng, self.spec.latency)
        self.busy_s += d
        yield self.env.timeout(d)


class VectorStoreService:
    def __init__(self, env: simpy.Environment, name: str, spec: VectorStore, rng: np.random.Generator):
        self.env, self.name, self.spec, self.rng = env, name, spec, rng
        self.res = simpy.Resource(env, capacity=spec.workers)
        self.vectors = spec.vectors
        self.latency = spec.latency or PGVECTOR_LATENCY
        self.queries = self.writes = 0
        self.busy_s = 0.0
        self.wait_s = 0.0

    def query_factor(self, top_k: int) -> float:
        """Latency relative to the reference point: x growth per tenfold vectors (HNSW ~ log N),
        and linear in the search breadth max(ef_search, top_k)."""
        s = self.spec
        ef = max(s.ef_search, top_k)
        size = s.growth_per_decade ** math.log10(max(self.vectors, 1) / s.reference_vectors)
        return size * max(1.0 + EF_SLOPE * (ef - s.reference_ef), 0.1)

    def query(self, top_k: int, rtt_s: float):  # type: ignore[no-untyped-def]
        env = self.env
        self.queries += 1
        yield env.timeout(rtt_s / 2.0)
        t0 = env.now
        with self.res.request() as req:
            yield req
            self.wait_s += env.now - t0
            lat = self.latency
            f = self.query_factor(top_k)
            d = lognormal_s(self.rng, LatencyMs(median_ms=lat.median_ms * f, p95_ms=lat.p95_ms * f if lat.p95_ms else None))
            self.busy_s += d
            yield env.timeout(d)
        yield env.timeout(rtt_s / 2.0)

    def write(self, rtt_s: float):  # type: ignore[no-untyped-def]
        env = self.env
        self.writes += 1
        yield env.timeout(rtt_s / 2.0)
        with self.res.request() as req:
            yield req
            d = lognormal_s(self.rng, self.spec.write)
            self.busy_s += d
            yield env.timeout(d)
        self.vectors += 1
        yield env.timeout(rtt_s / 2.0)

    def summary(self, end: float) -> dict[str, Any]:
        return {
            "queries": self.queries, "writes": self.writes, "vectors_at_end": self.vectors,
            "utilisation": round(self.busy_s / max(end * self.spec.workers, 1e-12), 6),
            "mean_wait_ms": round(self.wait_s / max(self.queries, 1) * 1000.0, 4),
        }
