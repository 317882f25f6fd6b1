"""The scenario format: one pydantic v2 model per section, strict (unknown keys are errors).

Units live in field names (``_s``, ``_ms``, ``_gb``, ``_usd_per_gpu_hour``). Pluggable policies
(arrival processes, length distributions, load balancers, engines) are discriminated unions on a
``kind`` field, so adding one is adding a class here and a function in the layer that runs it.

Regions, residency, providers and faults live in :mod:`.schema_stack`, the gateway in
:mod:`.schema_gateway`; sections still to come (agents, finops) get their own module when their
layer lands; see ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from stacksim.catalog import versions
from stacksim.scenario.schema_base import MAX_COUNT, MAX_LABEL_CHARS, Label, Name, Strict
from stacksim.scenario.schema_disagg import Disaggregated
from stacksim.scenario.schema_gateway import Gateway, PromptRepeats
from stacksim.scenario.schema_kv_offload import KvOffload
from stacksim.scenario.schema_lifecycle import Lifecycle
from stacksim.scenario.schema_limits import ScenarioLimits
from stacksim.scenario.schema_lora import Lora, LoraTenants
from stacksim.scenario.schema_stack import Fault, ProviderEndpoint, Region, ResidencyClass

# --------------------------------------------------------------------------- compute


class Owned(Strict):
    """Owned accelerators: the purchase amortised straight-line, plus power (at TDP, times PUE)."""

    capex_usd_per_gpu: float = Field(gt=0, description="Purchase price per accelerator, including its share of the server.")
    amortization_years: float = Field(default=4.0, gt=0, description="Straight-line depreciation period (an assumption; 3-5 years is usual).")
    power_usd_per_kwh: float = Field(ge=0)
    pue: float = Field(default=1.56, ge=1, description="Power usage effectiveness; default: the 2024 industry average "
                       "(Uptime Institute Global Data Center Survey 2024, 1.56).")
    power_draw_fraction: float = Field(default=1.0, gt=0, le=1, description="Mean draw as a share of TDP (1 = at TDP all the "
                                       "time, an upper bound).")


class Pool(Strict):
    """A pool of identical accelerators in one region."""

    accelerator: str = Field(description="Catalog id, e.g. h100-sxm (see `stacksim catalog`).")
    count: int = Field(ge=1, le=MAX_COUNT, description="Number of accelerators (GPUs/chips) in the pool.")
    region: str = Field(default="us-east", description="A catalog region id or a key of regions:.")
    purchase: Literal["on_demand", "reserved_1y", "reserved_3y", "spot", "owned"] = Field(
        default="on_demand", description="How the capacity is bought: on demand, reserved for 1 or 3 years (paid whether "
        "used or not), spot (cheaper; can be preempted, see faults), or owned (amortised purchase plus power).")
    price_usd_per_gpu_hour: float | None = Field(
        default=None,
        ge=0,
        description="Price per accelerator-hour. Omitted: from the price catalog (shared/facts/gpu_prices.csv) for the "
        "purchase type, price_provider and price_tier; the resolved scenario and summary show the value and its basis.",
    )
    price_provider: str | None = Field(default=None, description="Price this pool at one provider's rows (AWS, Azure, GCP, "
                                       "CoreWeave, Lambda, Nebius, RunPod, Hyperstack ...). Omitted: the median over providers.")
    price_tier: Literal["hyperscaler", "neocloud"] | None = Field(default=None, description="Price at this tier's rows only.")
    owned: Owned | None = Field(default=None, description="purchase: owned: what the accelerators cost to buy and to run.")

    @model_validator(mode="after")
    def _owned(self) -> Pool:
        if self.purchase == "owned" and self.owned is None and self.price_usd_per_gpu_hour is None:
            raise ValueError("purchase: owned needs owned: {capex_usd_per_gpu, power_usd_per_kwh} (or a price_usd_per_gpu_hour)")
        if self.owned is not None and self.purchase != "owned":
            raise ValueError(f"owned: applies to purchase: owned, not {self.purchase}")
        return self


# --------------------------------------------------------------------------- models


class Architecture(Strict):
    """An inline model architecture (the fields of a Hugging Face config.json that cost depends on)."""

    params_total_b: float = Field(gt=0)
    params_active_b: float | None = Field(default=None, gt=0, description="Defaults to total (dense).")
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int | None = Field(default=None, ge=1, description="Defaults to hidden / heads.")
    intermediate_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    attention: Literal["mha", "gqa", "mqa", "mla"] = "gqa"
    kv_lora_rank: int | None = Field(default=None, ge=1)
    qk_rope_head_dim: int | None = Field(default=None, ge=0)
    max_context: int = Field(ge=1)


class ModelSpec(Strict):
    """A model by catalog id, or an inline architecture."""

    catalog: str | None = Field(default=None, description="Catalog id, e.g. llama-3.1-8b.")
    architecture: Architecture | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ModelSpec:
        if (self.catalog is None) == (self.architecture is None):
            raise ValueError("give exactly one of 'catalog' (a catalog id) or 'architecture'")
        return self


# --------------------------------------------------------------------------- serving


class Speculative(Strict):
    """Speculative decoding (vLLM's speculative_config: method, num_speculative_tokens, model).

    Each decode step proposes k tokens and the target verifies them in one pass; with per-token
    acceptance a a step emits (1 - a^(k+1)) / (1 - a) tokens per sequence on average (Leviathan
    et al., ICML 2023, eq. 1)."""

    method: Literal["draft_model", "mtp", "ngram"] = Field(
        description="draft_model: a smaller model proposes (k forward passes per step); mtp: the model's own "
        "multi-token-prediction layer (DeepSeek-V3 style, one extra layer per proposed token); ngram: prompt lookup "
        "(no model, negligible compute).")
    num_speculative_tokens: int = Field(ge=1, description="k, tokens proposed per step (vLLM num_speculative_tokens).")
    acceptance_rate: float = Field(
        ge=0, lt=1, description="a, the probability that each proposed token is accepted (measured on your traffic; "
        "EAGLE reports ~0.8 on chat, DeepSeek-V3 85-90% for its MTP's second token).")
    draft_model: str | None = Field(
        default=None, validate_default=True, description="method draft_model: the proposer, a key of `models:` or a "
        "catalog model id sharing the target's tokenizer (vLLM speculative_config.model).")

    @field_validator("draft_model")
    @classmethod
    def _draft_for_draft_model(cls, v: str | None, info: ValidationInfo) -> str | None:
        method = info.data.get("method")
        if method == "draft_model" and v is None:
            raise ValueError("method draft_model needs draft_model: a key of models: or a catalog model id "
                             "(e.g. llama-3.2-3b for a Llama-3.1 target)")
        if method in ("mtp", "ngram") and v is not None:
            raise ValueError(f"draft_model applies to method: draft_model only; method {method} has no draft model")
        return v


class VllmEngine(Strict):
    """vLLM-style continuous batching. Defaults are vLLM's (EngineArgs, v0.6-v0.8 docs)."""

    kind: Literal["vllm"] = "vllm"
    version: str | None = Field(
        default=None, description="The engine release (e.g. 0.15.1, 0.6.3; TensorRT-LLM 0.17, 1.0): picks the fitted "
        "profile of its band (vLLM 0.4-0.5, 0.6-0.9, 0.10+; SGLang 0.3-0.4, 0.5; TensorRT-LLM 0.14-0.17, 0.20-1.x; "
        "`stacksim catalog engines`). Omitted: the current release.")
    max_num_seqs: int = Field(default=256, ge=1, description="Max running sequences (vLLM default 256).")
    max_num_batched_tokens: int = Field(
        default=8192, ge=16, description="Token budget per step (vLLM chunked-prefill default 8192)."
    )
    enable_chunked_prefill: bool = Field(default=True, description="Mix prefill chunks with decodes.")
    async_scheduling: bool | None = Field(
        default=None, description="Plan step n+1 while step n runs (vLLM --async-scheduling, SGLang's overlap "
        "scheduler, TensorRT-LLM's overlap scheduler): no CPU gap between steps, but a request arriving during a "
        "step joins the step after next. Omitted: the release's default (on for vLLM 0.14+, SGLang 0.4+, "
        "TensorRT-LLM 1.0+; stacksim/catalog/versions.py).")
    block_size: int = Field(default=16, ge=1, le=1024, description="KV block size in tokens (vLLM default 16).")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="Fraction of accelerator memory the engine may use (vLLM default 0.9)."
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Longest prompt+output accepted; defaults to the model's context."
    )
    kv_cache_dtype: Literal["auto", "fp8"] = Field(default="auto", description="auto = model dtype.")
    prefix_caching: bool = Field(
        default=True,
        description="Automatic prefix caching: reuse the KV blocks of earlier prompts with the same "
        "leading block hashes (vLLM --enable-prefix-caching; vLLM CacheConfig.enable_prefix_caching: "
        "'Enabled by default for V1'). Only requests that carry block hashes (a Mooncake trace's "
        "hash_ids, agent contexts) can hit.",
    )
    cost_model: Literal["calibrated", "first_principles"] = Field(
        default="calibrated",
        description="calibrated: efficiencies fitted to measurements (calibration/REPORT.md); "
        "first_principles: the sourced constants of serving/costmodel.py.",
    )
    runtime_overhead_gb: float = Field(
        default=1.5,
        ge=0,
        description="Memory outside weights, activations and KV per GPU: CUDA context, CUDA graphs, "
        "NCCL buffers (vLLM start-up logs typically show 0.5-2 GiB).",
    )
    speculative: Speculative | None = Field(default=None, description="Speculative decoding; omitted: none.")
    lora: Lora | None = Field(default=None, description="Multi-LoRA serving (vLLM --enable-lora); omitted: the base model "
                              "only (serving/lora.py).")
    kv_offload: KvOffload | None = Field(
        default=None, description="KV-cache tiers: prefix blocks evicted from HBM go to host memory and optionally a "
        "local SSD, and are loaded back on a hit (vLLM OffloadingConnector, LMCache); omitted: none "
        "(serving/kv_offload.py).")

    @model_validator(mode="after")
    def _known_version(self) -> VllmEngine:
        if self.version is not None:
            try:
                versions.band(self.kind, self.version)
            except versions.UnknownVersion as exc:
                raise ValueError(f"version: {exc}") from None
        return self

    @model_validator(mode="after")
    def _offload_needs_prefix_caching(self) -> VllmEngine:
        if self.kv_offload is not None and not self.prefix_caching:
            raise ValueError("kv_offload keeps the blocks the prefix cache evicts, so it needs prefix_caching: true; "
                             "turn prefix caching on or drop kv_offload")
        return self


