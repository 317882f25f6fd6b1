"""From (model, accelerator, parallelism, precision) to the cost kernel's parameter vector and
the replica's memory plan (how many KV blocks fit).

Constants carry their source next to them. They are first-principles defaults; the calibration
issue (#3) replaces the efficiency factors with values fitted to measurements.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from stacksim.catalog import Accelerator, ModelArch, versions
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

# Tensor-core paths below bf16, whose achieved share of the datasheet rate is the fitted
# ``fp8_eff``. The measurements hold FP8 only; FP4 is assumed to reach the same share of its own
# datasheet rate (checked against TensorRT-LLM's B200/GB200 FP4 figures, calibration/REPORT.md).
LOW_PRECISION = ("fp8", "fp4")

# Efficiency defaults (to be fitted in calibration/):
# - Matmul ceiling: measured max achievable matmul / dense peak where gpu_specs.csv has it
#   (H100 794.5/989 = 0.80, B200 1745/2250 = 0.78, MI300X 668/1300 = 0.51); else 0.75, the
#   median of the NVIDIA rows.
DEFAULT_EFF_MAX = 0.75
# - Half-saturation tokens: 16, the M dimension of the tensor cores' smallest matrix-multiply
#   instruction (PTX ISA, mma.sync.m16n8k16, Ampere and Hopper): a step of fewer tokens leaves
#   part of every tile empty. Not the 128 that Vidur's H100 profile of Llama-2-7B mlp_up_proj
#   suggests (shared/calibration/raw/vidur/.../h100/meta-llama/Llama-2-7b-hf/mlp.csv: 0.18 of peak
#   at 64 tokens, 0.28 at 144, 0.73 at 1024): those small-batch times are the weights' memory
#   time, which the memory term already counts; a large half-saturation on top made the compute
#   term a floor above it (2 x params x T_half / peak), 2-3x the memory time on low-FLOPS GPUs
#   (A10G, L4 decode of an 8B model). Held fixed in the calibration: with it free the fit found
#   ~100 and the held-out error moved by 0.1 points, so the data do not pin it.
EFF_HALF_TOKENS = 16.0
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
# - It grows with the group: median time of all-reduces of <= 16 KiB (decode-sized messages) in
#   Vidur's profiles (shared/calibration/raw/vidur/data/profiling/network/{a100_dgx,h100_dgx,
#   a100_pairwise_nvlink,h100_pairwise_nvlink}/all_reduce.csv, rank 0), averaged over the four
#   machines that have that group size: 2 GPUs 44.5/7/28/26 us -> 26 us; 4 GPUs 32.5/38/28/62.5
#   -> 40 us; 8 GPUs 62.5/30 -> 46 us. Larger groups (16 GPUs: 68 us on A100 DGX, across nodes)
#   keep the 8-GPU figure within a scale-up domain.
COLLECTIVE_LATENCY_BY_GROUP_S = {1: COLLECTIVE_LATENCY_S, 2: 26e-6, 4: 40e-6, 8: 46e-6}


def collective_latency_s(group: int) -> float:
    """Fixed cost of one small collective among ``group`` GPUs (table above; between the profiled
    sizes, the next larger one)."""
    for g in sorted(COLLECTIVE_LATENCY_BY_GROUP_S):
        if group <= g:
            return COLLECTIVE_LATENCY_BY_GROUP_S[g]
    return COLLECTIVE_LATENCY_BY_GROUP_S[8]

# Activation memory reserved by the engine's profiling run for a step of max_num_batched_tokens
# (vLLM profiles a dummy forward pass at that size): the widest intermediate is the gated MLP
# (2 * intermediate / tp values per token) plus a few hidden-size buffers, in bf16, and fp32
# logits for max_num_seqs sampled sequences.
ACT_HIDDEN_BUFFERS = 4


class DoesNotFit(ValueError):
    """A deployment whose weights and activations exceed its GPUs' memory (message has numbers)."""


# --------------------------------------------------------------------------- speculative decoding


class SpeculationError(ValueError):
    """A speculative-decoding setting that cannot work; ``path`` is relative to the deployment."""

    def __init__(self, path: tuple[str, ...], message: str):
        super().__init__(message)
        self.path = path


