"""The replica scheduler compiled with Numba: one call per SimPy event.

This is the fast twin of :class:`stacksim.serving.reference.ReferenceReplica` (plain Python,
the readable specification). Both make the same decisions with the same arithmetic, so a test
checks that they produce identical per-request results on random scenarios.

A replica's state lives in two flat arrays so a call dispatches cheaply:
``I`` (int64: counters, decode slots, prefill list, pre-routed arrival ids) and ``F`` (float64:
clock values, level state, pre-routed arrival times, the stretch's cumulative step times).
The waiting queue ``W`` is a separate ring buffer because it may have to grow.
Per-request columns are the rows of ``RF`` (float) and ``RI`` (int) in
:class:`stacksim.metrics.RequestTable`.

Prefix caching (:mod:`.prefix_cache`, plain Python) is reached without calling Python from
compiled code: the scheduler logs its cache events (prefill done, finished or preempted, admitted
with a hit) into ``I`` and the replica replays them after each call; when a request to admit has
no current lookup, ``plan`` returns ``NEED_LOOKUP`` before changing anything, the replica looks
the request up and calls ``plan`` again. A dry run of the admission loop finds that request
first, so a lookup happens once per admission, not once per step. With ``engine.kv_offload`` a
lookup also leaves the time to load its hit from host memory or SSD in ``RF_PFX_LOAD`` and a step
is longer by the loads of the requests it admits (:mod:`.kv_offload`).

Speculative decoding (``engine.speculative``; the slots ``K.SPEC_*`` of the parameter vector)
changes three things, and only when it is on: a decode step costs :func:`K.spec_step_time`
(verification of k+1 positions plus the proposer), takes k+1 tokens of the step's token budget
per decoding sequence (vLLM V1 counts the speculative tokens), and emits ``K.spec_tokens`` tokens
per sequence (the expectation E of Leviathan et al.'s eq. 1, rounded step by step; capped at a
request's last token). Without it every branch below takes the path it took before.

Multi-LoRA (``engine.lora``; :mod:`.lora`) keeps its state in a region of ``I`` at ``I[LORA_OFF]``
(0: off) and its per-adapter costs in ``F`` at ``I[LORA_FOFF]``: held sequences per adapter, the
GPU slots and the host cache with their LRU stamps, and a log of loads, evictions, admissions and
releases that the replica replays after each call. Admission skips a request whose adapter would
make one distinct adapter too many among the held sequences (vLLM: "Scheduling would exceed
max_loras, skip") and looks at the next; admitting one whose adapter is in no GPU slot loads it,
and the step is longer by the load (``F[LORA_STALL]``). Requests without an adapter, and
deployments without LoRA, take exactly the path they took before.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stacksim.kernels import FASTMATH
from stacksim.kernels import cost as K
from stacksim.kernels.cost import level_set
from stacksim.metrics import (
    QUEUED,
    RF_ADMITTED,
    RF_FIRST,
    RF_LAST_TOKEN,
    RF_PFX_LOAD,
    RI_CACHED,
    RI_GEN_DONE,
    RI_INPUT,
    RI_LORA,
    RI_OUTPUT,
    RI_PFX_HIT,
    RI_PFX_VER,
    RI_PREEMPTIONS,
    RI_REPLICA,
    RI_STATUS,
    RUNNING,
)
from stacksim.serving.core_lora import (
    LH_DISTINCT,
    LH_MARK,
    LH_ML,
    LH_NA,
    LH_SIZE,
    LORA_OFF,
    LORA_STALL,
    lora_acquire,
    lora_release,
)
from stacksim.serving.core_state import (
    ADMIT_WATERMARK,
    ADMITS,
    ARR_N,
    ARR_POS,
    ASYNC,
    BS,
    BUSY_S,
    CACHE_VER,
    CHUNKED,
    CTX_SUM,
    DONE_N,
    EV_ACQUIRE,
    EV_FIELDS,
    EV_INSERT,
    EV_PER_SEQ,
    EV_RELEASE,
    FO,
    FREE,
    INDEX,
    IO,
    ITERS,
    ITL_FROM,
    KSTRETCH,
    LV,
    MAX_SEQS,
    MAX_TOKENS,
    MODE,
    MODE_NONE,
    MODE_STEP,
    MODE_STRETCH,
    NDEC,
    NEED,
    NEED_LOOKUP,
    NPF,
    PF_FIELDS,
    PFX_ON,
    PREEMPTS,
    SPEC,
    SPEC_E,
    SPEC_S,
    STEP_DUR,
    STRETCH_CAP,
    T0,
    TOTAL,
    WQ_HEAD,
    WQ_LEN,
    WQ_SEEN,
    N,
    _cdiv,
    _complete_slots,
    _finish,
    _levels,
    _log,
    _lora_work,
    _pf_remove,
    _remove_slot,
    _take_blocks,
    _wq_push_front,
    _wq_take,
    wq_push,
)


@njit(cache=True, fastmath=FASTMATH)
def _preempt_one(I, W, RF, RI, now):  # type: ignore[no-untyped-def]
    """Preempt the most recently admitted running request (vLLM's recompute mode)."""
    ms = I[MAX_SEQS]
    o_ctx, o_rem, o_seq, o_rid = IO, IO + ms, IO + 2 * ms, IO + 3 * ms
    o_pf = IO + 5 * ms
    B = I[BS]
    best_pf = -1
    best_pf_seq = -1
    for j in range(I[NPF]):
        s = I[o_pf + j * PF_FIELDS + 4]
        if s > best_pf_seq:
            best_pf, best_pf_seq = j, s
    best_slot = -1
    best_seq = -1
    for i in range(I[N]):
        if I[o_seq + i] > best_seq:
            best_slot, best_seq = i, I[o_seq + i]
    if best_pf >= 0 and (best_slot < 0 or best_pf_seq > best_seq):
        b = o_pf + best_pf * PF_FIELDS
        rid = I[b]
        I[FREE] += _cdiv(I[b + 1], B)
        gen = I[b + 3]
        _pf_remove(I, best_pf)
    else:
        i = best_slot
        rid = I[o_rid + i]
        I[FREE] += _cdiv(I[o_ctx + i], B)
        gen = RI[RI_OUTPUT, rid] - I[o_rem + i]
        RF[RF_LAST_TOKEN, rid] = now
        _remove_slot(I, i)
    RI[RI_GEN_DONE, rid] = gen
    RI[RI_PREEMPTIONS, rid] += 1
    RI[RI_STATUS, rid] = QUEUED
    if I[LORA_OFF] > 0 and RI[RI_LORA, rid] > 0:
        lora_release(I, I[LORA_OFF], RI[RI_LORA, rid], rid)
    if RI[RI_PFX_VER, rid] != 0:
        _log(I, RI, EV_RELEASE, rid)
        RI[RI_PFX_VER, rid] = -1  # its length grew: look it up again when it comes back
    _wq_push_front(I, W, rid)
    I[PREEMPTS] += 1


@njit(cache=True, fastmath=FASTMATH)
def _admit(I, W, F, RF, RI, now, hit, pos):  # type: ignore[no-untyped-def]
    """Move the request at queue position ``pos`` into the prefill list, its first ``hit`` tokens
    already in the prefix cache (their blocks taken now); returns its index there."""
    rid = _wq_take(I, W, pos)
    gen = RI[RI_GEN_DONE, rid]
    I[ADMITS] += 1
    j = I[NPF]
    b = IO + 5 * I[MAX_SEQS] + j * PF_FIELDS
    I[b] = rid
    I[b + 1] = hit
    I[b + 2] = RI[RI_INPUT, rid] + gen
    I[b + 3] = gen
    I[b + 4] = I[ADMITS]
    I[b + 5] = 0
    I[NPF] = j + 1
    if np.isnan(RF[RF_ADMITTED, rid]):
        RF[RF_ADMITTED, rid] = now
        RI[RI_CACHED, rid] = hit
    RI[RI_STATUS, rid] = RUNNING
    if hit > 0:
        _log(I, RI, EV_ACQUIRE, rid)  # before taking the blocks: reusing cached ones evicts nothing
        _take_blocks(I, hit // I[BS])
    if I[LORA_OFF] > 0 and RI[RI_LORA, rid] > 0:
        lora_acquire(I, F, I[LORA_OFF], RI[RI_LORA, rid], rid)
    return j


@njit(cache=True, fastmath=FASTMATH)
def _admissions(I, W, F, RF, RI, now, budget, avail, wm, dry, lim):  # type: ignore[no-untyped-def]
    """Admit waiting requests in FCFS order, among the first ``lim`` of the queue (the ones the
    step may take: all, or with asynchronous scheduling those queued when the last step was
    planned), while the token budget, the sequence limit and free KV blocks allow (chunked: a first chunk each; unchunked: whole prompts). Only the tokens not
    in the prefix cache are computed; the cached ones still take KV blocks. With LoRA, a request
    whose adapter would be one distinct adapter too many is skipped and the next one considered.

    Returns (chunks added, -1, load seconds): the last is the time to load the admitted requests'
    hits held below HBM (``engine.kv_offload``; each lookup left its request's in ``RF_PFX_LOAD``).
    With ``dry`` nothing changes: it walks the same path and returns (0, rid, 0.0) at the first
    request whose prefix-cache lookup is not current, or (0, -1, 0.0), so that the caller can have
    it looked up before anything is admitted.
    """
    ms = I[MAX_SEQS]
    B = I[BS]
    o_pf = IO + 5 * ms
    cap = W.shape[0]
    pfx = I[PFX_ON]
    lo = I[LORA_OFF]
    m = 0
    if lo > 0 and dry:
        I[lo + LH_MARK] += 1  # adapters a dry run has added to the batch carry this mark
        m = I[lo + LH_MARK]
    nloc = 0  # adapters a dry run has added
    k = 0  # queue position of the candidate (skipped requests, and a dry run's admissions, stay in the queue)
    nd = 0  # a dry run's admissions
    nchunks = 0
    load = 0.0
    while k < lim and I[N] + I[NPF] + nd < ms:
        if I[CHUNKED] and (budget <= 0 or avail <= wm):
            break
        rid = W[(I[WQ_HEAD] + k) % cap]
        a = 0
        if lo > 0:
            a = RI[RI_LORA, rid]
            if a > 0:
                na = I[lo + LH_NA]
                held = I[lo + LH_SIZE + a] > 0 or (dry and I[lo + LH_SIZE + 2 * (na + 1) + a] == m)
                if not held and I[lo + LH_DISTINCT] + nloc >= I[lo + LH_ML]:
                    k += 1  # vLLM: "Scheduling would exceed max_loras, skip."
                    continue
        hit = 0
        if pfx and RI[RI_PFX_VER, rid] != 0:
            if RI[RI_PFX_VER, rid] != I[CACHE_VER]:
                return nchunks, rid, load  # (only in a dry run: the real one follows it, lookups done)
            hit = RI[RI_PFX_HIT, rid]
        hb = hit // B
        target = RI[RI_INPUT, rid] + RI[RI_GEN_DONE, rid]
        if I[CHUNKED]:
            c = min(target - hit, budget, (avail - wm - hb) * B)
            if c <= 0:
                break
            nb = hb + _cdiv(c, B)
        else:
            c = target - hit
            nb = _cdiv(target, B)
            if c > budget or nb > avail - wm:
                break
        if dry:
            k += 1
            nd += 1
            if a > 0:
                o_mark = lo + LH_SIZE + 2 * (I[lo + LH_NA] + 1)
                if I[lo + LH_SIZE + a] == 0 and I[o_mark + a] != m:
                    I[o_mark + a] = m
                    nloc += 1
        else:
            j = _admit(I, W, F, RF, RI, now, hit, k)
            lim -= 1  # the queue moved up by one
            I[o_pf + j * PF_FIELDS + 5] = c
            nchunks += 1
            if hit > 0:
                load += RF[RF_PFX_LOAD, rid]
        budget -= c
        avail -= nb
    return nchunks, -1, load


@njit(cache=True, fastmath=FASTMATH)
def _spec_reserve(I, p):  # type: ignore[no-untyped-def]
    """Speculative decoding: KV blocks the running decodes need for the tokens the next step
    emits (``K.spec_tokens`` each, none past a request's last token)."""
    ms = I[MAX_SEQS]
    g = K.spec_tokens(I[SPEC_S], 1, p[K.SPEC_TOKENS])
    return K.new_blocks_capped(I[IO : IO + ms], I[IO + ms : IO + 2 * ms], I[N], g, I[BS])


@njit(cache=True, fastmath=FASTMATH)
def _schedule(I, W, F, RF, RI, p, now):  # type: ignore[no-untyped-def]
    """Plan the next step. Returns its duration, -1.0 for a pure-decode stretch, or NEED_LOOKUP
    (having changed nothing but scratch chunk sizes) when a request to admit needs a lookup."""
    ms = I[MAX_SEQS]
    B = I[BS]
    o_ctx = IO
    o_pf = IO + 5 * ms
    spec = I[SPEC] > 0  # speculative decoding: a decode emits K.spec_tokens tokens, not one
    F[LORA_STALL] = 0.0  # adapter loads of this step (multi-LoRA)
    kv_load = 0.0  # KV loads from host memory / SSD of the requests this step admits (engine.kv_offload)
    if I[WQ_LEN] == 0 and I[NPF] == 0 and I[FREE] >= (_spec_reserve(I, p) if spec else I[N]):
        return -1.0
    reserve = 0
    preempted = False
    if I[N] > 0:
        reserve = _spec_reserve(I, p) if spec else K.new_blocks_after(I[o_ctx : o_ctx + ms], I[N], 1, B)
        while reserve > I[FREE] and (I[N] > 0 or I[NPF] > 0):
            _preempt_one(I, W, RF, RI, now)
            preempted = True
            if I[N] == 0:
                reserve = 0
            else:
                reserve = _spec_reserve(I, p) if spec else K.new_blocks_after(I[o_ctx : o_ctx + ms], I[N], 1, B)
    avail = I[FREE] - reserve
    wm = int(ADMIT_WATERMARK * I[TOTAL])
    nchunks = 0
    for j in range(I[NPF]):
        I[o_pf + j * PF_FIELDS + 5] = 0
    if I[CHUNKED]:
        budget = I[MAX_TOKENS] - I[N] * (I[SPEC] + 1) if spec else I[MAX_TOKENS] - I[N]
        for j in range(I[NPF]):
            if budget <= 0:
                break
            b = o_pf + j * PF_FIELDS
            done, target = I[b + 1], I[b + 2]
            c = min(target - done, budget)
            nb = _cdiv(done + c, B) - _cdiv(done, B)
            if nb > avail:
                c = (_cdiv(done, B) + avail) * B - done
                if c <= 0:
                    break
                nb = avail
            I[b + 5] = c
            nchunks += 1
            budget -= c
            avail -= nb
        admit = True
    else:
        budget = I[MAX_TOKENS]
        admit = I[NPF] == 0  # a step is all prefill or all decode
    lim = I[WQ_LEN]
    if I[ASYNC] > 0 and (I[N] > 0 or I[NPF] > 0):
        lim = min(I[WQ_SEEN], lim)  # requests queued while the last step ran wait one more step
    if admit and not preempted and lim > 0:
        if I[PFX_ON]:
            need = _admissions(I, W, F, RF, RI, now, budget, avail, wm, True, lim)[1]
            if need >= 0:
                I[NEED] = need
                return NEED_LOOKUP
        added = _admissions(I, W, F, RF, RI, now, budget, avail, wm, False, lim)
        nchunks += added[0]
        kv_load = added[2]
    if nchunks == 0:
        if I[N] > 0:
            return -1.0
        return -2.0  # queued work that cannot be scheduled: a bug; the caller raises
    n_dec = I[N] if I[CHUNKED] else 0
    n_pf = 0
    pairs = 0.0
    ctx_read = 0.0
    n_logits = n_dec
    for j in range(I[NPF]):
        b = o_pf + j * PF_FIELDS
        c = I[b + 5]
        if c == 0:
            continue
        done = I[b + 1]
        n_pf += c
        pairs += c * (done + (c + 1) / 2.0)
        ctx_read += done
        if done + c >= I[b + 2]:
            n_logits += 1
    I[NDEC] = n_dec
    if I[LORA_OFF] > 0:
        lf, lb = _lora_work(I, F, RI, I[LORA_OFF], n_dec, True)
        dur = F[LORA_STALL] + K.step_time_lora(p, float(n_pf), pairs, ctx_read, float(n_dec),
                                               float(I[CTX_SUM]) if n_dec else 0.0, float(n_logits), lf, lb)
    elif spec:
        dur = K.spec_step_time(p, float(n_pf), pairs, ctx_read, float(n_dec), float(I[CTX_SUM]) if n_dec else 0.0,
                               float(n_logits))
    else:
        dur = K.step_time(p, float(n_pf), pairs, ctx_read, float(n_dec), float(I[CTX_SUM]) if n_dec else 0.0,
                          float(n_logits))
    if kv_load > 0.0:  # the step waits for the KV it loads (LMCache / vLLM's connector load before the forward pass)
        dur += kv_load
    return dur


@njit(cache=True, fastmath=FASTMATH)
def _finish_step(I, F, RF, RI, hist, now):  # type: ignore[no-untyped-def]
    ms = I[MAX_SEQS]
    B = I[BS]
    o_ctx, o_rem, o_seq, o_rid, o_done = IO, IO + ms, IO + 2 * ms, IO + 3 * ms, IO + 4 * ms
    o_pf = IO + 5 * ms
    n_dec = I[NDEC]
    if n_dec > 0 and I[SPEC] > 0:
        blocks, nd, added = K.commit_spec(
            I[o_ctx : o_ctx + ms], I[o_rem : o_rem + ms], I[N], 1, B, I[o_done : o_done + ms], hist,
            F[STEP_DUR : STEP_DUR + 1], now >= F[ITL_FROM], I[SPEC_S], F[SPEC_E],
        )
        I[SPEC_S] += 1
        _take_blocks(I, blocks)
        I[CTX_SUM] += added
        _complete_slots(I, RF, RI, nd, now)
    elif n_dec > 0:
        if now >= F[ITL_FROM]:
            hist[K.hist_index(F[STEP_DUR])] += n_dec
        blocks, nd = K.advance(I[o_ctx : o_ctx + ms], I[o_rem : o_rem + ms], I[N], 1, B, I[o_done : o_done + ms])
        _take_blocks(I, blocks)
        I[CTX_SUM] += I[N]
        _complete_slots(I, RF, RI, nd, now)
    j = 0
    while j < I[NPF]:
        b = o_pf + j * PF_FIELDS
        c = I[b + 5]
        if c == 0:
            j += 1
            continue
        I[b + 5] = 0
        before = _cdiv(I[b + 1], B)
        I[b + 1] += c
        done = I[b + 1]
        _take_blocks(I, _cdiv(done, B) - before)
        if done < I[b + 2]:
            j += 1
            continue
        rid, gen, seq = I[b], I[b + 3], I[b + 4]
        _pf_remove(I, j)  # the next entry moves into index j
        _log(I, RI, EV_INSERT, rid)
        if gen == 0:
            RF[RF_FIRST, rid] = now
        else:
            RI[RI_GEN_DONE, rid] = 0
            last = RF[RF_LAST_TOKEN, rid]
            if not np.isnan(last):
                RF[RF_LAST_TOKEN, rid] = np.nan
                if now >= F[ITL_FROM]:
                    hist[K.hist_index(now - last)] += 1
        left = RI[RI_OUTPUT, rid] - gen - 1
        if left <= 0:
            I[FREE] += _cdiv(done, B)
            _finish(I, RF, RI, rid, now)
            continue
        i = I[N]
        I[o_ctx + i] = done
        I[o_rem + i] = left
        I[o_seq + i] = seq
        I[o_rid + i] = rid
        I[N] = i + 1
        I[CTX_SUM] += done


@njit(cache=True, fastmath=FASTMATH)
def _commit_stretch(I, F, RF, RI, hist, now, j):  # type: ignore[no-untyped-def]
    ms = I[MAX_SEQS]
    o_ctx, o_rem, o_done = IO, IO + ms, IO + 4 * ms
    o_cum = FO
    if I[SPEC] > 0:
        blocks, nd, added = K.commit_spec(
            I[o_ctx : o_ctx + ms], I[o_rem : o_rem + ms], I[N], j, I[BS], I[o_done : o_done + ms],
            hist, F[o_cum : o_cum + STRETCH_CAP], now >= F[ITL_FROM], I[SPEC_S], F[SPEC_E],
        )
        I[SPEC_S] += j
        _take_blocks(I, blocks)
        I[CTX_SUM] += added
        _complete_slots(I, RF, RI, nd, now)
        return
    blocks, nd = K.commit_stretch(
        I[o_ctx : o_ctx + ms], I[o_rem : o_rem + ms], I[N], j, I[BS], I[o_done : o_done + ms],
        hist, F[o_cum : o_cum + STRETCH_CAP], now >= F[ITL_FROM],
    )
    _take_blocks(I, blocks)
    I[CTX_SUM] += I[N] * j
    _complete_slots(I, RF, RI, nd, now)


@njit(cache=True, fastmath=FASTMATH)
def finish(now, I, F, W, lacc, hist, RF, RI):  # type: ignore[no-untyped-def]
    """End what the last timer was for (a step or a stretch) and take in pre-routed arrivals."""
    I[DONE_N] = 0
    mode = I[MODE]
    I[MODE] = MODE_NONE
    if mode == MODE_STEP:
        I[ITERS] += 1
        F[BUSY_S] += F[STEP_DUR]
        _finish_step(I, F, RF, RI, hist, now)
    elif mode == MODE_STRETCH:
        j = I[KSTRETCH]
        I[ITERS] += j
        F[BUSY_S] += F[FO + j - 1]
        _commit_stretch(I, F, RF, RI, hist, now, j)
    take_arrivals(now, I, F, W, lacc, RI)


@njit(cache=True, fastmath=FASTMATH)
def take_arrivals(now, I, F, W, lacc, RI):  # type: ignore[no-untyped-def]
    """Queue the pre-routed requests that have arrived by ``now`` (level updates at their times)."""
    pos = I[ARR_POS]
    n_arr = I[ARR_N]
    o_arr = IO + (7 + PF_FIELDS + EV_FIELDS * EV_PER_SEQ) * I[MAX_SEQS]
    o_arr_t = FO + STRETCH_CAP
    while pos < n_arr and F[o_arr_t + pos] <= now:
        rid = I[o_arr + pos]
        wq_push(I, W, rid)
        RI[RI_REPLICA, rid] = I[INDEX]
        RI[RI_STATUS, rid] = QUEUED
        lv = F[LV : LV + K.LEVEL_STATE]
        level_set(lacc, lv, F[o_arr_t + pos], float(I[WQ_LEN]), lv[2], lv[3], lv[4])
        pos += 1
    I[ARR_POS] = pos


@njit(cache=True, fastmath=FASTMATH)
def plan(now, I, F, W, lacc, RF, RI, p):  # type: ignore[no-untyped-def]
    """Decide what to do next. Returns the delay of the next timer, or -1.0 to sleep until woken."""
    I[SPEC] = int(p[K.SPEC_K])  # finish() has no p: it reads speculation from here
    F[SPEC_E] = p[K.SPEC_TOKENS]
    if I[WQ_LEN] == 0 and I[NPF] == 0 and I[N] == 0:
        I[WQ_SEEN] = 0
        _levels(I, F, lacc, now, 0.0)
        if I[ARR_POS] < I[ARR_N]:
            return F[FO + STRETCH_CAP + I[ARR_POS]] - now
        return -1.0
    # Asynchronous scheduling: requests this plan cannot see yet (see _schedule)
    lagged = I[ASYNC] > 0 and (I[N] > 0 or I[NPF] > 0) and I[WQ_LEN] > I[WQ_SEEN]
    dur = _schedule(I, W, F, RF, RI, p, now)
    if dur < -3.5:
        return NEED_LOOKUP  # nothing changed; the replica looks the request up and calls again
    I[WQ_SEEN] = I[WQ_LEN]  # the next plan may take every request queued now
    _levels(I, F, lacc, now, 1.0)
    if dur >= 0.0:
        I[MODE] = MODE_STEP
        F[STEP_DUR] = dur
        return dur
    if dur < -1.5:
        return -2.0
    ms = I[MAX_SEQS]
    o_cum = FO
    if I[SPEC] > 0:
        k = K.plan_stretch_spec(p, I[IO : IO + ms], I[IO + ms : IO + 2 * ms], I[N], I[FREE], I[BS], STRETCH_CAP,
                                float(I[CTX_SUM]), F[o_cum : o_cum + STRETCH_CAP], I[SPEC_S], F[SPEC_E])
    elif I[LORA_OFF] > 0:
        lf, lb = _lora_work(I, F, RI, I[LORA_OFF], I[N], False)
        k = K.plan_stretch_lora(p, I[IO : IO + ms], I[IO + ms : IO + 2 * ms], I[N], I[FREE], I[BS], STRETCH_CAP,
                                float(I[CTX_SUM]), F[o_cum : o_cum + STRETCH_CAP], lf, lb)
    else:
        k = K.plan_stretch(p, I[IO : IO + ms], I[IO + ms : IO + 2 * ms], I[N], I[FREE], I[BS], STRETCH_CAP,
                           float(I[CTX_SUM]), F[o_cum : o_cum + STRETCH_CAP])
    if k <= 0:
        return -3.0
    if lagged and I[N] + I[NPF] < ms and I[FREE] > 0:
        k = 1  # asynchronous scheduling: the requests that just arrived can join the step after next
    if I[ARR_POS] < I[ARR_N] and I[N] + I[NPF] < ms and I[FREE] > 0:
        # A pre-routed arrival during the stretch ends it at the next iteration boundary.
        k = min(k, K.boundary_after(F[o_cum : o_cum + STRETCH_CAP], k, F[FO + STRETCH_CAP + I[ARR_POS]] - now))
    I[MODE] = MODE_STRETCH
    I[KSTRETCH] = k
    F[T0] = now
    return F[o_cum + k - 1]


@njit(cache=True, fastmath=FASTMATH)
def truncate(now, I, F):  # type: ignore[no-untyped-def]
    """A request arrived now: if it could join, end the running stretch at the next boundary.
    Returns the new delay from now, or -1.0 when nothing changes."""
    if I[MODE] != MODE_STRETCH or I[N] + I[NPF] >= I[MAX_SEQS] or I[FREE] <= 0:
        return -1.0
    k = I[KSTRETCH]
    j = K.boundary_after(F[FO : FO + STRETCH_CAP], k, now - F[T0])
    if j >= k:
        return -1.0
    I[KSTRETCH] = j
    d = F[T0] + F[FO + j - 1] - now
    return max(0.0, d)


@njit(cache=True, fastmath=FASTMATH)
def enqueue_level(now, I, F, lacc):  # type: ignore[no-untyped-def]
    lv = F[LV : LV + K.LEVEL_STATE]
    level_set(lacc, lv, now, float(I[WQ_LEN]), lv[2], lv[3], lv[4])