class SglangEngine(VllmEngine):
    """SGLang's scheduler defaults (sgl-project/sglang python/sglang/srt/server_args.py and
    model_runner.py, v0.4-v0.5). Fields keep vLLM's names; each description names SGLang's flag.
    Settings left out follow SGLang's own rules for the GPU and tensor parallelism
    (serving/engines.py). The scheduler is stacksim's continuous batching with chunked prefill;
    SGLang's default of not mixing prefill chunks into decode batches (--enable-mixed-chunk off)
    is not modelled."""

    kind: Literal["sglang"] = "sglang"  # type: ignore[assignment]
    max_num_seqs: int = Field(
        default=2048, ge=1, description="--max-running-requests. SGLang sizes its request pool from the KV "
        "cache, clamped to 2048-4096 (model_runner.py: min(max(tokens / context_len * 512, 2048), 4096)); the KV "
        "cache binds first in practice.")
    max_num_batched_tokens: int | None = Field(  # type: ignore[assignment]
        default=None, ge=16, description="--chunked-prefill-size; omitted: SGLang's rule by GPU memory, 2048 "
        "under 35 GiB, 8192 under 160 GiB, 16384 above (server_args.py).")
    gpu_memory_utilization: float | None = Field(  # type: ignore[assignment]
        default=None, gt=0, le=1, description="--mem-fraction-static; omitted: SGLang's rule by tensor "
        "parallelism, 0.88 (tp 1), 0.87 (tp 2), 0.85 (tp 4), 0.81 (tp 8 and more) (server_args.py).")


