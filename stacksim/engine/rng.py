"""Randomness belongs to the run: one SeedSequence per scenario seed, named child streams.

A stream's identity is its name ("arrivals/chat", "routing/llama"), so adding a workload never
shifts the numbers another workload draws. No global generator is ever touched.
"""

from __future__ import annotations

import zlib

import numpy as np


class Streams:
    """Named, independent random generators spawned from one seed."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._cache: dict[str, np.random.Generator] = {}

    def get(self, name: str) -> np.random.Generator:
        gen = self._cache.get(name)
        if gen is None:
            key = zlib.crc32(name.encode("utf-8"))
            gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(key,))))
            self._cache[name] = gen
        return gen
