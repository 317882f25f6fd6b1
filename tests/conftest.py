"""Shared test fixtures. ``SHARED`` is the read-only data folder beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STACKSIM_SHARED", ROOT.parent / "shared"))
