"""Numba kernels: the time of one batch iteration, and the bookkeeping of decode stretches.

An iteration's time is a roofline per operator class (dense matmuls, prefill attention, decode
attention), plus tensor-parallel all-reduces, plus a fixed per-step overhead:

    t_lin   = max(FLOPs_lin / (peak * eff(T)) + FLOPs_exp (1/eff_moe - 1) / (peak * eff(T)),
                  (dense bytes + touched expert bytes / eff_moe_mem) / (bw * eff_mem))
    t_attn  = max(FLOPs_attn / (peak * eff_attn), KV bytes / (bw * eff_mem * eff_kv))   (prefill, decode apart)
    t_comm  = n_allreduce * (latency + 2 (tp-1)/tp * T * hidden * bytes / link_bw)
    t_step  = pp * (t_lin + t_attn_p + t_attn_d + t_comm) + (pp-1) * p2p + overhead

With pipeline parallelism the batch runs as m = min(pp, sequences) micro-batches: every term
above is taken at the micro-batch's share of the work (weights are still read whole by each).

Expert parallelism with attention data parallelism (DP ranks of TP GPUs, experts spread over all
EP = DP x TP GPUs): the per-token parameters are per GPU of the replica (a rank's share of the
dense and attention work, 1/EP of the experts'), the matmul efficiency is a rank's (T / DP
tokens), and every MoE layer adds two all-to-alls (``A2A_BYTES_PER_TOKEN``, ``NUM_A2A``).

``eff(T) = eff_max * T / (T + T_half)``: matmuls on few tokens cannot fill the tensor cores.
Mixture-of-experts layers read only the experts the batch touches: with uniform routing of T
tokens to k of E experts, E * (1 - (1 - k/E)^T) experts on average.

Multi-LoRA (``engine.lora``) adds the adapters' shrink and expand FLOPs to the matmuls and their
weights, read once per step per distinct adapter, to the weight bytes (:func:`step_time_lora`).

Speculative decoding (``engine.speculative``) has its own kernels (``spec_*``, ``commit_spec``):
a decode step verifies k+1 tokens per sequence in one target pass, plus the proposer's passes,
and emits E = (1 - a^(k+1)) / (1 - a) tokens per sequence on average (Leviathan et al., ICML
2023, eq. 1); see :func:`spec_step_time` and :func:`spec_tokens`.

Every kernel here has a plain-Python twin in :mod:`stacksim.kernels.naive`; tests compare them.
The parameter vector ``p`` is built by :func:`stacksim.serving.costmodel.cost_params`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stacksim.kernels import FASTMATH

# Indices into the parameter vector (all per GPU of one pipeline stage, SI units).
LIN_FLOPS_PER_TOKEN = 0  # 2 * non-embedding active params on this GPU
LMHEAD_FLOPS_PER_LOGIT = 1  # 2 * hidden * vocab / tp
ATTN_FLOPS_PER_PAIR = 2  # attention FLOPs per (query, key) pair on this GPU
DENSE_WEIGHT_BYTES = 3  # non-expert weight bytes read once per step
EXPERT_BYTES = 4  # bytes of one routed expert summed over MoE layers on this GPU
NUM_EXPERTS = 5
EXPERTS_PER_TOKEN = 6
KV_BYTES_PER_TOKEN = 7  # KV-cache bytes per token on this GPU (all its layers)
PEAK_FLOPS = 8  # dense peak at the compute precision, FLOP/s
MEM_BW = 9  # bytes/s
EFF_MAX = 10
EFF_HALF_TOKENS = 11
EFF_ATTN = 12
EFF_MEM = 13
STEP_OVERHEAD_S = 14
TP = 15
ALLREDUCE_BYTES_PER_TOKEN = 16  # hidden * activation bytes
NUM_ALLREDUCES = 17  # per step on this GPU (2 per layer for Megatron-style TP)
LINK_BW = 18  # bytes/s, unidirectional scale-up link
COLLECTIVE_LATENCY_S = 19
PP = 20
DP = 21  # attention data-parallel ranks in the replica: each runs 1/DP of the batch's tokens (>= 1)
A2A_BYTES_PER_TOKEN = 22  # expert parallelism: all-to-all bytes per replica token on this GPU (dispatch + combine)
NUM_A2A = 23  # MoE layers on this GPU's stage (0: no expert parallelism)
EXPERT_FLOPS_PER_TOKEN = 24  # the routed experts' share of LIN_FLOPS_PER_TOKEN (0 for dense models)
EFF_MOE = 25  # grouped expert GEMMs' compute efficiency relative to dense GEMMs (1: the same)
EFF_MOE_MEM = 26  # grouped expert kernels' weight streaming relative to dense GEMMs' (1: the same)
EFF_KV = 27  # attention kernels' KV-cache reads relative to the weights' streaming rate (1: the same)
N_STEP_PARAMS = 28  # one model's step-time parameters (the target's, or the proposer's below)
# Speculative decoding (all zero without it, which keeps the plain kernels' path):
SPEC_K = 28  # proposed tokens per step, k (0: no speculation)
SPEC_TOKENS = 29  # expected tokens emitted per sequence per decode step, E (Leviathan eq. 1)
SPEC_PROPOSER = 30  # 1: the proposer runs k forward passes of the model at PROPOSER; 0: free (n-gram)
PROPOSER = 31  # the proposer's own N_STEP_PARAMS (draft model, or the MTP layer), no step overhead
N_PARAMS = PROPOSER + N_STEP_PARAMS


@njit(cache=True, fastmath=FASTMATH)
def step_time(
    p: np.ndarray,
    n_prefill_tokens: float,
    prefill_pairs: float,
    prefill_ctx_read: float,
    n_decode: float,
    decode_ctx_sum: float,
    n_logits: float,
) -> float:
    """Seconds for one iteration.

    n_prefill_tokens: prompt tokens processed this step (all chunks); prefill_pairs: causal
    (query, key) pairs of those chunks; prefill_ctx_read: tokens of earlier context the chunks
    attend to (read from the KV cache); n_decode: sequences decoding one token; decode_ctx_sum:
    their context lengths summed; n_logits: sequences that sample a token this step.
    """
    return iteration_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum,
                          decode_ctx_sum, n_logits, 0.0, 0.0)


@njit(cache=True, fastmath=FASTMATH)
def step_time_lora(
    p: np.ndarray,
    n_prefill_tokens: float,
    prefill_pairs: float,
    prefill_ctx_read: float,
    n_decode: float,
    decode_ctx_sum: float,
    n_logits: float,
    lora_flops: float,
    lora_bytes: float,
) -> float:
    """:func:`step_time` of a step whose tokens run LoRA adapters: ``lora_flops`` is the sum over
    its tokens of their adapter's shrink + expand FLOPs on this GPU (2 r (d_in + d_out) per adapted
    matrix: Punica, S-LoRA), ``lora_bytes`` the weights of its distinct adapters on this GPU, read
    once. Both join the matmuls' roofline; with zeros this is :func:`step_time` exactly."""
    return iteration_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum,
                          decode_ctx_sum, n_logits, lora_flops, lora_bytes)


