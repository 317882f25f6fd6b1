"""Multi-LoRA state of the compiled scheduler (:mod:`.core`): adapter slots, host cache, log.

The plain-Python specification is :class:`stacksim.serving.lora.LoraSlots`, which the reference
replica uses; these kernels make the same decisions in the same order, so the twins' logs agree.

The region lives in the scheduler's ``I`` array at ``I[LORA_OFF]`` (0: no LoRA) and the
per-adapter costs in ``F`` at ``I[LORA_FOFF]``: flops per token, bytes read per step, load
seconds from the host cache, load seconds from disk (rows of n + 1, entry 0 unused).
"""

from __future__ import annotations

from numba import njit

from stacksim.kernels import FASTMATH

LORA_OFF = 28  # I slot: offset of the LoRA region in I (0: no LoRA)
LORA_FOFF = 29  # I slot: offset of the per-adapter floats in F
LORA_STALL = 15  # F slot: seconds of adapter loads in the step being planned

# Multi-LoRA region header, at I[LORA_OFF + ...]; then ref[na+1] (held sequences per adapter),
# cpu[na+1] (host-cache LRU stamp, 0: not cached), mark[na+1] (scratch), gpu[ml] (adapter per slot,
# 0: empty), gpu_t[ml] (slot LRU stamp), log[LORA_LOG_FIELDS x cap] (kind, adapter, rid).
LH_NA, LH_ML, LH_MC, LH_DISTINCT, LH_CPU_N, LH_CLOCK, LH_LOG_N, LH_MARK = range(8)
LH_SIZE = 8
LORA_LOG_FIELDS = 3
# Events per held sequence between two replays (the replica replays after every plan()): a
# finish() releases at most max_seqs; a plan() preempts at most max_seqs or admits at most
# max_seqs, each admission logging at most a host-cache eviction, a slot eviction, a load and
# the admission: 5 x max_seqs at most.
LORA_LOG_PER_SEQ = 6
# Log kinds (the same numbers as lora.LOAD_CPU ... lora.RELEASE).
L_LOAD_CPU, L_LOAD_DISK, L_EVICT_GPU, L_EVICT_CPU, L_ADMIT, L_RELEASE = 1, 2, 3, 4, 5, 6


@njit(cache=True, fastmath=FASTMATH)
def _lora_log(I, lo, kind, a, rid):  # type: ignore[no-untyped-def]
    n = I[lo + LH_LOG_N]
    na, ml = I[lo + LH_NA], I[lo + LH_ML]
    o = lo + LH_SIZE + 3 * (na + 1) + 2 * ml + LORA_LOG_FIELDS * n
    I[o] = kind
    I[o + 1] = a
    I[o + 2] = rid
    I[lo + LH_LOG_N] = n + 1


@njit(cache=True, fastmath=FASTMATH)
def _lora_touch(I, lo, a):  # type: ignore[no-untyped-def]
    """Adapter ``a`` is used now: stamp it in the host cache and in its GPU slot (LRU)."""
    na, ml = I[lo + LH_NA], I[lo + LH_ML]
    o_cpu = lo + LH_SIZE + (na + 1)
    o_gpu = lo + LH_SIZE + 3 * (na + 1)
    I[lo + LH_CLOCK] += 1
    c = I[lo + LH_CLOCK]
    I[o_cpu + a] = c
    for s in range(ml):
        if I[o_gpu + s] == a:
            I[o_gpu + ml + s] = c


@njit(cache=True, fastmath=FASTMATH)
def lora_acquire(I, F, lo, a, rid):  # type: ignore[no-untyped-def]
    """A sequence with adapter ``a`` joins the batch: load ``a`` into a GPU slot if it is in none
    (from the host cache, else from disk into the cache), evicting least recently used adapters
    that no held sequence uses; the step gets longer by the load."""
    na, ml, mc = I[lo + LH_NA], I[lo + LH_ML], I[lo + LH_MC]
    o_ref = lo + LH_SIZE
    o_cpu = o_ref + (na + 1)
    o_gpu = o_ref + 3 * (na + 1)
    o_gt = o_gpu + ml
    fo = I[LORA_FOFF]
    I[o_ref + a] += 1
    if I[o_ref + a] == 1:
        I[lo + LH_DISTINCT] += 1
    slot = -1
    for s in range(ml):
        if I[o_gpu + s] == a:
            slot = s
    if slot < 0:
        if I[o_cpu + a] > 0:
            kind = L_LOAD_CPU
            F[LORA_STALL] += F[fo + 2 * (na + 1) + a]
        else:
            kind = L_LOAD_DISK
            F[LORA_STALL] += F[fo + 3 * (na + 1) + a]
            if I[lo + LH_CPU_N] >= mc:  # the host cache is full: drop its LRU adapter no sequence uses
                v = 0
                for b in range(1, na + 1):
                    if I[o_cpu + b] > 0 and I[o_ref + b] == 0 and (v == 0 or I[o_cpu + b] < I[o_cpu + v]):
                        v = b
                I[o_cpu + v] = 0
                I[lo + LH_CPU_N] -= 1
                _lora_log(I, lo, L_EVICT_CPU, v, -1)
                for s in range(ml):  # gone from the host: gone from the GPU too (vLLM remove_adapter)
                    if I[o_gpu + s] == v:
                        I[o_gpu + s] = 0
                        I[o_gt + s] = 0
                        _lora_log(I, lo, L_EVICT_GPU, v, -1)
            I[lo + LH_CPU_N] += 1
        for s in range(ml):  # an empty slot, else the LRU slot whose adapter no sequence uses
            if I[o_gpu + s] == 0:
                slot = s
                break
        if slot < 0:
            for s in range(ml):
                if I[o_ref + I[o_gpu + s]] == 0 and (slot < 0 or I[o_gt + s] < I[o_gt + slot]):
                    slot = s
            _lora_log(I, lo, L_EVICT_GPU, I[o_gpu + slot], -1)
        I[o_gpu + slot] = a
        _lora_log(I, lo, kind, a, rid)
    _lora_touch(I, lo, a)
    _lora_log(I, lo, L_ADMIT, a, rid)


@njit(cache=True, fastmath=FASTMATH)
def lora_release(I, lo, a, rid):  # type: ignore[no-untyped-def]
    """A sequence with adapter ``a`` leaves the batch (finished or preempted)."""
    o_ref = lo + LH_SIZE
    I[o_ref + a] -= 1
    if I[o_ref + a] == 0:
        I[lo + LH_DISTINCT] -= 1
    _lora_touch(I, lo, a)
    _lora_log(I, lo, L_RELEASE, a, rid)
