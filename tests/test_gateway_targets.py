"""Gateway targets beyond a plain deployment: a disaggregated prefill/decode group behind a
model_list entry or a Portkey custom_host (serving/disagg.py ``submit_call``), and LoRA adapters
named by a gateway route or an agent's LLM step (serving/lora.py ``set_adapter``).

A group as a target must behave as a deployment target does: every call completes with its two
legs, its TTFT includes the KV transfer (checked against a direct workload to the same group with
the same seed, and against a slower link), its accelerator spend goes to the call, and residency
rules see the group's region. An adapter named by the gateway or an agent reaches the replica, so
the slot rules hold (replayed from each replica's LoRA log), and a bad adapter name is exit 2
with one message naming file, line and field. Simulated time only; nothing reads a clock.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from stacksim.cli import app
from stacksim.engine.simulation import Simulation
from stacksim.errors import ScenarioError
from stacksim.metrics import COMPLETED, RI_LORA
from stacksim.metrics.summary import Result, build_result
from stacksim.scenario import load_scenario_text
from stacksim.serving import lora as L

KV_PER_TOKEN_8B = 32 * 2 * 8 * 128 * 2  # Llama-3.1-8B: layers x (K, V) x KV heads x head dim x bf16 bytes
FIXED_OVERHEAD = {"median_ms": 2.0}  # no spread: the gateway adds the same time to every call


def fixed(n: int) -> dict[str, Any]:
    return {"kind": "fixed", "value": n}


def disagg(*, region: str = "us-east", group: dict[str, Any] | None = None, workloads: dict[str, Any] | None = None,
           model_list: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    eng = {"max_model_len": 16384}
    sc: dict[str, Any] = {
        "name": "gateway-disagg",
        "horizon_s": 20.0,
        "drain": True,
        "pools": {"h100": {"accelerator": "h100-sxm", "count": 4, "price_usd_per_gpu_hour": 2.0, "region": region}},
        "deployments": {
            "pre": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 1, "engine": dict(eng)},
            "dec": {"model": "llama-3.1-8b", "pool": "h100", "replicas": 1, "engine": dict(eng)},
        },
        "disaggregated": {"g": {"prefill": "pre", "decode": "dec", **(group or {})}},
        "gateway": {"regions": [region], "overhead": FIXED_OVERHEAD,
                    "model_list": model_list or [{"model_name": "pd", "litellm_params": {"model": "hosted_vllm/g"}}]},
        "workloads": workloads or {"w": {"target": "pd", "arrival": {"kind": "poisson", "rate_per_s": 4.0},
                                         "input_tokens": {"kind": "uniform", "low": 100, "high": 6000},
                                         "output_tokens": {"kind": "uniform", "low": 1, "high": 200}}},
    }
    sc.update(extra)
    return sc


def run(sc: dict[str, Any], seed: int = 1) -> tuple[Simulation, Result]:
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "targets-test.yaml")
    sim = Simulation(rs, seed=seed).run()
    return sim, build_result(sim)


def problem(sc: dict[str, Any]) -> tuple[str, str]:
    """The first problem of a bad scenario: (field, message); it must name a line."""
    with pytest.raises(ScenarioError) as err:
        load_scenario_text(yaml.safe_dump(sc, sort_keys=False), "targets-test.yaml")
    p = err.value.problems[0]
    assert p.line is not None
    return p.field or "", p.message


def calls(res: Result) -> Any:
    return res.requests[(res.requests["via"] == "gateway").to_numpy()].reset_index(drop=True)


# --------------------------------------------------------------------------- a group as a target


def test_a_gateway_route_to_a_group_completes_every_call_with_both_legs() -> None:
    sim, res = run(disagg())
    c = calls(res)
    assert len(c) > 50
    assert (c["status"] == "completed").all() and (c["outcome"] == "ok").all()
    assert (c["deployment"] == "dec").all()  # the side the answer streams from, as a group's client rows
    assert not (res.requests["via"] == "disaggregated").any()  # the call is the request's only row
    dz = sim.disagg
    assert dz is not None
    n = dz.clients.n
    owner = dz.clients.call[:n]
    assert sorted(owner.tolist()) == sorted(c["call"].tolist())  # one client per attempt, none spare
    reqs = sim.reqs
    for ci in range(n):
        p, d = int(dz.clients.prefill_rid[ci]), int(dz.clients.decode_rid[ci])
        assert int(dz.clients.status[ci]) == COMPLETED
        assert reqs.call[p] == reqs.call[d] == owner[ci]  # both legs are the call's serving requests
        assert reqs.output_tokens[p] == 1 and reqs.output_tokens[d] == dz.clients.output_tokens[ci]
        assert dz.clients.first_token_s[ci] >= dz.clients.transfer_end_s[ci]  # first_token: decode
    row = c.set_index("call")
    first_client = dict(zip(owner.tolist(), dz.clients.first_token_s[:n].tolist()))
    assert all(row.loc[k, "first_token_s"] > v for k, v in first_client.items())
    g = res.summary["disaggregated"]["g"]
    assert g["requests"]["arrived"] == g["requests"]["via_gateway"] == g["kv_transfer"]["transfers"] == len(c)
    assert res.summary["gateway"]["targets"]["hosted_vllm/g"]["disaggregated"] == "g"


def one_request(target: str, inp: int = 4000, out: int = 50) -> dict[str, Any]:
    return {"w": {"target": target, "arrival": {"kind": "offline"}, "max_requests": 1,
                  "input_tokens": fixed(inp), "output_tokens": fixed(out)}}


def ttft(res: Result) -> tuple[float, float]:
    r = res.requests.iloc[0]
    return float(r["first_token_s"] - r["arrival_s"]), float(r["finish_s"] - r["arrival_s"])


@pytest.mark.parametrize("first_token", ["decode", "prefill"])
def test_ttft_through_the_gateway_includes_the_kv_transfer(first_token: str) -> None:
    """One 4,000-token prompt: through the gateway its TTFT is the direct TTFT to the same group
    (same seed) plus the gateway's constant offset (overhead and network, the same on the first
    token and the last); halving the link's bandwidth adds exactly the extra wire time to the
    gateway's TTFT when the client sees the decode side's first token, and nothing when it sees
    the prefill side's (the transfer then lands before the second token)."""
    out: dict[float, tuple[float, float]] = {}
    for bw in (100.0, 50.0):
        group = {"first_token": first_token, "transfer": {"bandwidth_gbps": bw, "latency_ms": 1.0}}
        _, direct = run(disagg(group=group, workloads=one_request("g")), seed=3)
        sim, via = run(disagg(group=group, workloads=one_request("pd")), seed=3)
        (t_d, e_d), (t_g, e_g) = ttft(direct), ttft(via)
        assert via.requests.iloc[0]["via"] == "gateway" and direct.requests.iloc[0]["via"] == "disaggregated"
        offset = t_g - t_d
        assert offset > 0.002  # at least the gateway's 2 ms
        assert e_g - e_d == pytest.approx(offset, abs=1e-9)
        dz = sim.disagg
        assert dz is not None
        # At the group itself the call's client is the direct request, to the nanosecond.
        assert dz.clients.first_token_s[0] - dz.clients.arrival_s[0] == pytest.approx(t_d, abs=1e-9)
        out[bw] = (t_g, e_g)
    extra_wire = 4000 * KV_PER_TOKEN_8B * 8 * (1 / 50e9 - 1 / 100e9)
    assert out[50.0][1] - out[100.0][1] == pytest.approx(extra_wire, abs=1e-9)
    assert out[50.0][0] - out[100.0][0] == pytest.approx(extra_wire if first_token == "decode" else 0.0, abs=1e-9)