def expected_tokens_per_step(acceptance: float, k: int) -> float:
    """Tokens a sequence emits per speculative decode step on average: with k proposed tokens,
    each accepted with probability a (independently), E = (1 - a^(k+1)) / (1 - a) (Leviathan,
    Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding", ICML 2023,
    eq. 1): the accepted prefix, plus the target's own token after it."""
    if not 0.0 <= acceptance < 1.0 or k < 1:
        raise ValueError(f"need 0 <= acceptance < 1 and k >= 1; got {acceptance}, {k}")
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


def mtp_layer(model: ModelArch) -> ModelArch:
    """The multi-token-prediction module of ``model`` as a one-layer model: one more decoder layer
    shaped like the model's own, sharing its embedding and output head. DeepSeek-V3's MTP module
    is exactly that (README_WEIGHTS.md: "Additional Transformer Hidden Layer ... structure
    identical to the Main Model hidden layers"; embed_tokens and shared_head share the main
    model's parameters; 11.5B unique parameters, 1.5B activated including the 0.9B head). One
    layer of the 671B model here is (671B - 1.85B embeddings) / 61 = 10.97B, 0.58B active
    (README: 1.5B - 0.9B), so the layer-average matches to 5%."""
    emb = model.embedding_params / 1e9
    per_layer = (model.params_total_b - emb) / model.num_layers
    per_layer_active = model.active_nonembedding_params / 1e9 / model.num_layers
    return replace(model, id=f"{model.id} MTP layer", num_layers=1, params_total_b=per_layer + emb,
                   params_active_b=per_layer_active + emb, active_excludes_input_embedding=False)


@dataclass(frozen=True)
class Speculation:
    """A deployment's speculative decoding, resolved (see ``engine.speculative``).

    ``proposer`` is the model whose forward passes propose tokens (the draft model, or the MTP
    layer); None for n-gram lookup. ``proposer_params_b`` are the parameters it adds to the
    GPUs' memory (the MTP layer shares the embedding and head, so they are not counted again).
    """

    method: str
    k: int
    acceptance: float
    proposer: ModelArch | None
    proposer_params_b: float

    @property
    def tokens_per_step(self) -> float:
        return expected_tokens_per_step(self.acceptance, self.k)


