"""The base every scenario model shares: strict pydantic models, the name pattern, and the
physical range every number and string must stay in."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)]

# --------------------------------------------------------------------------- physical ranges

# Free text (a description, a source note, a path, a URL): 4,096 characters, the longest path
# Linux accepts (PATH_MAX). A string without a bound reached pyarrow and Rich whole: a 200,000-
# character tag crashed a run (std::bad_alloc) and a 200,000-character name hung the printing.
MAX_TEXT_CHARS = 4096
# A label that is printed, stored per request or used in a file name (a scenario's name, a tag's
# key or value): 200 characters, under the 255-byte file-name limit with room for "-seed<n>".
MAX_LABEL_CHARS = 200
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS)]
# A latency or a timeout is under a day: a request, a tool call or a network hop slower than that
# is a mistake in units, and a value like 1e308 ms overflowed the lognormal draws at run time.
# Checked on every field whose name ends in _ms (units live in field names); fields in seconds
# that hold a latency set le=MAX_LATENCY_S themselves.
MAX_LATENCY_MS = 86_400_000
MAX_LATENCY_S = 86_400
# Accelerators, replicas, clients, instances: at most 1,000,000, about five times the largest GPU
# cluster built so far (xAI's Colossus, 200,000 GPUs in 2025). 2^63 accelerators priced at
# $2.3e22 a month without complaint.
MAX_COUNT = 1_000_000
# Why a field named here has its upper bound (set with le= on the field), for the error message.
BOUND_REASONS = {
    **dict.fromkeys(("count", "replicas", "min_replicas", "max_replicas", "clients", "instances_per_region"),
                    f"{MAX_COUNT:,} is about five times the largest GPU cluster built (200,000 GPUs)"),
    **dict.fromkeys(("ttft_p50_s", "ttft_p90_s", "timeout_s", "timeout", "stream_timeout", "retry_after"),
                    f"a latency or a timeout is under a day ({MAX_LATENCY_S:,} s); check the units"),
    "request_timeout": "a timeout is under a day; check the units",
}
# HTTP status codes are three digits, 100-599 (RFC 9110, section 15).
STATUS_FIELDS = ("status", "on_status_codes")
# Any other number: at most 10^15 in size. Past 2^53 (9.0e15) a float64 no longer holds every
# integer and an int64 overflows at 9.2e18 (2^63 requests, tokens or dollars reached numpy as an
# OverflowError); the largest figure a scenario needs is a token budget (limits.max_tokens,
# 2e11 by default).
MAX_MAGNITUDE = 10**15


def _out_of_range(name: str, value: Any) -> str | None:
    """Why ``value``, given for the field ``name``, is outside its physical range (None if it is not)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        bad = next((c for c in value if ord(c) < 0x20 and c not in "\t\n\r" or c == "\x7f"), None)
        if bad is not None:
            return f"holds a control character (U+{ord(bad):04X}); write printable text only"
        return None
    if isinstance(value, (int, float)):
        if name in STATUS_FIELDS:
            if not isinstance(value, int) or not 100 <= value <= 599:
                return f"{value:g} is not an HTTP status code; valid: 100 to 599"
            return None
        if name.endswith("_ms") and value > MAX_LATENCY_MS:
            return f"{value:g} ms is more than a day; a latency or a timeout is at most {MAX_LATENCY_MS:,} ms (check the units)"
        if abs(value) > MAX_MAGNITUDE:
            return f"{value:g} is out of range; every number in a scenario is at most 1e15 in size (check the units)"
        return None
    if isinstance(value, (list, tuple)):
        return next((w for w in (_out_of_range(name, v) for v in value) if w), None)
    if isinstance(value, dict):
        keys = next((w for w in (_out_of_range("", k) for k in value) if w), None)
        return keys or next((w for w in (_out_of_range(name, v) for v in value.values()) if w), None)
    return None  # a nested model: checked by its own fields


class Strict(BaseModel):
    # strict: YAML values are already typed, so `count: true` or `rate_per_s: "5"` are errors,
    # not silently converted; allow_inf_nan=False: `.inf` and `.nan` are never valid numbers;
    # str_max_length: every string is bounded (fields with a tighter bound set their own).
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, str_max_length=MAX_TEXT_CHARS)

    @field_validator("*", mode="after")
    @classmethod
    def _physical_range(cls, value: Any, info: ValidationInfo) -> Any:
        why = _out_of_range(info.field_name or "", value)
        if why is not None:
            raise ValueError(why)
        return value


class Loose(Strict):
    """A section of an external vocabulary (LiteLLM, Portkey): extra keys are kept (and reported
    as ignored in the run's summary), never silently dropped."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, str_max_length=MAX_TEXT_CHARS)
