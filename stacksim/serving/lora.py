"""Multi-LoRA serving: adapters per tenant on one shared base model, as vLLM serves them.

A deployment with ``engine.lora`` holds, per replica, ``max_loras`` GPU adapter slots and a
host-memory LRU cache of ``max_cpu_loras`` adapters (vLLM ``--max-loras``, ``--max-cpu-loras``).
The scheduler (both twins, ``serving/core.py`` and ``serving/reference.py``) keeps at most
``max_loras`` distinct adapters among the sequences it holds: a waiting request whose adapter
would be one too many is skipped, and the requests behind it (base-model ones included) are
still considered, as vLLM's scheduler does. Admitting a request whose adapter is in no GPU slot
loads it (from the host cache, else from disk into the cache first), evicting the least recently
used adapter that no held sequence uses; vLLM loads adapters synchronously before the step's
forward pass (``set_active_adapters`` in the model runner), so that step is longer by the load
time, for every sequence in it.

This module resolves the sizes, costs and load times (:func:`resolve_lora`), assigns adapters to
requests (:class:`LoraTraffic`), keeps each replica's log of loads, evictions, admissions and
releases (:class:`LoraLog`), and builds the summary section (:func:`lora_summary`).

Formulas (one adapter of rank r; LoRA: Hu et al., "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022; a d_in x d_out weight gets A: d_in x r and B: r x d_out):

- bytes = r x sum over adapted matrices of (d_in + d_out) x layers x 2 (16-bit; vLLM's
  ``lora_dtype: auto`` is the model's dtype);
- compute = 2 r (d_in + d_out) FLOPs per token per adapted matrix (shrink x A, then expand x B:
  Chen et al., "Punica", MLSys 2024; Sheng et al., "S-LoRA", MLSys 2024), and the step reads each
  distinct adapter's weights once;
- per GPU under tensor parallelism as vLLM shards LoRA by default (``fully_sharded_loras:
  false``): a column-parallel layer (q, k, v, gate, up) keeps A whole and slices B's outputs, a
  row-parallel one (o, down) slices A's inputs and keeps B whole (vllm/lora/layers/
  column_parallel_linear.py); KV heads replicate beyond ``num_kv_heads`` ranks;
- GPU slots: max_loras x max_lora_rank x every linear layer's per-GPU (d_in + d_out) x layers x
  2 bytes, pre-allocated and taken out of the KV cache (vLLM allocates ``lora_a_stacked`` /
  ``lora_b_stacked`` for every LoRA-capable layer at ``max_lora_rank``);
- load from the host cache = the GPU's adapter bytes / host-to-GPU bandwidth; from disk = the whole
  adapter's bytes / disk bandwidth, then the same copy.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stacksim.metrics import RI_LORA

if TYPE_CHECKING:
    import pandas as pd

    from stacksim.catalog import Accelerator, ModelArch
    from stacksim.scenario import schema as S
    from stacksim.scenario.schema_lora import Lora

LORA_DTYPE_BYTES = 2.0  # vLLM lora_dtype "auto": the base model's dtype (bf16/fp16)
# PCIe per-lane rate (GT/s) and line encoding per generation (PCI-SIG base specifications: 8b/10b
# for 1-2, 128b/130b for 3-5; 6.0's FLIT mode carries 242 of every 256 bytes), x16 links.
PCIE_GT_PER_S = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}
PCIE_ENCODING = {1: 8 / 10, 2: 8 / 10, 3: 128 / 130, 4: 128 / 130, 5: 128 / 130, 6: 242 / 256}
PCIE_LANES = 16
# Transaction-layer efficiency: a 256-byte max payload with a 3-DW header is 20 bytes of overhead
# per TLP, 256 / 276 = 92.8% (Intel AN 456, "PCI Express High Performance Reference Design",
# Throughput for Posted Writes). An upper bound: DLLPs and completion latency cost a little more.
PCIE_TLP_EFFICIENCY = 256.0 / 276.0

# Log event kinds (the same numbers in serving/core.py).
LOAD_CPU, LOAD_DISK, EVICT_GPU, EVICT_CPU, ADMIT, RELEASE = 1, 2, 3, 4, 5, 6
EVENT_NAMES = {LOAD_CPU: "load_cpu", LOAD_DISK: "load_disk", EVICT_GPU: "evict_gpu", EVICT_CPU: "evict_cpu",
               ADMIT: "admit", RELEASE: "release"}
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoraError(ValueError):
    """A LoRA setting that cannot work; ``path`` is relative to the deployment."""

    def __init__(self, path: tuple[str, ...], message: str):
        super().__init__(message)
        self.path = path


def pcie_gb_per_s(gen: int) -> float:
    """Nominal x16 host-link rate per direction after line encoding, GB/s (PCIe 5.0: 63.0)."""
    return PCIE_GT_PER_S[gen] * PCIE_LANES * PCIE_ENCODING[gen] / 8.0


def host_link(acc: Accelerator) -> tuple[float, str] | None:
    """Achieved host-to-accelerator copy rate per GPU (GB/s) and how it was derived: the x16 link
    of the catalog's PCIe generation times the TLP payload efficiency; None when the catalog gives
    no PCIe generation. Shared by LoRA adapter loads and KV-cache offload (serving/kv_offload.py)."""
    if acc.pcie_gen not in PCIE_GT_PER_S:
        return None
    nominal = pcie_gb_per_s(acc.pcie_gen)
    return nominal * PCIE_TLP_EFFICIENCY, (f"PCIe {acc.pcie_gen}.0 x16 {nominal:.2f} GB/s after line encoding x "
                                           f"{PCIE_TLP_EFFICIENCY:.3f} TLP efficiency (256-byte payload)")


def linear_modules(model: ModelArch) -> list[tuple[str, int, int, str]]:
    """The LoRA-capable linear layers of one decoder layer: (name, d_in, d_out, col | row)."""
    h = model.hidden_size
    q = model.num_attention_heads * model.head_dim
    kv = model.num_kv_heads * model.head_dim
    i = model.intermediate_size
    return [("q_proj", h, q, "col"), ("k_proj", h, kv, "col"), ("v_proj", h, kv, "col"), ("o_proj", q, h, "row"),
            ("gate_proj", h, i, "col"), ("up_proj", h, i, "col"), ("down_proj", i, h, "row")]


def per_gpu_dims(model: ModelArch, tp: int, target: str) -> list[tuple[float, float]]:
    """(d_in, d_out) of each adapted matrix on one GPU of a tensor-parallel group (vLLM's default
    half-sharded LoRA: column-parallel layers slice B's outputs, row-parallel ones A's inputs)."""
    kv_heads = max(1.0, model.num_kv_heads / tp)  # replicated beyond num_kv_heads ranks
    out = []
    for name, d_in, d_out, kind in linear_modules(model):
        if target == "attention" and name not in ATTENTION_MODULES:
            continue
        if name in ("k_proj", "v_proj"):
            out.append((float(d_in), kv_heads * model.head_dim))
        elif kind == "col":
            out.append((float(d_in), d_out / tp))
        else:
            out.append((d_in / tp, float(d_out)))
    return out


def adapter_bytes(model: ModelArch, rank: int, target: str) -> float:
    """Bytes of a whole adapter: r x sum of (d_in + d_out) over its matrices x layers x 2."""
    s = sum(d_in + d_out for name, d_in, d_out, _ in linear_modules(model)
            if target == "all_linear" or name in ATTENTION_MODULES)
    return rank * s * model.num_layers * LORA_DTYPE_BYTES


@dataclass(frozen=True)
class ResolvedLora:
    """A deployment's LoRA setup. Adapter ids are 1..n in ``names`` order (0: the base model);
    the per-adapter lists have an unused entry 0."""

    max_loras: int
    max_lora_rank: int
    max_cpu_loras: int
    names: list[str]
    ranks: list[int]
    targets: list[str]
    size_bytes: list[float]  # the whole adapter (disk, host memory)
    gpu_bytes: list[float]  # one GPU's share, the most layers of a pipeline stage (each GPU loads its own)
    flops_per_token: list[float]  # per GPU of a stage (layers / pp, as the cost vector spreads them)
    read_bytes: list[float]  # per GPU per step that uses it
    load_cpu_s: list[float]
    load_disk_s: list[float]
    host_gb_per_s: float
    host_basis: str
    disk_gb_per_s: float
    slot_bytes_per_gpu: float
    index: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.names)

    def arrays(self) -> np.ndarray:
        """The per-adapter floats the compiled scheduler reads: flops per token, bytes read per
        step, load seconds from the host cache, load seconds from disk (4 rows of n + 1)."""
        return np.array([self.flops_per_token, self.read_bytes, self.load_cpu_s, self.load_disk_s], dtype=np.float64)


def resolve_lora(spec: Lora, model: ModelArch, acc: Accelerator, tp: int, pp: int, speculative: bool) -> ResolvedLora:
    """Check a deployment's ``engine.lora`` and compute sizes, costs and load times; raises
    :class:`LoraError` naming the field."""
    where = ("engine", "lora")
    if speculative:
        raise LoraError(where, "engine.lora with engine.speculative is not modelled (vLLM added LoRA with speculative "
                        "decoding late and its cost is not characterised); drop one of them")
    if model.is_moe or model.attention == "mla":
        kind = "mixture-of-experts" if model.is_moe else "MLA-attention"
        raise LoraError(where, f"LoRA on {model.id} ({kind}) is not modelled: its adapted layers (experts, latent "
                        f"projections) have no shapes here; use a dense model with GQA/MHA attention")
    for name, a in spec.adapters.items():
        if a.rank > spec.max_lora_rank:
            raise LoraError(where + ("adapters", name, "rank"), f"rank {a.rank} exceeds max_lora_rank "
                            f"{spec.max_lora_rank} (vLLM rejects such an adapter); raise engine.lora.max_lora_rank to "
                            f"{min(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= a.rank)} or use a smaller rank")
    link = host_link(acc)
    if spec.load.from_cpu_gb_per_s is not None:
        host = spec.load.from_cpu_gb_per_s
        basis = "given (engine.lora.load.from_cpu_gb_per_s)"
    elif link is not None:
        host, basis = link
    else:
        raise LoraError(where + ("load", "from_cpu_gb_per_s"), f"the catalog gives no PCIe generation for {acc.id}, so "
                        f"the host-to-accelerator copy rate is unknown; set engine.lora.load.from_cpu_gb_per_s")
    disk = spec.load.from_disk_gb_per_s
    layers_max = math.ceil(model.num_layers / pp)  # the fullest stage: its memory and its load time
    layers_mean = model.num_layers / pp  # the cost vector spreads layers evenly over stages
    names = list(spec.adapters)
    ranks, targets, size, gpu, flops, read, t_cpu, t_disk = [0], [""], [0.0], [0.0], [0.0], [0.0], [0.0], [0.0]
    for name in names:
        a = spec.adapters[name]
        dims = sum(d_in + d_out for d_in, d_out in per_gpu_dims(model, tp, a.target_modules))
        ranks.append(a.rank)
        targets.append(a.target_modules)
        size.append(adapter_bytes(model, a.rank, a.target_modules))
        gpu.append(a.rank * dims * layers_max * LORA_DTYPE_BYTES)
        flops.append(2.0 * a.rank * dims * layers_mean)
        read.append(a.rank * dims * layers_mean * LORA_DTYPE_BYTES)
        t_cpu.append(gpu[-1] / (host * 1e9))
        t_disk.append(size[-1] / (disk * 1e9) + t_cpu[-1])
    all_dims = sum(d_in + d_out for d_in, d_out in per_gpu_dims(model, tp, "all_linear"))
    slots = spec.max_loras * spec.max_lora_rank * all_dims * layers_max * LORA_DTYPE_BYTES
    return ResolvedLora(
        max_loras=spec.max_loras, max_lora_rank=spec.max_lora_rank,
        max_cpu_loras=spec.max_cpu_loras if spec.max_cpu_loras is not None else spec.max_loras,
        names=names, ranks=ranks, targets=targets, size_bytes=size, gpu_bytes=gpu, flops_per_token=flops,
        read_bytes=read, load_cpu_s=t_cpu, load_disk_s=t_disk, host_gb_per_s=host, host_basis=basis,
        disk_gb_per_s=disk, slot_bytes_per_gpu=slots, index={n: i + 1 for i, n in enumerate(names)},
    )


def workload_problems(sc: S.Scenario, lora_of: dict[str, ResolvedLora | None]) -> list[tuple[tuple[str, ...], str]]:
    """Bad ``workloads.<w>.lora`` and ``lora_affinity`` settings: (field path, message) pairs.
    ``lora_of`` maps each resolved deployment to its LoRA setup (None: no engine.lora)."""
    out: list[tuple[tuple[str, ...], str]] = []
    for dname, dep in sc.deployments.items():
        if dep.load_balancer.kind == "lora_affinity" and dep.engine.lora is None:
            out.append((("deployments", dname, "load_balancer", "kind"), (
                "lora_affinity routes by LoRA adapter but this deployment has no engine.lora; add engine.lora: "
                "{adapters: {...}} or use least_outstanding")))
    for wname, w in sc.workloads.items():
        if w.lora is None:
            continue
        where = ("workloads", wname, "lora")
        if w.target not in sc.deployments:
            msg = (f"lora applies to workloads that target a deployment; '{w.target}' is not a key of deployments: "
                   "(through the gateway, name the adapter on the route: litellm_params.lora or a Portkey target's "
                   "lora; disaggregated pairs run the base model)")
            out.append((where, msg))
            continue
        if w.target not in lora_of:
            continue  # the deployment itself is invalid and already reported
        wanted = [((), w.lora)] if isinstance(w.lora, str) else [(("tenants", t), a) for t, a in w.lora.tenants.items() if a is not None]
        out += adapter_problems(w.target, lora_of[w.target], wanted, where)
    return out


def adapter_problems(dep: str, rl: ResolvedLora | None, wanted: list[tuple[tuple[str, ...], str]],
                     where: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], str]]:
    """Adapters named for deployment ``dep`` that it cannot serve: (field path, message) pairs.
    ``wanted``: (path below ``where``, adapter name)."""
    import difflib

    if not wanted:
        return []
    if rl is None:
        msg = (f"deployment '{dep}' has no engine.lora, so it serves only its base model; add "
               f"deployments.{dep}.engine.lora: {{adapters: {{<name>: {{rank: 16}}}}}} or drop this lora")
        return [(where, msg)]
    out: list[tuple[tuple[Any, ...], str]] = []
    for path, name in wanted:
        if name not in rl.index:
            close = difflib.get_close_matches(name, rl.names, n=3, cutoff=0.5)
            out.append((where + path, f"no adapter '{name}' in deployments.{dep}.engine.lora.adapters (it has: "
                        f"{', '.join(rl.names)})" + (f". Did you mean: {', '.join(close)}?" if close else "")))
    return out


def gateway_adapters(spec: Any) -> list[tuple[tuple[str, ...], str]]:
    """The adapters a gateway target's ``lora`` names (a name, or CallerTenants): (path, name)."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [((), spec)]
    out = [(("tenants", t), a) for t, a in spec.tenants.items() if a is not None]
    return out + ([(("default",), spec.default)] if spec.default is not None else [])


