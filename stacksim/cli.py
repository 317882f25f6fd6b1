"""The ``stacksim`` command: a thin client of the Python API.

Bad input of any kind ends with one clear message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

import typer
from rich.console import Console
from rich.highlighter import ReprHighlighter
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stacksim.errors import StackSimError

if TYPE_CHECKING:
    from stacksim.engine.simulation import Tick

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="stacksim: simulate an AI infrastructure stack and forecast latency, spend and risk.",
    pretty_exceptions_enable=False,
)
# Piped output (grep, files) gets wide lines instead of Rich's 80-column default; COLUMNS, when
# set, wins (Rich reads it).
_PIPE_WIDTH = None if "COLUMNS" in os.environ else 200
# Rich's repr highlighter runs a dozen regular expressions over every printed string; over a
# 200,000-character name it ran for minutes (a hang after the run). Longer text prints plain.
_HIGHLIGHT_MAX_CHARS = 2000


class _BoundedHighlighter(ReprHighlighter):
    def highlight(self, text: Text) -> None:
        if len(text) <= _HIGHLIGHT_MAX_CHARS:
            super().highlight(text)


out_console = Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH, highlighter=_BoundedHighlighter())
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH, highlighter=_BoundedHighlighter())

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def _fail(err: BaseException) -> None:
    # The message quotes what the user wrote: escape it so '[...]' is never read as markup.
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _cannot_write(where: Path, exc: OSError) -> StackSimError:
    """An output folder that cannot be written (a file in the way, no permission, a name too long)."""
    from stacksim.scenario.yamlio import shown_path

    return StackSimError(f"cannot write the results to '{shown_path(str(where))}': {exc.strerror or exc}; give another --out")


class _RunWatch:
    """Watches a ``stacksim run`` between chunks of simulated time (engine/simulation.py Tick).

    A Rich bar on stderr (simulated time, requests so far, wall time left) appears only on a
    terminal and only once the run has taken ``after_s``; it is never part of stdout. While it
    watches, the first Ctrl-C asks the run to stop at the end of the current chunk (the result is
    kept and marked partial); a second one interrupts at once."""

    def __init__(self, label: str, after_s: float = 1.5, show: bool | None = None):
        self.label = label
        self.after = after_s  # a run shorter than this shows no bar at all
        self.show = err_console.is_terminal if show is None else show
        self.start = time.perf_counter()
        self.bar: Any = None
        self.task: Any = None
        self.stop_requested = False
        self._old_handler: Any = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGINT, self._old_handler)
        if self.bar is not None:
            self.bar.stop()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def __call__(self, tick: Tick) -> bool:
        if self.show:
            self._draw(tick)
        return self.stop_requested

    def _draw(self, tick: Tick) -> None:
        if self.bar is None:
            if time.perf_counter() - self.start < self.after:
                return
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[sim]} simulated s"),
                TextColumn("{task.fields[reqs]} requests"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self.task = self.bar.add_task(self.label, total=tick.horizon_s, sim="0", reqs="0")
            self.bar.start()
        if tick.draining:  # how long a drain lasts is not known ahead: an open-ended bar
            left = tick.arrived - tick.finished
            self.bar.update(self.task, description=f"{self.label}: draining", total=None,
                            sim=f"{tick.now_s:,.0f}", reqs=f"{tick.arrived:,} ({left:,} left)")
        else:
            self.bar.update(self.task, completed=min(tick.now_s, tick.horizon_s),
                            sim=f"{tick.now_s:,.0f}/{tick.horizon_s:,.0f}", reqs=f"{tick.arrived:,}")


def _fmt(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def print_summary(summary: dict[str, Any], wall_s: float | None = None, out_dir: Path | None = None) -> None:
    s = summary
    r = s["requests"]
    out_console.print(
        f"[bold]{escape(s['scenario'])}[/]  seed {s['seed']}  simulated {s['time']['end_s']:g} s "
        f"(warm-up {s['time']['warmup_s']:g} s)" + (f"  wall {wall_s:.2f} s" if wall_s is not None else "")
    )
    if "partial" in s:
        out_console.print(f"[bold yellow]partial run[/]: {escape(s['partial']['note'])}", highlight=False, soft_wrap=True)
    if "limit_reached" in s:
        out_console.print(f"[bold yellow]limit reached[/]: {escape(s['limit_reached']['note'])}", highlight=False,
                          soft_wrap=True)
    out_console.print(
        f"requests: arrived {r['arrived']:,} = completed {r['completed']:,} + failed {r['failed']:,} + "
        f"rejected {r['rejected']:,} + in flight {r['in_flight']:,}   (measured {r['measured']:,}, "
        f"preemptions {r['preemptions']:,})"
    )
    t = Table(title="latency (ms)", title_justify="left")
    for col in ("metric", "mean", "p50", "p90", "p95", "p99", "n"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    names = {"ttft": "TTFT", "tpot": "TPOT", "itl": "inter-token", "e2e": "end-to-end", "queue": "queueing"}
    for key, label in names.items():
        v = s["latency_ms"][key]
        t.add_row(label, *(_fmt(v[q], 1) for q in ("mean", "p50", "p90", "p95", "p99")), _fmt(v["count"]))
    out_console.print(t)
    d = Table(title="deployments", title_justify="left")
    for col in ("name", "model", "GPUs", "util", "queue", "batch", "KV used", "preempt", "req/s", "$ run"):
        d.add_column(col, justify="left" if col in ("name", "model") else "right")
    for name, dep in s["deployments"].items():
        d.add_row(
            name,
            f"{dep['model']} {dep['precision']}",
            # Autoscaled: its bounds and mean replicas held (it may start, or sit, at zero).
            (f"{dep['autoscaling']['min_replicas']}-{dep['autoscaling']['max_replicas']}"
             f" (mean {dep['autoscaling']['mean_replicas']:.1f})" if "autoscaling" in dep else f"{dep['replicas']}")
            + f"x{dep['tensor_parallel'] * dep['pipeline_parallel'] * dep.get('data_parallel', 1)} {dep['accelerator']}",
            f"{dep['utilisation']:.0%}",
            f"{dep['mean_queue']:.1f}",
            f"{dep['mean_running']:.1f}",
            f"{dep['mean_kv_used']:.0%}",
            f"{dep['preemptions']:,}",
            f"{dep['requests_per_s']:.2f}",
            f"{dep['spend_usd']:.2f}",
        )
    if s["deployments"]:
        out_console.print(d)
    for name, dep in s["deployments"].items():
        if dep.get("capacity"):
            _print_capacity(name, dep["capacity"])
    if "gateway" in s:
        _print_gateway(s)
    for name, g in s.get("disaggregated", {}).items():
        kv = g["kv_transfer"]
        out_console.print(
            f"disaggregated {name}: {g['ratio']} ({g['prefill']} -> {g['decode']}, util {g['utilisation']['prefill']:.0%} / "
            f"{g['utilisation']['decode']:.0%}), TTFT p50 {_fmt(g['latency_ms']['ttft']['p50'], 1)} ms (first token from "
            f"{g['first_token']}), TPOT p50 {_fmt(g['latency_ms']['tpot']['p50'], 1)} ms; KV {kv['gb']:,.1f} GB over {kv['link']} "
            f"{kv['bandwidth_gbps']:,.0f} Gb/s per GPU, transfer p50 {_fmt(kv['time_ms']['p50'], 1)} ms, p99 {_fmt(kv['time_ms']['p99'], 1)} ms")
    if "agents" in s:
        _print_agents(s["agents"])
    th = s["throughput"]
    sp = s["spend"]
    api = f", API ${sp['api_usd']:,.2f}, egress ${sp['egress_usd']:,.4f} this run" if "api_usd" in sp else ""
    out_console.print(
        f"throughput: {th['requests_per_s']:.2f} req/s, {th['output_tokens_per_s']:,.0f} output tok/s   "
        f"spend: GPUs ${sp['gpu_usd']:,.2f} this run, ${sp['gpu_usd_per_hour']:,.2f}/h, ${sp['gpu_usd_per_month']:,.0f}/month{api}"
    )
    mo = sp.get("monthly")
    if mo:
        parts = ", ".join(f"{k.removesuffix('_usd')} ${v:,.0f}" for k, v in mo.items() if k != "total_usd" and v)
        unit = sp.get("unit_costs", {})
        per = [f"${unit['usd_per_request']:,.5f}/request" if unit.get("usd_per_request") is not None else "",
               f"${unit['usd_per_1m_tokens']:,.2f}/1M tokens" if unit.get("usd_per_1m_tokens") is not None else "",
               f"${unit['usd_per_agent_task']:,.4f}/agent task" if unit.get("usd_per_agent_task") is not None else ""]
        out_console.print(f"month (projected): ${mo['total_usd']:,.0f}" + (f" = {parts}" if parts else "")
                          + ("; " + ", ".join(x for x in per if x) if any(per) else ""))
        teams = sp.get("attribution", {}).get("team", {})
        if len(teams) > 1 or (teams and "(none)" not in teams):
            out_console.print("by team (this run): " + ", ".join(f"{k} ${v['usd']:,.2f} ({v['share']:.0%})" for k, v in teams.items()
                                                             if v["share"] is not None))
    dr = s.get("deprecation_risk")
    if dr:
        o = dr["overall"]
        routes = ", ".join(f"{k} {v['p_lose_primary']:.0%}" for k, v in dr["routes"].items() if v.get("p_lose_primary") is not None)
        out_console.print(
            f"deprecation risk {dr['start_date']}..{dr['horizon_end']}: P(any hosted model retires) {o['p_any_retirement']:.0%}, "
            f"traffic migrating {o['expected_traffic_share_migrating']:.0%} (expected), migration cost ${o['expected_migration_cost_usd']:,.0f}"
            + (f"; P(route loses its primary): {routes}" if routes else "")
            + (f"; not modelled: {o['traffic_share_not_modelled']:.0%} of traffic" if o.get("traffic_share_not_modelled") else ""))
    att = s["slo"].get("attainment")
    if att:
        parts = ", ".join(f"{k.removesuffix('_ms').upper()} {v:.1%}" for k, v in att.items())
        out_console.print(f"SLO attainment: {parts}; all together {s['slo']['attainment_all']:.1%}")
    if out_dir is not None:
        out_console.print(f"results in [bold]{out_dir}[/]")


def _print_capacity(name: str, cap: dict[str, Any]) -> None:
    """A deployment's sustainable capacity against its load (serving/capacity.py); an overload
    in bold red, since its latencies then describe a transient, not a steady state."""
    from stacksim.serving.capacity import capacity_message

    _print_capacity_note(capacity_message(name, cap))


def _print_capacity_note(msg: str) -> None:
    style = "bold red" if msg.startswith("OVERLOADED") else "yellow" if msg.startswith("NEAR CAPACITY") else "dim"
    out_console.print(f"[{style}]{escape(msg)}[/]", highlight=False, soft_wrap=True)


def _print_agents(a: dict[str, Any]) -> None:
    t = Table(title="agent fleets (task latency in s; tokens and $ per task)", title_justify="left")
    for col in ("fleet", "tasks", "done", "stopped", "p50", "p90", "p99", "LLM calls", "tools", "tokens in", "out", "amplif.", "cached", "$/task"):
        t.add_column(col, justify="left" if col == "fleet" else "right")
    for name, f in a["fleets"].items():
        lat, pt, tk = f["latency_s"], f["per_task"], f["tasks"]
        stopped = sum(tk.get(k, 0) for k in ("failed", "timeout", "budget_steps", "budget_tokens", "budget_usd"))
        amp = f["token_amplification"]
        t.add_row(name, f"{tk['arrived']:,}", f"{tk['completed']:,}", f"{stopped:,}", _fmt(lat["p50"]), _fmt(lat["p90"]), _fmt(lat["p99"]),
                  _fmt(pt["llm_calls"]), _fmt(pt["tool_calls"]), _fmt(pt["input_tokens"], 0), _fmt(pt["output_tokens"], 0),
                  f"{amp:.1f}x" if amp else "-", f"{f['cached_input_share']:.0%}", _fmt(pt["cost_usd"], 4))
    out_console.print(t)
    for name, tl in a["tools"].items():
        util = f"{tl['utilisation']:.0%} busy, " if tl["utilisation"] is not None else ""
        out_console.print(f"tool {name}: {tl['calls']:,} calls, {util}{tl['failures']:,} failed, {tl['rate_limited']:,} rate-limited, "
                          f"wait {tl['mean_wait_ms']:,.0f} ms")
    for name, v in a["vector_stores"].items():
        out_console.print(f"vector store {name}: {v['queries']:,} queries, {v['writes']:,} writes, {v['utilisation']:.0%} busy, "
                          f"wait {v['mean_wait_ms']:,.1f} ms")


def _print_gateway(s: dict[str, Any]) -> None:
    g = s["gateway"]
    if g["kind"] == "portkey":
        title = "gateway routes (Portkey configs)"
    else:
        title = f"gateway routes ({g['routing_strategy']}, {g['num_retries']} retries, cooldown {g['cooldown_s']:g} s)"
    t = Table(title=title, title_justify="left")
    for col in ("route", "calls", "ok", "rejected", "failed", "TTFT p50", "e2e p90", "$ run"):
        t.add_column(col, justify="left" if col == "route" else "right")
    for name, r in g["routes"].items():
        lat = r["latency_ms"]
        t.add_row(name, f"{r['calls']:,}", f"{r['completed']:,}", f"{r['rejected']:,}", f"{r['failed']:,}",
                  _fmt(lat["ttft"]["p50"]), _fmt(lat["e2e"]["p90"]), f"{r['cost_usd']:,.2f}")
    out_console.print(t)
    for name, tree in g.get("configs", {}).items():
        out_console.print(f"config {name}: {tree}")
    out_console.print(
        f"gateway: retries {g['retries']:,} ({g['calls_retried']:,} calls), fallbacks {g['fallbacks']:,}, "
        f"cooldowns {g['cooldowns']['count']:,}, cache hits {g['cache']['exact_hits'] + g['cache']['semantic_hits']:,}, "
        f"rate-limited {g['rate_limit_rejections']['gateway']:,} (provider 429s {g['rate_limit_rejections']['provider_429_attempts']:,}), "
        f"budget-rejected {g['budget_rejections']:,}, residency fail-closed {g['residency']['failed_closed']:,} "
        f"(violations {g['residency']['violations']})"
    )
    out_console.print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in g["outcomes"].items()))
    for f in s.get("faults", []):
        dur, out = f["e2e_ms_during"], f["e2e_ms_outside"]
        out_console.print(
            f"fault {f['kind']} on {f['target']} {f['start_s']:g}-{f['end_s']:g} s: {f['requests_during']:,} requests during, "
            f"{f['failed_during']:,} failed, {f['retried_during']:,} retried; e2e p50 {_fmt(dur['p50'])} ms during vs "
            f"{_fmt(out['p50'])} ms outside"
        )


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default runs/<name>-seed<seed>).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
    otel: Annotated[bool, typer.Option("--otel", help="Also write traces.otlp.json (OpenTelemetry spans of agent tasks and gateway calls).")] = False,
    trace_iterations: Annotated[list[str] | None, typer.Option(
        "--trace-iterations", help="Also write iterations.<deployment>.trace.json: that deployment's batch iterations "
        "per replica, for ui.perfetto.dev (repeat for several).")] = None,
) -> None:
    """Run a scenario: print a summary, write summary.json, requests.parquet, plots."""
    from stacksim import load_scenario, run_scenario, write_result

    try:
        rs = load_scenario(scenario)
        if seed is not None and seed < 0:
            raise StackSimError(f"--seed must be >= 0; got {seed}")
        t0 = time.perf_counter()
        with _RunWatch(f"running {rs.scenario.name}") as watch:
            result = run_scenario(rs, seed=seed, spans=otel, trace_iterations=trace_iterations, watch=watch)
        wall = time.perf_counter() - t0
        out_dir = out or Path("runs") / f"{rs.scenario.name}-seed{result.summary['seed']}"
        try:
            write_result(result, out_dir, plots=plots)
        except OSError as exc:
            raise _cannot_write(out_dir, exc) from None
    except StackSimError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:  # a second Ctrl-C, or one while loading or writing: stop at once
        err_console.print("interrupted: stopped at once, before the results were written in full")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    print_summary(result.summary, wall, out_dir)
    partial = result.summary.get("partial")
    if partial is not None:  # Ctrl-C: what was simulated is written and shown; one line says so
        err_console.print(f"interrupted: {escape(partial['note'])}; partial results in {escape(str(out_dir))}",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)


@app.command()
def compare(
    scenarios: Annotated[list[Path], typer.Argument(help="Two or more scenario YAML files; the first is the baseline.")],
    seeds: Annotated[int, typer.Option(help="Seeds per scenario (the same seeds for every scenario).")] = 5,
    seed_base: Annotated[int, typer.Option("--seed-base", help="First seed (seeds are seed-base .. seed-base + seeds - 1).")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write compare.json, compare.csv and plots/<metric>.png here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object.")] = False,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: one per core).")] = None,
) -> None:
    """Run scenarios over the same seeds and show headline metrics side by side, with each one's
    difference from the first and its % change (95% interval paired by seed: t for means,
    bootstrap for percentiles)."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stacksim.compare import basis_lines, table, write_outputs
    from stacksim.compare import compare as run_compare

    bar = Progress(TextColumn("compare"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"), TimeElapsedColumn(),
                   console=err_console, transient=True)
    task = None

    def progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:  # started here, after every file loaded: an error prints no empty bar
            bar.start()
            task = bar.add_task("compare", total=total)
        bar.update(task, completed=done)

    try:
        try:
            res = run_compare(scenarios, seeds=seeds, seed_base=seed_base, workers=workers, progress=progress)
        finally:
            if task is not None:
                bar.stop()
        written = write_outputs(res, out) if out is not None else []
    except StackSimError as exc:
        _fail(exc)
        return
    if json_out:
        sys.stdout.write(json.dumps(res, allow_nan=False) + "\n")
        for w in res["warnings"]:  # also in the object; stderr keeps stdout one JSON object
            err_console.print(escape(w), highlight=False, soft_wrap=True)
    else:
        s = res["seeds"]
        seeds_txt = f"seed {s[0]}" if len(s) == 1 else f"seeds {s[0]}..{s[-1]}"
        out_console.print(f"[bold]compare[/] {len(res['scenarios'])} scenarios x {len(s)} {seeds_txt}; "
                          f"baseline [bold]{escape(res['baseline'])}[/]")
        cols, rows = table(res)
        t = Table(title="mean ± sd over seeds; differences from the baseline with 95% interval (paired by seed) and % change",
                  title_justify="left")
        for i, c in enumerate(cols):
            t.add_column(escape(c), justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*(escape(x) for x in r))
        out_console.print(t)
        for w in res["warnings"]:
            out_console.print(escape(w), highlight=False, soft_wrap=True)
        out_console.print(escape(res["method"]), highlight=False, soft_wrap=True)
        for b in basis_lines(res):
            out_console.print(escape(b), highlight=False, soft_wrap=True)
        for p in written:
            out_console.print(f"wrote {p}", highlight=False)
    for f in res["failures"]:
        err_console.print(f"[bold red]run failed[/]: {escape(f['scenario'])} seed {f['seed']}: {escape(f['error'])}",
                          highlight=False, soft_wrap=True)
    if res["failures"]:
        raise typer.Exit(1)


@app.command()
def validate(scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")]) -> None:
    """Check a scenario file without running it."""
    from stacksim import load_scenario

    try:
        rs = load_scenario(scenario)
    except StackSimError as exc:
        _fail(exc)
        return
    out_console.print(f"[green]OK[/] {scenario}: scenario '{rs.scenario.name}'")
    if rs.size is not None:
        from stacksim.scenario.size import sci

        lim = rs.scenario.limits
        out_console.print(f"  size: ~{sci(rs.size.requests)} requests, ~{sci(rs.size.tokens)} tokens (limits "
                          f"{lim.max_requests:,} and {lim.max_tokens:,})", highlight=False)
    for name, rd in rs.deployments.items():
        p = rd.plan
        a = rd.spec.autoscaling
        n_rep = f"{rd.spec.replicas} (autoscaling {a.min_replicas}-{a.max_replicas})" if a else f"{rd.spec.replicas}"
        out_console.print(
            f"  {name}: {rd.model.id} {rd.spec.precision} on {n_rep} x "
            f"{p.gpus_per_replica} {rd.pool.accelerator.id}; per GPU {p.weights_per_gpu_gb:.1f} GiB weights, "
            f"{p.kv_per_gpu_gb:.1f} GiB KV = {p.kv_capacity_tokens:,} tokens per replica"
        )


@app.command()
def schema() -> None:
    """Print the JSON Schema of the scenario format."""
    from stacksim.scenario import schema_text

    sys.stdout.write(schema_text())


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="Catalog model id, e.g. llama-3.1-70b.")],
    gpu: Annotated[str, typer.Option(help="Catalog accelerator id, e.g. h100-sxm.")],
    tp: Annotated[int, typer.Option(help="Tensor-parallel size.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel size.")] = 1,
    dp: Annotated[int, typer.Option(help="Data parallelism (GPUs used = tp x pp x dp): replicas, or with --ep the "
                                          "attention data-parallel ranks of one MoE replica.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert parallelism: 1 (experts split by --tp) or tp x dp (experts spread "
                                          "over every GPU; 'DEP4' = --dp 4 --ep 4).")] = 1,
    precision: Annotated[str, typer.Option(help="Weights: bf16, fp16, fp8, int8, int4_awq, int4_gptq, fp4, mxfp4, nvfp4.")] = "bf16",
    kv_precision: Annotated[str, typer.Option("--kv-precision", help="KV cache: auto or fp8.")] = "auto",
    engine: Annotated[str, typer.Option(help="Engine profile: vllm, sglang or trtllm (serving/engines.py).")] = "vllm",
    engine_version: Annotated[str | None, typer.Option("--engine-version", help="Engine release, e.g. 0.15.1 or 0.6.3 "
                                                       "(default: the current one; `stacksim catalog engines`).")] = None,
    isl: Annotated[int | None, typer.Option(help="Input (prompt) tokens per request (1000): the value, median or "
                                            "mean of --isl-dist; with --system-prompt-len, system prompt + question.")] = None,
    osl: Annotated[int | None, typer.Option(help="Output tokens per request (1000), as --isl for --osl-dist.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Every request arrives at time zero (max throughput).")] = False,
    qps: Annotated[float | None, typer.Option(help="Open-loop arrivals at this rate (requests/s), spaced by --arrival.")] = None,
    stages: Annotated[str | None, typer.Option(help="Load stages one after another, RATExSECONDS each: 5x600,10x600 "
                                               "(inference-perf load.stages; guidellm rates); spaced by --arrival.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Closed loop with this many clients.")] = None,
    arrival: Annotated[str | None, typer.Option(help="Spacing of --qps / --stages arrivals: poisson (default), constant "
                                                "(every 1/rate), gamma (with --cv), inference-perf-constant or "
                                                "inference-perf-poisson (inference-perf's load types; --stages only).")] = None,
    cv: Annotated[float | None, typer.Option(help="--arrival gamma: coefficient of variation of the gaps (1 = Poisson).")] = None,
    stage_gap: Annotated[float | None, typer.Option(help="Idle seconds between --stages (0; 2 reproduces inference-perf's "
                                                    "interval and head start).")] = None,
    isl_dist: Annotated[str, typer.Option(help="Prompt lengths: fixed, uniform:LOW-HIGH, lognormal:sigma=S[,min=A][,max=B] "
                                          "(median --isl), exponential (mean --isl) or empirical:PATH (a trace file).")] = "fixed",
    osl_dist: Annotated[str, typer.Option(help="Output lengths, as --isl-dist (centred on --osl).")] = "fixed",
    system_prompt_len: Annotated[int | None, typer.Option(help="Shared-prefix prompts (inference-perf shared_prefix): "
                                                          "this many of the --isl tokens are a system prompt shared by "
                                                          "a group, the rest a question; prefix caching hits on them.")] = None,
    num_groups: Annotated[int | None, typer.Option(help="Shared-prefix groups (system prompts), 10.")] = None,
    prompts_per_group: Annotated[int | None, typer.Option(help="Prompts (questions) per group, 10.")] = None,
    multi_turn: Annotated[bool, typer.Option("--multi-turn", help="Each shared-prefix prompt is a chat session whose "
                                             "next turn resends the history (inference-perf enable_multi_turn_chat).")] = False,
    max_num_seqs: Annotated[int | None, typer.Option(help="Engine: max running sequences (engine default).")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(help="Engine: token budget per step (engine default).")] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(help="Engine: share of GPU memory used, 0-1 (engine "
                                                                 "default).")] = None,
    prefix_caching: Annotated[bool | None, typer.Option("--prefix-caching/--no-prefix-caching", help="Engine: automatic "
                                                        "prefix caching (on by default).")] = None,
    async_scheduling: Annotated[bool | None, typer.Option("--async-scheduling/--no-async-scheduling", help="Engine: plan "
                                                          "the next step while one runs (default: the release's; on for "
                                                          "vLLM 0.14+).")] = None,
    kv_offloading_size: Annotated[float | None, typer.Option(help="Engine: CPU memory for offloaded KV blocks, GiB per "
                                                             "replica (vLLM --kv-offloading-size).")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="Engine: longest prompt + output accepted (default: --isl + "
                                                      "--osl with fixed lengths, else the model's context).")] = None,
    requests: Annotated[int | None, typer.Option(help="Requests to simulate (1000; not with --stages).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (arrivals, lengths, prompt order).")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object.")] = False,
) -> None:
    """Predict throughput and latency of one model on one accelerator type under one load."""
    import json

    from stacksim.catalog import UnknownId
    from stacksim.predict import PredictArgs, lengths_label
    from stacksim.predict import predict as run_predict

    args = PredictArgs(model=model, gpu=gpu, tp=tp, pp=pp, dp=dp, ep=ep, precision=precision, kv_precision=kv_precision,
                       engine=engine, engine_version=engine_version, isl=isl, osl=osl, offline=offline, qps=qps, concurrency=concurrency,
                       requests=requests, seed=seed, arrival=arrival, cv=cv, stages=stages, stage_gap_s=stage_gap,
                       isl_dist=isl_dist, osl_dist=osl_dist, system_prompt_len=system_prompt_len, num_groups=num_groups,
                       prompts_per_group=prompts_per_group, multi_turn=multi_turn, max_num_seqs=max_num_seqs,
                       max_num_batched_tokens=max_num_batched_tokens, gpu_memory_utilization=gpu_memory_utilization,
                       prefix_caching=prefix_caching, async_scheduling=async_scheduling, kv_offloading_size_gib=kv_offloading_size, max_model_len=max_model_len)
    try:
        res = run_predict(args)
    except (StackSimError, UnknownId) as exc:
        _fail(exc)
        return
    if json_out:
        sys.stdout.write(json.dumps(res) + "\n")
        return
    out_console.print(
        f"[bold]{escape(res['model'])}[/] {res['precision']} on {res['gpus']} x {escape(res['gpu'])} "
        f"(tp {tp}, pp {pp}, dp {dp}), {res['engine']}, {escape(lengths_label(args))}, {escape(res['load'])}, "
        f"{res['completed']:,} requests"
    )
    out_console.print(
        f"throughput: {res['output_tokens_per_s']:,.0f} output tok/s ({res['output_tokens_per_s_per_gpu']:,.0f} per GPU), "
        f"{res['requests_per_s']:,.2f} req/s"
    )
    _print_capacity_note(res["capacity_note"])
    t = Table(title="latency (ms)", title_justify="left")
    for col in ("metric", "mean", "p50", "p90", "p99"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "inter-token"), ("e2e_ms", "end-to-end")):
        t.add_row(label, *(_fmt(res[key][q], 1) for q in ("mean", "p50", "p90", "p99")))
    out_console.print(t)
    out_console.print(f"[dim]{res['calibration']}[/]")