# Inlined at Numba's level: as a call, the decode-stretch loop over step_time ran 2.4x slower
# (measured, 4096 iterations: 71 us against 30 us), the loop-invariant terms no longer hoisted.
@njit(cache=True, fastmath=FASTMATH, inline="always")
def iteration_time(
    p: np.ndarray,
    n_prefill_tokens: float,
    prefill_pairs: float,
    prefill_ctx_read: float,
    n_decode_tokens: float,
    decode_pairs: float,
    decode_kv_read: float,
    n_logits: float,
    lora_flops: float,
    lora_bytes: float,
) -> float:
    """:func:`step_time` with the decode side spelled out: ``n_decode_tokens`` query tokens of
    decoding sequences, their (query, key) pairs, and the cached tokens they read. A plain decode
    has one query per sequence, so pairs = KV read = the summed context; a speculative
    verification has k+1 queries per sequence over the same cached keys. ``lora_flops`` and
    ``lora_bytes``: see :func:`step_time_lora` (0.0 without LoRA, which leaves every sum as it was)."""
    if n_prefill_tokens + n_decode_tokens <= 0.0:
        return 0.0
    pp = p[PP]
    if pp > 1.0:
        # Pipeline parallelism runs the batch as m = min(pp, sequences) micro-batches in flight
        # (vLLM's virtual engines, TensorRT-LLM's micro-batches): each stage works on a 1/m share,
        # and the batch advances one token per round trip of a micro-batch through the pp stages.
        m = min(pp, max(1.0, n_logits))
        if m > 1.0:
            inv = 1.0 / m
            n_prefill_tokens *= inv
            prefill_pairs *= inv
            prefill_ctx_read *= inv
            n_decode_tokens *= inv
            decode_pairs *= inv
            decode_kv_read *= inv
            n_logits *= inv
            lora_flops *= inv
    tokens = n_prefill_tokens + n_decode_tokens
    rank_tokens = tokens / p[DP]  # the matmuls of one attention-DP rank (the whole batch without DP)
    eff = p[EFF_MAX] * rank_tokens / (rank_tokens + p[EFF_HALF_TOKENS])
    lin_flops = tokens * p[LIN_FLOPS_PER_TOKEN] + n_logits * p[LMHEAD_FLOPS_PER_LOGIT] + lora_flops
    t_lin_c = lin_flops / (p[PEAK_FLOPS] * eff)
    if p[EXPERT_FLOPS_PER_TOKEN] > 0.0:
        # Routed experts run as grouped GEMMs (fused MoE kernels) at EFF_MOE of the dense rate.
        t_lin_c += tokens * p[EXPERT_FLOPS_PER_TOKEN] * (1.0 / p[EFF_MOE] - 1.0) / (p[PEAK_FLOPS] * eff)
    n_exp = p[NUM_EXPERTS]
    if n_exp > 1.0:
        # The grouped expert kernels stream their weights at EFF_MOE_MEM of the dense kernels' rate.
        touched = n_exp * (1.0 - (1.0 - p[EXPERTS_PER_TOKEN] / n_exp) ** tokens) / p[EFF_MOE_MEM]
    else:
        touched = 0.0
    w_bytes = p[DENSE_WEIGHT_BYTES] + touched * p[EXPERT_BYTES] + lora_bytes
    bw = p[MEM_BW] * p[EFF_MEM]
    t_lin_m = w_bytes / bw
    t_lin = max(t_lin_m, t_lin_c)

    attn_peak = p[PEAK_FLOPS] * p[EFF_ATTN]
    kv_bw = bw * p[EFF_KV]  # paged attention reads the KV cache in blocks, not as one stream
    t_ap = 0.0
    if n_prefill_tokens > 0.0:
        c = p[ATTN_FLOPS_PER_PAIR] * prefill_pairs / attn_peak
        m = p[KV_BYTES_PER_TOKEN] * (prefill_ctx_read + n_prefill_tokens) / kv_bw
        t_ap = max(m, c)
    t_ad = 0.0
    if n_decode_tokens > 0.0:
        c = p[ATTN_FLOPS_PER_PAIR] * decode_pairs / attn_peak
        m = p[KV_BYTES_PER_TOKEN] * decode_kv_read / kv_bw
        t_ad = max(m, c)

    t_comm = 0.0
    tp = p[TP]
    if tp > 1.0:
        per = p[COLLECTIVE_LATENCY_S] + 2.0 * (tp - 1.0) / tp * tokens * p[ALLREDUCE_BYTES_PER_TOKEN] / p[LINK_BW]
        t_comm = p[NUM_ALLREDUCES] * per
    if p[NUM_A2A] > 0.0:
        # Expert parallelism: each MoE layer dispatches tokens to their experts' GPUs and combines
        # the results back, two all-to-alls over the scale-up link.
        t_comm += p[NUM_A2A] * (2.0 * p[COLLECTIVE_LATENCY_S] + tokens * p[A2A_BYTES_PER_TOKEN] / p[LINK_BW])
    t_hop = 0.0
    if pp > 1.0:
        t_hop = (pp - 1.0) * (p[COLLECTIVE_LATENCY_S] + tokens * p[ALLREDUCE_BYTES_PER_TOKEN] / p[LINK_BW])
    return pp * (t_lin + t_ap + t_ad + t_comm) + t_hop + p[STEP_OVERHEAD_S]