class TrtllmEngine(VllmEngine):
    """TensorRT-LLM's in-flight batching defaults (NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py).
    Fields keep vLLM's names; each description names TensorRT-LLM's. Its KV cache takes a fraction
    of the memory left free after weights and activations, not of the whole GPU."""

    kind: Literal["trtllm"] = "trtllm"  # type: ignore[assignment]
    max_num_seqs: int = Field(default=2048, ge=1, description="max_batch_size (llm_args.py default 2048).")
    max_num_batched_tokens: int = Field(default=8192, ge=16, description="max_num_tokens (llm_args.py default 8192).")
    block_size: int = Field(default=32, ge=1, le=1024, description="KvCacheConfig.tokens_per_block (default 32).")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="KvCacheConfig.free_gpu_memory_fraction: the share of the memory "
        "left free after weights, activations and runtime overhead that the KV cache takes (default 0.9; "
        "trtllm-bench runs in the perf overview often use 0.95).")


Engine = Annotated[VllmEngine | SglangEngine | TrtllmEngine, Field(discriminator="kind")]


class RoundRobin(Strict):
    kind: Literal["round_robin"]


class LeastOutstanding(Strict):
    kind: Literal["least_outstanding"]


class RandomBalancer(Strict):
    kind: Literal["random"]


class SharedQueue(Strict):
    """One queue per deployment; a replica pulls the next request when it has a free sequence slot."""

    kind: Literal["shared_queue"]


class LoraAffinity(Strict):
    """Adapter-aware routing (engine.lora): a request goes to the least-loaded replica that holds its
    adapter in a GPU slot or was last sent that adapter; else to the least-loaded replica."""

    kind: Literal["lora_affinity"]


