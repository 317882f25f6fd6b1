"""``stacksim predict``: one model on one accelerator type, one load pattern, the numbers that
matter. It builds a one-deployment scenario and runs the same engine as ``stacksim run``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stacksim.api import run_scenario
from stacksim.catalog import UnknownId, get_accelerator, get_model, versions
from stacksim.errors import Problem, ScenarioError, StackSimError
from stacksim.scenario import load_scenario_text
from stacksim.scenario.schema_limits import DEFAULT_MAX_REQUESTS
from stacksim.scenario.size import sci
from stacksim.scenario.yamlio import flow_yaml
from stacksim.serving.capacity import capacity_message
from stacksim.serving.costmodel import WEIGHT_BYTES
from stacksim.serving.engines import ENGINE_KINDS, default_kv_dtype, trtllm_bench_engine

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
    "deployments.model.engine.max_model_len": "--max-model-len (or --isl/--osl)",
    "deployments.model.engine.max_num_seqs": "--max-num-seqs",
    "deployments.model.engine.max_num_batched_tokens": "--max-num-batched-tokens",
    "deployments.model.engine.gpu_memory_utilization": "--gpu-memory-utilization",
    "deployments.model.engine.prefix_caching": "--prefix-caching",
    "deployments.model.engine.async_scheduling": "--async-scheduling",
    "deployments.model.engine.kv_offload": "--kv-offloading-size",
    "deployments.model.engine.kv_offload.cpu_gib": "--kv-offloading-size",
    "workloads.load.input_tokens": "--isl-dist",
    "workloads.load.input_tokens.value": "--isl",
    "workloads.load.input_tokens.path": "--isl-dist",
    "workloads.load.output_tokens": "--osl-dist",
    "workloads.load.output_tokens.value": "--osl",
    "workloads.load.output_tokens.path": "--osl-dist",
    "workloads.load.max_requests": "--requests",
    "workloads.load.arrival.rate_per_s": "--qps",
    "workloads.load.arrival.clients": "--concurrency",
    "workloads.load.arrival.cv": "--cv",
    "workloads.load.arrival.stages": "--stages",
    "workloads.load.shared_prefix": "--system-prompt-len",
}
ARRIVALS = ("poisson", "constant", "gamma", "inference-perf-constant", "inference-perf-poisson")
# --arrival -> the scenario's arrival kind (with --qps) or stage process (with --stages).
_KIND = {"poisson": "poisson", "constant": "deterministic", "gamma": "gamma",
         "inference-perf-constant": "inference_perf_constant", "inference-perf-poisson": "inference_perf_poisson"}
DIST_SYNTAX = "fixed, uniform:LOW-HIGH, lognormal:sigma=S[,min=A][,max=B], exponential or empirical:PATH"
DEFAULT_LEN = 1000  # --isl / --osl when not given
CAPACITY_KEYS = ("capacity_rps", "offered_rps", "utilization_of_capacity", "overloaded", "queue_growth_rps", "transient_s")
LONG_HORIZON_S = 1e6  # arrivals stop here; every request finishes well before it
MAX_REQUESTS = DEFAULT_MAX_REQUESTS  # a scenario's default limits.max_requests (its source is there)
_PAST_LIMIT = (f"predict runs at most {MAX_REQUESTS:,} (the default run-size limit); for more, run a scenario file "
               "with a higher limits.max_requests")


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
    engine_version: str | None = None  # None: the engine's current release (catalog/versions.py)
    isl: int | None = None  # None: 1000 (fixed), or what --isl-dist sets
    osl: int | None = None
    offline: bool = False
    qps: float | None = None
    concurrency: int | None = None
    requests: int | None = None  # None: 1000; with stages, the stages decide
    seed: int = 0
    # load shape
    arrival: str | None = None  # ARRIVALS; None: poisson
    cv: float | None = None  # --arrival gamma
    stages: str | None = None  # "5x600,10x600": rate x seconds, one stage after another
    stage_gap_s: float | None = None
    isl_dist: str = "fixed"  # DIST_SYNTAX; the centre (value, median, mean) is --isl
    osl_dist: str = "fixed"
    system_prompt_len: int | None = None  # shared-prefix prompts: this much of --isl is a group's system prompt
    num_groups: int | None = None  # None: 10 (inference-perf's default)
    prompts_per_group: int | None = None  # None: 10
    multi_turn: bool = False
    # engine knobs (None: the engine profile's default)
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    prefix_caching: bool | None = None
    async_scheduling: bool | None = None
    kv_offloading_size_gib: float | None = None
    max_model_len: int | None = None


def parse_stages(text: str) -> list[tuple[float, float]]:
    """``--stages "5x600,10x600"``: (rate per second, seconds) of each stage, in order."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*[xX]\s*([0-9.eE+-]+)\s*", part)
        try:
            rate, dur = (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))
        except ValueError:
            rate = dur = float("nan")
        if not (rate > 0 and dur > 0 and np.isfinite(rate) and np.isfinite(dur)):
            raise StackSimError(f"--stages: {part.strip()!r} is not RATExSECONDS with both positive; e.g. --stages "
                                f"5x600,10x600 is 5 requests/s for 600 s, then 10 requests/s for 600 s")
        out.append((rate, dur))
    return out


