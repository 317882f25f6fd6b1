"""``run_scenario(scenario) -> Result``: the one entry point every client uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stacksim.engine.simulation import Simulation, Tick, Watch
from stacksim.errors import StackSimError
from stacksim.metrics.summary import Result, build_result
from stacksim.scenario import ResolvedScenario, load_scenario

__all__ = ["Tick", "Watch", "run_scenario"]


def run_scenario(
    scenario: ResolvedScenario | str | Path,
    seed: int | None = None,
    progress: Callable[[float, float], None] | None = None,
    spans: bool = False,
    trace_iterations: list[str] | None = None,
    watch: Watch | None = None,
) -> Result:
    """Run a scenario (a resolved scenario, or a path to a YAML file) and return its result.

    ``seed`` overrides the scenario's seed; ``progress(sim_time, horizon)`` is called as the run
    advances (about 100 times); ``spans=True`` keeps every span for an OpenTelemetry export;
    ``trace_iterations`` names deployments whose batch iterations are recorded (a Perfetto view);
    ``watch(tick)`` is called between chunks of simulated time with a :class:`Tick` (time,
    requests so far) and stops the run where it returns True: the result is then partial
    (``summary["partial"]``). Watching never changes what is simulated.
    """
    rs = scenario if isinstance(scenario, ResolvedScenario) else load_scenario(scenario)
    sim = Simulation(rs, seed=seed)
    for name in trace_iterations or []:
        if name not in sim.deployments:
            raise StackSimError(f"--trace-iterations: no deployment named '{name}'; deployments: {', '.join(sim.deployments) or 'none'}")
        for r in sim.deployments[name].replicas:
            r.trace = []
    sim.run(progress, watch)
    return build_result(sim, spans=spans)
