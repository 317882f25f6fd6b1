"""YAML with line numbers.

PyYAML's composer gives every node a start mark; we build plain Python data from the node tree and
keep a map from field path (a tuple of keys and indices) to the 1-based line where it is written.
Only the safe YAML subset is accepted (no Python tags), as ``yaml.safe_load`` would.
"""

from __future__ import annotations

from typing import Any

import yaml

from stacksim.errors import Problem, ScenarioError

Path = tuple[str | int, ...]


def _construct(node: yaml.Node, path: Path, lines: dict[Path, int], loader: yaml.SafeLoader) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key == "<<":
                raise ScenarioError(
                    [Problem("YAML merge keys ('<<') are not supported; write the keys out.",
                             line=key_node.start_mark.line + 1)]
                )
            if isinstance(key, (list, dict)):
                raise ScenarioError(
                    [Problem("a mapping key must be a plain value", line=key_node.start_mark.line + 1)]
                )
            if key in out:
                raise ScenarioError(
                    [Problem(f"duplicate key '{key}'", field=_dotted(path + (key,)),
                             line=key_node.start_mark.line + 1)]
                )
            sub = path + (key,)
            lines[sub] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, sub, lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), lines, loader) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml_with_lines(text: str, file: str | None = None) -> tuple[Any, dict[Path, int]]:
    """Parse ``text`` and return ``(data, lines)`` where ``lines`` maps field paths to lines."""
    if not text.strip():
        raise ScenarioError([Problem("the file is empty; a scenario needs at least pools, deployments, workloads and horizon_s", line=1)], file=file)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Path, int] = {}
        data = _construct(node, (), lines, loader)
    except ScenarioError as exc:
        exc.file = file
        raise ScenarioError(exc.problems, file=file) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = "; ".join(x for x in (exc.context, exc.problem) if x) or "could not parse"
        raise ScenarioError(
            [Problem(f"malformed YAML: {what}. Check indentation, colons and quotes.", line=line)],
            file=file,
        ) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([Problem(f"malformed YAML: {exc}")], file=file) from None
    finally:
        loader.dispose()
    return data, lines


def _dotted(path: Path) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def dotted(path: Path) -> str:
    """``('deployments', 'chat', 'engine', 'block_size')`` -> ``deployments.chat.engine.block_size``."""
    return _dotted(path)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path`` or of its nearest written ancestor."""
    p = tuple(path)
    while True:
        if p in lines:
            return lines[p]
        if not p:
            return None
        p = p[:-1]