@app.command()
def sweep(
    target: Annotated[str, typer.Argument(help="A sweep file, or the word 'report'.")],
    results: Annotated[Path | None, typer.Argument(help="With 'report': the results folder.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results folder (default runs/sweep-<name>).")] = None,
    backend: Annotated[str, typer.Option(help="Where runs execute: local (a process pool) or ray.")] = "local",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: one per core).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (ray://host:10001 or auto); default: start a local Ray.")] = None,
) -> None:
    """Run a sweep (resumable) into a Parquet dataset, or `stacksim sweep report RESULTS`."""
    if target == "report":
        if results is None:
            _fail(StackSimError("usage: stacksim sweep report RESULTS_FOLDER"))
            return
        _sweep_report(results)
        return
    from stacksim.sweep.runner import run_sweep

    path = Path(target)
    out_dir = out or Path("runs") / f"sweep-{path.stem}"
    if workers is not None and workers < 1:
        _fail(StackSimError(f"--workers must be >= 1; got {workers}"))
        return
    if address and backend != "ray":
        _fail(StackSimError("--address is for --backend ray"))
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True)
    task = None

    def progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task("sweep", total=total, completed=done)
        bar.update(task, completed=done)

    t0 = time.perf_counter()
    try:
        with bar:
            df = run_sweep(path, out_dir, backend=backend, workers=workers, progress=progress,
                           **({"address": address} if address else {}))
    except StackSimError as exc:
        _fail(exc)
        return
    except OSError as exc:  # the results folder (input files raise StackSimError)
        _fail(_cannot_write(out_dir, exc))
        return
    ok = int((df["status"] == "ok").sum())
    out_console.print(
        f"{len(df)} runs in {out_dir} ({ok} ok, {len(df) - ok} failed), {time.perf_counter() - t0:.1f} s; "
        f"`stacksim sweep report {out_dir}` for the analysis, or query {out_dir}/sweep.duckdb (view `runs`)."
    )


