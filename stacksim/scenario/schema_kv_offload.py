"""KV-cache tiers (``deployments.<d>.engine.kv_offload``): prefix blocks evicted from HBM kept in
host memory and optionally on a local NVMe SSD, loaded back on a hit (vLLM's
``OffloadingConnector`` with its CPU tier and secondary tiers; LMCache's local CPU and local disk
backends). The run-time side, with the sources of the defaults, is ``serving/kv_offload.py``."""

from __future__ import annotations

from pydantic import Field

from stacksim.scenario.schema_base import Strict


class KvOffload(Strict):
    """Offload of evicted prefix-cache blocks to CPU memory and, optionally, a local SSD. Omitted:
    an evicted block is gone (vLLM without a KV connector)."""

    cpu_gib: float = Field(
        gt=0, description="Host memory for offloaded KV per replica, GiB, all its GPUs' shards together (vLLM "
        "OffloadingConnector cpu_bytes_to_use, LMCache max_local_cpu_size). HBM evictions land here; its own LRU "
        "evictions go to the SSD tier, or are dropped without one.")
    cpu_to_gpu_gb_per_s: float | None = Field(
        default=None, gt=0, description="Host-to-GPU copy rate per GPU, GB/s (each GPU loads its own shard). Omitted: "
        "the accelerator's PCIe generation (catalog pcie_gen) x16 at its encoded rate x 0.928 TLP efficiency, as for "
        "LoRA adapter loads. Set it for superchips whose host link is NVLink-C2C (GH200, GB200, GB300).")
    cpu_latency_ms: float | None = Field(
        default=None, ge=0, description="Fixed cost of one request's load from host memory, ms. Omitted: 0.007, the "
        "5-7 us per cudaMemcpyAsync call measured in DualPath (arXiv 2602.21548, sec. 5.2).")
    ssd_gib: float | None = Field(
        default=None, gt=0, description="Local NVMe SSD space for KV per replica, GiB (LMCache local_disk / "
        "max_local_disk_size; vLLM's secondary tier). Blocks the CPU tier evicts land here. Omitted: no SSD tier.")
    ssd_read_gb_per_s: float | None = Field(
        default=None, gt=0, description="SSD read rate for the replica, GB/s (all its drives together). Omitted: "
        "6.45, Kioxia CD7 PCIe 5.0 sequential read (Kioxia spec). Loads from the SSD then cross the host link.")
    ssd_latency_ms: float | None = Field(
        default=None, ge=0, description="Fixed cost of one request's read from the SSD, ms. Omitted: 0.075, Kioxia "
        "CD7 read latency (Kioxia spec).")
