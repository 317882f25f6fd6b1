"""The summary's pool figures: spend and utilisation count every GPU of the pool, used or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacksim import load_scenario_text, run_scenario

QUICKSTART = (Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml").read_text()


def test_idle_gpus_lower_pool_utilisation_and_cost_money() -> None:
    text = QUICKSTART.replace("count: 4", "count: 8").replace("horizon_s: 600", "horizon_s: 120").replace("warmup_s: 60", "warmup_s: 10")
    s = run_scenario(load_scenario_text(text, "q.yaml")).summary
    pool, dep = s["pools"]["h100"], s["deployments"]["chat"]
    assert pool["gpus_used"] == 4 and pool["count"] == 8
    assert pool["utilisation"] == pytest.approx(dep["utilisation"] / 2, abs=2e-6)  # both rounded to 1e-6
    assert pool["idle_spend_usd"] == pytest.approx(pool["spend_usd"] / 2, abs=2e-6)  # rounded to 1e-6 USD
    assert pool["mean_queue"] == pytest.approx(dep["mean_queue"] * dep["replicas"], abs=1e-3)
    assert 0.0 <= pool["utilisation"] <= 1.0


def test_mfu_and_mbu_say_what_busy_does_not() -> None:
    """Busy sits near 1 whenever a sequence runs; MFU and MBU (metrics/efficiency.py) are the
    compute and bandwidth the batches used, in [0, busy], and idle GPUs dilute the pool's."""
    from stacksim.metrics.efficiency import flops_and_bytes

    text = QUICKSTART.replace("horizon_s: 600", "horizon_s: 120").replace("warmup_s: 60", "warmup_s: 10")
    res = run_scenario(load_scenario_text(text, "q.yaml"))
    dep = res.summary["deployments"]["chat"]
    assert dep["utilisation"] > 0.9
    for k in ("mfu", "mbu"):
        assert 0.0 < dep[k] < dep["utilisation"], (k, dep)
    assert dep["mbu"] > dep["mfu"]  # decode-heavy chat is bandwidth-bound
    # One request of 100 prompt and 3 output tokens, by hand: 100 + 2 tokens, 3 logits,
    # pairs 100*101/2 + (2*100 + 1 + 2), KV read 2*100 + 3, weights read once per iteration.
    import numpy as np
    import pandas as pd

    from stacksim.kernels import cost as K

    p = np.zeros(K.N_PARAMS)
    p[K.LIN_FLOPS_PER_TOKEN], p[K.LMHEAD_FLOPS_PER_LOGIT], p[K.ATTN_FLOPS_PER_PAIR] = 10.0, 1.0, 0.5
    p[K.DENSE_WEIGHT_BYTES], p[K.KV_BYTES_PER_TOKEN] = 1000.0, 2.0
    row = pd.DataFrame({"status": ["completed"], "input_tokens": [100], "output_tokens": [3], "cached_tokens": [0],
                        "first_token_s": [1.0]})
    flops, nbytes = flops_and_bytes(p, row, iterations=3)
    assert flops == pytest.approx(102 * 10.0 + 3 * 1.0 + (5050 + 203) * 0.5)
    assert nbytes == pytest.approx(3 * 1000.0 + 203 * 2.0)
    wide = run_scenario(load_scenario_text(text.replace("count: 4", "count: 8"), "q.yaml")).summary["pools"]["h100"]
    assert wide["mfu"] == pytest.approx(dep["mfu"] / 2, abs=2e-6)
    assert wide["mbu"] == pytest.approx(dep["mbu"] / 2, abs=2e-6)
