"""Load balancers: small policy objects chosen by the deployment's ``load_balancer.kind``.

A balancer picks the replica for a request at arrival. ``shared_queue`` is different: requests
wait in one deployment queue and a replica pulls the next one when it has a free sequence slot
(an M/M/c queue when each replica runs one sequence at a time). ``lora_affinity`` sends a request
with a LoRA adapter where that adapter already is (serving/lora.py), so fewer replicas load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from stacksim.metrics import RI_LORA

if TYPE_CHECKING:
    from stacksim.serving.replica import Replica


class Balancer(Protocol):
    shared: bool
    static: bool  # the choice does not depend on replica state, so it can be made up front

    def pick(self, replicas: list[Replica], rid: int = -1) -> int: ...

    def assign(self, n: int) -> np.ndarray: ...


class RoundRobin:
    shared = False
    static = True

    def __init__(self, n: int) -> None:
        self.next = 0
        self.n = n

    def assign(self, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64) % self.n

    def pick(self, replicas: list[Replica], rid: int = -1) -> int:
        i = self.next
        self.next = (i + 1) % len(replicas)
        return i


class LeastOutstanding:
    """Fewest requests queued or running; ties go to the lowest index (deterministic)."""

    shared = False
    static = False

    def pick(self, replicas: list[Replica], rid: int = -1) -> int:
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

    def pick(self, replicas: list[Replica], rid: int = -1) -> int:
        if self.pos >= len(self.buf):
            self.buf = self.rng.integers(0, self.n, 4096)
            self.pos = 0
        i = int(self.buf[self.pos])
        self.pos += 1
        return i


class SharedQueue:
    shared = True
    static = False

    def pick(self, replicas: list[Replica], rid: int = -1) -> int:  # pragma: no cover - never called
        raise NotImplementedError("shared_queue replicas pull work")


class LoraAffinity:
    """Adapter-aware routing: a request with a LoRA adapter goes to the replica with the fewest
    requests outstanding among those that hold its adapter in a GPU slot or were the last sent
    that adapter (it may still be queued there, not yet loaded); when there is none, to the
    replica with the fewest outstanding. Base-model requests: fewest outstanding. Ties go to the
    lowest index. Like the LoRA-affinity scorers of LLM routers, it trades some load balance for
    fewer adapter loads; it does not stop a popular adapter piling onto one replica."""

    shared = False
    static = False

    def __init__(self) -> None:
        self.last: dict[int, int] = {}  # adapter -> replica index it was last sent to

    def pick(self, replicas: list[Replica], rid: int = -1) -> int:
        a = int(replicas[0].reqs.RI[RI_LORA, rid]) if rid >= 0 else 0
        best = -1
        best_n = 0
        if a > 0:
            home = self.last.get(a, -1)
            for i, r in enumerate(replicas):
                if (r.index == home or r.lora_resident(a)) and (best < 0 or r.outstanding < best_n):
                    best, best_n = i, r.outstanding
        if best < 0:
            best = 0
            best_n = replicas[0].outstanding
            for i in range(1, len(replicas)):
                o = replicas[i].outstanding
                if o < best_n:
                    best, best_n = i, o
        if a > 0:
            self.last[a] = replicas[best].index
        return best


def make_balancer(kind: str, rng: np.random.Generator, n_replicas: int) -> Balancer:
    if kind == "round_robin":
        return RoundRobin(n_replicas)
    if kind == "least_outstanding":
        return LeastOutstanding()
    if kind == "random":
        return RandomPick(rng, n_replicas)
    if kind == "shared_queue":
        return SharedQueue()
    if kind == "lora_affinity":
        return LoraAffinity()
    raise ValueError(f"unknown load balancer kind {kind!r}")
