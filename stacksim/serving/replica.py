"""One engine replica: a SimPy process around the compiled scheduler in :mod:`.core`.

vLLM-style continuous batching on paged KV blocks (the rules are spelled out in
:mod:`stacksim.serving.reference`, the plain-Python twin). One SimPy process per replica and one
event per batch iteration, except that a stretch of pure-decode iterations whose batch does not
change is one event. An arrival in the middle of a stretch cuts it at the next iteration
boundary, as a real engine picks a request up at its next scheduling step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import simpy

from stacksim.kernels import cost as K
from stacksim.kernels.cost import level_set
from stacksim.metrics import FAILED, QUEUED, RI_GEN_DONE, RI_INPUT, Levels
from stacksim.serving import core as C
from stacksim.serving import core_lora as CL
from stacksim.serving import core_state as CS
from stacksim.serving.engines import async_scheduling
from stacksim.serving.lora import LoraLog
from stacksim.serving.prefix_cache import PrefixCache

if TYPE_CHECKING:
    from stacksim.serving.deployment import DeploymentRuntime


def retarget(proc: simpy.Process, old: simpy.Event, new: simpy.Event) -> None:
    """Make ``proc`` (waiting on ``old``) wait on ``new`` instead.

    SimPy cannot cancel a scheduled timeout; moving the process's resume callback is what
    ``Process.interrupt`` does internally, without raising into the generator. ``old`` still
    fires, with nobody listening.
    """
    old.callbacks.remove(proc._resume)  # type: ignore[union-attr]
    new.callbacks.append(proc._resume)  # type: ignore[union-attr]
    proc._target = new


class Replica:
    def __init__(self, env: simpy.Environment, dep: DeploymentRuntime, index: int, level_width_s: float, max_time_s: float):
        self.env = env
        self.dep = dep
        self.index = index
        self.reqs = dep.reqs
        eng = dep.engine
        self.p = dep.params
        self.max_seqs = eng.max_num_seqs
        self.total_blocks = dep.plan.num_blocks
        self.itl_hist = dep.itl_hist
        self.levels = Levels(("waiting", "running", "kv_used", "busy"), level_width_s, max_time_s)
        self.shared = dep.balancer.shared
        self.outstanding = 0
        # vLLM V1 turns automatic prefix caching on by default; the engine setting turns it off.
        self.prefix_cache = PrefixCache(self.reqs, eng.block_size, dep.rd.kv_offload) if eng.prefix_caching else None
        # Multi-LoRA (engine.lora): adapter slots and host cache live in the scheduler state;
        # their loads, evictions, admissions and releases are replayed into this log.
        self.lora = dep.rd.lora
        self.lora_log = LoraLog(self.lora) if self.lora is not None else None
        self._alloc(0)
        self.W = np.zeros(self.max_seqs + 64, dtype=np.int64)
        self.timer: simpy.Event | None = None
        self.idle_event: simpy.Event | None = None
        self.up = True  # False while failed (faults)
        self.accepting = True  # False while failed or draining before a spot kill
        # False while the autoscaler keeps this replica out of service (released, provisioning,
        # draining for removal): a repair must not put such a replica back in rotation.
        self.active = True
        self.repaired: simpy.Event | None = None
        self.failures = 0
        # Batch iterations for a Perfetto view (run --trace-iterations): one row per step or
        # decode stretch: start, end, kind (1 step, 2 stretch), iterations, decodes, prefills,
        # running, waiting, free KV blocks. None: not recorded (the default; it costs a row per event).
        self.trace: list[list[float]] | None = None
        self.proc = env.process(self._run())

    def _alloc(self, n_arrivals: int) -> None:
        eng = self.dep.engine
        rl = self.lora
        off, size_i, size_f = CS.layout(self.max_seqs, n_arrivals, rl.n if rl else 0, rl.max_loras if rl else 0)
        self.off = off
        I = np.zeros(size_i, dtype=np.int64)
        F = np.zeros(size_f)
        I[CS.FREE] = self.total_blocks
        I[CS.TOTAL] = self.total_blocks
        I[CS.BS] = eng.block_size
        I[CS.MAX_SEQS] = self.max_seqs
        I[CS.MAX_TOKENS] = eng.max_num_batched_tokens
        I[CS.CHUNKED] = int(eng.enable_chunked_prefill)
        I[CS.ASYNC] = int(async_scheduling(eng))
        I[CS.INDEX] = self.index
        I[CS.ARR_N] = n_arrivals
        I[CS.MIN_FREE] = self.total_blocks
        if self.prefix_cache is not None:
            I[CS.CACHE_VER] = self.prefix_cache.version
        if rl is not None:
            lo = off["lora"]
            I[CL.LORA_OFF] = lo
            I[CL.LORA_FOFF] = off["lora_f"]
            I[lo + CL.LH_NA] = rl.n
            I[lo + CL.LH_ML] = rl.max_loras
            I[lo + CL.LH_MC] = rl.max_cpu_loras
            F[off["lora_f"] : off["lora_f"] + 4 * (rl.n + 1)] = rl.arrays().ravel()
        F[CS.LV : CS.LV + K.LEVEL_STATE] = self.levels.state
        self.I, self.F = I, F
        # The level state lives in F (compiled code updates it); Levels reads it through a view.
        self.levels.state = F[CS.LV : CS.LV + K.LEVEL_STATE]

    @property
    def itl_from(self) -> float:
        return float(self.F[CS.ITL_FROM])

    @itl_from.setter
    def itl_from(self, value: float) -> None:
        self.F[CS.ITL_FROM] = value

    @property
    def preemptions(self) -> int:
        return int(self.I[CS.PREEMPTS])

    @property
    def iterations(self) -> int:
        return int(self.I[CS.ITERS])

    @property
    def busy_s(self) -> float:
        return float(self.F[CS.BUSY_S])

    # ------------------------------------------------------------------ multi-LoRA

    def lora_resident(self, a: int) -> bool:
        """Adapter ``a`` is in one of this replica's GPU slots."""
        if self.lora is None or a <= 0:
            return False
        o = int(self.I[CL.LORA_OFF]) + CL.LH_SIZE + 3 * (self.lora.n + 1)
        return a in self.I[o : o + self.lora.max_loras].tolist()  # a few slots: cheaper than a numpy reduction

    def _lora_sync(self, now: float) -> None:
        """Replay the scheduler's LoRA events since the last replay into the log."""
        I = self.I
        lo = int(I[CL.LORA_OFF])
        n = int(I[lo + CL.LH_LOG_N])
        if n:
            o = self.off["lora_log"]
            assert self.lora_log is not None
            self.lora_log.flush(now, I[o : o + CL.LORA_LOG_FIELDS * n].tolist())
            I[lo + CL.LH_LOG_N] = 0

    # ------------------------------------------------------------------ arrivals

    def preroute(self, rids: list[int], times: list[float]) -> None:
        """Hand this replica its future arrivals (state-independent balancers route up front)."""
        itl_from = self.itl_from
        self._alloc(len(rids))
        self.itl_from = itl_from
        o = self.off
        self.I[o["arr"] : o["arr"] + len(rids)] = rids
        self.F[o["arr_t"] : o["arr_t"] + len(times)] = times
        self.W = np.zeros(len(rids) + self.max_seqs + 1, dtype=np.int64)

    def take_arrivals(self, now: float) -> None:
        """Queue pre-routed requests that have arrived by ``now`` (used when the run stops)."""
        C.take_arrivals(now, self.I, self.F, self.W, self.levels.acc, self.reqs.RI)

    def load(self) -> int:
        """Sequences running, in prefill or queued here."""
        I = self.I
        return int(I[CS.N] + I[CS.NPF] + I[CS.WQ_LEN])

    def _push(self, rid: int) -> None:
        I = self.I
        if I[CS.WQ_LEN] + self.max_seqs + 1 >= len(self.W):  # room for preempted requests too
            n = int(I[CS.WQ_LEN])
            h = int(I[CS.WQ_HEAD])
            old = self.W
            new = np.zeros(2 * len(old), dtype=np.int64)
            new[:n] = np.roll(old, -h)[:n]
            self.W = new
            I[CS.WQ_HEAD] = 0
        CS.wq_push(I, self.W, rid)

    def enqueue(self, rid: int) -> None:
        """A request routed here now (state-dependent balancers)."""
        self._push(rid)
        self.outstanding += 1
        self.reqs.replica[rid] = self.index
        self.reqs.status[rid] = QUEUED
        C.enqueue_level(self.env.now, self.I, self.F, self.levels.acc)
        self.poke()

    def cancel_queued(self, rid: int) -> bool:
        """The client gave up on ``rid`` (a gateway timeout): drop it if it is still waiting here,
        as vLLM aborts a request whose connection closes. A request already admitted is not
        touched (it runs on; see DeploymentRuntime.cancel). True if it was dropped."""
        I, W = self.I, self.W
        cap, h, n = len(W), int(I[CS.WQ_HEAD]), int(I[CS.WQ_LEN])
        for k in range(n):
            if int(W[(h + k) % cap]) == rid:
                for j in range(k, n - 1):
                    W[(h + j) % cap] = W[(h + j + 1) % cap]
                I[CS.WQ_LEN] = n - 1
                if k < I[CS.WQ_SEEN]:
                    I[CS.WQ_SEEN] -= 1
                self.outstanding -= 1
                C.enqueue_level(self.env.now, I, self.F, self.levels.acc)
                return True
        return False

    def can_take(self) -> bool:
        """Room for one more sequence (used by the shared-queue balancer)."""
        I = self.I
        return bool(I[CS.N] + I[CS.NPF] + I[CS.WQ_LEN] < self.max_seqs)

    def take(self, rid: int) -> None:
        """Shared queue: the deployment hands this replica the next request."""
        self._push(rid)
        self.outstanding += 1
        self.reqs.replica[rid] = self.index

    def poke(self) -> None:
        """New work may be schedulable: wake the replica or cut its decode stretch short."""
        if not self.up:
            return
        ev = self.idle_event
        if ev is not None:
            if not ev.triggered:
                ev.succeed()
            return
        d = C.truncate(self.env.now, self.I, self.F)
        if d >= 0.0:
            new = self.env.timeout(d)
            assert self.timer is not None
            retarget(self.proc, self.timer, new)
            self.timer = new

    # ------------------------------------------------------------------ faults

    def held_requests(self) -> list[int]:
        """Ids of the requests on this replica: decoding, in prefill, waiting."""
        I, o = self.I, self.off
        ms = self.max_seqs
        out = I[o["rid"] : o["rid"] + I[CS.N]].tolist()
        pf = CS.IO + 5 * ms
        out += [int(I[pf + j * CS.PF_FIELDS]) for j in range(int(I[CS.NPF]))]
        cap, h = len(self.W), int(I[CS.WQ_HEAD])
        out += [int(self.W[(h + k) % cap]) for k in range(int(I[CS.WQ_LEN]))]
        if int(I[CS.ARR_POS]) < int(I[CS.ARR_N]):
            raise RuntimeError("a replica with pre-routed arrivals cannot fail (faults turn pre-routing off)")
        return out

    def fail(self) -> list[int]:
        """The replica dies now: every request on it fails; its KV cache is gone. Returns their ids."""
        now = self.env.now
        rids = self.held_requests()
        reqs = self.reqs
        for rid in rids:
            reqs.status[rid] = FAILED
            reqs.finish_s[rid] = now
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
        if self.lora_log is not None:  # the adapters in its slots and host cache die with it
            self._lora_sync(now)
        itl_from = self.itl_from
        self._alloc(0)
        self.itl_from = itl_from
        self.W = np.zeros(self.max_seqs + 64, dtype=np.int64)
        level_set(self.levels.acc, self.levels.state, now, 0.0, 0.0, 0.0, 0.0)
        self.outstanding = 0
        self.up = False
        self.accepting = False
        self.failures += 1
        self.repaired = self.env.event()
        if self.proc.is_alive and self.proc.target is not None:
            self.proc.interrupt("failed")
        return rids

    def repair(self) -> None:
        """Back in service, empty (in rotation again unless the autoscaler holds it out)."""
        self.up = True
        self.accepting = self.active
        if self.repaired is not None and not self.repaired.triggered:
            self.repaired.succeed()

    # ------------------------------------------------------------------ prefix caching

    def _pfx_switch_on(self) -> None:
        """Start prefix-cache bookkeeping once some request carries blocks (until then the
        compiled scheduler runs exactly as without a cache)."""
        I = self.I
        I[CS.PFX_ON] = 1
        I[CS.MIN_FREE] = I[CS.FREE]
        I[CS.EV_N] = 0

    def _pfx_sync(self) -> None:
        """Replay the scheduler's prefix-cache events of its last call, evict to fit, and hand
        the cache's version back to the scheduler."""
        I = self.I
        pfx = self.prefix_cache
        assert pfx is not None
        n = int(I[CS.EV_N])
        min_free = int(I[CS.MIN_FREE])
        if n:
            o = self.off["ev"]
            pfx.apply(I[o : o + CS.EV_FIELDS * n].reshape(n, CS.EV_FIELDS).tolist(), min_free)
            I[CS.EV_N] = 0
        elif pfx.evictable_tokens > min_free * pfx.block_size:
            pfx.evict_to(min_free * pfx.block_size)
        I[CS.MIN_FREE] = I[CS.FREE]
        I[CS.CACHE_VER] = pfx.version

    # ------------------------------------------------------------------ the process

    def _run(self):  # type: ignore[no-untyped-def]
        env = self.env
        I, F = self.I, self.F
        reqs = self.reqs
        hist = self.itl_hist
        lacc = self.levels.acc
        p = self.p
        shared = self.shared
        on_done = self.dep.on_done_count
        pfx = self.prefix_cache
        pfx_on = False  # I[CS.PFX_ON], kept as a Python bool: this loop runs once per event
        lora_on = self.lora is not None
        tr = self.trace
        open_iters = -1
        while True:
            now = env.now
            if I is not self.I:  # re-allocated by preroute before the run started
                I, F = self.I, self.F
                pfx_on = False
            C.finish(now, I, F, self.W, lacc, hist, reqs.RF, reqs.RI)
            if tr is not None and open_iters >= 0:  # the event ends here (a stretch may be cut short)
                tr[-1][1] = now
                tr[-1][3] = int(I[CS.ITERS]) - open_iters
                open_iters = -1
            if pfx_on:
                self._pfx_sync()
            nd = int(I[CS.DONE_N])
            if nd:
                self.outstanding -= nd
                on_done(nd)
                if self.dep.on_complete is not None:  # closed-loop clients wait for these ids
                    o = self.off["drid"]
                    for rid in I[o : o + nd].tolist():
                        self.dep.on_complete(rid)
            if shared:
                self.dep.pull(self)
            if not pfx_on and pfx is not None and reqs.blocks:
                self._pfx_switch_on()
                pfx_on = True
            dt = C.plan(now, I, F, self.W, lacc, reqs.RF, reqs.RI, p)
            if pfx_on:
                while dt == CS.NEED_LOOKUP:
                    assert pfx is not None
                    if I[CS.CACHE_VER] != pfx.version:  # a lookup would never be current: no progress
                        raise RuntimeError("prefix cache version out of step with the scheduler")
                    rid = int(I[CS.NEED])
                    pfx.lookup(rid, int(reqs.RI[RI_INPUT, rid] + reqs.RI[RI_GEN_DONE, rid]))
                    dt = C.plan(now, I, F, self.W, lacc, reqs.RF, reqs.RI, p)
                self._pfx_sync()
            if lora_on:
                self._lora_sync(now)
            try:
                if dt >= 0.0:
                    if tr is not None:
                        open_iters = int(I[CS.ITERS])
                        stretch = int(I[CS.MODE]) == 2  # a stretch decodes every running sequence
                        tr.append([now, now + dt, float(I[CS.MODE]), 0.0, float(I[CS.N] if stretch else I[CS.NDEC]), float(I[CS.NPF]),
                                   float(I[CS.N] + I[CS.NPF]), float(I[CS.WQ_LEN]), float(I[CS.FREE])])
                    self.timer = env.timeout(dt)
                    yield self.timer
                elif dt > -1.5:
                    self.idle_event = env.event()
                    yield self.idle_event
                    self.idle_event = None
                else:
                    raise RuntimeError(f"replica scheduler reached an impossible state (code {dt})")
            except simpy.Interrupt:
                # Failed (see fail()): the pending step never ends; wait for the repair.
                if tr is not None and open_iters >= 0:
                    tr[-1][1] = env.now
                    tr[-1][2] = 3.0  # cut by a failure
                    open_iters = -1
                self.timer = None
                self.idle_event = None
                assert self.repaired is not None
                yield self.repaired
                I, F = self.I, self.F
                lacc = self.levels.acc
                pfx_on = False  # fail() re-allocated the scheduler state
