"""KV-cache tiers below HBM: evicted prefix blocks kept in host (CPU) memory and optionally on a
local NVMe SSD, and loaded back when a later prompt hits them (``engine.kv_offload``).

What it models, following vLLM's ``OffloadingConnector`` (CPU primary tier, optional secondary
tiers "staged through the CPU primary tier", LRU eviction) and LMCache's local CPU / local disk
backends:

- **Where blocks go.** A block the GPU prefix cache (:mod:`.prefix_cache`) evicts moves to the
  CPU tier (most recently used end); what the CPU tier evicts (LRU) moves to the SSD tier when
  there is one, else it is gone; what the SSD tier evicts is gone. Tiers are exclusive: a block
  lives in one place. When a request's prefill reuses a block from a lower tier, the block
  moves back into HBM (pinned by that request, as an HBM hit is). The copies out of HBM are
  asynchronous in both engines and cost no step time here.
- **Lookup.** A request's hit is the longest run of its leading block ids each held in *some*
  tier (vLLM asks the connector for the tokens after its own GPU hit), capped and rounded as an
  HBM hit is (:func:`.prefix_cache.hit_tokens`).
- **Load time.** The blocks of the hit held below HBM are loaded before the prefill of the step
  that admits the request, and the step is longer by the load (LMCache and vLLM's connector
  load a request's KV before the forward pass that uses it; asynchronous loading is not
  modelled): every GPU copies its own shard over its own host link,
  ``cpu_to_gpu_s = (cpu + ssd tokens) x KV bytes per token per GPU / host link + host latency``,
  and SSD blocks are first read into host memory,
  ``ssd_s = ssd tokens x KV bytes per token (all GPUs) / SSD read rate + SSD latency``; a
  request's load is the sum. Loads of requests admitted in the same step add up (one link).
- **Capacity.** ``cpu_gib`` and ``ssd_gib`` per replica, all its GPUs' shards together, divided
  by the replica's KV bytes per token.

Sources of the defaults (each can be overridden in the scenario):

- Host link: the accelerator's PCIe generation (catalog ``pcie_gen``) at x16, after line
  encoding, times the TLP payload efficiency (:func:`stacksim.serving.lora.host_link`,
  PCI-SIG base specifications and Intel AN 456, shared with LoRA adapter loads). Superchips
  with NVLink-C2C to their host (GH200, GB200, GB300) are faster: set ``cpu_to_gpu_gb_per_s``.
- Host latency: 7 us per load, the upper end of the 5-7 us per-call overhead of
  ``cudaMemcpyAsync`` measured by Wu et al., "DualPath: Breaking the Storage Bandwidth Bottleneck
  in Agentic LLM Inference" (arXiv 2602.21548, 2026), section 5.2.
- SSD: Kioxia CD7 (PCIe 5.0 E3.S data-centre NVMe), Kioxia's figures: sequential read up to
  6,450 MB/s, read latency 75 us (ComputerBase, "Kioxia CD7: PCIe-5.0-SSDs mit halber Kraft im
  neuen Format", 2021-11).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stacksim.serving.lora import host_link

if TYPE_CHECKING:
    from stacksim.catalog import Accelerator
    from stacksim.scenario.schema_kv_offload import KvOffload
    from stacksim.serving.costmodel import MemoryPlan

GIB = 1024**3
# Per-load overhead of a host-to-GPU copy: DualPath (arXiv 2602.21548), section 5.2, measures
# 5-7 us per cudaMemcpyAsync call; the upper end.
CPU_LATENCY_MS = 0.007
# Kioxia CD7 (PCIe 5.0 x4 E3.S NVMe SSD): sequential read up to 6,450 MB/s, read latency 75 us
# (Kioxia's specification as reported by ComputerBase, 2021-11).
SSD_READ_GB_PER_S = 6.45
SSD_LATENCY_MS = 0.075
SSD_BASIS = "Kioxia CD7 NVMe SSD (PCIe 5.0 E3.S): sequential read 6.45 GB/s, read latency 75 us (Kioxia spec)"

TIER_HBM, TIER_CPU, TIER_SSD = 0, 1, 2


class KvOffloadError(ValueError):
    """A kv_offload setting that cannot work; ``path`` is relative to the deployment."""

    def __init__(self, path: tuple[str, ...], message: str):
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class ResolvedKvOffload:
    """A deployment's KV tiers: capacities in tokens per replica, rates and latencies."""

    cpu_gib: float
    ssd_gib: float  # 0: no SSD tier
    cpu_capacity_tokens: int
    ssd_capacity_tokens: int
    kv_bytes_per_token_per_gpu: float
    kv_bytes_per_token: float  # all GPUs of a replica
    cpu_to_gpu_gb_per_s: float
    cpu_latency_ms: float
    cpu_basis: str
    ssd_read_gb_per_s: float
    ssd_latency_ms: float
    ssd_basis: str

    def load_seconds(self, cpu_tokens: int, ssd_tokens: int) -> float:
        """Time to bring ``cpu_tokens`` from host memory and ``ssd_tokens`` from the SSD (via host
        memory) into HBM before a prefill (see the module docstring)."""
        t = 0.0
        if ssd_tokens > 0:
            t += ssd_tokens * self.kv_bytes_per_token / (self.ssd_read_gb_per_s * 1e9) + self.ssd_latency_ms / 1000.0
        moved = cpu_tokens + ssd_tokens
        if moved > 0:
            t += moved * self.kv_bytes_per_token_per_gpu / (self.cpu_to_gpu_gb_per_s * 1e9) + self.cpu_latency_ms / 1000.0
        return t


