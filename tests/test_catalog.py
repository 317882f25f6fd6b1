"""The accelerator and model catalogs: complete, sourced, physically sane, and listed by the CLI."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stacksim.catalog import (
    DATA,
    Accelerator,
    ModelArch,
    UnknownId,
    accelerators,
    get_accelerator,
    get_model,
    models,
)
from stacksim.cli import app

ACCELERATOR_IDS = [
    "a100-sxm-40gb", "a100-sxm-80gb", "a100-pcie-80gb", "h100-sxm", "h100-pcie", "h100-nvl", "h200",
    "h200-nvl", "gh200", "b200", "gb200", "gb300", "l40s", "l4", "rtx-pro-6000", "mi300x", "mi325x",
    "mi355x", "gaudi3", "tpu-v5e", "tpu-v6e", "trainium2",
]  # fmt: skip
MODEL_IDS = [
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b", "llama-3.1-8b",
    "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-3b", "llama-3.3-70b", "mistral-7b", "mixtral-8x7b",
    "mixtral-8x22b", "codellama-34b", "qwen-72b", "qwen3-8b", "qwen3-32b", "qwen3-30b-a3b",
    "qwen3-235b-a22b", "llama-4-scout", "llama-4-maverick", "deepseek-v3", "deepseek-r1",
    "gpt-oss-20b", "gpt-oss-120b", "phi-3-mini", "bloom-176b", "mistral-nemo-12b", "qwen2.5-7b", "yi-34b",
]  # fmt: skip
NON_GATED_MLP = {"bloom-176b", "opt-13b"}  # GELU / ReLU MLP with two matrices (up, down) instead of three

CSV_FILES = [DATA / n for n in ("accelerators.csv", "models.csv", "regions.csv")]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_catalog_csv_files_exist() -> None:
    """Both catalog tables ship with the package."""
    names = {p.name for p in CSV_FILES}
    assert {"accelerators.csv", "models.csv"} <= names


def test_all_accelerator_ids_present() -> None:
    """Every accelerator the product promises is in the catalog."""
    missing = sorted(set(ACCELERATOR_IDS) - set(accelerators()))
    assert not missing, f"accelerators missing from the catalog: {missing}"
    assert len(ACCELERATOR_IDS) == 22


def test_all_model_ids_present() -> None:
    """Every model the product promises is in the catalog."""
    missing = sorted(set(MODEL_IDS) - set(models()))
    assert not missing, f"models missing from the catalog: {missing}"
    assert len(MODEL_IDS) == 30


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: p.name)
def test_every_row_has_a_source_and_a_lower_case_unique_id(path: Path) -> None:
    """Each CSV row names where its figures come from; ids are lower-case, space-free and unique."""
    rows = _rows(path)
    assert rows, f"{path.name} has no rows"
    no_source = [r.get("id") for r in rows if not (r.get("source") or "").strip()]
    assert not no_source, f"{path.name}: rows without a source: {no_source}"
    ids = [r["id"] for r in rows]
    bad = [i for i in ids if i != i.lower() or i != i.strip() or " " in i or not i]
    assert not bad, f"{path.name}: ids not lower-case/space-free: {bad}"
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"{path.name}: duplicate ids: {dupes}"


STACK_SOURCES = {
    "providers.csv": {
        "latency_source": ("ttft_p50_s", "ttft_p90_s", "output_tps_p50", "output_tps_p10"),
        "price_source": ("usd_per_1m_input", "usd_per_1m_output", "usd_per_1m_cached_input", "context_window_tokens"),
        "limits_source": ("rpm_limit", "tpm_limit"),
    },
    "provider_regions.csv": {"source": ("price_uplift", "jurisdiction")},
    "region_rtt.csv": {"source": ("rtt_ms",)},
    "egress_prices.csv": {"source": ("usd_per_gb",)},
}


@pytest.mark.parametrize("name", sorted(STACK_SOURCES))
def test_every_stack_figure_has_a_source(name: str) -> None:
    """Provider latency, prices and limits, round trips and egress prices: a figure on a row
    needs the source column that covers it."""
    rows = _rows(DATA / name)
    assert rows, f"{name} has no rows"
    for src_col, cols in STACK_SOURCES[name].items():
        for r in rows:
            if any((r.get(c) or "").strip() for c in cols):
                assert (r.get(src_col) or "").strip(), f"{name}: {r} has figures in {cols} but no {src_col}"


@pytest.mark.parametrize("acc", list(accelerators().values()), ids=lambda a: a.id)
def test_accelerator_is_physically_sane(acc: Accelerator) -> None:
    """Memory, bandwidth and BF16 peak are positive; lower precisions are at least as fast."""
    assert acc.memory_gb > 0
    assert acc.memory_bandwidth_tbps > 0
    assert acc.peak_bf16_tflops > 0
    assert acc.interconnect_bandwidth_gbps > 0
    assert acc.scaleup_domain_gpus >= 1
    if acc.peak_fp8_tflops is not None:
        assert acc.peak_fp8_tflops >= acc.peak_bf16_tflops
    if acc.peak_fp4_tflops is not None and acc.peak_fp8_tflops is not None:
        assert acc.peak_fp4_tflops >= acc.peak_fp8_tflops
    if acc.measured_matmul_bf16_tflops is not None:
        assert 0 < acc.measured_matmul_bf16_tflops <= acc.peak_bf16_tflops
    if acc.default_price_usd_per_gpu_hour is not None:
        assert acc.default_price_usd_per_gpu_hour > 0


@pytest.mark.parametrize("m", list(models().values()), ids=lambda m: m.id)
def test_model_is_structurally_sane(m: ModelArch) -> None:
    """Active <= total parameters, MoE routing picks fewer experts than exist, KV heads divide heads."""
    assert m.params_total_b > 0
    assert 0 < m.params_active_b <= m.params_total_b
    assert m.num_layers >= 1 and m.hidden_size >= 1 and m.head_dim >= 1
    assert m.vocab_size >= 1 and m.max_context >= 1
    assert m.num_kv_heads >= 1
    assert m.num_attention_heads % m.num_kv_heads == 0, (m.num_attention_heads, m.num_kv_heads)
    if m.is_moe:
        assert 1 <= m.experts_per_token < m.num_experts
        assert m.params_active_b < m.params_total_b
    else:
        assert m.params_active_b == m.params_total_b


def _dense_params_b(m: ModelArch) -> float:
    """Parameters from the architecture: embeddings + per layer (attention + MLP); norms and biases ignored."""
    q_and_o = 2 * m.hidden_size * m.num_attention_heads * m.head_dim
    k_and_v = 2 * m.hidden_size * m.num_kv_heads * m.head_dim
    mlp_matrices = 2 if m.id in NON_GATED_MLP else 3  # gated (SwiGLU): gate, up, down
    mlp = mlp_matrices * m.hidden_size * m.intermediate_size
    embeddings = m.vocab_size * m.hidden_size * (1 if m.tied_embeddings else 2)
    return (embeddings + m.num_layers * (q_and_o + k_and_v + mlp)) / 1e9


DENSE = [m for m in models().values() if not m.is_moe]


@pytest.mark.parametrize("m", DENSE, ids=lambda m: m.id)
def test_dense_parameter_count_matches_architecture(m: ModelArch) -> None:
    """For dense models the catalog's params_total_b agrees with the architecture within 5%."""
    computed = _dense_params_b(m)
    assert computed == pytest.approx(m.params_total_b, rel=0.05), (
        f"{m.id}: architecture gives {computed:.2f}B, catalog says {m.params_total_b}B"
    )