LoadBalancer = Annotated[
    RoundRobin | LeastOutstanding | RandomBalancer | SharedQueue | LoraAffinity, Field(discriminator="kind")
]


class QueueDepthMetric(Strict):
    """Requests waiting (not yet admitted) per replica, vLLM's `num_requests_waiting`, as an
    average-value target: desired replicas = ceil(waiting in the deployment / target), the HPA's
    rule for an External metric with an AverageValue target. Requests held for a cold start and
    the shared queue count as waiting."""

    kind: Literal["queue_depth"]
    target_per_replica: float = Field(gt=0, description="Waiting requests per replica to aim for.")


class ConcurrencyMetric(Strict):
    """Requests in flight (running and waiting) per replica, the metric Knative's autoscaler scales
    on by default: desired replicas = ceil(in flight in the deployment / target). Unlike queue
    depth it does not fall to zero while replicas are busy, so it does not shed replicas that are
    keeping the queue empty."""

    kind: Literal["concurrency"]
    target_per_replica: float = Field(gt=0, description="Requests in flight per replica to aim for.")


class KvCacheMetric(Strict):
    """Share of KV blocks in use, averaged over serving replicas (vLLM's `gpu_cache_usage_perc`):
    desired replicas = ceil(serving x mean use / target), the HPA's utilisation rule."""

    kind: Literal["kv_cache"]
    target_used: float = Field(gt=0, le=1, description="KV-cache use to aim for, 0-1.")


class LatencyMetric(Strict):
    """A latency percentile of the requests that got their first token (`ttft`) or finished
    (`e2e`) in the last `window_s`: desired replicas = ceil(serving x percentile / target). With no
    request in the window the metric gives no signal (an idle deployment still scales down)."""

    kind: Literal["latency"]
    of: Literal["ttft", "e2e"] = Field(default="ttft", description="Which latency.")
    percentile: float = Field(gt=0, lt=100, description="e.g. 95 for p95.")
    target_ms: float = Field(gt=0)
    window_s: float = Field(default=60.0, gt=0, description="How far back the samples go; default 60 s, Knative's "
                            "autoscaler stable window (knative.dev, Configuring the autoscaler: stable-window).")


AutoscalingMetric = Annotated[QueueDepthMetric | ConcurrencyMetric | KvCacheMetric | LatencyMetric, Field(discriminator="kind")]


class Autoscaling(Strict):
    """Replicas added and removed on a metric, as the Kubernetes Horizontal Pod Autoscaler does
    (defaults from kubernetes.io, "Horizontal Pod Autoscaling" and the autoscaling/v2 API
    reference); min_replicas 0 scales to zero, and a request that finds no replica waits for a cold
    start (KEDA / Knative behaviour). A new replica serves after provisioning_s + model_load_s."""

    min_replicas: int = Field(default=1, ge=0, le=MAX_COUNT, description="Fewest replicas (HPA default 1); 0 allows scale to zero.")
    max_replicas: int = Field(ge=1, le=MAX_COUNT, description="Most replicas; the pool must hold max_replicas x tensor_parallel x "
                              "pipeline_parallel accelerators.")
    metric: AutoscalingMetric
    evaluation_interval_s: float = Field(default=15.0, gt=0, description="How often the metric is read and replicas "
                                         "decided (HPA --horizontal-pod-autoscaler-sync-period, default 15 s).")
    tolerance: float = Field(default=0.1, ge=0, description="No change while |metric / target - 1| <= tolerance "
                             "(HPA --horizontal-pod-autoscaler-tolerance, default 0.1).")
    scale_up_stabilization_s: float = Field(default=0.0, ge=0, description="Scale up to the lowest recommendation of "
                                            "this window (HPA behavior.scaleUp default 0: no stabilisation).")
    scale_down_stabilization_s: float = Field(default=300.0, ge=0, description="Scale down only to the highest "
                                              "recommendation of this window (HPA behavior.scaleDown default 300 s).")
    provisioning_s: float = Field(ge=0, description="From the decision to add a replica until its accelerators are "
                                  "acquired and its node and container are up (cloud GPU VMs take minutes; an already "
                                  "running node pool only the pod start). Charged: billing starts here.")
    model_load_s: float | None = Field(default=None, ge=0, description="Loading the weights (and engine start-up) after "
                                       "provisioning. Omitted: the replica's weight bytes / load_gb_per_s.")
    load_gb_per_s: float = Field(default=2.0, gt=0, description="Read rate of the weights when model_load_s is omitted, "
                                 "GB/s (1e9 bytes). Default 2: NVIDIA's Run:ai Model Streamer benchmark loaded "
                                 "Llama-3-8B (~15 GB) from an AWS io2 SSD in 7.53 s (developer.nvidia.com, \"Reducing "
                                 "Cold Start Latency for LLM Inference with NVIDIA Run:ai Model Streamer\"); vLLM's "
                                 "default safetensors loader from gp3 took 47.99 s there (~0.3 GB/s).")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        return self


