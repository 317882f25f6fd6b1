"""Hostile and huge inputs (#23): every one ends in exit code 2 and one message naming the file, the
line and the field, quickly and without a traceback, a hang, a crash or a silent default.

Each test builds its bad input from a bundled file with one targeted edit and runs the CLI in
process (``typer.testing.CliRunner``), as tests/test_bad_input.py does. Inputs that would be huge if
read whole (an alias bomb, /dev/zero) are built small and rely on the bound to stop them early.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.text import Text
from typer.testing import CliRunner

from stacksim.cli import _HIGHLIGHT_MAX_CHARS, _BoundedHighlighter, app
from stacksim.errors import ScenarioError
from stacksim.scenario import DESCRIBED_ERRORS, load_scenario, load_scenario_text, yamlio
from stacksim.scenario.schema import LognormalLength
from stacksim.scenario.yamlio import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    flow_yaml,
    load_yaml_with_lines,
)
from stacksim.workload.lengths import lognormal

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
QUICKSTART = (SCENARIOS / "quickstart.yaml").read_text(encoding="utf-8")
AGENTS = (SCENARIOS / "agents-2026.yaml").read_text(encoding="utf-8")
PORTKEY = (SCENARIOS / "starting-fresh-portkey-2026.yaml").read_text(encoding="utf-8")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BIG = 2**63  # the value testers reach for: one past int64

runner = CliRunner()


def edit(text: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert text.count(old) == 1, f"the edit target {old!r} must occur exactly once"
        text = text.replace(old, new)
    return text


def write(tmp: Path, text: str | bytes, name: str = "bad.yaml") -> Path:
    p = tmp / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def line_no(text: str, marker: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), start=1) if marker in ln)


def fails(args: list[str], *fragments: str, max_len: int = 2000) -> str:
    """Run the CLI; it must exit 2 with one short `error:` message containing every fragment."""
    res = runner.invoke(app, [str(a) for a in args])
    out = ANSI.sub("", res.stderr + res.stdout)
    assert res.exit_code == 2, (res.exit_code, out[-2000:], res.exception)
    assert "Traceback" not in out and "internal error" not in out
    assert out.count("error:") == 1, out[-2000:]
    msg = out[out.index("error:"):]
    for frag in fragments:
        assert frag in msg, f"expected {frag!r} in:\n{msg[:3000]}"
    assert len(msg) < max_len, f"the message is {len(msg):,} characters long"
    return msg


def where(path: Path, line: int | None = None, fld: str | None = None) -> str:
    """The prefix a message starts with: file, line, field."""
    out = str(path)
    if line is not None:
        out += f", line {line}"
    if fld is not None:
        out += f", field '{fld}'"
    return out + ": "


# --------------------------------------------------------------------------- memory and time


def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """9 levels of 9 aliases (387 million values once expanded) stop at MAX_NODES, nothing built."""
    rows = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    text = edit(QUICKSTART, ("pools:\n", "x:\n" + "\n".join(rows) + "\npools:\n"))
    path = write(tmp_path, text)
    fails(["validate", path], str(path), f"more than {MAX_NODES:,} values", "aliases count at every use")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    text = edit(QUICKSTART, ("pools:\n", "x: &r [1, *r]\npools:\n"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "x: &r"), "x[1]"), "refers to a node that contains it")


def test_too_many_values_without_aliases(tmp_path: Path) -> None:
    """A file just past MAX_NODES plain values (a 4.9 MB scenario's worth) is refused by the count."""
    text = edit(QUICKSTART, ("pools:\n", "x: [" + ",".join(["1"] * (MAX_NODES + 1)) + "]\npools:\n"))
    path = write(tmp_path, text)
    fails(["validate", path], f"more than {MAX_NODES:,} values")


def test_many_schema_errors_are_counted_not_all_described(tmp_path: Path) -> None:
    """Thousands of bad keys: the first few are described, all are counted."""
    pools = "".join(f"  p{i}:\n    accelerator: h100-sxm\n    cuont: 4\n" for i in range(2000))
    path = write(tmp_path, edit(QUICKSTART, ("pools:\n", "pools:\n" + pools)))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert len(info.value.problems) == 4000  # per pool: 'count' missing and 'cuont' unknown
    assert "unknown key 'cuont'" in str(info.value) and "more problem(s)" in str(info.value)
    assert info.value.problems[DESCRIBED_ERRORS].line is None  # past the described ones: counted only


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
@pytest.mark.parametrize("command", ["validate", "run"])
def test_dev_zero_is_refused_without_reading(command: str) -> None:
    fails([command, "/dev/zero"], "/dev/zero: not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    fails(["validate", fifo], f"{fifo}: not a regular file")


def test_file_over_the_cap_is_refused_reading_one_byte_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as fh:  # sparse: the size without writing it
        fh.truncate(4 * MAX_FILE_BYTES)
    reads: list[int] = []
    real_fdopen = os.fdopen

    class Counting:
        def __init__(self, fh):  # type: ignore[no-untyped-def]
            self.fh = fh

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *a: object) -> None:
            self.fh.close()

        def fileno(self) -> int:
            return int(self.fh.fileno())

        def read(self, n: int = -1) -> bytes:
            reads.append(n)
            return bytes(self.fh.read(n))

    monkeypatch.setattr(yamlio.os, "fdopen", lambda fd, mode: Counting(real_fdopen(fd, mode)))
    fails(["validate", path], f"{path}: larger than 5 MiB")
    assert reads == [MAX_FILE_BYTES + 1]


def test_long_tag_value_is_refused(tmp_path: Path) -> None:
    """A 200,000-character tag crashed the run (pandas/pyarrow std::bad_alloc in the spend split)."""
    text = edit(QUICKSTART, ("tenant: internal", "tenant: " + "x" * 200_000))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "tags:"), "workloads.chat.tags.tenant"),
          "at most 200 characters", "200,002 characters")


