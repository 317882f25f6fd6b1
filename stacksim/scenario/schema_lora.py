"""Multi-LoRA serving (``deployments.<d>.engine.lora``, ``workloads.<w>.lora``): adapters per
tenant on one shared base model, as vLLM serves them (``--enable-lora``, ``--max-loras``,
``--max-lora-rank``, ``--max-cpu-loras``; defaults from vLLM's ``LoRAConfig``,
vllm/config/lora.py). The run-time side is ``serving/lora.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from stacksim.scenario.schema_base import Name, Strict

# vLLM's LoRAConfig.max_lora_rank is Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] (default 16).
MaxLoraRank = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]


class LoraAdapter(Strict):
    """One adapter: its rank and the linear layers it adapts (Hu et al., "LoRA", ICLR 2022)."""

    rank: int = Field(default=16, ge=1, description="r of the adapter (PEFT `r`); at most engine.lora.max_lora_rank.")
    target_modules: Literal["all_linear", "attention"] = Field(
        default="all_linear", description="all_linear: q, k, v, o, gate, up and down projections of every layer (PEFT "
        "'all-linear'); attention: q, k, v and o only.")


class LoraLoad(Strict):
    """Where adapters come from when a replica needs one it does not hold."""

    from_cpu_gb_per_s: float | None = Field(
        default=None, gt=0, description="Host-to-GPU copy rate per GPU, GB/s, for an adapter in the host-memory LRU "
        "cache. Omitted: the accelerator's PCIe generation (catalog) x16 at its encoded rate x 0.928, the TLP payload "
        "efficiency at a 256-byte max payload (serving/lora.py).")
    from_disk_gb_per_s: float = Field(
        default=2.0, gt=0, description="Read rate of an adapter not in the host cache, GB/s (default 2: the weight read "
        "rate autoscaling.load_gb_per_s uses, NVIDIA's Run:ai Model Streamer benchmark from an AWS io2 SSD).")


class Lora(Strict):
    """LoRA adapters on this deployment's base model (vLLM --enable-lora). Requests name an adapter
    through their workload; requests without one run the base model."""

    max_loras: int = Field(default=1, ge=1, description="Adapters in one batch = GPU adapter slots per replica (vLLM "
                           "--max-loras, default 1).")
    max_lora_rank: MaxLoraRank = Field(default=16, description="Rank every GPU slot is allocated for (vLLM "
                                       "--max-lora-rank, default 16; one of 1, 8, 16, 32, 64, 128, 256, 320, 512).")
    max_cpu_loras: int | None = Field(default=None, ge=1, description="Adapters kept in the host-memory LRU cache (vLLM "
                                      "--max-cpu-loras; omitted: max_loras, as vLLM); must be >= max_loras.")
    adapters: dict[Name, LoraAdapter] = Field(min_length=1, description="The adapters this deployment can serve, by name "
                                              "(the `model` a request names in vLLM's OpenAI API).")
    load: LoraLoad = Field(default_factory=LoraLoad, description="Adapter load rates.")

    @model_validator(mode="after")
    def _cpu_cache(self) -> Lora:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras}), as vLLM "
                             f"requires; omit it to use max_loras")
        return self


class LoraTenants(Strict):
    """A workload whose requests come from several tenants, each with its own adapter."""

    tenants: dict[Name, str | None] = Field(min_length=1, description="tenant -> adapter name (a key of the target's "
                                            "engine.lora.adapters), or null for the base model.")
    share: dict[Name, float] | None = Field(default=None, description="Relative share of the requests per tenant "
                                            "(weights >= 0). Omitted: equal shares. Drawn per request from the stream "
                                            "lora/<workload>.")

    @field_validator("share")
    @classmethod
    def _shares(cls, v: dict[str, float] | None, info: ValidationInfo) -> dict[str, float] | None:
        tenants = info.data.get("tenants")
        if v is None or tenants is None:
            return v
        if set(v) != set(tenants):
            missing = sorted(set(tenants) - set(v))
            extra = sorted(set(v) - set(tenants))
            raise ValueError("share must give a weight for every tenant and no other" + (
                f"; missing: {', '.join(missing)}" if missing else "") + (f"; not a tenant: {', '.join(extra)}" if extra else ""))
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("share weights must be >= 0 with a positive sum")
        return v


class CallerTenants(Strict):
    """Through the gateway (a model_list entry's ``litellm_params.lora``, a Portkey target's
    ``lora``): the adapter chosen by who calls. The gateway knows its caller, so a request's
    tenant is its workload's (or agent fleet's) ``tags.tenant``, not a draw."""

    tenants: dict[Name, str | None] = Field(min_length=1, description="tenant (the caller's tags.tenant) -> adapter name "
                                            "(a key of the target deployment's engine.lora.adapters), or null for the base "
                                            "model.")
    default: str | None = Field(default=None, description="The adapter of callers whose tenant is not listed (or who have "
                                "no tags.tenant). Omitted: the base model.")


GatewayLora = str | CallerTenants