class Deployment(Strict):
    """A model served by replicas on a pool."""

    model: str = Field(description="A key of `models:` or a catalog model id.")
    pool: str = Field(description="A key of `pools:`.")
    replicas: int = Field(default=1, ge=0, le=MAX_COUNT, description="Engine instances (with autoscaling: the starting count, "
                          "between min_replicas and max_replicas; 0 only with autoscaling).")
    tensor_parallel: int = Field(default=1, ge=1)
    pipeline_parallel: int = Field(default=1, ge=1)
    data_parallel: int = Field(
        default=1, ge=1, description="Attention data-parallel ranks inside one replica of a mixture-of-experts "
        "model (vLLM --data-parallel-size with --enable-expert-parallel; SGLang --dp with --enable-dp-attention): "
        "each rank of tensor_parallel GPUs runs its own sequences, the experts are shared. A replica then has "
        "tensor_parallel x pipeline_parallel x data_parallel GPUs; engine limits (max_num_seqs, "
        "max_num_batched_tokens) are per rank, as in vLLM. Needs expert_parallel = tensor_parallel x "
        "data_parallel.")
    expert_parallel: int = Field(
        default=1, ge=1, description="GPUs the routed experts are spread over: 1 (experts split by tensor "
        "parallelism like every other layer) or tensor_parallel x data_parallel (vLLM: 'the EP size is "
        "TP x DP'); each MoE layer then adds two all-to-alls over the scale-up link.")
    precision: Literal["bf16", "fp16", "fp8", "int8", "int4_awq", "int4_gptq", "fp4", "mxfp4", "nvfp4"] = "bf16"
    engine: Engine = Field(default_factory=VllmEngine, description="Serving engine settings; kind defaults to vllm.")
    load_balancer: LoadBalancer = Field(default_factory=lambda: RoundRobin(kind="round_robin"))
    autoscaling: Autoscaling | None = Field(default=None, description="Add and remove replicas on a metric "
                                            "(serving/autoscale.py). Omitted: a fixed count of replicas.")

    @model_validator(mode="after")
    def _replica_bounds(self) -> Deployment:
        a = self.autoscaling
        if a is None and self.replicas < 1:
            raise ValueError("replicas: 0 needs autoscaling (with min_replicas: 0, scale to zero); otherwise give at least 1")
        if a is not None and not a.min_replicas <= self.replicas <= a.max_replicas:
            raise ValueError(f"replicas ({self.replicas}, the starting count) must be between autoscaling.min_replicas "
                             f"({a.min_replicas}) and autoscaling.max_replicas ({a.max_replicas})")
        return self

    @model_validator(mode="before")
    @classmethod
    def _engine_kind(cls, data: object) -> object:
        # `engine:` without a kind means vllm (the resolved scenario shows it).
        if isinstance(data, dict) and isinstance(data.get("engine"), dict) and "kind" not in data["engine"]:
            data = {**data, "engine": {"kind": "vllm", **data["engine"]}}
        return data


# --------------------------------------------------------------------------- workloads


class Poisson(Strict):
    kind: Literal["poisson"]
    rate_per_s: float = Field(gt=0)


class GammaArrivals(Strict):
    """Renewal process with Gamma gaps: mean 1/rate, coefficient of variation `cv` (cv=1 is Poisson)."""

    kind: Literal["gamma"]
    rate_per_s: float = Field(gt=0)
    cv: float = Field(gt=0)


class Deterministic(Strict):
    kind: Literal["deterministic"]
    rate_per_s: float = Field(gt=0)


TraceFormat = Literal["azure", "mooncake"]


class TraceArrivals(Strict):
    """Replay the timestamps of a trace file (Azure CSV or Mooncake JSONL)."""

    kind: Literal["trace"]
    path: str = Field(description="Relative to the scenario file.")
    format: TraceFormat | None = Field(default=None, description="Guessed from the extension if omitted.")
    time_scale: float = Field(default=1.0, gt=0, description="Multiply gaps by this (0.5 = twice the rate).")
    start_s: float = Field(default=0.0, ge=0, description="Skip the trace's first start_s seconds.")


class Offline(Strict):
    """Every request arrives at time zero (a maximum-throughput benchmark, as trtllm-bench and
    MLPerf Offline run it); needs the workload's max_requests."""

    kind: Literal["offline"]


