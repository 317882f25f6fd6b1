"""Agent fleets: workflows, context growth, sub-agents, tools, budgets, timeouts, fleets, and the
OpenTelemetry export. Small scenarios built from YAML text; checks read the task table, the span
log and the call tables, never wall-clock time."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stacksim.agents.runtime import BLOCK_TOKENS, PROMPT_CACHE_MIN_TOKENS, PROMPT_CACHE_STEP
from stacksim.agents.spans import spans_frame
from stacksim.engine.simulation import Simulation
from stacksim.errors import ScenarioError
from stacksim.metrics.summary import Result, build_result
from stacksim.report.otlp import otlp_document
from stacksim.scenario import load_scenario, load_scenario_text

REPO = Path(__file__).resolve().parents[1]


def fixed(n: int) -> dict[str, Any]:
    return {"kind": "fixed", "value": n}


BASE: dict[str, Any] = {
    "name": "agents-test",
    "seed": 3,
    "horizon_s": 60,
    "drain": True,
    "pools": {"h100": {"accelerator": "h100-sxm", "count": 2, "region": "us-east"}},
    "deployments": {"llama": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 2}},
    "providers": {"openai": {"provider": "openai", "region": "us-east", "rpm_limit": 1_000_000, "tpm_limit": 1_000_000_000}},
    "gateway": {
        "regions": ["us-east"],
        "model_list": [{"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o"}}],
    },
    "tools": {"t": {"latency": {"median_ms": 500}, "result_tokens": fixed(300)}},
    "vector_stores": {"kb": {"kind": "pgvector", "chunk_tokens": 100}},
}


def scenario(agents: dict[str, Any], fleets: dict[str, Any], **extra: Any) -> dict[str, Any]:
    sc = copy.deepcopy(BASE)
    sc["agents"] = agents
    sc["fleets"] = fleets
    sc.update(extra)
    return sc


def run(sc: dict[str, Any], seed: int = 1, spans: bool = False) -> tuple[Simulation, Result]:
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "agents-test.yaml")
    sim = Simulation(rs, seed=seed).run()
    return sim, build_result(sim, spans=spans)


def one_task(agent: str = "a") -> dict[str, Any]:
    return {"f": {"agent": agent, "arrival": {"kind": "deterministic", "rate_per_s": 1.0}, "max_tasks": 1}}


def llm(inp: int, out: int, **kw: Any) -> dict[str, Any]:
    return {"kind": "llm", "input_tokens": fixed(inp), "output_tokens": fixed(out), **kw}


def llm_spans(sim: Simulation) -> list[dict[str, Any]]:
    ag = sim.agents
    assert ag is not None
    log = ag.spans
    return [dict(log.attrs[i], start=log.start[i], end=log.end[i], trace=log.trace[i], parent=log.parent[i])
            for i in range(len(log)) if log.kind[i] == "llm"]


# --------------------------------------------------------------------------- span tree


def test_two_step_workflow_gives_the_exact_span_tree() -> None:
    agents = {"a": {"model": "gpt", "system_prompt_tokens": 1000, "steps": [llm(100, 50), {"kind": "tool", "tool": "t"}]}}
    _sim, res = run(scenario(agents, one_task()), spans=True)
    sp = res.spans
    assert sp is not None
    rows = [(r.name, r.kind, r.parent_id) for r in sp.itertuples()]
    # task(0) -> chat(1) -> gateway(3) -> attempt(4); task(0) -> tool(2)
    assert rows == [
        ("task f", "task", -1),
        ("chat gpt", "llm", 0),
        ("execute_tool t", "tool", 0),
        ("gateway gpt", "gateway", 1),
        ("attempt openai/gpt-4o@us-east", "attempt", 3),
    ]
    assert sp["trace"].nunique() == 1
    task, chat, tool, gw, att = (sp.iloc[i] for i in range(5))
    assert chat["attrs"]["gen_ai.usage.input_tokens"] == 1100 and chat["attrs"]["gen_ai.usage.output_tokens"] == 50
    assert chat["attrs"]["gen_ai.request.model"] == "gpt" and chat["attrs"]["stacksim.cost_usd"] > 0
    assert tool["attrs"]["gen_ai.tool.name"] == "t"
    # The tool starts when the LLM step ends; it takes exactly its (spread-free) latency plus the
    # round trip from the fleet's region to the tool's (both us-east: 1 ms intra-region).
    assert tool.start_s == pytest.approx(chat.end_s)
    assert tool.end_s - tool.start_s == pytest.approx(0.5 + 0.001)
    assert task.start_s == pytest.approx(chat.start_s) and task.end_s == pytest.approx(tool.end_s)
    assert gw.start_s >= chat.start_s and gw.end_s <= chat.end_s + 1e-9
    assert att.start_s >= gw.start_s and att.end_s <= gw.end_s + 1e-9
    assert all(sp["ok"])
    t = res.tasks
    assert t is not None and list(t["status"]) == ["completed"]
    assert t.loc[0, "llm_calls"] == 1 and t.loc[0, "tool_calls"] == 1 and t.loc[0, "steps"] == 2


def test_otlp_export_parses_as_an_export_trace_service_request() -> None:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    agents = {
        "a": {"model": "gpt", "steps": [llm(100, 50), {"kind": "subagent", "agent": "b", "count": fixed(2), "summary_tokens": fixed(500)}, {"kind": "retrieve", "store": "kb"}]},
        "b": {"model": "llama", "steps": [llm(10, 10), {"kind": "tool", "tool": "t"}]},
    }
    _sim, res = run(scenario(agents, one_task()), spans=True)
    assert res.spans is not None
    doc = otlp_document(res.spans, res.summary)
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    # OTLP/JSON ids are hex; the protobuf JSON mapping reads bytes as base64: convert, then parse.
    for s in spans:
        for k in ("traceId", "spanId", "parentSpanId"):
            if k in s:
                s[k] = base64.b64encode(bytes.fromhex(s[k])).decode()
    msg = json_format.Parse(json.dumps(doc), ExportTraceServiceRequest())
    got = msg.resource_spans[0].scope_spans[0].spans
    assert len(got) == len(res.spans)
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in got)
    ids = {s.span_id for s in got}
    assert all(s.parent_span_id in ids for s in got if s.parent_span_id)
    assert len({s.trace_id for s in got}) == 1  # one task, one trace
    assert all(s.end_time_unix_nano >= s.start_time_unix_nano for s in got)
    kinds = [a.value.string_value for s in got for a in s.attributes if a.key == "stacksim.span_kind"]
    assert kinds.count("subagent") == 2 and kinds.count("retrieval") == 1 and kinds.count("llm") == 3


# --------------------------------------------------------------------------- context growth


@pytest.mark.parametrize("tool", [False, True])
def test_context_grows_by_each_turn(tool: bool) -> None:
    steps: list[dict[str, Any]] = [llm(100, 50)]
    if tool:
        steps.append({"kind": "tool", "tool": "t"})
    agents = {"a": {"model": "llama", "system_prompt_tokens": 1000, "steps": [{"kind": "loop", "count": fixed(4), "steps": steps}]}}
    sim, res = run(scenario(agents, one_task()))
    prompts = [s["gen_ai.usage.input_tokens"] for s in llm_spans(sim)]
    per_turn = 150 + (300 if tool else 0)
    assert prompts == [1100 + k * per_turn for k in range(4)]
    t = res.tasks
    assert t is not None
    assert t.loc[0, "input_tokens"] == sum(prompts) and t.loc[0, "output_tokens"] == 4 * 50
    # The same work as chat: system prompt once, every new token once.
    assert t.loc[0, "content_tokens"] == 1000 + 4 * per_turn


def test_truncation_keeps_every_prompt_within_the_context_limit() -> None:
    limit = 2000
    agents = {"a": {"model": "llama", "system_prompt_tokens": 500, "context_limit_tokens": limit,
                    "steps": [{"kind": "loop", "count": fixed(12), "steps": [llm(200, 100)]}]}}
    sim, res = run(scenario(agents, one_task()))
    spans = llm_spans(sim)
    assert len(spans) == 12
    assert all(s["gen_ai.usage.input_tokens"] + 100 <= limit for s in spans)
    assert max(s["gen_ai.usage.input_tokens"] for s in spans) > 1500  # it did grow up to the limit
    assert res.tasks is not None and res.tasks.loc[0, "status"] == "completed"


def test_summarize_overflow_adds_a_summary_call() -> None:
    agents = {"a": {"model": "llama", "system_prompt_tokens": 500, "context_limit_tokens": 2000, "on_overflow": "summarize",
                    "summary_tokens": 300, "steps": [{"kind": "loop", "count": fixed(12), "steps": [llm(200, 100)]}]}}
    sim, _ = run(scenario(agents, one_task()))
    spans = llm_spans(sim)
    summaries = [s for s in spans if s["stacksim.step"] == "summarize"]
    assert summaries and all(s["gen_ai.usage.output_tokens"] == 300 for s in summaries)
    # After a summary the next prompt is system + summary + the new input.
    i = next(k for k, s in enumerate(spans) if s["stacksim.step"] == "summarize")
    assert spans[i + 1]["gen_ai.usage.input_tokens"] == 500 + 300 + 200


def test_provider_prompt_cache_bills_the_previous_prompt_at_the_cached_price() -> None:
    agents = {"a": {"model": "gpt", "system_prompt_tokens": 1500, "steps": [{"kind": "loop", "count": fixed(3), "steps": [llm(100, 20)]}]}}
    sim, res = run(scenario(agents, one_task()))
    c = sim.calls
    assert c is not None and c.n == 3
    prompts = [int(c.input_tokens[i]) for i in range(3)]
    assert prompts == [1600, 1720, 1840]
    expect = [0] + [p // PROMPT_CACHE_STEP * PROMPT_CACHE_STEP if p >= PROMPT_CACHE_MIN_TOKENS else 0 for p in prompts[:2]]
    assert [int(c.cached_tokens[i]) for i in range(3)] == expect
    gw = sim.gateway
    assert gw is not None
    t = gw.targets[0]
    # gpt-4o: $2.50 input, $1.25 cached input per 1M, times the endpoint's regional uplift.
    assert t.usd_cached_in_per_token == pytest.approx(t.usd_in_per_token * 1.25 / 2.5)
    for i in range(3):
        want = (prompts[i] - expect[i]) * t.usd_in_per_token + expect[i] * t.usd_cached_in_per_token + 20 * t.usd_out_per_token
        assert c.cost_usd[i] == pytest.approx(want)
    assert res.tasks is not None and res.tasks.loc[0, "cached_input_tokens"] == sum(expect)


def test_prompt_blocks_share_the_system_prompt_and_grow_with_the_context() -> None:
    B = BLOCK_TOKENS
    agents = {"a": {"model": "llama", "system_prompt_tokens": 4 * B, "steps": [{"kind": "loop", "count": fixed(2), "steps": [llm(32, 16)]}]}}
    sc = scenario(agents, {"f": {"agent": "a", "arrival": {"kind": "deterministic", "rate_per_s": 1.0}, "max_tasks": 2}})
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "x.yaml")
    sim = Simulation(rs, seed=1)
    ag = sim.agents
    assert ag is not None
    from stacksim.agents.runtime import Ctx

    a = rs.scenario.agents["a"]
    c1, c2 = Ctx("a", 0, 1), Ctx("a", 0, 2)
    b1, b2 = ag._blocks(a, c1, 6 * B), ag._blocks(a, c2, 6 * B)
    assert len(b1) == 6 and len(set(b1)) == 6
    assert list(b1[:4]) == list(b2[:4]) and not set(b1[4:]) & set(b2[4:])  # shared system prompt, own context
    c1.pieces.append(3 * B)
    longer = ag._blocks(a, c1, 9 * B + 5)
    assert len(longer) == 9 and list(longer[: len(b1)]) == list(b1)  # the next turn's prompt extends the previous one
    c1.epoch += 1
    rewritten = ag._blocks(a, c1, 6 * B)
    assert list(rewritten[:4]) == list(b1[:4]) and not set(rewritten[4:]) & set(b1[4:])  # a rewritten context is a new prefix
    assert (b1 >= 0).all()


# --------------------------------------------------------------------------- sub-agents


def test_subagent_tokens_are_attributed_to_the_parent_task() -> None:
    agents = {
        "boss": {"model": "gpt", "system_prompt_tokens": 500,
                 "steps": [llm(100, 100), {"kind": "subagent", "agent": "worker", "count": fixed(3), "summary_tokens": fixed(200)},
                           llm(50, 300, name="final")]},
        "worker": {"model": "llama", "system_prompt_tokens": 300, "steps": [{"kind": "loop", "count": fixed(2), "steps": [llm(40, 60)]}]},
    }
    sim, res = run(scenario(agents, one_task("boss")))
    t = res.tasks
    assert t is not None and len(t) == 1
    row = t.iloc[0]
    spans = llm_spans(sim)
    assert len(spans) == 2 + 3 * 2 and all(s["trace"] == 0 for s in spans)
    assert row["llm_calls"] == 8 and row["subagents"] == 3
    assert row["input_tokens"] == sum(s["gen_ai.usage.input_tokens"] for s in spans)
    assert row["tokens_depth_0"] + row["tokens_depth_1"] == row["input_tokens"] + row["output_tokens"]
    worker = [s for s in spans if s["stacksim.depth"] == 1]
    assert row["tokens_depth_1"] == sum(s["gen_ai.usage.input_tokens"] + s["gen_ai.usage.output_tokens"] for s in worker)
    # The final step sees the three summaries in its context.
    final = next(s for s in spans if s["stacksim.step"] == "final")
    assert final["gen_ai.usage.input_tokens"] == 500 + 200 + 3 * 200 + 50
    # Parallel sub-agents overlap in time.
    ag = sim.agents
    assert ag is not None
    subs = [i for i in range(len(ag.spans)) if ag.spans.kind[i] == "subagent"]
    assert len({ag.spans.start[i] for i in subs}) == 1
    att = res.summary["spend"]["attribution"]
    assert set(att["agent"]) == {"boss", "worker"} and set(att["fleet"]) == {"f"}
    assert att["agent"]["boss"]["usd"] + att["agent"]["worker"]["usd"] == pytest.approx(att["fleet"]["f"]["usd"])
    assert att["agent"]["worker"]["usd"] > 0  # its self-hosted calls' share of the deployment's spend
    by_agent = res.summary["agents"]["all"]["by_agent"]
    assert by_agent["worker"]["llm_calls_per_task"] == 6 and by_agent["boss"]["llm_calls_per_task"] == 2
    assert by_agent["worker"]["tokens_per_task"] == row["tokens_depth_1"]
    amp = res.summary["agents"]["all"]["token_amplification"]
    assert amp == pytest.approx((row["input_tokens"] + row["output_tokens"]) / row["content_tokens"], rel=1e-3) and amp > 1


def test_subagent_cycle_is_refused() -> None:
    agents = {"a": {"model": "llama", "steps": [{"kind": "subagent", "agent": "b", "summary_tokens": fixed(100)}]},
              "b": {"model": "llama", "steps": [{"kind": "subagent", "agent": "a", "summary_tokens": fixed(100)}]}}
    with pytest.raises(ScenarioError, match="calls itself through sub-agents"):
        load_scenario_text(yaml.safe_dump(scenario(agents, one_task())), "x.yaml")


# --------------------------------------------------------------------------- budgets, timeouts, fleets


def test_step_budget_stops_a_task_before_its_next_step() -> None:
    agents = {"a": {"model": "llama", "steps": [{"kind": "loop", "count": fixed(20), "steps": [llm(10, 10), {"kind": "tool", "tool": "t"}]}]}}
    fl = one_task()
    fl["f"]["budget"] = {"max_steps": 7}
    _, res = run(scenario(agents, fl))
    t = res.tasks
    assert t is not None and t.loc[0, "status"] == "budget_steps" and t.loc[0, "steps"] == 7
    assert res.summary["agents"]["stopped"]["budget_steps"] == 1


def test_timeout_ends_a_task_at_its_deadline() -> None:
    agents = {"a": {"model": "llama", "steps": [{"kind": "loop", "count": fixed(20), "steps": [{"kind": "tool", "tool": "t"}]}]}}
    fl = {"f": {"agent": "a", "arrival": {"kind": "deterministic", "rate_per_s": 0.5}, "max_tasks": 3, "timeout_s": 3.0}}
    sim, res = run(scenario(agents, fl))
    t = res.tasks
    assert t is not None and len(t) == 3
    assert (t["status"] == "timeout").all()
    assert np.allclose(t["end_s"] - t["arrival_s"], 3.0)
    # The work stopped at the next step boundary: fewer than 20 tool calls each.
    assert (t["tool_calls"] < 20).all()
    assert sim.agents is not None and sim.agents.pending == 0


def test_fleet_concurrency_and_closed_loop_population_hold() -> None:
    agents = {"a": {"model": "llama", "steps": [{"kind": "tool", "tool": "t"}, llm(50, 20)]}}
    fleets = {
        "open": {"agent": "a", "arrival": {"kind": "poisson", "rate_per_s": 20.0}, "concurrency": 3},
        "closed": {"agent": "a", "arrival": {"kind": "closed_loop", "clients": 4, "think_time_s": 0.5}},
    }
    sc = scenario(agents, fleets, horizon_s=20)
    _, res = run(sc)
    t = res.tasks
    assert t is not None
    for fleet, cap, col in (("open", 3, "start_s"), ("closed", 4, "arrival_s")):
        sub = t[(t["fleet"] == fleet) & (t["status"] == "completed")]
        assert len(sub) > 10
        ev = sorted([(s, 1) for s in sub[col]] + [(e, -1) for e in sub["end_s"]], key=lambda x: (x[0], x[1]))
        level = peak = 0
        for _, d in ev:
            level += d
            peak = max(peak, level)
        assert peak <= cap
    opened = t[t["fleet"] == "open"]
    assert (opened["queue_s"] > 0).any()  # tasks waited for a slot
    tasks = res.summary["agents"]["fleets"]["open"]["tasks"]
    assert tasks["arrived"] == sum(v for k, v in tasks.items() if k != "arrived")


def test_tool_failures_retried_then_fail_the_task() -> None:
    sc = scenario({"a": {"model": "llama", "steps": [{"kind": "tool", "tool": "bad", "retries": 2}, llm(10, 10)]}},
                  {"f": {"agent": "a", "arrival": {"kind": "deterministic", "rate_per_s": 1.0}, "max_tasks": 5}})
    sc["tools"]["bad"] = {"latency": {"median_ms": 100}, "failure_rate": 1.0, "result_tokens": fixed(50)}
    _, res = run(sc)
    t = res.tasks
    assert t is not None and (t["status"] == "failed").all() and (t["tool_calls"] == 3).all() and (t["llm_calls"] == 0).all()
    assert res.summary["agents"]["tools"]["bad"]["failures"] == 15


def test_tool_concurrency_queues_calls() -> None:
    sc = scenario({"a": {"model": "llama", "steps": [{"kind": "tool", "tool": "slow"}]}},
                  {"f": {"agent": "a", "arrival": {"kind": "offline"}, "max_tasks": 4}})
    sc["tools"]["slow"] = {"latency": {"median_ms": 1000}, "concurrency": 1, "result_tokens": fixed(50)}
    _, res = run(sc)
    t = res.tasks
    assert t is not None
    assert sorted(np.round(t["end_s"] - t["arrival_s"], 6)) == pytest.approx([k + 0.001 for k in range(1, 5)], abs=1e-6)


def test_vector_store_latency_grows_with_index_and_top_k() -> None:
    import simpy

    from stacksim.agents.services import VectorStoreService
    from stacksim.scenario.schema_agents import VectorStore

    env = simpy.Environment()
    rng = np.random.default_rng(0)
    small = VectorStoreService(env, "s", VectorStore(vectors=250_000), rng)
    big = VectorStoreService(env, "b", VectorStore(vectors=25_000_000), rng)
    assert small.query_factor(80) == pytest.approx(1.0)  # the benchmark's own point
    assert big.query_factor(80) == pytest.approx(1.45**2)
    assert small.query_factor(200) > small.query_factor(40) == small.query_factor(10)  # ef_search floor 40


# --------------------------------------------------------------------------- accounting, errors, scenario


def test_every_task_accounted_for_and_deterministic() -> None:
    rs = load_scenario(REPO / "scenarios" / "agents-2026.yaml", overrides={"horizon_s": 600, "warmup_s": 0})
    from stacksim.api import run_scenario

    a = run_scenario(rs, seed=2)
    b = run_scenario(rs, seed=2)
    assert a.tasks is not None and b.tasks is not None
    assert a.tasks.equals(b.tasks)
    ag = a.summary["agents"]
    for f in ag["fleets"].values():
        tk = f["tasks"]
        assert tk["arrived"] == sum(v for k, v in tk.items() if k != "arrived")
    assert ag["all"]["token_amplification"] > 1
    assert ag["fleets"]["research"]["tokens_by_depth_share"]["1"] > 0.5  # sub-agents spend most tokens
    assert ag["all"]["cached_input_share"] > 0.3


@pytest.mark.parametrize("patch, needle", [
    ({"steps": [{"kind": "tool", "tool": "nope"}]}, "no tool named 'nope'"),
    ({"steps": [{"kind": "retrieve", "store": "nope"}]}, "no vector store named 'nope'"),
    ({"model": "nope", "steps": [{"kind": "tool", "tool": "t"}]}, "'nope' is no deployment or gateway route"),
    ({"steps": [{"kind": "loop", "count": {"kind": "uniform", "low": 5, "high": 2}, "steps": [{"kind": "tool", "tool": "t"}]}]}, "high (2) must be >= low (5)"),
])
def test_bad_agent_sections_name_the_field(patch: dict[str, Any], needle: str) -> None:
    agent = {"model": "llama", **patch}
    with pytest.raises(ScenarioError) as exc:
        load_scenario_text(yaml.safe_dump(scenario({"a": agent}, one_task())), "bad.yaml")
    assert needle in str(exc.value) and "agents.a" in str(exc.value)


def test_unknown_fleet_agent_is_refused() -> None:
    with pytest.raises(ScenarioError, match="no agent named 'ghost'"):
        load_scenario_text(yaml.safe_dump(scenario({"a": {"model": "llama", "steps": [llm(1, 1)]}}, one_task("ghost"))), "bad.yaml")


def test_spans_frame_links_gateway_calls_to_their_llm_step() -> None:
    agents = {"a": {"model": "gpt", "steps": [llm(10, 10), llm(10, 10)]}}
    sim, _ = run(scenario(agents, one_task()))
    sp = spans_frame(sim)
    gws = sp[sp["kind"] == "gateway"]
    assert len(gws) == 2
    assert set(sp.loc[gws["parent_id"], "kind"]) == {"llm"}


def test_iteration_trace_covers_every_iteration_without_overlap() -> None:
    from stacksim.api import run_scenario
    from stacksim.report.perfetto import chrome_trace

    rs = load_scenario(REPO / "scenarios" / "quickstart.yaml", overrides={"horizon_s": 60, "warmup_s": 0})
    res = run_scenario(rs, trace_iterations=["chat"])
    assert res.iterations is not None and set(res.iterations) == {"chat"}
    it = res.iterations["chat"]
    dep = res.summary["deployments"]["chat"]
    assert int(it["iterations"].sum()) == dep["iterations"]
    for _, g in it.groupby("replica"):
        start, end = g["start_s"].to_numpy(), g["end_s"].to_numpy()
        assert (end >= start).all() and (start[1:] >= end[:-1] - 1e-9).all()  # one slice at a time per replica
    assert set(it["kind"]) <= {"step", "decode stretch", "cut by failure"}
    last = it.groupby("replica").tail(1).index  # a replica's last slice may still be running at the end
    done = it.drop(index=last)
    assert (done.loc[done["kind"] == "step", "iterations"] == 1).all()
    doc = chrome_trace(it, "chat")
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == len(it) and all(e["dur"] >= 0 for e in slices)
    with pytest.raises(Exception, match="no deployment named 'nope'"):
        run_scenario(rs, trace_iterations=["nope"])