def test_long_scenario_name_is_refused(tmp_path: Path) -> None:
    """A 200,000-character name ran, then hung in Rich's highlighter when printed."""
    text = edit(QUICKSTART, ("name: quickstart", "name: " + "n" * 200_000))
    path = write(tmp_path, text)
    fails(["run", path, "--out", tmp_path / "o"], where(path, 5, "name"), "at most 200 characters")
    assert not (tmp_path / "o").exists()


def test_long_free_text_is_refused(tmp_path: Path) -> None:
    text = edit(QUICKSTART, ("description: One", "description: " + "d" * 5000 + " One"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, 6, "description"), "at most 4096 characters")


def test_printing_never_highlights_huge_text() -> None:
    """Rich's repr highlighter runs only on text up to _HIGHLIGHT_MAX_CHARS (it hung on 200,000)."""
    h = _BoundedHighlighter()
    short, long = Text("cost 12 at 'x'"), Text("cost 12 at 'x' " + "y" * (_HIGHLIGHT_MAX_CHARS + 1))
    h.highlight(short)
    h.highlight(long)
    assert short.spans and not long.spans


# --------------------------------------------------------------------------- exit 2, not 1


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b"])
def test_control_character_in_the_file(tmp_path: Path, char: str) -> None:
    text = edit(QUICKSTART, ("name: quickstart", f"name: quick{char}start"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, 5, "name"), f"U+{ord(char):04X}")


def test_control_character_written_as_an_escape(tmp_path: Path) -> None:
    text = edit(QUICKSTART, ("name: quickstart", 'name: "quick\\0start"'))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, 5, "name"), "control character (U+0000)")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 10, 1000])