def caller_adapter(spec: Any, tags: dict[str, str]) -> str | None:
    """The adapter a gateway target's ``lora`` gives a caller with these tags (None: the base model)."""
    if spec is None or isinstance(spec, str):
        return spec
    tenant = tags.get("tenant")
    return spec.tenants.get(tenant, spec.default) if tenant is not None else spec.default


def set_adapter(reqs: Any, rid: int, a: int) -> None:
    """Request ``rid`` (made during the run, its prefix blocks already set) runs adapter ``a``:
    the id the scheduler and lora_affinity read, and its prefix blocks keyed by the adapter."""
    if a <= 0:
        return
    reqs.RI[RI_LORA, rid] = a
    blk = reqs.blocks.get(rid)
    if blk is not None:
        reqs.blocks[rid] = (blk[0] ^ np.int64(_salt(a)), blk[1])


# --------------------------------------------------------------------------- requests


def _salt(a: int) -> int:
    """A per-adapter constant mixed into prefix-block hashes: vLLM keys cached blocks by adapter
    too (the LoRA id is part of the block hash), so equal prompts under different adapters never
    share KV."""
    return int(((a * 0x9E3779B97F4A7C15) ^ 0x632BE59BD9B4E019) & 0x3FFFFFFFFFFFFFFF)