def resolve_kv_offload(spec: KvOffload, plan: MemoryPlan, acc: Accelerator) -> ResolvedKvOffload:
    """Capacities and rates of a deployment's ``engine.kv_offload``; raises :class:`KvOffloadError`
    naming the field when the host link rate is unknown or a tier holds no block."""
    where = ("engine", "kv_offload")
    link = host_link(acc)
    if spec.cpu_to_gpu_gb_per_s is not None:
        host = spec.cpu_to_gpu_gb_per_s
        basis = "given (engine.kv_offload.cpu_to_gpu_gb_per_s)"
    elif link is not None:
        host, basis = link[0], link[1] + ", per GPU"
    else:
        raise KvOffloadError(where + ("cpu_to_gpu_gb_per_s",), f"the catalog gives no PCIe generation for {acc.id}, so "
                             f"the host-to-accelerator copy rate is unknown; set engine.kv_offload.cpu_to_gpu_gb_per_s")
    per_gpu = plan.kv_bytes_per_token_per_gpu
    per_replica = per_gpu * plan.gpus_per_replica
    block_bytes = per_replica * plan.block_size
    cpu_tokens = int(spec.cpu_gib * GIB // per_replica)
    if cpu_tokens < plan.block_size:
        raise KvOffloadError(where + ("cpu_gib",), f"{spec.cpu_gib} GiB holds less than one KV block of this deployment "
                             f"({block_bytes / GIB:.4g} GiB per {plan.block_size}-token block); give at least that")
    ssd_gib = spec.ssd_gib or 0.0
    ssd_tokens = int(ssd_gib * GIB // per_replica)
    if spec.ssd_gib is not None and ssd_tokens < plan.block_size:
        raise KvOffloadError(where + ("ssd_gib",), f"{spec.ssd_gib} GiB holds less than one KV block of this deployment "
                             f"({block_bytes / GIB:.4g} GiB per {plan.block_size}-token block); give at least that or "
                             f"omit ssd_gib")
    if spec.ssd_read_gb_per_s is None and spec.ssd_latency_ms is None:
        ssd_basis = SSD_BASIS
    else:
        ssd_basis = (f"read rate {'given' if spec.ssd_read_gb_per_s is not None else 'Kioxia CD7 spec'}, latency "
                     f"{'given' if spec.ssd_latency_ms is not None else 'Kioxia CD7 spec'} (engine.kv_offload)")
    cpu_latency = spec.cpu_latency_ms if spec.cpu_latency_ms is not None else CPU_LATENCY_MS
    if spec.cpu_latency_ms is not None:
        basis += "; latency given (engine.kv_offload.cpu_latency_ms)"
    else:
        basis += "; latency 7 us per load (cudaMemcpyAsync call overhead, DualPath arXiv 2602.21548)"
    return ResolvedKvOffload(
        cpu_gib=spec.cpu_gib, ssd_gib=ssd_gib, cpu_capacity_tokens=cpu_tokens, ssd_capacity_tokens=ssd_tokens,
        kv_bytes_per_token_per_gpu=per_gpu, kv_bytes_per_token=per_replica,
        cpu_to_gpu_gb_per_s=host, cpu_latency_ms=cpu_latency,
        cpu_basis=basis,
        ssd_read_gb_per_s=spec.ssd_read_gb_per_s if spec.ssd_read_gb_per_s is not None else SSD_READ_GB_PER_S,
        ssd_latency_ms=spec.ssd_latency_ms if spec.ssd_latency_ms is not None else SSD_LATENCY_MS,
        ssd_basis=ssd_basis,
    )


class LowerTiers:
    """The CPU and SSD tiers of one replica: LRU maps of block id -> tokens, with the counters the
    summary reports. :class:`.prefix_cache.PrefixCache` drives it."""

    def __init__(self, cfg: ResolvedKvOffload):
        self.cfg = cfg
        self.cpu: OrderedDict[int, int] = OrderedDict()
        self.ssd: OrderedDict[int, int] = OrderedDict()
        self.cpu_tokens = 0
        self.ssd_tokens = 0
        self.offloaded_tokens = [0, 0, 0]  # tokens moved into each tier (cpu: from HBM; ssd: from cpu)
        self.dropped_tokens = 0  # tokens no tier kept
        self.loaded_tokens = [0, 0, 0]  # tokens of admissions' hits loaded from each tier
        self.loads = 0  # admissions that loaded something
        self.load_s = 0.0  # step time spent loading
        # Lookups not yet admitted: rid -> (cpu tokens, ssd tokens, load seconds).
        self.pending: dict[int, tuple[int, int, float]] = {}
        # First admissions that hit below HBM: rid -> (cpu tokens, ssd tokens).
        self.first: dict[int, tuple[int, int]] = {}

    def tier(self, h: int) -> int:
        """Where block ``h`` is below HBM (TIER_CPU, TIER_SSD), or -1."""
        if h in self.cpu:
            return TIER_CPU
        if h in self.ssd:
            return TIER_SSD
        return -1

    def take(self, h: int) -> None:
        """Block ``h`` moves into HBM: drop it from the lower tier holding it, if any."""
        t = self.cpu.pop(h, None)
        if t is not None:
            self.cpu_tokens -= t
            return
        t = self.ssd.pop(h, None)
        if t is not None:
            self.ssd_tokens -= t

    def offload(self, h: int, t: int) -> None:
        """HBM evicted block ``h`` (``t`` tokens): into the CPU tier, pushing its LRU blocks down."""
        cfg = self.cfg
        cpu = self.cpu
        cpu[h] = t
        self.cpu_tokens += t
        self.offloaded_tokens[TIER_CPU] += t
        while self.cpu_tokens > cfg.cpu_capacity_tokens:
            g, u = cpu.popitem(last=False)
            self.cpu_tokens -= u
            if cfg.ssd_capacity_tokens <= 0:
                self.dropped_tokens += u
                continue
            self.ssd[g] = u
            self.ssd_tokens += u
            self.offloaded_tokens[TIER_SSD] += u
            while self.ssd_tokens > cfg.ssd_capacity_tokens:
                _, w = self.ssd.popitem(last=False)
                self.ssd_tokens -= w
                self.dropped_tokens += w

    def clear(self) -> None:
        """The replica failed: its host memory (and its engine's index of the SSD) is gone."""
        self.cpu.clear()
        self.ssd.clear()
        self.cpu_tokens = self.ssd_tokens = 0
        self.pending.clear()


def kv_offload_summary(cfg: ResolvedKvOffload, tiers: list[LowerTiers], rids: list[int], cached: int) -> dict[str, Any]:
    """The ``prefix_cache.offload`` entry: where the cached tokens of first admissions came from
    (``rids``: the deployment's admitted requests, ``cached``: their cached tokens), loads, moves."""
    cpu = ssd = 0
    for t in tiers:
        first = t.first
        for rid in rids:
            v = first.get(rid)
            if v is not None:
                cpu += v[0]
                ssd += v[1]
    gpu = cached - cpu - ssd
    return {
        "cpu_gib": cfg.cpu_gib,
        "ssd_gib": cfg.ssd_gib,
        "cpu_capacity_tokens": cfg.cpu_capacity_tokens,
        "ssd_capacity_tokens": cfg.ssd_capacity_tokens,
        "kv_bytes_per_token": cfg.kv_bytes_per_token,
        "cpu_to_gpu_gb_per_s": round(cfg.cpu_to_gpu_gb_per_s, 4),
        "cpu_latency_ms": cfg.cpu_latency_ms,
        "cpu_basis": cfg.cpu_basis,
        "ssd_read_gb_per_s": cfg.ssd_read_gb_per_s,
        "ssd_latency_ms": cfg.ssd_latency_ms,
        "ssd_basis": cfg.ssd_basis,
        "cached_tokens_by_tier": {"gpu": gpu, "cpu": cpu, "ssd": ssd},
        "hit_share_by_tier": {k: round(v / cached, 6) if cached else 0.0 for k, v in
                              (("gpu", gpu), ("cpu", cpu), ("ssd", ssd))},
        "loads": sum(t.loads for t in tiers),
        "loaded_tokens": {"cpu": sum(t.loaded_tokens[TIER_CPU] for t in tiers),
                          "ssd": sum(t.loaded_tokens[TIER_SSD] for t in tiers)},
        "load_stall_s": round(sum(t.load_s for t in tiers), 9),
        "offloaded_tokens": {"to_cpu": sum(t.offloaded_tokens[TIER_CPU] for t in tiers),
                             "to_ssd": sum(t.offloaded_tokens[TIER_SSD] for t in tiers)},
        "dropped_tokens": sum(t.dropped_tokens for t in tiers),
    }
