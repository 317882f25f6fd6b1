"""Measured points for calibration, read from ``shared/calibration/`` (never copied by hand).

Every point is one measurement the cost kernel can predict without running a whole simulation:

- ``prefill_ms``: the latency of a prefill step of ``batch`` prompts of ``isl`` tokens;
- ``decode_ms``: one decode step of ``batch`` sequences whose context averages ``ctx`` tokens;
- ``e2e_ms``: ``batch`` requests arriving together, ``isl`` in and ``osl`` out, end to end;
- ``static_tok_s_gpu``: static-batching throughput per GPU, ``batch`` x ``osl`` tokens per
  (prefill + decode) cycle.

Each point keeps its ``source`` (repository@commit:path or page) from the shared table.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from stacksim.catalog import accelerators

KINDS = ("prefill_ms", "decode_ms", "e2e_ms", "static_tok_s_gpu")


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
        common = {"dataset": "trtllm-static", "engine": "trtllm", "version": ver, "model": TRT_MODELS[r.model],
                      "accelerator": TRT_GPUS[r.gpu], "tp": int(r.tp), "precision": prec, "source": r.source}
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


def load_points(root: Path | None = None) -> list[Point]:
    """Every usable measured point, with its source."""
    root = root or shared_dir()
    return _splitwise(root) + _trt_static(root) + _vllm(root)


def points_frame(points: list[Point]) -> pd.DataFrame:
    return pd.DataFrame([asdict(p) for p in points])
