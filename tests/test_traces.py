"""Request traces: the public Azure and Mooncake traces load as documented, a user's own files load
the same way, and scenarios replay them (timestamps, lengths, time_scale, empirical draws)."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import stacksim
from stacksim.workload.traces import Trace, TraceFormatError, load_trace

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
WORKLOADS = SHARED / "workloads"
AZURE_DIR = WORKLOADS / "azure_llm_2023"
MOONCAKE_CONV = WORKLOADS / "mooncake_fast25" / "conversation_trace.jsonl"

needs_shared = pytest.mark.skipif(
    not WORKLOADS.is_dir(),
    reason=f"shared trace data not found at {WORKLOADS} (CI provides it at ../shared next to the repo)",
)

# ------------------------------------------------------------------ public traces (shared data)

# (service, rows, context median/p90, generated median/p90, req/s), from shared/workloads/README.md
AZURE_README = [
    ("conv", 19_366, 1020, 2734, 129, 424, 5.53),
    ("code", 8_819, 1469, 5186, 13, 55, 2.57),
]


@needs_shared
@pytest.mark.parametrize(
    ("service", "rows", "in_med", "in_p90", "out_med", "out_p90", "rate"), AZURE_README
)
def test_azure_trace_matches_readme(
    service: str, rows: int, in_med: int, in_p90: int, out_med: int, out_p90: int, rate: float
) -> None:
    """The Azure 2023 trace loads every row, from t=0, non-decreasing, over about an hour, with the README's statistics."""
    path = AZURE_DIR / f"AzureLLMInferenceTrace_{service}.csv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with open(path, newline="", encoding="utf-8") as fh:
        file_rows = sum(1 for _ in csv.DictReader(fh))
    tr = load_trace(str(path))
    assert tr.format == "azure"
    assert file_rows == rows
    assert len(tr) == rows
    assert tr.arrival_s[0] == 0.0
    assert np.all(np.diff(tr.arrival_s) >= 0)
    span = float(tr.arrival_s[-1])
    assert 3400 <= span <= 3600, f"span {span:.0f} s is not about one hour"
    assert len(tr) / span == pytest.approx(rate, abs=0.01)
    assert np.median(tr.input_tokens) == in_med
    assert np.median(tr.output_tokens) == out_med
    assert np.percentile(tr.input_tokens, 90) == pytest.approx(in_p90, rel=0.01)
    assert np.percentile(tr.output_tokens, 90) == pytest.approx(out_p90, rel=0.01)
    assert tr.input_tokens.dtype == np.int64 and tr.output_tokens.dtype == np.int64
    assert tr.hash_ids is None


@needs_shared
def test_quickstart_lognormals_fit_the_azure_conv_trace() -> None:
    """The quickstart's lognormal sigmas are ln(p90/median)/1.2816 of the conv trace, as its comment says."""
    path = AZURE_DIR / "AzureLLMInferenceTrace_conv.csv"
    tr = load_trace(str(path))
    wl = yaml.safe_load((REPO / "scenarios" / "quickstart.yaml").read_text())["workloads"]["chat"]
    for spec, col in (
        (wl["input_tokens"], tr.input_tokens),
        (wl["output_tokens"], tr.output_tokens),
    ):
        med, p90 = np.median(col), np.percentile(col, 90)
        assert spec["median"] == med
        assert spec["sigma"] == pytest.approx(math.log(p90 / med) / 1.2816, abs=0.01)