@njit(cache=True, fastmath=FASTMATH)
def decode_stretch_times(p: np.ndarray, n_decode: int, ctx_sum0: float, k: int, out: np.ndarray) -> float:
    """Cumulative end times of ``k`` pure-decode iterations of a fixed batch; returns the last.

    Each iteration adds one token to every sequence, so the summed context grows by n_decode.
    """
    t = 0.0
    ctx = ctx_sum0
    nd = float(n_decode)
    for i in range(k):
        t += step_time(p, 0.0, 0.0, 0.0, nd, ctx, nd)
        out[i] = t
        ctx += nd
    return t


@njit(cache=True, fastmath=FASTMATH)
def new_blocks_after(ctx: np.ndarray, n: int, j: int, block_size: int) -> int:
    """KV blocks the first ``n`` sequences need to grow by ``j`` tokens each."""
    total = 0
    for i in range(n):
        c = ctx[i]
        total += (c + j + block_size - 1) // block_size - (c + block_size - 1) // block_size
    return total


@njit(cache=True, fastmath=FASTMATH)
def max_iterations(ctx: np.ndarray, rem: np.ndarray, n: int, free_blocks: int, block_size: int, cap: int) -> int:
    """Longest decode stretch: until the first sequence finishes, blocks run out, or ``cap``.

    Returns 0 when even one more iteration needs more blocks than are free (preempt first).
    """
    k = cap
    for i in range(n):
        k = min(k, rem[i])
    if k <= 0:
        return 0
    if new_blocks_after(ctx, n, k, block_size) <= free_blocks:
        return k
    lo = 0  # feasible
    hi = k  # infeasible
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if new_blocks_after(ctx, n, mid, block_size) <= free_blocks:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True, fastmath=FASTMATH)
def advance(ctx: np.ndarray, rem: np.ndarray, n: int, j: int, block_size: int, done: np.ndarray) -> tuple:
    """Advance ``n`` decoding sequences by ``j`` tokens.

    Returns (new blocks used, number finished); indices of finished slots go to ``done``.
    """
    blocks = 0
    nd = 0
    for i in range(n):
        c = ctx[i]
        blocks += (c + j + block_size - 1) // block_size - (c + block_size - 1) // block_size
        ctx[i] = c + j
        rem[i] -= j
        if rem[i] <= 0:
            done[nd] = i
            nd += 1
    return blocks, nd