def test_deep_nesting(tmp_path: Path, depth: int) -> None:
    text = edit(QUICKSTART, ("description: One", "x: " + "[" * depth + "]" * depth + "\ndescription: One"))
    path = write(tmp_path, text)
    msg = fails(["validate", path], f"{path}, line {line_no(text, 'x: [[')}, field 'x")
    assert f"nested deeper than {MAX_DEPTH} levels" in msg or "maximum nesting depth" in msg


def test_deep_nesting_with_the_pure_python_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml the bound still stops it (no RecursionError)."""
    monkeypatch.setattr(yamlio, "_Loader", yaml.SafeLoader)
    with pytest.raises(ScenarioError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load_yaml_with_lines("x: " + "[" * 1000 + "]" * 1000 + "\n", "f.yaml")


LONG = "a" * 200_000


@pytest.mark.parametrize("command", ["validate", "run", "sweep", "optimize", "mix"])
def test_path_too_long(command: str) -> None:
    fails([command, LONG], "File name too long", "(a 200,000-character path)")


def test_output_path_too_long(tmp_path: Path) -> None:
    short = write(tmp_path, edit(QUICKSTART, ("horizon_s: 600", "horizon_s: 5"), ("warmup_s: 60", "warmup_s: 1")))
    fails(["run", short, "--no-plots", "--out", "/tmp/" + LONG], "cannot write the results", "File name too long")
    sweep = write(tmp_path, f"base: {short}\nparameters:\n  pools.h100.count: [4]\n", "sweep.yaml")
    fails(["sweep", sweep, "--out", "/tmp/" + LONG], "cannot write the results", "File name too long")
    fails(["sweep", "report", "/tmp/" + LONG], "cannot read the results folder", "File name too long")


def test_not_utf8_scenario(tmp_path: Path) -> None:
    text = edit(QUICKSTART, ("One Llama", "One Llama caf\u00e9"))
    path = write(tmp_path, text.encode("latin-1"))
    fails(["validate", path], where(path, 6), "not UTF-8 text (byte 0xe9")


@pytest.mark.parametrize("command", ["sweep", "optimize", "mix"])
def test_not_utf8_sweep_optimize_mix(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, b"base: x.yaml\n\xff\xfe: 1\n")
    fails([command, path], where(path, 2), "not UTF-8 text")


def test_huge_tool_latency(tmp_path: Path) -> None:
    """p95_ms: 1e308 overflowed the lognormal at run time; latencies are under a day."""
    text = edit(AGENTS, ("p95_ms: 1067}", "p95_ms: 1.0e+308}"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "1.0e+308"), "tools.read.latency.p95_ms"),
          "more than a day", "86,400,000 ms")


@pytest.mark.parametrize(("old", "new", "fld"), [
    ("ttft_ms: 500", f"ttft_ms: {BIG}", "slo.ttft_ms"),
    ("lookup: {median_ms: 1.0, p95_ms: 3.0}", "lookup: {median_ms: 1.0e+9, p95_ms: 3.0e+9}",
     "gateway.cache_model.lookup.median_ms"),
])
def test_latencies_have_a_range_everywhere(tmp_path: Path, old: str, new: str, fld: str) -> None:
    base = QUICKSTART if old in QUICKSTART else PORTKEY.replace(" configs/portkey", f" {SCENARIOS}/configs/portkey")
    text = edit(base, (old, new))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, new.split(":")[0].strip()), fld), "more than a day")


def test_huge_timeout_in_seconds(tmp_path: Path) -> None:
    text = edit(AGENTS, ("    timeout: 120\n", "    timeout: 1.0e+308\n"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "timeout: 1.0e+308"), "gateway.router_settings.timeout"),
          "under a day")


# --------------------------------------------------------------------------- sweeps, optimize, mix


def _sweep(tmp: Path, body: str) -> Path:
    return write(tmp, f"base: {SCENARIOS / 'quickstart.yaml'}\n{body}", "sweep.yaml")


def test_sweep_empty_seed_list(tmp_path: Path) -> None:
    path = _sweep(tmp_path, "seeds: []\nparameters:\n  pools.h100.count: [4]\n")
    fails(["sweep", path, "--out", tmp_path / "o"], where(path, 2, "seeds"), "an empty list runs nothing")


def test_sweep_negative_and_repeated_seeds(tmp_path: Path) -> None:
    path = _sweep(tmp_path, "seeds: [1, -1]\nparameters:\n  pools.h100.count: [4]\n")
    fails(["sweep", path, "--out", tmp_path / "o"], where(path, 2, "seeds"), "a seed is >= 0; got -1")
    path = _sweep(tmp_path, "seeds: [3, 3]\nparameters:\n  pools.h100.count: [4]\n")
    fails(["sweep", path, "--out", tmp_path / "o"], where(path, 2, "seeds"), "listed twice")


def test_sweep_parameter_of_mixed_types(tmp_path: Path) -> None:
    """Text and numbers in one parameter broke the Parquet column (ArrowTypeError)."""
    path = _sweep(tmp_path, "seeds: 1\nparameters:\n  pools.h100.accelerator: [h100-sxm, 5]\n")
    fails(["sweep", path, "--out", tmp_path / "o"], where(path, 4, "parameters.pools.h100.accelerator"),
          "values of different types", "text 'h100-sxm'", "number 5")
    assert not (tmp_path / "o" / "runs").exists()


def test_sweep_report_on_a_damaged_part(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    part = tmp_path / "runs" / "part-00000.parquet"
    part.write_bytes(b"not parquet")
    fails(["sweep", "report", tmp_path], f"{part}: not a readable Parquet part", "run the sweep again")


def test_sweep_resume_on_a_damaged_part(tmp_path: Path) -> None:
    """A resume reads the stored parts first: a damaged one is named, as `sweep report` does."""
    path = _sweep(tmp_path, "seeds: 1\nparameters:\n  pools.h100.count: [4]\n")
    (tmp_path / "o" / "runs").mkdir(parents=True)
    part = tmp_path / "o" / "runs" / "part-00000.parquet"
    part.write_bytes(b"not parquet")
    fails(["sweep", path, "--out", tmp_path / "o"], f"{part}: not a readable Parquet part", "run the sweep again")


@pytest.mark.parametrize("rng", ["[-10, -1]", "[80, 5]", "[0, 5]"])
def test_optimize_capacity_range(tmp_path: Path, rng: str) -> None:
    path = write(tmp_path, f"base: {SCENARIOS / 'quickstart.yaml'}\nknobs:\n  pools.h100.count: [4]\n"
                           f"constraints: {{ttft_p99_ms: 500}}\n"
                           f"capacity: {{path: workloads.chat.arrival.rate_per_s, range: {rng}}}\n", "opt.yaml")
    fails(["optimize", path, "--out", tmp_path / "o"], where(path, 5, "capacity.range"), "0 < low < high")


@pytest.mark.parametrize(("key", "value", "frag"), [
    ("input_edges", "[1000, 10, -5]", "increasing order"),
    ("output_edges", "[0, 10]", "token counts >= 1"),
    ("rates", "[1, -2]", "rates must be > 0"),
])
def test_mix_ranges(tmp_path: Path, key: str, value: str, frag: str) -> None:
    path = write(tmp_path, f"base: {SCENARIOS / 'papers' / 'melange-fleet.yaml'}\ndeployment: short\n"
                           f"accelerators: {{h100-sxm: null}}\nrates: [1]\n{key}: {value}\n".replace("rates: [1]\nrates", "rates"),
                 "mix.yaml")
    fails(["mix", path, "--out", tmp_path / "o"], where(path, line_no(path.read_text(), f"{key}:"), key), frag)


# --------------------------------------------------------------------------- syntax errors name the field


@pytest.mark.parametrize(("old", "new", "marker", "fld", "frag"), [
    ("    count: 4\n", "\tcount: 4\n", "\tcount", "pools.h100", "malformed YAML"),
    ("{kind: poisson, rate_per_s: 20}", "{kind: poisson, rate_per_s: 20", "input_tokens:", "workloads.chat.arrival",
     "malformed YAML"),
    ("    count: 4\n", "    ? [a, b]\n    : 4\n", "? [a, b]", "pools.h100", "a mapping key must be a plain value"),
    ("pools:\n  h100:\n    accelerator: h100-sxm\n    count: 4\n",
     "x-pool: &p {count: 4}\npools:\n  h100:\n    accelerator: h100-sxm\n    <<: *p\n", "<<: *p", "pools.h100",
     "merge keys ('<<') are not supported"),
])
def test_syntax_errors_name_the_field(tmp_path: Path, old: str, new: str, marker: str, fld: str, frag: str) -> None:
    text = edit(QUICKSTART, (old, new))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, marker), fld), frag)


# --------------------------------------------------------------------------- physical ranges


def test_pool_of_2_pow_63_accelerators(tmp_path: Path) -> None:
    text = edit(QUICKSTART, ("    count: 4\n", f"    count: {BIG}\n"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, 14, "pools.h100.count"), "less than or equal to 1000000",
          "largest GPU cluster")


@pytest.mark.parametrize("code", [BIG, 99, 600])
def test_retry_on_an_impossible_http_status(tmp_path: Path, code: int) -> None:
    text = edit(PORTKEY, (" configs/portkey", f" {SCENARIOS}/configs/portkey"),
                ("on_status_codes: [429]", f"on_status_codes: [{code}]"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "on_status_codes"), "gateway.configs.bulk.targets[0].retry.on_status_codes"),
          "not an HTTP status code; valid: 100 to 599")


def test_tool_p95_of_2_pow_63_ms(tmp_path: Path) -> None:
    text = edit(AGENTS, ("p95_ms: 1067}", f"p95_ms: {BIG}}}"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, str(BIG)), "tools.read.latency.p95_ms"), "more than a day")


def test_any_number_past_1e15_is_refused(tmp_path: Path) -> None:
    text = edit(QUICKSTART, ("rate_per_s: 20}", f"rate_per_s: {BIG}}}"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, str(BIG)), "workloads.chat.arrival.rate_per_s"))


def test_predict_qps_out_of_range() -> None:
    fails(["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--qps", "1e308"], "--qps", "out of range")


def test_predict_scenario_numbers_read_back_as_numbers() -> None:
    """JSON's 1e-05 is a string to YAML 1.1: a valid --qps 0.00001 was 'not a valid number'."""
    for v in (1e-05, 1e16, 0.5, 3):
        data, _ = load_yaml_with_lines(f"x: {flow_yaml({'rate_per_s': v})}\n")
        assert data == {"x": {"rate_per_s": v}}