def test_dense_models_include_the_expected_ones() -> None:
    """The parameter-count check really covers the dense models (it is not vacuous)."""
    ids = {m.id for m in DENSE}
    assert {"llama-3.1-8b", "llama-3.1-405b", "qwen3-32b", "bloom-176b", "phi-3-mini"} <= ids


@pytest.mark.parametrize(
    ("getter", "wanted", "expected"),
    [
        (get_accelerator, "h100-sx", "h100-sxm"),
        (get_accelerator, "H100-SXM", "h100-sxm"),
        (get_accelerator, "mi300", "mi300x"),
        (get_model, "llama-3.1-8", "llama-3.1-8b"),
        (get_model, "deepseek-v2", "deepseek-v3"),
        (get_model, "qwen3-8", "qwen3-8b"),
    ],
)
def test_unknown_id_suggests_close_matches(getter: object, wanted: str, expected: str) -> None:
    """An unknown id raises UnknownId (a KeyError) whose suggestions and message name the close match."""
    with pytest.raises(UnknownId) as info:
        getter(wanted)  # type: ignore[operator]
    err = info.value
    assert isinstance(err, KeyError)
    assert expected in err.suggestions
    suggested = str(err).split("Did you mean:")[1].split("?")[0]
    assert expected in suggested, str(err)
    assert f"'{wanted}'" in str(err)


def test_unknown_id_without_close_match_lists_valid_ids() -> None:
    """With nothing close, the message still lists every valid id."""
    with pytest.raises(UnknownId) as info:
        get_accelerator("zzzzzzzz")
    err = info.value
    assert err.suggestions == []
    assert "Did you mean" not in str(err)
    for acc_id in ACCELERATOR_IDS:
        assert acc_id in str(err)


def test_catalog_lookup_returns_the_row() -> None:
    """get_accelerator/get_model return the entry with that id."""
    assert get_accelerator("h100-sxm").id == "h100-sxm"
    assert get_model("llama-3.1-8b").num_layers == 32


runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # Rich colours output when FORCE_COLOR is set


@pytest.mark.parametrize(
    ("kind", "ids"), [("accelerators", ACCELERATOR_IDS), ("models", MODEL_IDS)]
)
def test_cli_catalog_lists_every_id(kind: str, ids: list[str]) -> None:
    """`stacksim catalog accelerators|models` exits 0 and prints every id (on a wide terminal)."""
    result = runner.invoke(app, ["catalog", kind], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.stderr
    missing = [i for i in ids if i not in ANSI.sub("", result.stdout)]
    assert not missing, f"ids not shown by `stacksim catalog {kind}`: {missing}"


@pytest.mark.parametrize(
    ("kind", "ids"), [("accelerators", ACCELERATOR_IDS), ("models", MODEL_IDS)]
)
def test_cli_catalog_lists_every_id_at_80_columns(kind: str, ids: list[str]) -> None:
    """The ids stay readable in the default 80-column output."""
    result = runner.invoke(app, ["catalog", kind], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    missing = [i for i in ids if i not in ANSI.sub("", result.stdout)]
    assert not missing, f"ids not shown by `stacksim catalog {kind}` at 80 columns: {missing}"


def test_cli_unknown_catalog_exits_2() -> None:
    """`stacksim catalog gpus` is bad input: exit 2, one message naming the valid catalogs."""
    result = runner.invoke(app, ["catalog", "gpus"])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "accelerators, models" in result.stderr
