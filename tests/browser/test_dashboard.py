"""Browser layer: the dashboard served against a real Redis, opened in headless Chromium."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from cluster.config import load_config
from cluster.redis_server import EmbeddedRedis, free_port
from cluster.runs import RunDir
from dashboard.app import Dashboard
from dashboard.store import RunsDirSource, UrlSource
from tests.conftest import write_run

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts"


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are required (scripts/test.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1300",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, for failures
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    yield driver
    driver.quit()


@contextlib.contextmanager
def serving(source):
    """The dashboard on a free loopback port, one thread per request as in production."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    board = Dashboard(source, refresh_ms=500)
    port = free_port()
    server = make_server("127.0.0.1", port, board.app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def served(redis_server):
    _, url = redis_server
    with serving(UrlSource(url)) as page:
        yield url, page


def loss_points(driver) -> int:
    return driver.execute_script(
        "const g = document.querySelector('#loss-graph .js-plotly-plot');"
        "return g && g._fullData && g._fullData.length ? g._fullData[0].x.length : -1;"
    )


def text_of(driver, element_id: str) -> str:
    """Visible text of an element; "" while Dash has not rendered the layout yet."""
    from selenium.common.exceptions import NoSuchElementException

    try:
        return driver.find_element("id", element_id).text
    except NoSuchElementException:
        return ""


def wait_for(fn, want, timeout=30.0, driver=None):
    """Poll ``fn`` until it returns ``want``; on timeout, say what the page showed."""
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = fn()
        if got == want:
            return got
        time.sleep(0.25)
    page = ""
    if driver is not None:
        page = "\npage text:\n" + driver.find_element("tag name", "body").text[:1500]
        logs = [e["message"] for e in driver.get_log("browser")][-10:]
        page += "\nbrowser console:\n" + "\n".join(logs)
    raise AssertionError(f"waited {timeout} s for {want!r}, last saw {got!r}{page}")


def test_dashboard_shows_and_updates_the_loss_chart(browser, served):
    url, page = served
    write_run(url, "run-a", 120)
    browser.get(page)
    wait_for(lambda: loss_points(browser), 120, driver=browser)
    summary = text_of(browser, "summary")
    assert "step 120" in summary and "best EER" in summary
    eer_traces = browser.execute_script(
        "const g = document.querySelector('#eer-graph .js-plotly-plot');"
        "return g && g.data ? g.data.map(t => t.name) : [];"
    )
    assert "95% interval" in eer_traces and "smoothed (picks best)" in eer_traces
    # The latest calibrated evaluation's calibration (step 50; step 100 was not calibrated):
    # on the EER chart and in words.
    assert "Cllr" in eer_traces and "minCllr" in eer_traces
    assert "calibration at step 50: Cllr 0.595 (min 0.500)" in summary
    count_redraws = (
        "window.redraws = 0;"
        "document.querySelector('#loss-graph .js-plotly-plot')"
        ".on('plotly_afterplot', () => { window.redraws += 1; });"
    )
    browser.execute_script(count_redraws)
    # Nothing new arrives, so once the first draws have settled a window of four ticks
    # passes without a redraw (before, every tick redrew every chart).
    deadline, quiet = time.time() + 20, False
    while not quiet and time.time() < deadline:
        browser.execute_script("window.redraws = 0;")
        time.sleep(2.0)
        quiet = browser.execute_script("return window.redraws") == 0
    assert quiet
    write_run(url, "run-a", 30, start=120, evals=False)
    wait_for(lambda: loss_points(browser), 150, driver=browser)
    assert "step 150" in text_of(browser, "summary")
    assert browser.execute_script("return window.redraws") > 0
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


GRAPHS = ("loss-graph", "similarity-graph", "eer-graph", "timing-graph", "producers-graph")


def drawn_charts(driver) -> int:
    """How many of the five charts plotly has drawn with data (traces on screen)."""
    return driver.execute_script(
        "return arguments[0].filter(id => {"
        "  const g = document.querySelector('#' + id + ' .js-plotly-plot');"
        "  return g && g._fullData && g._fullData.length"
        "    && g.querySelectorAll('.scatterlayer .trace, .gl-container canvas').length > 0;"
        "}).length;",
        list(GRAPHS),
    )


def test_a_finished_run_is_drawn_with_one_axis_per_unit_and_no_eta(browser, served):
    from cluster.metrics import MetricsWriter

    url, page = served
    write_run(url, "run-done", 120)
    MetricsWriter(url, "run-done", "test").meta(status="finished")
    browser.get(page)
    # the screenshot is taken of drawn charts, not of the page before its first callback
    wait_for(lambda: drawn_charts(browser), len(GRAPHS), driver=browser)
    summary = text_of(browser, "summary")
    assert "(finished) · step 120 (1000 planned)" in summary and "ETA" not in summary
    axes = browser.execute_script(
        "const l = document.querySelector('#eer-graph .js-plotly-plot')._fullLayout;"
        "return [l.yaxis, l.yaxis2, l.yaxis3].map(a => a && a.title && a.title.text);"
    )
    assert axes == ["EER (%)", "minDCF(0.01)", "Cllr (bits)"]
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-finished.png"))
    assert (ARTIFACTS / "dashboard-finished.png").stat().st_size > 10_000


def test_dashboard_says_when_the_store_is_empty(browser, served):
    _, page = served
    browser.get(page)
    wait_for(lambda: text_of(browser, "message")[:11], "No runs yet", driver=browser)
    # Both callbacks fire on every tick; the empty-store message must survive several of them.
    time.sleep(2.0)
    assert text_of(browser, "message").startswith("No runs yet")
    assert text_of(browser, "run-message") == ""


def test_dashboard_keeps_the_run_while_redis_is_away_and_resumes(browser, served, redis_server):
    server, url = redis_server
    write_run(url, "run-b", 20)
    browser.get(served[1])
    wait_for(lambda: loss_points(browser), 20, driver=browser)
    port = urlsplit(url).port
    server.stop()
    wait_for(
        lambda: "cannot reach Redis" in text_of(browser, "message"),
        True,
        driver=browser,
    )
    wait_for(
        lambda: "Showing the data read so far" in text_of(browser, "run-message"),
        True,
    )
    assert loss_points(browser) == 20  # the charts drawn so far stay
    assert "run-b" in text_of(browser, "run")  # and so does the selection
    server.start(port=port)  # the same data folder: nothing was lost
    write_run(url, "run-b", 10, start=20, evals=False)
    wait_for(lambda: loss_points(browser), 30, driver=browser)
    wait_for(lambda: text_of(browser, "message"), "", driver=browser)
    assert text_of(browser, "run-message") == ""


def test_dashboard_over_a_runs_folder_restarts_the_stored_run(browser, tmp_path):
    """``python -m dashboard --runs runs/`` after training ended: the page starts the run's
    stored Redis itself (inside a request thread) and keeps showing it."""
    run = RunDir.create(tmp_path / "runs", load_config("smoke"), "r-done")
    server = EmbeddedRedis(run.redis_dir)
    write_run(server.start(), "r-done", 25)
    server.stop()
    with serving(RunsDirSource(tmp_path / "runs")) as page:
        browser.get(page)
        wait_for(lambda: loss_points(browser), 25, driver=browser)
        time.sleep(2.0)  # several refreshes later, after the starting request has ended
        assert text_of(browser, "run-message") == ""
        assert loss_points(browser) == 25
        assert EmbeddedRedis(run.redis_dir).running_url() is not None
        first = json.loads((run.redis_dir / "server.json").read_text())["pid"]
        EmbeddedRedis(run.redis_dir).stop()  # stopped by someone else: the page starts it again
        wait_for(lambda: _server_pid(run.redis_dir) not in (None, first), True)
        wait_for(lambda: text_of(browser, "run-message"), "", driver=browser)
        assert loss_points(browser) == 25
    EmbeddedRedis(run.redis_dir).stop()


def _server_pid(folder: Path) -> int | None:
    if EmbeddedRedis(folder).running_url() is None:
        return None
    return json.loads((folder / "server.json").read_text())["pid"]
