"""The gateway at run time: one SimPy process per client call, LiteLLM's rules applied in order.

A call: the client's request travels to the nearest gateway instance its residency class allows
(half a round trip), waits for a worker and takes the gateway's overhead, passes the key / team /
user rate limits, parallel-request limits and budgets, the response cache and the pre-call
guardrails, then the router tries the model group: healthy deployments (cooled-down ones and
those the residency class forbids removed), pre-call checks, `order`, the routing strategy, the
attempt with its timeouts, up to `num_retries` retries, then the fallback groups in order. The
answer goes back through the post-call guardrails to the client. Every call ends with one final
status, and every attempt is logged, so nothing leaves the books.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from stacksim.gateway.limits import Budget, Cooldowns, SlidingCount, SlidingSum, parse_duration_s
from stacksim.gateway.plan import MAX_FALLBACKS, GatewayPlan, TargetPlan
from stacksim.gateway.providers import NEVER, ProviderRuntime
from stacksim.gateway.routing import LatencyBased, Usage, make_strategy, within_limits
from stacksim.metrics import COMPLETED, FAILED, REJECTED
from stacksim.network import RegionMap, allowed
from stacksim.serving.lora import caller_adapter, set_adapter

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation
    from stacksim.scenario.schema_gateway import LatencyMs

Z95 = 1.6448536269514722
# LiteLLM's exponential backoff for a rate-limited retry with no other deployment to try
# (litellm `_calculate_retry_after`, the OpenAI Python SDK's rule): min(0.5 * 2^n, 8) s, times a
# jitter in [0.75, 1].
BACKOFF_INITIAL_S, BACKOFF_MAX_S, BACKOFF_JITTER = 0.5, 8.0, 0.25

# Final outcome of a call: (status class, reason). Reasons are the `outcome` column.
REASONS = [
    "ok", "cache_hit", "rate_limited", "parallel_limit", "budget_exceeded", "guardrail_blocked",
    "context_window", "content_policy", "provider_rate_limited", "no_deployments", "error", "timeout",
    "residency_fail_closed", "gateway_unavailable", "lost", "router_error",
]
R = {name: i for i, name in enumerate(REASONS)}
PENDING_CALL, DONE_CALL = 0, 1


def lognormal_s(rng: np.random.Generator, lat: LatencyMs | None) -> float:
    if lat is None or lat.median_ms <= 0:
        return 0.0
    if lat.p95_ms is None or lat.p95_ms <= lat.median_ms:
        return lat.median_ms / 1000.0
    sigma = math.log(lat.p95_ms / lat.median_ms) / Z95
    return lat.median_ms / 1000.0 * math.exp(sigma * rng.standard_normal())


class CallTable:
    """Client calls through the gateway: one row per call (numpy columns)."""

    def __init__(self, n: int):
        self.n = n
        f = lambda: np.full(n, np.nan)
        i = lambda v=0: np.full(n, v, dtype=np.int64)
        self.arrival_s, self.first_token_s, self.finish_s = f(), f(), f()
        self.cost_usd, self.egress_usd = np.zeros(n), np.zeros(n)
        self.workload, self.input_tokens, self.output_tokens, self.prompt = i(), i(), i(), i(-1)
        self.status, self.reason, self.http = i(PENDING_CALL), i(-1), i(0)
        self.target, self.group, self.attempts, self.retries, self.fallbacks = i(-1), i(-1), i(), i(), i()
        self.cache = i()  # 0 miss / off, 1 exact, 2 semantic
        self.gw_region, self.served_region, self.client_region = i(-1), i(-1), i(-1)
        self.state = i(PENDING_CALL)
        self.cached_tokens = i()  # input tokens a provider's prompt cache served (agents' repeated context)
        self.cap = n

    def add(self, arrival: float, inp: int, out: int, workload: int) -> int:
        """A call made during the run (an agent's LLM step); its columns grow by doubling."""
        if self.n == self.cap:
            new = max(16, 2 * self.cap)
            for name, arr in list(vars(self).items()):
                if isinstance(arr, np.ndarray):
                    fill = np.nan if arr.dtype.kind == "f" else (-1 if name in _MINUS_ONE else 0)
                    grown = np.full(new, fill, dtype=arr.dtype)
                    grown[: self.cap] = arr
                    setattr(self, name, grown)
            self.cap = new
        cid = self.n
        self.n += 1
        self.arrival_s[cid], self.input_tokens[cid], self.output_tokens[cid], self.workload[cid] = arrival, inp, out, workload
        self.cost_usd[cid] = self.egress_usd[cid] = 0.0
        return cid


_MINUS_ONE = {"prompt", "reason", "target", "group", "gw_region", "served_region", "client_region"}


class _Instance:
    def __init__(self, env: simpy.Environment, region: str, slots: int):
        self.region = region
        self.res = simpy.Resource(env, capacity=slots)
        self.down_until = 0.0


class _Principal:
    """A key, team or user: sliding-window limits, in-flight count, budget."""

    def __init__(self, spec: Any):
        self.rpm = SlidingCount(spec.rpm_limit)
        self.tpm = SlidingSum(spec.tpm_limit)
        self.max_parallel = spec.max_parallel_requests
        self.in_flight = 0
        self.budget = Budget(spec.max_budget, parse_duration_s(spec.budget_duration) if spec.budget_duration else None) \
            if spec.max_budget is not None else None
        self.rejected_rate = 0
        self.rejected_budget = 0


class _RequestView:
    """What an attempt at a deployment reads of its serving request."""

    def __init__(self, reqs: Any):
        self.reqs = reqs

    def first(self, k: int) -> float:
        return float(self.reqs.first_token_s[k])

    def status(self, k: int) -> int:
        return int(self.reqs.status[k])

    def cached(self, k: int) -> int:
        return int(self.reqs.cached_tokens[k])


class _ClientView:
    """What an attempt at a disaggregated group reads of its client request (serving/disagg.py):
    the first token from the side the group names, the prefill side's prefix-cache hit."""

    def __init__(self, dz: Any):
        self.dz = dz

    def first(self, k: int) -> float:
        return float(self.dz.first_token_s(k))

    def status(self, k: int) -> int:
        return int(self.dz.clients.status[k])

    def cached(self, k: int) -> int:
        return int(self.dz.sim.reqs.cached_tokens[int(self.dz.clients.prefill_rid[k])])


class GatewayRuntime:
    def __init__(self, sim: Simulation, plan: GatewayPlan, rm: RegionMap, calls: CallTable,
                 workloads: list[Any], residency: list[frozenset[str] | None], client_regions: list[str]):
        self.sim = sim
        self.env = sim.env
        self.plan = plan
        self.rm = rm
        self.calls = calls
        self.workloads = workloads
        self.residency = residency
        self.client_regions = client_regions
        self.region_ids = sorted(rm.places)
        self.region_index = {r: i for i, r in enumerate(self.region_ids)}
        spec = plan.spec
        st = sim.streams
        self.rng_route = st.get("gateway/routing")
        self.rng_misc = st.get("gateway/overhead")
        self.rng_cache = st.get("gateway/cache")
        self.rng_guard = st.get("gateway/guardrails")
        self.rng_backoff = st.get("gateway/backoff")
        self.providers = {name: ProviderRuntime(ep, st.get(f"providers/{name}")) for name, ep in plan.endpoints.items()}
        self.targets = plan.targets
        self.usage = Usage(len(self.targets))
        self.strategy = make_strategy(plan, self.usage, self.rng_route)
        self.cooldowns = Cooldowns(len(self.targets), plan.cooldown_s, plan.allowed_fails)
        self.instances = {r: _Instance(self.env, r, spec.instances_per_region * spec.workers_per_instance) for r in spec.regions}
        self.principals: dict[tuple[str, str], _Principal] = {}
        for kind, table in (("key", spec.keys), ("team", spec.teams), ("user", spec.users)):
            for name, lim in table.items():
                self.principals[(kind, name)] = _Principal(lim)
        self.cache: dict[tuple[int, int], float] = {}
        self.group_index = {g: i for i, g in enumerate(plan.groups)}
        self.waiting: dict[int, simpy.Event] = {}  # serving request id -> its attempt's event
        # Deployments whose finished requests the gateway waits on (a disaggregated group's clients
        # end in serving/disagg.py, which triggers the attempt's event itself).
        self.dep_targets = {t.deployment for t in self.targets if t.kind == "self" and t.disagg is None}
        self.lora_ids = [self._lora_ids(t) for t in self.targets]
        self.call_lora: dict[int, str] = {}  # call -> the adapter of the attempt that answered it
        # Attempt log (one row per try at a deployment).
        self.a_call: list[int] = []
        self.a_target: list[int] = []
        self.a_start: list[float] = []
        self.a_end: list[float] = []
        self.a_http: list[int] = []
        self.a_kind: list[str] = []
        self.pending = calls.n
        self.retry_after: dict[int, float] = {}  # call -> the Retry-After of its last 429
        self.blocks: dict[int, tuple[np.ndarray, int]] = {}  # call -> its prompt's KV block ids (agents)
        self.portkey = None
        if plan.kind == "portkey":
            from stacksim.gateway.portkey import PortkeyRouter

            self.portkey = PortkeyRouter(self, plan.portkey)

    # ------------------------------------------------------------------ plumbing

    def _lora_ids(self, t: TargetPlan) -> dict[str, int]:
        """Adapter name -> id on a self-hosted target's deployment (empty: no adapters named)."""
        if t.kind != "self" or t.lora is None:
            return {}
        rl = self.sim.rs.deployments[t.deployment].lora  # type: ignore[index]
        return dict(rl.index) if rl is not None else {}

    def _adapter(self, cid: int, t: TargetPlan) -> tuple[str | None, int]:
        """The LoRA adapter (name, id; None and 0 for the base model) this call runs on target ``t``."""
        if t.lora is None:
            return None, 0
        name = caller_adapter(t.lora, self.workloads[self.calls.workload[cid]].tags)
        return name, (self.lora_ids[t.index][name] if name is not None else 0)

    def on_serving_done(self, rid: int) -> None:
        ev = self.waiting.pop(rid, None)
        if ev is not None and not ev.triggered:
            ev.succeed(rid)

    def start(self) -> None:
        c = self.calls
        order = np.argsort(c.arrival_s[: c.n], kind="stable")
        self.env.process(self._arrivals(order))

    def submit(self, cid: int):  # type: ignore[no-untyped-def]
        """A call made during the run (see CallTable.add): its process, to wait on."""
        self.pending += 1
        return self.env.process(self._call(cid))

    def _arrivals(self, order: np.ndarray):  # type: ignore[no-untyped-def]
        env = self.env
        arr = self.calls.arrival_s
        for cid in order.tolist():
            d = arr[cid] - env.now
            if d > 0:
                yield env.timeout(d)
            env.process(self._call(cid))

    def _instance(self, client: str, allow: frozenset[str] | None) -> tuple[_Instance | None, bool]:
        """Nearest gateway instance that is up and allowed; (None, True) when residency forbade one."""
        now = self.env.now
        best, best_rtt, forbidden = None, math.inf, False
        for inst in self.instances.values():
            if not allowed(allow, self.rm.jurisdiction(inst.region)):
                forbidden = True
                continue
            if inst.down_until > now:
                continue
            rtt = self.rm.rtt_s(client, inst.region)
            if rtt < best_rtt:
                best, best_rtt = inst, rtt
        return best, forbidden

    def _principals(self, cid: int) -> list[_Principal]:
        tags = self.workloads[self.calls.workload[cid]].tags
        out = []
        for kind in ("key", "team", "user"):
            name = tags.get(kind)
            if name is not None and (kind, name) in self.principals:
                out.append(self.principals[(kind, name)])
        return out

    def _end(self, cid: int, status: int, reason: str, http: int, first: float, finish: float) -> None:
        c = self.calls
        c.status[cid] = status
        c.reason[cid] = R[reason]
        c.http[cid] = http
        c.first_token_s[cid] = first
        c.finish_s[cid] = finish
        c.state[cid] = DONE_CALL
        self.pending -= 1

    # ------------------------------------------------------------------ one call

    def _call(self, cid: int):  # type: ignore[no-untyped-def]
        env, c, plan, rm = self.env, self.calls, self.plan, self.rm
        spec = plan.spec
        wl = self.workloads[c.workload[cid]]
        allow = self.residency[c.workload[cid]]
        client = self.client_regions[c.workload[cid]]
        inp, out = int(c.input_tokens[cid]), int(c.output_tokens[cid])
        c.client_region[cid] = self.region_index[client]
        c.group[cid] = self.group_index[plan.route(wl.target)]
        inst, forbidden = self._instance(client, allow)
        if inst is None:
            reason = "residency_fail_closed" if forbidden and not any(
                allowed(allow, rm.jurisdiction(i.region)) for i in self.instances.values()) else "gateway_unavailable"
            self._end(cid, FAILED, reason, 503, math.nan, env.now)
            return
        c.gw_region[cid] = self.region_index[inst.region]
        half_in = rm.rtt_s(client, inst.region) / 2.0
        yield env.timeout(half_in)
        with inst.res.request() as req:
            yield req
            yield env.timeout(lognormal_s(self.rng_misc, spec.overhead))
        now = env.now
        back = half_in  # the answer's way back to the client
        # Rate limits, parallel limits, budgets (key / team / user).
        prs = self._principals(cid)
        for p in prs:
            if not p.rpm.allows(now) or not p.tpm.allows(now, inp + out):
                p.rejected_rate += 1
                self._end(cid, REJECTED, "rate_limited", 429, math.nan, now + back)
                return
            if p.max_parallel is not None and p.in_flight >= p.max_parallel:
                p.rejected_rate += 1
                self._end(cid, REJECTED, "parallel_limit", 429, math.nan, now + back)
                return
            if p.budget is not None and not p.budget.allows(now):
                p.rejected_budget += 1
                p.budget.hit_at.append(now)
                self._end(cid, REJECTED, "budget_exceeded", 400, math.nan, now + back)
                return
        for p in prs:
            p.rpm.add(now)
            p.tpm.add(now, inp + out)
            p.in_flight += 1
        try:
            yield from self._admitted(cid, wl, allow, inst, inp, out, back, prs)
        finally:
            for p in prs:
                p.in_flight -= 1

    def _admitted(self, cid, wl, allow, inst, inp, out, back, prs):  # type: ignore[no-untyped-def]
        env, c, plan = self.env, self.calls, self.plan
        spec = plan.spec
        group = plan.route(self.workloads[c.workload[cid]].target)
        gi = self.group_index[group]
        # Response cache (per model group): exact on a repeated prompt, semantic by a hit rate.
        if plan.cache:
            yield env.timeout(lognormal_s(self.rng_cache, spec.cache_model.lookup))
            now = env.now
            key = (int(c.prompt[cid]), gi)
            exp = self.cache.get(key)
            hit = 1 if (c.prompt[cid] >= 0 and exp is not None and exp > now) else 0
            if not hit and plan.cache_semantic and self.rng_cache.random() < spec.cache_model.semantic_hit_rate:
                hit = 2
            if hit:
                c.cache[cid] = hit
                self._end(cid, COMPLETED, "cache_hit", 200, now + back, now + back)
                return
        # Guardrails before the call.
        for g in spec.guardrails:
            if g.mode != "pre_call":
                continue
            yield env.timeout(lognormal_s(self.rng_guard, g.latency))
            if self.rng_guard.random() < g.block_rate:
                self._end(cid, REJECTED, "guardrail_blocked", 400, math.nan, env.now + back)
                return
        during = [g for g in spec.guardrails if g.mode == "during_call"]
        call_start = env.now
        route = self.portkey.route if self.portkey is not None else self._route
        ok, reason, http, first, end, cost = yield from route(cid, group, allow, inst, inp, out)
        c.cost_usd[cid] += cost
        for p in prs:
            if p.budget is not None and cost > 0:
                p.budget.add(env.now, cost)
        if not ok:
            status = REJECTED if http == 400 else FAILED
            self._end(cid, status, reason, http, math.nan, env.now + back)
            return
        # during_call guardrails ran beside the model; the answer is held until they pass.
        for g in during:
            done = call_start + lognormal_s(self.rng_guard, g.latency)
            if self.rng_guard.random() < g.block_rate:
                if done > env.now:
                    yield env.timeout(done - env.now)
                self._end(cid, REJECTED, "guardrail_blocked", 400, math.nan, env.now + back)
                return
            first = max(first, done)
            end = max(end, done)
        post = [g for g in spec.guardrails if g.mode == "post_call"]
        for g in post:
            yield env.timeout(lognormal_s(self.rng_guard, g.latency))
            end = env.now
            first = end  # the answer is checked whole before it is released
            if self.rng_guard.random() < g.block_rate:
                self._end(cid, REJECTED, "guardrail_blocked", 400, math.nan, env.now + back)
                return
        if plan.cache and c.prompt[cid] >= 0:
            ttl = plan.cache_ttl_s
            self.cache[(int(c.prompt[cid]), gi)] = env.now + (ttl if ttl is not None else math.inf)
        self._end(cid, COMPLETED, reason, 200, first + back, end + back)

    # ------------------------------------------------------------------ the router

    def _candidates(self, group: str, allow: frozenset[str] | None, inp: int, out: int) -> tuple[list[TargetPlan], bool]:
        now = self.env.now
        plan = self.plan
        cands = [self.targets[i] for i in plan.groups[group]]
        allowed_c = [t for t in cands if allowed(allow, t.jurisdiction)]
        blocked = len(allowed_c) < len(cands)
        healthy = [t for t in allowed_c if not self.cooldowns.cooled(t.index, now) and self._up(t, now)]
        if plan.pre_call_checks:
            healthy = [t for t in healthy if inp + out <= t.context_window and within_limits(t, self.usage, now, inp)]
        orders = [t.order for t in healthy if t.order is not None]
        if orders:  # `order`: the lowest order among healthy deployments is used until unavailable
            lo = min(orders)
            healthy = [t for t in healthy if t.order == lo]
        # Forbidden targets that are healthy: failing here is failing *closed* for residency.
        closed = blocked and not healthy and any(
            not allowed(allow, t.jurisdiction) and not self.cooldowns.cooled(t.index, now) and self._up(t, now) for t in cands)
        return healthy, closed or (blocked and not allowed_c)

    def _up(self, t: TargetPlan, now: float) -> bool:
        """Known-down capacity is skipped as LiteLLM's health checks would (a deployment with no
        live replica; a provider in an announced outage is *not* known: it is found by failing)."""
        if t.kind == "self":
            if t.disagg is not None:  # a prefill/decode pair needs both sides
                g = self.sim.rs.disaggregated[t.disagg]
                return self.sim.deployments[g.prefill.name].any_up() and self.sim.deployments[g.decode.name].any_up()
            dep = self.sim.deployments[t.deployment]  # type: ignore[index]
            return dep.any_up()
        return True

    def _route(self, cid, group, allow, inst, inp, out):  # type: ignore[no-untyped-def]
        env, plan, c = self.env, self.plan, self.calls
        groups = [group]
        chain_set = False
        last: tuple[str, int] = ("no_deployments", 429)
        residency_closed = False
        cost_total = 0.0
        gi_pos = 0
        while gi_pos < len(groups):
            g = groups[gi_pos]
            if gi_pos > 0:
                c.fallbacks[cid] += 1
            k = 0
            while k <= plan.num_retries:
                if k > 0:
                    c.retries[cid] += 1
                cands, closed = self._candidates(g, allow, inp, out)
                residency_closed = residency_closed or closed
                pick = self.strategy.pick(cands, env.now, inp) if cands else None
                if pick is None:
                    last = ("residency_fail_closed", 503) if closed else ("no_deployments", 429 if cands else 503)
                    if closed:
                        break
                    wait = self._backoff(k, 429, len(cands))
                else:
                    res = yield from self._attempt(cid, pick, inst, inp, out)
                    ok, kind, http, first, end, cost = res
                    cost_total += cost
                    if ok:
                        c.target[cid] = pick.index
                        c.served_region[cid] = self.region_index[pick.region]
                        return True, "ok", 200, first, end, cost_total
                    last = (kind, http)
                    if kind in ("context_window", "content_policy", "lost"):
                        break
                    wait = self._backoff(k, http, len(cands))
                k += 1
                if k <= plan.num_retries and wait > 0:
                    yield env.timeout(wait)
            if last[0] == "lost":
                break
            if not chain_set:
                chain_set = True
                table = {"context_window": plan.context_window_fallbacks, "content_policy": plan.content_policy_fallbacks}.get(last[0])
                nxt = (table or {}).get(group) if table is not None else None
                if nxt is None:
                    nxt = plan.fallbacks.get(group, plan.default_fallbacks)
                groups += [x for x in nxt if x != group][:MAX_FALLBACKS]
            gi_pos += 1
        if residency_closed and last[0] in ("no_deployments", "residency_fail_closed"):
            last = ("residency_fail_closed", 503)
        return False, last[0], last[1], math.nan, env.now, cost_total

    def _backoff(self, k: int, http: int, n_healthy: int) -> float:
        """Before retry k+1: immediate when another deployment can take it; a rate-limited call
        with nowhere else to go backs off exponentially; never less than `retry_after`."""
        wait = 0.0
        if http == 429 and n_healthy <= 1:
            jitter = 1.0 - BACKOFF_JITTER * self.rng_backoff.random()
            wait = min(BACKOFF_INITIAL_S * 2.0**k, BACKOFF_MAX_S) * jitter
        return max(wait, self.plan.retry_after)

    def _attempt(self, cid, t: TargetPlan, inst: _Instance, inp: int, out: int):  # type: ignore[no-untyped-def]
        env, plan, rm, c = self.env, self.plan, self.rm, self.calls
        start = env.now
        c.attempts[cid] += 1
        self.usage.start(t.index, start)
        rtt = rm.rtt_s(inst.region, t.region)
        total_to = t.timeout or plan.timeout
        first_to = t.stream_timeout
        egress = rm.egress_usd(inst.region, t.region, inp)
        if t.kind == "provider":
            prov = self.providers[t.endpoint]  # type: ignore[index]
            assert t.model is not None
            o = prov.call(t.model, t.context_window, inp, out, start + rtt / 2.0)
            ok = o.status == 200
            if o.status == 429:
                self.retry_after[cid] = o.retry_after_s
            first = start + rtt + o.ttft_s
            end = start + rtt + o.total_s  # an error answers after the round trip; NEVER never does
            kind, http = ("error" if o.kind == "outage" else o.kind), o.status
            deadline = start + total_to
            if first_to is not None and first > start + first_to:
                deadline = min(deadline, start + first_to)
            if end > deadline:
                yield env.timeout(deadline - start)
                gen = 0.0
                if ok and deadline > first:  # the part of the answer streamed before the cut is billed
                    gen = (deadline - first) / max(end - first, 1e-12) * max(out - 1, 0) + 1
                cost = (inp * t.usd_in_per_token + gen * t.usd_out_per_token) if ok else 0.0
                return self._log(cid, t, start, False, "timeout", 408, NEVER, env.now, cost, egress, out)
            yield env.timeout(max(end - start, 0.0))
            cached = int(c.cached_tokens[cid])
            cost = (inp - cached) * t.usd_in_per_token + cached * t.usd_cached_in_per_token + out * t.usd_out_per_token if ok else 0.0
            if ok:
                return self._log(cid, t, start, True, "ok", 200, first, end, cost, egress, out)
            return self._log(cid, t, start, False, kind, http, NEVER, env.now, 0.0, egress, out)
        # Self-hosted: a serving request on the deployment's replicas, or a client request of a
        # disaggregated group (its prefill leg, the KV transfer, its decode leg: serving/disagg.py).
        yield env.timeout(rtt / 2.0)
        reqs = self.sim.reqs
        blocks = self.blocks.get(cid)
        lora, adapter = self._adapter(cid, t)
        if t.disagg is not None:
            dz = self.sim.disagg
            assert dz is not None
            key, ev = dz.submit_call(t.disagg, inp, out, int(c.workload[cid]), cid, blocks)
            waiting: dict[int, simpy.Event] = dz.waiting
            view: _RequestView | _ClientView = _ClientView(dz)
        else:
            dep = self.sim.deployments[t.deployment]  # type: ignore[index]
            key = self.sim.new_serving_request(env.now, inp, out, int(c.workload[cid]), dep, cid)
            if blocks is not None and hasattr(reqs, "set_blocks"):
                reqs.set_blocks(key, *blocks)
            set_adapter(reqs, key, adapter)  # before the balancer sees it (lora_affinity)
            ev = env.event()
            waiting = self.waiting
            waiting[key] = ev
            dep.submit(key)
            view = _RequestView(reqs)
        deadline_total = start + total_to
        if first_to is not None and not ev.triggered:
            d = start + first_to - rtt / 2.0 - env.now
            if d > 0:
                yield ev | env.timeout(d)
            if not ev.triggered and math.isnan(view.first(key)):
                waiting.pop(key, None)
                self._cancel(t, key)
                return self._log(cid, t, start, False, "timeout", 408, NEVER, env.now, 0.0, egress, out)
        if not ev.triggered:
            d = deadline_total - rtt / 2.0 - env.now
            if d > 0:
                yield ev | env.timeout(d)
            if not ev.triggered:
                waiting.pop(key, None)
                self._cancel(t, key)
                return self._log(cid, t, start, False, "timeout", 408, NEVER, env.now, 0.0, egress, out)
        st = view.status(key)
        if st == COMPLETED:
            # A replica's prefix-cache hit (the prefill side's for a group), not a provider's prompt cache.
            c.cached_tokens[cid] = view.cached(key)
            if lora is not None:
                self.call_lora[cid] = lora
            yield env.timeout(rtt / 2.0)
            first = view.first(key) + rtt / 2.0
            egress += rm.egress_usd(t.region, inst.region, out)
            cost = inp * t.usd_in_per_token + out * t.usd_out_per_token
            return self._log(cid, t, start, True, "ok", 200, first, env.now, cost, egress, out)
        if st == REJECTED:
            return self._log(cid, t, start, False, "context_window", 400, NEVER, env.now + rtt / 2.0, 0.0, egress, out)
        kind = "lost" if self.plan.spec.in_flight_on_failure == "lose" else "error"
        return self._log(cid, t, start, False, kind, 503, NEVER, env.now + rtt / 2.0, 0.0, egress, out)

    def _cancel(self, t: Any, key: int) -> None:
        """A timed-out attempt closes its connection: a self-hosted request still queued is
        dropped (DeploymentRuntime.cancel). Disaggregated groups keep theirs (not modelled)."""
        if t.disagg is None and t.deployment is not None:
            self.sim.deployments[t.deployment].cancel(key)  # type: ignore[index]

    def _log(self, cid, t, start, ok, kind, http, first, end, cost, egress, out):  # type: ignore[no-untyped-def]
        now = self.env.now
        self.usage.end(t.index, now, int(self.calls.input_tokens[cid]) + out, ok)
        self.cooldowns.record(t.index, now, http, len(self.plan.groups[t.group]))
        if isinstance(self.strategy, LatencyBased) and (ok or kind == "timeout"):
            # lowest_latency.py logs successes, and a timeout as the penalty; other failures not.
            self.strategy.observe(t.index, now, now - start, out, kind == "timeout")
        self.calls.egress_usd[cid] += egress
        self.a_call.append(cid)
        self.a_target.append(t.index)
        self.a_start.append(start)
        self.a_end.append(end if end < NEVER else now)
        self.a_http.append(http)
        self.a_kind.append(kind)
        return ok, kind, http, first, end, cost
