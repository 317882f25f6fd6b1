"""``stacksim predict``: one model on one accelerator type, one load pattern, the numbers that
matter. It builds a one-deployment scenario and runs the same engine as ``stacksim run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stacksim.api import run_scenario
from stacksim.catalog import UnknownId, get_accelerator, get_model
from stacksim.errors import Problem, ScenarioError, StackSimError
from stacksim.scenario import load_scenario_text
from stacksim.serving.costmodel import WEIGHT_BYTES
from stacksim.serving.engines import ENGINE_KINDS, trtllm_bench_engine

# Flags named in error messages instead of the scenario fields they fill.
FLAG_OF = {
    "pools.gpu.accelerator": "--gpu",
    "pools.gpu.count": "--tp/--pp/--dp",
    "deployments.model.model": "--model",
    "deployments.model.tensor_parallel": "--tp",
    "deployments.model.pipeline_parallel": "--pp",
    "deployments.model.replicas": "--dp",
    "deployments.model.data_parallel": "--dp",
    "deployments.model.expert_parallel": "--ep",
    "deployments.model.precision": "--precision",
    "deployments.model.engine.kv_cache_dtype": "--kv-precision",
    "deployments.model": "--model/--gpu/--tp/--precision",
    "deployments.model.engine.max_model_len": "--isl/--osl",
    "workloads.load.input_tokens.value": "--isl",
    "workloads.load.output_tokens.value": "--osl",
    "workloads.load.max_requests": "--requests",
    "workloads.load.arrival.rate_per_s": "--qps",
    "workloads.load.arrival.clients": "--concurrency",
}
LONG_HORIZON_S = 1e6  # arrivals stop here; every request finishes well before it


@dataclass
class PredictArgs:
    model: str
    gpu: str
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    precision: str = "bf16"
    kv_precision: str = "auto"
    engine: str = "vllm"
    isl: int = 1000
    osl: int = 1000
    offline: bool = False
    qps: float | None = None
    concurrency: int | None = None
    requests: int = 1000
    seed: int = 0


def _scenario_yaml(a: PredictArgs) -> str:
    if a.offline:
        arrival = "{kind: offline}"
    elif a.qps is not None:
        arrival = f"{{kind: poisson, rate_per_s: {a.qps!r}}}"
    else:
        arrival = f"{{kind: closed_loop, clients: {a.concurrency}}}"
    gpus = a.tp * a.pp * a.dp
    # --ep > 1: one replica whose --dp ranks share the experts (DEP); otherwise --dp replicas.
    replicas, dp = (1, a.dp) if a.ep > 1 else (a.dp, 1)
    engine = f"kind: {a.engine}, kv_cache_dtype: {a.kv_precision}, max_model_len: {a.isl + a.osl}"
    bench = _trtllm_bench(a)
    if bench:
        engine += ", " + ", ".join(f"{k}: {v}" for k, v in bench.items())
    return f"""
name: predict
seed: {a.seed}
horizon_s: {LONG_HORIZON_S}
pools:
  gpu: {{accelerator: {a.gpu}, count: {gpus}, price_usd_per_gpu_hour: 0.0}}
deployments:
  model:
    model: {a.model}
    pool: gpu
    replicas: {replicas}
    tensor_parallel: {a.tp}
    pipeline_parallel: {a.pp}
    data_parallel: {dp}
    expert_parallel: {a.ep}
    precision: {a.precision}
    engine: {{{engine}}}
    load_balancer: {{kind: least_outstanding}}
workloads:
  load:
    target: model
    arrival: {arrival}
    max_requests: {a.requests}
    input_tokens: {{kind: fixed, value: {a.isl}}}
    output_tokens: {{kind: fixed, value: {a.osl}}}