def _sweep_report(results: Path) -> None:
    from stacksim.sweep.report import METRICS, report

    try:
        rep = report(results)
    except (FileNotFoundError, StackSimError) as exc:
        _fail(StackSimError(str(exc)))
        return
    out_console.print(f"[bold]{results}[/]: {rep['runs']} runs, {rep['failed']} failed")
    for r in rep["failures"].itertuples():
        out_console.print(f"  failed run {r.run_index}: {escape(str(r.error).splitlines()[0])}")
    pts = rep["points"]
    params = [c for c in pts.columns if c.startswith("param:")]
    t = Table(title="Pareto front: spend vs p99 TTFT (mean over seeds)", title_justify="left")
    for c in [p.removeprefix("param:") for p in params] + ["$/month", "TTFT p99", "TPOT p99", "tok/s"]:
        t.add_column(c, justify="right")
    for r in rep["pareto"].itertuples(index=False):
        d = r._asdict()
        vals = [str(pts.loc[pts["point"] == d["point"], p].iloc[0]) for p in params]
        t.add_row(*vals, f"{d['spend_usd_per_month']:,.0f}", f"{d['ttft_p99_ms']:.1f}", f"{d['tpot_p99_ms']:.1f}",
                  f"{d['output_tokens_per_s']:,.0f}")
    out_console.print(t)
    s = Table(title="sensitivity: Spearman rank correlation / swing (max-min of means, relative)", title_justify="left")
    s.add_column("parameter")
    for m in METRICS:
        s.add_column(m, justify="right")
    sens = rep["sensitivity"]
    for p in sens["parameter"].unique() if len(sens) else []:
        row = [p]
        for m in METRICS:
            hit = sens[(sens.parameter == p) & (sens.metric == m)]
            row.append("-" if hit.empty else f"{hit.spearman.iloc[0]:+.2f} / {hit.swing.iloc[0]:.2f}".replace("nan", "n/a"))
        s.add_row(*row)
    out_console.print(s)
    for p in rep["plots"]:
        out_console.print(f"plot: {p}")


