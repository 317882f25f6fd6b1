"""``python -m stacksim.calibration.accuracy [--fit] [--folds run,model] [--max-nfev N]``
(``make accuracy``): the current-engine family's fit and its held-out errors.

- ``--fit`` refits the vLLM 0.10+ family (``vllm-v1``) on every steady serving experiment of
  :mod:`stacksim.calibration.modern` and writes its parameters into
  ``stacksim/calibration/params_v1.json`` (the other families' keys are kept);
- every run then recomputes the in-sample errors and the cross-validated ones (leave one run out,
  leave one model out: each fold refits on the rest, from the previous generation's values, and
  predicts the run or model it never saw), and writes them between the markers of the
  *Current engines* section of ``calibration/REPORT.md`` plus ``calibration/data/modern_errors.csv``.

Errors are |predicted / measured - 1| of the mean end-to-end latency, mean TTFT and mean
per-token time of each load stage. The TensorRT-LLM 1.x batch-1 step is derived here too (see
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stacksim import predict as P
from stacksim.api import run_scenario
from stacksim.calibration import fit as F
from stacksim.calibration import modern as M
from stacksim.calibration.data import external_points
from stacksim.catalog import get_accelerator, get_model
from stacksim.kernels import cost as K
from stacksim.predict import PredictArgs
from stacksim.scenario import load_scenario_text
from stacksim.serving import costmodel

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "calibration" / "REPORT.md"
ERRORS_CSV = ROOT / "calibration" / "data" / "modern_errors.csv"
FOLD_PARAMS_CSV = ROOT / "calibration" / "data" / "modern_fold_params.csv"  # each fold's fitted values
START, END = "<!-- current-engines:start -->", "<!-- current-engines:end -->"

# TensorRT-LLM at batch 1: NVIDIA NIM for Llama-3.1-8B-Instruct (TensorRT-LLM engine, NIM 1.8.0),
# inter-token latency 4.63 ms at concurrency 1 (docs.nvidia.com/nim/benchmarking/llm/1.0.0/
# performance, "Llama-3.1-8b-instruct Results", calibration/data/external_modern_SOURCES.md). The
# stored page drops the GPU and precision lines; its other tables are H100 FP8, and 4.63 ms is
# below BF16's weight-read time on one H100 (16 GB / 3.35 TB/s = 4.8 ms), so it is FP8 on one H100.
NIM_TRTLLM_ITL_S = 4.63e-3


def batch1_checks(params: dict[str, float]) -> list[tuple[str, float, float]]:
    """(what, measured ms, predicted ms) of batch-1 decode steps with published figures: NIM's
    TensorRT-LLM and vLLM 0.19's own (Llama-3.1-8B on one H100, ~1k tokens of context)."""

    out = []
    for what, engine, version, prec, kv, measured in (
            ("TensorRT-LLM (NIM 1.8.0), FP8", "trtllm", "1.0", "fp8", "fp8", NIM_TRTLLM_ITL_S * 1e3),
            ("vLLM 0.19, BF16 (6.44 ms + 4.37e-5 ms/token fit)", "vllm", "0.19", "bf16", "auto", 6.44 + 4.37e-5 * 1000)):
        with costmodel.override_parameters(params):
            p = costmodel.cost_params(get_model("llama-3.1-8b"), get_accelerator("h100-sxm"), 1, 1, prec, kv,
                                      "calibrated", engine, engine_version=version)
        out.append((what, measured, K.step_time(p, 0.0, 0.0, 0.0, 1.0, 1000.0, 1.0) * 1e3))
    return out


def external_trtllm(params: dict[str, float]) -> list[tuple[str, float, int]]:
    """Median absolute error on the held-out TensorRT-LLM 1.x perf-overview figures
    (calibration/data/external_trtllm_v1.csv) with each TensorRT-LLM band's profile."""

    prep = F.prepare(external_points())
    out = []
    for label, version in (("0.14-0.17 profile", "0.17"), ("0.20-1.x profile (the default)", "1.0")):
        errs = []
        with costmodel.override_parameters(params):
            for pr in prep:
                pt = pr.point
                p = costmodel.cost_params(get_model(pt.model), get_accelerator(pt.accelerator), pt.tp, pt.pp, pt.precision,
                                          pt.kv, "calibrated", "trtllm", engine_version=version)
                errs.append(abs(F.predict_point(p, pt, pr.batch, pr.budget) / pt.measured - 1.0))
        out.append((label, float(np.median(errs)) if errs else float("nan"), len(errs)))
    return out


