"""Plain-Python twins of the Numba kernels in :mod:`stacksim.kernels.cost`.

Written the long way round (layer by layer, token by token) so that a test comparing the two
catches an aggregation mistake in the fast version.
"""

from __future__ import annotations

import math

import numpy as np

from stacksim.kernels import cost as K


def step_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum, n_logits):
    return iteration_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum, decode_ctx_sum, n_logits)


def iteration_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_pairs, decode_kv_read, n_logits,
                   lora_flops=0.0, lora_bytes=0.0):
    if n_prefill_tokens + n_decode <= 0:
        return 0.0
    micro = min(int(p[K.PP]), max(1.0, n_logits)) if p[K.PP] > 1 else 1.0
    # Pipeline parallelism: one of `micro` micro-batches in flight, each with its share of the batch.
    n_prefill_tokens, prefill_pairs, prefill_ctx_read = (x / micro for x in (n_prefill_tokens, prefill_pairs, prefill_ctx_read))
    n_decode, decode_pairs, decode_kv_read = (x / micro for x in (n_decode, decode_pairs, decode_kv_read))
    n_logits, lora_flops = n_logits / micro, lora_flops / micro
    tokens = n_prefill_tokens + n_decode
    n_layers_units = max(1, round(p[K.NUM_ALLREDUCES] / 2)) if p[K.TP] > 1 else 1
    # Split every per-GPU quantity evenly over "units" (layers when TP>1) and add them back up:
    # identical layers make sum-of-maxes equal max-of-sums, which is what the fast kernel uses.
    per_rank = tokens / p[K.DP]  # one attention-DP rank's matmul rows
    eff = p[K.EFF_MAX] * per_rank / (per_rank + p[K.EFF_HALF_TOKENS])
    peak = p[K.PEAK_FLOPS]
    bw = p[K.MEM_BW] * p[K.EFF_MEM]
    if p[K.NUM_EXPERTS] > 1:
        miss = (1.0 - p[K.EXPERTS_PER_TOKEN] / p[K.NUM_EXPERTS]) ** (tokens - int(tokens))  # a micro-batch's fraction
        for _ in range(int(tokens)):
            miss *= 1.0 - p[K.EXPERTS_PER_TOKEN] / p[K.NUM_EXPERTS]
        touched = p[K.NUM_EXPERTS] * (1.0 - miss) / p[K.EFF_MOE_MEM]  # grouped kernels stream at EFF_MOE_MEM of the rate
    else:
        touched = 0.0
    total = 0.0
    for _ in range(n_layers_units):
        u = 1.0 / n_layers_units
        dense = tokens * (p[K.LIN_FLOPS_PER_TOKEN] - p[K.EXPERT_FLOPS_PER_TOKEN]) + n_logits * p[K.LMHEAD_FLOPS_PER_LOGIT] + lora_flops
        lin_c = dense * u / (peak * eff)
        if p[K.EXPERT_FLOPS_PER_TOKEN] > 0:  # grouped expert GEMMs at EFF_MOE of the dense rate
            lin_c += tokens * p[K.EXPERT_FLOPS_PER_TOKEN] * u / (peak * eff * p[K.EFF_MOE])
        lin_m = (p[K.DENSE_WEIGHT_BYTES] + touched * p[K.EXPERT_BYTES] + lora_bytes) * u / bw
        total += max(lin_c, lin_m)
        if n_prefill_tokens > 0:
            total += max(
                p[K.ATTN_FLOPS_PER_PAIR] * prefill_pairs * u / (peak * p[K.EFF_ATTN]),
                p[K.KV_BYTES_PER_TOKEN] * (prefill_ctx_read + n_prefill_tokens) * u / (bw * p[K.EFF_KV]),
            )
        if n_decode > 0:
            total += max(
                p[K.ATTN_FLOPS_PER_PAIR] * decode_pairs * u / (peak * p[K.EFF_ATTN]),
                p[K.KV_BYTES_PER_TOKEN] * decode_kv_read * u / (bw * p[K.EFF_KV]),
            )
    tp = p[K.TP]
    if tp > 1:
        for _ in range(int(p[K.NUM_ALLREDUCES])):
            ring = 2.0 * (tp - 1.0) / tp * tokens * p[K.ALLREDUCE_BYTES_PER_TOKEN]
            total += p[K.COLLECTIVE_LATENCY_S] + ring / p[K.LINK_BW]
    for _ in range(int(p[K.NUM_A2A])):  # expert parallelism: dispatch and combine per MoE layer
        for _ in range(2):
            total += p[K.COLLECTIVE_LATENCY_S] + tokens * p[K.A2A_BYTES_PER_TOKEN] / 2.0 / p[K.LINK_BW]
    pp = int(p[K.PP])
    out = total * pp
    for _ in range(pp - 1):
        out += p[K.COLLECTIVE_LATENCY_S] + tokens * p[K.ALLREDUCE_BYTES_PER_TOKEN] / p[K.LINK_BW]
    return out + p[K.STEP_OVERHEAD_S]


