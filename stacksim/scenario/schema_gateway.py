"""The gateway section, in LiteLLM's own vocabulary.

``model_list`` / ``router_settings`` / ``litellm_settings`` mean what they mean in a LiteLLM proxy
``config.yaml`` (docs.litellm.ai/docs/proxy/configs, docs/routing), so an existing config can be
pasted in or named with ``config_file``. LiteLLM keys that do not change simulated behaviour
(``api_key``, ``redis_host``, ``master_key`` ...) are accepted and listed in the run's summary as
ignored, never silently dropped; keys LiteLLM does not know are still errors where we model the
section (``router_settings`` strategies, fallbacks, cooldowns).

What a LiteLLM config cannot say (where the gateway runs, its own latency and capacity, the
keys / teams / users with their limits and budgets, guardrails' latency, how often a semantic
cache hits) sits beside it in stacksim's own fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stacksim.scenario.schema_base import MAX_COUNT, MAX_LATENCY_S, Loose, Name, Strict
from stacksim.scenario.schema_lora import GatewayLora
from stacksim.scenario.schema_portkey import PortkeyTarget


class LatencyMs(Strict):
    """A heavy-tailed latency: lognormal with the given median and (optionally) p95."""

    median_ms: float = Field(ge=0)
    p95_ms: float | None = Field(default=None, ge=0, description="Omitted: no spread (always the median).")

    @model_validator(mode="after")
    def _order(self) -> LatencyMs:
        if self.p95_ms is not None and self.p95_ms < self.median_ms:
            raise ValueError(f"p95_ms ({self.p95_ms:g}) must be >= median_ms ({self.median_ms:g})")
        return self


# --------------------------------------------------------------------------- LiteLLM vocabulary


class LitellmParams(Loose):
    model: str = Field(description="provider/model, e.g. openai/gpt-4o, anthropic/claude-sonnet-4-5-20250929, "
                       "or hosted_vllm/<deployment> for a self-hosted deployment of this scenario.")
    api_base: str | None = Field(default=None, description="Picks a provider's regional endpoint, e.g. https://eu.api.openai.com/v1.")
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    weight: float | None = Field(default=None, ge=0)
    order: int | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0, le=MAX_LATENCY_S, description="Whole-call timeout, seconds.")
    stream_timeout: float | None = Field(default=None, gt=0, le=MAX_LATENCY_S, description="Time-to-first-token timeout, seconds.")
    max_parallel_requests: int | None = Field(default=None, ge=1)
    region_name: str | None = None
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    lora: GatewayLora | None = Field(
        default=None, description="stacksim: the LoRA adapter a self-hosted target serves these calls with (a key of the "
        "deployment's engine.lora.adapters; vLLM serves an adapter under its own model name, hosted_vllm/<adapter>), or "
        "{tenants: {<caller's tags.tenant>: <adapter> | null}, default: <adapter>}. Omitted: the base model.")


class ModelInfo(Loose):
    id: str | None = None
    base_model: str | None = Field(default=None, description="The catalog model behind an Azure deployment name.")
    max_input_tokens: int | None = Field(default=None, ge=1)


class StacksimAnnotation(Strict):
    """stacksim's note on a model_list entry. LiteLLM keeps unknown keys of an entry (its
    ``Deployment`` model is ``extra="allow"``, litellm/types/router.py) and sends them to no
    provider, so the note can stay in the proxy's own config.yaml."""

    deployment: str = Field(description="The deployment (or disaggregated group) of this scenario that serves this "
                            "entry's api_base, e.g. a vLLM server behind openai/<model>.")


class ModelListEntry(Loose):
    model_name: str = Field(description="The public name (model group) clients ask for.")
    litellm_params: LitellmParams
    model_info: ModelInfo = Field(default_factory=ModelInfo)
    stacksim: StacksimAnnotation | None = None


RoutingStrategy = Literal[
    "simple-shuffle", "least-busy", "usage-based-routing", "usage-based-routing-v2",
    "latency-based-routing", "cost-based-routing",
]

