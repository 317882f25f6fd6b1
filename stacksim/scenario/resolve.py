"""Semantic checks and resolution: catalog ids to specs, memory plans, prices, trace paths.

Everything a schema cannot say (an id that is not in the catalog, a model that does not fit, a
pool with too few GPUs, a trace file with a missing column) is found here and reported as a
:class:`Problem` with the field path, so the loader can name the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stacksim.catalog import Accelerator, ModelArch, UnknownId, get_accelerator, get_model, models
from stacksim.errors import Problem
from stacksim.gateway.plan import GatewayPlan
from stacksim.network import RegionMap
from stacksim.scenario import schema as S
from stacksim.scenario.size import RunSize, size_problems
from stacksim.serving import engines
from stacksim.serving.core_state import ADMIT_WATERMARK
from stacksim.serving.costmodel import (
    DoesNotFit,
    MemoryPlan,
    SpeculationError,
    cost_params,
    frontend_latency_s,
    memory_plan,
    speculation,
)
from stacksim.serving.kv_offload import KvOffloadError, ResolvedKvOffload, resolve_kv_offload
from stacksim.serving.lora import LoraError, ResolvedLora, resolve_lora, workload_problems
from stacksim.serving.parallel import parallelism_problem
from stacksim.workload.traces import TraceFormatError, load_trace

if TYPE_CHECKING:
    from stacksim.serving.disagg import ResolvedDisagg

FieldPath = tuple[str | int, ...]


@dataclass
class PathProblem:
    path: FieldPath
    message: str


@dataclass
class ResolvedPool:
    name: str
    spec: S.Pool
    accelerator: Accelerator
    price_usd_per_gpu_hour: float
    price_basis: str


@dataclass
class ResolvedDeployment:
    name: str
    spec: S.Deployment
    model: ModelArch
    pool: ResolvedPool
    plan: MemoryPlan
    params: np.ndarray
    max_model_len: int
    lora: ResolvedLora | None = None  # engine.lora resolved (serving/lora.py)
    kv_offload: ResolvedKvOffload | None = None  # engine.kv_offload resolved (serving/kv_offload.py)
    frontend_s: float = 0.0  # the engine's API-server latency per request (serving/costmodel.frontend_latency_s)

    @property
    def slots(self) -> int:
        """Replica objects the run builds: the fixed count, or max_replicas when autoscaling
        (inactive ones hold no accelerators; serving/autoscale.py)."""
        a = self.spec.autoscaling
        return self.spec.replicas if a is None else a.max_replicas

    @property
    def gpus(self) -> int:
        """Accelerators of the pool this deployment needs: all its slots' (max_replicas when autoscaling)."""
        return self.slots * self.spec.tensor_parallel * self.spec.pipeline_parallel * self.spec.data_parallel


@dataclass
class ResolvedScenario:
    scenario: S.Scenario
    file: str | None
    base_dir: Path
    pools: dict[str, ResolvedPool] = field(default_factory=dict)
    deployments: dict[str, ResolvedDeployment] = field(default_factory=dict)
    trace_paths: dict[FieldPath, str] = field(default_factory=dict)
    lines: dict[FieldPath, int] = field(default_factory=dict)
    regions: RegionMap | None = None
    gateway_plan: GatewayPlan | None = None
    disaggregated: dict[str, ResolvedDisagg] = field(default_factory=dict)  # prefill/decode groups (serving/disagg.py)
    size: RunSize | None = None  # the run's requests and tokens, estimated before the run (scenario/size.py)

    def path(self, rel: str) -> str:
        p = Path(rel)
        return str(p if p.is_absolute() else (self.base_dir / p))