@needs_shared
def test_mooncake_conversation_trace_matches_readme() -> None:
    """Mooncake's conversation trace loads 12,031 records with hash_ids, milliseconds turned into seconds."""
    if not MOONCAKE_CONV.exists():
        pytest.skip(f"{MOONCAKE_CONV} not found")
    raw = [
        json.loads(line)
        for line in MOONCAKE_CONV.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    tr = load_trace(str(MOONCAKE_CONV))
    assert tr.format == "mooncake"
    assert len(tr) == len(raw) == 12_031
    ms = np.array([r["timestamp"] for r in raw], dtype=np.float64)
    order = np.argsort(ms, kind="stable")
    np.testing.assert_allclose(tr.arrival_s, (ms[order] - ms.min()) / 1000.0)
    assert tr.arrival_s[0] == 0.0 and np.all(np.diff(tr.arrival_s) >= 0)
    assert 3400 <= tr.arrival_s[-1] <= 3600, "one hour of milliseconds should be ~3,600 s"
    assert tr.input_tokens.mean() == pytest.approx(12_035, abs=1)
    assert tr.output_tokens.mean() == pytest.approx(343, abs=1)
    assert tr.hash_ids is not None and len(tr.hash_ids) == len(tr)
    assert list(tr.hash_ids[int(np.flatnonzero(order == 0)[0])]) == raw[0]["hash_ids"]
    # One id per 512-token block, and the README's 36.6% of blocks already seen earlier.
    blocks = np.array([len(h) for h in tr.hash_ids])
    np.testing.assert_array_equal(blocks, np.ceil(tr.input_tokens / 512).astype(int))
    seen: set[int] = set()
    hits = total = 0
    for h in tr.hash_ids:
        hits += sum(x in seen for x in h)
        total += len(h)
        seen.update(h)
    assert hits / total == pytest.approx(0.366, abs=0.001)


def _same(a: Trace, b: Trace, n: int) -> None:
    np.testing.assert_allclose(a.arrival_s[:n], b.arrival_s[:n])
    np.testing.assert_array_equal(a.input_tokens[:n], b.input_tokens[:n])
    np.testing.assert_array_equal(a.output_tokens[:n], b.output_tokens[:n])


@needs_shared
@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "mine.csv"),
        ("mooncake_fast25/conversation_trace.jsonl", "mine.jsonl"),
    ],
)
def test_users_copy_of_a_public_trace_loads_the_same(
    source: str, name: str, tmp_path: Path
) -> None:
    """A user's own file with the first rows of a public trace loads to the same arrays."""
    src = WORKLOADS / source
    head = src.read_text(encoding="utf-8").splitlines(keepends=True)[:201]
    mine = tmp_path / name
    mine.write_text("".join(head), encoding="utf-8")
    ours, theirs = load_trace(str(mine)), load_trace(str(src))
    n = len(ours)
    assert n == (200 if name.endswith(".csv") else 201)
    assert ours.format == theirs.format
    _same(ours, theirs, n)
    if theirs.hash_ids is not None:
        assert ours.hash_ids == theirs.hash_ids[:n]


# ------------------------------------------------------------------ a user's own small traces

BASE = datetime(2023, 11, 16, 18, 15, 46, 680590)
OFFSETS = [0.0, 0.25, 0.75, 1.0, 2.5, 4.0, 7.5, 9.0, 12.0, 30.0]  # seconds from the first request
INPUTS = [100 + 37 * i for i in range(len(OFFSETS))]
OUTPUTS = [10 + 3 * i for i in range(len(OFFSETS))]


