"""Fuzzing the CLI with mutated scenario files (#23): whatever the file holds, `stacksim validate`
and `stacksim run` end in exit code 0 or 2, never print a traceback, answer bad input with one
message naming the file, never run past the file's `limits:`, and stay well under 2 GB of memory.

Hypothesis draws the mutations: over the parsed YAML tree of a bundled file (a scalar replaced by
an extreme or wrong-typed value, a key deleted, a value copied under an unknown key, a node made
deeply nested, an arrival process swapped for another kind) and over its raw text (a tab, a NUL
byte, an unclosed `{`, an alias bomb, a merge key, a truncation, bytes that are not UTF-8...).
Hostile files written from scratch (empty, a bare scalar, a list) are mutated the same way.

Cost: `validate` runs in process (``typer.testing.CliRunner``, ~20 ms a file); the short runs and
the memory checks run the real entry point in a subprocess (~1.5 s of imports each), under an
address-space limit and with the child's peak RSS read from ``os.wait4``. ``derandomize=True``:
the examples are a function of each test's code, so CI sees the same ones every time.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stacksim import load_scenario
from stacksim.cli import app
from stacksim.engine import simulation as simulation_mod
from stacksim.errors import StackSimError

from .conftest import ROOT

SCENARIOS = ROOT / "scenarios"
# Every bundled YAML file is a base for `validate` (sweep, optimize and mix files too: validate
# must refuse them cleanly). Runs use the scenarios below, each forced to a short horizon.
ALL_FILES = sorted({*SCENARIOS.glob("*.yaml"), *SCENARIOS.glob("**/*.yaml")})
RUN_BASES = [
    SCENARIOS / name
    for name in (
        "quickstart.yaml",  # one deployment, Poisson traffic, lognormal lengths
        "agents-2026.yaml",  # agent fleets, tools, a gateway
        "edge-2026.yaml",
        "starting-fresh-portkey-2026.yaml",  # a Portkey config file beside it
        "two-tier-fleet.yaml",
        "azure-conv-replay.yaml",  # trace arrivals from shared/
        "papers/distserve-disagg.yaml",  # disaggregated prefill / decode
        "papers/splitwise-aa.yaml",  # empirical lengths from a shared/ trace
        "papers/melange-fleet.yaml",
        "blis/llama-2-7b-tp1-codegen.yaml",  # multi_stage arrivals, shared prefixes
    )
]
HORIZON_S = 10.0  # forced on every run: each simulates at most a few hundred requests

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
GIB = 2**30
# Address space for a CLI subprocess. Measured here: validate and short runs need under 1 GiB of
# address space and ~190-350 MB RSS with the Numba cache warm; a cold cache (LLVM compiling every
# kernel) peaked at 484 MB RSS and still ran under a 1 GiB limit. 4 GiB leaves room for that and
# for allocators that reserve ahead; past it an allocation fails (MemoryError: exit 1, caught).
ADDRESS_SPACE = 4 * GIB
MAX_RSS = 2 * GIB
SUBPROCESS_TIMEOUT_S = 300  # a cold Numba cache alone took 40 s on a busy 2-core machine

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,  # nothing replayed from earlier runs: the same examples everywhere
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
    print_blob=True,
)

runner = CliRunner()


# --------------------------------------------------------------------------- the bases


def _portable(node: Any, folder: Path, moved: dict[str, str]) -> Any:
    """``node`` with every relative path that names an existing file made absolute (resolved from
    ``folder``, the bundled file's own), so a mutated copy written elsewhere finds its traces and
    configs. ``moved`` collects the replacements, for the raw text."""
    if isinstance(node, dict):
        return {k: _portable(v, folder, moved) for k, v in node.items()}
    if isinstance(node, list):
        return [_portable(v, folder, moved) for v in node]
    if isinstance(node, str) and "/" in node and not node.startswith("/") and "\n" not in node:
        target = folder / node
        if target.is_file():
            moved[node] = str(target.resolve())
            return moved[node]
    return node


@dataclass(frozen=True)
class Base:
    name: str  # relative to scenarios/, or the name of a hostile file
    text: str  # the file with its relative paths made absolute (comments kept)
    tree: Any  # yaml.safe_load of it


def _base(path: Path) -> Base:
    raw = path.read_text(encoding="utf-8")
    moved: dict[str, str] = {}
    tree = _portable(yaml.safe_load(raw), path.parent, moved)
    for rel, absolute in sorted(moved.items(), key=lambda kv: -len(kv[0])):
        raw = re.sub(rf"(?<![\w./-]){re.escape(rel)}(?![\w./-])", lambda _m, a=absolute: a, raw)
    return Base(str(path.relative_to(SCENARIOS)), raw, tree)


BUNDLED = [_base(p) for p in ALL_FILES]
# Hostile files written from scratch; the raw mutations below make them worse.
HOSTILE = [
    Base(name, text, yaml.safe_load(text))
    for name, text in (
        ("empty", ""),
        ("comment-only", "# nothing here\n"),
        ("scalar", "42\n"),
        ("list", "- pools\n- deployments\n"),
        ("null", "~\n"),
        ("name-only", "name: x\n"),
        ("flow-mapping", "{name: x, horizon_s: 10, pools: {}, deployments: {}, workloads: {}}\n"),
    )
]


def _force_small(tree: dict[str, Any]) -> dict[str, Any]:
    """A short run of ``tree``: horizon_s HORIZON_S, warm-up and multi_stage stages fitted inside."""
    tree = copy.deepcopy(tree)
    tree["horizon_s"] = HORIZON_S
    if "warmup_s" in tree:
        tree["warmup_s"] = min(float(tree["warmup_s"]), HORIZON_S / 5)
    for w in tree.get("workloads", {}).values():
        arrival = w.get("arrival", {})
        if arrival.get("kind") == "multi_stage":
            arrival.pop("gap_s", None)
            for stage in arrival["stages"]:
                stage["duration_s"] = HORIZON_S / (2 * len(arrival["stages"]))
    return tree


# --------------------------------------------------------------------------- tree mutations

EXTREMES: tuple[Any, ...] = (
    0, -1, 2**63, 1e308, -1e308, math.nan, math.inf, -math.inf,
    "", "x" * 5000, [1, "a", None], {"k": 1, "kind": "x"}, None, True,
)
DEEP = "__fuzz_deep__"  # placeholder replaced by raw deep nesting after dumping (yaml's emitter recurses)
# Arrival processes of every kind, some of them corner cases (no think time, a huge population).
ARRIVALS: tuple[dict[str, Any], ...] = (
    {"kind": "poisson", "rate_per_s": 3},
    {"kind": "gamma", "rate_per_s": 3, "cv": 4.0},
    {"kind": "deterministic", "rate_per_s": 7},
    {"kind": "closed_loop", "clients": 4},
    {"kind": "closed_loop", "clients": 4, "think_time_s": 0.5},
    {"kind": "closed_loop", "clients": 10**6},
    {"kind": "offline"},
    {"kind": "multi_stage", "process": "poisson",
     "stages": [{"rate_per_s": 2, "duration_s": 2}, {"rate_per_s": 20, "duration_s": 2}]},
)

NodePath = tuple[str | int, ...]


def _walk(node: Any, path: NodePath = ()) -> Iterator[tuple[NodePath, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))


def _get(tree: Any, path: NodePath) -> Any:
    for p in path:
        tree = tree[p]
    return tree


@st.composite
def tree_mutation(draw: st.DrawFn, tree: Any) -> str:
    """Apply one mutation to ``tree`` in place; return what it did (for the failure report)."""
    nodes = [(p, v) for p, v in _walk(tree) if p]
    if not nodes:
        return "nothing to mutate"
    kind = draw(st.sampled_from(["scalar", "scalar", "scalar", "delete", "unknown", "deep", "arrival"]))
    if kind == "arrival":
        arrivals = [p for p, v in nodes if p[-1] == "arrival" and isinstance(v, dict)]
        if arrivals:
            path = draw(st.sampled_from(arrivals))
            new = copy.deepcopy(draw(st.sampled_from(ARRIVALS)))
            _get(tree, path[:-1])[path[-1]] = new
            return f"{'.'.join(map(str, path))} = {new}"
        kind = "scalar"
    if kind == "scalar":
        scalars = [p for p, v in nodes if not isinstance(v, (dict, list))] or [p for p, _ in nodes]
        path = draw(st.sampled_from(scalars))
        value = draw(st.sampled_from(EXTREMES))
        _get(tree, path[:-1])[path[-1]] = copy.deepcopy(value)
        return f"{'.'.join(map(str, path))} = {str(value)[:40]!r}"
    entries = [p for p, _ in nodes if isinstance(_get(tree, p[:-1]), dict)]
    if not entries:
        return "no mapping to mutate"
    path = draw(st.sampled_from(entries))
    parent = _get(tree, path[:-1])
    if kind == "delete":
        del parent[path[-1]]
        return f"del {'.'.join(map(str, path))}"
    if kind == "unknown":
        parent[f"{path[-1]}_fuzz"] = copy.deepcopy(parent[path[-1]])
        return f"{'.'.join(map(str, path))}_fuzz = copy of {path[-1]}"
    parent[path[-1]] = DEEP
    return f"{'.'.join(map(str, path))} = deep nesting"


def _dump(tree: Any, depth: int) -> bytes:
    text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=10_000)
    return text.replace(DEEP, "[" * depth + "]" * depth).encode("utf-8")


@st.composite
def mutated_tree(draw: st.DrawFn, base: Any, most: int = 3) -> tuple[bytes, list[str]]:
    tree = copy.deepcopy(base)
    done = [draw(tree_mutation(tree)) for _ in range(draw(st.integers(1, most)))]
    depth = draw(st.sampled_from([3, 63, 64, 65, 300, 2000]))
    return _dump(tree, depth), done


# --------------------------------------------------------------------------- raw-text mutations

ALIAS_BOMB = "x-bomb:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10)
)
AT_TOP: tuple[str, ...] = (  # whole lines, inserted before a line at the top level
    ALIAS_BOMB,
    "x-rec: &r [1, *r]\n",
    "x-many: [" + ",".join(["1"] * 100_001) + "]\n",
    "x-deep: " + "[" * 1000 + "]" * 1000 + "\n",
    "x-long-" + "k" * 5000 + ": 1\n",
    "x-py: !!python/object/apply:os.system ['true']\n",
    "x-set: !!set {a, b}\n",
    "x-bin: !!binary aGVsbG8=\n",
    "x-ts: 2001-12-14t21:59:43.10-05:00\n",
    "x-complex: {? [a, b] : 1}\n",
    "---\nname: second-document\n",
    "...\n",
)
ANYWHERE: tuple[bytes, ...] = (  # inserted at any byte offset
    b"\t", b"\x00", b"{", b"[", b"}", b"\"", b"'", b"&", b"*", b"!", b"%", b"@", b"`", b"|", b">",
    b"\r", b"\xff", b"\xe9", b"\xc3(", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b"\xf0\x9f\x92\xa5",
    b": ", b"- ", b"#", b"\n  ", b"\n", b"<<: *a\n",
)


@st.composite
def raw_mutation(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["insert", "insert", "top", "merge", "truncate", "dup-line", "crlf"]))
    if kind == "insert":
        at, s = draw(st.integers(0, len(data))), draw(st.sampled_from(ANYWHERE))
        return data[:at] + s + data[at:], f"insert {s!r} at byte {at}"
    if kind == "truncate":
        at = draw(st.integers(0, len(data)))
        return data[:at], f"truncate at byte {at}"
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n"), "CRLF line ends"
    lines = data.splitlines(keepends=True)
    if kind == "top":
        tops = [i for i, ln in enumerate(lines) if re.match(rb"[A-Za-z_]", ln)] or [0]
        at, s = draw(st.sampled_from(tops)), draw(st.sampled_from(AT_TOP))
        return b"".join(lines[:at]) + s.encode() + b"".join(lines[at:]), f"line {at + 1}: {s[:40]!r}"
    entries = [i for i, ln in enumerate(lines) if re.match(rb"\s*[\w-]+:", ln)]
    if not entries:
        return data + b"\x00", "append NUL"
    at = draw(st.sampled_from(entries))
    if kind == "dup-line":
        return b"".join(lines[:at + 1]) + b"".join(lines[at:]), f"duplicate line {at + 1}"
    indent = re.match(rb"\s*", lines[at]).group(0)  # type: ignore[union-attr]
    anchor = b"x-anchor: &anc {count: 4, kind: vllm}\n"
    merged = b"".join(lines[:at]) + indent + b"<<: *anc\n" + b"".join(lines[at:])
    return anchor + merged, f"merge key '<<: *anc' before line {at + 1}"


@st.composite
def mutated_text(draw: st.DrawFn, base: Base) -> tuple[bytes, list[str]]:
    data = base.text.encode("utf-8")
    done = []
    for _ in range(draw(st.integers(1, 2))):
        data, what = draw(raw_mutation(data))
        done.append(what)
    return data, done


# --------------------------------------------------------------------------- checks


def check_outcome(code: int, stdout: str, stderr: str, path: Path, what: object) -> None:
    """Exit 0 or 2, no traceback anywhere, and on exit 2 one `error:` message that names the file."""
    stdout, stderr = ANSI.sub("", stdout), ANSI.sub("", stderr)
    context = f"\nmutation: {what}\nexit {code}\nstderr: {stderr[:3000]}\nstdout: {stdout[:1000]}"
    assert "Traceback" not in stdout + stderr, context
    assert "internal error" not in stdout + stderr, context
    assert code in (0, 2), context
    if code == 2:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert lines and lines[0].startswith("error: "), context
        assert sum(ln.startswith("error:") for ln in lines) == 1, context
        assert str(path) in lines[0], f"the message does not name {path}{context}"
        assert stdout.strip() == "", context


def invoke(args: list[str]) -> tuple[int, str, str]:
    """The CLI in process. An exception that escapes the command is a bug: re-raised with its
    traceback (exit 2 is typer.Exit, a SystemExit)."""
    res = runner.invoke(app, args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"`stacksim {' '.join(args)[:300]}` raised") from res.exception
    return res.exit_code, res.stdout, res.stderr


@dataclass(frozen=True)
class Proc:
    code: int
    stdout: str
    stderr: str
    max_rss: int  # bytes


def run_subprocess(args: list[str]) -> Proc:
    """The real entry point in a child process, under ADDRESS_SPACE, with its peak RSS."""
    env = {k: v for k, v in os.environ.items() if k not in ("STACKSIM_DEBUG", "FORCE_COLOR")}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "stacksim.cli", *args], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        # Set from here rather than with preexec_fn (unsafe with threads): Popen returns once the
        # child has exec'd, before the interpreter has imported anything of size.
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
        killed = threading.Event()
        killer = threading.Timer(SUBPROCESS_TIMEOUT_S, lambda: (killed.set(), proc.kill()))
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    assert not killed.is_set(), f"`stacksim {' '.join(args)}` ran past {SUBPROCESS_TIMEOUT_S} s"
    return Proc(proc.returncode, *text, usage.ru_maxrss * 1024)  # ru_maxrss: KiB on Linux


def _write(folder: Path, data: bytes, name: str = "fuzz.yaml") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run refused by its limits must never reach the engine."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a run past its limits reached Simulation()")

    monkeypatch.setattr(simulation_mod.Simulation, "__init__", refuse)


# --------------------------------------------------------------------------- validate, in process


def test_every_bundled_file_validates_cleanly(folder: Path) -> None:
    """The unmutated bases, as bundled and as the copies the fuzz mutates (paths made absolute):
    scenarios pass, sweep / optimize / mix files are refused cleanly."""
    assert len(ALL_FILES) >= 30 and all(p in ALL_FILES for p in RUN_BASES)
    for path, base in zip(ALL_FILES, BUNDLED, strict=True):
        copied = _write(folder, base.text.encode())
        for p in (path, copied):
            code, out, err = invoke(["validate", str(p)])
            check_outcome(code, out, err, p, "none")
            if path.parent.name not in ("sweeps", "optimize", "mix"):
                assert code == 0 and ANSI.sub("", out).startswith("OK"), (p, err)
        runs = _write(folder, _dump(_force_small(base.tree), 3)) if path in RUN_BASES else None
        if runs is not None:  # and the short versions the runs start from
            code, _, err = invoke(["validate", str(runs)])
            assert code == 0, (path, err)


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_validate_survives_tree_mutations(folder: Path, data: st.DataObject) -> None:
    """Every bundled file with 1-3 mutations of its parsed tree: `validate` exits 0 or 2, cleanly."""
    base = data.draw(st.sampled_from(BUNDLED), label="base")
    text, done = data.draw(mutated_tree(base.tree))
    path = _write(folder, text)
    code, out, err = invoke(["validate", str(path)])
    event(f"exit {code}")  # pytest --hypothesis-show-statistics: how many mutants were valid
    check_outcome(code, out, err, path, (base.name, done))


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_validate_survives_raw_mutations(folder: Path, data: st.DataObject) -> None:
    """Bundled and hostile files with 1-2 mutations of their bytes: `validate` exits 0 or 2, cleanly."""
    base = data.draw(st.sampled_from(BUNDLED + HOSTILE), label="base")
    text, done = data.draw(mutated_text(base))
    path = _write(folder, text)
    code, out, err = invoke(["validate", str(path)])
    event(f"exit {code}")  # pytest --hypothesis-show-statistics: how many mutants were valid
    check_outcome(code, out, err, path, (base.name, done))


# --------------------------------------------------------------------------- limits


def _rate_paths(tree: dict[str, Any]) -> list[NodePath]:
    """Every workload rate that sets its request count (workloads without max_requests)."""
    out: list[NodePath] = []
    for name, w in tree.get("workloads", {}).items():
        if w.get("max_requests") is not None:
            continue
        arrival = w.get("arrival", {})
        if "rate_per_s" in arrival:
            out.append(("workloads", name, "arrival", "rate_per_s"))
        for i, _ in enumerate(arrival.get("stages", [])):
            out.append(("workloads", name, "arrival", "stages", i, "rate_per_s"))
    return out


def _requests_from_rates(tree: dict[str, Any], stages_only: bool = False) -> float:
    """The arrivals the rates alone make, by hand: rate x horizon_s, or rate x duration_s."""
    n = 0.0
    for path in _rate_paths(tree):
        rate = _get(tree, path)
        if path[-2] == "arrival":
            n += 0 if stages_only else rate * tree["horizon_s"]
        else:
            n += rate * _get(tree, path[:-1])["duration_s"]
    return n


def estimate(folder: Path, tree: dict[str, Any]) -> tuple[float, float]:
    """(requests, tokens) stacksim estimates for ``tree`` (it must load)."""
    path = _write(folder, yaml.safe_dump(tree, sort_keys=False).encode(), "estimate.yaml")
    size = load_scenario(path).size
    assert size is not None
    return size.requests, size.tokens


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_a_run_past_its_limits_is_refused(folder: Path, data: st.DataObject, no_simulation: None) -> None:
    """Rates or horizon raised, or limits lowered, past what the file allows: validate and run both
    refuse it with exit 2 and a message naming the limit, and the run writes nothing."""
    base = data.draw(st.sampled_from(RUN_BASES), label="base")
    tree = _force_small(_base(base).tree)
    est = estimate(folder, tree)
    how = data.draw(st.sampled_from(["rates", "horizon", "max_requests", "max_tokens"]), label="how")
    limit_field = "max_tokens" if how == "max_tokens" else "max_requests"
    want = 10 * 10_000_000  # past the default limit of 10^7 requests, ten times over
    if how == "rates" and _requests_from_rates(tree) > 0:
        factor = want / _requests_from_rates(tree) * data.draw(st.sampled_from([1, 7, 1000]))
        for path in _rate_paths(tree):
            _get(tree, path[:-1])[path[-1]] = _get(tree, path) * factor
    elif how == "horizon" and _requests_from_rates(tree) > _requests_from_rates(tree, stages_only=True):
        per_s = (_requests_from_rates(tree) - _requests_from_rates(tree, stages_only=True)) / HORIZON_S
        tree["horizon_s"] = want / per_s * data.draw(st.sampled_from([1, 3, 50]))
    else:  # a limit lowered below the estimate
        total = est[1] if limit_field == "max_tokens" else est[0]
        share = data.draw(st.sampled_from([0.0, 0.01, 0.5, 0.9]), label="share")
        assert total >= 2, (base, est)
        tree["limits"] = {limit_field: max(1, math.floor(total * share))}
    event(f"{how} -> limits.{limit_field}" if "limits" in tree else how)
    path = _write(folder, yaml.safe_dump(tree, sort_keys=False).encode())
    out_dir = folder / "refused"
    for args in (["validate", str(path)], ["run", str(path), "--no-plots", "--out", str(out_dir)]):
        code, out, err = invoke(args)
        check_outcome(code, out, err, path, (base.name, how, tree.get("limits"), tree["horizon_s"]))
        assert code == 2, f"{base.name} with {how} raised past its limits was not refused:\n{out}"
        if how in ("max_requests", "max_tokens"):
            assert f"limits.{limit_field}" in err, err
        else:  # more requests means more tokens too: either limit may be the one named
            assert "limits.max_requests" in err or "limits.max_tokens" in err, err
    assert not out_dir.exists()


def _within(arrived: int, limit: int) -> bool:
    """Whether ``arrived`` keeps to ``limit`` set at or above the run's estimate, allowing what
    chance adds (Poisson noise, agents' random step counts): 25% and 50 requests."""
    return arrived <= 1.25 * limit + 50


@pytest.mark.parametrize("arrival", ARRIVALS[:-3] + ARRIVALS[-2:], ids=lambda a: "-".join(
    f"{v}" for k, v in a.items() if k in ("kind", "think_time_s")))
def test_every_arrival_kind_stays_within_its_limits(folder: Path, arrival: dict[str, Any]) -> None:
    """limits.max_requests set just above the run's own estimate: the run simulates no more."""
    tree = _force_small(_base(SCENARIOS / "quickstart.yaml").tree)
    tree["workloads"]["chat"]["arrival"] = dict(arrival)
    tree["workloads"]["chat"]["input_tokens"] = {"kind": "fixed", "value": 100}
    tree["workloads"]["chat"]["output_tokens"] = {"kind": "fixed", "value": 10}
    if arrival["kind"] == "offline":
        tree["workloads"]["chat"]["max_requests"] = 40
    limit = math.ceil(estimate(folder, tree)[0]) + 1
    tree["limits"] = {"max_requests": limit}
    path = _write(folder, yaml.safe_dump(tree, sort_keys=False).encode(), "limited.yaml")
    out_dir = folder / f"limited-{arrival['kind']}-{len(arrival)}"
    code, out, err = invoke(["run", str(path), "--no-plots", "--out", str(out_dir)])
    check_outcome(code, out, err, path, arrival)
    assert code == 0, err
    arrived = json.loads((out_dir / "summary.json").read_text())["requests"]["arrived"]
    assert _within(arrived, limit), (
        f"limits.max_requests is {limit} (the estimate, rounded up, plus one) but the run "
        f"simulated {arrived:,} requests")


# --------------------------------------------------------------------------- subprocesses: runs and memory


@pytest.mark.parametrize("hostile", ["alias-bomb", "many-values", "deep-nesting", "huge-file"])
def test_hostile_validate_in_a_subprocess_stays_small(folder: Path, hostile: str) -> None:
    """The real entry point, refusing a file built to eat memory, peaks well under 2 GB."""
    quickstart = _base(SCENARIOS / "quickstart.yaml").text
    extra = {
        "alias-bomb": ALIAS_BOMB,
        "many-values": AT_TOP[2],
        "deep-nesting": AT_TOP[3],
        "huge-file": "x-pad: [" + ",".join(["123456789"] * 520_000) + "]\n",  # just under 5 MiB
    }[hostile]
    path = _write(folder, (extra + quickstart).encode(), f"{hostile}.yaml")
    proc = run_subprocess(["validate", str(path)])
    check_outcome(proc.code, proc.stdout, proc.stderr, path, hostile)
    assert proc.code == 2
    assert proc.max_rss < MAX_RSS, f"peak RSS {proc.max_rss / GIB:.2f} GiB"


@settings(FUZZ, max_examples=8)
@given(data=st.data())
def test_short_runs_of_mutated_scenarios(folder: Path, data: st.DataObject) -> None:
    """A forced-short run of a bundled scenario with up to two mutations, as the real command
    (`stacksim run FILE --no-plots --out DIR`): exit 0 or 2, one message, under 2 GB, and a run
    that starts simulates no more requests than limits.max_requests (set from its own estimate)."""
    base = data.draw(st.sampled_from(RUN_BASES), label="base")
    tree = _force_small(_base(base).tree)
    done = [data.draw(tree_mutation(tree)) for _ in range(data.draw(st.integers(0, 2), label="n"))]
    depth = data.draw(st.sampled_from([3, 300]))
    limit = None
    try:
        size = load_scenario(_write(folder, _dump(tree, depth), "estimate.yaml")).size
    except StackSimError:
        pass  # refused: the run must refuse it too
    else:
        assert size is not None
        limit = math.ceil(size.requests * data.draw(st.sampled_from([1.0, 2.0]))) + 1
        tree["limits"] = {"max_requests": limit}
    text = _dump(tree, depth)
    run_no = len(list(folder.glob("run-*.yaml")))
    path = _write(folder, text, f"run-{run_no}.yaml")
    out_dir = folder / f"out-{run_no}"
    proc = run_subprocess(["run", str(path), "--no-plots", "--out", str(out_dir)])
    what = (base.name, done, limit)
    event(f"exit {proc.code}")
    check_outcome(proc.code, proc.stdout, proc.stderr, path, what)
    assert proc.max_rss < MAX_RSS, f"peak RSS {proc.max_rss / GIB:.2f} GiB: {what}"
    if proc.code == 2:
        assert not out_dir.exists(), what
        return
    arrived = json.loads((out_dir / "summary.json").read_text())["requests"]["arrived"]
    assert limit is not None and _within(arrived, limit), (what, arrived)