def test_a_portkey_custom_host_can_name_a_group() -> None:
    sc = disagg()
    sc["gateway"] = {"kind": "portkey", "regions": ["us-east"], "overhead": FIXED_OVERHEAD,
                     "configs": {"pd": {"custom_host": "http://g:8000/v1"}}}
    sim, res = run(sc)
    c = calls(res)
    assert len(c) > 50 and (c["status"] == "completed").all()
    assert sim.disagg is not None and sim.disagg.clients.n == len(c)
    assert res.summary["disaggregated"]["g"]["requests"]["via_gateway"] == len(c)


def test_spend_of_both_legs_goes_to_the_call() -> None:
    """Every call carries its two legs' accelerator dollars; with the whole pool in use by the
    group, the calls add up to the run's accelerator spend (nothing lost, nothing counted twice)."""
    sc = disagg(workloads={"w": {"target": "pd", "arrival": {"kind": "poisson", "rate_per_s": 3.0},
                                 "input_tokens": {"kind": "uniform", "low": 100, "high": 6000},
                                 "output_tokens": {"kind": "uniform", "low": 1, "high": 200}}})
    sc["pools"]["h100"]["count"] = 2
    _, res = run(sc)
    s = res.summary
    c = calls(res)
    assert (c["gpu_cost_usd"] > 0).all()
    assert s["spend"]["gpu_usd"] == pytest.approx(s["deployments"]["pre"]["spend_usd"] + s["deployments"]["dec"]["spend_usd"], abs=2e-6)
    assert res.requests["gpu_cost_usd"].sum() == pytest.approx(s["spend"]["gpu_usd"], rel=1e-4)