@app.command()
def optimize(
    file: Annotated[Path, typer.Argument(help="An optimize file (base scenario, knobs, constraints).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default runs/optimize-<name>).")] = None,
) -> None:
    """Find the cheapest configuration of the knobs that meets the constraints."""
    from stacksim.sweep.optimize import capacity, write_outputs
    from stacksim.sweep.optimize import optimize as run_optimize

    out_dir = out or Path("runs") / f"optimize-{file.stem}"
    try:
        res = run_optimize(file)
        try:
            written = write_outputs(res, out_dir)
        except OSError as exc:
            raise _cannot_write(out_dir, exc) from None
    except StackSimError as exc:
        _fail(exc)
        return
    t = Table(title="candidates, cheapest first", title_justify="left")
    knobs = list(res["spec"].knobs)
    for c in [*knobs, "$/month", "status", "why"]:
        t.add_column(c)
    for c in sorted(res["candidates"], key=lambda c: (c.spend_usd_per_month is None, c.spend_usd_per_month or 0)):
        spend = "-" if c.spend_usd_per_month is None else f"{c.spend_usd_per_month:,.0f}"
        t.add_row(*[escape(str(c.values[k])) for k in knobs], spend, c.status, escape(c.reason[:90]))
    out_console.print(t)
    best = res["best"]
    if best is None:
        out_console.print("[bold red]no candidate meets the constraints[/]; see the reasons above")
        raise typer.Exit(1)
    out_console.print(f"[bold green]optimum[/]: {best.values} at ${best.spend_usd_per_month:,.0f}/month "
                      f"(p99 TTFT {best.metrics.get('ttft_p99_ms', float('nan')):.1f} ms, p99 TPOT "
                      f"{best.metrics.get('tpot_p99_ms', float('nan')):.1f} ms, worst over seeds)")
    cap = res["spec"].capacity
    if cap is not None:
        try:
            top, trace = capacity(file, best.values, cap)
        except StackSimError as exc:
            _fail(exc)
            return
        steps = ", ".join(f"{x:g}{'+' if ok else '-'}" for x, ok in trace)
        msg = "not even the low end meets the constraints" if top is None else f"{cap.path} up to {top:g}"
        out_console.print(f"capacity of the optimum: {msg} (bisection: {steps})")
    for p in written:
        out_console.print(f"wrote {p}")


