"""Running a sweep: backends behind one interface, results stored as they arrive.

Each run is a pure function of (sweep, run): it loads the scenario for the point, runs it, and
returns one flat row of headline metrics (or the error). Backends only decide where that
function executes; rows are written in run order, so every backend gives the same dataset.

Results live in ``OUT/runs/part-*.parquet`` (a Parquet dataset, one file per flush, written
atomically), optional ``OUT/requests/run-<id>.parquet``, and ``OUT/sweep.duckdb`` with a view
``runs`` over the dataset. A restarted sweep reads the runs already stored, by (run index, run
id), and skips exactly those: a design may repeat a point (a random design over a few values),
so a run id alone does not name a run.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pandas as pd

from stacksim.errors import StackSimError
from stacksim.scenario.yamlio import shown_path
from stacksim.sweep.spec import Run, Sweep, load_sweep

# At most this much finished work is lost (and redone) if a sweep is killed.
FLUSH_EVERY_S = float(os.environ.get("STACKSIM_SWEEP_FLUSH_S", "2.0"))


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The metrics a sweep keeps per run (flat columns)."""
    lat = summary["latency_ms"]
    deps = summary["deployments"].values()
    util = [d["utilisation"] for d in deps]
    att = summary["slo"].get("attainment_all")
    return {
        "arrived": summary["requests"]["arrived"],
        "completed": summary["requests"]["completed"],
        "rejected": summary["requests"]["rejected"],
        "in_flight": summary["requests"]["in_flight"],
        "preemptions": summary["requests"]["preemptions"],
        "ttft_p50_ms": lat["ttft"]["p50"],
        "ttft_p99_ms": lat["ttft"]["p99"],
        "tpot_p50_ms": lat["tpot"]["p50"],
        "tpot_p99_ms": lat["tpot"]["p99"],
        "e2e_p99_ms": lat["e2e"]["p99"],
        "requests_per_s": summary["throughput"]["requests_per_s"],
        "output_tokens_per_s": summary["throughput"]["output_tokens_per_s"],
        "utilisation": sum(util) / len(util) if util else 0.0,
        "slo_attainment": att,
        "spend_usd_per_hour": summary["spend"]["gpu_usd_per_hour"],
        "spend_usd_per_month": summary["spend"]["gpu_usd_per_month"],
    }


def execute(sweep_file: str, run: Run, requests_dir: str | None) -> dict[str, Any]:
    """Run one point (in a worker). Never raises: an error becomes a failed row."""
    from stacksim.api import run_scenario

    t0 = time.perf_counter()
    row: dict[str, Any] = {"run_index": run.index, "run_id": run.run_id, "point": run.point, "seed": run.seed}
    row.update({f"param:{k}": v for k, v in run.values.items()})
    try:
        sweep = _cached_sweep(sweep_file)
        result = run_scenario(sweep.load(run), seed=run.seed)
        row.update(headline(result.summary))
        row["scenario_sha256"] = result.summary["scenario_sha256"]
        row["status"] = "ok"
        row["error"] = ""
        if requests_dir:
            result.requests.to_parquet(Path(requests_dir) / f"run-{run.run_id}.parquet", index=False)
    except StackSimError as exc:
        row.update(status="failed", error=str(exc), scenario_sha256="")
    except Exception as exc:  # noqa: BLE001 - a sweep records a failed point and goes on
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}", scenario_sha256="")
    row["wall_s"] = round(time.perf_counter() - t0, 4)
    return row


_SWEEPS: dict[str, Sweep] = {}


def _cached_sweep(path: str) -> Sweep:
    if path not in _SWEEPS:
        _SWEEPS[path] = load_sweep(path)
    return _SWEEPS[path]


def pool_context() -> multiprocessing.context.BaseContext:
    """How worker processes start. Forking a process that runs other threads (Ray's, a dashboard's,
    a test runner's) can leave a child holding a lock no thread will release, so then workers
    fork from a fresh server that has imported stacksim (forkserver). Otherwise plain fork, as
    before: forkserver re-imports the main script in every worker, which a script without an
    ``if __name__ == "__main__":`` guard (or one read from stdin) does not survive."""
    if threading.active_count() > 1:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["stacksim.sweep.runner"])
        return ctx
    return multiprocessing.get_context("fork")