def test_a_mixed_route_keeps_direct_and_gateway_clients_apart() -> None:
    """A workload straight at the group and one through the gateway: each has its own rows; the
    group's summary counts both."""
    sc = disagg()
    sc["workloads"]["direct"] = {**copy.deepcopy(sc["workloads"]["w"]), "target": "g"}
    _, res = run(sc)
    r = res.requests
    n_gw, n_dz = int((r["via"] == "gateway").sum()), int((r["via"] == "disaggregated").sum())
    assert n_gw > 30 and n_dz > 30
    assert (r.loc[r["via"] == "disaggregated", "workload"] == "direct").all()
    assert (r["status"] == "completed").all()
    g = res.summary["disaggregated"]["g"]["requests"]
    assert g["arrived"] == n_gw + n_dz and g["via_gateway"] == n_gw


def test_residency_sees_the_groups_region() -> None:
    """A group in eu-west behind one model group with a US deployment: an EU-only class is
    served by the group alone, a US-only class by the deployment alone; a class with neither
    fails closed."""
    sc = disagg(region="eu-west")
    sc["pools"]["us"] = {"accelerator": "h100-sxm", "count": 1, "price_usd_per_gpu_hour": 2.0, "region": "us-east"}
    sc["deployments"]["solo"] = {"model": "llama-3.1-8b", "pool": "us", "replicas": 1, "engine": {"max_model_len": 16384}}
    sc["gateway"]["regions"] = ["eu-west", "us-east"]
    sc["gateway"]["model_list"].append({"model_name": "pd", "litellm_params": {"model": "hosted_vllm/solo"}})
    sc["residency"] = {"eu": {"allowed_jurisdictions": ["eu"]}, "us": {"allowed_jurisdictions": ["us"]},
                       "jp": {"allowed_jurisdictions": ["jp"]}}
    base = {"arrival": {"kind": "poisson", "rate_per_s": 1.5}, "input_tokens": fixed(500), "output_tokens": fixed(20), "target": "pd"}
    sc["workloads"] = {"eu": {**base, "residency": "eu", "region": "eu-west"},
                       "us": {**base, "residency": "us", "region": "us-east"},
                       "jp": {**base, "residency": "jp", "region": "jp"}}
    sc["gateway"]["regions"] = ["eu-west", "us-east", "jp"]
    _, res = run(sc)
    c = calls(res)
    eu, us, jp = (c[c["workload"] == w] for w in ("eu", "us", "jp"))
    assert len(eu) > 10 and (eu["outcome"] == "ok").all() and (eu["target"] == "hosted_vllm/g").all()
    assert (eu["served_region"] == "eu-west").all()
    assert len(us) > 10 and (us["outcome"] == "ok").all() and (us["target"] == "hosted_vllm/solo").all()
    assert len(jp) > 10 and (jp["outcome"] == "residency_fail_closed").all()
    assert res.summary["gateway"]["residency"]["violations"] == 0


@pytest.mark.parametrize("side", ["pre", "dec"])
def test_a_dead_side_takes_the_group_out_of_rotation(side: str) -> None:
    """With either side's only replica down, the group is known-down (as a deployment with no live
    replica): calls go to the other target of the route and none fail."""
    sc = disagg()
    sc["pools"]["h100"]["count"] = 3
    sc["deployments"]["solo"] = {"model": "llama-3.1-8b", "pool": "h100", "replicas": 1, "engine": {"max_model_len": 16384}}
    sc["gateway"]["model_list"].append({"model_name": "pd", "litellm_params": {"model": "hosted_vllm/solo"}})
    sc["faults"] = [{"kind": "replica_failure", "deployment": side, "replica": 0, "at_s": 5.0, "repair_s": 5.0}]
    sim, res = run(sc)
    c = calls(res)
    assert (c["status"] == "completed").all()
    gw = sim.gateway
    assert gw is not None
    group_t = next(t.index for t in gw.targets if t.disagg == "g")
    # No attempt at the group starts while the side is down (a few in flight at 5 s failed and were retried).
    starts = [s for s, t in zip(gw.a_start, gw.a_target) if t == group_t]
    assert starts and not any(5.0 < s < 10.0 for s in starts)


