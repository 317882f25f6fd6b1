"""A LiteLLM proxy config.yaml loads as a scenario's gateway (gateway.config_file) and runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacksim.api import run_scenario
from stacksim.errors import ScenarioError
from stacksim.scenario import load_scenario

DATA = Path(__file__).parent / "data"

SCENARIO = """
name: litellm-docs
seed: 3
horizon_s: 300
gateway:
  config_file: {cfg}
workloads:
  chat:
    target: gpt-4o
    arrival: {{kind: poisson, rate_per_s: 0.5}}
    input_tokens: {{kind: fixed, value: 500}}
    output_tokens: {{kind: fixed, value: 100}}
"""


def _write(tmp_path: Path, cfg: Path) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(SCENARIO.format(cfg=cfg))
    return p


def test_docs_config_loads_and_runs(tmp_path: Path) -> None:
    rs = load_scenario(_write(tmp_path, DATA / "litellm_docs_config.yaml"))
    plan = rs.gateway_plan
    assert plan is not None
    assert plan.strategy == "usage-based-routing-v2"
    assert plan.num_retries == 3  # litellm_settings.num_retries (router_settings gives none)
    assert plan.timeout == 600
    assert plan.fallbacks == {"gpt-4o": ["gpt-4o-mini"]}
    # The Azure deployment names are not models: model_name resolves them to the catalog's gpt-4o.
    assert [t.model.model for t in plan.targets if t.model] == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert [t.rpm for t in plan.targets] == [6, 6, None]
    result = run_scenario(rs)
    g = result.summary["gateway"]
    assert g["calls"]["arrived"] == sum(g["calls"][k] for k in ("completed", "rejected", "failed", "in_flight"))
    assert g["calls"]["completed"] > 0
    # rpm 6 per Azure deployment (usage-based: rpm_used + 1 >= rpm skips) cannot carry 30 calls a
    # minute: the overflow goes to the fallback group.
    assert g["routes"]["gpt-4o"]["calls"] > 0 and g["fallbacks"] > 0
    ignored = set(g["ignored_settings"])
    for key in ("router_settings.redis_host", "litellm_settings.drop_params", "general_settings.master_key"):
        assert key in ignored, ignored
    assert any(k.endswith("litellm_params.api_key") for k in ignored)


def test_bad_config_is_reported_against_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("model_list:\n  - model_name: a\n    litellm_params:\n      model: nosuch/gpt-4o\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(_write(tmp_path, cfg))
    msg = str(err.value)
    assert "unknown provider prefix 'nosuch/'" in msg and "config.yaml, line 4" in msg, msg
    cfg.write_text("model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/gpt-4o\n      rpm: fast\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(_write(tmp_path, cfg))
    msg = str(err.value)
    assert str(cfg) in msg and "line 5" in msg and "model_list[0].litellm_params.rpm" in msg, msg


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario(_write(tmp_path, tmp_path / "nope.yaml"))
    assert "gateway.config_file" in str(err.value)
