"""The dashboard in a real browser (Debian's chromium, driven by selenium) during a fast
simulated demo day served by `catalyst run --serve`.

The default day (2025-11-26) crosses the daily loss limit at 14:02: the page's P&L chart
grows as the day runs, the banner turns HALTED at the stop, and Resume (with a reason typed
in its dialog) records TradingResumed with that reason and the token's name. (That a run
driven through the API still verifies is tests/e2e/test_serve_cli.py's.) Every wait is on
a condition in the page or the log, never a fixed sleep.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.serve_support import SECRET, chromium_paths, serving

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    paths = chromium_paths()
    if paths is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run "
                    "installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,1100",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=opts)
    yield driver
    driver.quit()


@pytest.mark.timeout(180)
def test_dashboard_follows_the_demo_day_halts_and_resumes(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def wait(cond, timeout: float = 90.0):  # type: ignore[no-untyped-def]
        return WebDriverWait(browser, timeout, poll_frequency=0.1).until(cond)

    def points() -> int:
        return int(browser.find_element(By.ID, "pnl-chart").get_attribute("data-points"))

    with serving(tmp_path, "run", "--serve", "--speed", "3000") as served:
        browser.get(served.url + "/")
        assert "Catalyst" in browser.title
        # Without a token the page polls the open read endpoints.
        wait(lambda d: "polling" in d.find_element(By.ID, "live").text, 30)
        wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#tail li"), 30)
        # The token, entered once: kept in sessionStorage, sent as a header, never in a URL.
        browser.find_element(By.ID, "token").send_keys(SECRET)
        browser.find_element(By.ID, "token-save").click()
        wait(lambda d: d.find_element(By.ID, "live").get_attribute("class") == "on", 30)
        assert SECRET not in browser.current_url
        assert browser.execute_script(
            "return sessionStorage.getItem('catalyst.api.token')") == SECRET

        # The P&L chart updates while the day runs.
        wait(lambda d: points() >= 2)
        first = points()
        wait(lambda d: points() > first)
        assert browser.find_elements(By.CSS_SELECTOR, "#pnl-chart line.limit")
        assert browser.find_elements(By.CSS_SELECTOR, "#pnl-chart line.warning")

        # The daily loss limit is crossed: the banner says HALTED, when and why.
        banner = wait(lambda d: (b := d.find_element(By.ID, "banner")).text.startswith(
            "HALTED") and b)
        assert "daily loss limit" in banner.text and "halted" in banner.get_attribute("class")
        browser.save_screenshot(str(tmp_path / "halted.png"))

        # Resume asks for a reason; the event records it and who.
        reason = "loss reviewed with the desk; limits unchanged"
        browser.find_element(By.ID, "resume-btn").click()
        wait(lambda d: d.find_element(By.ID, "resume-dialog").is_displayed(), 10)
        browser.find_element(By.ID, "resume-reason").send_keys(reason)
        browser.find_element(By.ID, "resume-confirm").click()
        wait(lambda d: "trading resumed" in d.find_element(By.ID, "message").text, 30)
        wait(lambda d: d.find_element(By.ID, "banner").text.startswith("ACTIVE"), 60)
        assert reason in browser.find_element(By.ID, "banner").text

        resumed = httpx.get(served.url + "/api/v1/events",
                            params={"subject": "catalyst.risk.trading_resumed"}).json()
        assert [(e["event"]["reason"], e["event"]["resumed_by"]) for e in resumed] == [
            (reason, "api:tester")]
        served.read_until("still serving", 120)  # the day ends; the API stays up
        assert httpx.get(served.url + "/healthz").json() == {"ok": True}
        assert served.interrupt() == 0