EXTERNAL_CSV = ROOT / "calibration" / "data" / "external_modern.csv"
# Context lengths at which the vLLM 0.19.1 post's ITL-vs-input lines are read (inside its 256-125k
# fitted range).
FIT_CONTEXTS = (1_000, 8_000, 32_000, 100_000)
NIM_SHAPES = {(5000, 500), (500, 2000)}


def external_checks(params: dict[str, float]) -> list[dict[str, object]]:
    """Measurements of current engines outside shared/ and outside every fit
    (calibration/data/external_modern.csv, source per row), predicted:

    - vLLM 0.19.1, Llama-3.1-8B BF16 on one H100 and one B200 (a GPU no serving run of the fit
      used), 16- and 8-bit KV cache: inter-token latency at concurrency 1 as the post's own line
      intercept + slope x input length, read at :data:`FIT_CONTEXTS`; predicted as the decode step
      of one sequence with that context;
    - NVIDIA NIM 1.8.0 (TensorRT-LLM), Llama-3.3-70B FP8 on 2 x H100 (TP2), concurrency 1-250 at
      5000/500 and 500/2000 tokens: mean TTFT and ITL, by ``stacksim predict --concurrency``
      (both TensorRT-LLM bands; NIM does not name its TensorRT-LLM release)."""

    if not EXTERNAL_CSV.exists():
        return []
    df = pd.read_csv(EXTERNAL_CSV)
    out: list[dict[str, object]] = []
    fits = df[df.metric.str.startswith("itl_fit") & df.model_hf.str.startswith("meta-llama/Llama-3.1-8B")]
    with costmodel.override_parameters(params):
        for (gpu, kv), g in fits.groupby(["gpu", "kv_dtype"]):
            by = dict(zip(g.metric, g.value))
            if "itl_fit_intercept_ms" not in by or "itl_fit_slope_ms_per_ctx_token" not in by:
                continue
            acc = "h100-sxm" if gpu == "H100" else "b200"
            kvd = "fp8" if str(kv).startswith("fp8") else "auto"
            p = costmodel.cost_params(get_model("llama-3.1-8b"), get_accelerator(acc), 1, 1, "bf16", kvd, "calibrated",
                                      "vllm", engine_version="0.19")
            for c in FIT_CONTEXTS:
                meas = by["itl_fit_intercept_ms"] + by["itl_fit_slope_ms_per_ctx_token"] * c
                pred = K.step_time(p, 0.0, 0.0, 0.0, 1.0, float(c), 1.0) * 1000.0
                out.append({"check": f"vLLM 0.19.1 ITL, Llama-3.1-8B, {gpu}, KV {kv}, {c:,} tokens", "measured_ms": meas,
                            "predicted_ms": pred, "source": str(g.source.iloc[0])})
    # vLLM 0.19.1, Llama-3.1-8B BF16, one H100, 8 concurrent clients of ~20,000 in / ~2,000 out (the
    # post gives the lengths to +-15%), median TTFT and ITL of two runs.
    long = df[df.model_hf.str.startswith("meta-llama/Llama-3.1-8B") & (df.gpu == "H100")
              & df.metric.isin(["median_ttft_ms", "median_itl_ms"]) & (df.concurrency_or_rate.astype(str) == "8")]
    if len(long):
        a = P._check(PredictArgs(model="llama-3.1-8b", gpu="h100-sxm", engine_version="0.19", isl=20000, osl=2000,
                                 concurrency=8, requests=80))
        with costmodel.override_parameters(params):
            res = run_scenario(load_scenario_text(P._scenario_yaml(a), None))
        d = res.requests.sort_values("arrival_s", kind="stable").iloc[16:]
        d = d[d["status"] == "completed"]
        got = {"median_ttft_ms": float(d["ttft_s"].median()) * 1e3, "median_itl_ms": float(d["tpot_s"].median()) * 1e3}
        for row in long.itertuples():
            out.append({"check": f"vLLM 0.19.1 long prompts, Llama-3.1-8B, H100, 20k/2k, concurrency 8, "
                                 f"{'TTFT' if 'ttft' in row.metric else 'ITL'} (median)",
                        "measured_ms": float(row.value), "predicted_ms": got[row.metric], "source": row.source})
    nim = df[df.engine.str.contains("NIM") & df.metric.isin(["mean_ttft_ms", "mean_itl_ms"])]
    for (isl, osl, conc), g in nim.groupby(["isl", "osl", "concurrency_or_rate"]):
        isl, osl, conc = int(isl), int(osl), int(conc)
        if (isl, osl) not in NIM_SHAPES:
            continue
        for version in ("0.17", "1.0"):
            # The clients' first requests all arrive at once (a burst no steady benchmark reports):
            # 10 rounds of the closed loop, the first two left out.
            a = P._check(PredictArgs(model="llama-3.3-70b", gpu="h100-sxm", tp=2, precision="fp8", engine="trtllm",
                                     engine_version=version, isl=isl, osl=osl, concurrency=conc,
                                     requests=max(10 * conc, 40)))
            with costmodel.override_parameters(params):
                res = run_scenario(load_scenario_text(P._scenario_yaml(a), None))
            d = res.requests.sort_values("arrival_s", kind="stable").iloc[2 * conc:]
            d = d[d["status"] == "completed"]
            got = {"ttft_ms": float(d["ttft_s"].mean()) * 1e3, "itl_ms": float(d["tpot_s"].mean()) * 1e3}
            for row in g.itertuples():
                key = "ttft_ms" if row.metric == "mean_ttft_ms" else "itl_ms"
                out.append({"check": f"NIM (TensorRT-LLM {version} profile), Llama-3.3-70B FP8 TP2, {isl}/{osl}, "
                                     f"concurrency {conc}, {key.split('_')[0].upper()}",
                            "measured_ms": float(row.value), "predicted_ms": got[key], "source": row.source})
    return out