class LoraTraffic:
    """Which adapter each request uses, set once when the request is created (``RI_LORA``; 0 is
    the base model). A workload with tenants draws a tenant per request from the stream
    ``lora/<workload>``; the tenant is kept for the requests table."""

    def __init__(self, sc: S.Scenario, lora_of: dict[str, ResolvedLora | None], streams: Any):
        self.streams = streams
        # workload index -> (name, adapter id per tenant, tenant shares or None, first tenant code)
        self.plans: dict[int, tuple[str, np.ndarray, np.ndarray | None, int]] = {}
        self.tenant_names: list[str] = []  # "workload:tenant", the lora_tenant categories
        self.tenant_ids: list[np.ndarray] = []
        self.tenant_codes: list[np.ndarray] = []
        for wi, (name, w) in enumerate(sc.workloads.items()):
            rl = lora_of.get(w.target)
            if w.lora is None or rl is None:
                continue
            if isinstance(w.lora, str):
                self.plans[wi] = (name, np.array([rl.index[w.lora]], dtype=np.int64), None, -1)
                continue
            tenants = list(w.lora.tenants)
            codes = np.array([rl.index[a] if a is not None else 0 for a in w.lora.tenants.values()], dtype=np.int64)
            share = None
            if w.lora.share is not None:
                weights = np.array([w.lora.share[t] for t in tenants], dtype=np.float64)
                share = weights / weights.sum()
            self.plans[wi] = (name, codes, share, len(self.tenant_names))
            self.tenant_names += [f"{name}:{t}" for t in tenants]

    def assign(self, reqs: Any, wi: int, ids: np.ndarray) -> None:
        """Set the adapter of requests ``ids`` of workload ``wi`` (nothing for other workloads)."""
        plan = self.plans.get(wi)
        if plan is None or len(ids) == 0:
            return
        name, codes, share, first = plan
        ids = np.asarray(ids, dtype=np.int64)
        if first < 0:
            reqs.RI[RI_LORA, ids] = codes[0]
        else:
            rng = self.streams.get(f"lora/{name}")
            k = len(codes)
            t = rng.choice(k, size=len(ids), p=share) if share is not None else rng.integers(0, k, len(ids))
            reqs.RI[RI_LORA, ids] = codes[t]
            self.tenant_ids.append(ids)
            self.tenant_codes.append(t.astype(np.int64) + first)
        if reqs.blocks:  # prefix blocks of requests with an adapter: keyed by the adapter too
            for rid in ids.tolist():
                blk = reqs.blocks.get(rid)
                a = int(reqs.RI[RI_LORA, rid])
                if blk is not None and a > 0:
                    reqs.blocks[rid] = (blk[0] ^ np.int64(_salt(a)), blk[1])

    def columns(self, reqs: Any, rids: np.ndarray, deps: np.ndarray, lora_of: list[ResolvedLora | None]) -> dict[str, Any]:
        """The requests table's ``lora`` (adapter name; missing: the base model) and, with
        tenants, ``lora_tenant`` ("workload:tenant") columns for rows ``rids`` of deployments
        ``deps`` (rid -1: a row that is not a serving request)."""
        import pandas as pd

        cats: list[str] = []
        for rl in lora_of:
            for n in rl.names if rl is not None else []:
                if n not in cats:
                    cats.append(n)
        ok = rids >= 0
        a = np.zeros(len(rids), dtype=np.int64)
        a[ok] = reqs.RI[RI_LORA, rids[ok]]
        codes = np.full(len(rids), -1, dtype=np.int64)
        for di, rl in enumerate(lora_of):
            if rl is None:
                continue
            to_cat = np.array([-1] + [cats.index(n) for n in rl.names], dtype=np.int64)
            m = ok & (deps == di) & (a > 0)
            codes[m] = to_cat[a[m]]
        out: dict[str, Any] = {"lora": pd.Categorical.from_codes(codes, categories=cats)}
        if self.tenant_names:
            tcode = np.full(reqs.n, -1, dtype=np.int64)
            for ids, tc in zip(self.tenant_ids, self.tenant_codes):
                tcode[ids] = tc
            rows = np.where(ok, tcode[np.where(ok, rids, 0)], -1)
            out["lora_tenant"] = pd.Categorical.from_codes(rows, categories=self.tenant_names)
        return out


