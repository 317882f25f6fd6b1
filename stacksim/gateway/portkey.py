"""A Portkey gateway: configs (strategy trees of targets) compiled to a plan, and the walk of the
tree for one call, as the Portkey-AI/gateway source does it (shared/facts/REFERENCE.md 1.2;
src/handlers/handlerUtils.ts ``tryTargetsRecursively``, src/handlers/retryHandler.ts,
src/services/conditionalRouter.ts).

- ``single`` tries its first target; ``loadbalance`` draws one target by weight (stateless:
  ``r = U * sum(w)``, the first target with ``r < w``); ``conditional`` evaluates its rules over
  the request's metadata (the workload's tags) and params (``max_tokens``) and takes the named
  target of the first match, else ``default``; ``fallback`` tries targets in order and stops on
  a gateway exception, on a status not in ``on_status_codes`` when those are given, and on a
  success when they are not.
- A provider target is tried with ``retry``: up to ``attempts`` retries while the status is in
  ``on_status_codes`` (default 429, 500, 502, 503, 504), waiting async-retry's exponential backoff
  (1 s, 2 s, 4 s ...; randomize false) or, with ``use_retry_after_headers``, what the 429's
  Retry-After says; Retry-After waits are capped at 60 s in total (MAX_RETRY_LIMIT_MS) and a
  longer one fails at once. ``request_timeout`` (ms) ends a try with 408.
- ``cache`` is looked up before a provider target is tried, keyed by the prompt and the target
  (Portkey hashes body and URL): ``simple`` is exact match, ``semantic`` adds the scenario's
  semantic hit rate for requests under 8,191 tokens (Portkey's limit).
- OSS Portkey has no cooldowns or health checks (its circuit breaker needs the hosted config
  store), so a target that is down is found by trying it.

What stacksim adds, as everywhere: residency. A target its class forbids is never tried: it
is skipped in a fallback, left out of a load-balance draw, and a single or conditional pick of a
forbidden target fails closed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stacksim.gateway.plan import (
    EndpointPlan,
    TargetPlan,
    _host,
    _implicit_endpoint,
    provider_model_for,
    self_hosted,
)
from stacksim.network import allowed
from stacksim.scenario import schema_portkey as P

if TYPE_CHECKING:
    from stacksim.network import RegionMap
    from stacksim.scenario.resolve import PathProblem, ResolvedScenario

# Portkey provider slugs (portkey.ai/docs/integrations/llms) -> catalog provider ids.
PORTKEY_PROVIDERS = {
    "openai": "openai", "azure-openai": "azure-openai", "anthropic": "anthropic", "google": "google",
    "vertex-ai": "google", "groq": "groq", "cerebras": "cerebras", "together-ai": "together",
    "fireworks-ai": "fireworks", "bedrock": "bedrock", "mistral-ai": "mistral",
}
# async-retry defaults (Portkey passes only retries and randomize=false): minTimeout 1000 ms, factor 2.
BACKOFF_BASE_S, BACKOFF_FACTOR = 1.0, 2.0
MAX_RETRY_WAIT_S = 60.0  # Portkey src/globals.ts MAX_RETRY_LIMIT_MS
SEMANTIC_MAX_TOKENS = 8191  # Portkey semantic cache runs only on requests under this many tokens
# No request_timeout: Portkey waits as long as the client does; the OpenAI SDK's default is 600 s.
CLIENT_TIMEOUT_S = 600.0
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$regex", "$and", "$or")
CONTEXT_ROOTS = ("metadata", "params", "url")
PARAMS = ("max_tokens", "model", "stream")


@dataclass
class PNode:
    mode: str  # leaf, single, fallback, loadbalance, conditional
    path: str
    name: str | None = None
    weight: float = 1.0
    children: list[PNode] = field(default_factory=list)
    on_status_codes: tuple[int, ...] | None = None
    conditions: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    default: int | None = None
    target: int = -1  # leaf: index into the plan's targets
    retry_attempts: int = 0
    retry_codes: tuple[int, ...] = ()
    retry_after_headers: bool = False
    cache_mode: str | None = None
    cache_max_age: float | None = None
    model: str | None = None
    max_tokens: int | None = None  # override_params.max_tokens: caps the answer's length


def _retry(spec: P.PortkeyRetry | int | None) -> tuple[int, tuple[int, ...], bool] | None:
    if spec is None:
        return None
    if isinstance(spec, int):
        return spec, P.RETRY_STATUS_CODES, False
    codes = tuple(spec.on_status_codes) if spec.on_status_codes is not None else P.RETRY_STATUS_CODES
    return spec.attempts, codes, spec.use_retry_after_headers


def _cache(spec: P.PortkeyCache | str | None) -> tuple[str, float | None] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return spec, None
    return spec.mode, spec.max_age


def _check_query(q: Any, where: tuple[str | int, ...], problems: list[PathProblem]) -> None:
    from stacksim.scenario.resolve import PathProblem

    if not isinstance(q, dict):
        problems.append(PathProblem(where, "a query is a mapping, e.g. {metadata.plan: {$eq: paid}}"))
        return
    for k, v in q.items():
        if k in ("$and", "$or"):
            if not isinstance(v, list):
                problems.append(PathProblem(where + (k,), f"{k} takes a list of queries"))
                continue
            for i, sub in enumerate(v):
                _check_query(sub, where + (k, i), problems)
            continue
        root, _, leaf = str(k).partition(".")
        if root not in CONTEXT_ROOTS or not leaf or (root == "params" and leaf not in PARAMS) or (root == "url" and leaf != "pathname"):
            problems.append(PathProblem(where + (k,), f"unknown query field '{k}'; valid: metadata.<tag> (the workload's tags), "
                                        f"params.{', params.'.join(PARAMS)}, url.pathname"))
        if isinstance(v, dict):
            for op, arg in v.items():
                if op not in OPERATORS or op in ("$and", "$or"):
                    problems.append(PathProblem(where + (k, op), f"unknown operator '{op}'; valid: {', '.join(OPERATORS[:9])}"))
                elif op in ("$in", "$nin") and not isinstance(arg, list):
                    problems.append(PathProblem(where + (k, op), f"{op} takes a list"))
                elif op == "$regex":
                    try:
                        re.compile(str(arg))
                    except re.error as exc:
                        problems.append(PathProblem(where + (k, op), f"bad regular expression: {exc}"))


def _extras(model: Any, prefix: str) -> list[str]:
    if model is None or isinstance(model, int | str):
        return []
    return [f"{prefix}.{k}" if prefix else k for k in (model.model_extra or {})]


class _Compiler:
    def __init__(self, rs: ResolvedScenario, rm: RegionMap, endpoints: dict[str, EndpointPlan], problems: list[PathProblem]):
        self.rs, self.rm, self.endpoints, self.problems = rs, rm, endpoints, problems
        self.targets: list[TargetPlan] = []
        self.ignored: list[str] = []

    def compile(self, cfg_name: str, spec: P.PortkeyTarget) -> PNode | None:
        return self._node(cfg_name, spec, ("gateway", "configs", cfg_name), "config", None, None, None, {})

    def _node(self, group: str, spec: P.PortkeyTarget, where: tuple[str | int, ...], path: str,
              retry: tuple[int, tuple[int, ...], bool] | None, cache: tuple[str, float | None] | None,
              timeout_ms: int | None, params: dict[str, Any]) -> PNode | None:
        from stacksim.scenario.resolve import PathProblem

        # Inheritance as tryTargetsRecursively: a target's own retry / cache / timeout, else its parent's.
        retry = _retry(spec.retry) or retry
        cache = _cache(spec.cache) or cache
        timeout_ms = spec.request_timeout or timeout_ms
        own = spec.override_params.model_dump(exclude_none=True) if spec.override_params is not None else {}
        params = {**params, **own}
        for sub, label in ((spec, ""), (spec.strategy, "strategy"), (spec.retry, "retry"), (spec.cache, "cache")):
            self.ignored += [f"configs.{group}.{path}.{x}" for x in _extras(sub, label)]
        if spec.override_params is not None:  # request parameters other than model and max_tokens change nothing here
            self.ignored += [f"configs.{group}.{path}.override_params.{k}" for k in (spec.override_params.model_extra or {})
                             if k != "max_tokens"]
        node = PNode(mode="leaf", path=path, name=spec.name, weight=1.0 if spec.weight is None else spec.weight)
        if retry is not None:
            node.retry_attempts, node.retry_codes, node.retry_after_headers = retry
        if cache is not None:
            node.cache_mode, node.cache_max_age = cache
        if spec.strategy is None:
            return self._leaf(group, spec, where, node, timeout_ms, params)
        st = spec.strategy
        node.mode = st.mode
        node.on_status_codes = tuple(st.on_status_codes) if st.on_status_codes is not None else None
        assert spec.targets is not None  # the schema requires targets with a strategy
        for i, child in enumerate(spec.targets):
            c = self._node(group, child, where + ("targets", i), f"{path}.targets[{i}]", retry, cache, timeout_ms, params)
            if c is None:
                return None
            node.children.append(c)
        names = {c.name: i for i, c in enumerate(node.children) if c.name}
        if st.mode == "loadbalance" and not any(c.weight > 0 for c in node.children):
            self.problems.append(PathProblem(where + ("targets",), "every weight is 0: loadbalance has no target to draw"))
        if st.mode == "conditional":
            if not st.conditions:
                self.problems.append(PathProblem(where + ("strategy", "conditions"), "conditional mode needs conditions"))
            for i, cond in enumerate(st.conditions or []):
                cw = where + ("strategy", "conditions", i)
                _check_query(cond.query, cw + ("query",), self.problems)
                if cond.then not in names:
                    self.problems.append(PathProblem(cw + ("then",), f"no target named '{cond.then}'; named targets: {', '.join(names) or 'none'}"))
                else:
                    node.conditions.append((cond.query, names[cond.then]))
            if st.default is not None:
                if st.default not in names:
                    self.problems.append(PathProblem(where + ("strategy", "default"), f"no target named '{st.default}'; named targets: {', '.join(names) or 'none'}"))
                else:
                    node.default = names[st.default]
        elif st.conditions is not None or st.default is not None:
            self.problems.append(PathProblem(where + ("strategy",), f"conditions and default belong to mode conditional, not {st.mode}"))
        if st.on_status_codes is not None and st.mode != "fallback":
            self.problems.append(PathProblem(where + ("strategy", "on_status_codes"), f"on_status_codes belongs to mode fallback, not {st.mode}"))
        return node

    def _leaf(self, group: str, spec: P.PortkeyTarget, where: tuple[str | int, ...], node: PNode,
              timeout_ms: int | None, params: dict[str, Any]) -> PNode | None:
        from stacksim.scenario.resolve import PathProblem

        rs, rm = self.rs, self.rm
        model = params.get("model")
        node.model = model
        mt = params.get("max_tokens")
        if mt is not None:
            if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
                self.problems.append(PathProblem(where + ("override_params", "max_tokens"), f"max_tokens must be a whole number >= 1 (got {mt!r})"))
                return None
            node.max_tokens = mt
        timeout_s = timeout_ms / 1000.0 if timeout_ms is not None else None
        label = f"{group}:{node.path}"
        if spec.custom_host is not None:
            dep = _host(spec.custom_host)
            if dep not in rs.scenario.deployments and dep not in rs.scenario.disaggregated:
                groups = f"; disaggregated: {', '.join(rs.scenario.disaggregated)}" if rs.scenario.disaggregated else ""
                self.problems.append(PathProblem(where + ("custom_host",), f"custom_host '{spec.custom_host}' names no deployment "
                                                 f"or disaggregated group (write http://<name>:8000/v1); deployments: "
                                                 f"{', '.join(rs.scenario.deployments) or 'none'}{groups}"))
                return None
            sh = self_hosted(rs, dep, spec.lora, where + ("custom_host",), where + ("lora",), self.problems)
            if sh is None:
                return None
            t = TargetPlan(len(self.targets), group, label, "self", sh.region, rm.jurisdiction(sh.region) if sh.region in rm.places else "",
                           sh.context_window, deployment=sh.deployment, timeout=timeout_s, cost_known=False, disagg=sh.disagg,
                           lora=spec.lora)
        else:
            ep = self._endpoint(spec, where)
            if ep is None:
                return None
            if not model:
                self.problems.append(PathProblem(where + ("override_params", "model"), f"a {ep.provider} target needs override_params.model "
                                                 "(here or inherited from a parent target)"))
                return None
            pm = provider_model_for(ep, (model,), where + ("override_params", "model"), self.problems)
            if pm is None:
                return None
            up = 1.0 + ep.price_uplift
            t = TargetPlan(len(self.targets), group, label, "provider", ep.region, ep.jurisdiction,
                           pm.context_window_tokens or 10**9, endpoint=ep.name, model=pm, timeout=timeout_s,
                           usd_in_per_token=(pm.usd_per_1m_input or 0.0) * up / 1e6,
                           usd_out_per_token=(pm.usd_per_1m_output or 0.0) * up / 1e6, cost_known=pm.usd_per_1m_input is not None)
        t.label = spec.name and f"{group}:{spec.name}" or (
            f"{group}:{t.disagg or t.deployment}" if t.kind == "self" else f"{group}:{t.endpoint}/{model}")
        if any(x.label == t.label for x in self.targets):
            t.label += f"@{node.path}"
        self.targets.append(t)
        node.target = t.index
        return node

    def _endpoint(self, spec: P.PortkeyTarget, where: tuple[str | int, ...]) -> EndpointPlan | None:
        from stacksim.scenario.resolve import PathProblem

        eps = self.endpoints
        ref = spec.virtual_key or (spec.provider[1:] if spec.provider and spec.provider.startswith("@") else None)
        if ref is not None:
            if ref not in eps:
                field = "virtual_key" if spec.virtual_key else "provider"
                self.problems.append(PathProblem(where + (field,), f"'{ref}' is not a key of providers: ({', '.join(eps) or 'none'})"))
                return None
            return eps[ref]
        assert spec.provider is not None
        provider = PORTKEY_PROVIDERS.get(spec.provider)
        if provider is None:
            self.problems.append(PathProblem(where + ("provider",), f"unknown provider '{spec.provider}'; valid: {', '.join(sorted(PORTKEY_PROVIDERS))}, "
                                             f"'@<name>' for a providers: entry, or custom_host for a self-hosted deployment"))
            return None
        mine = [e for e in eps.values() if e.provider == provider]
        if len(mine) == 1:
            return mine[0]
        if len(mine) > 1:
            self.problems.append(PathProblem(where + ("provider",), f"providers: has {len(mine)} {provider} endpoints ({', '.join(e.name for e in mine)}); "
                                             f"name one as provider: '@{mine[0].name}' or virtual_key: {mine[0].name}"))
            return None
        ep = _implicit_endpoint(provider, None, rm=self.rm)
        return eps.setdefault(ep.name, ep)


def compile_portkey(rs: ResolvedScenario, rm: RegionMap, endpoints: dict[str, EndpointPlan],
                    problems: list[PathProblem]) -> tuple[dict[str, PNode], list[TargetPlan], dict[str, list[int]], list[str]]:
    """Each config of a kind-portkey gateway as a tree; the leaves become the plan's targets."""
    gw = rs.scenario.gateway
    assert gw is not None and gw.configs is not None
    comp = _Compiler(rs, rm, endpoints, problems)
    trees: dict[str, PNode] = {}
    groups: dict[str, list[int]] = {}
    for name, spec in gw.configs.items():
        assert isinstance(spec, P.PortkeyTarget)  # files are read into the scenario before validation
        first = len(comp.targets)
        node = comp.compile(name, spec)
        groups[name] = list(range(first, len(comp.targets)))  # named even when broken: its problems say why
        if node is not None:
            trees[name] = node
    return trees, comp.targets, groups, comp.ignored


