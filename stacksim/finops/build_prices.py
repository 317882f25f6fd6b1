"""Regenerate ``catalog/data/gpu_price_points.csv`` from ``shared/facts/gpu_prices.csv``: every
price row with the accelerator id it prices, its purchase type, date and source, unchanged.

    python -m stacksim.finops.build_prices
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from stacksim.calibration.data import shared_dir

OUT = Path(__file__).resolve().parents[1] / "catalog" / "data" / "gpu_price_points.csv"
# gpu_prices.csv names -> catalog accelerator ids (catalog/data/accelerators.csv).
GPU_IDS = {
    "H100 SXM 80GB": "h100-sxm", "H100 PCIe 80GB": "h100-pcie", "H100 NVL 94GB": "h100-nvl",
    "H200 141GB": "h200", "H200 SXM 141GB": "h200", "B200 180GB": "b200", "B200 192GB": "b200",
    "GB200 NVL72": "gb200", "A100 SXM 80GB": "a100-sxm-80gb", "A100 80GB": "a100-sxm-80gb",
    "A100 SXM 40GB": "a100-sxm-40gb", "A100 PCIe 80GB": "a100-pcie-80gb", "L40S 48GB": "l40s",
    "MI300X 192GB": "mi300x",
}
# pricing_type -> purchase: on_demand, spot, reserved (term unstated), capacity_block; "L40 48GB"
# is not a catalog accelerator (L40S is) and is left out.
PURCHASE = {
    "on-demand": "on_demand", "pay-as-you-go": "on_demand", "on-demand-equivalent list": "on_demand",
    "spot": "spot", "reserved (contract, 'from')": "reserved", "capacity-block (short-term reservation)": "capacity_block",
}
COLUMNS = ["accelerator", "provider", "tier", "purchase", "usd_per_gpu_hour", "price_date", "sku", "source"]


def rows() -> list[dict[str, str]]:
    src = shared_dir() / "facts" / "gpu_prices.csv"
    out = []
    with open(src, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            acc = GPU_IDS.get(r["gpu"])
            if acc is None:
                continue
            out.append({"accelerator": acc, "provider": r["provider"], "tier": r["tier"], "purchase": PURCHASE[r["pricing_type"]],
                        "usd_per_gpu_hour": r["usd_per_gpu_hour"], "price_date": r["price_date"], "sku": r["sku"],
                        "source": f"shared/facts/gpu_prices.csv: {r['source']}"})
    return out


def write(path: Path = OUT) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows())
    return path


if __name__ == "__main__":
    sys.stdout.write(f"wrote {write()}\n")
