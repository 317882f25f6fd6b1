"""Compute and memory-bandwidth utilisation (MFU / MBU style) of a deployment, from the run's
request table and iteration count, by the roofline terms of :mod:`stacksim.kernels.cost`.

``busy`` says a batch was running; these say how much of the hardware it used:

    MFU = (T * LIN_FLOPS_PER_TOKEN + L * LMHEAD_FLOPS_PER_LOGIT + P * ATTN_FLOPS_PER_PAIR)
          / (replica-seconds * PEAK_FLOPS)
    MBU = (iterations * DENSE_WEIGHT_BYTES + K * KV_BYTES_PER_TOKEN) / (replica-seconds * MEM_BW)

all per GPU of the replica (the parameter slots are per GPU), where T is the tokens computed
(uncached prompt + generated), L the sequences that produced a token, P the attention
(query, key) pairs and K the KV-cache tokens read. A prompt of h cached and u computed tokens
has u*h + u(u+1)/2 pairs however it is chunked; each generated token after the first reads its
whole context. The sums come from the request table after the run, so the scheduler's hot path
and its twin are untouched and no simulated result changes.

Left out, so both are lower bounds: prompts recomputed after a preemption, a pipeline's weights
read once per micro-batch, experts' weights (MoE), speculative proposals and LoRA adapters.
Peak FLOPS is the dense peak at the deployment's compute precision (the catalog's), as in MFU
(Chowdhery et al., PaLM, 2022, appendix B); MBU is bytes moved over peak bandwidth (Databricks,
"LLM inference performance engineering", 2023).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from stacksim.kernels import cost as K


def flops_and_bytes(p: np.ndarray, rows: pd.DataFrame, iterations: int) -> tuple[float, float]:
    """FLOPs and bytes one GPU of a replica moved for ``rows`` (a deployment's serving rows)."""
    served = (rows["status"] != "rejected").to_numpy()
    inp = rows["input_tokens"].to_numpy(dtype=float)[served]
    cached = np.nan_to_num(rows["cached_tokens"].to_numpy(dtype=float)[served]) if "cached_tokens" in rows else np.zeros(len(inp))
    started = np.isfinite(rows["first_token_s"].to_numpy(dtype=float)[served])
    out = rows["output_tokens"].to_numpy(dtype=float)[served]
    # Generated tokens: the whole output of a finished request; one that ended early (failed,
    # cancelled, cut at the horizon) is counted to its first token only.
    done = (rows["status"] == "completed").to_numpy()[served]
    gen = np.where(done, out, np.where(started, 1.0, 0.0))
    u = np.where(started, np.maximum(inp - cached, 0.0), 0.0)
    dec = np.maximum(gen - 1.0, 0.0)  # decode steps: the first token comes from the prefill
    tokens = float(u.sum() + dec.sum())
    logits = float(gen.sum())
    pairs = float(np.sum(u * cached + u * (u + 1.0) / 2.0) + np.sum(dec * inp + dec * (dec + 1.0) / 2.0))
    kv_read = float(np.sum(np.where(started, cached, 0.0)) + np.sum(dec * inp + dec * (dec + 1.0) / 2.0))
    flops = tokens * p[K.LIN_FLOPS_PER_TOKEN] + logits * p[K.LMHEAD_FLOPS_PER_LOGIT] + pairs * p[K.ATTN_FLOPS_PER_PAIR]
    nbytes = iterations * p[K.DENSE_WEIGHT_BYTES] + kv_read * p[K.KV_BYTES_PER_TOKEN]
    return flops, nbytes


def utilisation(p: np.ndarray, rows: pd.DataFrame, iterations: int, replica_s: float) -> dict[str, Any]:
    """``{"mfu", "mbu"}`` of a deployment over ``replica_s`` replica-seconds (0 when none)."""
    if replica_s <= 0:
        return {"mfu": 0.0, "mbu": 0.0}
    flops, nbytes = flops_and_bytes(p, rows, iterations)
    return {"mfu": round(float(flops / (replica_s * p[K.PEAK_FLOPS])), 6), "mbu": round(float(nbytes / (replica_s * p[K.MEM_BW])), 6)}