def decode_stretch_times(p, n_decode, ctx_sum0, k):
    out = []
    t = 0.0
    for i in range(k):
        t += step_time(p, 0, 0, 0, n_decode, ctx_sum0 + i * n_decode, n_decode)
        out.append(t)
    return np.array(out)


# ---------------------------------------------------------------- multi-LoRA


def lora_work(batch, adapters, lora_dtype_bytes=2.0):
    """LoRA FLOPs and weight bytes of a step, the long way round: ``batch`` lists (adapter, tokens)
    per sequence (adapter None: the base model); ``adapters[a]`` = (rank, layers, [(d_in, d_out)
    per adapted matrix of one layer, on this GPU]). Every token of every sequence, through every
    layer and matrix, shrinks (d_in x r) and expands (r x d_out): 2 r d_in + 2 r d_out FLOPs; each
    distinct adapter's matrices are read once."""
    flops = 0.0
    seen = []
    for a, tokens in batch:
        if a is None:
            continue
        rank, layers, dims = adapters[a]
        for _ in range(tokens):
            for _ in range(int(layers)):
                for d_in, d_out in dims:
                    flops += 2.0 * rank * d_in + 2.0 * rank * d_out
            if layers != int(layers):  # a fractional share of a pipeline stage's layers
                flops += (layers - int(layers)) * sum(2.0 * rank * (d_in + d_out) for d_in, d_out in dims)
        if a not in seen:
            seen.append(a)
    nbytes = 0.0
    for a in seen:
        rank, layers, dims = adapters[a]
        nbytes += layers * sum(rank * (d_in + d_out) for d_in, d_out in dims) * lora_dtype_bytes
    return flops, nbytes


def step_time_lora(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum, n_logits, batch, adapters):
    """A step whose sequences run LoRA adapters (see :func:`lora_work` for ``batch``, ``adapters``)."""
    flops, nbytes = lora_work(batch, adapters)
    return iteration_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum, decode_ctx_sum,
                          n_logits, flops, nbytes)


def blocks_for(tokens: int, block_size: int) -> int:
    return math.ceil(tokens / block_size)


def max_iterations(ctx, rem, n, free_blocks, block_size, cap):
    best = 0
    for j in range(1, min([cap] + [int(r) for r in rem[:n]]) + 1):
        need = sum(blocks_for(int(c) + j, block_size) - blocks_for(int(c), block_size) for c in ctx[:n])
        if need > free_blocks:
            break
        best = j
    return best


# ---------------------------------------------------------------- speculative decoding


def spec_tokens(s0: int, j: int, e: float) -> int:
    """Tokens per sequence in speculative steps s0 .. s0+j-1: one step at a time."""
    total = 0
    for s in range(s0, s0 + j):
        total += math.floor((s + 1) * e) - math.floor(s * e)
    return total