# --------------------------------------------------------------------------- the slot policy


class LoraSlots:
    """One replica's adapters, in plain Python: the readable specification of the policy that
    :mod:`stacksim.serving.core_lora` compiles (the reference replica uses this class; tests
    require identical logs).

    - ``ref[a]``: held sequences (decoding or in prefill) with adapter ``a``; ``distinct`` of them
      non-zero, never more than ``max_loras``;
    - ``gpu``: the adapter in each GPU slot (0: empty); ``cpu[a]``: its host-cache stamp (0: not
      cached); every held adapter is in a slot, every slotted one in the host cache;
    - an adapter is "used" (stamped from one clock) when a sequence with it is admitted or leaves;
      evictions take the least recently used adapter that no held sequence uses.
    """

    def __init__(self, rl: ResolvedLora):
        self.rl = rl
        self.ref = [0] * (rl.n + 1)
        self.cpu = [0] * (rl.n + 1)
        self.gpu = [0] * rl.max_loras
        self.gpu_t = [0] * rl.max_loras
        self.distinct = 0
        self.cpu_n = 0
        self.clock = 0
        self.stall = 0.0  # seconds of adapter loads in the step being planned
        self.events: list[int] = []  # (kind, adapter, rid) flat, since the last flush

    def skip(self, a: int) -> bool:
        """Admitting a sequence with adapter ``a`` would hold one distinct adapter too many."""
        return a > 0 and self.ref[a] == 0 and self.distinct >= self.rl.max_loras

    def _touch(self, a: int) -> None:
        self.clock += 1
        self.cpu[a] = self.clock
        for s in range(len(self.gpu)):
            if self.gpu[s] == a:
                self.gpu_t[s] = self.clock

    def acquire(self, a: int, rid: int) -> None:
        """Request ``rid`` with adapter ``a`` is admitted: load ``a`` into a GPU slot if it is in
        none (from the host cache; else from disk into the cache, dropping the cache's LRU unheld
        adapter when it is full, from its GPU slot too), into an empty slot or else the LRU slot
        whose adapter no sequence holds. The step's loads add to ``stall``."""
        rl = self.rl
        ev = self.events
        self.ref[a] += 1
        if self.ref[a] == 1:
            self.distinct += 1
        if a not in self.gpu:
            if self.cpu[a] > 0:
                kind = LOAD_CPU
                self.stall += rl.load_cpu_s[a]
            else:
                kind = LOAD_DISK
                self.stall += rl.load_disk_s[a]
                if self.cpu_n >= rl.max_cpu_loras:
                    v = min((b for b in range(1, rl.n + 1) if self.cpu[b] > 0 and self.ref[b] == 0), key=lambda b: self.cpu[b])
                    self.cpu[v] = 0
                    self.cpu_n -= 1
                    ev += [EVICT_CPU, v, -1]
                    if v in self.gpu:
                        s = self.gpu.index(v)
                        self.gpu[s] = 0
                        self.gpu_t[s] = 0
                        ev += [EVICT_GPU, v, -1]
                self.cpu_n += 1
            if 0 in self.gpu:
                slot = self.gpu.index(0)
            else:
                slot = min((s for s in range(rl.max_loras) if self.ref[self.gpu[s]] == 0), key=lambda s: self.gpu_t[s])
                ev += [EVICT_GPU, self.gpu[slot], -1]
            self.gpu[slot] = a
            ev += [kind, a, rid]
        self._touch(a)
        ev += [ADMIT, a, rid]

    def release(self, a: int, rid: int) -> None:
        """Request ``rid`` with adapter ``a`` leaves the batch (finished or preempted)."""
        self.ref[a] -= 1
        if self.ref[a] == 0:
            self.distinct -= 1
        self._touch(a)
        self.events += [RELEASE, a, rid]


