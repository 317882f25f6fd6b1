"""Serving-engine versions: which fitted profile (family) describes which releases.

Engines changed more between 2023 and 2026 than GPUs did: vLLM 0.6 cut the CPU time of every step
(its v0.6.0 release blog: "2.7x higher throughput and 5x faster TPOT" on Llama-3-8B against
v0.5.3, from a multi-step scheduler and asynchronous output processing), vLLM 0.8 made the V1
engine the default (a rewritten scheduler, persistent batch, CUDA-graph decode, its own custom
all-reduce), and TensorRT-LLM 1.0 moved to the PyTorch backend. A forecast must say which release
it describes, so ``engine.version`` picks a *band* of releases, and each band maps to a family of
fitted parameters (``stacksim/calibration/params_v1.json``, ``calibration/REPORT.md``).

A band whose data the calibration holds has its own family; one without borrows a neighbour's
(``borrows``), and ``stacksim catalog engines`` says so. The physics (the roofline of
``kernels/cost.py``, the model shapes, the GPUs) is shared by every band: what a band changes is
per-step CPU work, GEMM, attention and MoE kernel efficiency, and the all-reduce's latency.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    kind: str  # engine.kind
    label: str  # the releases, as users name them
    lo: tuple[int, int]  # first release in the band (major, minor), inclusive
    hi: tuple[int, int] | None  # first release after it (exclusive); None: open-ended
    family: str  # fitted parameter family (params_v1.json suffix)
    data: str  # the measurements behind the family
    borrows: str = ""  # a family without data of its own: whose parameters it uses, and why

    def contains(self, v: tuple[int, int]) -> bool:
        return self.lo <= v and (self.hi is None or v < self.hi)


BANDS: tuple[Band, ...] = (
    Band("vllm", "0.4-0.5", (0, 4), (0, 6), "vllm-2023",
         "DistServe's vLLM profile (OPT-13B on A100, 2023-24; shared/calibration/raw/distserve): the engine before "
         "v0.6's CPU-overhead work, ~25 ms of scheduling per step"),
    Band("vllm", "0.6-0.9", (0, 6), (0, 10), "vllm",
         "vLLM CI nightly latency runs (buildkite performance-benchmark builds 9513-9555, Sep 2024, v0.6.x) and "
         "SGLang's v0.3 benchmark of vLLM 0.6.0 (shared/calibration/vllm_published.csv)"),
    Band("vllm", "0.10+", (0, 10), None, "vllm-v1",
         "vLLM v0.15.1 serving runs on H100 SXM, Feb 2026 (shared/calibration/modern_vllm_trainval.csv and "
         "raw/blis-training): 9 models, dense, GQA, MoE and FP8, at realistic constant-rate loads"),
    Band("sglang", "0.3-0.4", (0, 3), (0, 5), "sglang",
         "SGLang v0.3.0's own ShareGPT offline benchmark (shared/calibration/vllm_published.csv); kernels as vLLM 0.6"),
    Band("sglang", "0.5", (0, 5), None, "sglang-0.5",
         "none of its own", borrows="vllm-v1: SGLang 0.5 runs the same FlashInfer attention and GEMM libraries as "
         "vLLM 0.10+ and an overlapped (zero-overhead) scheduler; no SGLang 0.5 measurement is in the data"),
    Band("trtllm", "0.14-0.17", (0, 14), (0, 20), "trtllm",
         "TensorRT-LLM v0.14/v0.17 perf-overview max-load tables and v0.5-v0.9 static-batching tables "
         "(shared/calibration/trtllm_*.csv)"),
    Band("trtllm", "0.20-1.x", (0, 20), None, "trtllm-1",
         "none fitted (TensorRT-LLM 1.x perf-overview figures, calibration/data/external_trtllm_v1.csv, stay held "
         "out to check it)", borrows="vllm-v1: at batch 1 NVIDIA NIM's TensorRT-LLM (Llama-3.1-8B FP8, H100: 4.63 ms "
         "per token) and vLLM 0.19 (BF16: 6.44 ms) both sit 1.5-2 ms above their weights' read time "
         "(calibration/data/external_modern_SOURCES.md), so the data do not separate the two engines' step; "
         "TensorRT-LLM 1.x takes vLLM 0.10+'s memory efficiencies and per-step time (never slower than it at "
         "batch 1) and TensorRT-LLM 0.14-0.17's matmul efficiency (its max-load tables)"),
)
# The release a scenario gets when it names none: the newest band of each engine, as of this
# calibration (vLLM v0.15.1 measured Feb 2026; SGLang 0.5; TensorRT-LLM 1.x).
DEFAULT_VERSION = {"vllm": "0.15", "sglang": "0.5", "trtllm": "1.0"}


class UnknownVersion(ValueError):
    pass


def parse(version: str) -> tuple[int, int]:
    """'0.15.1', 'v0.6', '1.0rc2' -> (major, minor)."""
    text = str(version).strip().lower().lstrip("v")
    parts = text.split(".")
    try:
        major = int(parts[0])
        minor = int("".join(ch for ch in parts[1] if ch.isdigit()) or "0") if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise UnknownVersion(f"'{version}' is not a release number (e.g. 0.15.1, 0.6, 1.0)") from None
    return major, minor


def bands(kind: str) -> list[Band]:
    return [b for b in BANDS if b.kind == kind]


def band(kind: str, version: str | None) -> Band:
    """The band of ``kind``'s release ``version`` (None: the current release)."""
    v = parse(DEFAULT_VERSION[kind] if version is None else version)
    for b in bands(kind):
        if b.contains(v):
            return b
    valid = ", ".join(b.label for b in bands(kind))
    raise UnknownVersion(f"{kind} {version} is outside the modelled releases ({valid}); pick a release in one of "
                         f"those bands, e.g. {DEFAULT_VERSION[kind]} (the current one)")


# Asynchronous ("overlap") scheduling: the engine plans step n+1 while step n runs on the GPU, so
# the GPU never waits for the CPU between steps, and a request that arrives while step n runs
# joins step n+2 at the earliest (an idle engine takes it at once). The first release of each
# engine that does this by default:
# - vLLM: SchedulerConfig.async_scheduling is None by default and VllmConfig turns it on unless an
#   option is incompatible (vllm-project/vllm#27614, the closing item of the async-scheduling plan
#   #27679, merged Dec 2025; we count the v0.14 line, Jan 2026, as the first). Its author reports
#   TTFT "slightly up" against throughput +3-15%: new requests wait one more scheduling step. The
#   v0.15.1 runs in shared/calibration show it: mean TTFT at low load is about 2.75 decode steps
#   plus a few milliseconds, on dense and MoE models alike (calibration/REPORT.md).
# - SGLang: the overlap ("zero-overhead") batch scheduler, on unless --disable-overlap-schedule,
#   since v0.4 (LMSYS blog "SGLang v0.4", Dec 2024).
# - TensorRT-LLM: the PyTorch backend's overlap scheduler (disable_overlap_scheduler: false), the
#   default backend from 1.0.
ASYNC_SCHEDULING_FROM = {"vllm": (0, 14), "sglang": (0, 4), "trtllm": (1, 0)}


def async_scheduling_default(kind: str, version: str | None) -> bool:
    """Whether release ``version`` of ``kind`` (None: the current one) schedules asynchronously
    unless told otherwise."""
    return parse(DEFAULT_VERSION[kind] if version is None else version) >= ASYNC_SCHEDULING_FROM[kind]
