"""From the scenario's gateway section (LiteLLM vocabulary) to a plan the runtime executes:
the deployments behind each model group (self-hosted or a hosted provider endpoint, with their
region, limits, prices and context window) and the router's settings with LiteLLM's defaults.

Defaults, each as LiteLLM has it (shared/facts/REFERENCE.md section 1.1 quotes the code):
``num_retries`` 2 (DEFAULT_MAX_RETRIES), ``cooldown_time`` 5 s (DEFAULT_COOLDOWN_TIME_SECONDS),
``request_timeout`` 6000 s (litellm constants), latency-based routing: window of 10 samples,
1 h TTL, buffer 0, timeout penalty 1000; at most 5 fallbacks (ROUTER_MAX_FALLBACKS).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from stacksim.catalog import UnknownId
from stacksim.catalog.stack import (
    ProviderModel,
    endpoint_region,
    get_provider_model,
    provider_models,
    provider_regions,
    regions,
)
from stacksim.scenario import schema as S
from stacksim.scenario import schema_gateway as G

if TYPE_CHECKING:
    from stacksim.network import RegionMap
    from stacksim.scenario.resolve import PathProblem, ResolvedScenario

DEFAULT_NUM_RETRIES = 2
DEFAULT_COOLDOWN_S = 5.0
DEFAULT_REQUEST_TIMEOUT_S = 6000.0
LATENCY_WINDOW = 10
LATENCY_TTL_S = 3600.0
TIMEOUT_PENALTY = 1000.0
MAX_FALLBACKS = 5

# LiteLLM's provider prefixes (docs.litellm.ai/docs/providers) -> catalog provider ids.
PREFIX = {
    "openai": "openai", "azure": "azure-openai", "azure_ai": "azure-openai", "anthropic": "anthropic",
    "gemini": "google", "vertex_ai": "google", "groq": "groq", "cerebras": "cerebras",
    "together_ai": "together", "fireworks_ai": "fireworks", "bedrock": "bedrock", "mistral": "mistral",
}
SELF_PREFIX = ("hosted_vllm", "vllm", "stacksim")
# LiteLLM params that place a hosted deployment (litellm/utils.py _get_model_region: region_name,
# aws_region_name for bedrock, vertex_location for vertex_ai); used, so not listed as ignored.
REGION_PARAMS = ("region_name", "aws_region_name", "vertex_location")


@dataclass
class EndpointPlan:
    name: str
    provider: str
    region: str
    jurisdiction: str
    rpm_limit: int | None  # None: the catalog's per-model tier
    tpm_limit: int | None
    error_rate: float
    content_policy_block_rate: float
    price_uplift: float
    latency_scale: float
    models: list[str] | None
    latency: dict[str, Any] = field(default_factory=dict)  # model id -> schema ProviderLatency
    outages: list[tuple[float, float, str, int]] = field(default_factory=list)  # (start, end, mode, status)


@dataclass
class TargetPlan:
    index: int
    group: str
    label: str
    kind: str  # "provider" or "self"
    region: str
    jurisdiction: str
    context_window: int
    endpoint: str | None = None
    model: ProviderModel | None = None
    deployment: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    weight: float | None = None
    order: int | None = None
    timeout: float | None = None
    stream_timeout: float | None = None
    max_parallel: int | None = None
    usd_in_per_token: float = 0.0
    usd_out_per_token: float = 0.0
    cost_known: bool = True
    usd_cached_in_per_token: float | None = None  # None: as usd_in_per_token
    # A disaggregated group's name (serving/disagg.py): calls go to its prefill deployment, then
    # its decode deployment (``deployment``, where the answer streams from, as its client rows).
    disagg: str | None = None
    lora: Any = None  # the adapter (a name, or schema_lora.CallerTenants) a self-hosted target serves calls with

    def __post_init__(self) -> None:
        if self.usd_cached_in_per_token is None:
            cached = self.model.usd_per_1m_cached_input if self.model is not None else None
            up = self.usd_in_per_token / (self.model.usd_per_1m_input / 1e6) if self.model is not None and self.model.usd_per_1m_input else 1.0
            self.usd_cached_in_per_token = cached * up / 1e6 if cached is not None else self.usd_in_per_token


@dataclass
class GatewayPlan:
    targets: list[TargetPlan]
    groups: dict[str, list[int]]
    endpoints: dict[str, EndpointPlan]
    strategy: str
    num_retries: int
    retry_after: float
    timeout: float
    allowed_fails: int | None
    cooldown_s: float
    fallbacks: dict[str, list[str]]
    context_window_fallbacks: dict[str, list[str]]
    content_policy_fallbacks: dict[str, list[str]]
    default_fallbacks: list[str]
    pre_call_checks: bool
    latency_ttl_s: float
    latency_buffer: float
    latency_window: int
    cache: bool
    cache_semantic: bool
    cache_ttl_s: float | None
    spec: G.Gateway
    ignored: list[str] = field(default_factory=list)
    kind: str = "litellm"
    portkey: dict[str, Any] = field(default_factory=dict)  # config name -> portkey.PNode tree
    aliases: dict[str, str] = field(default_factory=dict)  # router_settings.model_group_alias: name -> model_name

    def route(self, name: str) -> str:
        """The model group a request for `name` goes to: LiteLLM's router replaces a
        model_group_alias by its model_name before it looks up deployments
        (litellm/router.py: ``if model in self.model_group_alias: model = self.model_group_alias[model]``,
        later ``_get_model_from_alias``, which also takes the ``{model, hidden}`` form)."""
        return self.aliases.get(name, name)

    def names(self) -> list[str]:
        """Every name a workload may target: the model groups, then the aliases."""
        return [*self.groups, *self.aliases]


def _extras(model: Any, prefix: str) -> list[str]:
    out = []
    for k in (model.model_extra or {}):
        out.append(f"{prefix}.{k}")
    return out


def _fallbacks(*lists: G.FallbackList | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lst in lists:
        for item in lst or []:
            for k, v in item.items():
                out.setdefault(k, list(v))
    return out


def _host(url: str | None) -> str:
    if not url or url.startswith("os.environ/"):
        return ""
    return (urlparse(url if "//" in url else "//" + url).hostname or "").lower()


def endpoint_plans(sc: S.Scenario, rm: RegionMap, problems: list[PathProblem]) -> dict[str, EndpointPlan]:
    from stacksim.scenario.resolve import PathProblem

    out: dict[str, EndpointPlan] = {}
    known = provider_models()
    regs = provider_regions()
    for name, ep in sc.providers.items():
        where = ("providers", name)
        if ep.provider not in known:
            problems.append(PathProblem(where + ("provider",), UnknownId("provider", ep.provider, sorted(known)).message()))
            continue
        region = ep.region or (regs[ep.provider][0].region if regs.get(ep.provider) else "us-east")
        if region not in rm.places:
            problems.append(PathProblem(where + ("region",), f"unknown region '{region}'; catalog regions: {', '.join(sorted(regions()))} (or add it under regions:)"))
            continue
        uplift = ep.price_uplift
        if uplift is None:
            uplift = next((r.price_uplift for r in regs.get(ep.provider, []) if r.region == region), 0.0)
        for m in ep.models or []:
            try:
                get_provider_model(ep.provider, m)
            except UnknownId as exc:
                problems.append(PathProblem(where + ("models",), exc.message()))
        out[name] = EndpointPlan(
            name, ep.provider, region, rm.jurisdiction(region), ep.rpm_limit, ep.tpm_limit, ep.error_rate,
            ep.content_policy_block_rate, uplift, ep.latency_scale, ep.models, dict(ep.latency),
        )
    return out


def _implicit_endpoint(provider: str, api_base: str | None, rm: RegionMap, hint: str | None = None) -> EndpointPlan:
    """A provider endpoint the scenario does not declare, placed by its api_base host (the
    provider's regional hosts, data/endpoint_regions.csv), else by LiteLLM's region params
    (`hint`: a provider region code such as westeurope / eu-central-1, or a jurisdiction such as
    eu), else at the provider's first catalog row (its default endpoint)."""
    regs = provider_regions().get(provider, [])
    host = _host(api_base)
    chosen = next((r for r in regs if host and _host(r.endpoint) == host), None)
    region = chosen.region if chosen else (endpoint_region(provider, host=host) if host else None)
    if region is None and hint:
        region = endpoint_region(provider, code=hint)
        if region is None:  # a jurisdiction ("eu"), as LiteLLM's region_name takes it
            chosen = next((r for r in regs if r.jurisdiction == hint.lower()), None)
            region = chosen.region if chosen else None
    if chosen is None and region is not None:  # the price uplift of that region, else of its jurisdiction
        j = rm.jurisdiction(region) if region in rm.places else ""
        chosen = next((r for r in regs if r.region == region), None) or next((r for r in regs if j and r.jurisdiction == j), None)
    if region is None:
        chosen = regs[0] if regs else None
        region = chosen.region if chosen else "us-east"
    return EndpointPlan(
        f"{provider}@{region}", provider, region, rm.jurisdiction(region) if region in rm.places else "",
        None, None, 0.0, 0.0, chosen.price_uplift if chosen else 0.0, 1.0, None,
    )


def provider_model_for(ep: EndpointPlan, candidates: tuple[str | None, ...], where: tuple[str | int, ...],
                       problems: list[PathProblem]) -> ProviderModel | None:
    """The catalog model an endpoint serves under the first name of `candidates` it knows, with
    the scenario's latency where given; None (and a problem) when unknown or without latency."""
    from stacksim.scenario.resolve import PathProblem

    pm = None
    for cand in candidates:
        if not cand:
            continue
        try:
            pm = get_provider_model(ep.provider, cand)
            break
        except UnknownId:
            continue
    if pm is None:
        valid = sorted(provider_models().get(ep.provider, {}))
        tried = ", ".join(f"'{c}'" for c in candidates if c)
        problems.append(PathProblem(where, f"{ep.provider} serves no catalog model {tried}; catalog models: {', '.join(valid)}"))
        return None
    if ep.models is not None and pm.model not in ep.models and pm.catalog_model not in ep.models:
        problems.append(PathProblem(where, f"endpoint {ep.name} is restricted to {', '.join(ep.models)}"))
        return None
    lat = ep.latency.get(pm.model) or ep.latency.get(pm.catalog_model)
    if lat is not None:
        pm = replace(pm, ttft_p50_s=lat.ttft_p50_s, ttft_p90_s=lat.ttft_p90_s, output_tps_p50=lat.output_tps_p50,
                     output_tps_p10=lat.output_tps_p10, latency_source=f"scenario: {lat.source}")
    if pm.ttft_p50_s is None or pm.output_tps_p50 is None:
        problems.append(PathProblem(where, f"the provider catalog has no published latency for {ep.provider} {pm.model} "
                                    f"(see stacksim/catalog/data/PROVIDERS_SOURCES.md); give it under providers.<name>.latency.{pm.model} "
                                    "(ttft_p50_s, output_tps_p50, source), naming the endpoint in the model prefix"))
        return None
    return pm


@dataclass
class SelfHosted:
    """Where a self-hosted gateway target sends its calls: a deployment, or a disaggregated group."""

    deployment: str  # the deployment, or the group's decode side
    region: str
    context_window: int
    disagg: str | None = None


def self_hosted(rs: ResolvedScenario, name: str, lora: Any, where: tuple[str | int, ...], lora_where: tuple[str | int, ...],
                problems: list[PathProblem]) -> SelfHosted | None:
    """A deployment or a disaggregated group as a gateway target, with its adapter checked; None
    (and a problem, unless the deployment's own problem is reported already) when it cannot be one.

    A group's region is its pools' region: resolve_disagg requires both in one region (the KV moves
    within one data centre), so the residency and latency of a group are those of that region.
    Its context window is the smaller of its two sides' max_model_len."""
    from stacksim.scenario.resolve import PathProblem
    from stacksim.serving.lora import adapter_problems, gateway_adapters

    sc = rs.scenario
    g = sc.disaggregated.get(name)
    if g is not None:
        if lora is not None:
            problems.append(PathProblem(lora_where, f"'{name}' is a disaggregated group; LoRA adapters on prefill/decode "
                                        "pairs are not modelled (its requests run the base model). Drop lora, or route "
                                        "to a deployment with engine.lora"))
            return None
        p, d = rs.deployments.get(g.prefill), rs.deployments.get(g.decode)
        if p is None or d is None:
            return None  # the group's or the deployment's own problem says why
        return SelfHosted(g.decode, d.pool.spec.region, min(p.max_model_len, d.max_model_len), disagg=name)
    rd = rs.deployments.get(name)
    if rd is None:
        if name not in sc.deployments:
            valid = f"deployments: {', '.join(sc.deployments) or 'none'}" + (
                f"; disaggregated: {', '.join(sc.disaggregated)}" if sc.disaggregated else "")
            problems.append(PathProblem(where, f"no deployment or disaggregated group named '{name}'; {valid}"))
        return None
    for path, msg in adapter_problems(name, rd.lora, gateway_adapters(lora), lora_where):
        problems.append(PathProblem(path, msg))
    return SelfHosted(name, rd.pool.spec.region, rd.max_model_len)


def _api_base_key(url: str) -> str:
    return url.strip().rstrip("/").lower()


def self_hosted_name(gw: G.Gateway, entry: G.ModelListEntry, rest: str, names: set[str]) -> str | None:
    """The deployment (or disaggregated group) behind a self-hosted model_list entry, by the
    first of these rules that gives one:
    1. the entry's ``stacksim: {deployment: NAME}``;
    2. ``gateway.api_base_deployments``, keyed by the api_base as written or by its host[:port];
    3. the model after the prefix names one (``hosted_vllm/NAME``, ``openai/NAME``);
    4. the api_base's host (its first DNS label, e.g. a Kubernetes service ``http://NAME:8000/v1``
       or ``http://NAME.ns.svc.cluster.local``) or one of its path segments names one.
    None when no rule does."""
    if entry.stacksim is not None:
        return entry.stacksim.deployment
    base = entry.litellm_params.api_base
    if base and not base.startswith("os.environ/"):
        parsed = urlparse(base if "//" in base else "//" + base)
        keys = {_api_base_key(base), (parsed.netloc or "").lower(), (parsed.hostname or "").lower()}
        for k, v in gw.api_base_deployments.items():
            if _api_base_key(k) in keys:
                return v
    if rest in names:
        return rest
    if base and not base.startswith("os.environ/"):
        parsed = urlparse(base if "//" in base else "//" + base)
        first = (parsed.hostname or "").split(".")[0]
        for cand in [first, *[seg for seg in parsed.path.split("/") if seg]]:
            if cand in names:
                return cand
    return None


def unmapped_message(model: str, api_base: str | None, names: set[str]) -> str:
    at = f" at {api_base}" if api_base else ""
    key = api_base or "<api_base>"
    return (f"'{model}'{at} is a self-hosted (OpenAI-compatible) server that no deployment of this scenario is mapped to. "
            f"Map it one of these ways: add `stacksim: {{deployment: <name>}}` to this model_list entry (LiteLLM keeps "
            f"unknown entry keys and sends them to no provider); or, leaving the config as it is, set "
            f"gateway.api_base_deployments: {{'{key}': <name>}} in the scenario; or name the deployment in the api_base "
            f"host or path (http://<name>:8000/v1) or after the prefix (hosted_vllm/<name>). "
            f"Deployments and disaggregated groups: {', '.join(sorted(names)) or 'none'}")


def plan_gateway(rs: ResolvedScenario, rm: RegionMap, problems: list[PathProblem]) -> GatewayPlan | None:
    from stacksim.scenario.resolve import PathProblem

    sc = rs.scenario
    gw = sc.gateway
    if gw is None:
        return None
    endpoints = endpoint_plans(sc, rm, problems)
    rset = gw.router_settings or G.RouterSettings()
    lset = gw.litellm_settings or G.LitellmSettings()
    ignored = _extras(rset, "router_settings") + _extras(lset, "litellm_settings")
    ignored += _extras(rset.routing_strategy_args, "router_settings.routing_strategy_args")
    if gw.general_settings is not None:
        # "config.<key>": a top-level key of gateway.config_file that stacksim does not read
        # (scenario/__init__.py parks it here); label it as the key it is.
        ignored += [k.removeprefix("config.") if k.startswith("config.") else f"general_settings.{k}"
                    for k in (gw.general_settings.model_extra or {})]
    # A simulation reads no environment: LiteLLM's environment_variables set env vars of the proxy.
    ignored += [f"environment_variables.{k}" for k in (gw.environment_variables or {})]
    for r in gw.regions:
        if r not in rm.places:
            problems.append(PathProblem(("gateway", "regions"), f"unknown region '{r}'; catalog regions: {', '.join(sorted(regions()))}"))
    if gw.kind == "portkey":
        return _plan_portkey(rs, rm, endpoints, problems)
    targets: list[TargetPlan] = []
    groups: dict[str, list[int]] = {}
    self_names = set(sc.deployments) | set(sc.disaggregated)
    declared = set(endpoints)  # the scenario's providers:, before implicit endpoints join them
    for i, entry in enumerate(gw.model_list or []):
        where: tuple[str | int, ...] = ("gateway", "model_list", i, "litellm_params", "model")
        lp = entry.litellm_params
        ignored += [f"model_list[{i}].{x}" for x in _extras(lp, "litellm_params") + _extras(entry.model_info, "model_info") + _extras(entry, "entry")
                    if x.removeprefix("litellm_params.") not in REGION_PARAMS]
        prefix, _, rest = lp.model.partition("/")
        if not rest:
            problems.append(PathProblem(where, f"'{lp.model}' needs a provider prefix, e.g. openai/gpt-4o or hosted_vllm/<deployment>"))
            continue
        common: dict[str, Any] = {
            "rpm": lp.rpm, "tpm": lp.tpm, "weight": lp.weight, "order": lp.order, "timeout": lp.timeout,
            "stream_timeout": lp.stream_timeout, "max_parallel": lp.max_parallel_requests,
        }
        # An openai/ entry whose api_base is not one of OpenAI's own hosts is LiteLLM's
        # "OpenAI-compatible endpoint" (docs.litellm.ai/docs/proxy/configs: openai/facebook/opt-125m
        # with api_base pointing at a vLLM server): a deployment of this scenario.
        host = _host(lp.api_base)
        openai_hosts = {_host(r.endpoint) for r in provider_regions().get("openai", [])}
        compatible = prefix == "openai" and lp.api_base is not None and host not in openai_hosts
        is_self = prefix in SELF_PREFIX or compatible or entry.stacksim is not None
        lora_where = ("gateway", "model_list", i, "litellm_params", "lora")
        if is_self:
            name = self_hosted_name(gw, entry, rest, self_names)
            if name is None and not lp.api_base:
                name = rest  # hosted_vllm/<name> without an api_base: self_hosted says which names exist
            if name is None:
                problems.append(PathProblem(where, unmapped_message(lp.model, lp.api_base, self_names)))
                continue
            at = ("gateway", "model_list", i, "stacksim", "deployment") if entry.stacksim is not None else where
            sh = self_hosted(rs, name, lp.lora, at, lora_where, problems)
            if sh is None:
                continue
            known = lp.input_cost_per_token is not None and lp.output_cost_per_token is not None
            t = TargetPlan(
                len(targets), entry.model_name, f"{prefix}/{rest}", "self", sh.region,
                rm.jurisdiction(sh.region) if sh.region in rm.places else "", sh.context_window, deployment=sh.deployment,
                usd_in_per_token=lp.input_cost_per_token or 0.0, usd_out_per_token=lp.output_cost_per_token or 0.0,
                cost_known=known, disagg=sh.disagg, lora=lp.lora, **common,
            )
        else:
            if lp.lora is not None:
                problems.append(PathProblem(lora_where, f"lora applies to self-hosted targets (hosted_vllm/<deployment>); "
                                            f"'{lp.model}' is a hosted provider's model"))
            if prefix in endpoints:
                ep = endpoints[prefix]
            else:
                provider = PREFIX.get(prefix)
                if provider is None:
                    problems.append(PathProblem(where, f"unknown provider prefix '{prefix}/'; valid: {', '.join(sorted(PREFIX))}, "
                                                f"{', '.join(SELF_PREFIX)} (self-hosted), or a key of providers: ({', '.join(endpoints) or 'none'})"))
                    continue
                mine = [e for e in endpoints.values() if e.provider == provider and e.name in declared]  # not implicit ones
                host = _host(lp.api_base)
                by_host = [e for e in mine if host and any(_host(r.endpoint) == host and r.region == e.region
                                                           for r in provider_regions().get(provider, []))]
                if len(by_host) == 1:
                    ep = by_host[0]
                elif len(mine) == 1:
                    ep = mine[0]
                elif len(mine) > 1:
                    problems.append(PathProblem(where, f"providers: has {len(mine)} {provider} endpoints ({', '.join(e.name for e in mine)}); "
                                                f"name one as the prefix, e.g. {mine[0].name}/{rest}"))
                    continue
                else:
                    extra = lp.model_extra or {}
                    hint = next((str(v) for v in (lp.region_name, extra.get("aws_region_name"), extra.get("vertex_location")) if v), None)
                    ep = _implicit_endpoint(provider, lp.api_base, rm, hint)
                    endpoints.setdefault(ep.name, ep)
                    ep = endpoints[ep.name]
            pm = provider_model_for(ep, (rest, (entry.model_info.base_model or "").partition("/")[2] or entry.model_info.base_model,
                                         entry.model_name), where, problems)
            if pm is None:
                continue
            up = 1.0 + ep.price_uplift
            t = TargetPlan(
                len(targets), entry.model_name, f"{ep.name}/{pm.model}", "provider", ep.region, ep.jurisdiction,
                entry.model_info.max_input_tokens or pm.context_window_tokens or 10**9, endpoint=ep.name, model=pm,
                usd_in_per_token=lp.input_cost_per_token if lp.input_cost_per_token is not None else (pm.usd_per_1m_input or 0.0) * up / 1e6,
                usd_out_per_token=lp.output_cost_per_token if lp.output_cost_per_token is not None else (pm.usd_per_1m_output or 0.0) * up / 1e6,
                cost_known=pm.usd_per_1m_input is not None, **common,
            )
        # A readable, unique label: LiteLLM's model_info.id, else the model string and region.
        t.label = entry.model_info.id or (t.label if t.kind == "self" else f"{lp.model}@{t.region}")
        if any(x.label == t.label for x in targets):
            t.label += f"#{i}"
        targets.append(t)
        groups.setdefault(entry.model_name, []).append(t.index)
    aliases: dict[str, str] = {}
    for alias, item in (rset.model_group_alias or {}).items():
        real = item if isinstance(item, str) else item.model
        if real not in groups:
            problems.append(PathProblem(("gateway", "router_settings", "model_group_alias", alias),
                                        f"alias '{alias}' maps to '{real}', which is not a model_name of model_list ({', '.join(groups) or 'none'})"))
            continue
        # An alias that is also a model_name shadows it, as in LiteLLM (the alias map is read first).
        aliases[alias] = real
    strategy = rset.routing_strategy
    if strategy == "cost-based-routing":
        for t in targets:
            if not t.cost_known:
                problems.append(PathProblem(("gateway", "model_list", t.index, "litellm_params"),
                                            f"cost-based-routing needs a price for {t.label}: set input_cost_per_token and output_cost_per_token"))
    fb = _fallbacks(rset.fallbacks, lset.fallbacks)
    cw = _fallbacks(rset.context_window_fallbacks, lset.context_window_fallbacks)
    cp = _fallbacks(rset.content_policy_fallbacks, lset.content_policy_fallbacks)
    for label, table in (("fallbacks", fb), ("context_window_fallbacks", cw), ("content_policy_fallbacks", cp)):
        for k, v in table.items():
            for g in [k, *v]:
                if g not in groups:
                    problems.append(PathProblem(("gateway", "router_settings", label), f"'{g}' is not a model_name of model_list ({', '.join(groups)})"))
    for w_name, w in sc.workloads.items():
        if (w.target in groups or w.target in aliases) and w.target in rs.deployments:
            problems.append(PathProblem(("workloads", w_name, "target"), f"'{w.target}' is both a deployment and a gateway model_name; rename one"))
    cparams = lset.cache_params
    return GatewayPlan(
        targets=targets,
        groups=groups,
        endpoints=endpoints,
        strategy=strategy,
        num_retries=rset.num_retries if rset.num_retries is not None else (lset.num_retries if lset.num_retries is not None else DEFAULT_NUM_RETRIES),
        retry_after=rset.retry_after or 0.0,
        timeout=rset.timeout or lset.request_timeout or DEFAULT_REQUEST_TIMEOUT_S,
        allowed_fails=rset.allowed_fails,
        cooldown_s=0.0 if rset.disable_cooldowns else (rset.cooldown_time if rset.cooldown_time is not None else DEFAULT_COOLDOWN_S),
        fallbacks=fb,
        context_window_fallbacks=cw,
        content_policy_fallbacks=cp,
        default_fallbacks=list(rset.default_fallbacks or lset.default_fallbacks or []),
        pre_call_checks=rset.enable_pre_call_checks,
        latency_ttl_s=rset.routing_strategy_args.ttl or LATENCY_TTL_S,
        latency_buffer=rset.routing_strategy_args.lowest_latency_buffer or 0.0,
        latency_window=rset.routing_strategy_args.max_latency_list_size or LATENCY_WINDOW,
        cache=lset.cache,
        cache_semantic="semantic" in cparams.type,
        cache_ttl_s=cparams.ttl,
        spec=gw,
        ignored=ignored,
        aliases=aliases,
    )


def _plan_portkey(rs: ResolvedScenario, rm: RegionMap, endpoints: dict[str, EndpointPlan], problems: list[PathProblem]) -> GatewayPlan:
    """A Portkey gateway: no router settings (each config carries its own strategy and retry),
    no cooldowns (OSS Portkey has none), and the client's timeout where a config gives none."""
    from stacksim.gateway.portkey import CLIENT_TIMEOUT_S, compile_portkey

    gw = rs.scenario.gateway
    assert gw is not None
    trees, targets, groups, ignored = compile_portkey(rs, rm, endpoints, problems)
    return GatewayPlan(
        targets=targets, groups=groups, endpoints=endpoints, strategy="simple-shuffle", num_retries=0, retry_after=0.0,
        timeout=CLIENT_TIMEOUT_S, allowed_fails=None, cooldown_s=0.0, fallbacks={}, context_window_fallbacks={},
        content_policy_fallbacks={}, default_fallbacks=[], pre_call_checks=False, latency_ttl_s=LATENCY_TTL_S,
        latency_buffer=0.0, latency_window=LATENCY_WINDOW, cache=False, cache_semantic=False, cache_ttl_s=None,
        spec=gw, ignored=ignored, kind="portkey", portkey=trees,
    )
