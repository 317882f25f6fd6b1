"""From (model, accelerator, parallelism, precision) to the cost kernel's parameter vector and
the replica's memory plan (how many KV blocks fit).

Constants carry their source next to them. They are first-principles defaults; the calibration
issue (#3) replaces the efficiency factors with values fitted to measurements.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from stacksim.catalog import Accelerator, ModelArch
from stacksim.kernels import cost as K

GIB = 1024**3

# Bytes per weight, including quantisation scales.
#  int4 AWQ/GPTQ: 4-bit weights + fp16 scale and zero per group of 128 -> 4.25 bits
#    (Lin et al., "AWQ", MLSys 2024; Frantar et al., "GPTQ", ICLR 2023: group size 128).
#  NVFP4: 4-bit E2M1 + one FP8 scale per 16 values -> 4.5 bits (NVIDIA, "Introducing NVFP4", 2025).
#  MXFP4: 4-bit E2M1 + one E8M0 scale per 32 values -> 4.25 bits (OCP Microscaling spec v1.0).
WEIGHT_BYTES = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4_awq": 4.25 / 8,
    "int4_gptq": 4.25 / 8,
    "nvfp4": 4.5 / 8,
    "fp4": 4.5 / 8,
    "mxfp4": 4.25 / 8,
}

# The tensor-core precision the matmuls run in: W8A8/FP8 and FP4 use low-precision tensor cores
# where the accelerator has them; weight-only formats (AWQ/GPTQ W4A16) dequantise to bf16.
# Without FP8/FP4 units (e.g. A100), vLLM runs such checkpoints weight-only (Marlin kernels), so
# compute falls back to bf16 while the bytes stay small (vLLM docs, "FP8 W8A16 on Ampere").
COMPUTE_PRECISION = {
    "bf16": "bf16",
    "fp16": "bf16",
    "fp8": "fp8",
    "int8": "int8",
    "int4_awq": "bf16",
    "int4_gptq": "bf16",
    "nvfp4": "fp4",
    "fp4": "fp4",
    "mxfp4": "fp4",
}

ACT_BYTES = 2.0  # activations stay bf16 on the wire and in all-reduces

# Efficiency defaults (to be fitted in calibration/):
# - Matmul ceiling: measured max achievable matmul / dense peak where gpu_specs.csv has it
#   (H100 794.5/989 = 0.80, B200 1745/2250 = 0.78, MI300X 668/1300 = 0.51); else 0.75, the
#   median of the NVIDIA rows.
DEFAULT_EFF_MAX = 0.75
# - Half-saturation tokens: Vidur's H100 profile of Llama-2-7B mlp_up_proj (TP1) reaches half
#   its large-batch efficiency near 128 tokens (shared/calibration/raw/vidur/.../h100/
#   meta-llama/Llama-2-7b-hf/mlp.csv: 0.18 of peak at 64 tokens, 0.28 at 144, 0.73 at 1024).
EFF_HALF_TOKENS = 128.0
# - Memory: the same profile at 1 token moves 180 MB of weights in 64 us = 2.82 TB/s = 0.84
#   of the H100's 3.35 TB/s.
EFF_MEM = 0.84
# - Attention kernels (FlashAttention-2 forward on H100 reaches ~35-50% of peak: Dao 2023,
#   "FlashAttention-2", fig. 7, 335 TFLOPS of 989 for head dim 128 => 0.34).
EFF_ATTN = 0.34
# - Per-step overhead: vLLM CI latency runs of Llama-3.1-8B, batch 8, 32 in / 128 out
#   (shared/calibration/vllm_published.csv) take 7.8 ms/step on H100 and 6.5 ms on H200, about
#   2-2.5 ms above the memory roofline of the 16 GB of weights: scheduling, sampling, launch.
STEP_OVERHEAD_S = 0.002
# - NCCL all-reduce of a small message over NVLink: 0.02-0.03 ms median (Vidur network profile,
#   shared/calibration/raw/vidur/data/profiling/network/h100_pairwise_nvlink/all_reduce.csv).
COLLECTIVE_LATENCY_S = 20e-6

# Activation memory reserved by the engine's profiling run for a step of max_num_batched_tokens
# (vLLM profiles a dummy forward pass at that size): the widest intermediate is the gated MLP
# (2 * intermediate / tp values per token) plus a few hidden-size buffers, in bf16, and fp32
# logits for max_num_seqs sampled sequences.
ACT_HIDDEN_BUFFERS = 4


class DoesNotFit(ValueError):
    """A deployment whose weights and activations exceed its GPUs' memory (message has numbers)."""


