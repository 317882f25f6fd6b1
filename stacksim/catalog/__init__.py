"""Catalogs of accelerators and models, read from the CSV files in ``data/``.

Every row carries a ``source`` column naming where its figures come from (datasheets, the
measured table ``shared/calibration/gpu_specs.csv``, each model's published ``config.json``).
Ids are lower-case; an unknown id raises :class:`UnknownId` listing the close matches.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).parent / "data"


class UnknownId(KeyError):
    """An id that is not in a catalog; ``suggestions`` holds the closest valid ids."""

    def __init__(self, kind: str, wanted: str, valid: list[str]):
        self.kind = kind
        self.wanted = wanted
        self.valid = valid
        self.suggestions = difflib.get_close_matches(wanted.lower(), valid, n=4, cutoff=0.5)
        super().__init__(self.message())

    def message(self) -> str:
        msg = f"unknown {self.kind} id '{self.wanted}'."
        if self.suggestions:
            msg += " Did you mean: " + ", ".join(self.suggestions) + "?"
        msg += f" Valid ids: {', '.join(self.valid)}."
        return msg

    def __str__(self) -> str:
        return self.message()


def _f(row: dict[str, str], key: str) -> float | None:
    v = (row.get(key) or "").strip()
    return float(v) if v else None


def _i(row: dict[str, str], key: str, default: int | None = None) -> int | None:
    v = (row.get(key) or "").strip()
    return int(float(v)) if v else default


@dataclass(frozen=True)
class Accelerator:
    """One accelerator (GPU or chip). TFLOPS are dense, per device."""

    id: str
    name: str
    vendor: str
    memory_gb: float
    memory_bandwidth_tbps: float
    peak_bf16_tflops: float
    peak_fp8_tflops: float | None
    peak_int8_tops: float | None
    peak_fp4_tflops: float | None
    measured_matmul_bf16_tflops: float | None
    interconnect: str
    interconnect_bandwidth_gbps: float
    scaleup_domain_gpus: int
    tdp_w: float | None
    default_price_usd_per_gpu_hour: float | None
    price_basis: str
    source: str
    pcie_gen: int | None = None  # host link generation (x16 assumed); None where the catalog has none

    def peak_tflops(self, compute_precision: str) -> float:
        """Dense peak for the tensor-core precision a quantisation actually computes in."""
        table = {
            "bf16": self.peak_bf16_tflops,
            "fp8": self.peak_fp8_tflops,
            "int8": self.peak_int8_tops,
            "fp4": self.peak_fp4_tflops,
        }
        value = table[compute_precision]
        if value is None:
            raise ValueError(f"{self.id} has no {compute_precision} tensor cores")
        return value

    def supports(self, compute_precision: str) -> bool:
        try:
            self.peak_tflops(compute_precision)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class ModelArch:
    """The shape of a transformer, as its published config gives it."""

    id: str
    params_total_b: float
    params_active_b: float
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_experts: int = 1
    experts_per_token: int = 1
    attention: str = "gqa"
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    max_context: int = 4096
    tied_embeddings: bool = False
    # OpenAI's gpt-oss model card counts active parameters without the input embedding table.
    active_excludes_input_embedding: bool = False
    source: str = "inline architecture in the scenario"

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def embedding_params(self) -> float:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def active_nonembedding_params(self) -> float:
        """Active parameters that multiply every token (embedding tables left out)."""
        emb = self.embedding_params
        if self.active_excludes_input_embedding and not self.tied_embeddings:
            emb -= self.vocab_size * self.hidden_size  # the published figure already left it out
        return max(0.0, self.params_active_b * 1e9 - emb)

    @property
    def expert_params(self) -> float:
        """Parameters in all routed experts: total = shared + E*e, active = shared + k*e."""
        if not self.is_moe or self.num_experts == self.experts_per_token:
            return 0.0
        e = (self.params_total_b - self.params_active_b) * 1e9 / (self.num_experts - self.experts_per_token)
        return max(0.0, e * self.num_experts)

    def kv_values_per_token_per_layer(self) -> int:
        """Cached scalars per token per layer: K and V heads, or MLA's compressed latent + rope key."""
        if self.attention == "mla":
            return int((self.kv_lora_rank or 512) + (self.qk_rope_head_dim or 64))
        return 2 * self.num_kv_heads * self.head_dim

    def attention_flops_per_pair(self) -> float:
        """FLOPs for one (query, key) pair summed over heads and layers (QK^T and PV)."""
        if self.attention == "mla":
            # Absorbed MLA (vLLM/SGLang decode path): scores over latent+rope, values over latent.
            per_head = 2.0 * ((self.kv_lora_rank or 512) + (self.qk_rope_head_dim or 64)) + 2.0 * (
                self.kv_lora_rank or 512
            )
        else:
            per_head = 4.0 * self.head_dim
        return per_head * self.num_attention_heads * self.num_layers