# --------------------------------------------------------------------------- validate checks what run checks


def test_lognormal_that_almost_never_fits_its_bounds(tmp_path: Path) -> None:
    text = edit(QUICKSTART, ("{kind: lognormal, median: 1020, sigma: 0.77, max: 16000}",
                             "{kind: lognormal, median: 1020, sigma: 0.1, max: 500}"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "sigma: 0.1"), "workloads.chat.input_tokens"),
          "almost never falls in [1, 500]")


def _naive_lognormal(spec: LognormalLength, rng: np.random.Generator, n: int) -> np.ndarray:
    """The sampler before #23: redraw up to 64 times, then give up."""
    mu, hi = np.log(spec.median), spec.max if spec.max is not None else np.iinfo(np.int64).max // 4
    out, todo = np.empty(n, dtype=np.int64), np.arange(n)
    for _ in range(64):
        if todo.size == 0:
            break
        x = np.rint(rng.lognormal(mu, spec.sigma, todo.size))
        ok = (x >= spec.min) & (x <= hi)
        out[todo[ok]] = x[ok].astype(np.int64)
        todo = todo[~ok]
    assert todo.size == 0
    return out


def test_lognormal_sampler_never_fails_on_what_validation_accepts() -> None:
    """Bounds holding 2% of the distribution: every draw lands in them (the 64 redraws alone left
    most requests unplaced), and a distribution the redraws handle gives the same bytes as before."""
    spec = LognormalLength(kind="lognormal", median=10_000, sigma=1.0, max=1300)
    assert 0.01 < spec.share_in_bounds() < 0.03
    x = lognormal(spec, np.random.default_rng(1), 20_000)
    assert x.min() >= 1 and x.max() <= 1300
    normal = LognormalLength(kind="lognormal", median=1020, sigma=0.77, max=16000)
    assert np.array_equal(lognormal(normal, np.random.default_rng(7), 5000),
                          _naive_lognormal(normal, np.random.default_rng(7), 5000))


