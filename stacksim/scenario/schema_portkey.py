"""A Portkey gateway config, in Portkey's own vocabulary.

A config is a target: either a provider (``provider`` / ``virtual_key`` with ``override_params``)
or a ``strategy`` over nested ``targets``. Modes, inheritance and retry rules follow the
Portkey-AI/gateway source (shared/facts/REFERENCE.md section 1.2): ``single``, ``fallback``,
``loadbalance`` (weight default 1), ``conditional`` (queries over ``metadata`` / ``params`` /
``url.pathname`` with ``$eq $ne $gt $gte $lt $lte $in $nin $regex $and $or``); ``retry``,
``cache``, ``override_params`` and ``request_timeout`` inherited by nested targets unless a
target gives its own. Keys with no simulated effect (``api_key``, hooks, headers ...) are kept and
listed in the run's summary as ignored.

Portkey configs are JSON; YAML is a superset, so a config file or an inline mapping both load.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stacksim.scenario.schema_base import MAX_LATENCY_MS, Loose, Strict
from stacksim.scenario.schema_lora import GatewayLora

# Portkey's default retry status codes (src/globals.ts RETRY_STATUS_CODES; the docs add 529).
RETRY_STATUS_CODES = (429, 500, 502, 503, 504)
# Portkey docs: "up to 5 retry attempts".
MAX_RETRY_ATTEMPTS = 5


class PortkeyCondition(Strict):
    query: dict[str, Any] = Field(description="e.g. {\"metadata.plan\": {\"$eq\": \"paid\"}}; keys metadata.<tag>, params.max_tokens, url.pathname.")
    then: str = Field(description="The name of a target of this strategy.")


class PortkeyStrategy(Loose):
    mode: Literal["single", "fallback", "loadbalance", "conditional"]
    on_status_codes: list[int] | None = Field(
        default=None, description="fallback: move to the next target only on these codes (default: on any failure).")
    conditions: list[PortkeyCondition] | None = None
    default: str | None = Field(default=None, description="conditional: the target when no condition matches.")


class PortkeyRetry(Loose):
    attempts: int = Field(default=0, ge=0, le=MAX_RETRY_ATTEMPTS, description="Retries after the first try (Portkey: at most 5).")
    on_status_codes: list[int] | None = Field(default=None, description="Default: 429, 500, 502, 503, 504.")
    use_retry_after_headers: bool = Field(
        default=False, description="Wait what a 429's Retry-After says instead of the backoff; total wait capped at 60 s.")


class PortkeyCache(Loose):
    mode: Literal["simple", "semantic"]
    max_age: float | None = Field(default=None, gt=0, description="Seconds an answer stays cached. Omitted: the whole run.")


class PortkeyParams(Loose):
    model: str | None = Field(default=None, description="The provider's model id, or the deployment's model for a custom_host.")


class PortkeyTarget(Loose):
    """A Portkey target: a provider, or a strategy over nested targets."""

    name: str | None = Field(default=None, description="Named targets are what conditional rules pick.")
    provider: str | None = Field(default=None, description="openai, anthropic, google, vertex-ai, groq, cerebras, together-ai, "
                                 "fireworks-ai, bedrock, azure-openai, mistral-ai; '@<name>' or a virtual_key names a providers: entry.")
    virtual_key: str | None = Field(default=None, description="Names a providers: entry (Portkey keeps the credentials there).")
    custom_host: str | None = Field(default=None, description="A self-hosted deployment: http://<deployment name>:8000/v1.")
    override_params: PortkeyParams | None = Field(default=None, description="Request parameters; override_params.model picks the model.")
    weight: float | None = Field(default=None, ge=0, description="loadbalance weight; default 1, 0 takes the target out of rotation.")
    strategy: PortkeyStrategy | None = None
    targets: list[PortkeyTarget] | None = None
    retry: PortkeyRetry | int | None = None
    cache: PortkeyCache | Literal["simple", "semantic"] | None = None
    request_timeout: int | None = Field(default=None, ge=1, le=MAX_LATENCY_MS, description="Milliseconds per try; a timed-out try answers 408.")
    lora: GatewayLora | None = Field(
        default=None, description="stacksim, on a custom_host target: the LoRA adapter its calls use (a key of the "
        "deployment's engine.lora.adapters), or {tenants: {<caller's tags.tenant>: <adapter> | null}, default: <adapter>}. "
        "Omitted: the base model.")

    @model_validator(mode="after")
    def _shape(self) -> PortkeyTarget:
        if self.strategy is not None and not self.targets:
            raise ValueError(f"strategy mode '{self.strategy.mode}' needs a non-empty targets list")
        if self.targets and self.strategy is None:
            raise ValueError("targets need a strategy (mode: single, fallback, loadbalance or conditional)")
        if self.strategy is None and not (self.provider or self.virtual_key or self.custom_host):
            raise ValueError("a target names a provider, a virtual_key or a custom_host, or has a strategy with targets")
        if self.strategy is not None and (self.provider or self.virtual_key or self.custom_host):
            raise ValueError("a target is either a provider or a strategy over targets, not both")
        if self.lora is not None and self.custom_host is None:
            raise ValueError("lora belongs to a custom_host target (a self-hosted deployment); providers serve no adapters here")
        if isinstance(self.retry, int) and not 0 <= self.retry <= MAX_RETRY_ATTEMPTS:
            raise ValueError(f"retry attempts must be 0..{MAX_RETRY_ATTEMPTS}")
        return self


PortkeyTarget.model_rebuild()