@lru_cache(maxsize=1)
def accelerators() -> dict[str, Accelerator]:
    out: dict[str, Accelerator] = {}
    with open(DATA / "accelerators.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            bf16 = _f(row, "peak_dense_bf16_tflops")
            out[row["id"]] = Accelerator(
                id=row["id"],
                name=row["name"],
                vendor=row["vendor"],
                memory_gb=_f(row, "memory_gb") or 0.0,
                memory_bandwidth_tbps=_f(row, "memory_bandwidth_tbps") or 0.0,
                peak_bf16_tflops=bf16 or 0.0,
                peak_fp8_tflops=_f(row, "peak_dense_fp8_tflops"),
                peak_int8_tops=_f(row, "peak_dense_int8_tops"),
                peak_fp4_tflops=_f(row, "peak_dense_fp4_tflops"),
                measured_matmul_bf16_tflops=_f(row, "measured_matmul_bf16_tflops"),
                interconnect=row.get("interconnect", ""),
                interconnect_bandwidth_gbps=_f(row, "interconnect_bandwidth_gbps") or 32.0,
                scaleup_domain_gpus=_i(row, "scaleup_domain_gpus", 1) or 1,
                tdp_w=_f(row, "tdp_w"),
                default_price_usd_per_gpu_hour=_f(row, "default_price_usd_per_gpu_hour"),
                price_basis=row.get("price_basis", ""),
                source=row.get("source", ""),
                pcie_gen=_i(row, "pcie_gen"),
            )
    return out


@lru_cache(maxsize=1)
def models() -> dict[str, ModelArch]:
    out: dict[str, ModelArch] = {}
    with open(DATA / "models.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            heads = _i(row, "num_attention_heads")
            hidden = _i(row, "hidden_size")
            assert heads and hidden
            total = _f(row, "params_total_b") or 0.0
            inter = _i(row, "moe_intermediate_size") if _i(row, "num_experts", 1) != 1 else None
            out[row["id"]] = ModelArch(
                id=row["id"],
                params_total_b=total,
                params_active_b=_f(row, "params_active_b") or total,
                num_layers=_i(row, "num_layers") or 1,
                hidden_size=hidden,
                num_attention_heads=heads,
                num_kv_heads=_i(row, "num_kv_heads", heads) or heads,
                head_dim=_i(row, "head_dim", hidden // heads) or hidden // heads,
                intermediate_size=_i(row, "intermediate_size") or inter or 4 * hidden,
                vocab_size=_i(row, "vocab_size") or 32000,
                num_experts=_i(row, "num_experts", 1) or 1,
                experts_per_token=_i(row, "experts_per_token", 1) or 1,
                attention=(row.get("attention") or "gqa").strip(),
                kv_lora_rank=_i(row, "kv_lora_rank"),
                qk_rope_head_dim=_i(row, "qk_rope_head_dim"),
                max_context=_i(row, "max_context", 4096) or 4096,
                tied_embeddings=(row.get("tied_embeddings") or "").strip().lower() == "true",
                active_excludes_input_embedding=(row.get("active_excludes_input_embedding") or "").strip().lower() == "true",
                source=row.get("source", ""),
            )
    return out


def get_accelerator(acc_id: str) -> Accelerator:
    table = accelerators()
    if acc_id not in table:
        raise UnknownId("accelerator", acc_id, sorted(table))
    return table[acc_id]


def get_model(model_id: str) -> ModelArch:
    table = models()
    if model_id not in table:
        raise UnknownId("model", model_id, sorted(table))
    return table[model_id]
