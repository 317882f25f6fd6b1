"""Disaggregated prefill/decode at run time: the client's request, its two serving legs, and the
KV-cache transfer between them.

How a request flows (vLLM's disaggregated serving: its proxy sends the request to a prefill
instance with ``max_tokens: 1``, a KV connector such as NIXL or Mooncake moves the prompt's KV,
then the decode instance continues; DistServe, OSDI 2024, and Splitwise, ISCA 2024, describe the
design and its transfer cost):

1. **Prefill leg.** The client's request becomes a serving request on the prefill deployment:
   same prompt, one output token. It is generated with the traffic (so it carries the trace's
   prefix-block ids, and the prefill side's prefix cache works as usual); its deployment's
   balancer picks the replica.
2. **Transfer.** When that token is out, the prompt's KV leaves the prefill replica: every GPU
   sends its shard over its own link in parallel, so the transfer takes
   ``kv_bytes_per_token_per_gpu x prompt / bandwidth + latency``. Transfers out of one prefill
   replica queue for its link, first come first served (the link is a shared resource per
   prefill replica; the receiving side is not modelled as a bottleneck).
3. **Decode leg.** A serving request on the decode deployment: the full prompt and the full
   answer, whose prompt KV is already present. It reuses the prefix-cache path: the request
   carries block ids of its own (negative, so they never collide with trace or agent ids) and a
   *transferred* preset (``RequestTable.kv_transferred``) that :meth:`PrefixCache.lookup`
   honours at its first admission, so the decode replica allocates the prompt's KV blocks but
   computes only the prompt's last partial block (at least its last token, whose logits give
   the first answer token, as vLLM's connector path recomputes it).

A disaggregated group is also a gateway target (``hosted_vllm/<group>`` in a model_list, a
Portkey ``custom_host``): each attempt is a client request made during the run
(:meth:`DisaggRuntime.submit_call`) whose legs carry the gateway call's id, so the call's row is
its only row in ``requests.parquet`` (with the group's decode deployment), both legs' accelerator
spend goes to that call, and the group's ``summary.json`` section counts it with the rest.

The client's row (``via: disaggregated`` in ``requests.parquet``) spans the whole request: its
arrival, its first token (the decode leg's by default, or the prefill leg's with
``first_token: prefill``), its finish (the decode leg's). Both serving rows stay in the serving
table, so each deployment's own metrics count exactly the work it did. A failure or a rejection
on either side ends the client's request with that status; nothing is retried.

Not modelled: the prefill replica keeping the KV until the decode side has read it, and the
decode side allocating its blocks before the transfer starts (vLLM's NIXL connector does both,
so real KV pressure is a little higher on both sides); layer-by-layer transfer overlapping the
prefill (Splitwise); a decode-side prefix-cache hit shortening the transfer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import simpy

from stacksim.metrics import COMPLETED, FAILED, PENDING, QUEUED, REJECTED, RUNNING

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation
    from stacksim.scenario.resolve import ResolvedDeployment
    from stacksim.scenario.schema_disagg import Disaggregated

# --------------------------------------------------------------------------- link defaults
#
# Per GPU, gigabits per second achieved, and a fixed cost per transfer.
#
# rdma: one 400 Gb/s NIC per GPU is the GPU-direct layout of the H100 generation: DGX H100 and
#   HGX H100 systems carry eight single-port ConnectX-7 NDR 400 Gb/s adapters for eight GPUs
#   (NVIDIA ConnectX-7 user manual: "Single-port 400Gb/s"), and AWS p5.48xlarge has 3,200 Gbps
#   of EFA for its 8 H100s = 400 Gb/s per GPU. Achieved: Mooncake's Transfer Engine moves
#   87 GB/s over 4 x 200 Gbps RoCE (kvcache-ai/Mooncake README, "Performance": 40 GB, the KV of
#   128k tokens of Llama-3-70B), 0.87 of line rate. 400 x 0.87 = 348.
# tcp: the same README: "about 2.4x and 4.6x faster than the TCP protocol" on 4 x 200 and
#   8 x 400 Gbps RoCE, so TCP moved 87 / 2.4 = 36 and 190 / 4.6 = 41.3 GB/s per host: the
#   host's stack, not its NICs, is the limit. Shared by 8 GPUs per host (an assumption: the
#   HGX layout), 41.3 GB/s x 8 bit / 8 GPUs = 41.3 Gb/s per GPU.
# nvlink: the catalog's per-GPU unidirectional NVLink bandwidth (accelerators.csv
#   interconnect_bandwidth_gbps, in GB/s) x 8 bit, with no efficiency discount (an upper bound).
# Latency (all three): an assumption, not a measurement: the handshake, the descriptor post and
#   the completion notice of one transfer. vLLM's NIXL connector logs report several ms of "post"
#   time per transfer on some setups (vllm-project/vllm#50913: 6.7 ms average for 167 MB), so
#   set latency_ms from your own logs.
RDMA_LINE_GBPS = 400.0
RDMA_EFFICIENCY = 0.87
TCP_HOST_GBYTES_PER_S = 190.0 / 4.6
GPUS_PER_HOST = 8
RDMA_BASIS = ("400 Gb/s per GPU (ConnectX-7 NDR per GPU on DGX/HGX H100; AWS p5 3,200 Gbps EFA / 8 GPUs) x 0.87 achieved "
              "(Mooncake Transfer Engine, 87 GB/s on 4 x 200 Gbps RoCE); latency 1 ms assumed")
TCP_BASIS = ("41.3 GB/s per host over TCP (Mooncake README: Transfer Engine's 190 GB/s on 8 x 400 Gbps RoCE is 4.6x TCP) "
             "shared by 8 GPUs; latency 2 ms assumed")
NVLINK_BASIS = "the accelerator's NVLink bandwidth per GPU (catalog, unidirectional) x 8 bit, no efficiency discount; latency 0.1 ms assumed"
LINK_DEFAULTS: dict[str, tuple[float | None, float, str]] = {
    # link -> (Gb/s per GPU, or None: the catalog's NVLink; latency ms; basis)
    "rdma": (RDMA_LINE_GBPS * RDMA_EFFICIENCY, 1.0, RDMA_BASIS),
    "tcp": (TCP_HOST_GBYTES_PER_S * 8.0 / GPUS_PER_HOST, 2.0, TCP_BASIS),
    "nvlink": (None, 0.1, NVLINK_BASIS),
}


def transfer_seconds(kv_bytes_per_gpu: float, bandwidth_gbps: float, latency_s: float) -> float:
    """Time of one KV transfer: every GPU sends its ``kv_bytes_per_gpu`` over its own link of
    ``bandwidth_gbps`` (gigabits per second) in parallel, plus the fixed ``latency_s``."""
    return kv_bytes_per_gpu * 8.0 / (bandwidth_gbps * 1e9) + latency_s


@dataclass
class ResolvedDisagg:
    """A disaggregated group after resolution: its two deployments and its link."""

    name: str
    spec: Disaggregated
    prefill: ResolvedDeployment
    decode: ResolvedDeployment
    bandwidth_gbps: float
    latency_ms: float
    basis: str
    decode_cache_forced: bool  # the decode deployment had prefix_caching off; its cache only holds transferred KV

    @property
    def kv_bytes_per_token_per_gpu(self) -> float:
        """What one prefill GPU sends per prompt token (its layers and KV heads; the memory plan's figure)."""
        return self.prefill.plan.kv_bytes_per_token_per_gpu

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes moved per prompt token, all prefill GPUs together."""
        return self.kv_bytes_per_token_per_gpu * self.prefill.plan.gpus_per_replica

    def transfer_s(self, prompt_tokens: int) -> float:
        """The unqueued transfer time of a prompt's KV."""
        return transfer_seconds(self.kv_bytes_per_token_per_gpu * prompt_tokens, self.bandwidth_gbps, self.latency_ms / 1000.0)


# Block ids of decode legs: one per DECODE_BLOCK_TOKENS prompt tokens, negative (trace hash ids and
# agents' ids are >= 0), distinct per request. They only carry the transferred KV through the
# prefix cache's bookkeeping (never shared), so coarse blocks keep it cheap; hits are still
# rounded to the engine's block_size.
DECODE_BLOCK_TOKENS = 256
_ID_STRIDE = 1 << 24  # ids per request: room for prompts of 2^24 blocks


def decode_block_ids(rid: int, prompt_tokens: int) -> np.ndarray:
    n = max(1, -(-prompt_tokens // DECODE_BLOCK_TOKENS))
    return -(rid * _ID_STRIDE + 1) - np.arange(n, dtype=np.int64)


class ClientTable:
    """Client requests to disaggregated groups: one row per request (numpy columns, grown by doubling)."""

    FLOAT = ("arrival_s", "first_token_s", "finish_s", "prefill_done_s", "transfer_start_s", "transfer_end_s")
    INT = ("input_tokens", "output_tokens", "workload", "group", "prefill_rid", "decode_rid", "status", "call")  # call: the gateway's, or -1

    def __init__(self, n: int = 16):
        self.n = 0
        self.cap = max(16, n)
        for c in self.FLOAT:
            setattr(self, c, np.full(self.cap, np.nan))
        for c in self.INT:
            setattr(self, c, np.full(self.cap, -1, dtype=np.int64))

    def add(self, arrival: np.ndarray, inp: np.ndarray, out: np.ndarray, workload: int, group: int, prefill: np.ndarray) -> np.ndarray:
        k = len(arrival)
        if self.n + k > self.cap:
            new = max(2 * self.cap, self.n + k)
            for c in self.FLOAT + self.INT:
                old = getattr(self, c)
                grown = np.full(new, np.nan) if old.dtype.kind == "f" else np.full(new, -1, dtype=np.int64)
                grown[: self.cap] = old
                setattr(self, c, grown)
            self.cap = new
        ids = np.arange(self.n, self.n + k)
        self.arrival_s[ids], self.input_tokens[ids], self.output_tokens[ids] = arrival, inp, out
        self.workload[ids], self.group[ids], self.prefill_rid[ids] = workload, group, prefill
        self.status[ids] = PENDING
        self.n += k
        return ids


class DisaggRuntime:
    """Every disaggregated group of a run: hooks on the member deployments move each client's
    request from its prefill leg through the transfer to its decode leg."""

    def __init__(self, sim: Simulation, legs: list[tuple[str, int, np.ndarray, np.ndarray]]):
        """``legs``: (group, workload index, prefill-leg request ids, the clients' output tokens)
        for the traffic generated before the run."""
        self.sim = sim
        self.env = sim.env
        self.groups: list[ResolvedDisagg] = list(sim.rs.disaggregated.values())
        self.group_index = {g.name: i for i, g in enumerate(self.groups)}
        reqs = sim.reqs
        self.clients = ClientTable(sum(len(ids) for _, _, ids, _ in legs))
        self.leg_of: dict[int, int] = {}  # serving request id (prefill or decode leg) -> client
        for group, wi, ids, out in legs:
            cids = self.clients.add(reqs.arrival_s[ids], reqs.input_tokens[ids], out, wi, self.group_index[group], ids)
            self.leg_of.update(zip(ids.tolist(), cids.tolist()))
        self.pending = self.clients.n
        self.waiting: dict[int, simpy.Event] = {}  # client made by a gateway attempt -> the event its end triggers
        self.link_free: dict[tuple[int, int], float] = {}  # (prefill deployment, replica) -> when its link is free
        members: set[str] = set()
        for g in self.groups:
            members |= {g.prefill.name, g.decode.name}
        for name in sorted(members):
            dep = sim.deployments[name]
            prev = dep.on_complete
            dep.on_complete = self._leg_done if prev is None else _both(prev, self._leg_done)

    # ------------------------------------------------------------------ clients made during the run

    def submit_call(self, group: str, inp: int, out: int, wi: int, call: int,
                    blocks: tuple[np.ndarray, int] | None = None) -> tuple[int, simpy.Event]:
        """A gateway attempt ``call`` at group ``group`` (a disaggregated group as a gateway target):
        the client request and its prefill leg (with the prompt's prefix ``blocks``, if any) start
        now. Returns the client id and the event its end triggers. Both legs carry ``call``, so
        they are the attempt's serving requests (accounting and spend go to the gateway call)."""
        sim = self.sim
        g = self.groups[self.group_index[group]]
        now = self.env.now
        dep = sim.deployments[g.prefill.name]
        rid = sim.new_serving_request(now, inp, 1, wi, dep, call)
        if blocks is not None:
            sim.reqs.set_blocks(rid, *blocks)
        ci = int(self.clients.add(np.array([now]), np.array([inp]), np.array([out]), wi, self.group_index[group],
                                  np.array([rid]))[0])
        self.clients.call[ci] = call
        self.leg_of[rid] = ci
        self.pending += 1
        ev = self.env.event()
        self.waiting[ci] = ev
        dep.submit(rid)
        return ci, ev

    def first_token_s(self, ci: int) -> float:
        """The client's first token so far (NaN: none yet), from the side its group names."""
        c = self.clients
        if not np.isnan(c.first_token_s[ci]):
            return float(c.first_token_s[ci])
        d = int(c.decode_rid[ci])
        if d >= 0 and self.groups[int(c.group[ci])].spec.first_token == "decode":
            return float(self.sim.reqs.first_token_s[d])
        return float("nan")

    # ------------------------------------------------------------------ legs

    def _leg_done(self, rid: int) -> None:
        """A leg finished, was rejected or failed (called by its deployment)."""
        ci = self.leg_of.pop(rid, None)
        if ci is None:
            return
        c = self.clients
        reqs = self.sim.reqs
        st = int(reqs.status[rid])
        now = self.env.now
        if rid == c.prefill_rid[ci]:
            if st != COMPLETED:
                self._end(ci, st, np.nan, now)
                return
            c.prefill_done_s[ci] = now
            g = self.groups[int(c.group[ci])]
            if g.spec.first_token == "prefill":
                c.first_token_s[ci] = float(reqs.first_token_s[rid])
                if c.output_tokens[ci] <= 1:  # the prefill's one token is the whole answer
                    self._end(ci, COMPLETED, c.first_token_s[ci], now)
                    return
            self._transfer(ci, g, rid)
            return
        # The decode leg: the client's request ends with it.
        reqs.kv_transferred.pop(rid, None)
        if st != COMPLETED:
            self._end(ci, st, np.nan, now)
            return
        g = self.groups[int(c.group[ci])]
        first = float(reqs.first_token_s[rid]) if g.spec.first_token == "decode" else float(c.first_token_s[ci])
        self._end(ci, COMPLETED, first, float(reqs.finish_s[rid]))

    def _transfer(self, ci: int, g: ResolvedDisagg, prefill_rid: int) -> None:
        """The prompt's KV leaves the prefill replica: wait for its link, then the wire time and latency."""
        c = self.clients
        now = self.env.now
        key = (self.sim.deployments[g.prefill.name].index, int(self.sim.reqs.replica[prefill_rid]))
        start = max(now, self.link_free.get(key, 0.0))
        wire = transfer_seconds(g.kv_bytes_per_token_per_gpu * int(c.input_tokens[ci]), g.bandwidth_gbps, 0.0)
        self.link_free[key] = start + wire
        end = start + wire + g.latency_ms / 1000.0
        c.transfer_start_s[ci] = start
        c.transfer_end_s[ci] = end
        c.status[ci] = RUNNING
        ev = self.env.timeout(end - now)
        ev.callbacks.append(lambda _ev: self._to_decode(ci, g))

    def _to_decode(self, ci: int, g: ResolvedDisagg) -> None:
        """The KV has arrived: the decode deployment takes the request."""
        c = self.clients
        sim = self.sim
        dep = sim.deployments[g.decode.name]
        inp, out = int(c.input_tokens[ci]), int(c.output_tokens[ci])
        rid = sim.new_serving_request(self.env.now, inp, out, int(c.workload[ci]), dep, int(c.call[ci]))
        c.decode_rid[ci] = rid
        self.leg_of[rid] = ci
        sim.reqs.set_blocks(rid, decode_block_ids(rid, inp), DECODE_BLOCK_TOKENS)
        sim.reqs.kv_transferred[rid] = inp
        dep.submit(rid)

    def _end(self, ci: int, status: int, first: float, finish: float) -> None:
        c = self.clients
        c.status[ci] = status
        c.first_token_s[ci] = first
        c.finish_s[ci] = finish
        self.pending -= 1
        ev = self.waiting.pop(ci, None)
        if ev is not None and not ev.triggered:
            ev.succeed(ci)

    # ------------------------------------------------------------------ results

    def client_status(self) -> np.ndarray:
        """Each client's status now: final once it ended, else where it is (queued or running)."""
        c = self.clients
        n = c.n
        st = c.status[:n].copy()
        reqs = self.sim.reqs
        open_ = np.flatnonzero(~np.isin(st, (COMPLETED, FAILED, REJECTED)))
        for ci in open_.tolist():
            d = int(c.decode_rid[ci])
            if d >= 0:
                st[ci] = RUNNING if int(reqs.status[d]) in (RUNNING, COMPLETED) else QUEUED
            elif not np.isnan(c.transfer_start_s[ci]):
                st[ci] = RUNNING
            else:
                p = int(reqs.status[int(c.prefill_rid[ci])])
                st[ci] = p if p in (PENDING, QUEUED, RUNNING) else RUNNING
        return st


def _both(a: Callable[[int], None], b: Callable[[int], None]) -> Callable[[int], None]:
    def call(rid: int) -> None:
        a(rid)
        b(rid)

    return call
