"""Serving-engine profiles: vLLM, SGLang and TensorRT-LLM.

A profile is the engine's own defaults for the scheduler and memory settings (the scenario's
``engine.kind``), and its family of fitted efficiencies and per-step overhead
(``calibration/REPORT.md``). The scheduler itself is shared: continuous batching with chunked
prefill, one event per batch iteration (``serving/core.py``).

Settings a scenario leaves out are filled here, by the rules the engines themselves apply at
start-up, so the rest of the simulator only sees concrete numbers.
"""

from __future__ import annotations

import math

from stacksim.catalog import Accelerator, ModelArch, versions
from stacksim.scenario import schema as S
from stacksim.serving.costmodel import GIB, WEIGHT_BYTES

ENGINE_KINDS = ("vllm", "sglang", "trtllm")


def sglang_chunked_prefill_size(acc: Accelerator) -> int:
    """SGLang's --chunked-prefill-size when left unset: by GPU memory, 2048 under 35 GiB
    (A10, L40, RTX 4090), 8192 under 160 GiB (A100, H100, H200), 16384 above (B200, MI300X)
    (sgl-project/sglang python/sglang/srt/server_args.py, ``_handle_chunked_prefill_size``)."""
    gib = acc.memory_gb
    if gib < 35:
        return 2048
    if gib < 160:
        return 8192
    return 16384


def sglang_mem_fraction_static(tp: int) -> float:
    """SGLang's --mem-fraction-static when left unset, by tensor parallelism (server_args.py:
    0.88 for tp 1, 0.87 for tp 2, 0.85 for tp 4, 0.81 for tp 8 and more)."""
    if tp >= 8:
        return 0.81
    if tp >= 4:
        return 0.85
    if tp >= 2:
        return 0.87
    return 0.88


# Weight formats whose TensorRT-LLM checkpoints carry an FP8 KV cache: NVIDIA ModelOpt's FP8 and
# NVFP4 recipes quantise the KV cache to FP8 (the shared calibration README: "the KV cache is FP8
# where the table says so", as in every FP8 row of TensorRT-LLM's perf overview). vLLM and SGLang
# keep "auto" = the activations' 16-bit dtype unless told (vLLM --kv-cache-dtype auto).
TRTLLM_FP8_KV_PRECISIONS = ("fp8", "nvfp4", "fp4", "mxfp4")


def default_kv_dtype(kind: str, kv_cache_dtype: str, precision: str) -> str:
    """The KV-cache dtype an engine really runs: ``auto`` is each engine's own default."""
    if kv_cache_dtype == "auto" and kind == "trtllm" and precision in TRTLLM_FP8_KV_PRECISIONS:
        return "fp8"
    return kv_cache_dtype


def kv_cache_dtype(eng: S.VllmEngine, precision: str) -> str:
    return default_kv_dtype(eng.kind, eng.kv_cache_dtype, precision)


def async_scheduling(eng: S.VllmEngine) -> bool:
    """Whether the engine plans step n+1 while step n runs (``engine.async_scheduling``; left
    out: its release's default, :data:`stacksim.catalog.versions.ASYNC_SCHEDULING_FROM`)."""
    if eng.async_scheduling is not None:
        return eng.async_scheduling
    return versions.async_scheduling_default(eng.kind, eng.version)


def concrete(eng: S.VllmEngine, acc: Accelerator, tp: int, precision: str | None = None) -> S.VllmEngine:
    """The engine with every setting the profile leaves to start-up rules filled in."""
    if precision is not None and kv_cache_dtype(eng, precision) != eng.kv_cache_dtype:
        eng = eng.model_copy(update={"kv_cache_dtype": kv_cache_dtype(eng, precision)})
    if isinstance(eng, S.SglangEngine):
        update: dict[str, object] = {}
        if eng.max_num_batched_tokens is None:
            update["max_num_batched_tokens"] = sglang_chunked_prefill_size(acc)
        if eng.gpu_memory_utilization is None:
            update["gpu_memory_utilization"] = sglang_mem_fraction_static(tp)
        return eng.model_copy(update=update) if update else eng
    return eng


def of_free_memory(eng: S.VllmEngine) -> bool:
    """TensorRT-LLM's KV share is of the memory left free after weights (KvCacheConfig.
    free_gpu_memory_fraction); vLLM's and SGLang's is of the whole GPU."""
    return eng.kind == "trtllm"


def trtllm_bench_settings(kv_max_requests: float, isl: int, osl: int, pp: int) -> tuple[int, int]:
    """(max_batch_size, max_num_tokens) that ``trtllm-bench throughput`` builds with for a
    fixed-length data set: NVIDIA/TensorRT-LLM tensorrt_llm/bench/build/tuning.py,
    ``finetune_setting``. The batch is the requests the KV cache holds at isl + osl tokens (at
    most 4096, per pipeline stage), rounded up "slightly optimistically"; the token budget is
    that batch times (1 + isl/osl), the steady state's prefill plus decode tokens per step, at
    least 2048 and at most 32768, rounded up."""
    raw_bs = min(kv_max_requests, 4096) / pp
    raw_token = min(raw_bs * (1 + isl / osl), 32768)
    if raw_bs < 256:
        max_bs = max(64, 32 * math.ceil(raw_bs / 32))
    elif raw_bs < 1024:
        max_bs = 128 * math.ceil(raw_bs / 128)
    else:
        max_bs = 256 * math.ceil(raw_bs / 256)
    if raw_token < 4096:
        max_token = max(2048, 256 * math.ceil(raw_token / 256))
    elif raw_token < 8192:
        max_token = 512 * math.ceil(raw_token / 512)
    else:
        max_token = 1024 * math.ceil(raw_token / 1024)
    return max_bs, max_token


# trtllm-bench runs of the perf overview: "In many cases, we also use a higher KV cache percentage
# by setting --kv_cache_free_gpu_mem_fraction 0.95" (docs/source/performance/perf-overview.md).
TRTLLM_BENCH_KV_FRACTION = 0.95


def trtllm_bench_engine(model: ModelArch, acc: Accelerator, tp: int, pp: int, precision: str, kv_cache_dtype: str,
                        isl: int, osl: int) -> dict[str, float]:
    """The engine settings ``trtllm-bench throughput`` would use for fixed isl/osl requests, in
    stacksim's field names: its own estimate of the requests the KV cache holds (tuning.py,
    ``calc_engine_setting``: all GPUs' memory less the weights, 0.95 of it, at least one KV head
    per TP rank), then :func:`trtllm_bench_settings`. Its max_batch_size is per pipeline
    micro-batch, so the scheduler's limits are pp times it."""
    kv_bytes = 1.0 if kv_cache_dtype == "fp8" else 2.0
    per_token = 2 * model.num_layers * max(tp, model.num_kv_heads) * model.head_dim * kv_bytes
    free = acc.memory_gb * GIB * tp * pp - model.params_total_b * 1e9 * WEIGHT_BYTES[precision]
    kv_requests = max(free, 0.0) * TRTLLM_BENCH_KV_FRACTION / (per_token * (isl + osl))
    max_bs, max_tokens = trtllm_bench_settings(kv_requests, isl, osl, pp)
    return {"max_num_seqs": max_bs * pp, "max_num_batched_tokens": max_tokens * pp,
            "gpu_memory_utilization": TRTLLM_BENCH_KV_FRACTION}