# ---------------------------------------------------------------------------- conditional rules


def _value(ctx: dict[str, dict[str, Any]], key: str) -> Any:
    root, _, leaf = key.partition(".")
    return ctx.get(root, {}).get(leaf)


def _num(x: Any) -> float:
    """JavaScript parseFloat, near enough: a number, or the leading number of a string, else NaN."""
    if isinstance(x, bool) or x is None:
        return math.nan
    if isinstance(x, int | float):
        return float(x)
    m = re.match(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", str(x))
    return float(m.group(0)) if m else math.nan


def _op(ops: dict[str, Any], value: Any) -> bool:
    for op, arg in ops.items():
        if op == "$eq" and value != arg:
            return False
        if op == "$ne" and value == arg:
            return False
        if op in ("$gt", "$gte", "$lt", "$lte"):
            a, b = _num(value), _num(arg)
            if not {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]:
                return False
        if op == "$in" and value not in arg:
            return False
        if op == "$nin" and value in arg:
            return False
        if op == "$regex":  # Portkey returns the regex's verdict at once, ignoring later operators
            return value is not None and re.search(str(arg), str(value)) is not None
    return True


def evaluate(query: dict[str, Any], ctx: dict[str, dict[str, Any]]) -> bool:
    """conditionalRouter.evaluateQuery: keys in order; $or / $and decide the whole query at once."""
    for k, v in query.items():
        if k == "$or" and isinstance(v, list):
            return any(evaluate(q, ctx) for q in v)
        if k == "$and" and isinstance(v, list):
            return all(evaluate(q, ctx) for q in v)
        value = _value(ctx, k)
        if isinstance(v, dict):
            if not _op(v, value):
                return False
        elif value != v:
            return False
    return True


def reachable(node: PNode, targets: list[TargetPlan], allow: frozenset[str] | None) -> bool:
    """Whether some target under `node` is allowed for the residency class."""
    if node.mode == "leaf":
        return allowed(allow, targets[node.target].jurisdiction)
    return any(reachable(c, targets, allow) for c in node.children)


# ---------------------------------------------------------------------------- at run time


@dataclass
class Resp:
    http: int
    kind: str
    first: float = math.nan
    end: float = math.nan
    exception: bool = False  # a gateway exception: a fallback stops here
    tried: bool = True


class PortkeyRouter:
    """Walks a config's tree for one call, trying provider targets through the gateway runtime."""

    def __init__(self, rt: Any, trees: dict[str, PNode]):
        self.rt = rt
        self.trees = trees
        self.cache: dict[tuple[int, int], float] = {}
        self._reach: dict[tuple[int, frozenset[str] | None], bool] = {}

    def _ok_for(self, node: PNode, allow: frozenset[str] | None) -> bool:
        key = (id(node), allow)
        v = self._reach.get(key)
        if v is None:
            v = self._reach[key] = reachable(node, self.rt.targets, allow)
        return v

    def route(self, cid: int, config: str, allow: frozenset[str] | None, inst: Any, inp: int, out: int):  # type: ignore[no-untyped-def]
        """The same answer as GatewayRuntime._route: (ok, reason, http, first, end, cost)."""
        rt = self.rt
        wl = rt.workloads[rt.calls.workload[cid]]
        ctx = {"metadata": dict(wl.tags), "params": {"max_tokens": out, "stream": True}, "url": {"pathname": "/v1/chat/completions"}}
        acc = [0.0]
        r = yield from self._walk(cid, self.trees[config], allow, inst, inp, out, ctx, acc)
        ok = r.http == 200
        return ok, r.kind, r.http, r.first, (r.end if ok else rt.env.now), acc[0]

    def _walk(self, cid, node: PNode, allow, inst, inp, out, ctx, acc):  # type: ignore[no-untyped-def]
        if node.mode == "leaf":
            if not self._ok_for(node, allow):
                return Resp(503, "residency_fail_closed", tried=False)
            return (yield from self._leaf(cid, node, inst, inp, out, acc))
        kids = node.children
        if node.mode == "single":
            return (yield from self._walk(cid, kids[0], allow, inst, inp, out, ctx, acc))
        if node.mode == "conditional":
            pick = next((i for q, i in node.conditions if evaluate(q, ctx)), node.default)
            if pick is None:  # Portkey: "Query router did not resolve to any valid target"
                return Resp(400, "router_error", exception=True, tried=False)
            return (yield from self._walk(cid, kids[pick], allow, inst, inp, out, ctx, acc))
        if node.mode == "loadbalance":
            live = [c for c in kids if c.weight > 0 and self._ok_for(c, allow)]
            if not live:
                return Resp(503, "residency_fail_closed", tried=False)
            r = self.rt.rng_route.random() * sum(c.weight for c in live)
            chosen = live[-1]
            for c in live:
                if r < c.weight:
                    chosen = c
                    break
                r -= c.weight
            return (yield from self._walk(cid, chosen, allow, inst, inp, out, ctx, acc))
        # fallback
        last = Resp(503, "residency_fail_closed", tried=False)
        tried = 0
        for c in kids:
            if not self._ok_for(c, allow):
                continue
            if tried:
                self.rt.calls.fallbacks[cid] += 1
            tried += 1
            last = yield from self._walk(cid, c, allow, inst, inp, out, ctx, acc)
            if last.exception:
                break
            if node.on_status_codes is not None:
                if last.http not in node.on_status_codes:
                    break
            elif last.http == 200:
                break
        return last

    def _leaf(self, cid, node: PNode, inst, inp, out, acc):  # type: ignore[no-untyped-def]
        rt = self.rt
        env, c = rt.env, rt.calls
        t = rt.targets[node.target]
        prompt = int(c.prompt[cid])
        if node.cache_mode is not None:
            yield env.timeout(_lookup(rt))
            exp = self.cache.get((prompt, node.target))
            hit = 1 if prompt >= 0 and exp is not None and exp > env.now else 0
            if not hit and node.cache_mode == "semantic" and inp + out < SEMANTIC_MAX_TOKENS \
                    and rt.rng_cache.random() < rt.plan.spec.cache_model.semantic_hit_rate:
                hit = 2
            if hit:
                c.cache[cid] = hit
                return Resp(200, "cache_hit", env.now, env.now)
        if node.max_tokens is not None:
            out = min(out, node.max_tokens)
        budget, k, honoured = MAX_RETRY_WAIT_S, 0, False
        while True:
            ok, kind, http, first, end, cost = yield from rt._attempt(cid, t, inst, inp, out)
            acc[0] += cost
            if ok:
                c.target[cid] = t.index
                c.served_region[cid] = rt.region_index[t.region]
                if node.cache_mode is not None and prompt >= 0:
                    self.cache[(prompt, node.target)] = env.now + (node.cache_max_age if node.cache_max_age is not None else math.inf)
                return Resp(200, "ok", first, end)
            if kind == "lost":
                return Resp(http, kind, exception=True)
            if http not in node.retry_codes:
                return Resp(http, kind)
            ra = rt.retry_after.pop(cid, None) if http == 429 else None
            if node.retry_after_headers and ra is not None:
                if ra >= MAX_RETRY_WAIT_S or ra > budget:  # retryHandler: skip the retry, answer the 429 now
                    return Resp(http, kind)
                # The Retry-After wait happens inside the try (retryHandler), so even the last try
                # waits it out before the 429 is answered.
                budget -= ra
                honoured = True
                yield env.timeout(ra)
                if k >= node.retry_attempts:
                    return Resp(http, kind)
                k += 1
                c.retries[cid] += 1
                continue
            if k >= node.retry_attempts:
                return Resp(http, kind)
            wait = 0.0 if honoured else BACKOFF_BASE_S * BACKOFF_FACTOR**k
            k += 1
            c.retries[cid] += 1
            if wait > 0:
                yield env.timeout(wait)


def _lookup(rt: Any) -> float:
    from stacksim.gateway.runtime import lognormal_s

    return lognormal_s(rt.rng_cache, rt.plan.spec.cache_model.lookup)