class LocalBackend:
    """A process pool on this machine (the default, one worker per core)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)

    def map(self, sweep_file: str, runs: list[Run], requests_dir: str | None) -> Iterator[dict[str, Any]]:
        if self.workers == 1:
            for r in runs:
                yield execute(sweep_file, r, requests_dir)
            return
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=pool_context()) as pool:
            pending = {pool.submit(execute, sweep_file, r, requests_dir) for r in runs[: self.workers * 2]}
            nxt = len(pending)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
                    if nxt < len(runs):
                        pending.add(pool.submit(execute, sweep_file, runs[nxt], requests_dir))
                        nxt += 1


class RayBackend:
    """Runs on a Ray cluster: ``address`` of a running one (``ray://host:10001`` or ``auto``), or
    a local Ray started for the sweep (no dashboard, a small object store) when none is given.
    Each run is one Ray task of :func:`execute`; the sweep file must be readable at the same
    path on the workers (a shared filesystem, or the same checkout on every node)."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        self.workers = workers
        self.address = address

    def map(self, sweep_file: str, runs: list[Run], requests_dir: str | None) -> Iterator[dict[str, Any]]:
        try:
            import ray
        except ImportError:
            raise StackSimError("the ray backend needs Ray: pip install 'stacksim[ray]' (or pip install ray)") from None
        started = False
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False,
                         object_store_memory=100 * 1024 * 1024, log_to_driver=False)
            started = True
        try:
            task = ray.remote(execute)
            pending = [task.remote(sweep_file, r, requests_dir) for r in runs]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            if started:
                ray.shutdown()


BACKENDS: dict[str, Callable[..., Any]] = {"local": LocalBackend, "ray": RayBackend}


def damaged(out: Path, exc: Exception) -> str:
    """The message for a results folder whose Parquet parts cannot be read: which part, and why."""
    import pyarrow.parquet as pq

    try:
        parts = sorted((out / "runs").glob("part-*.parquet"))
    except OSError as bad:  # the folder itself cannot be read (a name too long, no permission)
        return f"cannot read the results folder '{shown_path(str(out))}': {bad.strerror or bad}"
    for part in parts:
        try:
            pq.read_metadata(part)
        except Exception as bad:  # noqa: BLE001 - any failure to read it is the answer
            why = str(bad).splitlines()[0] if str(bad) else type(bad).__name__
            return (f"{part}: not a readable Parquet part ({why}); this results folder is damaged: run the sweep "
                    "again into a new --out folder")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{out / 'runs'}: the results cannot be read ({first}); run the sweep again into a new --out folder"


def _read_parts(out: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Every stored part concatenated (empty without parts); a part that cannot be read is a
    StackSimError naming it, whether a report or a resume reads it."""
    try:
        parts = sorted((out / "runs").glob("part-*.parquet"))
        if not parts:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise StackSimError(damaged(out, exc)) from None


def stored_runs(out: Path) -> set[tuple[int, str]]:
    """The (run index, run id) of every run already stored. Both, not the id alone: repeated
    points share an id, and an edited sweep file can move a point to another index."""
    df = _read_parts(out, ["run_index", "run_id"])
    if df.empty:
        return set()
    return {(int(i), str(r)) for i, r in zip(df["run_index"], df["run_id"])}


def _flush(out: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    d = out / "runs"
    n = len(list(d.glob("part-*.parquet")))
    tmp = d / f".part-{n:05d}.parquet.tmp"
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    os.replace(tmp, d / f"part-{n:05d}.parquet")  # atomic: a kill never leaves half a part


def load_results(out: str | Path) -> pd.DataFrame:
    """Every stored run, sorted by run index (the same on every backend)."""
    df = _read_parts(Path(out))
    if df.empty:
        return df
    return df.sort_values("run_index").reset_index(drop=True)


def write_duckdb(out: Path) -> Path | None:
    """A DuckDB file with a view `runs` over the Parquet dataset (if duckdb is installed)."""
    try:
        import duckdb
    except ImportError:  # pragma: no cover - duckdb is a dependency; keep the sweep usable anyway
        return None
    path = out / "sweep.duckdb"
    con = duckdb.connect(str(path))
    try:
        glob = str((out / "runs" / "part-*.parquet").resolve())
        con.execute(f"CREATE OR REPLACE VIEW runs AS SELECT * FROM read_parquet('{glob}', union_by_name=true)")
    finally:
        con.close()
    return path


def run_sweep(
    sweep_file: str | Path,
    out: str | Path,
    backend: str = "local",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **backend_args: Any,
) -> pd.DataFrame:
    """Run (or resume) a sweep into ``out``; returns every stored run."""
    sweep = load_sweep(sweep_file)
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    req_dir = None
    if sweep.spec.per_request:
        (out / "requests").mkdir(exist_ok=True)
        req_dir = str(out / "requests")
    done = stored_runs(out)
    every = sweep.runs()
    runs = [r for r in every if (r.index, r.run_id) not in done]
    total = len(every)
    if backend not in BACKENDS:
        raise StackSimError(f"unknown backend '{backend}'; available here: {', '.join(BACKENDS)}")
    be = BACKENDS[backend](workers=workers, **{k: v for k, v in backend_args.items() if v is not None})
    buf: list[dict[str, Any]] = []
    finished = total - len(runs)
    if progress:
        progress(finished, total)
    last = time.monotonic()
    for row in be.map(str(Path(sweep_file).resolve()), runs, req_dir):
        buf.append(row)
        finished += 1
        if progress:
            progress(finished, total)
        if time.monotonic() - last >= FLUSH_EVERY_S:
            _flush(out, buf)
            buf, last = [], time.monotonic()
    _flush(out, buf)
    write_duckdb(out)
    return load_results(out)

