"""Engine versions (catalog/versions.py) and the current-engine calibration (calibration/modern.py).

The measured anchors are vLLM v0.15.1 serving runs on H100 SXM (shared/calibration/
modern_vllm_trainval.csv, raw/blis-training): the symptoms issue #16 opened with are checked
against them, and the TensorRT-LLM 1.x batch-1 step against vLLM's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stacksim.catalog import get_accelerator, get_model, versions
from stacksim.errors import StackSimError
from stacksim.kernels import cost as K
from stacksim.predict import PredictArgs, predict
from stacksim.serving import costmodel

from .conftest import ROOT, SHARED

H100 = get_accelerator("h100-sxm")


@pytest.mark.parametrize(("kind", "version", "family"), [
    ("vllm", "0.4.2", "vllm-2023"), ("vllm", "0.6.3", "vllm"), ("vllm", "v0.8.5", "vllm"), ("vllm", "0.15.1", "vllm-v1"),
    ("vllm", None, "vllm-v1"), ("sglang", "0.3.0", "sglang"), ("sglang", "0.5.2", "sglang-0.5"),
    ("trtllm", "0.17", "trtllm"), ("trtllm", "1.0.0rc4", "trtllm-1"), ("trtllm", None, "trtllm-1"),
])
def test_version_bands(kind: str, version: str | None, family: str) -> None:
    assert versions.band(kind, version).family == family


def test_unknown_version_is_a_clear_error() -> None:
    with pytest.raises(versions.UnknownVersion, match="0.4-0.5, 0.6-0.9, 0.10"):
        versions.band("vllm", "0.2")
    with pytest.raises(versions.UnknownVersion, match="not a release number"):
        versions.band("vllm", "latest")


def test_bad_version_in_a_scenario_exits_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / "scenarios" / "quickstart.yaml").read_text().replace("      kind: vllm\n", "      kind: vllm\n      version: \"0.1\"\n", 1)
    assert "version" in text
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = subprocess.run([sys.executable, "-m", "stacksim.cli", "validate", str(f)], capture_output=True, text=True, check=False)
    assert r.returncode == 2, r.stderr
    assert "version" in r.stderr and "0.10+" in r.stderr and "Traceback" not in r.stderr


def test_predict_engine_version_flag() -> None:
    with pytest.raises(StackSimError, match="--engine-version"):
        predict(PredictArgs(model="llama-3.1-8b", gpu="h100-sxm", engine_version="0.2", qps=1.0, requests=5))
    old = predict(PredictArgs(model="llama-3.1-8b", gpu="h100-sxm", engine_version="0.6.3", concurrency=1, isl=100, osl=100,
                              requests=3))
    new = predict(PredictArgs(model="llama-3.1-8b", gpu="h100-sxm", concurrency=1, isl=100, osl=100, requests=3))
    assert old["engine_version"] == "0.6-0.9" and new["engine_version"] == "0.10+"
    # The 2026 engine decodes faster than the 2024 one (CUDA-graph decode, less CPU per step).
    assert new["tpot_ms"]["mean"] < old["tpot_ms"]["mean"]


@pytest.mark.parametrize(("kind", "version", "on"), [
    ("vllm", "0.6.3", False), ("vllm", "0.13.0", False), ("vllm", "0.14.1", True), ("vllm", None, True),
    ("sglang", "0.3.0", False), ("sglang", "0.5.2", True), ("trtllm", "0.17", False), ("trtllm", "1.0", True),
])
def test_async_scheduling_default_by_release(kind: str, version: str | None, on: bool) -> None:
    assert versions.async_scheduling_default(kind, version) is on


def test_async_scheduling_costs_one_step_of_ttft_at_low_load() -> None:
    """A request arriving while a step runs joins the step after next: at a load where the engine
    is never idle, mean TTFT rises by about one decode step (Llama-2-7B, H100, 5 req/s of
    575 + 248 tokens: a ~7.5 ms step), and nothing else moves much."""
    args = {"model": "llama-2-7b", "gpu": "h100-sxm", "qps": 5.0, "isl": 575, "osl": 248, "requests": 400}
    on = predict(PredictArgs(**args))  # type: ignore[arg-type]
    off = predict(PredictArgs(**args, async_scheduling=False))  # type: ignore[arg-type]
    assert predict(PredictArgs(**args, async_scheduling=True)) == on  # type: ignore[arg-type]
    step = on["tpot_ms"]["mean"]
    assert 0.5 * step < on["ttft_ms"]["mean"] - off["ttft_ms"]["mean"] < 1.5 * step
    assert on["tpot_ms"]["mean"] == pytest.approx(off["tpot_ms"]["mean"], rel=0.05)


def _batch1_step_ms(engine: str, version: str | None, precision: str = "bf16") -> float:
    p = costmodel.cost_params(get_model("llama-3.1-8b"), H100, 1, 1, precision, "auto", "calibrated", engine,
                              engine_version=version)
    return K.step_time(p, 0.0, 0.0, 0.0, 1.0, 1000.0, 1.0) * 1000.0


def test_trtllm_batch1_step_is_no_slower_than_vllm() -> None:
    """Current TensorRT-LLM decodes one sequence no slower than current vLLM on the same GPU; NIM's
    TensorRT-LLM at 4.63 ms per token (FP8) and vLLM 0.19 at 6.44 ms (BF16) both sit 1.5-2 ms above
    their weights' read time (calibration/data/external_modern_SOURCES.md)."""
    assert _batch1_step_ms("trtllm", None) <= _batch1_step_ms("vllm", None)
    assert _batch1_step_ms("trtllm", None, "fp8") == pytest.approx(4.63, rel=0.15)
    assert _batch1_step_ms("vllm", None) == pytest.approx(6.44 + 0.0437, rel=0.15)


