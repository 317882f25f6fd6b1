"""Load balancers: small policy objects chosen by the deployment's ``load_balancer.kind``.

A balancer picks the replica for a request at arrival. ``shared_queue`` is different: requests
wait in one deployment queue and a replica pulls the next one when it has a free sequence slot
(an M/M/c queue when each replica runs one sequence at a time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from stacksim.serving.replica import Replica


class Balancer(Protocol):
    shared: bool
    static: bool  # the choice does not depend on replica state, so it can be made up front

    def pick(self, replicas: list[Replica]) -> int: ...

    def assign(self, n: int) -> np.ndarray: ...


class RoundRobin:
    shared = False
    static = True

    def __init__(self, n: int) -> None:
        self.next = 0
        self.n = n

    def assign(self, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64) % self.n

    def pick(self, replicas: list[Replica]) -> int:
        i = self.next
        self.next = (i + 1) % len(replicas)
        return i


class LeastOutstanding:
    """Fewest requests queued or running; ties go to the lowest index (deterministic)."""

    shared = False
    static = False

    def pick(self, replicas: list[Replica]) -> int:
        best = 0
        best_n = replicas[0].outstanding
        for i in range(1, len(replicas)):
            o = replicas[i].outstanding
            if o < best_n:
                best, best_n = i, o
        return best


class RandomPick:
    shared = False
    static = True

    def __init__(self, rng: np.random.Generator, n: int):
        self.rng = rng
        self.n = n
        self.buf = np.empty(0, dtype=np.int64)
        self.pos = 0

    def assign(self, n: int) -> np.ndarray:
        return self.rng.integers(0, self.n, n)

    def pick(self, replicas: list[Replica]) -> int:
        if self.pos >= len(self.buf):
            self.buf = self.rng.integers(0, self.n, 4096)
            self.pos = 0
        i = int(self.buf[self.pos])
        self.pos += 1
        return i


class SharedQueue:
    shared = True
    static = False

    def pick(self, replicas: list[Replica]) -> int:  # pragma: no cover - never called
        raise NotImplementedError("shared_queue replicas pull work")


def make_balancer(kind: str, rng: np.random.Generator, n_replicas: int) -> Balancer:
    if kind == "round_robin":
        return RoundRobin(n_replicas)
    if kind == "least_outstanding":
        return LeastOutstanding()
    if kind == "random":
        return RandomPick(rng, n_replicas)
    if kind == "shared_queue":
        return SharedQueue()
    raise ValueError(f"unknown load balancer kind {kind!r}")