class ClosedLoop(Strict):
    """A fixed population of clients, each sending its next request `think_time_s` after the
    previous one finished (closed loop: the load adapts to the latency)."""

    kind: Literal["closed_loop"]
    clients: int = Field(ge=1, le=MAX_COUNT)
    think_time_s: float = Field(default=0.0, ge=0)


class Stage(Strict):
    """One load stage (inference-perf ``load.stages[]``: ``rate``, ``duration``)."""

    rate_per_s: float = Field(gt=0, description="Requests per second in this stage.")
    duration_s: float = Field(gt=0, description="How long the stage sends, seconds.")


StageProcess = Literal["inference_perf_constant", "inference_perf_poisson", "poisson", "gamma", "deterministic"]


class MultiStage(Strict):
    """Load stages run one after another, each at its own rate for its own duration, as
    inference-perf's ``load: {type, stages: [{rate, duration}]}`` and guidellm's rate sweeps run
    them (workload/arrivals.py has each process's source)."""

    kind: Literal["multi_stage"]
    process: StageProcess = Field(
        description="How arrivals are spaced inside a stage. inference_perf_constant: inference-perf's `constant` "
        "(exactly int(rate x duration) requests, exponential gaps rescaled to fill the stage: the last one lands on "
        "its end); inference_perf_poisson: inference-perf's `poisson` (a Poisson(rate) count per second, spread "
        "within the second as `constant` does, until int(rate x duration) requests are sent); poisson: exponential "
        "gaps (guidellm `poisson`); gamma: Gamma gaps with coefficient of variation `cv`; deterministic: every "
        "1/rate (guidellm `constant`), int(rate x duration) requests, the last on the stage's end.")
    stages: list[Stage] = Field(min_length=1, description="Run in order; a stage starts gap_s after the one before "
                                "it ended: its last request for the inference_perf processes (inference_perf_poisson's "
                                "may come a little before or after rate x duration; arrivals past horizon_s are "
                                "dropped), the end of its duration for the others.")
    cv: float | None = Field(default=None, gt=0, validate_default=True,
                             description="process gamma: the gaps' coefficient of variation.")
    gap_s: float = Field(default=0.0, ge=0, description="Idle time between stages. inference-perf sleeps "
                         "load.interval (1.0 s by default) after a stage and gives the next a 1 s head start, so "
                         "2.0 reproduces it; its wait for the stage's last responses is not modelled.")

    @field_validator("stages")
    @classmethod
    def _whole_requests(cls, v: list[Stage], info: ValidationInfo) -> list[Stage]:
        process = info.data.get("process")
        if process in ("inference_perf_constant", "inference_perf_poisson", "deterministic"):
            for i, st in enumerate(v):
                if int(st.rate_per_s * st.duration_s) < 1:
                    raise ValueError(f"stages[{i}]: rate_per_s x duration_s = {st.rate_per_s * st.duration_s:g} is under "
                                     f"one request; process {process} sends int(rate x duration) requests")
        return v

    @field_validator("cv")
    @classmethod
    def _cv_for_gamma(cls, v: float | None, info: ValidationInfo) -> float | None:
        process = info.data.get("process")
        if process == "gamma" and v is None:
            raise ValueError("process gamma needs cv, the gaps' coefficient of variation (1 = Poisson, > 1 burstier)")
        if process is not None and process != "gamma" and v is not None:
            raise ValueError(f"cv applies to process: gamma only, not {process}")
        return v

    @property
    def nominal_end_s(self) -> float:
        """When the last stage ends if no stage overruns (stage durations plus the gaps)."""
        return sum(st.duration_s for st in self.stages) + self.gap_s * (len(self.stages) - 1)


Arrival = Annotated[
    Poisson | GammaArrivals | Deterministic | TraceArrivals | Offline | ClosedLoop | MultiStage,
    Field(discriminator="kind"),
]


class FixedLength(Strict):
    kind: Literal["fixed"]
    value: int = Field(ge=1)


# A lognormal whose [min, max] holds under 1% of its draws is the bounds' shape, not the lognormal's
# (a typo in median or sigma). Such a file never ran: the sampler's 64 redraws left half its
# requests unplaced (0.99^64 = 0.53) and the run failed, after validation had accepted it.
MIN_LOGNORMAL_SHARE = 0.01


