"""Agent tasks at run time: one SimPy process per agent invocation, walking its workflow.

An LLM step sends the agent's system prompt, the context so far and the step's new input to a
deployment (directly) or to a gateway route; the answer joins the context, so prompts grow turn
by turn. The prompt's KV blocks are named (the system prompt's blocks are shared by every task of
the agent; the rest belong to the task and change when the context is truncated or summarised),
so a replica's prefix cache reuses what earlier turns computed. At hosted providers the previous
turn's prompt is a prompt-cache hit: OpenAI caches prompts of 1,024 tokens or more, in 128-token
increments (platform.openai.com/docs/guides/prompt-caching), billed at the cached-input price.

Tools and vector stores are services (``services.py``); a sub-agent runs its own workflow, with
its own context, and returns a summary into its parent's context. Budgets (steps, tokens,
dollars) are shared by a task and its sub-agents; a task that reaches one stops before its next
step. A task past its timeout is given up by its client at the deadline. Every step is a span
(``spans.py``); every task ends with one status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from stacksim.agents.services import ToolService, VectorStoreService
from stacksim.agents.spans import SpanLog
from stacksim.gateway.runtime import DONE_CALL
from stacksim.metrics import COMPLETED
from stacksim.scenario import schema_agents as A
from stacksim.serving.lora import set_adapter
from stacksim.workload.arrivals import ARRIVALS
from stacksim.workload.lengths import LENGTHS

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation

PROMPT_CACHE_MIN_TOKENS = 1024  # OpenAI prompt caching: prompts of 1,024 tokens or more
PROMPT_CACHE_STEP = 128  # ... cached in 128-token increments
# Tokens per prompt block id. vLLM hashes 16-token KV blocks; naming 64-token runs (4 engine
# blocks) keeps the per-call cost low on 100k-token agent contexts, and a hit is still rounded
# down to whole engine blocks, so reuse is understated by less than 64 tokens per call.
BLOCK_TOKENS = 64
TASK_STATUSES = ["completed", "failed", "timeout", "budget_steps", "budget_tokens", "budget_usd", "running"]


@dataclass
class Root:
    """What a task and all its sub-agents share: budgets, counters, the outcome."""

    tid: int
    fleet: int
    arrival: float
    begin: float = math.nan
    end: float = math.nan
    status: str = "running"
    steps: int = 0
    llm_calls: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    retrievals: int = 0
    memory_ops: int = 0
    subagents: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    content_tokens: int = 0  # the same work as single-shot chat: every new token counted once
    usd: float = 0.0
    time: dict[str, float] = field(default_factory=lambda: {"llm": 0.0, "tool": 0.0, "retrieval": 0.0, "subagent": 0.0})
    tokens_by_depth: dict[int, int] = field(default_factory=dict)
    calls_by_depth: dict[int, int] = field(default_factory=dict)
    tokens_by_agent: dict[str, int] = field(default_factory=dict)
    calls_by_agent: dict[str, int] = field(default_factory=dict)
    span: int = -1


@dataclass
class Ctx:
    """One agent invocation's working memory."""

    agent: str
    depth: int
    uid: int
    pieces: list[int] = field(default_factory=list)  # context turns, oldest first
    epoch: int = 0  # bumped when the context is rewritten (its prefix changes)
    last_prompt: dict[str, int] = field(default_factory=dict)  # route -> previous prompt tokens (provider prompt cache)

    @property
    def tokens(self) -> int:
        return sum(self.pieces)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele et al., OOPSLA 2014), vectorised: distinct inputs, well-spread ids."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class Stop(Exception):
    """A task ends early (budget, failure); carries the status."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class AgentRuntime:
    def __init__(self, sim: Simulation):
        self.sim = sim
        self.env: simpy.Environment = sim.env
        rs = sim.rs
        sc = rs.scenario
        self.sc = sc
        st = sim.streams
        self.rng = st.get("agents/steps")
        self.rng_len = st.get("agents/lengths")
        self.tools = {n: ToolService(self.env, n, t, st.get(f"tools/{n}")) for n, t in sc.tools.items()}
        self.stores = {n: VectorStoreService(self.env, n, v, st.get(f"vector_stores/{n}")) for n, v in sc.vector_stores.items()}
        self.fleet_names = list(sc.fleets)
        self.fleet_res = {n: simpy.Resource(self.env, capacity=f.concurrency) for n, f in sc.fleets.items() if f.concurrency}
        self.roots: list[Root] = []
        self.spans = SpanLog()
        self.pending = 0
        self.next_uid = 0
        self.waiting: dict[int, simpy.Event] = {}  # serving request -> its LLM step's event
        self.workload_index: dict[tuple[str, str, str], int] = dict(sim.agent_workloads)
        self.agent_index = {n: i for i, n in enumerate(sc.agents)}
        self.context_limit = {n: self._limit(n) for n in sc.agents}

    # ------------------------------------------------------------------ set-up

    def _window(self, target: str) -> int:
        rs = self.sim.rs
        if target in rs.deployments:
            return rs.deployments[target].max_model_len
        plan = rs.gateway_plan
        assert plan is not None
        return min((plan.targets[i].context_window for i in plan.groups.get(plan.route(target), [])), default=10**9)

    def _limit(self, name: str) -> int:
        a = self.sc.agents[name]
        return a.context_limit_tokens or self._window(a.model)

    def start(self) -> None:
        horizon = self.sim.horizon
        for fi, (name, f) in enumerate(self.sc.fleets.items()):
            rng = self.sim.streams.get(f"fleets/{name}")
            if f.arrival.kind == "closed_loop":
                for _ in range(f.arrival.clients):  # type: ignore[union-attr]
                    self.env.process(self._closed(fi, name, f))
                continue
            times = ARRIVALS[f.arrival.kind](f.arrival, rng, horizon, f.max_tasks, path="")
            self.env.process(self._open(fi, name, f, np.asarray(times)))

    def _open(self, fi: int, name: str, f: A.Fleet, times: np.ndarray):  # type: ignore[no-untyped-def]
        env = self.env
        for t in times.tolist():
            if t > env.now:
                yield env.timeout(t - env.now)
            self.env.process(self._task(fi, name, f))

    def _closed(self, fi: int, name: str, f: A.Fleet):  # type: ignore[no-untyped-def]
        env = self.env
        think = f.arrival.think_time_s  # type: ignore[union-attr]
        n = 0
        while env.now < self.sim.horizon and (f.max_tasks is None or n < f.max_tasks):
            n += 1
            yield env.process(self._task(fi, name, f))
            if think > 0:
                yield env.timeout(think)

    # ------------------------------------------------------------------ one task

    def _task(self, fi: int, name: str, f: A.Fleet):  # type: ignore[no-untyped-def]
        env = self.env
        root = Root(tid=len(self.roots), fleet=fi, arrival=env.now)
        self.roots.append(root)
        self.pending += 1
        root.span = self.spans.open(root.tid, -1, f"task {name}", "task", env.now, {"stacksim.fleet": name, "gen_ai.agent.name": f.agent})
        res = self.fleet_res.get(name)
        req = res.request() if res is not None else None
        if req is not None:
            yield req
        root.begin = env.now
        proc = env.process(self._run_root(root, f))
        if f.timeout_s is not None:
            deadline = env.timeout(f.timeout_s - (env.now - root.arrival)) if f.timeout_s > env.now - root.arrival else env.timeout(0)
            yield proc | deadline
            if not proc.triggered:
                root.status = "timeout"
                root.end = env.now
        else:
            yield proc
        if res is not None and req is not None:
            # The slot is held until the work stops, even after the client gave up.
            if not proc.triggered:
                yield proc
            res.release(req)
        self.spans.close(root.span, root.end, root.status == "completed", {"stacksim.status": root.status})
        self.pending -= 1

    def _run_root(self, root: Root, f: A.Fleet):  # type: ignore[no-untyped-def]
        try:
            yield from self._invoke(root, f, f.agent, 0, root.span)
            status = "completed"
        except Stop as s:
            status = s.status
        if root.status == "running":
            root.status = status
            root.end = self.env.now

    def _invoke(self, root: Root, f: A.Fleet, agent: str, depth: int, parent: int):  # type: ignore[no-untyped-def]
        """Run one agent's workflow; returns its context (for a parent's summary)."""
        a = self.sc.agents[agent]
        self.next_uid += 1
        ctx = Ctx(agent=agent, depth=depth, uid=self.next_uid)
        root.content_tokens += a.system_prompt_tokens
        yield from self._steps(root, f, a, ctx, a.steps, parent)
        return ctx

    def _steps(self, root: Root, f: A.Fleet, a: A.Agent, ctx: Ctx, steps: list[Any], parent: int):  # type: ignore[no-untyped-def]
        for step in steps:
            if root.status != "running":
                raise Stop(root.status)
            kind = step.kind
            if kind == "loop":
                for _ in range(self._count(step.count)):
                    yield from self._steps(root, f, a, ctx, step.steps, parent)
            elif kind == "branch":
                yield from self._steps(root, f, a, ctx, step.steps if self.rng.random() < step.p else step.else_steps, parent)
            elif kind == "llm":
                self._budget(root, f)
                inp = self._draw(step.input_tokens)
                out = self._draw(step.output_tokens)
                root.content_tokens += inp + out
                yield from self._llm(root, f, a, ctx, step.model or a.model, inp, out, parent, step.name, step.lora or a.lora)
            elif kind == "tool":
                yield from self._tool(root, f, ctx, step, parent)
            elif kind in ("retrieve", "memory_read"):
                yield from self._retrieve(root, f, ctx, step, parent)
            elif kind == "memory_write":
                yield from self._memory_write(root, f, step, parent)
            elif kind == "subagent":
                yield from self._subagents(root, f, a, ctx, step, parent)

    # ------------------------------------------------------------------ helpers

    def _count(self, c: Any) -> int:
        if c.kind == "fixed":
            return int(c.value)
        if c.kind == "uniform":
            return int(self.rng.integers(c.low, c.high + 1))
        n = c.min
        while n < c.max and (n == 0 or self.rng.random() >= c.p_stop):
            n += 1
        return n

    def _draw(self, spec: Any) -> int:
        return int(LENGTHS[spec.kind](spec, self.rng_len, 1, path="", which="input")[0])

    def _budget(self, root: Root, f: A.Fleet) -> None:
        b = f.budget
        if b.max_steps is not None and root.steps >= b.max_steps:
            raise Stop("budget_steps")
        if b.max_tokens is not None and root.input_tokens + root.output_tokens >= b.max_tokens:
            raise Stop("budget_tokens")
        if b.max_usd is not None and root.usd >= b.max_usd:
            raise Stop("budget_usd")

    def _region(self, f: A.Fleet) -> str:
        plan = self.sim.rs.gateway_plan
        return f.region or (plan.spec.regions[0] if plan is not None else "us-east")

    def _rtt(self, f: A.Fleet, where: str | None) -> float:
        """Round trip from the fleet to a service (in the fleet's own region when not placed)."""
        rm = self.sim.rs.regions
        here = self._region(f)
        if rm is None:
            return 0.0
        return rm.rtt_s(here, where or here)

    # ------------------------------------------------------------------ steps

    def _fit(self, root: Root, f: A.Fleet, a: A.Agent, ctx: Ctx, inp: int, out: int, parent: int):  # type: ignore[no-untyped-def]
        """Make system + context + input + output fit the context limit: drop the oldest turns,
        or summarise the context with an extra LLM call."""
        limit = self.context_limit[ctx.agent]
        if a.system_prompt_tokens + ctx.tokens + inp + out <= limit:
            return
        if a.on_overflow == "summarize" and ctx.tokens > a.summary_tokens:
            while ctx.pieces and a.system_prompt_tokens + ctx.tokens + a.summary_tokens > limit:
                ctx.pieces.pop(0)  # what does not fit even the summariser's prompt is dropped
            yield from self._call(root, f, a, ctx, a.model, 0, a.summary_tokens, parent, "summarize", add=False, lora=a.lora)
            ctx.pieces = [a.summary_tokens]
        while ctx.pieces and a.system_prompt_tokens + ctx.tokens + inp + out > limit:
            ctx.pieces.pop(0)
        ctx.epoch += 1
        if a.system_prompt_tokens + inp + out > limit:
            raise Stop("failed")

    def _llm(self, root, f, a, ctx, target, inp, out, parent, name, lora):  # type: ignore[no-untyped-def]
        yield from self._fit(root, f, a, ctx, inp, out, parent)
        yield from self._call(root, f, a, ctx, target, inp, out, parent, name, lora=lora)

    def _blocks(self, a: A.Agent, ctx: Ctx, prompt: int) -> np.ndarray:
        """Block ids of a prompt: the system prompt's are the agent's (shared by all its tasks),
        the rest the task's context at this epoch; equal prefixes get equal ids."""
        n = prompt // BLOCK_TOKENS
        shared = min(a.system_prompt_tokens // BLOCK_TOKENS, n)
        i = np.arange(n, dtype=np.uint64)
        owner = np.full(n, np.uint64(ctx.uid) << np.uint64(20) | np.uint64(ctx.epoch & 0xFFFFF), dtype=np.uint64)
        owner[:shared] = np.uint64(self.agent_index[ctx.agent]) | np.uint64(1) << np.uint64(62)
        return (_mix(owner * np.uint64(0x9E3779B97F4A7C15) ^ i) >> np.uint64(1)).astype(np.int64)

    def _call(self, root, f, a, ctx, target, inp, out, parent, name, add=True, lora=None):  # type: ignore[no-untyped-def]
        """One LLM call. ``lora``: the adapter of a call straight to a deployment (a gateway route
        names its own, resolve_agents checks); it keys the prompt's prefix blocks too."""
        env, sim = self.env, self.sim
        prompt = a.system_prompt_tokens + ctx.tokens + inp
        wi = self.workload_index[(self.fleet_names[root.fleet], ctx.agent, target)]
        t0 = env.now
        span = self.spans.open(root.tid, parent, f"chat {target}", "llm", t0, {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": target, "gen_ai.agent.name": ctx.agent,
            "stacksim.step": name, "stacksim.depth": ctx.depth})
        root.steps += 1
        root.llm_calls += 1
        blocks = self._blocks(a, ctx, prompt)
        cached = 0
        cost = 0.0
        if target in sim.deployments:
            dep = sim.deployments[target]
            rid = sim.new_serving_request(t0, prompt, out, wi, dep, -1)
            if hasattr(sim.reqs, "set_blocks"):
                sim.reqs.set_blocks(rid, blocks, BLOCK_TOKENS)
            rl = dep.rd.lora
            if lora is not None and rl is not None:
                set_adapter(sim.reqs, rid, rl.index[lora])  # before the balancer sees it (lora_affinity)
            ev = env.event()
            self.waiting[rid] = ev
            dep.submit(rid)
            if not ev.triggered:
                yield ev
            ok = int(sim.reqs.status[rid]) == COMPLETED
            col = getattr(sim.reqs, "cached_tokens", None)
            cached = int(col[rid]) if col is not None else 0
            attrs: dict[str, Any] = {"stacksim.deployment": target, "stacksim.request_id": rid}
            if lora is not None:
                attrs["stacksim.lora"] = lora
        else:
            gw = sim.gateway
            assert gw is not None and sim.calls is not None
            prev = ctx.last_prompt.get(target, 0)
            if prev >= PROMPT_CACHE_MIN_TOKENS:
                cached = prev // PROMPT_CACHE_STEP * PROMPT_CACHE_STEP
            cid = sim.calls.add(t0, prompt, out, wi)
            sim.calls.cached_tokens[cid] = cached
            gw.blocks[cid] = (blocks, BLOCK_TOKENS)
            yield gw.submit(cid)
            gw.blocks.pop(cid, None)
            c = sim.calls
            if c.finish_s[cid] > env.now:  # the answer's way back from the gateway
                yield env.timeout(float(c.finish_s[cid]) - env.now)
            ok = int(c.state[cid]) == DONE_CALL and int(c.status[cid]) == COMPLETED
            cost = float(c.cost_usd[cid])
            cached = int(c.cached_tokens[cid])  # the provider's prompt cache, or the replica's prefix cache
            if not ok or int(c.cache[cid]):
                cached = 0
            attrs = {"stacksim.call_id": cid, "stacksim.route": target, "http.response.status_code": int(c.http[cid])}
            if int(c.target[cid]) >= 0:
                tp = gw.targets[int(c.target[cid])]
                attrs["gen_ai.system"] = tp.endpoint.split("@")[0] if tp.endpoint else "self-hosted"
                attrs["stacksim.target"] = tp.label
            if cid in gw.call_lora:
                attrs["stacksim.lora"] = gw.call_lora[cid]
        ctx.last_prompt[target] = prompt
        root.input_tokens += prompt
        root.output_tokens += out if ok else 0
        root.cached_tokens += cached if ok else 0
        root.usd += cost
        root.tokens_by_depth[ctx.depth] = root.tokens_by_depth.get(ctx.depth, 0) + prompt + (out if ok else 0)
        root.calls_by_depth[ctx.depth] = root.calls_by_depth.get(ctx.depth, 0) + 1
        root.tokens_by_agent[ctx.agent] = root.tokens_by_agent.get(ctx.agent, 0) + prompt + (out if ok else 0)
        root.calls_by_agent[ctx.agent] = root.calls_by_agent.get(ctx.agent, 0) + 1
        dt = env.now - t0
        root.time["llm"] += dt if ctx.depth == 0 else 0.0
        attrs.update({"gen_ai.usage.input_tokens": prompt, "gen_ai.usage.output_tokens": out if ok else 0,
                      "stacksim.cached_input_tokens": cached if ok else 0, "stacksim.cost_usd": round(cost, 8)})
        self.spans.close(span, env.now, ok, attrs)
        if not ok:
            raise Stop("failed")
        if add:
            ctx.pieces.append(inp + out)

    def on_serving_done(self, rid: int) -> None:
        ev = self.waiting.pop(rid, None)
        if ev is not None and not ev.triggered:
            ev.succeed(rid)

    def _tool(self, root: Root, f: A.Fleet, ctx: Ctx, step: A.ToolStep, parent: int):  # type: ignore[no-untyped-def]
        env = self.env
        svc = self.tools[step.tool]
        t0 = env.now
        for attempt in range(step.retries + 1):
            self._budget(root, f)
            root.steps += 1
            root.tool_calls += 1
            s0 = env.now
            span = self.spans.open(root.tid, parent, f"execute_tool {step.tool}", "tool", s0,
                                   {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": step.tool, "stacksim.attempt": attempt})
            ok, status = yield from svc.call(self._rtt(f, svc.spec.region))
            root.usd += svc.spec.usd_per_call
            self.spans.close(span, env.now, ok, {"stacksim.status_code": status})
            if ok:
                n = self._draw(svc.spec.result_tokens)
                ctx.pieces.append(n)
                root.content_tokens += n
                break
            root.tool_failures += 1
        else:
            if ctx.depth == 0:
                root.time["tool"] += env.now - t0
            raise Stop("failed")
        if ctx.depth == 0:
            root.time["tool"] += env.now - t0

    def _retrieve(self, root: Root, f: A.Fleet, ctx: Ctx, step: Any, parent: int):  # type: ignore[no-untyped-def]
        env = self.env
        svc = self.stores[step.store]
        t0 = env.now
        name = "retrieval" if step.kind == "retrieve" else "memory_read"
        span = self.spans.open(root.tid, parent, f"{name} {step.store}", name, t0,
                               {"db.system.name": svc.spec.kind, "stacksim.top_k": step.top_k})
        yield from svc.query(step.top_k, self._rtt(f, svc.spec.region))
        n = step.top_k * svc.spec.chunk_tokens
        ctx.pieces.append(n)
        root.content_tokens += n
        root.usd += svc.spec.usd_per_query
        if step.kind == "retrieve":
            root.retrievals += 1
        else:
            root.memory_ops += 1
        if ctx.depth == 0:
            root.time["retrieval"] += env.now - t0
        self.spans.close(span, env.now, True, {"stacksim.tokens_added": n})

    def _memory_write(self, root: Root, f: A.Fleet, step: A.MemoryWriteStep, parent: int):  # type: ignore[no-untyped-def]
        env = self.env
        svc = self.stores[step.store]
        t0 = env.now
        span = self.spans.open(root.tid, parent, f"memory_write {step.store}", "memory_write", t0, {"db.system.name": svc.spec.kind})
        yield from svc.write(self._rtt(f, svc.spec.region))
        root.memory_ops += 1
        self.spans.close(span, env.now, True, {})

    def _subagents(self, root: Root, f: A.Fleet, a: A.Agent, ctx: Ctx, step: A.SubagentStep, parent: int):  # type: ignore[no-untyped-def]
        env = self.env
        n = self._count(step.count)
        t0 = env.now
        results: list[int] = []
        failed: list[str] = []

        def one(i: int):  # type: ignore[no-untyped-def]
            span = self.spans.open(root.tid, parent, f"invoke_agent {step.agent}", "subagent", env.now,
                                   {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": step.agent, "stacksim.depth": ctx.depth + 1})
            root.subagents += 1
            try:
                yield from self._invoke(root, f, step.agent, ctx.depth + 1, span)
            except Stop as s:  # recorded, so that parallel siblings finish before the parent stops
                failed.append(s.status)
                self.spans.close(span, env.now, False, {"stacksim.status": s.status})
                return
            n_sum = self._draw(step.summary_tokens)
            results.append(n_sum)
            root.content_tokens += n_sum
            self.spans.close(span, env.now, True, {"stacksim.summary_tokens": n_sum})

        if step.parallel and n > 1:
            yield simpy.AllOf(env, [env.process(one(i)) for i in range(n)])
        else:
            for i in range(n):
                yield from one(i)
                if failed:
                    break
        if ctx.depth == 0:
            root.time["subagent"] += env.now - t0
        if failed:
            raise Stop(failed[0])
        ctx.pieces.extend(results)
