"""A real browser: the dashboard served by Streamlit, driven by Playwright in Debian's Chromium
(`.ci/run` installs the `chromium` package; no browser is ever downloaded). Skips where there is
no Chromium or no Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


def quickstart_summary() -> dict:  # type: ignore[type-arg]
    import yaml

    from stacksim import load_scenario_text, run_scenario

    path = APP.parents[1] / "scenarios" / "quickstart.yaml"
    text = path.read_text(encoding="utf-8")
    return run_scenario(load_scenario_text(text, str(path)), seed=int(yaml.safe_load(text).get("seed", 0))).summary


def test_dashboard_runs_and_reacts_to_a_knob(server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.goto(server, wait_until="networkidle")
        page.get_by_text("Press Run.").wait_for(timeout=90_000)
        page.screenshot(path=str(tmp_path / "loaded.png"))
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("p99 TTFT (ms)").wait_for(timeout=90_000)
        page.locator("img").nth(1).wait_for(timeout=30_000)  # latency CDFs, levels over time

        def tile(label: str) -> str:
            return page.locator('[data-testid="stMetric"]', has_text=label).locator('[data-testid="stMetricValue"]').inner_text()

        spend_before = tile("spend $/month")
        # The tiles show summary.json's numbers: the month's total spend, attainment, rejected share.
        s = quickstart_summary()
        assert spend_before == f"${s['spend']['monthly']['total_usd']:,.0f}"
        assert float(tile("SLO attainment")) == pytest.approx(s["slo"]["attainment_all"], abs=5e-4)
        assert tile("rejected") == f"{s['requests']['rejected_share']:.1%}"
        page.get_by_text("spend split").click()
        split = page.locator('[data-testid="stDataFrame"]', has_text="hosted APIs")
        split.wait_for(state="visible", timeout=10_000)  # the split, one click away
        assert split.bounding_box()["height"] > 50  # type: ignore[index]
        page.keyboard.press("Escape")
        assert page.locator("img").count() >= 2  # CDFs and levels over time
        # Halve the pool and the replicas, run again: spend must change.
        for label in ("accelerators", "replicas"):
            box = page.get_by_label(label)
            box.fill("2")
            box.press("Enter")
            page.wait_for_timeout(1500)
        page.get_by_role("button", name="Run", exact=True).click()
        page.wait_for_function(
            "before => [...document.querySelectorAll('[data-testid=stMetric]')].some("
            "m => m.innerText.includes('spend $/month') && !m.innerText.includes(before))",
            arg=spend_before, timeout=90_000,
        )
        page.screenshot(path=str(tmp_path / "after.png"), full_page=True)
        assert tile("spend $/month") != spend_before
        browser.close()
    assert (tmp_path / "after.png").stat().st_size > 10_000