@app.command()
def mix(
    file: Annotated[Path, typer.Argument(help="A mix file (base scenario, deployment, accelerators with prices, rates).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default runs/mix-<name>).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Processes for the profiles (default: one per core).")] = None,
) -> None:
    """The cheapest mix of accelerator types for a deployment's traffic under its SLO (Mélange's
    method: per-size profiles and a bin-packing ILP), against the cheapest single type."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stacksim.sweep.mixplan import run_mix, write_outputs

    bar = Progress(TextColumn("mix"), BarColumn(), MofNCompleteColumn(), TextColumn("profiles and checks"),
                   TimeElapsedColumn(), console=err_console, transient=True)
    task = None

    def progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("mix", total=total)
        bar.update(task, completed=done)

    try:
        try:
            res = run_mix(file, progress=progress, workers=workers)
        finally:
            bar.stop()
        out_dir = out or Path("runs") / f"mix-{file.stem}"
        try:
            written = write_outputs(res, out_dir)
        except OSError as exc:
            raise _cannot_write(out_dir, exc) from None
    except StackSimError as exc:
        _fail(exc)
        return
    plan, shares = res["plan"], res["shares"]
    slo = ", ".join(f"{k} {v:g}" for k, v in plan.spec.slo.model_dump().items() if v is not None)
    out_console.print(f"mix: deployment {plan.spec.deployment} of {plan.base_path.name} on {', '.join(plan.prices)}; "
                      f"{len(shares)} request-size buckets, slice factor {plan.spec.slice_factor}; SLO {slo} "
                      f"for {plan.spec.attainment:.0%} of requests")

    def fleet(a) -> str:  # type: ignore[no-untyped-def]
        return "-" if a is None else ", ".join(f"{n} {g}" for g, n in sorted(a.replicas.items()))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    t = Table(title="fleets by request rate (USD per hour)", title_justify="left")
    for col in ("req/s", "cheapest single type", "$/h", "cheapest mix", "$/h ", "saving", "SLO met: single / mix"):
        t.add_column(col, justify="right" if col not in ("cheapest single type", "cheapest mix") else "left")
    for r in res["rows"]:
        single = r["single"]
        t.add_row(f"{r['rate']:g}", fleet(single), "-" if single is None else f"{single.usd_per_h:,.2f}", fleet(r["mix"]),
                  f"{r['mix'].usd_per_h:,.2f}", pct(r["saving"]),
                  f"{pct(r.get('single_attainment'))} / {pct(r.get('mix_attainment'))}" if plan.spec.check else "not checked")
    out_console.print(t)
    p = Table(title="requests per dollar by bucket (largest buckets; best type first)", title_justify="left")
    for col in ("prompt <=", "answer <=", "share", "best", "lead over next"):
        p.add_column(col, justify="left" if col == "best" else "right")
    for b, s in sorted(shares.items(), key=lambda kv: -kv[1])[:10]:
        per = sorted(((plan.tput[a][b] / plan.prices[a], a) for a in plan.prices), reverse=True)
        lead = "-" if len(per) < 2 or per[1][0] <= 0 else f"{per[0][0] / per[1][0] - 1:+.0%} over {per[1][1]}"
        p.add_row(f"{b[0]:,}", f"{b[1]:,}", f"{s:.1%}", per[0][1], lead)
    out_console.print(p)
    for w in written:
        out_console.print(f"wrote {w}")


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
) -> None:
    """Open the Streamlit dashboard (the same as `streamlit run dashboard/app.py`)."""
    import subprocess

    app_path = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    if not app_path.is_file():
        _fail(StackSimError(f"the dashboard is not next to this installation ({app_path}); run it from a checkout"))
        return
    raise typer.Exit(subprocess.call([sys.executable, "-m", "streamlit", "run", str(app_path), "--server.port", str(port)]))


@app.command()
def catalog(
    kind: Annotated[str, typer.Argument(help="accelerators, models, engines, providers, regions or lifecycle")] = "accelerators",
) -> None:
    """List a catalog: accelerators, models, engine versions, hosted providers, regions, or the fitted model lifetimes."""
    from stacksim.catalog import accelerators, models

    if kind.startswith("acc"):
        t = Table(title="accelerators (dense TFLOPS; sources in stacksim/catalog/data)")
        for c in ("id", "memory GB", "TB/s", "bf16", "fp8", "fp4", "link GB/s", "$/GPU-h"):
            t.add_column(c, justify="left" if c == "id" else "right", no_wrap=c == "id")
        for a in accelerators().values():
            t.add_row(a.id, _fmt(a.memory_gb, 0), _fmt(a.memory_bandwidth_tbps, 2), _fmt(a.peak_bf16_tflops, 0),
                      _fmt(a.peak_fp8_tflops, 0), _fmt(a.peak_fp4_tflops, 0), _fmt(a.interconnect_bandwidth_gbps, 0),
                      _fmt(a.default_price_usd_per_gpu_hour, 2))
    elif kind.startswith("mod"):
        t = Table(title="models (from published configs; sources in stacksim/catalog/data)")
        for c in ("id", "params B", "active B", "layers", "hidden", "heads/kv", "experts", "attention", "context"):
            t.add_column(c, justify="left" if c == "id" else "right", no_wrap=c == "id")
        for m in models().values():
            t.add_row(m.id, _fmt(m.params_total_b, 1), _fmt(m.params_active_b, 1), str(m.num_layers), str(m.hidden_size),
                      f"{m.num_attention_heads}/{m.num_kv_heads}",
                      f"{m.experts_per_token}/{m.num_experts}" if m.is_moe else "-", m.attention, f"{m.max_context:,}")
    elif kind.startswith("prov"):
        from stacksim.catalog.stack import provider_models

        t = Table(title="hosted providers (sources per row in stacksim/catalog/data/providers.csv)")
        for c in ("provider", "model", "TTFT p50 s", "out tok/s p50", "$/1M in", "$/1M out", "context", "RPM", "TPM"):
            t.add_column(c, justify="left" if c in ("provider", "model") else "right")
        for prov, ms in sorted(provider_models().items()):
            for m in ms.values():
                t.add_row(prov, m.model, _fmt(m.ttft_p50_s, 2), _fmt(m.output_tps_p50, 0), _fmt(m.usd_per_1m_input, 2),
                          _fmt(m.usd_per_1m_output, 2), _fmt(m.context_window_tokens, 0), _fmt(m.rpm_limit, 0), _fmt(m.tpm_limit, 0))
    elif kind.startswith("reg"):
        from stacksim.catalog.stack import regions
        from stacksim.network import rtt_fit

        fit = rtt_fit()
        t = Table(title=f"regions (round trips: measured pairs, else {fit.fixed_ms:.1f} ms + {fit.route_factor:.2f} x fibre time; "
                        f"median error {fit.median_ape:.0%}, leave-one-out {fit.loo_median_ape:.0%}, n={fit.n})")
        for c in ("id", "name", "jurisdiction", "aws region"):
            t.add_column(c)
        for r in regions().values():
            t.add_row(r.id, r.name, r.jurisdiction, r.aws_region)
    elif kind.startswith("life"):
        from stacksim.lifecycle.hazard import fit_provider_hazards

        fits = fit_provider_hazards()
        t = Table(title="model lifetimes per lab (fitted to shared/facts/model_deprecations.csv, right-censored)")
        for c in ("lab", "family", "median lifetime d", "Kaplan-Meier d", "models (censored)", "median notice d", "announcements"):
            t.add_column(c, justify="left" if c in ("lab", "family") else "right")
        for lab, f in sorted(fits.items()):
            notice = sorted(f.notice_days)
            t.add_row(lab, f.family, _fmt(float(f.median_days), 0), _fmt(float(f.empirical_median_days), 0),
                      f"{f.n_lifetimes} ({f.n_censored})", _fmt(float(notice[len(notice) // 2]), 0) if notice else "-", str(len(notice)))
    elif kind.startswith("eng"):
        from stacksim.catalog.versions import ASYNC_SCHEDULING_FROM, BANDS, DEFAULT_VERSION

        t = Table(title="engine versions (engine.version / predict --engine-version; fitted profiles in calibration/REPORT.md)")
        for c in ("engine", "releases", "profile", "async scheduling", "data behind it"):
            t.add_column(c, overflow="fold")
        for b in BANDS:
            cur = " (default)" if b.contains(_parse_version(DEFAULT_VERSION[b.kind])) else ""
            first = ASYNC_SCHEDULING_FROM[b.kind]
            if b.lo >= first:
                asy = "on"
            elif b.hi is not None and b.hi <= first:
                asy = "off"
            else:
                asy = f"on from {first[0]}.{first[1]}"
            t.add_row(b.kind, b.label + cur, b.family, asy, b.data + (f"; borrows {b.borrows}" if b.borrows else ""))
    else:
        _fail(StackSimError(f"unknown catalog '{kind}'; valid: accelerators, models, engines, providers, regions, lifecycle"))
        return
    out_console.print(t)


def _parse_version(v: str) -> tuple[int, int]:
    from stacksim.catalog.versions import parse

    return parse(v)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if os.environ.get("STACKSIM_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error[/] (a bug in stacksim, not in your input): {type(exc).__name__}: {exc}\n"
            "Re-run with STACKSIM_DEBUG=1 for the traceback, and report it."
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
