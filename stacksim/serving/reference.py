"""The reference replica: vLLM-style continuous batching on paged KV blocks, in plain Python.

This is the readable specification of the scheduler and the naive twin of the compiled one in
:mod:`stacksim.serving.core` (used by :class:`stacksim.serving.replica.Replica`); tests run both
on random scenarios and require identical results. Select it with
``Simulation(..., reference=True)``.

One SimPy process per replica and one event per batch iteration, except that a stretch of pure
decode iterations whose batch does not change (no arrival that could join, no completion, no KV
block shortage) is one event: its iteration times are summed by a Numba kernel. An arrival in
the middle of a stretch cuts it at the next iteration boundary, as a real engine would pick the
request up at its next scheduling step.

Scheduling follows vLLM (V1 with chunked prefill; V0 without):
- decodes first, one token each; then partially prefilled requests; then new requests in FCFS
  order, while the step's token budget, the sequence limit and free KV blocks allow;
- without chunked prefill a step is either all prefill (whole prompts) or all decode;
- when a decode needs a block and none is free, the most recently admitted request is preempted
  and recomputed later (vLLM's default preemption mode), its blocks freed;
- new requests are admitted only while 1% of the blocks stay free (vLLM's watermark), and not
  in a step that had to preempt (vLLM V1), so a full cache does not thrash;
- with prefix caching, a request carrying blocks is looked up when it is considered for
  admission: its cached prefix takes KV blocks but no compute, so its prefill starts there
  (:mod:`stacksim.serving.prefix_cache` holds the policy; cache events are replayed into it
  after each scheduling decision and after each step, as the compiled replica does);
- with KV offload (``engine.kv_offload``), the part of a hit held in host memory or on SSD is
  loaded before the step that admits the request, which is longer by those loads
  (:mod:`stacksim.serving.kv_offload`).

With speculative decoding (``engine.speculative``) a decode step verifies k+1 positions per
sequence plus the proposer's passes (:func:`stacksim.kernels.cost.spec_step_time`), takes k+1
tokens of the step's budget per decoding sequence (vLLM V1 counts speculative tokens against
``max_num_batched_tokens``), and emits :func:`stacksim.kernels.cost.spec_tokens` tokens per
sequence: the expected count E = (1 - a^(k+1)) / (1 - a) (Leviathan et al., ICML 2023, eq. 1),
rounded step by step, none past a request's last token. Prefill steps emit one token, as before.

With multi-LoRA (``engine.lora``), at most ``max_loras`` distinct adapters are among the held
sequences (decoding or in prefill): a waiting request whose adapter would be one too many is
skipped and the next one considered (vLLM's scheduler skips it too, so base-model requests behind
it are not blocked). Admitting a request whose adapter is in no GPU slot loads it and the step is
longer by its loads; :class:`stacksim.serving.lora.LoraSlots` spells out the slot and host-cache
policy. A step's LoRA work is every token's shrink and expand on its adapter plus each distinct
adapter's weights once (:func:`stacksim.kernels.cost.step_time_lora`).

Decoding sequences live in slot arrays (`ctx`: tokens with KV stored, `rem`: tokens still to
generate) that the kernels update in place.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import simpy

from stacksim.kernels import cost as K
from stacksim.metrics import COMPLETED, QUEUED, RF_PFX_LOAD, RI_LORA, RI_PFX_VER, RUNNING, Levels

if TYPE_CHECKING:
    from stacksim.serving.deployment import DeploymentRuntime

from stacksim.serving import lora as LR
from stacksim.serving.core_state import ADMIT_WATERMARK, STRETCH_CAP
from stacksim.serving.engines import async_scheduling
from stacksim.serving.prefix_cache import ACQUIRE, INSERT, RELEASE, PrefixCache
from stacksim.serving.replica import retarget


class _Prefill:
    __slots__ = ("done", "generated", "rid", "seq", "target")

    def __init__(self, rid: int, target: int, generated: int, seq: int):
        self.rid = rid
        self.done = 0
        self.target = target
        self.generated = generated
        self.seq = seq


class ReferenceReplica:
    # The twin checks scheduling; faults (fail / repair) are exercised on the compiled replica.
    up = True
    accepting = True
    failures = 0

    def __init__(self, env: simpy.Environment, dep: DeploymentRuntime, index: int, level_width_s: float, max_time_s: float):
        self.env = env
        self.dep = dep
        self.index = index
        self.reqs = dep.reqs
        eng = dep.engine
        self.p = dep.params
        self.B = eng.block_size
        self.total_blocks = dep.plan.num_blocks
        self.free = self.total_blocks
        self.max_seqs = eng.max_num_seqs
        self.max_tokens = eng.max_num_batched_tokens
        self.chunked = eng.enable_chunked_prefill
        self.async_sched = async_scheduling(eng)  # see core_state.ASYNC
        self.seen = 0  # waiting requests (from the head) queued when the last step was planned
        self.spec_k = int(self.p[K.SPEC_K])  # speculative decoding: tokens proposed per step (0: off)
        self.spec_e = float(self.p[K.SPEC_TOKENS])  # expected tokens per sequence per step
        self.spec_steps = 0  # speculative decode steps so far (spec_tokens rounds E from it)
        cap = self.max_seqs
        self.ctx = np.zeros(cap, dtype=np.int64)
        self.rem = np.zeros(cap, dtype=np.int64)
        self.seq = np.zeros(cap, dtype=np.int64)  # admission order, for preemption
        self.slot_rid = [0] * cap
        self.n = 0
        self.ctx_sum = 0
        self.done_buf = np.zeros(cap, dtype=np.int64)
        self.cum = np.zeros(STRETCH_CAP)
        self.waiting: deque[int] = deque()
        self.resume: dict[int, int] = {}  # preempted rid -> tokens already generated
        self.last_token_s: dict[int, float] = {}
        self.prefilling: list[_Prefill] = []
        self.outstanding = 0
        self.admit_counter = 0
        self.preemptions = 0
        self.iterations = 0
        self.busy_s = 0.0
        self.in_stretch = False
        self.t0 = 0.0
        self.k = 0
        self.timer: simpy.Event | None = None
        self.idle_event: simpy.Event | None = None
        self.itl_hist = dep.itl_hist
        self.itl_from = 0.0  # inter-token gaps are tallied from the end of the warm-up
        self.levels = Levels(("waiting", "running", "kv_used", "busy"), level_width_s, max_time_s)
        self.lv = self.levels.set
        self.arr_rids: list[int] = []
        self.arr_times: list[float] = []
        self.arr_pos = 0
        self.shared = dep.balancer.shared
        self.inp = dep.inp  # plain lists: scalar reads are several times cheaper than numpy's
        self.out = dep.out
        self.prefix_cache = PrefixCache(self.reqs, self.B, dep.rd.kv_offload) if eng.prefix_caching else None
        self.pfx_events: list[tuple[int, int, int]] = []  # (kind, rid, min free blocks before it)
        self.min_free = self.total_blocks  # fewest free blocks since the last event
        # Multi-LoRA state (see the module docstring); adapter ids 1..n, 0 = the base model.
        rl = dep.rd.lora
        self.lora = rl
        self.lora_log = LR.LoraLog(rl) if rl is not None else None
        self.slots = LR.LoraSlots(rl) if rl is not None else None
        self.proc = env.process(self._run())

    # ------------------------------------------------------------------ arrivals

    def preroute(self, rids: list[int], times: list[float]) -> None:
        """Hand this replica its future arrivals (state-independent balancers route up front).

        The replica then needs no arrival events: it takes arrivals in at its iteration
        boundaries and ends a decode stretch at the first boundary after the next arrival.
        """
        self.arr_rids = rids
        self.arr_times = times
        self.arr_pos = 0
        self.outstanding = 0

    def take_arrivals(self, now: float) -> None:
        """Queue pre-routed requests that have arrived by ``now`` (used when the run stops)."""
        self._take_arrivals(now)

    def load(self) -> int:
        """Sequences running, in prefill or queued here."""
        return self.n + len(self.prefilling) + len(self.waiting)

    def lora_resident(self, a: int) -> bool:
        """Adapter ``a`` is in one of this replica's GPU slots."""
        return self.slots is not None and a > 0 and a in self.slots.gpu

    def _take_arrivals(self, now: float) -> None:
        pos = self.arr_pos
        times = self.arr_times
        end = len(times)
        if pos >= end or times[pos] > now:
            return
        rids = self.arr_rids
        reqs = self.reqs
        lv = self.levels
        while pos < end and times[pos] <= now:
            rid = rids[pos]
            self.waiting.append(rid)
            reqs.replica[rid] = self.index
            reqs.status[rid] = QUEUED
            lv.set(times[pos], len(self.waiting), lv.value(1), lv.value(2), lv.value(3))
            pos += 1
        self.arr_pos = pos

    def enqueue(self, rid: int) -> None:
        """A request routed here now (state-dependent balancers)."""
        self.waiting.append(rid)
        self.outstanding += 1
        self.reqs.replica[rid] = self.index
        self.reqs.status[rid] = QUEUED
        lv = self.levels
        lv.set(self.env.now, len(self.waiting), lv.value(1), lv.value(2), lv.value(3))
        self.poke()

    def take(self, rid: int) -> None:
        """Shared queue: the deployment hands this replica the next request."""
        self.waiting.append(rid)
        self.outstanding += 1
        self.reqs.replica[rid] = self.index

    def cancel_queued(self, rid: int) -> bool:
        """:meth:`Replica.cancel_queued`: drop ``rid`` if it is still waiting here."""
        if rid not in self.waiting:
            return False
        if self.waiting.index(rid) < self.seen:
            self.seen -= 1
        self.waiting.remove(rid)
        self.outstanding -= 1
        lv = self.levels
        lv.set(self.env.now, len(self.waiting), lv.value(1), lv.value(2), lv.value(3))
        return True

    def can_take(self) -> bool:
        """Room for one more sequence (used by the shared-queue balancer)."""
        return self.n + len(self.prefilling) + len(self.waiting) < self.max_seqs

    def poke(self) -> None:
        """New work may be schedulable: wake the replica or cut its decode stretch short."""
        ev = self.idle_event
        if ev is not None:
            if not ev.triggered:
                ev.succeed()
            return
        if not self.in_stretch or self.n + len(self.prefilling) >= self.max_seqs or self.free <= 0:
            return
        now = self.env.now
        j = K.boundary_after(self.cum, self.k, now - self.t0)
        if j < self.k:
            self.k = j
            new = self.env.timeout(max(0.0, self.t0 + self.cum[j - 1] - now))
            assert self.timer is not None
            retarget(self.proc, self.timer, new)
            self.timer = new

    # ------------------------------------------------------------------ the process

    def _levels(self, busy: float) -> None:
        self.lv(
            self.env.now,
            len(self.waiting),
            self.n + len(self.prefilling),
            (self.total_blocks - self.free) / self.total_blocks,
            busy,
        )

    def _run(self):  # type: ignore[no-untyped-def]
        env = self.env
        while True:
            now = env.now
            if self.arr_pos < len(self.arr_times):
                self._take_arrivals(now)
            if self.shared:
                self.dep.pull(self)
            if not (self.waiting or self.prefilling or self.n):
                self.seen = 0
                self._lora_flush()
                self._levels(0.0)
                if self.arr_pos < len(self.arr_times):
                    yield env.timeout(self.arr_times[self.arr_pos] - now)
                else:
                    self.idle_event = env.event()
                    yield self.idle_event
                    self.idle_event = None
                continue
            # Asynchronous scheduling: requests this plan cannot see yet (see _schedule)
            lagged = self.async_sched and bool(self.n or self.prefilling) and len(self.waiting) > self.seen
            step = self._schedule()
            self.seen = len(self.waiting)  # the next plan may take every request queued now
            self._pfx_sync()
            self._lora_flush()
            self._levels(1.0)
            if step is not None:
                chunks, n_dec, dur = step
                self.iterations += 1
                self.busy_s += dur
                yield env.timeout(dur)
                self._finish_step(chunks, n_dec, dur)
                self._pfx_sync()
            else:
                if self.spec_k:
                    k = K.plan_stretch_spec(self.p, self.ctx, self.rem, self.n, self.free, self.B, STRETCH_CAP,
                                            float(self.ctx_sum), self.cum, self.spec_steps, self.spec_e)
                elif self.lora is not None:
                    lf, lb = self._lora_work(self.n, [])
                    k = K.plan_stretch_lora(self.p, self.ctx, self.rem, self.n, self.free, self.B, STRETCH_CAP,
                                            float(self.ctx_sum), self.cum, lf, lb)
                else:
                    k = K.plan_stretch(self.p, self.ctx, self.rem, self.n, self.free, self.B, STRETCH_CAP, float(self.ctx_sum), self.cum)
                if k <= 0:  # cannot happen after _schedule's preemption; keep the loop honest
                    raise RuntimeError("decode stretch with no room to grow")
                if lagged and self.n + len(self.prefilling) < self.max_seqs and self.free > 0:
                    k = 1  # asynchronous scheduling: the requests that just arrived join the step after next
                if (
                    self.arr_pos < len(self.arr_times)
                    and self.n + len(self.prefilling) < self.max_seqs
                    and self.free > 0
                ):
                    # A pre-routed arrival during the stretch ends it at the next boundary.
                    k = min(k, K.boundary_after(self.cum, k, self.arr_times[self.arr_pos] - now))
                self.in_stretch = True
                self.t0 = now
                self.k = k
                self.timer = env.timeout(self.cum[k - 1])
                yield self.timer
                self.in_stretch = False
                j = self.k
                self.iterations += j
                self.busy_s += float(self.cum[j - 1])
                self._commit_decodes(j)
                self._pfx_sync()

    # ------------------------------------------------------------------ prefix caching

    def _take(self, nb: int) -> None:
        """Take ``nb`` free KV blocks (unpinned cache entries there are evicted at the next sync)."""
        self.free -= nb
        self.min_free = min(self.min_free, self.free)

    def _log(self, kind: int, rid: int) -> None:
        if self.prefix_cache is not None and self.reqs.RI[RI_PFX_VER, rid] != 0:
            self.pfx_events.append((kind, rid, self.min_free))
            self.min_free = self.free

    def _pfx_sync(self) -> None:
        if self.prefix_cache is not None:
            self.prefix_cache.apply(self.pfx_events, self.min_free)
            self.pfx_events.clear()
            self.min_free = self.free

    def _hit(self, st: _Prefill) -> int:
        """Tokens of ``st``'s prefill in the prefix cache now (0 without blocks or without a cache)."""
        if self.prefix_cache is None or self.reqs.RI[RI_PFX_VER, st.rid] == 0:
            return 0
        return self.prefix_cache.lookup(st.rid, st.target)

    # ------------------------------------------------------------------ scheduling

    def _schedule(self) -> tuple[list[tuple[_Prefill, int]], int, float] | None:
        """Plan the next step; ``None`` means a pure-decode stretch."""
        B = self.B
        g = K.spec_tokens(self.spec_steps, 1, self.spec_e) if self.spec_k else 1  # tokens per decode now
        lora = self.slots is not None
        if self.slots is not None:
            self.slots.stall = 0.0
        if not self.waiting and not self.prefilling and self.free >= (self._decode_blocks(g) if self.spec_k else self.n):
            return None  # decodes only, and every one can take its new blocks: a stretch
        reserve = 0
        preempted = False
        if self.n:
            reserve = self._decode_blocks(g)
            while reserve > self.free and (self.n or self.prefilling):
                self._preempt_one()
                preempted = True
                reserve = self._decode_blocks(g) if self.n else 0
        avail = self.free - reserve
        wm = int(ADMIT_WATERMARK * self.total_blocks)  # see core.ADMIT_WATERMARK
        lim = len(self.waiting)
        if self.async_sched and (self.n or self.prefilling):
            lim = min(self.seen, lim)  # requests queued while the last step ran wait one more step
        chunks: list[tuple[_Prefill, int]] = []
        kv_load = 0.0  # loads of admitted hits from host memory / SSD (engine.kv_offload), in admission order
        RF = self.reqs.RF
        if self.chunked:
            budget = self.max_tokens - self.n * (self.spec_k + 1)  # a decode verifies k+1 tokens
            for st in self.prefilling:
                if budget <= 0:
                    break
                c = min(st.target - st.done, budget)
                nb = -(-(st.done + c) // B) - (-(-st.done // B))
                if nb > avail:
                    c = (-(-st.done // B) + avail) * B - st.done  # what fits in the free blocks
                    if c <= 0:
                        break
                    nb = avail
                chunks.append((st, c))
                budget -= c
                avail -= nb
            pos = 0  # queue position of the candidate (requests skipped for max_loras stay in front)
            while (
                not preempted and pos < lim and budget > 0 and self.n + len(self.prefilling) < self.max_seqs
                and avail > wm
            ):
                rid = self.waiting[pos]
                if self.slots is not None and self.slots.skip(int(self.reqs.RI[RI_LORA, rid])):
                    pos += 1
                    continue
                st = self._admit_state(rid)
                hit = self._hit(st)
                hb = hit // B  # the cached prefix takes blocks, not compute
                c = min(st.target - hit, budget, (avail - wm - hb) * B)
                if c <= 0:
                    break
                self._admit(st, hit, pos)
                lim -= 1
                if hit > 0:
                    kv_load += RF[RF_PFX_LOAD, st.rid]
                chunks.append((st, c))
                budget -= c
                avail -= hb + -(-c // B)
        else:
            if not self.prefilling:
                budget = self.max_tokens
                pos = 0
                while not preempted and pos < lim and self.n + len(self.prefilling) < self.max_seqs:
                    if self.slots is not None and self.slots.skip(int(self.reqs.RI[RI_LORA, self.waiting[pos]])):
                        pos += 1
                        continue
                    st = self._admit_state(self.waiting[pos])
                    hit = self._hit(st)
                    c = st.target - hit
                    nb = -(-st.target // B)
                    if c > budget or nb > avail - wm:
                        break
                    self._admit(st, hit, pos)
                    lim -= 1
                    if hit > 0:
                        kv_load += RF[RF_PFX_LOAD, st.rid]
                    chunks.append((st, c))
                    budget -= c
                    avail -= nb
        if not chunks:
            if self.n:
                return None
            raise RuntimeError("replica has queued work but cannot schedule any of it")
        n_dec = self.n if self.chunked else 0
        n_pf = 0
        pairs = 0.0
        ctx_read = 0.0
        n_logits = n_dec
        for st, c in chunks:
            n_pf += c
            pairs += c * (st.done + (c + 1) / 2.0)
            ctx_read += st.done
            if st.done + c >= st.target:
                n_logits += 1
        if lora:
            lf, lb = self._lora_work(n_dec, chunks)
            assert self.slots is not None
            dur = self.slots.stall + K.step_time_lora(self.p, float(n_pf), pairs, ctx_read, float(n_dec),
                                                      float(self.ctx_sum) if n_dec else 0.0, float(n_logits), lf, lb)
        else:
            step_time = K.spec_step_time if self.spec_k else K.step_time
            dur = step_time(self.p, float(n_pf), pairs, ctx_read, float(n_dec), float(self.ctx_sum) if n_dec else 0.0,
                            float(n_logits))
        if kv_load > 0.0:  # the step waits for the KV it loads before its forward pass
            dur += kv_load
        return chunks, n_dec, dur

    def _decode_blocks(self, g: int) -> int:
        """KV blocks the running decodes need to emit ``g`` tokens each (none past its last)."""
        if self.spec_k:
            return K.new_blocks_capped(self.ctx, self.rem, self.n, g, self.B)
        return K.new_blocks_after(self.ctx, self.n, 1, self.B)

    def _admit_state(self, rid: int) -> _Prefill:
        gen = self.resume.get(rid, 0)
        return _Prefill(rid, self.inp[rid] + gen, gen, 0)

    def _admit(self, st: _Prefill, hit: int, pos: int = 0) -> None:
        """Start ``st``'s prefill (the request at queue position ``pos``) after its first ``hit``
        tokens, which the prefix cache holds."""
        if pos == 0:
            self.waiting.popleft()
        else:
            del self.waiting[pos]
        self.admit_counter += 1
        st.seq = self.admit_counter
        st.done = hit
        self.prefilling.append(st)
        rid = st.rid
        if np.isnan(self.reqs.admitted_s[rid]):  # queueing delay ends at the first admission
            self.reqs.admitted_s[rid] = self.env.now
            self.reqs.cached_tokens[rid] = hit
        self.reqs.status[rid] = RUNNING
        if hit > 0:
            self._log(ACQUIRE, rid)  # before taking the blocks: reusing cached ones evicts nothing
            self._take(hit // self.B)
        if self.slots is not None and self.reqs.RI[RI_LORA, rid] > 0:
            self.slots.acquire(int(self.reqs.RI[RI_LORA, rid]), rid)

    def _preempt_one(self) -> None:
        """Preempt the most recently admitted running request (recompute mode)."""
        B = self.B
        best_pf = max(self.prefilling, key=lambda s: s.seq) if self.prefilling else None
        best_slot = int(np.argmax(self.seq[: self.n])) if self.n else -1
        now = self.env.now
        if best_pf is not None and (best_slot < 0 or best_pf.seq > self.seq[best_slot]):
            self.prefilling.remove(best_pf)
            self.free += -(-best_pf.done // B)
            rid = best_pf.rid
            gen = best_pf.generated
        else:
            i = best_slot
            rid = self.slot_rid[i]
            self.free += -(-int(self.ctx[i]) // B)
            gen = self.out[rid] - int(self.rem[i])
            self.last_token_s[rid] = now
            self._remove_slot(i)
        if gen:
            self.resume[rid] = gen
        self.reqs.preemptions[rid] += 1
        self.reqs.status[rid] = QUEUED
        if self.slots is not None and self.reqs.RI[RI_LORA, rid] > 0:
            self.slots.release(int(self.reqs.RI[RI_LORA, rid]), rid)
        if self.reqs.RI[RI_PFX_VER, rid] != 0:
            self._log(RELEASE, rid)
            self.reqs.RI[RI_PFX_VER, rid] = -1  # its length grew: look it up again when it comes back
        self.waiting.appendleft(rid)
        self.preemptions += 1

    def _remove_slot(self, i: int) -> None:
        last = self.n - 1
        self.ctx_sum -= int(self.ctx[i])
        if i != last:
            self.ctx[i] = self.ctx[last]
            self.rem[i] = self.rem[last]
            self.seq[i] = self.seq[last]
            self.slot_rid[i] = self.slot_rid[last]
        self.n = last

    # ------------------------------------------------------------------ step ends

    def _finish_step(self, chunks: list[tuple[_Prefill, int]], n_dec: int, dur: float) -> None:
        B = self.B
        now = self.env.now
        if n_dec and self.spec_k:
            blocks, nd, added = K.commit_spec(self.ctx, self.rem, self.n, 1, B, self.done_buf, self.itl_hist,
                                              np.array([dur]), now >= self.itl_from, self.spec_steps, self.spec_e)
            self.spec_steps += 1
            self._take(blocks)
            self.ctx_sum += added
            self._complete_slots(nd)
        elif n_dec:
            if now >= self.itl_from:
                self.itl_hist[K.hist_index(dur)] += n_dec
            blocks, nd = K.advance(self.ctx, self.rem, self.n, 1, B, self.done_buf)
            self._take(blocks)
            self.ctx_sum += self.n
            self._complete_slots(nd)
        for st, c in chunks:
            before = -(-st.done // B)
            st.done += c
            self._take(-(-st.done // B) - before)
            if st.done < st.target:
                continue
            self.prefilling.remove(st)
            rid = st.rid
            self._log(INSERT, rid)
            reqs = self.reqs
            if st.generated == 0:
                reqs.first_token_s[rid] = now
            else:
                self.resume.pop(rid, None)
                last = self.last_token_s.pop(rid, None)
                if last is not None and now >= self.itl_from:
                    self.itl_hist[K.hist_index(now - last)] += 1
            left = self.out[rid] - st.generated - 1
            if left <= 0:
                self.free += -(-st.done // B)
                self._finish(rid)
                continue
            i = self.n
            self.ctx[i] = st.done
            self.rem[i] = left
            self.seq[i] = st.seq
            self.slot_rid[i] = rid
            self.n += 1
            self.ctx_sum += st.done

    def _commit_decodes(self, j: int) -> None:
        if self.spec_k:
            blocks, nd, added = K.commit_spec(self.ctx, self.rem, self.n, j, self.B, self.done_buf, self.itl_hist,
                                              self.cum, self.env.now >= self.itl_from, self.spec_steps, self.spec_e)
            self.spec_steps += j
            self._take(blocks)
            self.ctx_sum += added
            self._complete_slots(nd)
            return
        blocks, nd = K.commit_stretch(
            self.ctx, self.rem, self.n, j, self.B, self.done_buf, self.itl_hist, self.cum, self.env.now >= self.itl_from
        )
        self._take(blocks)
        self.ctx_sum += self.n * j
        self._complete_slots(nd)

    def _complete_slots(self, nd: int) -> None:
        if not nd:
            return
        B = self.B
        # Remove from the highest slot down so swap-with-last never moves a finished slot.
        order = [int(self.done_buf[0])] if nd == 1 else sorted(self.done_buf[:nd].tolist(), reverse=True)
        for i in order:
            rid = self.slot_rid[i]
            self.free += -(-int(self.ctx[i]) // B)
            self._remove_slot(i)
            self._finish(rid)

    def _finish(self, rid: int) -> None:
        self.reqs.status[rid] = COMPLETED
        self.reqs.finish_s[rid] = self.env.now
        self._log(RELEASE, rid)
        if self.slots is not None and self.reqs.RI[RI_LORA, rid] > 0:
            self.slots.release(int(self.reqs.RI[RI_LORA, rid]), rid)
        self.outstanding -= 1
        self.dep.on_done(rid)

    # ------------------------------------------------------------------ multi-LoRA

    def _lora_work(self, n_dec: int, chunks: list[tuple[_Prefill, int]]) -> tuple[float, float]:
        """LoRA FLOPs and adapter bytes of a step: decodes' tokens first, then prefill chunks;
        each distinct adapter's weights once, in order of first appearance."""
        rl = self.lora
        assert rl is not None
        RI = self.reqs.RI
        flops = 0.0
        nbytes = 0.0
        seen: set[int] = set()
        if n_dec:
            for i in range(self.n):
                a = int(RI[RI_LORA, self.slot_rid[i]])
                if a > 0:
                    flops += rl.flops_per_token[a]
                    if a not in seen:
                        seen.add(a)
                        nbytes += rl.read_bytes[a]
        for st, c in chunks:
            a = int(RI[RI_LORA, st.rid])
            if c > 0 and a > 0:
                flops += c * rl.flops_per_token[a]
                if a not in seen:
                    seen.add(a)
                    nbytes += rl.read_bytes[a]
        return flops, nbytes

    def _lora_flush(self) -> None:
        if self.slots is not None and self.slots.events:
            assert self.lora_log is not None
            self.lora_log.flush(self.env.now, self.slots.events)
            self.slots.events = []
