"""Automatic prefix caching on one replica: KV blocks named by chained block hashes, reused by
later requests whose prompts start the same way (vLLM ``--enable-prefix-caching``; vLLM's
``CacheConfig.enable_prefix_caching``: "Enabled by default for V1"; SGLang's RadixAttention
behaves alike at block granularity).

This is the one implementation of the policy; the compiled replica (:mod:`.core` via
:mod:`.replica`) and its plain-Python twin (:mod:`.reference`) both call it, at the same points
of a step, so they stay identical.

The model, following vLLM V1's ``KVCacheManager`` / ``BlockPool``:

- A request may carry a prefix description (``RequestTable.set_blocks``): hash ids, each covering
  ``block_tokens`` tokens of its prompt, each id standing for the prompt up to and including that
  block (the chain of parent hashes is already folded in, as in vLLM and the Mooncake trace).
- **Lookup at admission.** The hit is the longest run of leading ids present in the cache (a hit
  stops at the first missing block), converted to tokens, capped at ``n - 1`` (vLLM always
  computes at least the last token to get logits) and rounded down to whole KV blocks of the
  engine (``block_size``): vLLM caches and reuses full blocks only.
- **Entries enter the cache when the request's prefill completes.** vLLM caches each full block
  as soon as its KV is computed, chunk by chunk; one event per request instead of one per chunk
  differs only for a request that arrives while another with the same prefix is mid-prefill.
  Inserting at admission would be wrong, not simpler: a request could reuse KV not computed yet.
  A request *pins* its entries while it runs, from admission (the hit) and from its prefill
  completion (the rest); pinned entries are part of its KV footprint.
- **Capacity.** Unpinned entries live in the free KV blocks: their tokens never exceed the
  replica's free KV tokens (capacity minus what running requests hold). When the scheduler takes
  free blocks, the least recently used unpinned entries are evicted. A request's entries are
  released in reverse order, so its tail blocks are evicted before its head (vLLM
  ``KVCacheManager.free``: "we free the blocks in reverse order so that the tail blocks are
  evicted first").
- **Footprint.** A request holds KV for its whole prompt, cached part included; two running
  requests sharing a prefix each count it (vLLM would share the blocks). This overstates KV use
  only while requests with a common prefix run at the same time.

With ``engine.kv_offload`` (:mod:`.kv_offload`) evicted entries move to host memory (then an
SSD) instead of vanishing; a lookup's hit runs over entries in any tier, and the tokens it finds
below HBM are loaded back, at a cost the scheduler adds to the step that admits the request.

Events reach the cache in order, each with the fewest free KV blocks seen since the previous
event (``min_free``), so evictions happen where the scheduler's allocations were:
``INSERT`` (prefill done), ``RELEASE`` (finished or preempted), ``ACQUIRE`` (admitted with a hit).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from stacksim.metrics import (
    RF_ADMITTED,
    RF_PFX_LOAD,
    RI_INPUT,
    RI_PFX_HIT,
    RI_PFX_VER,
    RI_PREEMPTIONS,
    RequestTable,
)
from stacksim.serving.kv_offload import (
    TIER_CPU,
    TIER_SSD,
    LowerTiers,
    ResolvedKvOffload,
    kv_offload_summary,
)

INSERT, RELEASE, ACQUIRE = 1, 2, 3


def hit_tokens(n_blocks_hit: int, block_tokens: int, prompt_tokens: int, n_tokens: int, block_size: int) -> int:
    """Tokens served from the cache for a hit of ``n_blocks_hit`` leading hash blocks of a
    ``prompt_tokens`` prompt (the blocks cover the prompt only; the last may be partial), when
    ``n_tokens`` are to be prefilled (more than the prompt after a preemption): at most
    ``n_tokens - 1`` (vLLM always computes the last token), in whole engine KV blocks."""
    h = min(n_blocks_hit * block_tokens, prompt_tokens, n_tokens - 1)
    return max(0, h // block_size * block_size)


class PrefixCache:
    """LRU cache of hash blocks on one replica (see the module docstring for the rules)."""

    def __init__(self, reqs: RequestTable, block_size: int, offload: ResolvedKvOffload | None = None):
        self.reqs = reqs
        # KV-cache tiers below HBM (engine.kv_offload; serving/kv_offload.py): evicted entries go
        # there, lookups see them, admissions load them back. None: an evicted entry is gone.
        self.tiers = LowerTiers(offload) if offload is not None else None
        self.block_size = block_size
        self.tokens: dict[int, int] = {}  # every cached id -> tokens it covers
        self.refs: dict[int, int] = {}  # pinned ids -> number of running requests holding them
        self.lru: OrderedDict[int, int] = OrderedDict()  # unpinned ids -> tokens, least recent first
        self.evictable_tokens = 0
        self.pins: dict[int, list[int]] = {}  # request id -> ids it pins
        self.version = 1  # bumped when the set of cached ids changes (lookups stay valid until then)
        self.evicted_blocks = 0
        self.evicted_tokens = 0

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, h: int) -> bool:
        return h in self.tokens

    def longest_prefix(self, hashes: Sequence[int]) -> int:
        """How many leading ids of ``hashes`` are cached (stops at the first missing one)."""
        tokens = self.tokens
        k = 0
        for h in hashes:
            if h not in tokens:
                break
            k += 1
        return k

    def lookup(self, rid: int, n_tokens: int) -> int:
        """Tokens of request ``rid``'s next prefill (``n_tokens``: its prompt, plus its output so
        far after a preemption) already cached here. Records the hit and the cache version it is
        valid for in the request table (the scheduler reads them); changes nothing in the cache."""
        reqs = self.reqs
        RI = reqs.RI
        hashes, bt = reqs.blocks[rid]
        if self.tiers is not None:
            return self._lookup_tiers(rid, n_tokens, hashes.tolist(), bt)
        hit = hit_tokens(self.longest_prefix(hashes.tolist()), bt, int(RI[RI_INPUT, rid]), n_tokens, self.block_size)
        pre = reqs.kv_transferred.get(rid)
        if pre is not None and math.isnan(reqs.RF[RF_ADMITTED, rid]):
            # Its prompt's KV arrived from a prefill instance (disaggregated serving): present at its
            # first admission whether cached here or not (a preempted request recomputes, as vLLM does).
            hit = max(hit, hit_tokens(-(-pre // bt), bt, int(RI[RI_INPUT, rid]), n_tokens, self.block_size))
        RI[RI_PFX_HIT, rid] = hit
        RI[RI_PFX_VER, rid] = self.version
        return hit

    def _lookup_tiers(self, rid: int, n_tokens: int, ids: list[int], bt: int) -> int:
        """:meth:`lookup` with lower tiers: the hit runs over blocks held in any tier; the tokens of
        its blocks below HBM set the load time the scheduler adds to the admitting step."""
        reqs = self.reqs
        RI = reqs.RI
        tiers = self.tiers
        assert tiers is not None
        tokens, cpu, ssd = self.tokens, tiers.cpu, tiers.ssd
        where: list[int] = []  # tier of each leading block (0 HBM)
        for h in ids:
            if h in tokens:
                where.append(0)
            elif h in cpu:
                where.append(TIER_CPU)
            elif h in ssd:
                where.append(TIER_SSD)
            else:
                break
        prompt = int(RI[RI_INPUT, rid])
        hit = hit_tokens(len(where), bt, prompt, n_tokens, self.block_size)
        moved = [0, 0, 0]  # tokens of the hit per tier
        for i in range(-(-hit // bt)):
            moved[where[i]] += min(bt, hit - i * bt)
        pre = reqs.kv_transferred.get(rid)
        if pre is not None and math.isnan(reqs.RF[RF_ADMITTED, rid]):
            sent = hit_tokens(-(-pre // bt), bt, prompt, n_tokens, self.block_size)
            if sent >= hit:  # the transferred KV covers it: nothing to load (see lookup)
                hit = sent
                moved = [0, 0, 0]
        load = tiers.cfg.load_seconds(moved[TIER_CPU], moved[TIER_SSD])
        RI[RI_PFX_HIT, rid] = hit
        RI[RI_PFX_VER, rid] = self.version
        reqs.RF[RF_PFX_LOAD, rid] = load
        if load > 0.0:
            tiers.pending[rid] = (moved[TIER_CPU], moved[TIER_SSD], load)
        else:
            tiers.pending.pop(rid, None)
        return hit

    # ------------------------------------------------------------------ changes

    def _pin_run(self, rid: int, ids: list[int], start: int, stop: int, bt: int, prompt: int) -> None:
        """Pin ``ids[start:stop]`` for request ``rid``, caching those not cached yet (block ``i``
        covers ``min(bt, prompt - i * bt)`` tokens). One loop, no calls: it runs once per block."""
        refs, lru, tokens, tiers = self.refs, self.lru, self.tokens, self.tiers
        new = 0
        reused = 0
        for i in range(start, stop):
            h = ids[i]
            r = refs.get(h)
            if r is not None:  # held by another running request too
                refs[h] = r + 1
                continue
            t = lru.pop(h, None)
            if t is None:  # new (or evicted after this request's lookup: its KV holds the content)
                left = prompt - i * bt
                tokens[h] = min(left, bt)
                new += 1
                if tiers is not None:  # loaded back, or computed again: no longer below HBM
                    tiers.take(h)
            else:
                reused += t
            refs[h] = 1
        self.evictable_tokens -= reused
        if new:
            self.version += 1
        pins = self.pins.get(rid)
        if pins is None:
            self.pins[rid] = ids[start:stop]
        else:
            pins.extend(ids[start:stop])

    def acquire(self, rid: int, hit: int) -> None:
        """Request ``rid`` was admitted with ``hit`` cached tokens: pin the entries it reuses."""
        if hit <= 0:
            return
        tiers = self.tiers
        if tiers is not None:
            p = tiers.pending.pop(rid, None)
            if p is not None:  # its hit is loaded from host memory / SSD
                tiers.loads += 1
                tiers.loaded_tokens[TIER_CPU] += p[0]
                tiers.loaded_tokens[TIER_SSD] += p[1]
                tiers.load_s += p[2]
                if self.reqs.RI[RI_PREEMPTIONS, rid] == 0:  # its first admission (cached_tokens)
                    tiers.first[rid] = (p[0], p[1])
        hashes, bt = self.reqs.blocks[rid]
        ids = hashes.tolist()
        self._pin_run(rid, ids, 0, min(len(ids), -(-hit // bt)), bt, int(self.reqs.RI[RI_INPUT, rid]))

    def insert(self, rid: int) -> None:
        """Request ``rid`` finished its prefill: its prompt's blocks are cached (and pinned; those
        it reused have been since its admission)."""
        hashes, bt = self.reqs.blocks[rid]
        ids = hashes.tolist()
        prompt = int(self.reqs.RI[RI_INPUT, rid])
        self._pin_run(rid, ids, len(self.pins.get(rid, ())), min(len(ids), -(-prompt // bt)), bt, prompt)

    def release(self, rid: int) -> None:
        """Request ``rid`` finished or was preempted: unpin its entries, tail first into the LRU."""
        ids = self.pins.pop(rid, None)
        if not ids:
            return
        refs, lru = self.refs, self.lru
        for h in reversed(ids):
            r = refs[h] - 1
            if r:
                refs[h] = r
                continue
            del refs[h]
            t = self.tokens[h]
            lru[h] = t
            self.evictable_tokens += t

    def evict_to(self, free_tokens: int) -> None:
        """Evict least recently used unpinned entries until they fit in ``free_tokens``."""
        lru, tokens = self.lru, self.tokens
        have = self.evictable_tokens
        n = 0
        tiers = self.tiers
        while have > free_tokens:
            h, t = lru.popitem(last=False)
            del tokens[h]
            have -= t
            n += 1
            if tiers is not None:
                tiers.offload(h, t)
        if n:
            self.evicted_tokens += self.evictable_tokens - have
            self.evictable_tokens = have
            self.evicted_blocks += n
            self.version += 1

    def clear(self) -> None:
        """The replica lost its KV cache (a failure)."""
        self.tokens.clear()
        self.refs.clear()
        self.lru.clear()
        self.pins.clear()
        self.evictable_tokens = 0
        if self.tiers is not None:
            self.tiers.clear()
        self.version += 1

    def apply(self, events: Iterable[Sequence[int]], min_free_end: int) -> None:
        """Replay the scheduler's events ``(kind, rid, min_free_blocks_before)`` in order, then
        make the unpinned entries fit ``min_free_end`` free blocks (the fewest since the last event)."""
        B = self.block_size
        hit = self.reqs.RI
        for kind, rid, min_free in events:
            if self.evictable_tokens > min_free * B:
                self.evict_to(min_free * B)
            if kind == INSERT:
                self.insert(rid)
            elif kind == RELEASE:
                self.release(rid)
            else:
                self.acquire(rid, int(hit[RI_PFX_HIT, rid]))
        if self.evictable_tokens > min_free_end * B:
            self.evict_to(min_free_end * B)


def prefix_cache_summary(replicas: Sequence[Any], requests: pd.DataFrame, blocks: dict[int, Any]) -> dict[str, Any]:
    """The ``prefix_cache`` entry of a deployment in ``summary.json``, over the requests it
    admitted (``requests``: its rows of the serving table): prompt tokens, cached tokens (at each
    request's first admission), the token-weighted hit rate, and the entries evicted."""
    caches = [r.prefix_cache for r in replicas if r.prefix_cache is not None]
    adm = requests["admitted_s"].notna().to_numpy()
    prompt = int(requests["input_tokens"].to_numpy()[adm].sum())
    cached = int(requests["cached_tokens"].to_numpy()[adm].sum())
    admitted = requests["request_id"].to_numpy()[adm].tolist()
    with_blocks = sum(1 for rid in admitted if rid in blocks)
    out: dict[str, Any] = {
        "enabled": bool(caches),
        "requests_with_blocks": with_blocks,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "hit_rate": round(cached / prompt, 6) if prompt else 0.0,
        "evicted_blocks": sum(c.evicted_blocks for c in caches),
        "evicted_tokens": sum(c.evicted_tokens for c in caches),
    }
    tiers = [c.tiers for c in caches if c.tiers is not None]
    if tiers:  # engine.kv_offload: where the hits came from, loads, moves between tiers
        out["offload"] = kv_offload_summary(tiers[0].cfg, tiers, admitted, cached)
    return out
