"""The live task page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium,
installed by scripts/ensure_chromium.sh from `make test`): the page loads, steps appear while the task
runs, the emotion chart is drawn, and the page settles on the outcome. A missing browser is a failure,
not a skip.

Set PAGES_SCREENSHOT_DIR to keep the screenshots (docs/task-page.png is made that way)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import API_TOKEN, scripted_env, steps_of, task_row, wait_for
from test_observability import gated_script, submit

from models import StepKind, TaskStatus

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,2200",
]


@pytest.fixture
def browser() -> Iterator[object]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run `bash scripts/ensure_chromium.sh` as root "
            "(apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="elpis-chromium-")
    options = webdriver.ChromeOptions()
    # Both paths given: Selenium never looks for (or downloads) a browser or driver of its own.
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("PAGES_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a real picture, not an empty frame
    return path


# The page changes under the test (that is the point), so each read is one script run in the page:
# an element found by one call may have been replaced by the next.
def count(driver, selector: str) -> int:
    return driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def text(driver, selector: str) -> str:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector
    )


def seqs(driver) -> list[int]:
    return driver.execute_script("return [...document.querySelectorAll('.step')].map(e => +e.dataset.seq)")


def chart_points(driver, dimension: str) -> int:
    """How many points the chart's line for `dimension` goes through (M x,y then L x,y ...)."""
    d = driver.execute_script(
        "const p = document.querySelector(arguments[0]); return p ? p.getAttribute('d') : ''",
        f"#emotion-chart path.line-{dimension}",
    )
    return len(re.findall(r"[ML]\s*-?[\d.]+,-?[\d.]+", d))


def test_task_page_updates_live_in_a_real_browser(
    browser, start_api, start_worker, db_url, scripted, tmp_path
):
    gate = tmp_path / "gate"
    queue = f"browser-{os.urandom(4).hex()}"
    start_worker(queue=queue, **scripted_env(scripted(gated_script(gate))))
    url = start_api(ELPIS_WORKER__QUEUE=queue)
    batch_id, (task_id,) = submit(url)

    # The token once in the link; the page keeps it in a cookie and drops it from the address.
    browser.get(f"{url}/tasks/{task_id}?token={API_TOKEN}")
    assert browser.title == f"Elpis · task {task_id}"
    assert browser.current_url == f"{url}/tasks/{task_id}"
    assert "Fix the failing test" in text(browser, "#task-header")

    # The task is held in its second turn: what the page shows now arrived while it ran.
    wait_for(
        lambda: count(browser, '.step-tool_call[data-tool="run"]'),
        timeout=90,
        what="the gated step on the page",
    )
    assert task_row(db_url, task_id).status == TaskStatus.running
    assert text(browser, "#live-text") == "live"
    assert "running" in text(browser, "#task-header .badge")
    assert count(browser, '.step-tool_call[data-tool="finish"]') == 0
    shown = seqs(browser)
    assert shown == list(range(len(shown))) and len(shown) >= 7  # turn 1 (5 steps) + think, tool call
    assert chart_points(browser, "valence") == 2  # before turn 1, after turn 1
    screenshot(browser, tmp_path, "task-page-running.png")

    gate.touch()
    wait_for(
        lambda: text(browser, "#live-text") == "finished",
        timeout=120,
        what="the page to see the task finish",
    )
    steps = steps_of(db_url, task_id)
    assert seqs(browser) == [s.seq for s in steps]
    assert "succeeded" in text(browser, "#task-header .badge")
    turns = sum(s.kind == StepKind.emotion for s in steps)
    for dimension in ("valence", "arousal", "dominance"):
        assert chart_points(browser, dimension) == turns + 1
    assert count(browser, "#emotion-chart circle") == 3 * (turns + 1)
    outcome = text(browser, "#task-outcome")
    assert "pass" in outcome and "return a - b" in outcome  # test outcome and the diff
    assert count(browser, "#task-outcome pre.diff span.add") > 0
    screenshot(browser, tmp_path, "task-page.png")

    # A fresh load of the finished page renders the same from the server alone.
    browser.get(f"{url}/tasks/{task_id}")
    assert count(browser, ".step") == len(steps) and chart_points(browser, "valence") == turns + 1

    browser.get(f"{url}/batches/{batch_id}")
    assert "succeeded" in text(browser, f'#task-rows tr[data-task="{task_id}"]')
    assert text(browser, "#live-text") == "finished"
    screenshot(browser, tmp_path, "batch-page.png")
    browser.get(url + "/")
    assert count(browser, f'#task-rows tr[data-task="{task_id}"]') == 1
    screenshot(browser, tmp_path, "index-page.png")
    assert httpx.get(f"{url}/static/elpis.css", timeout=10).status_code == 200
