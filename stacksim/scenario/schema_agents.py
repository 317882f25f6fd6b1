"""Agent fleets, their workflows, and the services agents call: MCP tools, vector stores and
long-term memory.

A workflow is a list of steps run in order; ``loop`` and ``branch`` steps hold steps of their
own, so a graph with loops (a ReAct loop, a retry loop around a flaky tool, an orchestrator that
fans out to sub-agents) is written as structured control flow, the way agent frameworks run it.
Each LLM step's prompt is the agent's system prompt plus the context so far plus the step's new
input, so input tokens grow turn by turn.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from stacksim.scenario.schema import Arrival, Length
from stacksim.scenario.schema_base import MAX_LATENCY_S, Label, Strict
from stacksim.scenario.schema_gateway import LatencyMs

# --------------------------------------------------------------------------- counts


class FixedCount(Strict):
    kind: Literal["fixed"]
    value: int = Field(ge=0)


class UniformCount(Strict):
    """A whole number drawn uniformly from low..high, both included."""

    kind: Literal["uniform"]
    low: int = Field(ge=0)
    high: int = Field(ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> UniformCount:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class GeometricCount(Strict):
    """Repeat until a stop with probability `p_stop` after each iteration (at least `min`)."""

    kind: Literal["geometric"]
    p_stop: float = Field(gt=0, le=1)
    min: int = Field(default=1, ge=0)
    max: int = Field(default=50, ge=1)


Count = Annotated[FixedCount | UniformCount | GeometricCount, Field(discriminator="kind")]


# --------------------------------------------------------------------------- services


class Tool(Strict):
    """An MCP server's tool: a heavy-tailed latency, a concurrency limit, failures, a region."""

    latency: LatencyMs
    region: str | None = Field(default=None, description="Where the MCP server runs. Default: the fleet's region.")
    concurrency: int | None = Field(default=None, ge=1, description="Calls served at once; more wait. Default: unlimited.")
    failure_rate: float = Field(default=0.0, ge=0, le=1, description="Share of calls that fail (after their latency).")
    rpm_limit: int | None = Field(default=None, ge=1, description="Calls in any 60 s window; over it a call fails at once (429).")
    result_tokens: Length = Field(description="Tokens the result adds to the agent's context (no default: it is the tool's).")
    usd_per_call: float = Field(default=0.0, ge=0)
    source: str = Field(default="", description="Where the latency comes from.")


class VectorStore(Strict):
    """A vector index (or a graph store) as a service: `workers` queries at once, query latency growing with the
    index size (HNSW search cost grows with log N) and with top_k (pgvector's ef_search is at
    least top_k), writes with their own latency.

    pgvector default: rivestack.io/pgvector-benchmarks (HNSW on NVMe, 250k x 1536 vectors,
    ef_search 80, recall@10 0.93, 4 clients: p50 3.7 ms, p95 5.9 ms, ~999 QPS; ef_search 10: p50
    2.9 ms). Growth with N: p95 1.5 ms at 100k, 2.1 ms at 1M, 3.2 ms at 10M (m=16, ef_search 40;
    axiomlogica.com, 2026), about x1.45 per tenfold. A dedicated vector DB has no default: give
    its measured latency."""

    kind: Literal["pgvector", "dedicated", "graph"] = Field(
        default="pgvector", description="pgvector (a default latency from a published benchmark), a dedicated vector DB, "
        "or a graph store for long-term memory (both need their measured latency).")
    region: str | None = None
    vectors: int = Field(default=1_000_000, ge=1, description="Index size.")
    workers: int = Field(default=4, ge=1, description="Queries served at once (pgvector: the benchmark's 4 clients on 2 vCPU).")
    latency: LatencyMs | None = Field(default=None, description="Query latency at reference_vectors and reference_ef. Default (pgvector): p50 3.7, p95 5.9 ms.")
    reference_vectors: int = Field(default=250_000, ge=1)
    reference_ef: int = Field(default=80, ge=1)
    ef_search: int = Field(default=40, ge=1, description="pgvector hnsw.ef_search (default 40); the search uses max(ef_search, top_k).")
    growth_per_decade: float = Field(default=1.45, ge=1, description="Latency factor per tenfold index size.")
    write: LatencyMs = Field(default_factory=lambda: LatencyMs(median_ms=5.0, p95_ms=15.0),
                             description="Insert latency (an assumption: one HNSW insert plus a commit).")
    chunk_tokens: int = Field(default=400, ge=1, description="Tokens per retrieved chunk added to the context.")
    usd_per_query: float = Field(default=0.0, ge=0)
    usd_per_month: float = Field(default=0.0, ge=0, description="The store's fixed price (managed pgvector at rivestack.io: "
                                 "$15 Solo 2 vCPU, $59 Growth 4 vCPU, $99 Scale 8 vCPU per month).")

    @model_validator(mode="after")
    def _latency(self) -> VectorStore:
        if self.kind != "pgvector" and self.latency is None:
            raise ValueError(f"a {self.kind} store needs its measured latency (median_ms, p95_ms at reference_vectors); "
                             "only pgvector has a default")
        return self


