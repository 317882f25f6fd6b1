"""Bad input never produces a traceback: exit code 2 and one message naming file, line and field.

Each bad scenario is the bundled quickstart with one targeted edit, so the line the message must
name is the line the edit lands on (computed from the edited text, not hard-coded).

The CLI is run for real (a subprocess) for a few cases and through ``typer.testing.CliRunner`` for
the rest. With click >= 8.2 ``CliRunner`` has no ``mix_stderr`` argument; ``result.stderr`` and
``result.stdout`` are always captured separately, which is what these tests rely on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

import stacksim
from stacksim.catalog import get_accelerator, get_model
from stacksim.cli import app
from stacksim.errors import StackSimError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_PATH = REPO / "scenarios" / "quickstart.yaml"
QUICKSTART = QUICKSTART_PATH.read_text(encoding="utf-8")

# The memory figures the "does not fit" message must quote, derived from the catalog.
_405B = get_model("llama-3.1-405b")
_H100 = get_accelerator("h100-sxm")
WEIGHTS_GIB = f"{_405B.params_total_b * 1e9 * 2 / 2**30:.1f} GiB"  # bf16: 2 bytes per parameter
USABLE_GIB = f"{_H100.memory_gb * 0.9:.1f} GiB"  # default gpu_memory_utilization 0.9

# Rich colours output when FORCE_COLOR is set (some CI runners set it); compare plain text.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Bad:
    """One bad scenario: how to build it and what the error must say."""

    id: str
    edits: tuple[tuple[str, str], ...] = ()  # (old, new) on the quickstart; old must occur once
    raw: str | None = None  # whole file text instead of edits
    files: dict[str, str] = field(default_factory=dict)  # extra files next to the scenario
    missing: bool = False  # do not write the scenario at all
    # (text on the expected line, a line above it to search from, or None)
    line_at: tuple[str, str | None] | None = None
    fld: str | None = None  # the dotted field path the message must name
    fragments: tuple[str, ...] = ()  # further text the message must contain


AZURE_NO_OUTPUT = (
    "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n2023-11-16 18:15:50.9951690,396\n"
)
MOONCAKE_NO_OUTPUT = (
    '{"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1]}\n'
    '{"timestamp": 27, "input_length": 7322, "hash_ids": [0, 2]}\n'
)

CASES: list[Bad] = [
    Bad(
        "malformed-yaml",
        edits=(("    region: us-east\n", "    region: us-east: oops\n"),),
        line_at=("region: us-east: oops", None),
        fld="pools.h100.region",  # a syntax error names the field its line belongs to (#23)
        fragments=("malformed YAML",),
    ),
    Bad(
        "unknown-key",
        edits=(("    region: us-east\n", "    regoin: us-east\n"),),
        line_at=("regoin:", None),
        fld="pools.h100.regoin",
        fragments=("unknown key 'regoin'", "accelerator, count, region, purchase, price_usd_per_gpu_hour"),
    ),
    Bad(
        "wrong-type",
        edits=(("    replicas: 4\n", "    replicas: four\n"),),
        line_at=("replicas: four", None),
        fld="deployments.chat.replicas",
        fragments=("integer", "'four'"),
    ),
    Bad(
        "negative-count",
        edits=(("    count: 4\n", "    count: -4\n"),),
        line_at=("count: -4", None),
        fld="pools.h100.count",
        fragments=("greater than or equal to 1", "-4"),
    ),
    Bad(
        "unknown-accelerator",
        edits=(("accelerator: h100-sxm", "accelerator: h100-sx"),),
        line_at=("accelerator: h100-sx", None),
        fld="pools.h100.accelerator",
        fragments=("unknown accelerator id 'h100-sx'", "Did you mean: h100-sxm"),
    ),
    Bad(
        "unknown-model",
        edits=(("model: llama-3.1-8b", "model: lama-3.1-70b"),),
        line_at=("model: lama-3.1-70b", None),
        fld="deployments.chat.model",
        fragments=("'lama-3.1-70b'", "Did you mean: llama-3.1-70b"),
    ),
    Bad(
        "model-does-not-fit",
        edits=(
            ("model: llama-3.1-8b", "model: llama-3.1-405b"),
            ("    count: 4\n", "    count: 1\n"),
            ("    replicas: 4\n", "    replicas: 1\n"),
        ),
        line_at=("  chat:", "deployments:"),  # the deployment as a whole is what does not fit
        fld="deployments.chat",
        fragments=("does not fit", "llama-3.1-405b", "h100-sxm", WEIGHTS_GIB, USABLE_GIB),
    ),
    Bad(
        "azure-trace-missing-column",
        edits=(("{kind: poisson, rate_per_s: 20}", "{kind: trace, path: no_output.csv}"),),
        files={"no_output.csv": AZURE_NO_OUTPUT},
        line_at=("kind: trace", None),
        fld="workloads.chat.arrival.path",
        fragments=("no_output.csv", "no column 'GeneratedTokens'"),
    ),
    Bad(
        "mooncake-trace-missing-key",
        edits=(("{kind: poisson, rate_per_s: 20}", "{kind: trace, path: no_output.jsonl}"),),
        files={"no_output.jsonl": MOONCAKE_NO_OUTPUT},
        line_at=("kind: trace", None),
        fld="workloads.chat.arrival.path",
        fragments=("no_output.jsonl', line 2", "missing key 'output_length'"),
    ),
    Bad(
        "unknown-arrival-kind",
        edits=(("kind: poisson", "kind: poison"),),
        line_at=("kind: poison", None),
        fld="workloads.chat.arrival.kind",
        fragments=("'poison'", "'poisson'", "'gamma'", "'deterministic'", "'trace'"),
    ),
    Bad(
        "warmup-not-below-horizon",
        edits=(("warmup_s: 60\n", "warmup_s: 600\n"),),
        line_at=("warmup_s: 600", None),
        fld="warmup_s",
        fragments=("less than horizon_s",),
    ),
    Bad(
        "deployment-pool-missing",
        edits=(("    pool: h100\n", "    pool: h200\n"),),
        line_at=("pool: h200", None),
        fld="deployments.chat.pool",
        fragments=("no pool named 'h200'", "h100"),
    ),
    Bad(
        "pool-too-small",
        edits=(("    count: 4\n", "    count: 3\n"),),
        line_at=("count: 3", None),
        fld="pools.h100.count",
        fragments=("need 4 accelerators", "has 3"),
    ),
    Bad(
        "tensor-parallel-not-dividing-heads",
        edits=(("tensor_parallel: 1", "tensor_parallel: 3"),),
        line_at=("tensor_parallel: 3", None),
        fld="deployments.chat.tensor_parallel",
        fragments=("32 attention heads", "valid: 1, 2, 4, 8, 16, 32"),
    ),
    Bad("file-not-found", missing=True, fragments=("file not found",)),
    Bad("empty-file", raw="", line_at=("", None), fragments=("the file is empty",)),
    Bad(
        "yaml-list",
        raw="- pools\n- deployments\n",
        line_at=("- pools", None),
        fragments=("YAML mapping",),
    ),
]

# Bad inputs that once slipped through (fixed; kept as regression tests). Validate only.
KNOWN_BUGS: list[object] = [
    pytest.param(
        Bad(
            "duplicate-key",
            edits=(("    count: 4\n", "    count: 4\n    count: 5\n"),),
            line_at=("count: 5", None),
            fld="pools.h100.count",
            fragments=("duplicate key 'count'",),
        ),
        id="duplicate-key",
    ),
    pytest.param(
        Bad(
            "rich-markup-closing-tag-in-value",
            edits=(("accelerator: h100-sxm", "accelerator: '[/x]'"),),
            line_at=("accelerator: '[/x]'", None),
            fld="pools.h100.accelerator",
            fragments=("unknown accelerator id '[/x]'",),
        ),
        id="rich-markup-closing-tag-in-value",
    ),
    pytest.param(
        Bad(
            "rich-markup-tag-in-value",
            edits=(("accelerator: h100-sxm", "accelerator: '[bold]h100'"),),
            line_at=("accelerator: '[bold]h100'", None),
            fld="pools.h100.accelerator",
            fragments=("unknown accelerator id '[bold]h100'",),
        ),
        id="rich-markup-tag-in-value",
    ),
    pytest.param(
        Bad(
            "infinite-horizon",
            edits=(("horizon_s: 600\n", "horizon_s: .inf\n"),),
            line_at=("horizon_s: .inf", None),
            fld="horizon_s",
        ),
        id="infinite-horizon",
    ),
]


def _line_no(text: str, marker: str, anchor: str | None) -> int:
    """1-based number of the first line containing ``marker`` (after the ``anchor`` line, if given)."""
    lines = text.splitlines() or [""]
    start = 0
    if anchor is not None:
        start = next(i for i, ln in enumerate(lines) if anchor in ln) + 1
    return next(i for i, ln in enumerate(lines) if i >= start and marker in ln) + 1


def build(case: Bad, tmp_path: Path) -> tuple[Path, str]:
    """Write the bad scenario (and any files it names) into ``tmp_path``; return it and the message prefix."""
    for name, content in case.files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    path = tmp_path / "bad.yaml"
    if case.missing:
        return path, f"{path}: "
    text = QUICKSTART if case.raw is None else case.raw
    for old, new in case.edits:
        assert text.count(old) == 1, (
            f"the edit target {old!r} must occur exactly once in the quickstart"
        )
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    prefix = str(path)
    if case.line_at is not None:
        prefix += f", line {_line_no(text, *case.line_at)}"
    if case.fld is not None:
        prefix += f", field '{case.fld}'"
    return path, prefix + ": "


def check_one_message(stderr: str, stdout: str, case: Bad, prefix: str) -> None:
    """Exactly one error line on stderr, naming file, line and field; nothing else anywhere."""
    stderr, stdout = ANSI.sub("", stderr), ANSI.sub("", stdout)
    assert "Traceback" not in stderr + stdout
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one message line, got:\n{stderr}"
    msg = lines[0]
    assert msg.startswith("error: "), msg
    assert prefix in msg, f"expected {prefix!r} in:\n{msg}"
    for frag in case.fragments:
        assert frag in msg, f"expected {frag!r} in:\n{msg}"
    assert stdout.strip() == "", f"nothing should go to stdout on bad input, got:\n{stdout}"


runner = CliRunner()


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_scenario_exits_2_with_one_message(case: Bad, command: str, tmp_path: Path) -> None:
    """`validate` and `run` reject the bad file with exit 2 and one message at the right line and field."""
    path, prefix = build(case, tmp_path)
    out_dir = tmp_path / "out"
    args = [command, str(path)] + (["--out", str(out_dir)] if command == "run" else [])
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    check_one_message(result.stderr, result.stdout, case, prefix)
    assert not out_dir.exists(), "a rejected run must not write results"


@pytest.mark.parametrize("case", KNOWN_BUGS)
def test_bad_scenario_known_bugs(case: Bad, tmp_path: Path) -> None:
    """Further bad inputs that should also end in exit 2 and one message naming file, line and field."""
    path, prefix = build(case, tmp_path)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    check_one_message(result.stderr, result.stdout, case, prefix)


SUBPROCESS_CASES = [c for c in CASES if c.id in ("unknown-key", "malformed-yaml")]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_real_cli_process_exits_2_without_traceback(case: Bad, tmp_path: Path) -> None:
    """The installed entry point, run as a separate process, behaves like the in-process CLI."""
    path, prefix = build(case, tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("STACKSIM_DEBUG", "FORCE_COLOR")}
    proc = subprocess.run(
        [sys.executable, "-m", "stacksim.cli", "validate", str(path)],
        cwd=REPO,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    check_one_message(proc.stderr, proc.stdout, case, prefix)


def test_run_rejects_negative_seed(tmp_path: Path) -> None:
    """`stacksim run --seed -1` on a good scenario exits 2 with one message and runs nothing."""
    out_dir = tmp_path / "out"
    result = runner.invoke(
        app, ["run", str(QUICKSTART_PATH), "--seed", "-1", "--out", str(out_dir)]
    )
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [ln for ln in ANSI.sub("", result.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "--seed" in lines[0] and "-1" in lines[0]
    assert not out_dir.exists()


def test_python_api_raises_scenario_error_with_problems(tmp_path: Path) -> None:
    """`stacksim.load_scenario` raises ScenarioError (a StackSimError) whose problems carry field and line."""
    case = next(c for c in CASES if c.id == "unknown-key")
    path, _ = build(case, tmp_path)
    with pytest.raises(stacksim.ScenarioError) as info:
        stacksim.load_scenario(path)
    err = info.value
    assert isinstance(err, StackSimError)
    assert err.file == str(path)
    assert len(err.problems) == 1
    problem = err.problems[0]
    assert problem.field == "pools.h100.regoin"
    assert problem.line == _line_no(path.read_text(encoding="utf-8"), "regoin:", None)
    assert "region" in problem.message
    assert str(err).startswith(f"{path}, line {problem.line}, field 'pools.h100.regoin': ")


def test_unwritable_output_folder_exits_2(tmp_path: Path) -> None:
    """An --out path that cannot be a folder (it is a file) is bad input too: exit 2, one line."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = runner.invoke(app, ["run", str(QUICKSTART_PATH), "--out", str(blocker / "run"), "--no-plots"])
    assert result.exit_code == 2
    assert "cannot write the results" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
