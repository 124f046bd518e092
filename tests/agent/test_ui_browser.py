"""The web UI in a real headless browser (Debian's Chromium through selenium) against three
real ``rumor agent`` processes on 127.X.Y.1-3.

Window A shows n1's page, window B n2's; they stay open across the tests, in order: the page
lists 3 alive members; an event fired through B's form appears live in A (and the name filter
hides what does not match); the agent's refusals (bad regex, oversize) are shown in the form
and nothing is broadcast; the chart counts the events that arrived; the token is kept in the
tab and sent with every request (``?token=`` on the event stream); after n1 is restarted, A
resumes its stream and shows what it missed exactly once; n3 killed with -9 turns to failed
in A and n2 stopped gracefully to left, each with a mark on the chart; a narrow window keeps
every control reachable; on a fourth agent with ACLs the form shows the 403 and the tab's
token makes the fire go through.

Every wait is bounded. On failure, screenshots and HTML of both windows plus the console log
are saved under tmp/artifacts/ and the path is printed in the failure.
"""

from __future__ import annotations

import functools
import json
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tests.agent.browser import (
    artifacts_on_failure,
    console_errors,
    request_headers,
    start_chromium,
    wait_until,
)
from tests.agent.helpers import AgentProcess, free_host, free_subnet, stop_all, wait_for

SPREAD = 10.0  # gossip reaches every agent well within this
FAIL_DETECT = 30.0  # kill -9 -> failed takes ~5-9 s with the LAN profile


class Pages:
    """The browser with one window per agent page."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver
        self.windows: dict[str, str] = {}

    def open(self, name: str, url: str) -> None:
        if self.windows:
            self.driver.switch_to.new_window("window")
        self.driver.get(url)
        self.windows[name] = self.driver.current_window_handle

    def show(self, name: str) -> WebDriver:
        self.driver.switch_to.window(self.windows[name])
        return self.driver


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProcess]]:
    net = free_subnet(3)
    root = tmp_path_factory.mktemp("ui")
    agents = [AgentProcess(f"n{i}", f"{net}.{i}", root / f"n{i}") for i in range(1, 4)]
    agents[1].args.append("-node-meta=role:web")
    try:
        agents[0].start().wait_ready()
        for a in agents[1:]:
            a.start(f"-join={agents[0].serf_addr}")
        for a in agents:
            a.wait_ready()
            wait_for(lambda a=a: len(a.alive_members()) == 3, SPREAD, f"{a.name} to see 3")
        agents[0].fire("before-page", b"listed as earlier")
        wait_for(lambda: agents[1].events("before-page"), SPREAD, "before-page on n2")
        yield agents
    finally:
        stop_all(agents, signal.SIGKILL)


@pytest.fixture(scope="module")
def pages(cluster: list[AgentProcess]) -> Iterator[Pages]:
    driver = start_chromium()
    try:
        p = Pages(driver)
        p.open("A", f"http://{cluster[0].http_addr}/")  # the redirect to /ui/ included
        p.open("B", f"http://{cluster[1].http_addr}/ui/")
        yield p
    finally:
        driver.quit()


def screenshots_on_failure(test: Callable[..., None]) -> Callable[..., None]:
    """Run the test inside ``artifacts_on_failure`` (a fixture never sees a test's exception,
    so this wraps the test itself; pytest still sees the original signature)."""
    @functools.wraps(test)
    def run(pages: Pages, **kwargs: Any) -> None:
        with artifacts_on_failure(pages.driver, test.__name__):
            test(pages, **kwargs)
    return run


def member_statuses(d: WebDriver) -> dict[str, str]:
    rows = d.execute_script("return [...document.querySelectorAll('#members tbody tr')]"
                            ".map(r => [r.dataset.name, r.dataset.status])")
    return dict(rows)


# Each row's cells by class ("arrived", "name", "payload text", ...), read in one go.
EVENT_ROWS = """
return [...document.querySelectorAll('#events tbody tr')]
  .filter(r => r.dataset.name === arguments[0])
  .map(r => Object.fromEntries([
    ...[...r.cells].map(c => [c.className, c.textContent]),
    ['id', r.dataset.id], ['hidden', r.hidden ? 'yes' : '']]));