# Log-spaced histogram for inter-token latencies (a sketch: 1% relative resolution).
HIST_LO_S = 1e-6
HIST_RATIO = 1.01
HIST_BINS = 2100  # covers 1 us .. ~1.2e3 s


@njit(cache=True, fastmath=FASTMATH)
def hist_index(x: float) -> int:
    if x <= HIST_LO_S:
        return 0
    i = int(np.log(x / HIST_LO_S) / np.log(HIST_RATIO)) + 1
    if i >= HIST_BINS:
        i = HIST_BINS - 1
    return i


@njit(cache=True, fastmath=FASTMATH)
def hist_add_stretch(hist: np.ndarray, cum: np.ndarray, j: int, weight: float) -> None:
    """Add the ``j`` iteration durations of a stretch (cumulative times ``cum``) with ``weight``."""
    prev = 0.0
    for i in range(j):
        hist[hist_index(cum[i] - prev)] += weight
        prev = cum[i]


@njit(cache=True, fastmath=FASTMATH)
def plan_stretch(
    p: np.ndarray, ctx: np.ndarray, rem: np.ndarray, n: int, free_blocks: int, block_size: int, cap: int,
    ctx_sum: float, cum: np.ndarray,
) -> int:
    """:func:`max_iterations` then :func:`decode_stretch_times` in one call (one dispatch)."""
    k = max_iterations(ctx, rem, n, free_blocks, block_size, cap)
    if k > 0:
        decode_stretch_times(p, n, ctx_sum, k, cum)
    return k


