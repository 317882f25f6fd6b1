"""From a finished run to the deprecation-risk section: which models it called, with what share
of the traffic and of the spend, and each route's models in the order it would use them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stacksim.lifecycle.risk import ModelUse, deprecation_risk

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation


def lifecycle_section(sim: Simulation, df: pd.DataFrame) -> dict[str, Any]:
    sc = sim.rs.scenario
    assert sc.lifecycle is not None
    rs = sim.rs
    gw = sim.gateway
    done = (df["status"] == "completed").to_numpy()
    n_done = max(int(done.sum()), 1)
    cost = df["cost_total_usd"].to_numpy() if "cost_total_usd" in df else np.zeros(len(df))
    acc: dict[str, dict[str, Any]] = {}  # provider/model -> what its calls add up to

    def add(key: tuple[str, str, str | None, bool], sel: np.ndarray) -> str:
        ok = sel & done
        k = f"{key[0]}/{key[1]}"
        a = acc.setdefault(k, {"id": key, "requests": 0, "spend": 0.0, "inp": 0, "out": 0, "lat_sum": 0.0})
        a["requests"] += int(ok.sum())
        a["spend"] += float(cost[sel].sum())
        a["inp"] += int(df["input_tokens"].to_numpy()[ok].sum())
        a["out"] += int(df["output_tokens"].to_numpy()[ok].sum())
        a["lat_sum"] += float((df["finish_s"] - df["arrival_s"]).to_numpy()[ok].sum())
        return k

    dep = df["deployment"].astype(str).to_numpy()
    direct = (df["via"] == "direct").to_numpy()
    routes: dict[str, list[str]] = {}
    for name, rd in rs.deployments.items():
        sel = direct & (dep == name)
        key = add((name, rd.model.id, rd.model.id, True), sel)
        if sel.any():
            routes[name] = [key]
    if gw is not None:
        tgt = df["target"].astype(str).to_numpy() if "target" in df else np.full(len(df), "")
        label_key: dict[int, str] = {}
        for t in gw.targets:
            sel = ~direct & (tgt == t.label)
            if t.kind == "self":
                rd = rs.deployments[t.deployment]  # type: ignore[index]
                label_key[t.index] = add((t.deployment, rd.model.id, rd.model.id, True), sel)  # type: ignore[arg-type]
            else:
                assert t.model is not None
                provider = gw.plan.endpoints[t.endpoint].provider  # type: ignore[index]
                label_key[t.index] = add((provider, t.model.model, t.model.catalog_model, False), sel)
        plan = gw.plan
        for group, idx in plan.groups.items():
            # Primary first: the group's own deployments by the traffic they carried, then its fallbacks.
            own = sorted(idx, key=lambda i: -acc[label_key[i]]["requests"])
            chain = [label_key[i] for i in own]
            for fb in plan.fallbacks.get(group, plan.default_fallbacks):
                chain += [label_key[i] for i in plan.groups.get(fb, [])]
            seen: list[str] = []
            for k in chain:
                if k not in seen:
                    seen.append(k)
            routes[group] = seen
    uses = [ModelUse(*a["id"], traffic_share=a["requests"] / n_done, spend_usd=a["spend"], requests=a["requests"],
                     input_tokens=a["inp"], output_tokens=a["out"],
                     latency_s=a["lat_sum"] / a["requests"] if a["requests"] else None) for a in acc.values()]
    return deprecation_risk(uses, routes, sc.lifecycle, sim.seed)