class LognormalLength(Strict):
    """exp(N(ln median, sigma)), rounded, truncated to [min, max] by redrawing."""

    kind: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)
    min: int = Field(default=1, ge=1)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> LognormalLength:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        share = self.share_in_bounds()
        if share < MIN_LOGNORMAL_SHARE:
            raise ValueError(
                f"lognormal(median={self.median:g}, sigma={self.sigma:g}) almost never falls in [{self.min}, "
                f"{self.max if self.max is not None else 'no max'}] ({share:.2g} of its draws); widen the bounds or "
                f"move the median inside them (at least {MIN_LOGNORMAL_SHARE:.0%} of the draws must fall there)")
        return self

    def share_in_bounds(self) -> float:
        """The share of rounded draws that land in [min, max] (before truncation)."""
        hi = math.inf if self.max is None else self.max + 0.5
        if self.sigma == 0:
            return 1.0 if self.min <= round(self.median) <= hi else 0.0
        a = (math.log(self.min - 0.5) - math.log(self.median)) / self.sigma
        b = (math.log(hi) - math.log(self.median)) / self.sigma if hi < math.inf else math.inf
        if a > 0:  # both bounds above the median: the upper tail, where erfc keeps its precision
            a, b = -b, -a

        def cdf(x: float) -> float:
            return 0.5 * math.erfc(-x / math.sqrt(2))

        return cdf(b) - cdf(a)


class ExponentialLength(Strict):
    """Geometric (the discrete exponential) with the given mean, at least 1."""

    kind: Literal["exponential"]
    mean: float = Field(ge=1)