# --------------------------------------------------------------------------- steps


class LlmStep(Strict):
    kind: Literal["llm"]
    name: str = "llm"
    model: str | None = Field(default=None, description="A deployment or gateway route; default: the agent's model.")
    lora: str | None = Field(default=None, description="The LoRA adapter of this step's calls to a deployment (a key of its "
                             "engine.lora.adapters); default: the agent's lora. Through a gateway route the route names "
                             "the adapter (litellm_params.lora, a Portkey target's lora).")
    input_tokens: Length = Field(description="New tokens this step adds to the prompt (instructions, user turn).")
    output_tokens: Length


class ToolStep(Strict):
    kind: Literal["tool"]
    tool: str
    retries: int = Field(default=0, ge=0, description="Retry a failed call this many times (a retry loop).")


class RetrieveStep(Strict):
    kind: Literal["retrieve"]
    store: str
    top_k: int = Field(default=5, ge=1)


class MemoryReadStep(Strict):
    """Long-term memory read: a query on a vector store holding the agent's memories."""

    kind: Literal["memory_read"]
    store: str
    top_k: int = Field(default=3, ge=1)


class MemoryWriteStep(Strict):
    kind: Literal["memory_write"]
    store: str


class SubagentStep(Strict):
    kind: Literal["subagent"]
    agent: str
    count: Count = Field(default_factory=lambda: FixedCount(kind="fixed", value=1))
    parallel: bool = Field(default=True, description="Sub-agents run at once (fan-out) or one after another.")
    summary_tokens: Length = Field(description="What each sub-agent's answer adds to this agent's context (no default).")


class LoopStep(Strict):
    kind: Literal["loop"]
    count: Count
    steps: list[Step] = Field(min_length=1)


class BranchStep(Strict):
    """With probability `p` run `steps`, otherwise `else_steps`."""

    kind: Literal["branch"]
    p: float = Field(ge=0, le=1)
    steps: list[Step] = Field(min_length=1)
    else_steps: list[Step] = Field(default_factory=list)


Step = Annotated[
    LlmStep | ToolStep | RetrieveStep | MemoryReadStep | MemoryWriteStep | SubagentStep | LoopStep | BranchStep,
    Field(discriminator="kind"),
]


class Agent(Strict):
    model: str = Field(description="A deployment or a gateway route (model_name / Portkey config).")
    lora: str | None = Field(default=None, description="The LoRA adapter of this agent's calls to a deployment (a key of its "
                             "engine.lora.adapters), its LLM steps' default. Omitted: the base model.")
    system_prompt_tokens: int = Field(default=1000, ge=0)
    context_limit_tokens: int | None = Field(default=None, ge=1, description="Default: the model's context window.")
    on_overflow: Literal["truncate", "summarize"] = Field(
        default="truncate", description="When the context would overflow: drop the oldest turns, or summarise them with an LLM call.")
    summary_tokens: int = Field(default=1000, ge=1, description="The summary's length (on_overflow: summarize).")
    steps: list[Step] = Field(min_length=1)


# --------------------------------------------------------------------------- fleets


class TaskBudget(Strict):
    max_steps: int | None = Field(default=None, ge=1, description="LLM and tool calls in one task, sub-agents included.")
    max_tokens: int | None = Field(default=None, ge=1, description="Input + output tokens in one task, sub-agents included.")
    max_usd: float | None = Field(default=None, gt=0)


class Fleet(Strict):
    """Agent tasks: open-loop arrivals, or a closed loop of `closed_loop.clients` agents working continuously."""

    agent: str
    arrival: Arrival
    max_tasks: int | None = Field(default=None, ge=1, description="Stop after this many task arrivals.")
    concurrency: int | None = Field(default=None, ge=1, description="Tasks running at once; more wait.")
    budget: TaskBudget = Field(default_factory=TaskBudget)
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_LATENCY_S, description="A task still running after this is stopped.")
    region: str | None = None
    residency: str | None = None
    tags: dict[Label, Label] = Field(default_factory=dict, description="Gateway key / team / user, tenant ...")


LoopStep.model_rebuild()
BranchStep.model_rebuild()