@dataclass(frozen=True)
class MemoryPlan:
    gpus_per_replica: int
    memory_per_gpu_gb: float
    usable_per_gpu_gb: float
    weights_per_gpu_gb: float
    activations_per_gpu_gb: float
    overhead_per_gpu_gb: float
    kv_per_gpu_gb: float
    kv_bytes_per_token_per_gpu: float
    num_blocks: int
    block_size: int

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size


def kv_bytes_per_token_per_gpu(model: ModelArch, tp: int, pp: int, kv_dtype_bytes: float) -> float:
    layers = math.ceil(model.num_layers / pp)
    if model.attention == "mla":
        # MLA caches one latent per token, replicated on every TP rank (not sharded by heads).
        return layers * model.kv_values_per_token_per_layer() * kv_dtype_bytes
    # KV heads are sharded over TP ranks; with more ranks than KV heads they are replicated.
    heads_per_gpu = max(1.0, model.num_kv_heads / tp)
    return layers * 2 * heads_per_gpu * model.head_dim * kv_dtype_bytes


def memory_plan(
    model: ModelArch,
    acc: Accelerator,
    tp: int,
    pp: int,
    precision: str,
    kv_cache_dtype: str,
    block_size: int,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    runtime_overhead_gb: float,
) -> MemoryPlan:
    """Memory per GPU, and the KV blocks that fit after weights, activations and overhead."""
    gpus = tp * pp
    weight_bytes = model.params_total_b * 1e9 * WEIGHT_BYTES[precision] / gpus
    inter = model.intermediate_size
    act = max_num_batched_tokens * (2 * inter / tp + ACT_HIDDEN_BUFFERS * model.hidden_size) * ACT_BYTES
    act += max_num_seqs * model.vocab_size * 4.0 / tp
    mem = acc.memory_gb * GIB
    usable = mem * gpu_memory_utilization
    overhead = runtime_overhead_gb * GIB
    kv_room = usable - weight_bytes - act - overhead
    kv_dtype_bytes = 1.0 if kv_cache_dtype == "fp8" else 2.0  # "auto": bf16 KV even for quantised weights
    per_token = kv_bytes_per_token_per_gpu(model, tp, pp, kv_dtype_bytes)
    blocks = int(kv_room // (per_token * block_size)) if kv_room > 0 else 0
    plan = MemoryPlan(
        gpus_per_replica=gpus,
        memory_per_gpu_gb=mem / GIB,
        usable_per_gpu_gb=usable / GIB,
        weights_per_gpu_gb=weight_bytes / GIB,
        activations_per_gpu_gb=act / GIB,
        overhead_per_gpu_gb=overhead / GIB,
        kv_per_gpu_gb=max(0.0, kv_room) / GIB,
        kv_bytes_per_token_per_gpu=per_token,
        num_blocks=blocks,
        block_size=block_size,
    )
    if blocks <= 0:
        raise DoesNotFit(
            f"{model.id} in {precision} does not fit on {gpus} x {acc.id} (tp={tp}, pp={pp}): per GPU "
            f"{plan.usable_per_gpu_gb:.1f} GiB usable ({acc.memory_gb:g} GiB x gpu_memory_utilization "
            f"{gpu_memory_utilization:g}) but weights take {plan.weights_per_gpu_gb:.1f} GiB, activations "
            f"{plan.activations_per_gpu_gb:.1f} GiB and runtime overhead {plan.overhead_per_gpu_gb:.1f} GiB, "
            f"leaving nothing for the KV cache. Raise tensor_parallel/pipeline_parallel, use a smaller "
            f"precision (fp8, int4_awq) or a larger accelerator."
        )
    return plan


def compute_precision(acc: Accelerator, precision: str) -> str:
    cp = COMPUTE_PRECISION[precision]
    if cp == "fp4" and not acc.supports("fp4"):
        cp = "fp8" if acc.supports("fp8") else "bf16"
    if cp in ("fp8", "int8") and not acc.supports(cp):
        cp = "bf16"
    return cp


PARAMS_FILE = Path(__file__).resolve().parents[1] / "calibration" / "params_v1.json"


@lru_cache(maxsize=1)
def calibrated_parameters() -> dict[str, float]:
    """The fitted parameters (``make calibrate`` writes them; see calibration/REPORT.md)."""
    return dict(json.loads(PARAMS_FILE.read_text())["parameters"])


def engine_family(engine_kind: str, acc: Accelerator) -> str:
    """Which fitted profile applies: vLLM on AMD GPUs (ROCm kernels) is its own family."""
    if engine_kind == "vllm" and acc.vendor.strip().lower() == "amd":
        return "vllm-rocm"
    return engine_kind


def apply_calibration(p: np.ndarray, params: dict[str, float], family: str, fp8_compute: bool) -> np.ndarray:
    """Replace the first-principles efficiencies of ``p`` by fitted ones (shared + per engine)."""
    q = p.copy()
    q[K.EFF_MAX] = min(1.0, q[K.EFF_MAX] * params[f"eff_scale_{family}"])
    q[K.EFF_HALF_TOKENS] = params["t_half"]
    q[K.EFF_MEM] = params[f"eff_mem_{family}"]
    q[K.EFF_ATTN] = params["eff_attn"]
    if fp8_compute:
        q[K.PEAK_FLOPS] *= params["fp8_eff"]
    q[K.STEP_OVERHEAD_S] = params[f"overhead_{family}"]
    return q


def cost_params(
    model: ModelArch,
    acc: Accelerator,
    tp: int,
    pp: int,
    precision: str,
    kv_cache_dtype: str,
    calibration: str = "first_principles",
    engine_kind: str = "vllm",
) -> np.ndarray:
    """The parameter vector of :func:`stacksim.kernels.cost.step_time` for one replica.

    ``calibration="calibrated"`` applies the fitted efficiencies of the engine's family
    (``stacksim/calibration/params_v1.json``); ``"first_principles"`` keeps the sourced
    constants above (the calibration fit starts from those).
    """
    p = _first_principles(model, acc, tp, pp, precision, kv_cache_dtype)
    if calibration == "calibrated":
        p = apply_calibration(p, calibrated_parameters(), engine_family(engine_kind, acc), compute_precision(acc, precision) == "fp8")
    return p


def _first_principles(model: ModelArch, acc: Accelerator, tp: int, pp: int, precision: str, kv_cache_dtype: str) -> np.ndarray:
    p = np.zeros(K.N_PARAMS)
    stage = 1.0 / (tp * pp)  # share of the layer stack's work on one GPU
    wbytes = WEIGHT_BYTES[precision]
    active_nonembed = model.active_nonembedding_params
    p[K.LIN_FLOPS_PER_TOKEN] = 2.0 * active_nonembed * stage
    # The LM head runs on the last stage only; spread over stages it keeps pp*stage time right.
    p[K.LMHEAD_FLOPS_PER_LOGIT] = 2.0 * model.hidden_size * model.vocab_size * stage
    p[K.ATTN_FLOPS_PER_PAIR] = model.attention_flops_per_pair() * stage
    expert_total = model.expert_params
    dense_params = model.params_total_b * 1e9 - expert_total
    if not model.tied_embeddings:
        dense_params -= model.vocab_size * model.hidden_size  # input embedding: only rows are read
    p[K.DENSE_WEIGHT_BYTES] = max(0.0, dense_params) * wbytes * stage
    if model.is_moe and expert_total > 0:
        p[K.EXPERT_BYTES] = expert_total / model.num_experts * wbytes * stage
        p[K.NUM_EXPERTS] = model.num_experts
        p[K.EXPERTS_PER_TOKEN] = model.experts_per_token
    else:
        p[K.NUM_EXPERTS] = 1.0
        p[K.EXPERTS_PER_TOKEN] = 1.0
    kv_dtype_bytes = 1.0 if kv_cache_dtype == "fp8" else 2.0
    p[K.KV_BYTES_PER_TOKEN] = kv_bytes_per_token_per_gpu(model, tp, pp, kv_dtype_bytes)
    cp = compute_precision(acc, precision)
    p[K.PEAK_FLOPS] = acc.peak_tflops(cp) * 1e12
    p[K.MEM_BW] = acc.memory_bandwidth_tbps * 1e12
    if acc.measured_matmul_bf16_tflops and acc.peak_bf16_tflops:
        p[K.EFF_MAX] = min(1.0, acc.measured_matmul_bf16_tflops / acc.peak_bf16_tflops)
    else:
        p[K.EFF_MAX] = DEFAULT_EFF_MAX
    p[K.EFF_HALF_TOKENS] = EFF_HALF_TOKENS
    p[K.EFF_ATTN] = EFF_ATTN
    p[K.EFF_MEM] = EFF_MEM
    p[K.STEP_OVERHEAD_S] = STEP_OVERHEAD_S
    p[K.TP] = tp
    p[K.ALLREDUCE_BYTES_PER_TOKEN] = model.hidden_size * ACT_BYTES
    p[K.NUM_ALLREDUCES] = 2.0 * math.ceil(model.num_layers / pp)
    p[K.LINK_BW] = acc.interconnect_bandwidth_gbps * 1e9
    p[K.COLLECTIVE_LATENCY_S] = COLLECTIVE_LATENCY_S
    p[K.PP] = pp
    return p
