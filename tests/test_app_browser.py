"""A real browser: headless Chromium drives the running app to a patching heatmap.

Needs Debian's chromium and chromium-driver (.ci/run installs them); skipped with that reason
where they are absent.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app_helpers import save_tiny_model

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "runs" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    port = free_port()
    env = {**os.environ, "WORKBENCH_APP_MODEL": str(folder), "WORKBENCH_RESULTS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("streamlit did not start within 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_patching_page_renders_a_heatmap_in_chromium(app_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(app_url + "/Patching")
        wait = WebDriverWait(driver, 90)
        fields = {"Target token": "France", "Foil token": "Italy",
                  "Source prompt": "Rome is in the city of"}
        for label, value in fields.items():
            box = wait.until(ec.presence_of_element_located((By.XPATH, f"//input[contains(@aria-label, '{label}')]")))
            box.send_keys("\ue009a")  # Ctrl+A, then type over it
            box.send_keys(value + "\n")
        wait.until(ec.element_to_be_clickable((By.XPATH, "//button[.//p[text()='Run sweep']]"))).click()
        heatmap = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".js-plotly-plot .heatmaplayer, .js-plotly-plot g.hm")))
        assert heatmap is not None
        time.sleep(1)  # let plotly finish drawing before the picture
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "patching.png"))
        assert "Activation patching" in driver.page_source
        assert (ARTIFACTS / "patching.png").stat().st_size > 10_000
    finally:
        driver.quit()
