"""The state of one replica's compiled scheduler: the layout of its integer and float arrays
(``I``, ``F``), their scalar slots, and the small helpers that keep them consistent (KV blocks,
running and prefilling slots, the waiting queue, the prefix-cache event log, level monitors).

:mod:`.core` schedules on this state; :mod:`.replica` reads it after each call. Split from
``core.py`` to keep the scheduler's own module short.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stacksim.kernels import FASTMATH
from stacksim.kernels import cost as K
from stacksim.kernels.cost import level_set
from stacksim.metrics import COMPLETED, RF_FINISH, RI_LORA, RI_PFX_VER, RI_STATUS
from stacksim.serving.core_lora import (
    LH_MARK,
    LH_NA,
    LH_SIZE,
    LORA_FOFF,
    LORA_LOG_FIELDS,
    LORA_LOG_PER_SEQ,
    LORA_OFF,
    lora_release,
)

STRETCH_CAP = 4096  # longest decode stretch computed at once (it then ends and re-plans)
# New requests are admitted only while this share of KV blocks stays free afterwards (vLLM's
# block-manager watermark, default 0.01), and never in a step that had to preempt (vLLM V1
# scheduler: waiting requests are scheduled only "if not preempted_reqs"). Both stop a full
# cache from thrashing: admit, preempt, re-admit.
ADMIT_WATERMARK = 0.01

# ---- I: scalar slots
N = 0  # decoding sequences
FREE = 1  # free KV blocks
TOTAL = 2
BS = 3  # block size
MAX_SEQS = 4
MAX_TOKENS = 5
CHUNKED = 6
NPF = 7  # sequences in prefill
WQ_HEAD = 8
WQ_LEN = 9
ADMITS = 10
PREEMPTS = 11
ITERS = 12
ARR_POS = 13
ARR_N = 14
MODE = 15  # what the pending timer ends: 0 nothing, 1 a step, 2 a stretch
KSTRETCH = 16
DONE_N = 17  # completions in the last call
INDEX = 18
NDEC = 19  # decodes in the pending step
CTX_SUM = 20
PFX_ON = 21  # prefix caching on and some request carries blocks: look up, log events
CACHE_VER = 22  # the prefix cache's version (a lookup stamped with it is current)
NEED = 23  # the request whose lookup plan() asks for
MIN_FREE = 24  # fewest free KV blocks since the last logged event (evictions happen there)
EV_N = 25  # prefix-cache events logged since the replica last replayed them
SPEC = 26  # speculative decoding: proposed tokens per step k (0: off), copied from p by plan()
SPEC_S = 27  # speculative decode steps taken so far (K.spec_tokens rounds E step by step from it)
# 28, 29: LORA_OFF, LORA_FOFF (multi-LoRA, serving/core_lora.py)
# Asynchronous scheduling (engine.async_scheduling): the engine plans step n+1 while step n runs,
# so a request that reaches the waiting queue during step n can join step n+2 at the earliest
# (when the engine has other work; an idle engine schedules it at once).
ASYNC = 30  # 1: asynchronous scheduling on
WQ_SEEN = 31  # waiting requests (from the head) that were queued when the last step was planned
IO = 32  # first array offset
MODE_NONE, MODE_STEP, MODE_STRETCH = 0, 1, 2
NEED_LOOKUP = -4.0  # plan(): look up I[NEED] in the prefix cache, then call plan again

# ---- F: scalar slots
T0 = 0  # stretch start
STEP_DUR = 1
BUSY_S = 2
ITL_FROM = 3
LV = 4  # level state: K.LEVEL_STATE values (see kernels.cost.level_set)
SPEC_E = 14  # speculative decoding: expected tokens per sequence per step, copied from p by plan()
# 15: LORA_STALL (multi-LoRA, serving/core_lora.py)
FO = 16  # first array offset

PF_FIELDS = 6  # rid, done, target, generated, seq, chunk
# Event log: (kind, rid, min free blocks before it), at most 2 x max_seqs per finish() or plan()
# call (every running request completes, or a prefill completes and finishes); room for twice that.
EV_FIELDS = 3
EV_PER_SEQ = 4
# Event kinds (the same numbers as prefix_cache.INSERT, RELEASE, ACQUIRE).
EV_INSERT, EV_RELEASE, EV_ACQUIRE = 1, 2, 3



def layout(max_seqs: int, n_arrivals: int, n_adapters: int = 0, max_loras: int = 0) -> tuple[dict[str, int], int, int]:
    """Offsets of the arrays inside I and F, and their sizes (``n_adapters`` > 0: with a LoRA region)."""
    off: dict[str, int] = {}
    o = IO
    for name in ("ctx", "rem", "seq", "rid", "done"):
        off[name] = o
        o += max_seqs
    off["pf"] = o
    o += PF_FIELDS * max_seqs
    off["drid"] = o  # ids of the requests completed by the last call (at most 2 x max_seqs)
    o += 2 * max_seqs
    off["ev"] = o
    o += EV_FIELDS * EV_PER_SEQ * max_seqs
    off["arr"] = o
    o += n_arrivals
    if n_adapters > 0:
        off["lora"] = o
        o += LH_SIZE + 3 * (n_adapters + 1) + 2 * max_loras
        off["lora_log"] = o
        o += LORA_LOG_FIELDS * (LORA_LOG_PER_SEQ * max_seqs + 4)
    size_i = o
    f = FO
    off["cum"] = f
    f += STRETCH_CAP
    off["arr_t"] = f
    f += n_arrivals
    if n_adapters > 0:
        off["lora_f"] = f
        f += 4 * (n_adapters + 1)
    return off, size_i, f


@njit(cache=True, fastmath=FASTMATH)
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@njit(cache=True, fastmath=FASTMATH)
def _take_blocks(I, nb):  # type: ignore[no-untyped-def]
    I[FREE] -= nb
    I[MIN_FREE] = min(I[MIN_FREE], I[FREE])


@njit(cache=True, fastmath=FASTMATH)
def _log(I, RI, kind, rid):  # type: ignore[no-untyped-def]
    """Record a prefix-cache event of a request that carries blocks."""
    if I[PFX_ON] == 0 or RI[RI_PFX_VER, rid] == 0:
        return
    o = IO + (7 + PF_FIELDS) * I[MAX_SEQS] + EV_FIELDS * I[EV_N]
    I[o] = kind
    I[o + 1] = rid
    I[o + 2] = I[MIN_FREE]
    I[EV_N] += 1
    I[MIN_FREE] = I[FREE]


@njit(cache=True, fastmath=FASTMATH)
def _lora_work(I, F, RI, lo, n_dec, prefills):  # type: ignore[no-untyped-def]
    """LoRA FLOPs and adapter bytes (this GPU) of a step: every decoding sequence's token when
    ``n_dec`` > 0, then every prefill chunk (when ``prefills``); each distinct adapter read once."""
    ms = I[MAX_SEQS]
    na = I[lo + LH_NA]
    o_mark = lo + LH_SIZE + 2 * (na + 1)
    fo = I[LORA_FOFF]
    I[lo + LH_MARK] += 1
    m = I[lo + LH_MARK]
    flops = 0.0
    nbytes = 0.0
    if n_dec > 0:
        o_rid = IO + 3 * ms
        for i in range(I[N]):
            a = RI[RI_LORA, I[o_rid + i]]
            if a > 0:
                flops += F[fo + a]
                if I[o_mark + a] != m:
                    I[o_mark + a] = m
                    nbytes += F[fo + (na + 1) + a]
    if prefills:
        o_pf = IO + 5 * ms
        for j in range(I[NPF]):
            b = o_pf + j * PF_FIELDS
            c = I[b + 5]
            a = RI[RI_LORA, I[b]]
            if c > 0 and a > 0:
                flops += c * F[fo + a]
                if I[o_mark + a] != m:
                    I[o_mark + a] = m
                    nbytes += F[fo + (na + 1) + a]
    return flops, nbytes


@njit(cache=True, fastmath=FASTMATH)
def _levels(I, F, lacc, now, busy):  # type: ignore[no-untyped-def]
    level_set(lacc, F[LV : LV + K.LEVEL_STATE], now, float(I[WQ_LEN]), float(I[N] + I[NPF]),
              (I[TOTAL] - I[FREE]) / I[TOTAL], busy)


@njit(cache=True, fastmath=FASTMATH)
def _remove_slot(I, i):  # type: ignore[no-untyped-def]
    o_ctx, o_rem, o_seq, o_rid = IO, IO + I[MAX_SEQS], IO + 2 * I[MAX_SEQS], IO + 3 * I[MAX_SEQS]
    last = I[N] - 1
    I[CTX_SUM] -= I[o_ctx + i]
    if i != last:
        I[o_ctx + i] = I[o_ctx + last]
        I[o_rem + i] = I[o_rem + last]
        I[o_seq + i] = I[o_seq + last]
        I[o_rid + i] = I[o_rid + last]
    I[N] = last


@njit(cache=True, fastmath=FASTMATH)
def _finish(I, RF, RI, rid, now):  # type: ignore[no-untyped-def]
    RI[RI_STATUS, rid] = COMPLETED
    RF[RF_FINISH, rid] = now
    _log(I, RI, EV_RELEASE, rid)
    if I[LORA_OFF] > 0 and RI[RI_LORA, rid] > 0:
        lora_release(I, I[LORA_OFF], RI[RI_LORA, rid], rid)
    I[IO + (5 + PF_FIELDS) * I[MAX_SEQS] + I[DONE_N]] = rid
    I[DONE_N] += 1


@njit(cache=True, fastmath=FASTMATH)
def _complete_slots(I, RF, RI, nd, now):  # type: ignore[no-untyped-def]
    ms = I[MAX_SEQS]
    o_ctx, o_rid, o_done = IO, IO + 3 * ms, IO + 4 * ms
    B = I[BS]
    # Remove from the highest slot down so swap-with-last never moves a finished slot.
    done = np.sort(I[o_done : o_done + nd])[::-1]
    for k in range(nd):
        i = done[k]
        rid = I[o_rid + i]
        I[FREE] += _cdiv(I[o_ctx + i], B)
        _remove_slot(I, i)
        _finish(I, RF, RI, rid, now)


@njit(cache=True, fastmath=FASTMATH)
def _pf_remove(I, j):  # type: ignore[no-untyped-def]
    o = IO + 5 * I[MAX_SEQS]
    n = I[NPF]
    for m in range(j, n - 1):
        for f in range(PF_FIELDS):
            I[o + m * PF_FIELDS + f] = I[o + (m + 1) * PF_FIELDS + f]
    I[NPF] = n - 1


@njit(cache=True, fastmath=FASTMATH)
def _wq_push_front(I, W, rid):  # type: ignore[no-untyped-def]
    cap = W.shape[0]
    h = (I[WQ_HEAD] - 1) % cap
    W[h] = rid
    I[WQ_HEAD] = h
    I[WQ_LEN] += 1


@njit(cache=True, fastmath=FASTMATH)
def _wq_take(I, W, pos):  # type: ignore[no-untyped-def]
    """Remove and return the request at queue position ``pos`` (0: the head); those before it
    keep their order at the front (vLLM puts the requests it skipped back at the head)."""
    cap = W.shape[0]
    h = I[WQ_HEAD]
    rid = W[(h + pos) % cap]
    for m in range(pos, 0, -1):
        W[(h + m) % cap] = W[(h + m - 1) % cap]
    I[WQ_HEAD] = (h + 1) % cap
    I[WQ_LEN] -= 1
    return rid


@njit(cache=True, fastmath=FASTMATH)
def wq_push(I, W, rid):  # type: ignore[no-untyped-def]
    W[(I[WQ_HEAD] + I[WQ_LEN]) % W.shape[0]] = rid
    I[WQ_LEN] += 1
