"""Disaggregated groups in a run's results: the client requests as rows of ``requests.parquet``
(``via: disaggregated``) and the ``disaggregated`` section of ``summary.json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stacksim.metrics import COMPLETED, FAILED, REJECTED, STATUS_NAMES

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation


def leg_clients(sim: Simulation, rids: np.ndarray) -> np.ndarray:
    """For serving request ids: the client request each is a leg of (prefill or decode), else -1.
    Legs of a gateway attempt's client are -1: they are that call's serving requests."""
    dz = sim.disagg
    assert dz is not None
    c = dz.clients
    out = np.full(len(rids), -1, dtype=np.int64)
    if c.n == 0 or len(rids) == 0:
        return out
    cap = int(max(rids.max(), 0)) + 1
    owner = np.full(cap, -1, dtype=np.int64)
    cid = np.arange(c.n)
    direct = c.call[: c.n] < 0
    for col in (c.prefill_rid[: c.n], c.decode_rid[: c.n]):
        ok = (col >= 0) & (col < cap) & direct
        owner[col[ok]] = cid[ok]
    return owner[rids]


def clients_frame(sim: Simulation, end: float, via_gateway: bool = False) -> pd.DataFrame:
    """One row per client request to a disaggregated group, with the columns of a direct request
    (``deployment`` and ``replica`` are the decode side's, ``admitted_s`` and ``cached_tokens`` the
    prefill side's) plus the legs and the transfer. ``via_gateway``: the clients made by gateway
    attempts instead (whose rows in requests.parquet are the gateway's calls)."""
    dz = sim.disagg
    assert dz is not None
    c = dz.clients
    reqs = sim.reqs
    idx = np.flatnonzero((c.arrival_s[: c.n] <= end) & ((c.call[: c.n] >= 0) == via_gateway))
    pre = c.prefill_rid[idx]
    dec = c.decode_rid[idx]
    has_dec = dec >= 0
    dsafe = np.where(has_dec, dec, 0)
    status = dz.client_status()[idx]
    dep_index = {name: i for i, name in enumerate(sim.deployment_names)}
    group = c.group[idx]
    decode_dep = np.array([dep_index[g.decode.name] for g in dz.groups], dtype=np.int64)[group]
    kv_per_token = np.array([g.kv_bytes_per_token for g in dz.groups])[group]
    moved = ~np.isnan(c.transfer_start_s[idx])
    done = np.isin(status, (COMPLETED, REJECTED, FAILED))  # final
    return pd.DataFrame({
        "request_id": idx,
        "arrival_s": c.arrival_s[idx],
        "admitted_s": reqs.admitted_s[pre],
        "first_token_s": np.where(done, c.first_token_s[idx], np.nan),
        "finish_s": np.where(done, c.finish_s[idx], np.nan),
        "input_tokens": c.input_tokens[idx],
        "output_tokens": c.output_tokens[idx],
        "workload": c.workload[idx],
        "deployment": decode_dep,
        "replica": np.where(has_dec, reqs.replica[dsafe], -1),
        "preemptions": reqs.preemptions[pre] + np.where(has_dec, reqs.preemptions[dsafe], 0),
        "status": status,
        "call": c.call[idx],
        "cached_tokens": reqs.cached_tokens[pre],
        "via": "disaggregated",
        "disaggregated": pd.Categorical.from_codes(group, categories=[g.name for g in dz.groups]),
        "prefill_request_id": pre,
        "decode_request_id": dec,
        "prefill_replica": reqs.replica[pre],
        "prefill_done_s": c.prefill_done_s[idx],
        "transfer_start_s": c.transfer_start_s[idx],
        "transfer_end_s": c.transfer_end_s[idx],
        "kv_transfer_gb": np.where(moved, c.input_tokens[idx] * kv_per_token / 1e9, 0.0),
    })


def disagg_summary(sim: Simulation, df: pd.DataFrame, summary: dict[str, Any], end: float) -> dict[str, Any]:
    """``summary["disaggregated"]``: per group (its direct clients and the gateway's attempts at it),
    requests, client latencies (TTFT from the side
    ``first_token`` names), SLO attainment and goodput, throughput, the KV transfers and the two
    deployments' utilisation and pool ratio."""
    from stacksim.metrics.summary import _latencies, stats_ms

    dz = sim.disagg
    assert dz is not None
    sc = sim.rs.scenario
    window = max(end - sc.warmup_s, 1e-12)
    deps = summary["deployments"]
    out: dict[str, Any] = {}
    rows = df[(df["via"] == "disaggregated").to_numpy()]
    gw = clients_frame(sim, end, via_gateway=True)  # attempts of gateway calls at a group
    if len(gw):
        gw["status"] = pd.Categorical.from_codes(gw["status"].to_numpy(), categories=list(STATUS_NAMES.values()))
        rows = pd.concat([rows, gw], ignore_index=True) if len(rows) else gw
    for g in dz.groups:
        mine = rows[(rows["disaggregated"] == g.name).to_numpy()]
        st = mine["status"].astype(str).to_numpy()
        arr = mine["arrival_s"].to_numpy()
        fin = mine["finish_s"].to_numpy()
        completed = st == "completed"
        measured = completed & (arr >= sc.warmup_s)
        lat = _latencies(mine)
        mlat = {k: v[measured] for k, v in lat.items()}
        ok = np.ones(int(measured.sum()), dtype=bool)
        att: dict[str, float] = {}
        for key, x in (("ttft_ms", mlat["ttft"]), ("tpot_ms", mlat["tpot"]), ("e2e_ms", mlat["e2e"])):
            target = getattr(sc.slo, key)
            if target is None:
                continue
            met = np.where(np.isnan(x), True, x * 1000.0 <= target)
            att[key] = round(float(met.mean()), 6) if met.size else 0.0
            ok &= met
        in_window = completed & (fin >= sc.warmup_s) & (fin <= end)
        good = int((ok & in_window[measured]).sum()) if att else None
        moved = mine["transfer_start_s"].notna().to_numpy() & (arr >= sc.warmup_s)
        ready = mine["prefill_done_s"].to_numpy()[moved]
        t_total = mine["transfer_end_s"].to_numpy()[moved] - ready
        t_wait = mine["transfer_start_s"].to_numpy()[moved] - ready
        gb = mine["kv_transfer_gb"].to_numpy()
        p, d = g.prefill, g.decode
        out[g.name] = {
            "prefill": p.name,
            "decode": d.name,
            "ratio": f"{p.spec.replicas}P{d.spec.replicas}D",
            "prefill_replicas": p.spec.replicas,
            "decode_replicas": d.spec.replicas,
            "prefill_gpus": p.gpus,
            "decode_gpus": d.gpus,
            "first_token": g.spec.first_token,
            "requests": {
                "arrived": len(mine),
                "via_gateway": int((mine["call"].to_numpy() >= 0).sum()),
                "completed": int(completed.sum()),
                "failed": int((st == "failed").sum()),
                "rejected": int((st == "rejected").sum()),
                "in_flight": int(len(mine) - completed.sum() - (st == "failed").sum() - (st == "rejected").sum()),
                "measured": int(measured.sum()),
            },
            "latency_ms": {k: stats_ms(mlat[k]) for k in ("ttft", "tpot", "e2e", "queue")},
            "slo": {"attainment": att, "attainment_all": round(float(ok.mean()), 6) if att and ok.size else None,
                    "goodput_requests_per_s": round(good / window, 6) if good is not None else None},
            "throughput": {
                "requests_per_s": round(float(in_window.sum()) / window, 6),
                "output_tokens_per_s": round(float(mine["output_tokens"].to_numpy()[in_window].sum()) / window, 4),
            },
            "kv_transfer": {
                "link": g.spec.transfer.link,
                "bandwidth_gbps": round(g.bandwidth_gbps, 4),
                "latency_ms": g.latency_ms,
                "basis": g.basis,
                "kv_bytes_per_token": g.kv_bytes_per_token,
                "transfers": int(moved.sum()),
                "gb": round(float(gb[moved].sum()), 6),
                "gb_per_transfer": round(float(gb[moved].mean()), 6) if moved.any() else None,
                "time_ms": stats_ms(t_total),
                "link_wait_ms": stats_ms(t_wait),
            },
            "utilisation": {"prefill": deps[p.name]["utilisation"], "decode": deps[d.name]["utilisation"]},
            "decode_prefix_cache_forced": g.decode_cache_forced,
        }
    return out
