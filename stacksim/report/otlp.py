"""OpenTelemetry export: a run's spans as OTLP/JSON (an ExportTraceServiceRequest, as an OTLP
HTTP exporter sends it: opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding), so Jaeger,
Tempo or Langfuse show one agent task as one trace, its LLM calls, tools, retrievals and
sub-agents as a tree, and each gateway call with its attempts.

Ids are deterministic (derived from the scenario hash, the seed and the span number); trace and
span ids are hex strings, as OTLP/JSON requires. Simulated time 0 is mapped to EPOCH_UNIX_S.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

EPOCH_UNIX_S = 1_767_225_600  # 2026-01-01T00:00:00Z: simulated time zero on the exported clock
KIND = {"task": 1, "subagent": 1, "llm": 3, "tool": 3, "retrieval": 3, "memory_read": 3, "memory_write": 3,
        "gateway": 2, "attempt": 3}  # SPAN_KIND_INTERNAL 1, SERVER 2, CLIENT 3


def _attr(k: str, v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"key": k, "value": {"boolValue": v}}
    if isinstance(v, int):
        return {"key": k, "value": {"intValue": str(v)}}  # int64 is a JSON string in OTLP/JSON
    if isinstance(v, float):
        return {"key": k, "value": {"doubleValue": v}}
    return {"key": k, "value": {"stringValue": str(v)}}


def _ns(t: float) -> str:
    return str(EPOCH_UNIX_S * 1_000_000_000 + round(t * 1e9))


def otlp_document(spans: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    salt = f"{summary.get('scenario_sha256', '')}:{summary.get('seed', 0)}"
    trace_ids: dict[str, str] = {}

    def tid(t: str) -> str:
        if t not in trace_ids:
            trace_ids[t] = hashlib.sha256(f"{salt}:{t}".encode()).hexdigest()[:32]
        return trace_ids[t]

    def sid(t: str, i: int) -> str:
        return hashlib.sha256(f"{salt}:{t}:{i}".encode()).hexdigest()[:16]

    out = []
    for row in spans.itertuples(index=False):
        span: dict[str, Any] = {
            "traceId": tid(row.trace),
            "spanId": sid(row.trace, int(row.span_id)),
            "name": row.name,
            "kind": KIND.get(row.kind, 1),
            "startTimeUnixNano": _ns(row.start_s),
            "endTimeUnixNano": _ns(max(row.end_s, row.start_s)),
            "attributes": [_attr("stacksim.span_kind", row.kind)] + [_attr(k, v) for k, v in row.attrs.items() if v is not None],
            "status": {"code": 1 if row.ok else 2},
        }
        if int(row.parent_id) >= 0:
            span["parentSpanId"] = sid(row.trace, int(row.parent_id))
        out.append(span)
    from stacksim import __version__

    return {"resourceSpans": [{
        "resource": {"attributes": [_attr("service.name", "stacksim"), _attr("stacksim.scenario", summary.get("scenario", "")),
                                    _attr("stacksim.seed", int(summary.get("seed", 0)))]},
        "scopeSpans": [{"scope": {"name": "stacksim", "version": __version__}, "spans": out}],
    }]}


def write_otlp(spans: pd.DataFrame, summary: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(otlp_document(spans, summary)) + "\n", encoding="utf-8")
    return path