def write_azure(path: Path, offsets: list[float] = OFFSETS, shuffle: bool = False) -> Path:
    """An Azure-format CSV (TIMESTAMP with 7 fractional digits, like the public file)."""
    rows = list(zip(offsets, INPUTS, OUTPUTS))
    if shuffle:
        rows = rows[::-1]
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for off, i, o in rows:
        ts = (BASE + timedelta(seconds=off)).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
        lines.append(f"{ts},{i},{o}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_mooncake(
    path: Path, offsets: list[float] = OFFSETS, shuffle: bool = False, t0_ms: int = 5000
) -> Path:
    """A Mooncake-format JSONL (timestamps in milliseconds, hash_ids per 512-token block)."""
    rows = list(zip(offsets, INPUTS, OUTPUTS))
    if shuffle:
        rows = rows[::-1]
    recs = [
        {"timestamp": t0_ms + round(off * 1000), "input_length": i, "output_length": o,
         "hash_ids": list(range(k * 10, k * 10 + math.ceil(i / 512)))}
        for k, (off, i, o) in enumerate(rows)
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("shuffle", [False, True], ids=["sorted", "unsorted"])
@pytest.mark.parametrize(
    ("name", "writer", "fmt"),
    [("t.csv", write_azure, "azure"), ("t.jsonl", write_mooncake, "mooncake")],
)
def test_own_trace_loads_with_format_from_extension(
    name: str, writer: Any, fmt: str, shuffle: bool, tmp_path: Path
) -> None:
    """A user's CSV/JSONL loads (format guessed from the extension) into seconds from the first request, sorted."""
    tr = load_trace(str(writer(tmp_path / name, shuffle=shuffle)))
    assert tr.format == fmt
    np.testing.assert_allclose(tr.arrival_s, OFFSETS, atol=1e-6)
    np.testing.assert_array_equal(tr.input_tokens, INPUTS)
    np.testing.assert_array_equal(tr.output_tokens, OUTPUTS)
    if fmt == "mooncake":
        assert tr.hash_ids is not None and len(tr.hash_ids) == len(OFFSETS)
    else:
        assert tr.hash_ids is None


def test_own_trace_with_other_extension_needs_format(tmp_path: Path) -> None:
    """An unrecognised extension loads with an explicit format, and without one the error says what to set."""
    path = write_mooncake(tmp_path / "trace.txt")
    tr = load_trace(str(path), "mooncake")
    np.testing.assert_allclose(tr.arrival_s, OFFSETS, atol=1e-6)
    with pytest.raises(TraceFormatError) as info:
        load_trace(str(path))
    assert "format: azure" in str(info.value) and "format: mooncake" in str(info.value)


def test_explicit_format_matches_guessed(tmp_path: Path) -> None:
    """Giving format: azure for a .csv yields the same trace as guessing it."""
    path = str(write_azure(tmp_path / "t.csv"))
    _same(load_trace(path, "azure"), load_trace(path), len(OFFSETS))


# ------------------------------------------------------------------ replay in a scenario


def write_scenario(
    directory: Path,
    arrival: dict[str, Any],
    input_tokens: dict[str, Any],
    output_tokens: dict[str, Any],
    horizon_s: float = 10.0,
) -> Path:
    """A one-deployment scenario (Llama-3.1-8B on one H100) next to its trace files."""
    sc = {
        "name": "replay",
        "seed": 7,
        "horizon_s": horizon_s,
        "pools": {"gpu": {"accelerator": "h100-sxm", "count": 1}},
        "deployments": {"chat": {"model": "llama-3.1-8b", "pool": "gpu"}},
        "workloads": {
            "chat": {
                "target": "chat",
                "arrival": arrival,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            }
        },
    }
    path = directory / "scenario.yaml"
    path.write_text(yaml.safe_dump(sc, sort_keys=False), encoding="utf-8")
    return path


def run(path: Path) -> stacksim.Result:
    return stacksim.run_scenario(stacksim.load_scenario(path))


def _by_arrival(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("arrival_s", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize(
    ("name", "writer"), [("trace.csv", write_azure), ("trace.jsonl", write_mooncake)]
)
def test_trace_replay_reproduces_arrivals_and_lengths(
    name: str, writer: Any, tmp_path: Path
) -> None:
    """Arrival kind 'trace' with 'trace' lengths: one request per trace row inside the horizon, with its lengths."""
    writer(tmp_path / name)
    horizon = 10.0
    path = write_scenario(
        tmp_path, {"kind": "trace", "path": name}, {"kind": "trace"}, {"kind": "trace"}, horizon
    )
    result = run(path)
    inside = [k for k, off in enumerate(OFFSETS) if off < horizon]
    assert 0 < len(inside) < len(OFFSETS), (
        "the test trace must have rows on both sides of the horizon"
    )
    df = _by_arrival(result.requests)
    assert len(df) == len(inside)
    assert result.summary["requests"]["arrived"] == len(inside)
    np.testing.assert_allclose(df["arrival_s"], [OFFSETS[k] for k in inside], atol=1e-6)
    np.testing.assert_array_equal(df["input_tokens"], [INPUTS[k] for k in inside])
    np.testing.assert_array_equal(df["output_tokens"], [OUTPUTS[k] for k in inside])


def test_time_scale_half_halves_the_gaps(tmp_path: Path) -> None:
    """time_scale 0.5 replays the same requests with every gap halved."""
    write_azure(tmp_path / "trace.csv")
    horizon = 40.0  # every row inside at either scale
    arrivals = {}
    for scale in (1.0, 0.5):
        d = tmp_path / f"scale{scale}"
        d.mkdir()
        arrival = {"kind": "trace", "path": "../trace.csv", "time_scale": scale}
        df = _by_arrival(
            run(write_scenario(d, arrival, {"kind": "trace"}, {"kind": "trace"}, horizon)).requests
        )
        assert len(df) == len(OFFSETS)
        np.testing.assert_array_equal(df["input_tokens"], INPUTS)
        arrivals[scale] = df["arrival_s"].to_numpy()
    np.testing.assert_allclose(np.diff(arrivals[0.5]), 0.5 * np.diff(arrivals[1.0]), atol=1e-6)
    np.testing.assert_allclose(arrivals[0.5], 0.5 * np.asarray(OFFSETS), atol=1e-6)


def test_time_scale_half_fits_more_rows_in_the_horizon(tmp_path: Path) -> None:
    """With gaps halved, rows up to 2 x horizon of trace time arrive within the horizon."""
    write_azure(tmp_path / "trace.csv")
    horizon = 10.0
    arrival = {"kind": "trace", "path": "trace.csv", "time_scale": 0.5}
    result = run(write_scenario(tmp_path, arrival, {"kind": "trace"}, {"kind": "trace"}, horizon))
    assert len(result.requests) == sum(off * 0.5 < horizon for off in OFFSETS)


@pytest.mark.parametrize("field", [None, "output"])
def test_empirical_lengths_draw_only_values_in_the_file(field: str | None, tmp_path: Path) -> None:
    """'empirical' lengths are drawn from the file's (positive) values of the chosen column, and nothing else."""
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    ctx = [101, 257, 389, 1009, 2003]
    gen = [0, 7, 31, 113, 499]  # a zero-token record is never drawn
    for k, (i, o) in enumerate(zip(ctx, gen)):
        lines.append(f"2023-11-16 18:15:{40 + k:02d}.0000000,{i},{o}")
    (tmp_path / "lengths.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    inp: dict[str, Any] = {"kind": "empirical", "path": "lengths.csv"}
    if field is not None:
        inp["field"] = field
    out = {"kind": "empirical", "path": "lengths.csv"}
    path = write_scenario(tmp_path, {"kind": "poisson", "rate_per_s": 40}, inp, out, horizon_s=10.0)
    df = run(path).requests
    assert len(df) > 200
    drawn_in, drawn_out = set(df["input_tokens"].tolist()), set(df["output_tokens"].tolist())
    allowed_in = {v for v in (gen if field == "output" else ctx) if v > 0}
    assert drawn_in <= allowed_in and len(drawn_in) > 1
    assert drawn_out <= {v for v in gen if v > 0} and len(drawn_out) > 1


def test_trace_lengths_without_trace_arrival_is_a_validation_error(tmp_path: Path) -> None:
    """Length kind 'trace' needs arrival kind 'trace': a ScenarioError at that field's line."""
    path = write_scenario(
        tmp_path,
        {"kind": "poisson", "rate_per_s": 5},
        {"kind": "fixed", "value": 100},
        {"kind": "trace"},
    )
    with pytest.raises(stacksim.ScenarioError) as info:
        stacksim.load_scenario(path)
    problems = info.value.problems
    assert len(problems) == 1
    assert problems[0].field == "workloads.chat.output_tokens.kind"
    text = path.read_text(encoding="utf-8").splitlines()
    kind_lines = [n for n, ln in enumerate(text, start=1) if "kind: trace" in ln]
    assert problems[0].line == kind_lines[0]
    assert "arrival kind 'trace'" in problems[0].message
