"""A real browser: headless Chromium drives the running app through each page's main action
(a patching heatmap, training a steering vector and a LoReFT, fitting a sentiment direction and
colouring tokens, a live memorization run and its Cancel) and asserts on what is drawn.
Screenshots go to runs/screenshots/ (and $WORKBENCH_SHOTS when set).

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


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("browser")
    folder = save_tiny_model(tmp_path / "tiny")
    port = free_port()
    env = {**os.environ, "WORKBENCH_APP_MODEL": str(folder), "WORKBENCH_RESULTS_DIR": str(tmp_path / "runs"),
           "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env=env, stdout=log, stderr=subprocess.STDOUT)  # a file: an unread pipe would fill and stall the server
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
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a run still in progress: stop it hard
            proc.kill()
            proc.wait(timeout=10)
        log.close()


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


# ---- helpers for the pages below ------------------------------------------------------------------
def idle(driver, timeout: float = 120) -> None:
    """Wait until the script run has finished and nothing on the page is stale (greyed out)."""
    from selenium.webdriver.support.ui import WebDriverWait
    script = ("return !document.querySelector('[data-stale=\"true\"]') && "
              "!/Running|Stop/.test(document.querySelector('[data-testid=\"stStatusWidget\"]')?.innerText || '')")
    time.sleep(0.5)
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))
    time.sleep(0.5)


def shoot(driver, name: str) -> Path:
    """Save a screenshot (full page height, once the page is idle) and return its path."""
    idle(driver)
    height = driver.execute_script("return document.querySelector('section.main, [data-testid=\"stMain\"]')"
                                   "?.scrollHeight || document.body.scrollHeight")
    driver.set_window_size(1400, max(1000, min(int(height) + 200, 4000)))
    time.sleep(0.5)
    paths = [ARTIFACTS / f"{name}.png"] + ([Path(os.environ["WORKBENCH_SHOTS"]) / f"{name}.png"]
                                           if os.environ.get("WORKBENCH_SHOTS") else [])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    return paths[0]


def fill(driver, wait, label: str, value: str, area: bool = False) -> None:
    """Type ``value`` over the input (or text area) whose label starts with ``label``, and commit it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    tag = "textarea" if area else "input"
    box = wait.until(ec.presence_of_element_located((By.XPATH, f"//{tag}[starts-with(@aria-label, '{label}')]")))
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(value)
    box.send_keys(Keys.CONTROL, Keys.ENTER) if area else box.send_keys(Keys.ENTER)
    idle(driver)  # the rerun this input starts


def click(wait, text: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    button = wait.until(ec.element_to_be_clickable((By.XPATH, f"//button[.//p[text()='{text}']]")))
    button.click()
    return button


def test_interventions_page_trains_and_shows_generations_side_by_side(app_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser()
    try:
        driver.get(app_url + "/Interventions")
        wait = WebDriverWait(driver, 120)
        fill(driver, wait, "Epochs", "3")
        fill(driver, wait, "New tokens", "4")
        click(wait, "Train")
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[text()='Generations side by side']")))
        shoot(driver, "interventions-trained")
        loss = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer .trace")
        assert loss, "no training-loss curve drawn"
        assert "LoReFT training loss" in driver.page_source
        kinds = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")]
        assert kinds.count("LoReFT") == 3 and kinds.count("steering vector") == 3  # three held-out prompts
        texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stCode'] code")]
        assert len(texts) == 9 and any(a != b for a, b in zip(texts[0::3], texts[2::3])), texts  # LoReFT changed some
        assert driver.find_elements(By.XPATH, "//button[.//p[text()='CSV']]")
    finally:
        driver.quit()


def test_sentiment_page_fits_and_colours_each_token(app_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser()
    try:
        driver.get(app_url + "/Sentiment")
        wait = WebDriverWait(driver, 120)
        wait.until(ec.element_to_be_clickable((By.XPATH, "//summary[contains(., 'Words')]"))).click()
        for label, words in (("Positive adjectives", "good great"), ("Negative adjectives", "bad awful"),
                             ("Positive verbs", "loved"), ("Negative verbs", "hated")):
            fill(driver, wait, label, words)
        fill(driver, wait, "Layers", "0, 1")
        click(wait, "Fit directions")
        wait.until(ec.presence_of_element_located((By.XPATH, "//button[.//p[text()='Project']]")))
        fill(driver, wait, "Text", "I thought it was great , I loved it", area=True)
        click(wait, "Project")
        spans = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "span[title^='+'], span[title^='-']"))
        assert [s.text for s in spans] == "I thought it was great , I loved it".split()
        backgrounds = {s.value_of_css_property("background-color") for s in spans}
        assert len(backgrounds) > 2  # coloured by value, not one colour
        shoot(driver, "sentiment-projection")
        click(wait, "Ablate")
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[contains(text(), 'ablated')]")))
        time.sleep(1)
        shoot(driver, "sentiment-ablation")
        assert "Held-out accuracy of each direction" in driver.page_source
    finally:
        driver.quit()


def test_memorization_page_draws_a_live_run_and_cancels_a_long_one(app_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser()
    try:
        driver.get(app_url + "/Memorization")
        wait = WebDriverWait(driver, 120)
        fill(driver, wait, "N values", "2, 4")
        fill(driver, wait, "Steps per N", "20")
        fill(driver, wait, "Text to recite", "the cat sat on the mat . a dog was in the city , Paris is in France !",
             area=True)
        click(wait, "Run")
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[starts-with(text(), 'Saved to memorize-app-')]")))
        time.sleep(1)
        assert "Recited prefix (tokens)" in driver.page_source
        points = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer .trace .points path")
        assert len(points) >= 6, len(points)  # 2 N values x (final loss, first loss, recited prefix)
        shoot(driver, "memorization-live")
        fill(driver, wait, "N values", "2, 4, 8, 16, 32, 48, 60")
        fill(driver, wait, "Steps per N", "2000")
        click(wait, "Run")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stProgress']")))
        time.sleep(2)
        click(wait, "Cancel")
        warning = wait.until(ec.presence_of_element_located((By.XPATH, "//*[starts-with(text(), 'Cancelled after')]")))
        assert " of 7 steps" in warning.text
        shoot(driver, "memorization-cancelled")
    finally:
        driver.quit()


def test_lens_page_draws_the_lens_heatmap(app_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser()
    try:
        driver.get(app_url + "/Lens_Attribution")
        wait = WebDriverWait(driver, 120)
        fill(driver, wait, "Text", "the cat sat on the")
        fill(driver, wait, "Target token", "mat")
        click(wait, "Decode")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".js-plotly-plot .heatmaplayer, .js-plotly-plot g.hm")))
        shoot(driver, "lens")
        labels = [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .ytick text")]
        assert labels == ["L0.resid_post", "L1.resid_post", "L2.resid_post"], labels  # one row per layer
        assert "Logit lens: target_prob of 'mat'" in driver.page_source
    finally:
        driver.quit()