def test_catalog_engines_lists_every_band() -> None:
    r = subprocess.run([sys.executable, "-m", "stacksim.cli", "catalog", "engines"], capture_output=True, text=True, check=False,
                       env={"COLUMNS": "200", "PATH": ""})
    assert r.returncode == 0, r.stderr
    for b in versions.BANDS:
        assert b.label in r.stdout
    assert "(default)" in r.stdout


def test_params_file_has_the_current_family() -> None:
    params = json.loads(costmodel.PARAMS_FILE.read_text())["parameters"]
    for key in ("eff_scale", "eff_mem", "overhead", "frontend"):
        assert f"{key}_vllm-v1" in params


needs_shared = pytest.mark.skipif(not (SHARED / "calibration" / "modern_vllm_trainval.csv").exists(),
                                  reason="shared/calibration not present")


@needs_shared
def test_modern_experiments_load_with_their_settings() -> None:
    from stacksim.calibration import modern as M

    exps = M.experiments()
    assert len(exps) == 28  # 13 trainval + 16 blis-training runs, one in both
    models = {e.model for e in exps}
    assert {"llama-4-scout", "llama-3.1-70b", "mistral-nemo-12b", "qwen2.5-7b", "yi-34b", "llama-2-7b",
            "llama-2-70b", "codellama-34b", "mixtral-8x7b"} <= models
    assert sum(e.overloaded for e in exps) == 4
    scout = next(e for e in exps if e.model == "llama-4-scout")
    assert scout.precision == "fp8" and scout.tp == 2


@needs_shared
def test_llama2_7b_at_20_rps_is_not_saturated() -> None:
    """Issue #16's first symptom: vLLM 0.15 serves 20 req/s of ~566 + 248 tokens on one H100 with
    a TTFT of ~52 ms (blis-training llama-2-7b general, stage 1); the 2024 profile saturated."""
    from stacksim.calibration import modern as M

    ex = next(e for e in M.experiments() if e.name.endswith("llama-2-7b-tp1-general"))
    got = M.simulate(ex, 1, horizon_s=40.0)
    meas = M.targets(ex, 1)
    assert got["ttft_mean"] < 3 * meas["ttft_mean"]
    assert got["e2e_mean"] == pytest.approx(meas["e2e_mean"], rel=0.15)


@needs_shared
def test_llama2_70b_tp4_at_5_rps_matches_vllm_015() -> None:
    """Issue #16's second symptom: Llama-2-70B TP4, 5 req/s: vLLM 0.15 measured TTFT ~53 ms and
    ~17.4 ms per token (blis-training llama-2-70b codegen, stage 0)."""
    from stacksim.calibration import modern as M

    ex = next(e for e in M.experiments() if e.name.endswith("llama-2-70b-hf-tp4-codegen"))
    got = M.simulate(ex, 0, horizon_s=40.0)
    meas = M.targets(ex, 0)
    assert got["itl_mean"] == pytest.approx(meas["itl_mean"], rel=0.15)
    assert got["ttft_mean"] == pytest.approx(meas["ttft_mean"], rel=0.3)