class UniformLength(Strict):
    kind: Literal["uniform"]
    low: int = Field(ge=1)
    high: int = Field(ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> UniformLength:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class EmpiricalLength(Strict):
    """Draw lengths independently from a trace file's column."""

    kind: Literal["empirical"]
    path: str = Field(description="Relative to the scenario file.")
    format: TraceFormat | None = None
    field: Literal["input", "output"] | None = Field(
        default=None, description="Which column; defaults to the one this distribution describes."
    )


class TraceLength(Strict):
    """The lengths written next to each timestamp of a `trace` arrival process."""

    kind: Literal["trace"]


Length = Annotated[
    FixedLength | LognormalLength | ExponentialLength | UniformLength | EmpiricalLength | TraceLength,
    Field(discriminator="kind"),
]


class SharedPrefix(Strict):
    """Prompts built as inference-perf's `shared_prefix` data generator builds them: num_groups
    system prompts, each shared by num_prompts_per_group prompts that add their own question; the
    requests cycle through the prompts in a shuffled order (workload/shared_prefix.py has the
    source). Each request's prompt carries prefix-block hashes, so the engine's prefix cache hits
    on the shared system prompt and on prompts seen before. Field names and defaults are
    inference-perf's."""

    num_groups: int = Field(default=10, ge=1, description="Distinct system prompts (inference-perf num_groups, alias "
                            "num_unique_system_prompts).")
    num_prompts_per_group: int = Field(default=10, ge=1, description="Prompts (questions) per system prompt "
                                       "(alias num_users_per_system_prompt); with multi_turn, chat sessions.")
    system_prompt_len: int = Field(default=100, ge=0, description="Tokens of each system prompt.")
    question_len: int = Field(default=50, ge=1, description="Tokens of each question.")
    multi_turn: bool = Field(default=False, description="inference-perf enable_multi_turn_chat: each prompt is a chat "
                             "session whose next turn sends the whole conversation so far (system prompt, then each "
                             "earlier question and answer) plus the question again; prompts grow turn by turn.")

    @property
    def prompt_tokens(self) -> int:
        """A single-turn prompt (and a session's first turn): system prompt + question."""
        return self.system_prompt_len + self.question_len


class Workload(Strict):
    """A stream of requests sent to one deployment, or to a model group of the gateway."""

    target: str = Field(description="A key of `deployments:`, a key of `disaggregated:` (a prefill/decode pair) or a "
                        "`model_name` of the gateway's model_list.")
    arrival: Arrival
    input_tokens: Length | None = Field(default=None, description="Prompt tokens. Required "
                                        "unless shared_prefix sets them (then omitted, or fixed at system_prompt_len + "
                                        "question_len).")
    output_tokens: Length
    shared_prefix: SharedPrefix | None = Field(default=None, description="Prompts sharing system prompts, with "
                                               "prefix-cache block hashes (inference-perf shared_prefix).")
    max_requests: int | None = Field(default=None, ge=1, description="Stop after this many arrivals.")
    tags: dict[Label, Label] = Field(default_factory=dict, description="e.g. {team: search, tenant: acme, key: sk-search, user: u1}")
    region: str | None = Field(default=None, description="Where the requests come from (gateway targets). Default: the gateway's first region.")
    residency: str | None = Field(default=None, description="A key of residency: limiting where the data may go.")
    prompts: PromptRepeats | None = Field(default=None, description="Repeated prompts (so an exact cache can hit). Default: all distinct.")
    lora: str | LoraTenants | None = Field(default=None, description="The LoRA adapter these requests use (a key of the "
                                           "target deployment's engine.lora.adapters), or tenants mapped to adapters. "
                                           "Omitted: the base model.")

    @model_validator(mode="after")
    def _prompt_lengths(self) -> Workload:
        sp = self.shared_prefix
        if sp is None:
            if self.input_tokens is None:
                raise ValueError("input_tokens is required (a length distribution), unless shared_prefix builds the prompts")
            return self
        want = sp.prompt_tokens
        inp = self.input_tokens
        if inp is None:
            # The resolved scenario shows the filled-in length; later turns of multi_turn add history to it.
            self.input_tokens = FixedLength(kind="fixed", value=want)
        elif getattr(inp, "value", None) != want or inp.kind != "fixed":
            got = f"{inp.kind}" + (f" {inp.value}" if isinstance(inp, FixedLength) else "")
            raise ValueError(f"with shared_prefix the prompt is system_prompt_len + question_len = {want} tokens; "
                             f"omit input_tokens or make it {{kind: fixed, value: {want}}} (got {got})")
        if self.arrival.kind == "closed_loop":
            raise ValueError("shared_prefix needs an open-loop arrival (closed_loop clients draw their prompts "
                             "independently)")
        if self.prompts is not None:
            raise ValueError("shared_prefix and prompts both decide which prompt a request sends; give one")
        return self


class Slo(Strict):
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


# --------------------------------------------------------------------------- the file


class Scenario(Strict):
    """A whole stack and its traffic, run for `horizon_s` simulated seconds."""

    name: str = Field(default="scenario", min_length=1, max_length=MAX_LABEL_CHARS,
                      description="Names the run (and its output folder, runs/<name>-seed<seed>).")
    description: str = ""
    seed: int = Field(default=0, ge=0)
    horizon_s: float = Field(gt=0, description="Simulated time; arrivals stop here.")
    warmup_s: float = Field(default=0.0, ge=0, description="Requests arriving earlier are not in latency stats.")
    drain: bool = Field(default=False, description="Keep running after the horizon until every request ends.")
    pools: dict[Name, Pool] = Field(default_factory=dict)
    models: dict[Name, ModelSpec] = Field(default_factory=dict)
    deployments: dict[Name, Deployment] = Field(default_factory=dict)
    workloads: dict[Name, Workload] = Field(default_factory=dict)
    slo: Slo = Field(default_factory=Slo)
    regions: dict[Name, Region] = Field(default_factory=dict, description="Custom regions, or overrides of catalog ones.")
    residency: dict[Name, ResidencyClass] = Field(default_factory=dict)
    providers: dict[Name, ProviderEndpoint] = Field(default_factory=dict, description="Hosted API endpoints.")
    gateway: Gateway | None = None
    disaggregated: dict[Name, Disaggregated] = Field(
        default_factory=dict, description="Prefill/decode pairs that workloads target by name (serving/disagg.py).")
    faults: list[Fault] = Field(default_factory=list)
    tools: dict[Name, Tool] = Field(default_factory=dict, description="MCP tools agents call.")
    vector_stores: dict[Name, VectorStore] = Field(default_factory=dict, description="Retrieval indexes and long-term memory stores.")
    agents: dict[Name, Agent] = Field(default_factory=dict)
    fleets: dict[Name, Fleet] = Field(default_factory=dict, description="Agent tasks: arrivals of tasks for an agent.")
    lifecycle: Lifecycle | None = Field(
        default=None,
        description="Deprecation risk: the chance each hosted model is retired by its provider within a planning "
        "horizon, from the deprecation history (shared/facts/model_deprecations.csv) and fitted per-provider hazards.",
    )
    limits: ScenarioLimits = Field(
        default_factory=ScenarioLimits, description="Run-size limits (requests, tokens), checked before anything is generated "
        "(stacksim validate and run); raise them to run past the defaults (stacksim/scenario/schema_limits.py).")

    @model_validator(mode="after")
    def _something_serves(self) -> Scenario:
        if not self.deployments and self.gateway is None:
            raise ValueError("nothing serves the workloads: give deployments: (self-hosted) or a gateway: (hosted providers)")
        if not self.workloads and not self.fleets:
            raise ValueError("no traffic: give workloads: (requests) or fleets: (agent tasks)")
        return self


# The agent sections use this module's arrival and length types: defined there, bound here.
from stacksim.scenario.schema_agents import Agent, Fleet, Tool, VectorStore

Scenario.model_rebuild()