# --------------------------------------------------------------------------- the replica log


class LoraLog:
    """One replica's adapter events: ``t`` (seconds), ``kind`` (``LOAD_CPU`` ... ``RELEASE``),
    ``adapter`` (id), ``rid`` (the request admitted, released or whose admission caused the load;
    -1 for evictions). Loads of a step start when the step starts and run one after another
    before its forward pass; a request admitted in a step that loads its adapter waits for all of
    that step's loads (the load wait)."""

    def __init__(self, rl: ResolvedLora):
        self.rl = rl
        self.t = array("d")
        self.kind = array("q")
        self.adapter = array("q")
        self.rid = array("q")
        self.wait_s = array("d")  # one entry per admission that waited for its adapter's load
        self.stall_s = 0.0  # step time spent loading adapters

    def flush(self, t: float, events: list[int]) -> None:
        """Record one scheduler call's events, a flat list (kind, adapter, rid, kind, ...)."""
        n = len(events) // 3
        if not n:
            return
        kinds = events[0::3]
        adapters = events[1::3]
        self.t.extend([t] * n)
        self.kind.extend(kinds)
        self.adapter.extend(adapters)
        self.rid.extend(events[2::3])
        if LOAD_CPU in kinds or LOAD_DISK in kinds:
            rl = self.rl
            loaded = set()
            stall = 0.0
            for k, a in zip(kinds, adapters):
                if k == LOAD_CPU:
                    stall += rl.load_cpu_s[a]
                    loaded.add(a)
                elif k == LOAD_DISK:
                    stall += rl.load_disk_s[a]
                    loaded.add(a)
            self.stall_s += stall
            self.wait_s.extend([stall for k, a in zip(kinds, adapters) if k == ADMIT and a in loaded])

    def frame(self) -> pd.DataFrame:
        """The log as a DataFrame: t_s, event (name), adapter (name), request_id."""
        import pandas as pd

        names = ["", *self.rl.names]
        return pd.DataFrame({
            "t_s": np.frombuffer(self.t, dtype=np.float64) if len(self.t) else np.zeros(0),
            "event": [EVENT_NAMES[k] for k in self.kind],
            "adapter": [names[a] for a in self.adapter],
            "request_id": np.frombuffer(self.rid, dtype=np.int64) if len(self.rid) else np.zeros(0, dtype=np.int64),
        })