def speculation(method: str, k: int, acceptance: float, model: ModelArch, draft: ModelArch | None, tp: int, pp: int,
                max_model_len: int) -> Speculation:
    """Check and resolve a deployment's speculative decoding; raises :class:`SpeculationError`.

    vLLM runs the draft model with the target's tensor parallelism by default
    (``draft_tensor_parallel_size``), and its speculative decoding "is not compatible with
    pipeline parallelism" (vLLM docs, Speculative Decoding, v0.7-v0.9).
    """
    if pp > 1:
        raise SpeculationError(("pipeline_parallel",), f"speculative decoding needs pipeline_parallel: 1 (vLLM "
                               f"cannot combine them); got {pp}. Use tensor_parallel instead, or drop engine.speculative")
    if method == "draft_model":
        assert draft is not None
        where = ("engine", "speculative", "draft_model")
        if draft.vocab_size != model.vocab_size:
            raise SpeculationError(where, f"the draft model must share the target's tokenizer: {draft.id} has a "
                                   f"vocabulary of {draft.vocab_size}, {model.id} of {model.vocab_size}")
        if draft.num_attention_heads % tp:
            raise SpeculationError(where, f"the draft runs with the target's tensor_parallel {tp}, which does not "
                                   f"divide {draft.id}'s {draft.num_attention_heads} attention heads")
        if draft.max_context < max_model_len:
            raise SpeculationError(where, f"{draft.id}'s context ({draft.max_context}) is shorter than max_model_len "
                                   f"{max_model_len}; set engine.max_model_len <= {draft.max_context}")
        return Speculation(method, k, acceptance, draft, draft.params_total_b)
    if method == "mtp":
        layer = mtp_layer(model)
        return Speculation(method, k, acceptance, layer, layer.params_total_b - model.embedding_params / 1e9)
    return Speculation(method, k, acceptance, None, 0.0)


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
    # Speculative decoding: the proposer's weights and its KV per token (draft model, MTP layer).
    proposer_weights_per_gpu_gb: float = 0.0
    proposer_kv_bytes_per_token_per_gpu: float = 0.0
    # Multi-LoRA: the GPU adapter slots vLLM pre-allocates (max_loras x max_lora_rank; serving/lora.py).
    lora_slots_per_gpu_gb: float = 0.0

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
    spec: Speculation | None = None,
    lora_bytes_per_gpu: float = 0.0,
    of_free_memory: bool = False,
    dp: int = 1,
    ep: int = 1,
) -> MemoryPlan:
    """Memory per GPU, and the KV blocks that fit after weights, activations and overhead.

    ``gpu_memory_utilization`` is vLLM's and SGLang's share of the whole GPU; with
    ``of_free_memory`` it is TensorRT-LLM's ``free_gpu_memory_fraction``, a share of what is left
    after weights, activations and runtime overhead.

    ``lora_bytes_per_gpu``: the LoRA adapter slots (``serving/lora.py``), taken before the KV cache.

    With speculative decoding the proposer's weights (draft model or MTP layer, in the
    deployment's precision, sharded like the target) share the GPUs, and every block holds the
    proposer's KV for its tokens next to the target's (vLLM gives the draft model its own KV
    cache with the same blocks), so fewer blocks fit.

    With attention data parallelism (``dp``) and expert parallelism (``ep`` = dp x tp) a replica has
    tp x pp x dp GPUs: each holds its rank's dense weights and 1/ep of the routed experts, and the
    KV of its rank's sequences; the figures are per GPU, averaged over ranks.
    """
    gpus = tp * pp * dp
    if ep > 1 and model.expert_params > 0:
        expert = model.expert_params * WEIGHT_BYTES[precision]
        weight_bytes = (model.params_total_b * 1e9 * WEIGHT_BYTES[precision] - expert) / (tp * pp) + expert / (ep * pp)
    else:
        weight_bytes = model.params_total_b * 1e9 * WEIGHT_BYTES[precision] / (tp * pp)
    kv_dtype_bytes = 1.0 if kv_cache_dtype == "fp8" else 2.0  # "auto": bf16 KV even for quantised weights
    prop_weights = 0.0
    prop_per_token = 0.0
    if spec is not None and spec.proposer is not None:
        prop_weights = spec.proposer_params_b * 1e9 * WEIGHT_BYTES[precision] / tp
        prop_per_token = kv_bytes_per_token_per_gpu(spec.proposer, tp, 1, kv_dtype_bytes)
    inter = model.intermediate_size
    act = max_num_batched_tokens * (2 * inter / tp + ACT_HIDDEN_BUFFERS * model.hidden_size) * ACT_BYTES
    act += max_num_seqs * model.vocab_size * 4.0 / tp
    mem = acc.memory_gb * GIB
    overhead = runtime_overhead_gb * GIB
    if of_free_memory:
        taken = weight_bytes + act + overhead + prop_weights + lora_bytes_per_gpu
        usable = taken + gpu_memory_utilization * max(0.0, mem - taken)
    else:
        usable = mem * gpu_memory_utilization
    kv_room = usable - weight_bytes - act - overhead - prop_weights - lora_bytes_per_gpu
    per_token = kv_bytes_per_token_per_gpu(model, tp, pp, kv_dtype_bytes) / dp  # a token's KV lives on one rank
    blocks = int(kv_room // ((per_token + prop_per_token) * block_size)) if kv_room > 0 else 0
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
        proposer_weights_per_gpu_gb=prop_weights / GIB,
        proposer_kv_bytes_per_token_per_gpu=prop_per_token,
        lora_slots_per_gpu_gb=lora_bytes_per_gpu / GIB,
    )
    if blocks <= 0:
        draft = (f", the {spec.method} proposer's {plan.proposer_weights_per_gpu_gb:.1f} GiB"
                 if spec is not None and spec.proposer is not None else "")
        if lora_bytes_per_gpu > 0:
            draft += f", LoRA adapter slots {plan.lora_slots_per_gpu_gb:.1f} GiB"
        usable = (f"{acc.memory_gb:g} GiB, of which the KV cache may take {gpu_memory_utilization:g} of what is left "
                  f"(free_gpu_memory_fraction)" if of_free_memory else
                  f"{plan.usable_per_gpu_gb:.1f} GiB usable ({acc.memory_gb:g} GiB x gpu_memory_utilization "
                  f"{gpu_memory_utilization:g})")
        raise DoesNotFit(
            f"{model.id} in {precision} does not fit on {gpus} x {acc.id} (tp={tp}, pp={pp}): per GPU "
            f"{usable} but weights take {plan.weights_per_gpu_gb:.1f} GiB{draft}, activations "
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


_OVERRIDE: list[dict[str, float]] = []


@lru_cache(maxsize=1)
def _file_parameters() -> dict[str, float]:
    return dict(json.loads(PARAMS_FILE.read_text())["parameters"])


def calibrated_parameters() -> dict[str, float]:
    """The fitted parameters (``make calibrate`` writes them; see calibration/REPORT.md), or the
    ones a calibration run is trying (:func:`override_parameters`)."""
    return _OVERRIDE[-1] if _OVERRIDE else _file_parameters()


@contextmanager
def override_parameters(params: dict[str, float]) -> Iterator[None]:
    """Resolve scenarios with ``params`` instead of the fitted file inside the block: the modern
    calibration simulates whole serving runs at trial parameters (calibration/modern.py)."""
    _OVERRIDE.append(dict(params))
    try:
        yield
    finally:
        _OVERRIDE.pop()


def engine_family(engine_kind: str, acc: Accelerator, version: str | None = None) -> str:
    """Which fitted profile applies: the engine's version band (catalog/versions.py); vLLM and
    SGLang on AMD GPUs (ROCm kernels, measured in 2024) are their own family whatever the version."""
    if engine_kind == "vllm" and acc.vendor.strip().lower() == "amd":
        return "vllm-rocm"
    if engine_kind == "sglang" and acc.vendor.strip().lower() == "amd":
        return "sglang-rocm"
    return versions.band(engine_kind, version).family


# SGLang runs the same kinds of kernels as vLLM (FlashInfer / Triton attention, the same GEMM
# libraries); what the measurements separate is its per-step overhead (calibration/fit.py). Its
# compute and memory efficiencies are vLLM's of the same era on the same vendor.
KERNELS_OF = {"sglang": "vllm", "sglang-rocm": "vllm-rocm", "sglang-0.5": "vllm-v1"}
# Families with no measurement of their own borrow a neighbour's profile (catalog/versions.py says
# which and why) ...
PROFILE_OF = {"sglang-0.5": "vllm-v1", "trtllm-1": "vllm-v1", "sglang-rocm": "sglang"}
# ... except the compute side (matmul and attention efficiency), which TensorRT-LLM 1.x keeps from
# its own max-load tables (the held-out TensorRT-LLM 1.x perf overview and NIM's TensorRT-LLM
# serving figures: calibration/REPORT.md).
COMPUTE_OF = {"trtllm-1": "trtllm"}


def link_class(acc: Accelerator) -> str:
    """``pcie`` for accelerators whose GPUs talk over PCIe only; ``scaleup`` for NVLink, Infinity
    Fabric, ICI and other scale-up fabrics. The two get their own fitted all-reduce efficiency."""
    return "pcie" if acc.interconnect.strip().lower().startswith("pcie") else "scaleup"


def apply_calibration(p: np.ndarray, params: dict[str, float], family: str, fp8_compute: bool,
                      link: str = "scaleup") -> np.ndarray:
    """Replace the first-principles efficiencies of ``p`` by fitted ones (shared + per engine).
    ``link``: the accelerator's :func:`link_class`, whose all-reduce efficiency applies."""
    q = p.copy()
    # Tensor-parallel all-reduces: the achieved share of the link's bandwidth (fitted; parameter
    # files before v2 lack it and keep the datasheet figure).
    q[K.LINK_BW] *= params.get(f"link_eff_{link}", 1.0)
    kern = KERNELS_OF.get(family, family)
    if f"eff_scale_{kern}" not in params:
        kern = PROFILE_OF.get(kern, kern)
    ckern = COMPUTE_OF.get(family, kern)
    q[K.EFF_MAX] = min(1.0, q[K.EFF_MAX] * params[f"eff_scale_{ckern}"])
    q[K.EFF_HALF_TOKENS] = params["t_half"]
    q[K.EFF_MEM] = params[f"eff_mem_{kern}"]
    q[K.EFF_ATTN] = params.get(f"eff_attn_{ckern}", params["eff_attn"])
    # Engine-specific kernels of a later generation (fitted where the data separate them; absent
    # keys keep the first-principles 1.0): grouped MoE GEMMs' share of the dense GEMM rate, and the
    # small all-reduce's latency against NCCL's (vLLM's custom all-reduce, CUDA graphs).
    q[K.EFF_MOE] = params.get(f"eff_moe_{kern}", 1.0)
    # FP8 grouped kernels (per-token dynamic activation scales) stream their weights unlike BF16 ones.
    mem_key = f"eff_moe_mem_fp8_{kern}" if fp8_compute else f"eff_moe_mem_{kern}"
    q[K.EFF_MOE_MEM] = params.get(mem_key, 1.0)
    q[K.EFF_KV] = params.get(f"eff_kv_{kern}", 1.0)
    q[K.LINK_BW] *= params.get(f"link_eff_{kern}", 1.0)  # a later all-reduce's share, relative to the shared fit
    q[K.COLLECTIVE_LATENCY_S] *= params.get(f"allreduce_scale_{kern}", 1.0)
    if fp8_compute:
        q[K.PEAK_FLOPS] *= params.get(f"fp8_eff_{kern}", params["fp8_eff"])
    fam = family if f"overhead_{family}" in params else PROFILE_OF.get(family, family)
    q[K.STEP_OVERHEAD_S] = params[f"overhead_{fam}"]
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
    spec: Speculation | None = None,
    dp: int = 1,
    ep: int = 1,
    engine_version: str | None = None,
) -> np.ndarray:
    """The parameter vector of :func:`stacksim.kernels.cost.step_time` for one replica.

    ``calibration="calibrated"`` applies the fitted efficiencies of the engine's family
    (``stacksim/calibration/params_v1.json``); ``"first_principles"`` keeps the sourced
    constants above (the calibration fit starts from those).

    With ``spec``, the speculative-decoding slots are set (see :func:`stacksim.kernels.cost.
    spec_step_time`): k, the expected tokens per step, and the proposer's own step parameters
    (same accelerator, tensor parallelism, precision and calibration as the target) with no
    step overhead: its passes run inside the target's engine step, whose scheduling and
    sampling overhead is counted once.
    """
    p = _params(model, acc, tp, pp, precision, kv_cache_dtype, calibration, engine_kind, dp, ep, engine_version)
    if spec is not None:
        p[K.SPEC_K] = spec.k
        p[K.SPEC_TOKENS] = spec.tokens_per_step
        if spec.proposer is not None:
            d = _params(spec.proposer, acc, tp, 1, precision, kv_cache_dtype, calibration, engine_kind, engine_version=engine_version)
            d[K.STEP_OVERHEAD_S] = 0.0
            p[K.SPEC_PROPOSER] = 1.0
            p[K.PROPOSER : K.PROPOSER + K.N_STEP_PARAMS] = d[: K.N_STEP_PARAMS]
    return p