@njit(cache=True, fastmath=FASTMATH)
def decode_stretch_times_lora(
    p: np.ndarray, n_decode: int, ctx_sum0: float, k: int, out: np.ndarray, lora_flops: float, lora_bytes: float
) -> float:
    """:func:`decode_stretch_times` for a batch whose decodes run LoRA adapters: every iteration
    has the same tokens and adapters, so the same ``lora_flops`` and ``lora_bytes``."""
    t = 0.0
    ctx = ctx_sum0
    nd = float(n_decode)
    for i in range(k):
        t += step_time_lora(p, 0.0, 0.0, 0.0, nd, ctx, nd, lora_flops, lora_bytes)
        out[i] = t
        ctx += nd
    return t


@njit(cache=True, fastmath=FASTMATH)
def plan_stretch_lora(
    p: np.ndarray, ctx: np.ndarray, rem: np.ndarray, n: int, free_blocks: int, block_size: int, cap: int,
    ctx_sum: float, cum: np.ndarray, lora_flops: float, lora_bytes: float,
) -> int:
    """:func:`plan_stretch` with LoRA decodes (:func:`decode_stretch_times_lora`)."""
    k = max_iterations(ctx, rem, n, free_blocks, block_size, cap)
    if k > 0:
        decode_stretch_times_lora(p, n, ctx_sum, k, cum, lora_flops, lora_bytes)
    return k


@njit(cache=True, fastmath=FASTMATH)
def commit_stretch(
    ctx: np.ndarray, rem: np.ndarray, n: int, j: int, block_size: int, done: np.ndarray,
    hist: np.ndarray, cum: np.ndarray, tally: bool,
) -> tuple:
    """:func:`hist_add_stretch` (when ``tally``) then :func:`advance` in one call."""
    if tally:
        hist_add_stretch(hist, cum, j, float(n))
    return advance(ctx, rem, n, j, block_size, done)


# ---------------------------------------------------------------- speculative decoding
#
# A decode step of a sequence proposes k tokens (draft model, MTP head or n-gram lookup) and the
# target verifies them in one pass over k+1 positions; with per-token acceptance probability a,
# the step emits E = (1 - a^(k+1)) / (1 - a) tokens on average (Leviathan, Kalman & Matias,
# "Fast Inference from Transformers via Speculative Decoding", ICML 2023, eq. 1). The simulator
# uses that expectation, not a draw per step (see spec_tokens). Prefill steps emit one token.


@njit(cache=True, fastmath=FASTMATH)
def spec_tokens(s0: int, j: int, e: float) -> int:
    """Tokens each decoding sequence emits in a replica's speculative steps s0 .. s0+j-1.

    Step s emits floor((s+1) E) - floor(s E): every run of j steps emits j E tokens to within
    one, deterministically (no random stream), and E = 1 (acceptance 0) gives one per step."""
    return int(np.floor((s0 + j) * e)) - int(np.floor(s0 * e))