def test_stages_past_the_horizon_are_found_by_validate(tmp_path: Path) -> None:
    stages = ("{kind: multi_stage, process: poisson, stages: [{rate_per_s: 5, duration_s: 400}, "
              "{rate_per_s: 10, duration_s: 400}]}")
    text = edit(QUICKSTART, ("{kind: poisson, rate_per_s: 20}", stages))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "multi_stage"), "workloads.chat.arrival.stages"),
          "the stages run 800 s", "horizon_s is 600")


def test_empirical_lengths_without_positive_values_are_found_by_validate(tmp_path: Path) -> None:
    write(tmp_path, '{"timestamp": 0, "input_length": 0, "output_length": 5}\n'
                    '{"timestamp": 10, "input_length": 0, "output_length": 7}\n', "zero.jsonl")
    text = edit(QUICKSTART, ("{kind: lognormal, median: 1020, sigma: 0.77, max: 16000}",
                             "{kind: empirical, path: zero.jsonl}"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "zero.jsonl"), "workloads.chat.input_tokens.path"),
          "has no positive input lengths")


def test_custom_region_without_location_is_found_by_validate(tmp_path: Path) -> None:
    """Its round trips cannot be estimated: the run failed on the first call that crossed to it."""
    text = edit(AGENTS, ("tools:\n", "regions:\n  moon: {jurisdiction: us}\ntools:\n"),
                ("    latency: {median_ms: 206, p95_ms: 1067}", "    region: moon\n    latency: {median_ms: 206, p95_ms: 1067}"))
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "moon: {"), "regions.moon"), "give its lat and lon")