def _model(sc: S.Scenario, name: str, where: FieldPath, problems: list[PathProblem]) -> ModelArch | None:
    if name in sc.models:
        spec = sc.models[name]
        if spec.catalog is not None:
            try:
                return get_model(spec.catalog)
            except UnknownId as exc:
                problems.append(PathProblem(("models", name, "catalog"), exc.message()))
                return None
        a = spec.architecture
        assert a is not None
        return ModelArch(
            id=name,
            params_total_b=a.params_total_b,
            params_active_b=a.params_active_b or a.params_total_b,
            num_layers=a.num_layers,
            hidden_size=a.hidden_size,
            num_attention_heads=a.num_attention_heads,
            num_kv_heads=a.num_kv_heads,
            head_dim=a.head_dim or a.hidden_size // a.num_attention_heads,
            intermediate_size=a.intermediate_size,
            vocab_size=a.vocab_size,
            num_experts=a.num_experts,
            experts_per_token=a.experts_per_token,
            attention=a.attention,
            kv_lora_rank=a.kv_lora_rank,
            qk_rope_head_dim=a.qk_rope_head_dim,
            max_context=a.max_context,
        )
    if name in models():
        return get_model(name)
    exc = UnknownId("model", name, sorted(models()))
    local = sorted(sc.models)
    msg = f"'{name}' is neither a key of models: ({', '.join(local) or 'none defined'}) nor a catalog model id."
    if exc.suggestions:
        msg += " Did you mean: " + ", ".join(exc.suggestions) + "?"
    msg += f" Catalog ids: {', '.join(exc.valid)}."
    problems.append(PathProblem(where, msg))
    return None