def spec_step_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum, n_logits):
    """Verification of k+1 positions per sequence, written query by query, then the proposer's
    passes one at a time."""
    k = int(p[K.SPEC_K])
    queries = 0.0
    pairs = 0.0
    logits = n_logits
    for i in range(k + 1):  # position i of every decoding sequence sees its context plus i drafts
        queries += n_decode
        pairs += decode_ctx_sum + i * n_decode
        if i > 0:
            logits += n_decode
    t = iteration_time(p, n_prefill_tokens, prefill_pairs, prefill_ctx_read, queries, pairs, decode_ctx_sum, logits)
    if p[K.SPEC_PROPOSER] > 0:
        d = np.asarray(p[K.PROPOSER : K.PROPOSER + K.N_STEP_PARAMS])
        for i in range(k):
            if i == 0:
                t += step_time(d, n_prefill_tokens, prefill_pairs, prefill_ctx_read, n_decode, decode_ctx_sum, n_decode)
            else:
                t += step_time(d, 0, 0, 0, n_decode, decode_ctx_sum + i * n_decode, n_decode)
    return t


def spec_stretch_times(p, n_decode, ctx_sum0, k, s0, e):
    out = []
    t = 0.0
    ctx = ctx_sum0
    for i in range(k):
        t += spec_step_time(p, 0, 0, 0, n_decode, ctx, n_decode)
        out.append(t)
        ctx += n_decode * spec_tokens(s0 + i, 1, e)
    return np.array(out)


def spec_max_iterations(ctx, rem, n, free_blocks, block_size, cap, s0, e):
    """Step by step: stop after the step in which a sequence emits its last token, at ``cap``,
    or before a step whose blocks do not fit."""
    best = 0
    for j in range(1, cap + 1):
        t = spec_tokens(s0, j, e)
        need = sum(blocks_for(int(c) + min(t, int(r)), block_size) - blocks_for(int(c), block_size)
                   for c, r in zip(ctx[:n], rem[:n]))
        if need > free_blocks:
            break
        best = j
        if any(t >= int(r) for r in rem[:n]):
            break
    return best


def commit_spec(ctx, rem, n, j, block_size, hist, cum, tally, s0, e):
    """Token by token: every step, every sequence emits its tokens one at a time (each a gap of
    the step's duration over the tokens it emitted in that step). Returns (blocks, finished slots,
    tokens added); updates ``ctx``, ``rem`` and ``hist`` in place."""
    blocks = 0
    added = 0
    finished = []
    prev = 0.0
    for i in range(j):
        d = cum[i] - prev
        prev = cum[i]
        g = spec_tokens(s0 + i, 1, e)
        for s in range(n):
            emitted = 0
            for _ in range(g):
                if rem[s] <= 0:
                    break
                blocks += blocks_for(int(ctx[s]) + 1, block_size) - blocks_for(int(ctx[s]), block_size)
                ctx[s] += 1
                rem[s] -= 1
                emitted += 1
                added += 1
            if tally and emitted:
                hist[hist_index(d / emitted)] += emitted
            if emitted and rem[s] == 0:
                finished.append(s)
    return blocks, finished, added


def hist_index(x: float) -> int:
    if x <= K.HIST_LO_S:
        return 0
    return min(K.HIST_BINS - 1, int(math.log(x / K.HIST_LO_S) / math.log(K.HIST_RATIO)) + 1)


def level_bins(times, values, width, n_bins):
    """Integral of a step function (value ``values[i]`` from ``times[i]`` to ``times[i+1]``,
    zero before the first change) over each bin of ``width``: the overlap, bin by bin."""
    out = np.zeros(n_bins)
    for i in range(len(times) - 1):
        a, b, v = times[i], times[i + 1], values[i]
        for k in range(n_bins):
            lo, hi = k * width, (k + 1) * width
            if k == n_bins - 1:
                hi = math.inf  # the last bin takes everything past its start
            overlap = min(b, hi) - max(a, lo)
            if overlap > 0:
                out[k] += v * overlap
    return out
