"""A real headless browser for the web UI tests: Debian's Chromium driven through its
chromedriver by selenium (both installed by ``scripts/test``; nothing is downloaded).

* ``start_chromium``: a headless Chromium session with the browser's console and network
  logs enabled.
* ``artifacts_on_failure``: on any exception inside it, save a PNG screenshot and the HTML of
  every open window plus the browser's console log under ``tmp/artifacts/`` (or
  ``$RUMOR_ARTIFACTS``) and re-raise with that path in the message.
* ``wait_until``: a bounded wait on the page (selenium's WebDriverWait) whose timeout message
  says what was awaited.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def artifacts_dir() -> Path:
    return Path(os.environ.get("RUMOR_ARTIFACTS") or ROOT / "tmp" / "artifacts")


def start_chromium(width: int = 1200, height: int = 900) -> WebDriver:
    """A headless Chromium; fails with a hint when the Debian packages are missing."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            raise AssertionError(f"{path} is missing: apt-get install {package} "
                                 "(scripts/test does it when run as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def wait_until(driver: WebDriver, check: Callable[[WebDriver], T], timeout: float,
               what: str) -> T:
    """``check(driver)`` once it is truthy; AssertionError naming ``what`` after ``timeout``."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)  # type: ignore[no-any-return]
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from None


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """Script errors the page logged (network failures while an agent is down are expected
    and left out)."""
    logs: list[dict[str, Any]] = driver.get_log("browser")
    return [e for e in logs if e.get("level") == "SEVERE" and e.get("source") != "network"]


def request_headers(driver: WebDriver) -> list[tuple[str, dict[str, str]]]:
    """(url, headers) of each request the browser sent since the last call (DevTools log)."""
    out = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            request = message["params"]["request"]
            out.append((request["url"], request.get("headers", {})))
    return out


@contextmanager
def artifacts_on_failure(driver: WebDriver, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, Exception):
            raise
        where = artifacts_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{int(time.time())}"
        saved = _save(driver, where)
        raise AssertionError(f"{exc}\n(browser artifacts: {saved})") from exc


def _save(driver: WebDriver, where: Path) -> str:
    try:
        where.mkdir(parents=True, exist_ok=True)
        current = driver.current_window_handle
        for i, handle in enumerate(driver.window_handles):
            driver.switch_to.window(handle)
            driver.save_screenshot(str(where / f"window{i}.png"))
            (where / f"window{i}.html").write_text(driver.page_source)
        driver.switch_to.window(current)
        (where / "console.json").write_text(json.dumps(driver.get_log("browser"), indent=1))
    except (OSError, WebDriverException) as exc:
        return f"{where} (incomplete: {exc})"
    return str(where)