FallbackList = list[dict[str, list[str]]]


class RoutingStrategyArgs(Loose):
    ttl: float | None = Field(default=None, gt=0, description="Latency samples expire after this (s); LiteLLM: 1 h.")
    lowest_latency_buffer: float | None = Field(default=None, ge=0)
    max_latency_list_size: int | None = Field(default=None, ge=1)


class AliasItem(Loose):
    """A model_group_alias value in LiteLLM's long form (RouterModelGroupAliasItem)."""

    model: str
    hidden: bool = False


class RouterSettings(Loose):
    routing_strategy: RoutingStrategy = "simple-shuffle"
    routing_strategy_args: RoutingStrategyArgs = Field(default_factory=RoutingStrategyArgs)
    num_retries: int | None = Field(default=None, ge=0)
    retry_after: float | None = Field(default=None, ge=0, le=MAX_LATENCY_S, description="Minimum wait before a retry, seconds.")
    timeout: float | None = Field(default=None, gt=0, le=MAX_LATENCY_S)
    allowed_fails: int | None = Field(default=None, ge=0)
    cooldown_time: float | None = Field(default=None, ge=0)
    disable_cooldowns: bool = False
    fallbacks: FallbackList | None = None
    context_window_fallbacks: FallbackList | None = None
    content_policy_fallbacks: FallbackList | None = None
    default_fallbacks: list[str] | None = None
    enable_pre_call_checks: bool = False
    model_group_alias: dict[str, str | AliasItem] | None = Field(
        default=None, description="Requested name -> the model_name whose deployments serve it, as LiteLLM's router "
        "rewrites the request before it picks a deployment.")


class CacheParams(Loose):
    type: str = Field(default="local", description="local, redis, s3 ... or redis-semantic / qdrant-semantic.")
    ttl: float | None = Field(default=None, gt=0)
    similarity_threshold: float | None = Field(default=None, ge=0, le=1)


class LitellmSettings(Loose):
    num_retries: int | None = Field(default=None, ge=0)
    request_timeout: float | None = Field(default=None, gt=0, le=MAX_LATENCY_S)
    fallbacks: FallbackList | None = None
    context_window_fallbacks: FallbackList | None = None
    content_policy_fallbacks: FallbackList | None = None
    default_fallbacks: list[str] | None = None
    cache: bool = False
    cache_params: CacheParams = Field(default_factory=CacheParams)


class LitellmConfig(Loose):
    """A LiteLLM proxy config.yaml, as `gateway.config_file` reads it."""

    model_list: list[ModelListEntry]
    router_settings: RouterSettings | None = None
    litellm_settings: LitellmSettings | None = None
    general_settings: Loose | None = None
    environment_variables: dict[str, Any] | None = None


# --------------------------------------------------------------------------- stacksim's additions


class Limits(Strict):
    """Rate limits and a budget for one key, team or user (LiteLLM's names)."""

    rpm_limit: int | None = Field(default=None, ge=1, description="Requests in any 60 s window.")
    tpm_limit: int | None = Field(default=None, ge=1, description="Tokens (input + output) in any 60 s window.")
    max_parallel_requests: int | None = Field(default=None, ge=1)
    max_budget: float | None = Field(default=None, ge=0, description="USD per budget_duration.")
    budget_duration: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?[smhd]$", description="e.g. 30s, 1h, 30d.")


class Guardrail(Strict):
    """A guardrail with its own latency: pre_call (before the model), during_call (beside it; the
    answer is held until it passes) or post_call (after the answer)."""

    name: Name
    mode: Literal["pre_call", "during_call", "post_call"]
    latency: LatencyMs
    block_rate: float = Field(default=0.0, ge=0, le=1, description="Share of requests it blocks (answered 400).")


