"""Measured points for calibration, read from ``shared/calibration/`` (never copied by hand).

Every point is one measurement the cost kernel can predict without running a whole simulation:

- ``prefill_ms``: the latency of a prefill step of ``batch`` prompts of ``isl`` tokens;
- ``decode_ms``: one decode step of ``batch`` sequences whose context averages ``ctx`` tokens;
- ``e2e_ms``: ``batch`` requests arriving together, ``isl`` in and ``osl`` out, end to end;
- ``static_tok_s_gpu``: static-batching throughput per GPU, ``batch`` x ``osl`` tokens per
  (prefill + decode) cycle;
- ``offline_tok_s``: output tokens per second of one replica under maximum load (every request
  queued at once, continuous batching), as trtllm-bench and vLLM's offline benchmark measure it;
  predicted from the steady state of the engine's batch (calibration/fit.py, ``offline_steady``).

Each point keeps its ``source`` (repository@commit:path or page) from the shared table.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from stacksim.catalog import accelerators

KINDS = ("prefill_ms", "decode_ms", "e2e_ms", "static_tok_s_gpu", "offline_tok_s")


@dataclass(frozen=True)
class Point:
    dataset: str
    engine: str  # engine family whose overheads apply: splitwise-2023, vllm, vllm-rocm, trtllm
    version: str
    model: str  # catalog id
    accelerator: str  # catalog id
    tp: int
    precision: str
    kind: str
    batch: int
    isl: int
    osl: int
    ctx: float
    measured: float
    source: str
    pp: int = 1
    kv: str = "auto"  # KV-cache dtype: auto (the model's) or fp8


def shared_dir() -> Path:
    env = os.environ.get("STACKSIM_SHARED")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "shared" / "calibration"
        if cand.exists():
            return parent / "shared"
    return here.parents[3] / "shared"


def _splitwise(root: Path) -> list[Point]:
    df = pd.read_csv(root / "calibration" / "splitwise_perf_model.csv")
    hw = {"a100-80gb": "a100-sxm-80gb", "h100-80gb": "h100-sxm"}  # the power-capped H100 is left out
    mdl = {"llama2-70b": "llama-2-70b", "bloom-176b": "bloom-176b"}
    df = df[df.hardware.isin(hw) & df.model.isin(mdl)]
    g = df.groupby(["model", "hardware", "tensor_parallel", "prompt_size", "batch_size", "token_size"], as_index=False).agg(
        prompt_time=("prompt_time", "median"), token_time=("token_time", "median"), source=("source", "first")
    )
    out: list[Point] = []
    seen: set[tuple] = set()
    acc = accelerators()
    for r in g.itertuples():
        a = hw[r.hardware]
        m = mdl[r.model]
        n = r.batch_size * r.prompt_size
        # Prefill faster than the GPUs' peak FLOPS allow is not a measurement we can trust
        # (e.g. TP2, batch 64 x 512 tokens on A100 in 794 ms where >= 7 s is needed).
        params_b = 69.0 if m == "llama-2-70b" else 176.0
        floor_s = 2 * params_b * 1e9 * n / (r.tensor_parallel * acc[a].peak_bf16_tflops * 1e12)
        key = (m, a, r.tensor_parallel, r.prompt_size, r.batch_size)
        if r.prompt_time / 1000 >= floor_s and key not in seen:
            seen.add(key)
            out.append(Point("splitwise", "splitwise-2023", "2023", m, a, int(r.tensor_parallel), "bf16", "prefill_ms",
                             int(r.batch_size), int(r.prompt_size), 0, 0.0, float(r.prompt_time), r.source))
        out.append(Point("splitwise", "splitwise-2023", "2023", m, a, int(r.tensor_parallel), "bf16", "decode_ms",
                         int(r.batch_size), int(r.prompt_size), int(r.token_size), r.prompt_size + r.token_size / 2.0,
                         float(r.token_time), r.source))
    return out


TRT_MODELS = {"LLaMA 7B": "llama-2-7b", "LLaMA 70B": "llama-2-70b", "Mistral 7B": "mistral-7b", "Mixtral 8x7B": "mixtral-8x7b"}
TRT_GPUS = {"H100": "h100-sxm", "A100": "a100-sxm-80gb", "H200": "h200", "L40S": "l40s"}


def _trt_static(root: Path) -> list[Point]:
    df = pd.read_csv(root / "calibration" / "trtllm_static_v05_v09.csv")
    df = df[df.model.isin(TRT_MODELS) & df.gpu.isin(TRT_GPUS)]
    out: list[Point] = []
    for r in df.itertuples():
        prec = "fp8" if r.precision == "FP8" else "bf16"
        ver = str(r.trtllm_version_stated) if isinstance(r.trtllm_version_stated, str) else "v0.5-v0.9"
        # FP8 rows ran with an FP8 KV cache: their batches only fit with one (Llama-2-7B, batch 896
        # of 256 tokens on one 80 GB H100 holds 117 GB of bf16 KV, 59 GB of FP8).
        common = {"dataset": "trtllm-static", "engine": "trtllm", "version": ver, "model": TRT_MODELS[r.model],
                  "accelerator": TRT_GPUS[r.gpu], "tp": int(r.tp), "precision": prec, "source": r.source,
                  "kv": "fp8" if prec == "fp8" else "auto"}
        if r.metric == "1st Token Latency (ms)":
            out.append(Point(**common, kind="prefill_ms", batch=int(r.batch_size), isl=int(r.isl), osl=0, ctx=0.0,
                             measured=float(r.value)))
        elif r.metric == "Throughput (out tok/s/GPU)":
            # The unlabelled "out tok/s" tables are ambiguous (total or per GPU) and left out.
            out.append(Point(**common, kind="static_tok_s_gpu", batch=int(r.batch_size), isl=int(r.isl),
                             osl=int(r.osl), ctx=0.0, measured=float(r.value)))
    return out


VLLM_MODELS = {"Llama-3.1-8B": ("llama-3.1-8b", 1), "Meta-Llama-3-70B": ("llama-3-70b", 4), "Mixtral-8x7B": ("mixtral-8x7b", 2)}
VLLM_GPUS = {"H200": "h200", "A100-SXM4-80GB": "a100-sxm-80gb", "H100 (listed as 8xH100 machine)": "h100-sxm"}


def _vllm(root: Path) -> list[Point]:
    df = pd.read_csv(root / "calibration" / "vllm_published.csv")
    out: list[Point] = []
    ci = df[(df.metric == "median_e2e_latency_ms") & (df.isl == 32) & (df.osl == 128) & (df.batch_size == "8")]
    seen = set()
    for r in ci.itertuples():
        if r.model in VLLM_MODELS and r.gpu in VLLM_GPUS:
            m, tp = VLLM_MODELS[r.model]
            key = (m, VLLM_GPUS[r.gpu])
            if key in seen:
                continue
            seen.add(key)
            out.append(Point("vllm-ci", "vllm", "nightly", m, VLLM_GPUS[r.gpu], tp, "bf16", "e2e_ms", 8, 32, 128, 0.0,
                             float(r.value), r.source))
    amd = df[df.engine.str.contains("benchmark_latency.py; ROCm", regex=False) & (df.metric == "avg_e2e_latency_s")]
    for r in amd.itertuples():
        out.append(Point("vllm-rocm", "vllm-rocm", "rocm", "llama-3.1-405b", "mi300x", 8, "fp8", "e2e_ms", int(r.batch_size),
                         int(r.isl), int(r.osl), 0.0, float(r.value) * 1000.0, r.source))
    return out


OFFLINE_MODELS = {"LLaMA v3.1 70B": "llama-3.1-70b", "LLaMA v3 70B": "llama-3-70b", "LLaMA v3.1 8B": "llama-3.1-8b",
                  "Mistral 7B": "mistral-7b", "Mixtral 8x7B": "mixtral-8x7b", "Mixtral 8x22B": "mixtral-8x22b",
                  "LLaMA v3.1 405B": "llama-3.1-405b"}
OFFLINE_GPUS = {"H200-SXM-141GB": "h200", "H100-SXM-80GB": "h100-sxm", "A100-SXM4-80GB": "a100-sxm-80gb",
                "A100-PCIe-80GB": "a100-pcie-80gb", "L40S-48GB": "l40s", "GH200-96GB-HBM3 (480GB LPDDR5X)": "gh200"}


def _trt_offline(root: Path) -> list[Point]:
    """TensorRT-LLM v0.14/v0.17 perf-overview maximum-load throughput. FP8 rows are ModelOpt FP8
    checkpoints, whose KV cache is FP8 too (the shared README: "the KV cache is FP8 where the table
    says so"; ModelOpt's FP8 recipe quantises the KV cache)."""
    df = pd.read_csv(root / "calibration" / "trtllm_offline_throughput_v014_v017.csv")
    df = df[df.model.isin(OFFLINE_MODELS) & df.gpu_norm.isin(OFFLINE_GPUS) & (df.metric == "total_output_tokens_per_s")]
    out: list[Point] = []
    for r in df.itertuples():
        fp8 = r.precision == "FP8"
        out.append(Point("trtllm-offline", "trtllm", f"v{r.trtllm_version}".replace("vv", "v"), OFFLINE_MODELS[r.model],
                         OFFLINE_GPUS[r.gpu_norm], int(r.tp), "fp8" if fp8 else "fp16", "offline_tok_s", 0, int(r.isl),
                         int(r.osl), 0.0, float(r.value), r.source, pp=int(r.pp), kv="fp8" if fp8 else "auto"))
    return out


# ShareGPT as vLLM's and SGLang's benchmark scripts sample it: 215,196 input tokens in 1,000
# prompts (vLLM benchmark_serving.py on ShareGPT_V3_unfiltered_cleaned_split.json, its printed
# "Total input tokens", reproduced in many public logs) and 194.35 output tokens per request
# (SGLang v0.3 blog's own offline run: 4281.51 tok/s / 22.03 req/s). Means only: the steady-state
# prediction uses mean lengths.
SHAREGPT_ISL, SHAREGPT_OSL = 215, 194
SHAREGPT_MODELS = {"Llama-3.1-8B-Instruct": ("llama-3.1-8b", "a100-sxm-80gb", 1), "Llama-3.1-70B-Instruct": ("llama-3.1-70b", "h100-sxm", 4)}


def _sharegpt_offline(root: Path) -> list[Point]:
    """SGLang v0.3 against vLLM v0.6 offline (all requests at once) on ShareGPT."""
    df = pd.read_csv(root / "calibration" / "vllm_published.csv")
    df = df[(df.metric == "output_token_throughput_tok_per_s") & df.engine.isin(["SGLang 0.3.0", "vLLM 0.6.0"])]
    out: list[Point] = []
    for r in df.itertuples():
        m, a, tp = SHAREGPT_MODELS[r.model]
        eng = "sglang" if r.engine.startswith("SGLang") else "vllm"
        out.append(Point("sharegpt-offline", eng, r.engine, m, a, tp, "bf16", "offline_tok_s", 0, SHAREGPT_ISL,
                         SHAREGPT_OSL, 0.0, float(r.value), r.source))
    return out


# DistServe's profiler output for vLLM on A100-80GB (LLMServe/DistServe simdistserve/estimators/
# profile_data/profiler-a100-80g.vllm.json): prefill milliseconds fitted to their measurements as
# a + b * tokens + c * sum of squared prompt lengths (simdistserve's time estimator). Points are
# taken inside the profiled range (one prompt of 128-2048 tokens; OPT's context is 2048). The
# vLLM DistServe measured is of 2023 (v0.2-era kernels), so it is its own engine family: its
# prefill is ~1.5x slower than today's and would otherwise drag the current vLLM profile.
DISTSERVE_MODELS = {"facebook/opt-13b": "opt-13b"}
DISTSERVE_PROMPTS = (128, 512, 1024, 2048)


def _distserve(root: Path) -> list[Point]:
    path = root / "calibration" / "raw" / "distserve" / "simdistserve" / "estimators" / "profile_data" / "profiler-a100-80g.vllm.json"
    if not path.exists():
        return []
    prof = json.loads(path.read_text())
    src = "LLMServe/DistServe:simdistserve/estimators/profile_data/profiler-a100-80g.vllm.json (via shared/calibration/raw/distserve)"
    out: list[Point] = []
    for hf, mid in DISTSERVE_MODELS.items():
        for tp, coef in prof.get(hf, {}).items():
            a, b, c = coef["prefill"]
            for n in DISTSERVE_PROMPTS:
                out.append(Point("distserve-profile", "vllm-2023", "distserve-vllm", mid, "a100-sxm-80gb", int(tp), "fp16",
                                 "prefill_ms", 1, n, 0, 0.0, float(a + b * n + c * n * n), src))
    return out


def load_points(root: Path | None = None) -> list[Point]:
    """Every usable measured point, with its source."""
    root = root or shared_dir()
    return (_splitwise(root) + _trt_static(root) + _vllm(root) + _trt_offline(root) + _sharegpt_offline(root)
            + _distserve(root))


EXTERNAL_FILE = Path(__file__).resolve().parents[2] / "calibration" / "data" / "external_trtllm_v1.csv"


def external_points(path: Path = EXTERNAL_FILE) -> list[Point]:
    """Held-out measurements that are not in shared/ and never enter the fit: TensorRT-LLM 1.x
    perf-overview throughput on B200, GB200 and RTX PRO 6000 in FP4 (and H100/H200 in FP8), with
    pipeline parallelism up to 8 (``calibration/data/external_trtllm_v1.csv``, source per row)."""
    if not path.exists():
        return []
    df = pd.read_csv(path)
    return [Point("trtllm-v1-external", "trtllm", "1.x", r.model, r.accelerator, int(r.tp), r.precision, "offline_tok_s",
                  0, int(r.isl), int(r.osl), 0.0, float(r.total_output_tokens_per_s), r.source, pp=int(r.pp), kv="fp8")
            for r in df.itertuples()]


def points_frame(points: list[Point]) -> pd.DataFrame:
    return pd.DataFrame([asdict(p) for p in points])