def request_columns(sim: Any, df: pd.DataFrame) -> dict[str, Any]:
    """``lora`` (and ``lora_tenant``) columns of the requests table ``df``: filled for requests
    sent directly to a deployment and for gateway calls a self-hosted target answered with an
    adapter; missing for the base model and for other rows."""
    import pandas as pd

    direct = (df["via"] == "direct").to_numpy() if "via" in df else np.ones(len(df), dtype=bool)
    rid = df["request_id"].to_numpy()
    rids = np.where(direct, np.nan_to_num(rid.astype(np.float64), nan=-1.0), -1.0).astype(np.int64)
    deps = df["deployment"].cat.codes.to_numpy().astype(np.int64)
    out = sim.lora.columns(sim.reqs, rids, deps, [d.rd.lora for d in sim.deployments.values()])
    gw = getattr(sim, "gateway", None)
    if gw is not None and gw.call_lora and "call" in df:
        col = out["lora"]
        cats = list(col.categories)
        codes = col.codes.copy()
        rows = np.flatnonzero((df["via"] == "gateway").to_numpy())
        calls = df["call"].to_numpy()[rows]
        for i, c in zip(rows.tolist(), calls.tolist()):
            name = gw.call_lora.get(int(c))
            if name is not None:
                codes[i] = cats.index(name)
        out["lora"] = pd.Categorical.from_codes(codes, categories=cats)
    return out