def test_bad_group_targets_name_the_field() -> None:
    sc = disagg(model_list=[{"model_name": "pd", "litellm_params": {"model": "hosted_vllm/pre"}}])
    field, msg = problem(sc)
    assert field == "gateway" and "prefill side of disaggregated group 'g'" in msg
    sc = disagg(model_list=[{"model_name": "pd", "litellm_params": {"model": "hosted_vllm/gg"}}])
    field, msg = problem(sc)
    assert field == "gateway.model_list[0].litellm_params.model"
    assert "no deployment or disaggregated group named 'gg'" in msg and "disaggregated: g" in msg
    sc = disagg(model_list=[{"model_name": "pd", "litellm_params": {"model": "hosted_vllm/g", "lora": "a"}}])
    field, msg = problem(sc)
    assert field == "gateway.model_list[0].litellm_params.lora" and "not modelled" in msg


# --------------------------------------------------------------------------- LoRA through the gateway

ADAPTERS = 6


def lora_scenario(lb: str = "round_robin", seed: int = 0, **gw: Any) -> dict[str, Any]:
    """One LoRA deployment behind a route that maps each caller's tags.tenant to its adapter;
    tenant c<i> uses t<i>, 'free' the base model; a KV cache small enough to preempt."""
    tenants = {f"c{i}": f"t{i}" for i in range(ADAPTERS)} | {"free": None}
    workloads = {name: {"target": "chat", "arrival": {"kind": "poisson", "rate_per_s": 2.0},
                        "input_tokens": {"kind": "lognormal", "median": 800, "sigma": 1.0, "max": 3000},
                        "output_tokens": {"kind": "exponential", "mean": 150}, "tags": {"tenant": name}}
                 for name in tenants}
    return {
        "name": "gateway-lora",
        "seed": seed,
        "horizon_s": 20,
        "drain": True,
        "pools": {"g": {"accelerator": "h100-sxm", "count": 2, "price_usd_per_gpu_hour": 1.0}},
        "deployments": {"d": {
            "model": "llama-3.1-8b", "pool": "g", "replicas": 2, "load_balancer": {"kind": lb},
            "engine": {"max_num_seqs": 32, "max_num_batched_tokens": 1024, "gpu_memory_utilization": 0.3,
                       "max_model_len": 4096,
                       "lora": {"max_loras": 3, "max_cpu_loras": 4,
                                "adapters": {f"t{i}": {"rank": [8, 16][i % 2]} for i in range(ADAPTERS)}}}}},
        "gateway": {"overhead": FIXED_OVERHEAD, "model_list": [{"model_name": "chat", "litellm_params": {
            "model": "hosted_vllm/d", "lora": {"tenants": tenants}, **gw}}]},
        "workloads": workloads,
    }


def replay(sim: Simulation) -> dict[int, int]:
    """Replay every replica's LoRA log (as tests/test_lora.py does): a request is admitted only
    with its adapter in a GPU slot (or loaded in that step), no adapter is evicted while held,
    never more than max_loras distinct adapters are held. Returns rid -> adapter of every ADMIT."""
    rl = sim.rs.deployments["d"].lora
    admitted: dict[int, int] = {}
    for r in sim.deployments["d"].replicas:
        log = r.lora_log
        resident: set[int] = set()
        held: dict[int, int] = {}
        holder: dict[int, int] = {}
        for kind, a, rid in zip(log.kind, log.adapter, log.rid):
            if kind in (L.LOAD_CPU, L.LOAD_DISK):
                assert a not in resident
                resident.add(a)
                assert len(resident) <= rl.max_loras
            elif kind == L.EVICT_GPU:
                assert a in resident and held.get(a, 0) == 0, "evicted while in use"
                resident.discard(a)
            elif kind == L.ADMIT:
                assert a in resident, f"request {rid} admitted without adapter {a} loaded"
                holder[rid] = a
                held[a] = held.get(a, 0) + 1
                assert sum(1 for v in held.values() if v > 0) <= rl.max_loras
                admitted.setdefault(rid, a)
            elif kind == L.RELEASE:
                assert holder.pop(rid) == a
                held[a] -= 1
    return admitted


