"""stacksim: a discrete-event simulator of the AI infrastructure stack.

The plain Python API that the CLI, the dashboard and the notebooks share::

    from stacksim import load_scenario, run_scenario
    result = run_scenario(load_scenario("scenarios/quickstart.yaml"))
    result.summary["latency_ms"]["ttft"]["p99"]

The core imports simpy, numpy, numba, pydantic and pandas only; plotting (matplotlib), the CLI
(typer, rich) and the dashboard (streamlit) import it, never the other way round.
"""

from __future__ import annotations

__version__ = "0.1.0"

from stacksim.api import run_scenario
from stacksim.errors import ScenarioError, StackSimError
from stacksim.metrics.summary import Result, write_result
from stacksim.scenario import load_scenario, load_scenario_text

__all__ = [
    "Result",
    "ScenarioError",
    "StackSimError",
    "__version__",
    "load_scenario",
    "load_scenario_text",
    "run_scenario",
    "write_result",
]
