"""Disaggregated prefill/decode: a named pair of deployments, one computing prompts and one
generating tokens, with the prompt's KV cache moved between them (``serving/disagg.py``).

A workload targets the group's name. Each request is first sent to the prefill deployment as a
request for the same prompt with one output token (vLLM's disaggregated-serving proxy sends it
with ``max_tokens: 1``); when that token is out, the prompt's KV cache crosses the link; then the
decode deployment takes the request with its prompt's KV already in place and generates the
answer. The pool ratio (xPyD) is the two deployments' ``replicas``; which replica of each serves
a request is each deployment's own ``load_balancer`` (vLLM's toy proxy round-robins each side).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stacksim.scenario.schema_base import Strict

Link = Literal["rdma", "tcp", "nvlink"]


class KvTransfer(Strict):
    """How the prompt's KV cache travels from the prefill replica to the decode replica.

    Each GPU of the prefill replica sends its own shard of the KV (its layers and KV heads) over
    its own link, all in parallel, so one transfer takes (KV bytes per token per GPU x prompt
    tokens) / bandwidth + latency. Transfers out of one prefill replica queue for its link
    (first come, first served); different replicas' transfers overlap freely.
    """

    link: Link = Field(default="rdma", description="rdma: GPUDirect RDMA over InfiniBand / RoCE / EFA (NIXL, Mooncake "
                       "Transfer Engine); tcp: the host network stack; nvlink: both replicas in one NVLink domain "
                       "(same accelerator; their GPUs together fit the accelerator's scale-up domain).")
    bandwidth_gbps: float | None = Field(default=None, gt=0, description="Achieved bandwidth per GPU, gigabits per "
                                         "second (network convention: 400 = a 400 Gb/s NIC at line rate). Omitted: the "
                                         "link's default (docs/scenarios.md table: rdma 348, tcp 41.3, nvlink the catalog's "
                                         "NVLink bandwidth x 8).")
    latency_ms: float | None = Field(default=None, ge=0, description="Fixed cost per transfer (handshake, descriptor "
                                     "post, completion notice), milliseconds. Omitted: the link's default (an "
                                     "assumption: rdma 1, tcp 2, nvlink 0.1; measure yours).")


class Disaggregated(Strict):
    """A prefill deployment and a decode deployment of the same model serving one stream of
    requests together (DistServe, OSDI 2024; Splitwise, ISCA 2024; vLLM disaggregated prefill)."""

    prefill: str = Field(description="A key of `deployments:` that computes prompts (one output token each).")
    decode: str = Field(description="A key of `deployments:` of the same model that generates the answers; its prompt "
                        "KV arrives over the link, so it computes only the prompt's last partial KV block.")
    transfer: KvTransfer = Field(default_factory=KvTransfer, description="The KV-cache link between them.")
    first_token: Literal["decode", "prefill"] = Field(
        default="decode", description="Which side's first token the client sees (TTFT). decode: vLLM's disaggregated "
        "proxy discards the prefill's token and streams the decode instance's answer, so TTFT "
        "includes the transfer and the decode's first step; prefill: DistServe and Splitwise return the prefill's token "
        "at once, and the transfer lands in the gap before the second token (TPOT).")