def resolve(sc: S.Scenario, file: str | None = None) -> tuple[ResolvedScenario, list[PathProblem]]:
    base = Path(file).resolve().parent if file else Path.cwd()
    rs = ResolvedScenario(sc, file, base)
    problems: list[PathProblem] = []

    if sc.warmup_s >= sc.horizon_s:
        problems.append(PathProblem(("warmup_s",), f"must be less than horizon_s ({sc.horizon_s:g}); got {sc.warmup_s:g}"))

    for name, pool in sc.pools.items():
        try:
            acc = get_accelerator(pool.accelerator)
        except UnknownId as exc:
            problems.append(PathProblem(("pools", name, "accelerator"), exc.message()))
            continue
        from stacksim.finops.pricing import PriceError, pool_price, providers

        if pool.price_provider is not None and pool.price_provider.lower() not in {p.lower() for p in providers()}:
            problems.append(PathProblem(("pools", name, "price_provider"),
                                        f"no prices from '{pool.price_provider}' in the catalog; providers: {', '.join(providers())}"))
            continue
        try:
            price, basis = pool_price(pool, acc)
        except PriceError as exc:
            problems.append(PathProblem(("pools", name), str(exc)))
            continue
        rs.pools[name] = ResolvedPool(name, pool, acc, price, basis)

    used: dict[str, int] = {}
    for name, dep in sc.deployments.items():
        where: FieldPath = ("deployments", name)
        model = _model(sc, dep.model, where + ("model",), problems)
        pool = rs.pools.get(dep.pool)
        if dep.pool not in sc.pools:
            problems.append(
                PathProblem(where + ("pool",), f"no pool named '{dep.pool}'; pools: {', '.join(sc.pools)}")
            )
        if model is None or pool is None:
            continue
        tp, pp = dep.tensor_parallel, dep.pipeline_parallel
        if model.num_attention_heads % tp:
            problems.append(
                PathProblem(
                    where + ("tensor_parallel",),
                    f"{model.id} has {model.num_attention_heads} attention heads, which {tp} does not divide; "
                    f"valid: {', '.join(str(d) for d in range(1, 65) if model.num_attention_heads % d == 0)}",
                )
            )
            continue
        if pp > model.num_layers:
            problems.append(PathProblem(where + ("pipeline_parallel",), f"{model.id} has only {model.num_layers} layers"))
            continue
        dp, ep = dep.data_parallel, dep.expert_parallel
        bad = parallelism_problem(model, pool.accelerator, tp, pp, dp, ep, dep.engine.speculative is not None)
        if bad is not None:
            problems.append(PathProblem(where + (bad[0],), bad[1]))
            continue
        # An autoscaled deployment may grow to max_replicas: the pool must hold that many.
        used[dep.pool] = used.get(dep.pool, 0) + (dep.autoscaling.max_replicas if dep.autoscaling else dep.replicas) * tp * pp * dp
        eng = engines.concrete(dep.engine, pool.accelerator, tp, dep.precision)
        if eng is not dep.engine:  # the profile's start-up rules filled settings left out (serving/engines.py)
            dep = dep.model_copy(update={"engine": eng})
        if eng.max_num_batched_tokens < eng.max_num_seqs:
            problems.append(
                PathProblem(
                    where + ("engine", "max_num_batched_tokens"),
                    f"must be >= max_num_seqs ({eng.max_num_seqs}), as vLLM requires; got {eng.max_num_batched_tokens}",
                )
            )
            continue
        specdec = None
        if eng.speculative is not None:  # the proposer's memory and cost (serving/costmodel.speculation)
            sp = eng.speculative
            draft = None
            if sp.draft_model is not None:
                draft = _model(sc, sp.draft_model, where + ("engine", "speculative", "draft_model"), problems)
                if draft is None:
                    continue
            try:
                specdec = speculation(sp.method, sp.num_speculative_tokens, sp.acceptance_rate, model, draft, tp, pp,
                                      eng.max_model_len or model.max_context)
            except SpeculationError as exc:
                problems.append(PathProblem(where + exc.path, str(exc)))
                continue
        lora = None
        if eng.lora is not None:  # adapter sizes, costs, load times; its GPU slots come out of the KV cache
            try:
                lora = resolve_lora(eng.lora, model, pool.accelerator, tp, pp, eng.speculative is not None)
            except LoraError as exc:
                problems.append(PathProblem(where + exc.path, str(exc)))
                continue
        try:
            plan = memory_plan(
                model, pool.accelerator, tp, pp, dep.precision, eng.kv_cache_dtype, eng.block_size,
                eng.gpu_memory_utilization, eng.max_num_batched_tokens, eng.max_num_seqs, eng.runtime_overhead_gb,
                spec=specdec, lora_bytes_per_gpu=lora.slot_bytes_per_gpu if lora is not None else 0.0,
                of_free_memory=engines.of_free_memory(eng), dp=dp, ep=ep,
            )
        except DoesNotFit as exc:
            problems.append(PathProblem(where, str(exc)))
            continue
        kv_offload = None
        if eng.kv_offload is not None:  # host-memory / SSD tiers under the prefix cache
            try:
                kv_offload = resolve_kv_offload(eng.kv_offload, plan, pool.accelerator)
            except KvOffloadError as exc:
                problems.append(PathProblem(where + exc.path, str(exc)))
                continue
        mml = eng.max_model_len or model.max_context
        if eng.max_model_len is not None and eng.max_model_len > model.max_context:
            problems.append(
                PathProblem(where + ("engine", "max_model_len"),
                            f"{mml} exceeds {model.id}'s context length {model.max_context}")
            )
            continue
        # A request is admitted only while 1% of blocks stay free (core.ADMIT_WATERMARK), so the
        # longest one must fit below that line, or vLLM would ignore it forever.
        admissible = (plan.num_blocks - int(ADMIT_WATERMARK * plan.num_blocks)) * plan.block_size
        if mml > admissible:
            problems.append(
                PathProblem(
                    where + ("engine", "max_model_len") if eng.max_model_len else where,
                    f"max_model_len {mml}{'' if eng.max_model_len else ' (the model context)'} is larger than "
                    f"what one replica's KV cache admits, {admissible} tokens ({plan.kv_capacity_tokens} in "
                    f"{plan.kv_per_gpu_gb:.1f} GiB per GPU after {plan.weights_per_gpu_gb:.1f} GiB of weights, less "
                    f"the 1% admission watermark); set engine.max_model_len <= {admissible}, or add GPUs / use "
                    f"fp8 KV cache",
                )
            )
            continue
        if not eng.enable_chunked_prefill and eng.max_num_batched_tokens < mml:
            problems.append(
                PathProblem(
                    where + ("engine", "max_num_batched_tokens"),
                    f"without chunked prefill a whole prompt must fit in one step: needs >= max_model_len "
                    f"({mml}); got {eng.max_num_batched_tokens}. Raise it, lower max_model_len, or enable "
                    f"chunked prefill",
                )
            )
            continue
        params = cost_params(model, pool.accelerator, tp, pp, dep.precision, eng.kv_cache_dtype, eng.cost_model, eng.kind,
                             spec=specdec, dp=dp, ep=ep, engine_version=eng.version)
        if dp > 1:  # the engine's limits are per attention-DP rank; one scheduler stands for all ranks
            eng = eng.model_copy(update={"max_num_seqs": eng.max_num_seqs * dp,
                                         "max_num_batched_tokens": eng.max_num_batched_tokens * dp})
            dep = dep.model_copy(update={"engine": eng})
        frontend = frontend_latency_s(eng.kind, pool.accelerator, eng.version) if eng.cost_model == "calibrated" else 0.0
        rs.deployments[name] = ResolvedDeployment(name, dep, model, pool, plan, params, mml, lora, kv_offload, frontend)

    for pname, n in used.items():
        have = sc.pools[pname].count
        if n > have:
            users = [
                f"{d} ({x.replicas if x.autoscaling is None else f'autoscaling.max_replicas {x.autoscaling.max_replicas}'}"
                f" x tp{x.tensor_parallel} x pp{x.pipeline_parallel}{f' x dp{x.data_parallel}' if x.data_parallel > 1 else ''})"
                for d, x in sc.deployments.items()
                if x.pool == pname
            ]
            problems.append(
                PathProblem(
                    ("pools", pname, "count"),
                    f"deployments need {n} accelerators but the pool has {have}: {', '.join(users)}",
                )
            )

    from stacksim.scenario.resolve_agents import resolve_agents
    from stacksim.scenario.resolve_disagg import resolve_disagg
    from stacksim.scenario.resolve_stack import resolve_stack

    resolve_stack(rs, problems)
    resolve_agents(rs, problems)
    for path, msg in workload_problems(sc, {n: rd.lora for n, rd in rs.deployments.items()}):
        problems.append(PathProblem(path, msg))
    resolve_disagg(rs, problems)
    for wname, w in sc.workloads.items():
        where = ("workloads", wname)
        if isinstance(w.arrival, S.Offline) and w.max_requests is None:
            problems.append(
                PathProblem(where + ("arrival", "kind"), "kind 'offline' needs max_requests: how many requests arrive at time zero")
            )
        is_trace = isinstance(w.arrival, S.TraceArrivals)
        if is_trace:
            _check_trace(rs, where + ("arrival",), w.arrival.path, w.arrival.format, problems)
        for which in ("input_tokens", "output_tokens"):
            spec = getattr(w, which)
            if isinstance(spec, S.TraceLength) and not is_trace:
                problems.append(
                    PathProblem(where + (which, "kind"),
                                "kind 'trace' pairs lengths with a trace's timestamps; it needs arrival kind 'trace'. "
                                "Use kind 'empirical' (with a path) to draw lengths from a trace file instead")
                )
            if isinstance(spec, S.EmpiricalLength):
                _check_trace(rs, where + (which,), spec.path, spec.format, problems)
                _check_empirical(rs, where + (which,), spec, which.removesuffix("_tokens"), problems)
        # The arrival process refuses these at run time too (workload/arrivals.py): found here first.
        if isinstance(w.arrival, S.MultiStage) and w.arrival.nominal_end_s > sc.horizon_s:
            end = w.arrival.nominal_end_s
            problems.append(PathProblem(where + ("arrival", "stages"), f"the stages run {end:g} s (durations plus gap_s) "
                                        f"but horizon_s is {sc.horizon_s:g}; raise horizon_s to at least {end:g} or "
                                        "shorten the stages"))
    # Sized last, with the trace files read: an oversized run is refused before it allocates anything.
    for path, msg in size_problems(rs):
        problems.append(PathProblem(path, msg))
    return rs, problems


def _check_trace(rs: ResolvedScenario, where: FieldPath, rel: str, fmt: str | None, problems: list[PathProblem]) -> None:
    path = rs.path(rel)
    try:
        load_trace(path, fmt)
    except TraceFormatError as exc:
        problems.append(PathProblem(where + ("path",), str(exc)))
        return
    rs.trace_paths[where] = path


def _check_empirical(rs: ResolvedScenario, where: FieldPath, spec: S.EmpiricalLength, which: str,
                     problems: list[PathProblem]) -> None:
    """An empirical length needs positive values in its column (the sampler draws from those)."""
    path = rs.trace_paths.get(where)
    if path is None:  # the trace itself was reported
        return
    tr = load_trace(path, spec.format)
    col = tr.input_tokens if (spec.field or which) == "input" else tr.output_tokens
    if not (col > 0).any():
        problems.append(PathProblem(where + ("path",), f"trace '{path}' has no positive {spec.field or which} lengths"))


def problems_to_report(problems: list[PathProblem], lines: dict[FieldPath, int]) -> list[Problem]:
    from stacksim.scenario.yamlio import dotted, line_of

    return [Problem(p.message, field=dotted(p.path), line=line_of(lines, p.path)) for p in problems]
