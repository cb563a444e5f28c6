"""The web page in a real headless Chromium: upload a query, pick its modality, search, see scored tiles.

Needs Debian's `chromium` + `chromium-driver` and the `selenium` package. Without them the test is
skipped, except when $CI is set: CI must exercise the page, so there a missing browser is a failure.
Only 127.0.0.1 is contacted; Chromium's background networking is switched off.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tests.test_serve_helpers import make_gallery_folder, trained_run  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOPK = 5


def _missing_browser() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return None
    return ("headless browser test needs " + ", ".join(missing)
            + " (apt-get install chromium chromium-driver; pip install 'selenium>=4')")


class ServerThread:
    """uvicorn serving `app` on a loopback socket bound before start (no port race); stopped by close()."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url} within 20 s")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from vireid.inference import FeatureExtractor
    from vireid.serve.app import create_app
    from vireid.serve.gallery import build_index

    why = _missing_browser()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {why}")
        pytest.skip(why)
    run, _ = trained_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("browser")
    gallery = make_gallery_folder(base / "images", pids=(1, 2, 3, 4), per=2)
    fx = FeatureExtractor(run)
    build_index(fx, gallery, base / "index")
    srv = ServerThread(create_app(base / "index", extractor=fx))
    yield srv, gallery
    srv.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1100,800", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    # selenium-manager would try to download a driver: the explicit path keeps everything offline
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_page_uploads_a_query_and_shows_scored_tiles(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    srv, gallery = server
    query = sorted((gallery / "infrared").rglob("*.jpg"))[0]
    browser.get(srv.url)
    assert "person search" in browser.title

    browser.find_element(By.ID, "file").send_keys(str(query))
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "preview").is_displayed())
    Select(browser.find_element(By.ID, "modality")).select_by_value("infrared")
    topk = browser.find_element(By.ID, "topk")
    topk.clear()
    topk.send_keys(str(TOPK))
    cross = browser.find_element(By.ID, "cross")
    if cross.is_selected():  # search both modalities so the query itself must come back first
        cross.click()
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .tile")) >= TOPK)
    tiles = browser.find_elements(By.CSS_SELECTOR, "#results .tile")
    assert len(tiles) == TOPK
    assert browser.find_element(By.ID, "status").text == f"{TOPK} matches, best first"
    texts = [t.text for t in tiles]
    # each tile reads "<modality>\n#<rank> <score> id <pid>"; the query itself is rank 1 with cosine 1
    scores = []
    for rank, text in enumerate(texts, start=1):
        badge, caption = text.split("\n")
        assert badge in ("visible", "infrared")
        fields = caption.split()
        assert fields[0] == f"#{rank}"
        scores.append(float(fields[1]))
    assert scores[0] == pytest.approx(1.0, abs=1e-3)
    assert scores == sorted(scores, reverse=True)
    assert texts[0].startswith("infrared\n#1 1.000")
    # every tile's gallery image was fetched from the server and decoded by the browser
    WebDriverWait(browser, 10).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#results .tile img")))
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('#results .tile img')].map(i => i.complete && i.naturalWidth)")
    assert all(w and w > 0 for w in loaded), loaded

    shot = tmp_path / "serve_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    if os.environ.get("VIREID_SCREENSHOT_DIR"):
        out = Path(os.environ["VIREID_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / shot.name)
