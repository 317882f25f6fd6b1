"""The calibration fit: it recovers known parameters from synthetic data, and the pipeline runs
on the shared measurements and writes its report."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from stacksim.calibration import fit as F
from stacksim.calibration.data import Point

from .conftest import SHARED


def synthetic_points(theta: np.ndarray, noise: float, seed: int) -> list[Point]:
    """Measurements of every kind, engine, accelerator and several shapes, made by the model
    itself at ``theta`` with multiplicative noise."""
    rng = np.random.default_rng(seed)
    shapes = []
    for engine in F.ENGINES:
        for model, tp in (("llama-2-7b", 1), ("llama-2-70b", 4), ("mixtral-8x7b", 2)):
            for acc in ("a100-sxm-80gb", "h100-sxm", "h200"):
                for prec in ("bf16", "fp8"):
                    for batch, isl in ((1, 128), (1, 2048), (8, 512), (64, 512), (16, 2048)):
                        shapes.append(Point("syn", engine, "x", model, acc, tp, prec, "prefill_ms", batch, isl, 0, 0.0, 1.0, "synthetic"))
                    for batch, ctx in ((1, 200.0), (16, 1000.0), (64, 1500.0), (256, 600.0)):
                        shapes.append(Point("syn", engine, "x", model, acc, tp, prec, "decode_ms", batch, 0, 0, ctx, 1.0, "synthetic"))
                    shapes.append(Point("syn", engine, "x", model, acc, tp, prec, "e2e_ms", 8, 32, 128, 0.0, 1.0, "synthetic"))
    prep = F.prepare(shapes)
    out = []
    for pr in prep:
        v = F.predict(theta, pr) * float(np.exp(rng.normal(0.0, noise)))
        out.append(Point(**{**pr.point.__dict__, "measured": v}))
    return out


def test_fit_recovers_known_parameters() -> None:
    truth = F.DEFAULT.copy()
    truth[F.NAMES.index("eff_attn")] = 0.5
    truth[F.NAMES.index("fp8_eff")] = 0.8
    truth[F.NAMES.index("link_eff_scaleup")] = 0.5
    for e in F.ENGINES:
        if e not in F.TIED:  # a tied engine's efficiencies are its partner's, not parameters of its own
            truth[F.NAMES.index(f"eff_scale_{e}")] = 0.7
            truth[F.NAMES.index(f"eff_mem_{e}")] = 0.75
        truth[F.NAMES.index(f"overhead_{e}")] = {"splitwise-2023": 0.015, "vllm": 0.003, "trtllm": 0.001}.get(e, 0.002)
    prep = F.prepare(synthetic_points(truth, noise=0.01, seed=1))
    got = F.fit(prep, prior_sigma=None).theta  # pure maximum likelihood: recovers the truth
    np.testing.assert_allclose(got, truth, rtol=0.08)
    assert np.median(F.ape(got, prep)) < 0.015
    # With the prior, weakly identified parameters lean toward the first-principles value, but
    # the fit still explains the data.
    assert np.median(F.ape(F.fit(prep).theta, prep)) < 0.03


def test_fit_ignores_an_outlier() -> None:
    """The soft-L1 loss: one row off by 5x barely moves the fit."""
    truth = F.DEFAULT.copy()
    pts = synthetic_points(truth, noise=0.0, seed=2)
    pts[0] = Point(**{**pts[0].__dict__, "measured": pts[0].measured * 5})
    got = F.fit(F.prepare(pts), prior_sigma=None).theta
    np.testing.assert_allclose(got, truth, rtol=0.05)


@pytest.mark.skipif(not (SHARED / "calibration").exists(), reason="shared/calibration not present")
def test_pipeline_writes_report(tmp_path, monkeypatch) -> None:
    from stacksim.calibration.__main__ import main

    # One kind of fold and no simulation check keep it short; `make calibrate` runs them all.
    monkeypatch.setattr(sys, "argv", ["calibrate", "--out", str(tmp_path), "--params", str(tmp_path / "params_v1.json"),
                                      "--cv", "engine", "--no-sim-check"])
    main()
    report = (tmp_path / "REPORT.md").read_text()
    assert "Cross-validated error" in report and "leave one out" in report
    params = json.loads((tmp_path / "params_v1.json").read_text())
    assert set(params["parameters"]) == set(F.FITTED_NAMES)
    assert "Measurements outside shared/" in report and "b200 / pp1" in report
    assert (tmp_path / "data" / "points.csv").read_text().count("\n") > 400
    assert (tmp_path / "plots" / "decode_ms.png").exists()