def test_trace_that_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    text = edit(QUICKSTART, ("{kind: lognormal, median: 1020, sigma: 0.77, max: 16000}",
                             "{kind: empirical, path: dir.jsonl}"))
    path = write(tmp_path, text)
    fails(["validate", path], "workloads.chat.input_tokens.path", "not a regular file")


def test_python_api_raises_scenario_error_for_hostile_text() -> None:
    """The same checks guard load_scenario_text (the dashboard and sweeps use it)."""
    with pytest.raises(ScenarioError, match="U\\+0000"):
        load_scenario_text(QUICKSTART.replace("quickstart", "quick\x00start", 1), "t.yaml")
    assert sys.getrecursionlimit() > MAX_DEPTH * 4  # the bound keeps every recursive step far below it


def test_an_exponent_without_a_dot_is_text_in_yaml_and_the_message_says_how_to_write_it(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) reads 1e9 as a string; the error says so and gives the spelling it reads."""
    text = (SCENARIOS / "quickstart.yaml").read_text()
    text = "\n".join("horizon_s: 1e9" if ln.startswith("horizon_s:") else ln for ln in text.splitlines()) + "\n"
    path = write(tmp_path, text)
    fails(["validate", path], where(path, line_no(text, "horizon_s: 1e9"), "horizon_s"), "YAML reads it as text",
          "write 1.0e+9")