"""


def _check(a: PredictArgs) -> None:
    modes = sum([a.offline, a.qps is not None, a.concurrency is not None])
    if modes != 1:
        raise StackSimError("give exactly one load pattern: --offline, --qps RATE or --concurrency N")
    if a.ep not in (1, a.tp * a.dp):
        raise StackSimError(f"--ep must be 1 (experts split by --tp) or --tp x --dp = {a.tp * a.dp} (experts spread "
                            f"over every GPU, with --dp attention data-parallel ranks); got {a.ep}")
    if a.engine not in ENGINE_KINDS:
        raise StackSimError(f"--engine {a.engine}: unknown engine profile; valid: {', '.join(ENGINE_KINDS)}")
    for flag, v in (("--tp", a.tp), ("--pp", a.pp), ("--dp", a.dp), ("--isl", a.isl), ("--osl", a.osl), ("--requests", a.requests)):
        if v < 1:
            raise StackSimError(f"{flag} must be >= 1; got {v}")
    if a.qps is not None and not (a.qps > 0 and np.isfinite(a.qps)):
        raise StackSimError(f"--qps must be a positive number; got {a.qps}")
    if a.concurrency is not None and a.concurrency < 1:
        raise StackSimError(f"--concurrency must be >= 1; got {a.concurrency}")
    if a.seed < 0:
        raise StackSimError(f"--seed must be >= 0; got {a.seed}")


def _trtllm_bench(a: PredictArgs) -> dict[str, float]:
    """With ``--engine trtllm --offline``, the settings trtllm-bench would build with for these
    lengths (serving/engines.py), so the run is comparable with TensorRT-LLM's published
    max-load tables. Unknown ids return nothing here: the scenario check names them."""
    if a.engine != "trtllm" or not a.offline:
        return {}
    try:
        m, acc = get_model(a.model), get_accelerator(a.gpu)
    except UnknownId:
        return {}
    if a.precision not in WEIGHT_BYTES:
        return {}
    return trtllm_bench_engine(m, acc, a.tp, a.pp, a.precision, a.kv_precision, a.isl, a.osl)


def _stats(x: np.ndarray) -> dict[str, float | None]:
    x = x[np.isfinite(x)] * 1000.0
    if x.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p = np.percentile(x, [50, 90, 99])
    return {"mean": round(float(x.mean()), 4), "p50": round(float(p[0]), 4), "p90": round(float(p[1]), 4), "p99": round(float(p[2]), 4)}


def predict(a: PredictArgs) -> dict[str, Any]:
    """Run the one-deployment scenario and return the JSON object ``--json`` prints."""
    _check(a)
    try:
        rs = load_scenario_text(_scenario_yaml(a), None)
    except ScenarioError as exc:
        problems = [Problem(p.message, field=FLAG_OF.get(p.field, p.field)) for p in exc.problems]
        raise StackSimError("\n".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems)) from None
    result = run_scenario(rs)
    df = result.requests
    done = df[df["status"] == "completed"]
    if len(done) == 0:
        raise StackSimError("no request completed")
    span = float(done["finish_s"].max() - df["arrival_s"].min())
    out_tokens = float(done["output_tokens"].sum())
    gpus = a.tp * a.pp * a.dp
    itl = result.summary["latency_ms"]["itl"]
    return {
        "model": a.model,
        "gpu": a.gpu,
        "gpus": gpus,
        "tp": a.tp,
        "pp": a.pp,
        "dp": a.dp,
        "ep": a.ep,
        "precision": a.precision,
        "kv_precision": a.kv_precision,
        "engine": a.engine,
        "isl": a.isl,
        "osl": a.osl,
        "load": "offline" if a.offline else (f"qps={a.qps:g}" if a.qps is not None else f"concurrency={a.concurrency}"),
        "requests": len(df),
        "completed": len(done),
        "output_tokens_per_s": round(out_tokens / span, 3),
        "output_tokens_per_s_per_gpu": round(out_tokens / span / gpus, 3),
        "requests_per_s": round(len(done) / span, 4),
        "ttft_ms": _stats(done["ttft_s"].to_numpy(dtype=float)),
        "tpot_ms": _stats(done["tpot_s"].to_numpy(dtype=float)),
        "itl_ms": {k: itl[k] for k in ("mean", "p50", "p90", "p99")},
        "e2e_ms": _stats(done["e2e_s"].to_numpy(dtype=float)),
        "kv_capacity_tokens_per_replica": result.summary["deployments"]["model"]["kv_capacity_tokens_per_replica"],
        "preemptions": result.summary["requests"]["preemptions"],
        "calibration": "fitted efficiencies and per-engine overheads, calibration/REPORT.md",
    }