def lora_summary(dep: Any, rl: ResolvedLora, reqs: Any, rids: np.ndarray) -> dict[str, Any]:
    """The ``deployments.<name>.lora`` section; ``rids``: the requests that arrived at it."""
    lora_codes = reqs.RI[RI_LORA, rids.astype(np.int64)]
    logs = [r.lora_log for r in dep.replicas if getattr(r, "lora_log", None) is not None]
    kinds = np.concatenate([np.frombuffer(g.kind, dtype=np.int64) for g in logs if len(g.kind)] or [np.zeros(0, np.int64)])
    ads = np.concatenate([np.frombuffer(g.adapter, dtype=np.int64) for g in logs if len(g.adapter)] or [np.zeros(0, np.int64)])
    waits = np.concatenate([np.frombuffer(g.wait_s, dtype=np.float64) for g in logs if len(g.wait_s)] or [np.zeros(0)])
    per: dict[str, Any] = {}
    for i, name in enumerate(rl.names, start=1):
        per[name] = {
            "rank": rl.ranks[i],
            "target_modules": rl.targets[i],
            "size_mb": round(rl.size_bytes[i] / 1e6, 3),
            "load_from_cpu_ms": round(rl.load_cpu_s[i] * 1e3, 4),
            "load_from_disk_ms": round(rl.load_disk_s[i] * 1e3, 4),
            "requests": int((lora_codes == i).sum()),
            "loads_from_cpu": int(((kinds == LOAD_CPU) & (ads == i)).sum()),
            "loads_from_disk": int(((kinds == LOAD_DISK) & (ads == i)).sum()),
        }
    loaded = (kinds == LOAD_CPU) | (kinds == LOAD_DISK)
    return {
        "max_loras": rl.max_loras,
        "max_lora_rank": rl.max_lora_rank,
        "max_cpu_loras": rl.max_cpu_loras,
        "slot_memory_per_gpu_gb": round(rl.slot_bytes_per_gpu / 1024**3, 4),
        "host_to_gpu_gb_per_s": round(rl.host_gb_per_s, 4),
        "host_to_gpu_basis": rl.host_basis,
        "disk_gb_per_s": rl.disk_gb_per_s,
        "requests": {"base_model": int((lora_codes == 0).sum()), "with_adapter": int((lora_codes > 0).sum())},
        "adapters_loaded": len(set(ads[loaded].tolist())),
        "loads": {"from_cpu": int((kinds == LOAD_CPU).sum()), "from_disk": int((kinds == LOAD_DISK).sum())},
        "evictions": {"gpu": int((kinds == EVICT_GPU).sum()), "cpu": int((kinds == EVICT_CPU).sum())},
        "load_stall_s": round(sum(g.stall_s for g in logs), 6),
        "load_wait_ms": {
            "count": int(waits.size),
            "mean": round(float(waits.mean()) * 1e3, 4) if waits.size else None,
            "max": round(float(waits.max()) * 1e3, 4) if waits.size else None,
        },
        "adapters": per,
    }
