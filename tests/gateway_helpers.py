"""Building blocks for small gateway scenarios, shared by the LiteLLM and Portkey tests."""

from __future__ import annotations

from typing import Any


def endpoint(provider: str = "openai", region: str = "us-east", **kw: Any) -> dict[str, Any]:
    """A provider endpoint with limits far above any test's traffic (no provider 429s)."""
    return {
        "provider": provider,
        "region": region,
        "rpm_limit": 1_000_000,
        "tpm_limit": 1_000_000_000,
        **kw,
    }


def fixed(n: int) -> dict[str, Any]:
    return {"kind": "fixed", "value": n}


def workload(
    target_: str, rate: float = 2.0, inp: int = 200, out: int = 20, **kw: Any
) -> dict[str, Any]:
    return {
        "target": target_,
        "arrival": {"kind": "poisson", "rate_per_s": rate},
        "input_tokens": fixed(inp),
        "output_tokens": fixed(out),
        **kw,
    }
