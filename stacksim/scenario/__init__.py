"""Scenario files: load YAML, validate at the door, resolve against the catalogs.

``load_scenario(path)`` returns a :class:`ResolvedScenario` or raises :class:`ScenarioError`
whose message names the file, the line, the field and what would be valid.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from stacksim.errors import Problem, ScenarioError, clip
from stacksim.scenario.resolve import ResolvedScenario, problems_to_report, resolve
from stacksim.scenario.schema import Scenario
from stacksim.scenario.schema_base import BOUND_REASONS
from stacksim.scenario.yamlio import (
    MAX_FILE_BYTES,
    dotted,
    is_regular_file,
    line_of,
    load_yaml_with_lines,
    read_text_file,
    shown_path,
)

# Validation errors described in full (the schema walk for each takes ~20 us): a message shows the
# first 8 (errors.py); 30,000 errors in one file took 0.6 s to describe before this cap.
DESCRIBED_ERRORS = 50

__all__ = ["MAX_FILE_BYTES", "ResolvedScenario", "Scenario", "load_scenario", "load_scenario_text", "resolved_yaml", "scenario_json_schema"]


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _container_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk the schema along ``loc`` (tags of discriminated unions included) to the last model."""
    tp: Any = Scenario
    i = 0
    parts = list(loc)
    while i < len(parts) - 1:
        tp = _unwrap(tp)
        part = parts[i]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(str(part))
            if f is None and "kind" in tp.model_fields and typing.get_args(tp.model_fields["kind"].annotation) == (part,):
                i += 1  # the tag of a one-member discriminated union
                continue
            if f is None:
                return None
            tp = f.annotation
            i += 1
            continue
        origin = typing.get_origin(tp)
        if origin is dict:
            tp = typing.get_args(tp)[1]
            i += 1
            continue
        if origin is list:
            tp = typing.get_args(tp)[0]
            i += 1
            continue
        if origin is typing.Union:
            args = [_unwrap(a) for a in typing.get_args(tp)]
            chosen = None
            for a in args:
                if (
                    isinstance(a, type)
                    and issubclass(a, BaseModel)
                    and "kind" in a.model_fields
                    and typing.get_args(a.model_fields["kind"].annotation) == (part,)
                ):
                    chosen = a
            if chosen is None:
                non_none = [a for a in args if a is not type(None)]
                if len(non_none) == 1:
                    tp = non_none[0]
                    continue
                return None
            tp = chosen
            i += 1
            continue
        return None
    tp = _unwrap(tp)
    if typing.get_origin(tp) is typing.Union:
        non_none = [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
        tp = non_none[0] if len(non_none) == 1 else tp
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _union_kinds(loc: tuple[Any, ...]) -> list[str]:
    """The `kind` values of the discriminated union at ``loc`` (for 'needs a kind' messages)."""
    parent = _container_model(loc)
    tp: Any = None
    if parent is not None:
        f = parent.model_fields.get(str(loc[-1]))
        tp = f.annotation if f is not None else None
    tp = _unwrap(tp)
    members = typing.get_args(tp) if typing.get_origin(tp) is typing.Union else (tp,)
    kinds: list[str] = []
    for m in members:
        m = _unwrap(m)
        if isinstance(m, type) and issubclass(m, BaseModel) and "kind" in m.model_fields:
            kinds += [str(a) for a in typing.get_args(m.model_fields["kind"].annotation)]
    return kinds


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop discriminator tags from a pydantic location so it matches the YAML's keys."""
    out: list[Any] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur or isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and part not in cur and part == loc[-1] and cur.get("kind") != part:
            out.append(part)  # the missing or unknown field itself (not the union tag a model check ends on)
        # else: a union tag such as 'poisson'; not in the data
    return tuple(out)


def _yaml_float(text: str) -> str:
    """``1e9`` as YAML 1.1 reads a number: ``1.0e+9``."""
    mant, exp = re.split("[eE]", text.strip())
    if "." not in mant:
        mant += ".0"
    if exp[0] not in "+-":
        exp = "+" + exp
    return f"{mant}e{exp}"


def _describe(err: dict[str, Any], data: Any) -> tuple[str, tuple[Any, ...]]:
    loc = tuple(err["loc"])
    typ = err["type"]
    path = _data_path(data, loc)
    got = err.get("input")
    if typ == "extra_forbidden":
        model = _container_model(loc)
        valid = ", ".join(model.model_fields) if model else "see `stacksim schema`"
        return f"unknown key '{clip(loc[-1])}'. Valid keys here: {valid}", path
    if typ == "missing":
        model = _container_model(loc)
        desc = ""
        if model is not None and str(loc[-1]) in model.model_fields:
            d = model.model_fields[str(loc[-1])].description
            desc = f" ({d})" if d else ""
        return f"required field '{loc[-1]}' is missing{desc}", path
    if typ in ("union_tag_invalid", "union_tag_not_found"):
        tags = err.get("ctx", {}).get("expected_tags", "") or ", ".join(repr(k) for k in _union_kinds(loc))
        if typ == "union_tag_not_found":
            return f"needs a 'kind'; valid kinds: {tags}", path
        return f"kind {err['ctx'].get('tag')!r} is not valid; valid kinds: {tags}", path + ("kind",)
    msg = err["msg"]
    if isinstance(got, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", got.strip()):
        # YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent: 1e9 is text there.
        return f"{msg} (got '{clip(got)}': YAML reads it as text; write {_yaml_float(got)})", path
    if typ in ("less_than", "less_than_equal") and str(loc[-1]) in BOUND_REASONS:
        return f"{msg} (got {clip(repr(got))}); {BOUND_REASONS[str(loc[-1])]}", path
    if typ == "value_error":
        msg = msg.removeprefix("Value error, ")
        return msg, path
    if isinstance(got, (dict, list)):
        return f"{msg}", path
    return f"{msg} (got {clip(repr(got))})", path


def load_scenario_text(text: str, file: str | None = None, overrides: dict[str, Any] | None = None) -> ResolvedScenario:
    """Validate and resolve a scenario given as YAML text (``file`` names it in errors)."""
    data, lines = load_yaml_with_lines(text, file)
    if not isinstance(data, dict):
        raise ScenarioError(
            [Problem("a scenario is a YAML mapping with keys such as pools, deployments and workloads", line=1)],
            file=file,
        )
    merged = _merge_gateway_config(data, file)
    if overrides:
        data = {**data, **overrides}
        # An overridden field is not where the file says it is: report it without a line.
        lines = {k: v for k, v in lines.items() if not (k and k[0] in overrides)}
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        errs = exc.errors(include_url=False)
        # A mapping given where a union also accepts a string (a config inline or as a file path):
        # the string branch's complaint only adds noise beside the mapping's own errors.
        errs = [e for e in errs if not (e["type"] == "string_type" and e["loc"][-1:] == ("str",) and isinstance(e.get("input"), dict))] or errs
        for i, err in enumerate(errs):
            if i >= DESCRIBED_ERRORS:  # counted, not described: a message shows the first few
                problems.append(Problem(err["msg"], field=dotted(tuple(err["loc"]))))
                continue
            msg, path = _describe(dict(err), data)
            problems.append(Problem(msg, field=dotted(path), line=line_of(lines, path)))
        raise ScenarioError(problems, file=file) from None
    rs, probs = resolve(sc, file)
    if probs:
        report = problems_to_report(probs, lines)
        for prefix, cfg_file, cfg_lines, keys in merged:
            for pp, rp in zip(probs, report):
                k = len(prefix)
                if len(pp.path) > k and tuple(pp.path[:k]) == prefix and (keys is None or pp.path[k] in keys):
                    n = line_of(cfg_lines, tuple(pp.path[k:]))
                    rp.message += f" (in {cfg_file}" + (f", line {n})" if n else ")")
        raise ScenarioError(report, file=file)
    rs.lines = lines
    return rs


LITELLM_KEYS = ("model_list", "router_settings", "litellm_settings", "general_settings", "environment_variables")


def _config_path(file: str | None, value: str) -> Path:
    base = Path(file).resolve().parent if file else Path.cwd()
    cfg = Path(value)
    return cfg if cfg.is_absolute() else base / cfg


def _validate_external(model: type[BaseModel], cdata: Any, name: str) -> None:
    try:
        model.model_validate(cdata)
    except ValidationError as exc:
        _, clines = load_yaml_with_lines(read_text_file(name, "config"), name)
        problems = []
        for err in exc.errors(include_url=False):
            path = tuple(err["loc"])
            got = err.get("input")
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] != "value_error" and not isinstance(got, dict | list):
                msg += f" (got {got!r})"
            problems.append(Problem(msg, field=dotted(path), line=line_of(clines, path)))
        raise ScenarioError(problems, file=name) from None


Merged = list[tuple[tuple[Any, ...], str, dict[Any, int], list[str] | None]]


def _merge_gateway_config(data: dict[str, Any], file: str | None) -> Merged:
    """Gateway config files, read into the scenario. ``gateway.config_file`` (kind litellm): a
    LiteLLM proxy config.yaml whose model_list and settings are used where the scenario's gateway
    section does not give them. ``gateway.configs.<name>: path`` (kind portkey): a Portkey config
    file. Returns, per file, where its content sits in the scenario, so that problems found later
    name the file and its line."""
    gw = data.get("gateway")
    if not isinstance(gw, dict):
        return []
    out: Merged = []
    if gw.get("kind") == "portkey" and isinstance(gw.get("configs"), dict):
        from stacksim.scenario.schema_portkey import PortkeyTarget

        configs = dict(gw["configs"])
        for cname, value in configs.items():
            if not isinstance(value, str):
                continue
            cfg = _config_path(file, value)
            name = str(cfg)
            if not is_regular_file(cfg):
                raise ScenarioError([Problem(f"gateway.configs.{clip(cname)}: no file {shown_path(name)}",
                                             field=f"gateway.configs.{clip(cname)}")], file=file)
            cdata, clines = load_yaml_with_lines(read_text_file(cfg, "Portkey config"), name)
            if not isinstance(cdata, dict):
                raise ScenarioError([Problem("a Portkey config is a mapping with strategy and targets, or a provider "
                                             "(portkey.ai/docs/product/ai-gateway/configs)", line=1)], file=name)
            _validate_external(PortkeyTarget, cdata, name)
            configs[cname] = cdata
            out.append((("gateway", "configs", cname), name, clines, None))
        data["gateway"] = {**gw, "configs": configs}
        return out
    if not isinstance(gw.get("config_file"), str):
        return out
    cfg = _config_path(file, gw["config_file"])
    name = str(cfg)
    if not is_regular_file(cfg):
        raise ScenarioError([Problem(f"gateway.config_file: no file {shown_path(name)}", field="gateway.config_file")], file=file)
    cdata, clines = load_yaml_with_lines(read_text_file(cfg, "LiteLLM config"), name)
    if not isinstance(cdata, dict) or "model_list" not in cdata:
        raise ScenarioError([Problem("a LiteLLM config is a mapping with a model_list (docs.litellm.ai/docs/proxy/configs)", line=1)], file=name)
    from stacksim.scenario.schema_gateway import LitellmConfig

    _validate_external(LitellmConfig, cdata, name)
    keys = [k for k in LITELLM_KEYS if k in cdata and k not in gw]
    data["gateway"] = {**gw, **{k: cdata[k] for k in keys}}
    ignored = sorted(set(cdata) - set(LITELLM_KEYS))
    if ignored:
        data["gateway"].setdefault("general_settings", {})
        if isinstance(data["gateway"]["general_settings"], dict):
            data["gateway"]["general_settings"] = {**data["gateway"]["general_settings"], **{f"config.{k}": True for k in ignored}}
    out.append((("gateway",), name, clines, keys))
    return out


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> ResolvedScenario:
    """Read, validate and resolve a scenario file."""
    text = read_text_file(path, "scenario")  # regular files only, at most MAX_FILE_BYTES, UTF-8
    return load_scenario_text(text, str(path), overrides)


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of the scenario format (committed as docs/scenario.schema.json)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "stacksim scenario"
    return schema


def schema_text() -> str:
    return json.dumps(scenario_json_schema(), indent=2, sort_keys=True) + "\n"


def resolved_yaml(rs: ResolvedScenario) -> str:
    """The scenario with every default filled in (and resolved prices), as YAML."""
    data = rs.scenario.model_dump(mode="json")
    for name, rp in rs.pools.items():
        data["pools"][name]["price_usd_per_gpu_hour"] = rp.price_usd_per_gpu_hour
    for name, rd in rs.deployments.items():
        data["deployments"][name]["engine"]["max_model_len"] = rd.max_model_len
        if rd.lora is not None:  # the host cache size and copy rate used
            data["deployments"][name]["engine"]["lora"]["max_cpu_loras"] = rd.lora.max_cpu_loras
            data["deployments"][name]["engine"]["lora"]["load"]["from_cpu_gb_per_s"] = rd.lora.host_gb_per_s
    for name, rg in rs.disaggregated.items():  # the link's defaults, filled in
        data["disaggregated"][name]["transfer"].update(bandwidth_gbps=rg.bandwidth_gbps, latency_ms=rg.latency_ms)
    for w in data["workloads"].values():
        for key in ("arrival", "input_tokens", "output_tokens"):
            if "path" in w[key]:  # absolute, so the resolved file runs from anywhere
                w[key]["path"] = rs.path(w[key]["path"])
    return yaml.safe_dump(data, sort_keys=False, width=100)