@njit(cache=True, fastmath=FASTMATH)
def spec_step_time(
    p: np.ndarray,
    n_prefill_tokens: float,
    prefill_pairs: float,
    prefill_ctx_read: float,
    n_decode: float,
    decode_ctx_sum: float,
    n_logits: float,
) -> float:
    """:func:`step_time` of a step with speculative decoding (same arguments).

    The target verifies k+1 positions per decoding sequence in one pass: k+1 query tokens through
    the matmuls (the weights are read once, so this is nearly free while decode is memory-bound
    and costly once it is compute-bound), query i of a sequence attending to its ctx + i keys
    (the cached ones read once), and k+1 logits. Then the proposer: k sequential passes of its
    own model over the decoding sequences (the first also takes the step's prompt chunks, to
    fill its KV cache); nothing for n-gram lookup.
    """
    k = p[SPEC_K]
    q = k + 1.0
    t = iteration_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode * q,
                       q * decode_ctx_sum + n_decode * q * k / 2.0, decode_ctx_sum, n_logits + n_decode * k, 0.0, 0.0)
    if p[SPEC_PROPOSER] > 0.0:
        d = p[PROPOSER : PROPOSER + N_STEP_PARAMS]
        t += step_time(d, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum, n_decode)
        ctx = decode_ctx_sum
        for _ in range(1, int(k)):
            ctx += n_decode
            t += step_time(d, 0.0, 0.0, 0.0, n_decode, ctx, n_decode)
    return t


@njit(cache=True, fastmath=FASTMATH)
def spec_stretch_times(p: np.ndarray, n_decode: int, ctx_sum0: float, k: int, out: np.ndarray, s0: int, e: float) -> float:
    """:func:`decode_stretch_times` for speculative steps s0 .. s0+k-1 (step s adds
    ``spec_tokens(s, 1, e)`` tokens to every sequence)."""
    t = 0.0
    ctx = ctx_sum0
    nd = float(n_decode)
    for i in range(k):
        t += spec_step_time(p, 0.0, 0.0, 0.0, nd, ctx, nd)
        out[i] = t
        ctx += nd * spec_tokens(s0 + i, 1, e)
    return t


@njit(cache=True, fastmath=FASTMATH)
def new_blocks_capped(ctx: np.ndarray, rem: np.ndarray, n: int, t: int, block_size: int) -> int:
    """KV blocks the first ``n`` sequences need to grow by ``t`` tokens each, none past its last."""
    total = 0
    for i in range(n):
        c = ctx[i]
        a = min(t, rem[i])
        total += (c + a + block_size - 1) // block_size - (c + block_size - 1) // block_size
    return total


@njit(cache=True, fastmath=FASTMATH)
def spec_max_iterations(
    ctx: np.ndarray, rem: np.ndarray, n: int, free_blocks: int, block_size: int, cap: int, s0: int, e: float
) -> int:
    """:func:`max_iterations` for speculative steps from s0: until the first sequence finishes
    (its last step may emit fewer tokens than the others), blocks run out, or ``cap``."""
    r = rem[0]
    for i in range(1, n):
        r = min(r, rem[i])
    k = 1
    while k < cap and spec_tokens(s0, k, e) < r:
        k += 1
    if new_blocks_capped(ctx, rem, n, spec_tokens(s0, k, e), block_size) <= free_blocks:
        return k
    lo = 0  # feasible
    hi = k  # infeasible
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if new_blocks_capped(ctx, rem, n, spec_tokens(s0, mid, e), block_size) <= free_blocks:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True, fastmath=FASTMATH)
def plan_stretch_spec(
    p: np.ndarray, ctx: np.ndarray, rem: np.ndarray, n: int, free_blocks: int, block_size: int, cap: int,
    ctx_sum: float, cum: np.ndarray, s0: int, e: float,
) -> int:
    """:func:`spec_max_iterations` then :func:`spec_stretch_times` in one call."""
    k = spec_max_iterations(ctx, rem, n, free_blocks, block_size, cap, s0, e)
    if k > 0:
        spec_stretch_times(p, n, ctx_sum, k, cum, s0, e)
    return k