@pytest.mark.parametrize("lb", ["round_robin", "lora_affinity"])
def test_gateway_lora_requests_never_run_without_their_adapter_loaded(lb: str) -> None:
    sim, res = run(lora_scenario(lb=lb))
    admitted = replay(sim)
    rl = sim.rs.deployments["d"].lora
    reqs = sim.reqs
    n = reqs.n
    rids = np.arange(n)
    with_adapter = rids[reqs.RI[RI_LORA, :n] > 0]
    assert len(with_adapter) > 100
    # Every serving request that carries an adapter and was admitted is in a log, with that adapter.
    was_admitted = ~np.isnan(reqs.admitted_s[:n])
    assert set(with_adapter[was_admitted[with_adapter]].tolist()) == set(admitted)
    assert all(admitted[r] == reqs.RI[RI_LORA, r] for r in admitted)
    # The adapter is the caller's: tenant c<i> -> t<i>, 'free' -> the base model.
    names = sim.workload_names
    for rid in rids.tolist():
        tenant = names[int(reqs.workload[rid])]
        want = 0 if tenant == "free" else rl.index[f"t{tenant[1:]}"]
        assert reqs.RI[RI_LORA, rid] == want, (rid, tenant)
    c = calls(res)
    assert (c["status"] == "completed").all()
    tenants = c["workload"].astype(str)
    assert (c.loc[tenants == "free", "lora"].isna()).all()
    assert (c.loc[tenants != "free", "lora"].astype(str) == "t" + tenants[tenants != "free"].str[1:]).all()
    s = res.summary["deployments"]["d"]["lora"]
    assert s["requests"]["with_adapter"] == len(with_adapter)
    assert s["loads"]["from_cpu"] + s["loads"]["from_disk"] > 0


def test_gateway_lora_affinity_loads_fewer_adapters_than_round_robin() -> None:
    """The adapter reaches the balancer before it routes: lora_affinity sees it."""
    loads = {}
    for lb in ("round_robin", "lora_affinity"):
        _, res = run(lora_scenario(lb=lb, seed=2))
        s = res.summary["deployments"]["d"]["lora"]["loads"]
        loads[lb] = s["from_cpu"] + s["from_disk"]
    assert loads["lora_affinity"] < loads["round_robin"]


def test_a_portkey_target_names_an_adapter() -> None:
    sc = lora_scenario()
    sc["gateway"] = {"kind": "portkey", "overhead": FIXED_OVERHEAD, "configs": {"chat": {
        "strategy": {"mode": "loadbalance"},
        "targets": [{"custom_host": "http://d:8000/v1", "lora": "t1", "weight": 1},
                    {"custom_host": "http://d:8000/v1", "weight": 1}]}}}
    sim, _ = run(sc)
    replay(sim)
    a = sim.reqs.RI[RI_LORA, : sim.reqs.n]
    assert set(a.tolist()) == {0, sim.rs.deployments["d"].lora.index["t1"]}
    assert 0.3 < (a > 0).mean() < 0.7


# --------------------------------------------------------------------------- LoRA in agents' LLM steps


def agent_scenario(direct: bool) -> dict[str, Any]:
    sc = lora_scenario(lb="lora_affinity")
    sc["workloads"] = {}
    sc["horizon_s"] = 30
    model = "d" if direct else "chat"
    step_lora = {"lora": "t2"} if direct else {}
    sc["agents"] = {"bot": {"model": model, "system_prompt_tokens": 200, **({"lora": "t1"} if direct else {}),
                            "steps": [{"kind": "llm", "input_tokens": fixed(100), "output_tokens": fixed(40)},
                                      {"kind": "llm", "name": "second", "input_tokens": fixed(100),
                                       "output_tokens": fixed(40), **step_lora}]}}
    sc["fleets"] = {f"f{i}": {"agent": "bot", "arrival": {"kind": "poisson", "rate_per_s": 1.0}, "tags": {"tenant": f"c{i}"}}
                    for i in range(3)}
    return sc


