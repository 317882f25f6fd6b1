"""FinOps: what a stack costs. Accelerator prices by purchase type (``pricing.py``) and the
spend section of a run: pools, APIs, egress, services, attribution, monthly projection
(``spend.py``)."""
