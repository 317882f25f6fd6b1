"""LiteLLM configs load as they are (issue #21): the docs' Quick Start config with its
OpenAI-compatible vLLM entry, model_group_alias, environment_variables, and provider endpoint
hosts placed in their regions."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacksim.api import run_scenario
from stacksim.catalog.stack import endpoint_region
from stacksim.errors import ScenarioError
from stacksim.scenario import load_scenario

DATA = Path(__file__).parent / "data"

SCENARIO = """
name: litellm-proxy-docs
seed: 5
horizon_s: 120
pools: {{gpu: {{accelerator: h100-sxm, count: 1, region: us-east}}}}
deployments:
  opt: {{model: llama-3.1-8b, pool: gpu}}
gateway:
  config_file: {cfg}
{extra}
workloads:
  old-clients:
    target: gpt-4
    arrival: {{kind: poisson, rate_per_s: 0.05}}
    input_tokens: {{kind: fixed, value: 300}}
    output_tokens: {{kind: fixed, value: 50}}
  vllm:
    target: vllm-models
    arrival: {{kind: poisson, rate_per_s: 1.0}}
    input_tokens: {{kind: fixed, value: 300}}
    output_tokens: {{kind: fixed, value: 50}}
"""

MAP = "  api_base_deployments: {'http://0.0.0.0:4000/v1': opt}"


def _write(tmp_path: Path, cfg: Path, extra: str = MAP) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(SCENARIO.format(cfg=cfg, extra=extra))
    return p


def test_docs_config_runs_unedited(tmp_path: Path) -> None:
    rs = load_scenario(_write(tmp_path, DATA / "litellm_proxy_docs_config.yaml"))
    plan = rs.gateway_plan
    assert plan is not None
    vllm = [t for t in plan.targets if t.group == "vllm-models"]
    assert [(t.kind, t.deployment) for t in vllm] == [("self", "opt")]
    assert plan.aliases == {"gpt-4": "gpt-4o"}
    # region_name: westeurope places the EU resource in eu-west; the Canada one has none (global).
    assert [t.region for t in plan.targets if t.group == "gpt-4o"] == ["eu-west", "global"]
    result = run_scenario(rs)
    g = result.summary["gateway"]
    assert g["calls"]["completed"] > 0
    assert g["routes"]["gpt-4o"]["calls"] > 0 and "gpt-4" not in g["routes"]  # the alias's calls are gpt-4o's
    ignored = set(g["ignored_settings"])
    assert {"environment_variables.REDIS_HOST", "general_settings.master_key"} <= ignored, ignored
    assert not any(k.startswith("general_settings.config.") for k in ignored), ignored
    assert not any(k.endswith("region_name") for k in ignored), ignored


def test_unmapped_api_base_says_how_to_map_it(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario(_write(tmp_path, DATA / "litellm_proxy_docs_config.yaml", extra=""))
    msg = str(err.value)
    assert "litellm_proxy_docs_config.yaml, line 24" in msg, msg
    assert "model_list[2].litellm_params.model" in msg, msg
    assert "stacksim: {deployment: <name>}" in msg and "api_base_deployments" in msg and "opt" in msg, msg


@pytest.mark.parametrize("entry, deployment", [
    ("{model: openai/my-model, api_base: 'http://x:8000/v1'}, stacksim: {deployment: opt}", "opt"),
    ("{model: openai/my-model, api_base: 'http://opt.serving.svc.cluster.local:8000/v1'}", "opt"),
    ("{model: openai/my-model, api_base: 'https://gw.example.com/opt/v1'}", "opt"),
    ("{model: hosted_vllm/opt}", "opt"),
])
def test_self_hosted_rules(tmp_path: Path, entry: str, deployment: str) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(f"""
name: t
horizon_s: 10
pools: {{gpu: {{accelerator: h100-sxm, count: 1, region: us-east}}}}
deployments: {{opt: {{model: llama-3.1-8b, pool: gpu}}}}
gateway:
  model_list:
    - {{model_name: m, litellm_params: {entry}}}
workloads:
  w: {{target: m, arrival: {{kind: poisson, rate_per_s: 0.1}}, input_tokens: {{kind: fixed, value: 10}}, output_tokens: {{kind: fixed, value: 5}}}}
""")
    rs = load_scenario(p)
    assert rs.gateway_plan is not None
    assert [t.deployment for t in rs.gateway_plan.targets] == [deployment]


def test_alias_to_unknown_group_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("model_list:\n  - model_name: a\n    litellm_params: {model: openai/gpt-4o}\n"
                   "router_settings:\n  model_group_alias:\n    b: nosuch\n")
    p = tmp_path / "s.yaml"
    p.write_text(f"name: t\nhorizon_s: 10\ngateway: {{config_file: {cfg}}}\nworkloads:\n"
                 "  w: {target: b, arrival: {kind: poisson, rate_per_s: 0.1}, input_tokens: {kind: fixed, value: 10}, "
                 "output_tokens: {kind: fixed, value: 5}}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert "alias 'b' maps to 'nosuch'" in msg and "config.yaml, line 6" in msg, msg


@pytest.mark.parametrize("provider, host, code, region", [
    ("bedrock", "bedrock-runtime.eu-central-1.amazonaws.com", "", "eu-central"),
    ("google", "europe-west4-aiplatform.googleapis.com", "", "eu-west"),
    ("azure-openai", "swedencentral.api.cognitive.microsoft.com", "", "eu-central"),
    ("azure-openai", "", "westeurope", "eu-west"),
    ("openai", "eu.api.openai.com", "", "eu-west"),
    ("anthropic", "api.anthropic.com", "", None),
])
def test_endpoint_hosts_map_to_regions(provider: str, host: str, code: str, region: str | None) -> None:
    assert endpoint_region(provider, host=host, code=code) == region


def test_bedrock_api_base_places_the_endpoint(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("""
name: t
horizon_s: 10
gateway:
  model_list:
    - model_name: c
      litellm_params: {model: bedrock/meta.llama2-70b-chat-v1, aws_region_name: eu-central-1}
    - model_name: v
      litellm_params: {model: azure/gpt-4o, api_base: 'https://westeurope.api.cognitive.microsoft.com/', region_name: eu}
workloads:
  w: {target: c, arrival: {kind: poisson, rate_per_s: 0.1}, input_tokens: {kind: fixed, value: 10}, output_tokens: {kind: fixed, value: 5}}
""")
    rs = load_scenario(p)
    assert rs.gateway_plan is not None
    assert [(t.region, t.jurisdiction) for t in rs.gateway_plan.targets] == [("eu-central", "eu"), ("eu-west", "eu")]