def _rows(cases: list[tuple[M.Experiment, int]], sims: list[dict[str, float]], fold: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for (ex, st), sim in zip(cases, sims):
        t = M.targets(ex, st)
        for k in M.METRICS:
            v = sim.get(k, float("nan")) if "error" not in sim else float("nan")
            out.append({"fold": fold, "experiment": ex.name, "model": ex.model, "tp": ex.tp, "precision": ex.precision,
                        "stage": st, "rate_per_s": ex.stages[st][0], "metric": k, "measured_ms": round(t[k], 3),
                        "predicted_ms": round(v, 3) if math.isfinite(v) else None,
                        "error": abs(v / t[k] - 1.0) if math.isfinite(v) else float("inf")})
    return out


def cross_validate(exps: list[M.Experiment], base: dict[str, float], by: str, pool, max_nfev: int,  # type: ignore[no-untyped-def]
                   start: dict[str, float] | None = None,
                   fitted: list[dict[str, object]] | None = None) -> list[dict[str, object]]:
    """Leave one run (``by="run"``) or one model (``"model"``) out: fit on the rest, predict the
    held-out stages. ``start``: where each fold's search begins (None: the previous generation's
    values, a cold start; the full fit's values converge in fewer iterations, and the fold's own
    fit still never sees the held-out data)."""
    key = (lambda e: e.name) if by == "run" else (lambda e: e.model)
    steady = [e for e in exps if not e.overloaded]
    rows: list[dict[str, object]] = []
    for value in sorted({key(e) for e in steady}):
        train = [e for e in steady if key(e) != value]
        test = [e for e in steady if key(e) == value]
        vals = M.fit_family(train, base, start=start, pool=pool, max_nfev=max_nfev)
        if fitted is not None:
            fitted += [{"fold": f"leave-one-{by}-out: {value}", "parameter": k, "value": v} for k, v in vals.items()]
        cases = M.cases_of(test)
        rows += _rows(cases, M.run_all(cases, M.with_family(base, vals), pool=pool), f"leave-one-{by}-out: {value}")
        print(f"  {by} {value}: done", flush=True)
    return rows


def _summary(df: pd.DataFrame) -> list[str]:
    lines = ["| errors | stages | mean E2E median | p90 | mean TTFT median | p90 | per-token median | p90 |",
             "|---|---|---|---|---|---|---|---|"]
    for kind in ("in-sample", "leave-one-run-out", "leave-one-model-out"):
        d = df[df.fold.str.startswith(kind)]
        if d.empty:
            continue
        cells = []
        for k in M.METRICS:
            e = d[d.metric == k].error.to_numpy(dtype=float)
            cells += [f"{100 * np.median(e):.1f}%", f"{100 * np.percentile(e, 90):.1f}%"]
        lines.append(f"| {kind} | {len(d) // len(M.METRICS)} | " + " | ".join(cells) + " |")
    return lines


def _folds(df: pd.DataFrame) -> list[str]:
    lines = ["| fold | held out | stages | E2E | TTFT | per-token |", "|---|---|---|---|---|---|"]
    for fold, d in df[~df.fold.str.startswith("in-sample")].groupby("fold", sort=True):
        kind, value = str(fold).split(": ", 1)
        cells = [f"{100 * np.median(d[d.metric == k].error):.1f}%" for k in M.METRICS]
        lines.append(f"| {kind} | {value} | {len(d) // len(M.METRICS)} | " + " | ".join(cells) + " |")
    return lines


def _external_table(ext: list[dict[str, object]]) -> list[str]:
    if not ext:
        return ["(calibration/data/external_modern.csv not found)"]
    lines = ["| check | measured ms | stacksim ms | error |", "|---|---|---|---|"]
    for r in ext:
        m, p = float(r["measured_ms"]), float(r["predicted_ms"])  # type: ignore[arg-type]
        lines.append(f"| {r['check']} | {m:,.2f} | {p:,.2f} | {100 * (p / m - 1):+.1f}% |")
    groups: dict[str, list[float]] = {}
    for r in ext:
        name = str(r["check"]).split(",")[0]
        groups.setdefault(name, []).append(abs(float(r["predicted_ms"]) / float(r["measured_ms"]) - 1.0))  # type: ignore[arg-type]
    lines += ["", *[f"- {k}: median absolute error {100 * np.median(v):.1f}% over {len(v)}" for k, v in groups.items()]]
    return lines


def write_report(df: pd.DataFrame, vals: dict[str, float], batch1: list[tuple[str, float, float]],
                 trt: list[tuple[str, float, int]], ext: list[dict[str, object]], seconds: float) -> None:
    body = [
        START,
        "",
        ("Parameters of the vLLM 0.10+ family (`vllm-v1`; fitted by `make accuracy ARGS=--fit`, "
         "stacksim/calibration/modern.py):"),
        "",
        "| parameter | value |",
        "|---|---|",
        *[f"| `{k}_vllm-v1` | {v:.4g} |" for k, v in vals.items()],
        "",
        ("Batch-1 decode step of Llama-3.1-8B on one H100 (~1k tokens of context) against published figures not "
         "in the fit (calibration/data/external_modern_SOURCES.md); TensorRT-LLM 1.x borrows this family's memory side "
         "and step time (catalog/versions.py):"),
        "",
        "| engine | measured ms | stacksim ms |",
        "|---|---|---|",
        *[f"| {w} | {m:.2f} | {p:.2f} |" for w, m, p in batch1],
        "",
        ("Current-engine measurements outside shared/ and every fit (`calibration/data/external_modern.csv`, "
         "`accuracy.external_checks`):"),
        "",
        *_external_table(ext),
        "",
        "TensorRT-LLM 1.x perf-overview max-load throughput (held out, never fitted), median absolute error:",
        "",
        *[f"- {label}: {100 * e:.1f}% over {n} figures" for label, e, n in trt],
        "",
        ("Median and 90th-percentile absolute errors per load stage (mean latencies; per-token time = "
         "(E2E - TTFT) / (output - 1), the shared README's rule). Overloaded runs (the four `reasoning` "
         "runs of raw/blis-training, >10% failures or behind their rate) are left out of fit and check:"),
        "",
        *_summary(df),
        "",
        "Every fold (median error of the held-out stages):",
        "",
        *_folds(df),
        "",
        "Per stage and metric: `calibration/data/modern_errors.csv`"
        + (f", computed in {seconds:.0f} s." if math.isfinite(seconds) else "."),
        "",
        END,
    ]
    text = REPORT.read_text() if REPORT.exists() else ""
    block = "\n".join(body)
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Current engines (vLLM 0.10+, 2026)\n\n" + block + "\n"
    REPORT.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stacksim.calibration.accuracy")
    ap.add_argument("--fit", action="store_true", help="refit the vllm-v1 family and write params_v1.json")
    ap.add_argument("--folds", default="run,model", help="comma list of run, model (or 'none')")
    ap.add_argument("--max-nfev", type=int, default=12, help="iterations per fit (each costs ~11 passes)")
    ap.add_argument("--cold-runs", action="store_true", help="leave-one-run-out folds start from the prior too")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from calibration/data/modern_errors.csv")
    args = ap.parse_args(argv)
    t0 = time.time()
    data = json.loads(costmodel.PARAMS_FILE.read_text())
    base = dict(data["parameters"])
    if args.report_only:
        df = pd.read_csv(ERRORS_CSV)
        vals = {k[: -len("_vllm-v1")]: v for k, v in base.items() if k.endswith("_vllm-v1")}
        write_report(df, vals, batch1_checks(base), external_trtllm(base), external_checks(base), float("nan"))
        print("\n".join(_summary(df)))
        return
    exps = M.experiments()
    if not exps:
        raise SystemExit("no modern measurements found (shared/calibration); set STACKSIM_SHARED")
    with mp.get_context("fork").Pool(2) as pool:
        if args.fit:
            current = {k[: -len("_vllm-v1")]: v for k, v in base.items() if k.endswith("_vllm-v1")}
            base = {k: v for k, v in base.items() if not k.endswith("_vllm-v1")}  # only what this fit sets
            vals = M.fit_family(exps, base, start=current or None, pool=pool, max_nfev=args.max_nfev)
            base = M.with_family(base, vals)
            data["parameters"] = base
            data["modern"] = {"family": "vllm-v1", "experiments": len(exps), "stages": len(M.cases_of(exps)),
                              "data": "shared/calibration/modern_vllm_trainval.csv + raw/blis-training",
                              "method": "simulated serving runs, scipy least_squares soft_l1 on log errors"}
            costmodel.PARAMS_FILE.write_text(json.dumps(data, indent=2) + "\n")
        vals = {k[: -len("_vllm-v1")]: v for k, v in base.items() if k.endswith("_vllm-v1")}
        cases = M.cases_of(exps)
        rows = _rows(cases, M.run_all(cases, base, pool=pool), "in-sample")
        fitted: list[dict[str, object]] = [{"fold": "in-sample", "parameter": k, "value": v} for k, v in vals.items()]
        for by in [f for f in args.folds.split(",") if f in ("run", "model")]:
            # Leave-one-model-out starts cold (a new model must not borrow its own fit); leave-one-
            # run-out starts from the full fit to keep 24 refits affordable (COLD_RUNS for cold).
            warm = by == "run" and not args.cold_runs
            rows += cross_validate(exps, base, by, pool, args.max_nfev, start=dict(vals) if warm else None,
                                   fitted=fitted)
    df = pd.DataFrame(rows)
    ERRORS_CSV.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(ERRORS_CSV, index=False)
    pd.DataFrame(fitted).to_csv(FOLD_PARAMS_CSV, index=False)
    write_report(df, vals, batch1_checks(base), external_trtllm(base), external_checks(base), time.time() - t0)
    print("\n".join(_summary(df)))


if __name__ == "__main__":
    main()