@pytest.mark.parametrize("direct", [True, False])
def test_agent_lora_requests_never_run_without_their_adapter_loaded(direct: bool) -> None:
    """Straight to a deployment the agent (first step) and the step (second) name the adapter;
    through the gateway the route maps each fleet's tenant to its adapter."""
    sim, res = run(agent_scenario(direct))
    admitted = replay(sim)
    rl = sim.rs.deployments["d"].lora
    reqs = sim.reqs
    n = reqs.n
    assert n > 50
    a = reqs.RI[RI_LORA, :n]
    assert (a > 0).all()
    assert all(admitted[r] == a[r] for r in admitted)
    assert len(admitted) == int((~np.isnan(reqs.admitted_s[:n])).sum())
    ag = sim.agents
    assert ag is not None
    log = ag.spans
    seen = set()
    for i in range(len(log)):
        if log.kind[i] != "llm":
            continue
        attrs = log.attrs[i]
        if direct:
            want = "t2" if attrs["stacksim.step"] == "second" else "t1"
            assert attrs["stacksim.lora"] == want
            assert a[attrs["stacksim.request_id"]] == rl.index[want]
        else:
            seen.add(attrs.get("stacksim.lora"))
    if not direct:
        assert seen <= {"t0", "t1", "t2", None} and {"t0", "t1", "t2"} <= seen
        fleets = [sim.workload_names[int(w)].split("/")[0] for w in reqs.workload[:n]]
        assert all(a[r] == rl.index[f"t{f[1:]}"] for r, f in enumerate(fleets))
    assert (res.tasks["status"] == "completed").all()


# --------------------------------------------------------------------------- bad adapter names


def _at(sc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(sc)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


def bad_cases() -> list[tuple[str, dict[str, Any], str, list[str]]]:
    base = lora_scenario()
    entry = ("gateway", "model_list", 0, "litellm_params", "lora")
    portkey = _at(lora_scenario(), ("gateway",), {"kind": "portkey", "configs": {"chat": {
        "custom_host": "http://d:8000/v1", "lora": "t9"}}})
    provider = _at(lora_scenario(), ("gateway", "model_list"), [
        {"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o-mini", "lora": "t1"}}])
    agents = agent_scenario(direct=True)
    step = _at(agents, ("agents", "bot", "steps", 1, "lora"), "t7")
    via = _at(agent_scenario(direct=False), ("agents", "bot", "steps", 1, "lora"), "t1")
    no_lora = _at(base, ("deployments", "d", "engine"), {"max_model_len": 4096})
    no_lora["deployments"]["d"]["load_balancer"] = {"kind": "round_robin"}
    return [
        ("name", _at(base, entry, "t-1"), "gateway.model_list[0].litellm_params.lora",
         ["no adapter 't-1' in deployments.d.engine.lora.adapters", "it has: t0, t1, t2, t3, t4, t5", "Did you mean"]),
        ("tenant", _at(base, entry + ("tenants", "c3"), "acme"), "gateway.model_list[0].litellm_params.lora.tenants.c3",
         ["no adapter 'acme'", "it has: t0, t1"]),
        ("default", _at(base, entry + ("default",), "zz"), "gateway.model_list[0].litellm_params.lora.default",
         ["no adapter 'zz'"]),
        ("no-engine-lora", no_lora, "gateway.model_list[0].litellm_params.lora", ["deployment 'd' has no engine.lora"]),
        ("portkey", portkey, "gateway.configs.chat.lora", ["no adapter 't9'", "it has: t0"]),
        ("provider", provider, "gateway.model_list[0].litellm_params.lora", ["applies to self-hosted targets"]),
        ("agent-step", step, "agents.bot.steps[1].lora", ["no adapter 't7'", "it has: t0"]),
        ("agent-via-route", via, "agents.bot.steps[1].lora", ["'chat' is a gateway route", "litellm_params.lora"]),
    ]


BAD = bad_cases()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_adapter_names_exit_2_naming_file_line_and_field(case: tuple[str, dict[str, Any], str, list[str]],
                                                              tmp_path: Path) -> None:
    _, sc, field, fragments = case
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(sc, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    msg = ANSI.sub("", result.stderr)
    assert "Traceback" not in msg
    assert f"{path}, line" in msg.replace("\n", " ") or "bad.yaml, line" in msg, msg
    assert f"field '{field}'" in msg, msg
    flat = " ".join(msg.split())
    for frag in fragments:
        assert frag in flat, (frag, msg)