class CacheModel(Strict):
    """How the response cache behaves beyond LiteLLM's settings."""

    semantic_hit_rate: float = Field(
        default=0.0, ge=0, le=1,
        description="Semantic cache: share of exact-cache misses that find a close-enough earlier prompt.")
    lookup: LatencyMs | None = Field(default=None, description="Cache lookup latency. Omitted: none.")


class Gateway(Strict):
    """An AI gateway in front of self-hosted deployments and hosted providers."""

    kind: Literal["litellm", "portkey"] = Field(
        default="litellm", description="litellm: model_list and router settings (LiteLLM proxy); "
        "portkey: configs, each a Portkey config (strategy / targets) that workloads name as their target.")
    config_file: str | None = Field(default=None, description="litellm: a LiteLLM proxy config.yaml (relative to this file); "
                                    "its model_list and settings are used when these are not given here.")
    configs: dict[Name, PortkeyTarget | str] | None = Field(
        default=None, description="portkey: named Portkey configs, inline or as the path of a config .json/.yaml file "
        "(relative to this file); a workload's target is a config name.")
    model_list: list[ModelListEntry] | None = None
    router_settings: RouterSettings | None = None
    litellm_settings: LitellmSettings | None = None
    general_settings: Loose | None = None
    environment_variables: dict[str, Any] | None = Field(
        default=None, description="LiteLLM's environment_variables section; a simulation reads no environment (listed as ignored).")
    api_base_deployments: dict[str, Name] = Field(
        default_factory=dict, description="litellm: which deployment (or disaggregated group) of this scenario serves a "
        "self-hosted api_base of model_list (an api_base as written, or its host[:port]), so a proxy config.yaml loads unedited.")
    regions: list[str] = Field(default_factory=lambda: ["us-east"], min_length=1,
                               description="Regions with a gateway instance; a request enters the nearest one its residency allows.")
    instances_per_region: int = Field(default=1, ge=1, le=MAX_COUNT)
    instance_usd_per_hour: float = Field(default=0.0, ge=0, description="What one gateway instance costs to run (spend).")
    workers_per_instance: int = Field(default=4, ge=1, description="Requests a gateway instance processes at once "
                                      "(LiteLLM benchmark pods: 4 workers on 4 vCPUs, docs.litellm.ai/docs/benchmarks).")
    overhead: LatencyMs = Field(
        default_factory=lambda: LatencyMs(median_ms=2.0, p95_ms=8.0),
        description="Gateway processing per request. Default: LiteLLM's measured overhead, median 2 ms, p95 8 ms "
        "(4 instances at 1,170 RPS, docs.litellm.ai/docs/benchmarks).")
    cache_model: CacheModel = Field(default_factory=CacheModel)
    guardrails: list[Guardrail] = Field(default_factory=list)
    keys: dict[Name, Limits] = Field(default_factory=dict, description="Virtual keys; a workload names its key in tags.key.")
    teams: dict[Name, Limits] = Field(default_factory=dict)
    users: dict[Name, Limits] = Field(default_factory=dict)
    in_flight_on_failure: Literal["retry", "lose"] = Field(
        default="retry", description="Requests on a replica that fails: retried by the gateway, or lost.")

    @model_validator(mode="after")
    def _kind_fields(self) -> Gateway:
        litellm = [k for k in ("config_file", "model_list", "router_settings", "litellm_settings") if getattr(self, k) is not None]
        if self.kind == "portkey":
            if litellm:
                raise ValueError(f"kind portkey takes configs; {', '.join(litellm)} belong to kind litellm")
            if not self.configs:
                raise ValueError("kind portkey needs configs: {name: <Portkey config>} (or a config file path)")
        elif self.configs is not None:
            raise ValueError("configs belong to kind portkey; set kind: portkey, or use model_list for LiteLLM")
        return self


class PromptRepeats(Strict):
    """Prompts drawn from a finite set with Zipf popularity, so an exact cache can hit."""

    unique: int = Field(ge=1, description="Number of distinct prompts.")
    zipf_s: float = Field(default=1.0, ge=0, description="Popularity exponent (0 = uniform).")
