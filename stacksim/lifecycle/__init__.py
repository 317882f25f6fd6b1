"""Model lifecycles: when hosted models are retired by their providers, and what that costs.

- ``data.py``: the deprecation history (``shared/facts/model_deprecations.csv``, read in place);
- ``hazard.py``: per-provider lifetime hazards and notice periods fitted to it, and the
  lifecycle table (``lifecycle_table``);
- ``match.py``: a scenario's hosted model -> its lab, its table row, its release date;
- ``risk.py``: the Monte Carlo over a planning horizon (``deprecation_risk``);
- ``migration.py``: latency and spend of a route on its replacement.
"""

from stacksim.lifecycle.hazard import HazardFit, fit_provider_hazards, lifecycle_table
from stacksim.lifecycle.risk import ModelUse, deprecation_risk

__all__ = ["HazardFit", "ModelUse", "deprecation_risk", "fit_provider_hazards", "lifecycle_table"]