def _options(flag: str, kind: str, text: str, allowed: dict[str, type]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            raise StackSimError(f"{flag}: {kind} takes {', '.join(f'{k}=' for k in allowed)}; got {item!r}")
        try:
            opts[key] = allowed[key](val.strip())
        except ValueError:
            raise StackSimError(f"{flag}: {key} must be a number; got {val.strip()!r}") from None
    return opts


def length_spec(which: str, text: str, value: int | None) -> tuple[dict[str, Any], int | None]:
    """``--isl-dist`` / ``--osl-dist`` (``which``: "isl" or "osl") with ``--isl`` / ``--osl``
    (``value``, None when not given) as the scenario's length distribution, and the length to
    report (the fixed value, median or mean; None where the bounds or a file set the lengths)."""
    flag, len_flag = f"--{which}-dist", f"--{which}"
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip()
    centre = DEFAULT_LEN if value is None else value
    if kind in ("fixed", "exponential"):
        if rest.strip():
            raise StackSimError(f"{flag}: {kind} takes no options (its {'value' if kind == 'fixed' else 'mean'} is "
                                f"{len_flag}); got {text!r}")
        return ({"kind": "fixed", "value": centre} if kind == "fixed" else {"kind": "exponential", "mean": centre}), centre
    if kind == "lognormal":
        opts = _options(flag, kind, rest, {"sigma": float, "min": int, "max": int})
        if "sigma" not in opts:
            raise StackSimError(f"{flag}: lognormal needs sigma, e.g. lognormal:sigma=0.5 (its median is {len_flag})")
        return {"kind": "lognormal", "median": centre, **opts}, centre
    if kind in ("uniform", "empirical") and value is not None:
        raise StackSimError(f"{len_flag}: with {flag} {kind} the {'bounds' if kind == 'uniform' else 'file'} set the "
                            f"lengths; drop {len_flag}")
    if kind == "uniform":
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", rest)
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise StackSimError(f"{flag}: uniform needs its bounds, uniform:LOW-HIGH with 1 <= LOW <= HIGH (e.g. "
                                f"uniform:100-900); got {text!r}")
        return {"kind": "uniform", "low": int(m.group(1)), "high": int(m.group(2))}, None
    if kind == "empirical":
        path = Path(rest.strip()).expanduser()
        if not rest.strip() or not path.is_file():
            raise StackSimError(f"{flag}: empirical needs a trace file, empirical:PATH (Azure CSV or Mooncake JSONL); "
                                f"{'no file ' + repr(rest.strip()) if rest.strip() else 'no path given'}")
        return {"kind": "empirical", "path": str(path.resolve())}, None
    raise StackSimError(f"{flag}: unknown distribution {kind!r}; valid: {DIST_SYNTAX}")


def _arrival(a: PredictArgs) -> dict[str, Any]:
    kind = _KIND[a.arrival or "poisson"]
    if a.offline:
        return {"kind": "offline"}
    if a.concurrency is not None:
        return {"kind": "closed_loop", "clients": a.concurrency}
    cv = {"cv": a.cv} if a.cv is not None else {}
    if a.stages is not None:
        stages = [{"rate_per_s": r, "duration_s": d} for r, d in parse_stages(a.stages)]
        return {"kind": "multi_stage", "process": kind, "stages": stages, "gap_s": a.stage_gap_s or 0.0, **cv}
    return {"kind": kind, "rate_per_s": a.qps, **cv}


def _scenario_yaml(a: PredictArgs) -> str:
    isl_spec, isl = length_spec("isl", a.isl_dist, a.isl)
    osl_spec, osl = length_spec("osl", a.osl_dist, a.osl)
    gpus = a.tp * a.pp * a.dp
    # --ep > 1: one replica whose --dp ranks share the experts (DEP); otherwise --dp replicas.
    replicas, dp = (1, a.dp) if a.ep > 1 else (a.dp, 1)
    engine: dict[str, Any] = {"kind": a.engine, "kv_cache_dtype": a.kv_precision}
    if a.engine_version is not None:
        engine["version"] = a.engine_version
    if a.max_model_len is not None:
        engine["max_model_len"] = a.max_model_len
    elif isl is not None and osl is not None and isl_spec["kind"] == osl_spec["kind"] == "fixed" and not a.multi_turn:
        engine["max_model_len"] = isl + osl  # every request fits exactly; otherwise the model's context
    engine.update(_trtllm_bench(a))
    for key, v in (("max_num_seqs", a.max_num_seqs), ("max_num_batched_tokens", a.max_num_batched_tokens),
                   ("gpu_memory_utilization", a.gpu_memory_utilization), ("prefix_caching", a.prefix_caching),
                   ("async_scheduling", a.async_scheduling)):
        if v is not None:
            engine[key] = v
    if a.kv_offloading_size_gib is not None:
        engine["kv_offload"] = {"cpu_gib": a.kv_offloading_size_gib}
    load: dict[str, Any] = {"target": "model", "arrival": _arrival(a)}
    if a.stages is None:
        load["max_requests"] = a.requests or 1000
    if a.system_prompt_len is None:
        load["input_tokens"] = isl_spec
    else:
        load["shared_prefix"] = {
            "num_groups": a.num_groups or 10, "num_prompts_per_group": a.prompts_per_group or 10,
            "system_prompt_len": a.system_prompt_len, "question_len": (isl or DEFAULT_LEN) - a.system_prompt_len,
            "multi_turn": a.multi_turn}
    load["output_tokens"] = osl_spec
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
    engine: {flow_yaml(engine)}
    load_balancer: {{kind: least_outstanding}}
workloads:
  load: {flow_yaml(load)}
"""


def _check(a: PredictArgs) -> PredictArgs:
    """Reject bad flags with one message naming the flag; return the arguments with the
    defaults filled in (isl / osl: the length reported)."""
    modes = sum([a.offline, a.qps is not None, a.concurrency is not None, a.stages is not None])
    if modes != 1:
        raise StackSimError("give exactly one load pattern: --offline, --qps RATE, --stages RATExSECONDS,... or "
                            "--concurrency N")
    if a.ep not in (1, a.tp * a.dp):
        raise StackSimError(f"--ep must be 1 (experts split by --tp) or --tp x --dp = {a.tp * a.dp} (experts spread "
                            f"over every GPU, with --dp attention data-parallel ranks); got {a.ep}")
    if a.engine not in ENGINE_KINDS:
        raise StackSimError(f"--engine {a.engine}: unknown engine profile; valid: {', '.join(ENGINE_KINDS)}")
    if a.engine_version is not None:
        try:
            versions.band(a.engine, a.engine_version)
        except versions.UnknownVersion as exc:
            raise StackSimError(f"--engine-version: {exc}") from None
    for flag, v in (("--tp", a.tp), ("--pp", a.pp), ("--dp", a.dp), ("--isl", a.isl), ("--osl", a.osl),
                    ("--requests", a.requests), ("--max-num-seqs", a.max_num_seqs), ("--num-groups", a.num_groups),
                    ("--prompts-per-group", a.prompts_per_group)):
        if v is not None and v < 1:
            raise StackSimError(f"{flag} must be >= 1; got {v}")
    for flag, v, lo in (("--max-num-batched-tokens", a.max_num_batched_tokens, 16), ("--max-model-len", a.max_model_len, 16),
                        ("--system-prompt-len", a.system_prompt_len, 0)):
        if v is not None and v < lo:
            raise StackSimError(f"{flag} must be >= {lo}; got {v}")
    if a.qps is not None and not (a.qps > 0 and np.isfinite(a.qps)):
        raise StackSimError(f"--qps must be a positive number; got {a.qps}")
    if a.concurrency is not None and a.concurrency < 1:
        raise StackSimError(f"--concurrency must be >= 1; got {a.concurrency}")
    if a.seed < 0:
        raise StackSimError(f"--seed must be >= 0; got {a.seed}")
    if a.gpu_memory_utilization is not None and not 0 < a.gpu_memory_utilization <= 1:
        raise StackSimError(f"--gpu-memory-utilization must be in (0, 1]; got {a.gpu_memory_utilization}")
    if a.kv_offloading_size_gib is not None:
        if not (a.kv_offloading_size_gib > 0 and np.isfinite(a.kv_offloading_size_gib)):
            raise StackSimError(f"--kv-offloading-size must be a positive number of GiB; got {a.kv_offloading_size_gib}")
        if a.prefix_caching is False:
            raise StackSimError("--kv-offloading-size keeps the blocks the prefix cache evicts; it needs prefix caching "
                                "(drop --no-prefix-caching)")
    # the arrival process
    if a.arrival is not None:
        if a.arrival not in ARRIVALS:
            raise StackSimError(f"--arrival {a.arrival}: unknown; valid: {', '.join(ARRIVALS)}")
        if a.qps is None and a.stages is None:
            raise StackSimError(f"--arrival applies to --qps and --stages, not to {'--offline' if a.offline else '--concurrency'}")
        if a.arrival.startswith("inference-perf") and a.stages is None:
            raise StackSimError(f"--arrival {a.arrival} spreads each stage's requests over its duration: it needs --stages")
    if (a.arrival == "gamma") != (a.cv is not None):
        raise StackSimError("--cv applies to --arrival gamma only" if a.cv is not None
                            else "--arrival gamma needs --cv, the gaps' coefficient of variation (1 = Poisson, > 1 burstier)")
    if a.cv is not None and not (a.cv > 0 and np.isfinite(a.cv)):
        raise StackSimError(f"--cv must be a positive number; got {a.cv}")
    if a.stages is not None:
        total = sum(d for _, d in parse_stages(a.stages)) + (a.stage_gap_s or 0.0) * (len(parse_stages(a.stages)) - 1)
        if total > LONG_HORIZON_S:
            raise StackSimError(f"--stages: the stages last {total:g} s; at most {LONG_HORIZON_S:g}")
        if a.requests is not None:
            raise StackSimError("--requests: with --stages each stage sends rate x duration requests; drop --requests")
        sent = sum(r * d for r, d in parse_stages(a.stages))
        if sent > MAX_REQUESTS:
            raise StackSimError(f"--stages: the stages send {sci(sent)} requests; {_PAST_LIMIT}")
        if a.arrival in ("inference-perf-constant", "inference-perf-poisson", "constant"):
            for r, d in parse_stages(a.stages):
                if int(r * d) < 1:
                    raise StackSimError(f"--stages: {r:g}x{d:g} is under one request (int(rate x duration) = 0)")
    elif a.requests is not None and a.requests > MAX_REQUESTS:
        raise StackSimError(f"--requests: {a.requests:,} requests; {_PAST_LIMIT}")
    if a.stage_gap_s is not None and (a.stages is None or not (a.stage_gap_s >= 0 and np.isfinite(a.stage_gap_s))):
        raise StackSimError("--stage-gap needs --stages" if a.stages is None
                            else f"--stage-gap must be >= 0 seconds; got {a.stage_gap_s}")
    # lengths and shared prefixes
    _, isl = length_spec("isl", a.isl_dist, a.isl)
    _, osl = length_spec("osl", a.osl_dist, a.osl)
    if a.system_prompt_len is None:
        for flag, v in (("--num-groups", a.num_groups), ("--prompts-per-group", a.prompts_per_group),
                        ("--multi-turn", a.multi_turn or None)):
            if v is not None:
                raise StackSimError(f"{flag} shapes shared-prefix prompts: it needs --system-prompt-len")
    else:
        if a.isl_dist.strip() != "fixed":
            raise StackSimError("--isl-dist: with --system-prompt-len every prompt is --isl tokens (system prompt + "
                                "question; later turns add history with --multi-turn); drop --isl-dist")
        if a.system_prompt_len >= (isl or DEFAULT_LEN):
            raise StackSimError(f"--system-prompt-len must be under --isl ({isl}): each prompt is a system prompt and a "
                                f"question of --isl - --system-prompt-len tokens; got {a.system_prompt_len}")
        if a.concurrency is not None:
            raise StackSimError("--system-prompt-len needs an open-loop load (--qps, --stages or --offline), not --concurrency")
    return replace(a, isl=isl, osl=osl)


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
    if a.precision not in WEIGHT_BYTES or a.isl is None or a.osl is None:
        return {}
    return trtllm_bench_engine(m, acc, a.tp, a.pp, a.precision, default_kv_dtype(a.engine, a.kv_precision, a.precision),
                               a.isl, a.osl)


def load_label(a: PredictArgs) -> str:
    """The load in a few words: offline, qps=4, qps=4 gamma cv=2, stages=5x600,10x600 ..., concurrency=8."""
    arrival = a.arrival or "poisson"
    shape = "" if arrival == "poisson" else f" {arrival}" + (f" cv={a.cv:g}" if a.cv is not None else "")
    if a.offline:
        load = "offline"
    elif a.stages is not None:
        load = f"stages={a.stages.replace(' ', '')} {arrival}" + (f" cv={a.cv:g}" if a.cv is not None else "")
    elif a.qps is not None:
        load = f"qps={a.qps:g}{shape}"
    else:
        load = f"concurrency={a.concurrency}"
    if a.system_prompt_len is not None:
        load += (f", shared prefix {a.num_groups or 10}x{a.prompts_per_group or 10} system {a.system_prompt_len}"
                 + (" multi-turn" if a.multi_turn else ""))
    return load


def lengths_label(a: PredictArgs) -> str:
    """Prompt and output lengths in a few words, e.g. "1000 in / 200 out" or "lognormal:sigma=0.5 (1000) in"."""
    def one(dist: str, v: int | None) -> str:
        kind = dist.strip().partition(":")[0]
        centre = v if v is not None else DEFAULT_LEN
        return f"{centre}" if kind == "fixed" else dist.strip() + (f" ({centre})" if kind in ("lognormal", "exponential") else "")
    return f"{one(a.isl_dist, a.isl)} in / {one(a.osl_dist, a.osl)} out"


def _stats(x: np.ndarray) -> dict[str, float | None]:
    x = x[np.isfinite(x)] * 1000.0
    if x.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p = np.percentile(x, [50, 90, 99])
    return {"mean": round(float(x.mean()), 4), "p50": round(float(p[0]), 4), "p90": round(float(p[1]), 4), "p99": round(float(p[2]), 4)}


def predict(a: PredictArgs) -> dict[str, Any]:
    """Run the one-deployment scenario and return the JSON object ``--json`` prints."""
    a = _check(a)
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
    cap = result.summary["deployments"]["model"]["capacity"]
    return {
        "model": a.model,
        "gpu": a.gpu,
        "gpus": gpus,
        "tp": a.tp,
        "pp": a.pp,
        "dp": a.dp,
        "ep": a.ep,
        "precision": a.precision,
        "kv_precision": default_kv_dtype(a.engine, a.kv_precision, a.precision),
        "engine": a.engine,
        "engine_version": versions.band(a.engine, a.engine_version).label,
        "isl": a.isl,
        "osl": a.osl,
        "load": load_label(a),
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
        # Sustainable capacity and overload (serving/capacity.py): above capacity the latencies
        # describe a transient of transient_s, not a steady state.
        **{k: cap[k] for k in CAPACITY_KEYS},
        "max_wait_s": cap["measured"]["max_wait_s"],
        "capacity_note": capacity_message(a.model, cap),
        "calibration": "fitted efficiencies and per-engine overheads, calibration/REPORT.md",
    }