"""


def event_rows(d: WebDriver, name: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = d.execute_script(EVENT_ROWS, name)
    return rows


def fill_fire_form(d: WebDriver, name: str, payload: str = "", node: str = "") -> str:
    """Fill the form with the keyboard, press Enter, return the result line once it settles."""
    for field, value in (("fire-name", name), ("fire-payload", payload), ("fire-node", node),
                         ("fire-service", ""), ("fire-tag", "")):
        box = d.find_element(By.ID, field)
        box.clear()
        if value:
            box.send_keys(value)
    result = d.find_element(By.ID, "fire-result")
    d.execute_script("arguments[0].textContent = ''", result)  # not the previous answer
    d.find_element(By.ID, "fire-name").send_keys(Keys.ENTER)

    def settled(_: WebDriver) -> str | None:
        text = result.text
        return text if text and text != "firing…" else None
    return wait_until(d, settled, 10, "the fire form's result")


def chart_total(d: WebDriver) -> int:
    return int(d.execute_script("return document.querySelector('#chart svg').dataset.events"))


def chart_bars(d: WebDriver) -> int:
    return int(d.execute_script("return [...document.querySelectorAll('#chart rect.bar')]"
                                ".reduce((n, b) => n + Number(b.dataset.count), 0)"))


def live_rows(d: WebDriver) -> int:
    return int(d.execute_script("return [...document.querySelectorAll('#events td.arrived')]"
                                ".filter(c => c.textContent !== 'earlier').length"))


def failed_marks(d: WebDriver) -> list[str]:
    marks: list[str] = d.execute_script(
        "return [...document.querySelectorAll('#chart .mark.failed')].map(m => m.textContent)")
    return marks


# ---- the tests, in order ------------------------------------------------------------------


@screenshots_on_failure
def test_page_lists_three_alive_members(pages: Pages) -> None:
    for name in ("A", "B"):
        d = pages.show(name)
        wait_until(d, lambda d: member_statuses(d) == {"n1": "alive", "n2": "alive",
                                                       "n3": "alive"},
                   SPREAD, f"3 alive members on page {name}")
    d = pages.show("A")
    assert d.current_url.endswith("/ui/")
    assert "n1" in d.find_element(By.ID, "agent-name").text
    n2 = d.find_element(By.CSS_SELECTOR, '#members tr[data-name="n2"]')
    assert "role=web" in n2.text and ":8301" in n2.text
    badge = n2.find_element(By.CSS_SELECTOR, ".badge")
    assert badge.text == "alive" and badge.value_of_css_property("color") != \
        d.find_element(By.TAG_NAME, "body").value_of_css_property("color")
    wait_until(d, lambda d: event_rows(d, "before-page"), SPREAD, "the earlier event")
    (row,) = event_rows(d, "before-page")
    assert row["arrived"] == "earlier" and row["payload text"] == "listed as earlier"
    assert d.find_element(By.ID, "conn").text == "live"


@screenshots_on_failure
def test_fired_from_form_appears_on_another_agents_page(pages: Pages) -> None:
    name = f"ui-{uuid.uuid4().hex[:6]}"
    d = pages.show("B")
    result = fill_fire_form(d, name, "v42 ✓", node="n[0-9]")
    assert result.startswith(f"Fired {name} (ID "), result
    (mine,) = wait_until(d, lambda d: event_rows(d, name), SPREAD, "the event on page B")
    assert mine["origin"] == "n2"
    d = pages.show("A")
    (row,) = wait_until(d, lambda d: event_rows(d, name), SPREAD, f"{name} on page A")
    assert row["id"] == mine["id"] and row["payload text"] == "v42 ✓"
    assert row["filters"] == "node=n[0-9]" and row["name"] == name
    assert row["arrived"] != "earlier" and row["origin"] == "—"
    top = d.find_element(By.CSS_SELECTOR, "#events tbody tr")
    assert top.get_attribute("data-name") == name  # newest on top

    glob = d.find_element(By.ID, "event-filter")
    glob.send_keys("ui-*")
    assert event_rows(d, name)[0]["hidden"] == ""
    assert event_rows(d, "before-page")[0]["hidden"] == "yes"
    glob.clear()
    glob.send_keys("before-?age")
    assert event_rows(d, name)[0]["hidden"] == "yes"
    assert event_rows(d, "before-page")[0]["hidden"] == ""
    glob.send_keys(Keys.CONTROL, "a", Keys.BACKSPACE)
    wait_until(d, lambda d: event_rows(d, name)[0]["hidden"] == "", 5, "filter cleared")


@screenshots_on_failure
def test_refusals_show_the_agents_message(pages: Pages, cluster: list[AgentProcess]) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    expected = cluster[1].fire(name, b"", "?node=%5B")
    assert expected.status == 400
    d = pages.show("B")
    result = fill_fire_form(d, name, "x", node="[")
    assert result == f"The agent refused (400): {expected.text}", result
    assert "error" in (d.find_element(By.ID, "fire-result").get_attribute("class") or "")

    too_big = cluster[1].fire(name, b"y" * 600)
    assert too_big.status == 413
    result = fill_fire_form(d, name, "y" * 600)
    assert result == f"The agent refused (413): {too_big.text}", result
    # refused means not broadcast: no agent lists it, no page shows it
    for a in cluster:
        assert a.events(name) == []
    assert event_rows(pages.show("A"), name) == []


@screenshots_on_failure
def test_chart_counts_the_events_that_arrived(pages: Pages, cluster: list[AgentProcess]) -> None:
    d = pages.show("A")
    # one live arrival of its own first (tests run in random order: this one may be first)
    assert cluster[2].fire("chart-first", b"from n3").status == 200
    wait_until(d, lambda d: live_rows(d) >= 1 and chart_total(d) == live_rows(d), SPREAD,
               "the first event charted")
    before = chart_total(d)
    assert before == live_rows(d) >= 1
    for i in range(3):
        assert cluster[2].fire(f"chart-{i}", b"from n3").status == 200
    wait_until(d, lambda d: chart_total(d) == before + 3, SPREAD, "3 more events charted")
    assert live_rows(d) == before + 3
    assert chart_bars(d) == before + 3
    label = d.execute_script("return document.querySelector('#chart svg').ariaLabel")
    assert label.startswith(f"{before + 3} events"), label


@screenshots_on_failure
def test_token_is_kept_in_the_tab_and_sent_with_every_request(
        pages: Pages, cluster: list[AgentProcess]) -> None:
    d = pages.show("B")
    box = d.find_element(By.ID, "token")
    box.send_keys("s3cret-token", Keys.ENTER)  # the page restarts its feeds with it at once
    request_headers(d)  # drop what was logged so far
    assert d.execute_script("return sessionStorage.getItem('rumor.token')") == "s3cret-token"
    name = f"tok-{uuid.uuid4().hex[:6]}"
    box = d.find_element(By.ID, "fire-name")
    box.clear()
    box.send_keys(name)
    payload = d.find_element(By.ID, "fire-payload")
    payload.clear()
    payload.send_keys("line 1", Keys.ENTER, "line 2", Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter
    (row,) = wait_until(d, lambda d: event_rows(d, name), SPREAD, "the event fired by keyboard")
    assert row["payload text"] == "line 1\nline 2"
    d.refresh()
    wait_until(d, lambda d: len(member_statuses(d)) == 3, SPREAD, "members after reload")
    assert d.find_element(By.ID, "token").get_attribute("value") == "s3cret-token"
    # the log has every window's requests; window A (n1's page, its own tab) has no token
    sent = [(url, h) for url, h in request_headers(d)
            if url.startswith(f"http://{cluster[1].http_addr}/v1/")]
    paths = {url.split("/v1/")[1].split("?")[0] for url, _ in sent}
    assert {"agent/members", "agent/self", "event/list", f"event/fire/{name}",
            "event/stream"} <= paths, paths
    for url, headers in sent:
        if "/v1/event/stream?" in url:  # an EventSource cannot set headers: ?token=
            assert "token=s3cret-token" in url.split("?")[1].split("&"), url
        else:
            assert headers.get("X-Consul-Token") == "s3cret-token", (url, headers)
    box = d.find_element(By.ID, "token")
    box.clear()
    box.send_keys(Keys.ENTER)
    assert d.execute_script("return sessionStorage.getItem('rumor.token')") is None


@screenshots_on_failure
def test_page_resumes_after_its_agent_restarts(pages: Pages, cluster: list[AgentProcess]) -> None:
    d = pages.show("A")
    n1, n2 = cluster[0], cluster[1]
    shown = {r.get_attribute("data-id") for r in
             d.find_elements(By.CSS_SELECTOR, "#events tbody tr")}
    assert len(shown) == len(n1.events())
    n1.stop(signal.SIGKILL)
    wait_until(d, lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "down",
               SPREAD, "the page to notice its agent is gone")
    missed = f"missed-{uuid.uuid4().hex[:6]}"
    assert n2.fire(missed, b"fired while n1 was down").status == 200
    n1.start(f"-join={n2.serf_addr}").wait_ready()
    (row,) = wait_until(d, lambda d: event_rows(d, missed), 30, "the missed event on page A")
    assert row["payload text"] == "fired while n1 was down" and row["arrived"] != "earlier"
    wait_until(d, lambda d: d.find_element(By.ID, "conn").text == "live", SPREAD, "live again")
    ids = [r.get_attribute("data-id") for r in
           d.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
    assert len(ids) == len(set(ids)) == len(shown) + 1, "rows lost or repeated"
    wait_for(lambda: len(n1.alive_members()) == 3, SPREAD, "n1 back in the cluster")


@screenshots_on_failure
def test_page_recovers_when_its_agent_lost_its_log(pages: Pages,
                                                  cluster: list[AgentProcess]) -> None:
    """n1 comes back with an empty data dir (as if it ran without one): its bus holds none of
    the Indexes the page saw (it numbers anew, from the clock), so resuming gets a Gap and the
    page starts over from a snapshot."""
    d = pages.show("A")
    n1, n2 = cluster[0], cluster[1]
    shown = set(d.execute_script(
        "return [...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.id)"))
    old_index = int(n1.get_json("/v1/agent/self")["Stats"]["bus"]["last_index"])
    n1.stop(signal.SIGKILL)
    wait_until(d, lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "down",
               SPREAD, "the page to notice its agent is gone")
    missed = f"lost-{uuid.uuid4().hex[:6]}"
    assert n2.fire(missed, b"fired while n1 was away").status == 200
    n1.data_dir = n1.data_dir.with_name("n1-empty")
    n1.start(f"-join={n2.serf_addr}").wait_ready()
    (row,) = wait_until(d, lambda d: event_rows(d, missed), 30, "the missed event on page A")
    assert row["payload text"] == "fired while n1 was away"
    ids = d.execute_script(
        "return [...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.id)")
    assert len(ids) == len(set(ids)) == len(shown) + 1, "rows lost or repeated"
    bus = n1.get_json("/v1/agent/self")["Stats"]["bus"]
    first_new = int(bus["last_index"]) - int(bus["records"]) + 1  # one life: no holes
    assert first_new > old_index, f"n1's new bus holds Indexes the page saw: {bus}"
    wait_until(d, lambda d: d.find_element(By.ID, "conn").text == "live", SPREAD, "live again")
    wait_for(lambda: len(n1.alive_members()) == 3, SPREAD, "n1 back in the cluster")


@screenshots_on_failure
def test_killed_member_turns_failed(pages: Pages, cluster: list[AgentProcess]) -> None:
    d = pages.show("A")
    wait_until(d, lambda d: member_statuses(d).get("n1") == "alive" and
               len(member_statuses(d)) == 3, SPREAD, "3 members after the restart")
    marks_before = len(failed_marks(d))
    cluster[2].stop(signal.SIGKILL)
    wait_until(d, lambda d: member_statuses(d).get("n3") == "failed", FAIL_DETECT,
               "n3 to turn failed on page A")
    row = d.find_element(By.CSS_SELECTOR, '#members tr[data-name="n3"]')
    assert row.find_element(By.CSS_SELECTOR, ".badge").text == "failed"
    assert member_statuses(d) == {"n1": "alive", "n2": "alive", "n3": "failed"}
    assert "2 alive of 3" in d.find_element(By.ID, "members-count").text
    marks = failed_marks(d)
    assert len(marks) == marks_before + 1 and marks[-1].endswith(" n3 failed"), marks
    for name in ("A", "B"):
        assert console_errors(pages.show(name)) == [], f"script errors on page {name}"


@screenshots_on_failure
def test_graceful_leave_turns_left(pages: Pages, cluster: list[AgentProcess]) -> None:
    d = pages.show("A")
    cluster[1].stop(signal.SIGTERM)
    wait_until(d, lambda d: member_statuses(d).get("n2") == "left", SPREAD,
               "n2 to turn left on page A")
    marks: list[str] = d.execute_script(
        "return [...document.querySelectorAll('#chart .mark.left')].map(m => m.textContent)")
    assert [m for m in marks if m.endswith(" n2 left")], marks
    assert d.find_element(By.ID, "conn").text == "live"


@screenshots_on_failure
def test_narrow_window_keeps_every_control_reachable(pages: Pages) -> None:
    d = pages.show("A")
    size = d.get_window_size()
    try:
        d.set_window_size(400, 800)
        width = d.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"page is {width}px wide in a 400px window"
        for control in ("token", "fire-name", "fire-payload", "fire-node", "fire-service",
                        "fire-tag", "fire-submit", "event-filter"):
            el = d.find_element(By.ID, control)
            label = d.find_elements(By.CSS_SELECTOR, f'label[for="{control}"]')
            assert control == "fire-submit" or label, f"{control} has no label"
            assert el.is_displayed() and el.is_enabled(), control
    finally:
        d.set_window_size(size["width"], size["height"])


@screenshots_on_failure
def test_keyboard_reaches_every_control_in_order(pages: Pages) -> None:
    d = pages.show("A")
    d.find_element(By.ID, "token").click()
    order = []
    for _ in range(9):
        order.append(d.execute_script(
            "const e = document.activeElement; return e.id || e.textContent.trim()"))
        d.switch_to.active_element.send_keys(Keys.TAB)
    assert order == ["token", "Use", "fire-name", "fire-payload", "fire-node", "fire-service",
                     "fire-tag", "fire-submit", "event-filter"], order


def test_screenshot_path_is_reported_on_failure(pages: Pages, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUMOR_ARTIFACTS", str(tmp_path))
    with pytest.raises(AssertionError, match="browser artifacts: ") as info:
        with artifacts_on_failure(pages.driver, "demo"):
            raise ValueError("boom")
    saved = Path(str(info.value).rsplit("browser artifacts: ", 1)[1].rstrip(")"))
    assert (saved / "window0.png").read_bytes()[:4] == b"\x89PNG"
    assert (saved / "window1.html").read_text().startswith("<html")


ACL_RULES = 'agent_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'


@screenshots_on_failure
def test_acl_refusal_is_shown_and_the_tabs_token_fires(pages: Pages, tmp_path: Path) -> None:
    """A fourth agent with ACLs (default deny; requests without a token get a read-only
    token): the page loads, a fire shows the agent's 403 text; with a writing token typed
    into the token field the same fire goes through and is listed."""
    config = tmp_path / "acl.json"
    config.write_text(json.dumps({"acl": {
        "enabled": True, "default_policy": "deny", "tokens": {"default": "ui-reader"},
        "token_list": [
            {"SecretID": "ui-reader", "Rules": ACL_RULES + 'event_prefix "" { policy = "read" }'},
            {"SecretID": "ui-writer",
             "Rules": ACL_RULES + 'event_prefix "" { policy = "write" }'}]}}))
    n4 = AgentProcess("n4", free_host(), tmp_path / "n4")
    try:
        n4.start(f"-config-file={config}").wait_ready()
        name = f"acl-{uuid.uuid4().hex[:6]}"
        expected = n4.fire(name, b"x")
        assert expected.status == 403 and "Permission denied" in expected.text, expected
        pages.open("C", f"http://{n4.http_addr}/ui/")  # a new tab: its own session storage
        d = pages.show("C")
        wait_until(d, lambda d: member_statuses(d) == {"n4": "alive"}, SPREAD, "n4's member")
        result = fill_fire_form(d, name, "x")
        assert result == f"The agent refused (403): {expected.text}", result
        assert n4.events(name) == []
        box = d.find_element(By.ID, "token")
        box.send_keys("ui-writer", Keys.ENTER)
        result = fill_fire_form(d, name, "x")
        assert "refused" not in result, result
        wait_until(d, lambda d: event_rows(d, name), SPREAD, "the event fired with the token")
        assert [e["Name"] for e in n4.events(name)] == [name]
    finally:
        n4.stop(signal.SIGKILL)