@njit(cache=True, fastmath=FASTMATH)
def commit_spec(
    ctx: np.ndarray, rem: np.ndarray, n: int, j: int, block_size: int, done: np.ndarray,
    hist: np.ndarray, cum: np.ndarray, tally: bool, s0: int, e: float,
) -> tuple:
    """Advance ``n`` decoding sequences by speculative steps s0 .. s0+j-1 (cumulative end times
    ``cum[:j]``; no sequence may finish before the last), none past its last token.

    With ``tally``, the g tokens a sequence emits in a step of duration d count as g inter-token
    gaps of d / g: the stream delivers them together, and spreading the step over them keeps the
    mean inter-token latency equal to TPOT. Returns (new blocks, number finished, tokens added);
    indices of finished slots go to ``done``.
    """
    t_all = spec_tokens(s0, j, e)
    if tally:
        prev = 0.0
        for i in range(j - 1):
            g = spec_tokens(s0 + i, 1, e)
            hist[hist_index((cum[i] - prev) / g)] += n * g
            prev = cum[i]
        g = spec_tokens(s0 + j - 1, 1, e)
        d = cum[j - 1] - prev
        before = t_all - g
        full = 0
        for i in range(n):
            left = rem[i] - before
            if left >= g:
                full += 1
            elif left > 0:  # its last tokens: fewer than the step proposes
                hist[hist_index(d / left)] += left
        if full > 0:
            hist[hist_index(d / g)] += full * g
    blocks = 0
    nd = 0
    added = 0
    for i in range(n):
        c = ctx[i]
        a = min(t_all, rem[i])
        blocks += (c + a + block_size - 1) // block_size - (c + block_size - 1) // block_size
        ctx[i] = c + a
        rem[i] -= a
        added += a
        if rem[i] <= 0:
            done[nd] = i
            nd += 1
    return blocks, nd, added


@njit(cache=True, fastmath=FASTMATH)
def boundary_after(cum: np.ndarray, k: int, dt: float) -> int:
    """Iterations of a stretch (cumulative end times ``cum[:k]``) up to the first boundary at or
    after ``dt``; ``k`` if that is the end of the stretch."""
    lo, hi = 0, k - 1
    if cum[hi] <= dt:
        return k
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] >= dt:
            hi = mid
        else:
            lo = mid + 1
    return lo + 1


# Level state layout: [t_last, v0, v1, v2, v3, peak0, peak1, peak2, peak3, bin width]
LEVEL_STATE = 10


@njit(cache=True, fastmath=FASTMATH)
def level_set(acc: np.ndarray, state: np.ndarray, t: float, v0: float, v1: float, v2: float, v3: float) -> None:
    """Time-weighted levels: integrate the current values from the last change to ``t`` into
    bins (rows of ``acc``), then switch to the new values. Up to four levels share one clock;
    time past the last bin piles into it."""
    t0 = state[0]
    if t > t0:
        width = state[9]
        nb = acc.shape[0]
        b = int(t0 / width)
        while True:
            edge = (b + 1) * width
            seg = min(edge, t)
            dt = seg - t0
            row = b if b < nb else nb - 1
            acc[row, 0] += state[1] * dt
            acc[row, 1] += state[2] * dt
            acc[row, 2] += state[3] * dt
            acc[row, 3] += state[4] * dt
            if seg >= t:
                break
            t0 = seg
            b += 1
        state[0] = t
    state[1] = v0
    state[2] = v1
    state[3] = v2
    state[4] = v3
    state[5] = max(state[5], v0)
    state[6] = max(state[6], v1)
    state[7] = max(state[7], v2)
    state[8] = max(state[8], v3)