def _params(model: ModelArch, acc: Accelerator, tp: int, pp: int, precision: str, kv_cache_dtype: str,
            calibration: str, engine_kind: str, dp: int = 1, ep: int = 1, engine_version: str | None = None) -> np.ndarray:
    p = _first_principles(model, acc, tp, pp, precision, kv_cache_dtype, dp, ep)
    if calibration == "calibrated":
        p = apply_calibration(p, calibrated_parameters(), engine_family(engine_kind, acc, engine_version), compute_precision(acc, precision) in LOW_PRECISION,
                              link_class(acc))
    return p


def _first_principles(model: ModelArch, acc: Accelerator, tp: int, pp: int, precision: str, kv_cache_dtype: str,
                      dp: int = 1, ep: int = 1) -> np.ndarray:
    """Per-GPU step parameters. With expert parallelism (``ep`` = ``dp`` x ``tp`` GPUs hold 1/ep of
    the routed experts each) and attention data parallelism (``dp`` ranks of ``tp`` GPUs, each
    with its own sequences), the per-token quantities are per replica token on one GPU."""
    p = np.zeros(K.N_PARAMS)
    stage = 1.0 / (tp * pp)  # share of the layer stack's work on one GPU
    wbytes = WEIGHT_BYTES[precision]
    active_nonembed = model.active_nonembedding_params
    expert_total = model.expert_params
    moe = model.is_moe and expert_total > 0
    expert_one = expert_total / model.num_experts if moe else 0.0
    if ep > 1 and moe:
        # A rank runs the dense and attention work of its 1/dp of the tokens; the routed experts'
        # work of all tokens is spread over the ep GPUs.
        expert_active = model.experts_per_token * expert_one
        p[K.LIN_FLOPS_PER_TOKEN] = 2.0 * (active_nonembed - expert_active) * stage / dp + 2.0 * expert_active / (ep * pp)
    else:
        p[K.LIN_FLOPS_PER_TOKEN] = 2.0 * active_nonembed * stage
    if moe:
        expert_active = model.experts_per_token * expert_one
        p[K.EXPERT_FLOPS_PER_TOKEN] = 2.0 * expert_active / ((ep if ep > 1 else tp) * pp)
    p[K.EFF_MOE] = 1.0  # first principles: grouped expert GEMMs as efficient as dense ones (fitted per engine)
    p[K.EFF_MOE_MEM] = 1.0
    p[K.EFF_KV] = 1.0  # first principles: the KV cache streams like the weights
    # The LM head runs on the last stage only; spread over stages it keeps pp*stage time right.
    p[K.LMHEAD_FLOPS_PER_LOGIT] = 2.0 * model.hidden_size * model.vocab_size * stage / dp
    p[K.ATTN_FLOPS_PER_PAIR] = model.attention_flops_per_pair() * stage / dp
    dense_params = model.params_total_b * 1e9 - expert_total
    if not model.tied_embeddings:
        dense_params -= model.vocab_size * model.hidden_size  # input embedding: only rows are read
    p[K.DENSE_WEIGHT_BYTES] = max(0.0, dense_params) * wbytes * stage  # every rank reads its own copy
    if moe:
        p[K.EXPERT_BYTES] = expert_one * wbytes / (pp * (ep if ep > 1 else tp))
        p[K.NUM_EXPERTS] = model.num_experts
        p[K.EXPERTS_PER_TOKEN] = model.experts_per_token
    else:
        p[K.NUM_EXPERTS] = 1.0
        p[K.EXPERTS_PER_TOKEN] = 1.0
    p[K.DP] = dp
    if ep > 1 and moe:
        # Dispatch and combine: a GPU sends its 1/ep of the tokens' hidden states to the GPUs of
        # their k experts, (ep-1)/ep of them off-GPU, and receives the results (DeepEP-style).
        p[K.A2A_BYTES_PER_TOKEN] = 2.0 * model.experts_per_token * model.hidden_size * ACT_BYTES * (ep - 1) / ep / ep
        p[K.NUM_A2A] = math.ceil(model.num_layers / pp)
    kv_dtype_bytes = 1.0 if kv_cache_dtype == "fp8" else 2.0
    p[K.KV_BYTES_PER_TOKEN] = kv_bytes_per_token_per_gpu(model, tp, pp, kv_dtype_bytes) / dp  # a token lives on one rank
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
    p[K.ALLREDUCE_BYTES_PER_TOKEN] = model.hidden_size * ACT_BYTES / dp  # a rank all-reduces its own tokens
    p[K.NUM_ALLREDUCES] = 2.0 * math.ceil(model.num_layers / pp)
    p[K.LINK_BW] = acc.interconnect_bandwidth_gbps * 1e9
    p[K.COLLECTIVE_LATENCY_S] = collective_latency_s(max(tp, ep))
    p[K.PP] = pp
    return p


def frontend_latency_s(engine_kind: str, acc: Accelerator, version: str | None = None) -> float:
    """Seconds a request spends outside the engine's step loop, once: the API server's HTTP
    handling and tokenisation, the hop to the engine process (vLLM V1 runs its EngineCore in a
    process of its own, talking over ZMQ) and the streamed chunks' way back. Fitted per engine
    family where serving runs measure it (``frontend_<family>``, calibration/REPORT.md); 0 for
    families fitted on kernel-level tables only, which cannot see it."""
    params = calibrated_parameters()
    family = engine_family(engine_kind, acc, version)
    for fam in (family, PROFILE_OF.get(family, family), KERNELS_OF.get(family, family)):
        if f"frontend_{fam}" in params:
            return float(params[f"frontend_{fam}"])
    return 0.0
