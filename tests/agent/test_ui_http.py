"""The web UI's HTTP side, over real loopback sockets: what ``/ui/`` serves, with which types
and caching headers, the redirect from ``/``, and ``-ui=false`` (flag, env, both file keys).

The page itself is driven in a real browser by ``test_ui_browser.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio

from agent.api.ui import DISABLED_TEXT, UI_DIR, load_files
from agent.config import ConfigError, load_config
from tests.agent.helpers import AgentProcess, free_host, in_process_agent, random_subnet

TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


def referenced_files() -> set[str]:
    """Every file the page loads: index.html's src/href and each module's imports, followed."""
    index = (UI_DIR / "index.html").read_text()
    found = set(re.findall(r'(?:src|href)="([^"#:]+)"', index))
    todo = [f for f in found if f.endswith(".js")]
    while todo:
        module = todo.pop()
        text = (UI_DIR / module).read_text()
        for imp in re.findall(r'from "\./([^"]+)"', text):
            name = str(Path(module).parent / imp)
            if name not in found:
                found.add(name)
                todo.append(name)
    return found


def test_every_file_the_page_loads_is_shipped() -> None:
    files = load_files()
    wanted = referenced_files()
    assert {"style.css", "js/main.js", "js/api.js", "favicon.svg"} <= wanted
    assert wanted <= set(files), sorted(wanted - set(files))
    # and nothing in the directory is left out of the table by an unknown suffix
    on_disk = {p.relative_to(UI_DIR).as_posix() for p in UI_DIR.rglob("*") if p.is_file()}
    assert on_disk == set(files)


async def test_ui_files_types_and_caching() -> None:
    async with in_process_agent(free_host(), "ui1") as a:
        with trio.fail_after(20):
            for name in sorted(load_files()):
                r = await a.client.get(f"/ui/{name}")
                assert r.status_code == 200, (name, r.text)
                assert r.headers["content-type"] == TYPES[Path(name).suffix], name
                assert r.headers["cache-control"] == "no-cache"
                assert r.headers["x-content-type-options"] == "nosniff"
                assert "default-src 'self'" in r.headers["content-security-policy"]
                assert r.content == (UI_DIR / name).read_bytes()
                etag = r.headers["etag"]
                again = await a.client.get(f"/ui/{name}", headers={"If-None-Match": etag})
                assert again.status_code == 304 and again.content == b""
                assert again.headers["etag"] == etag
                other = await a.client.get(f"/ui/{name}", headers={"If-None-Match": '"x"'})
                assert other.status_code == 200 and other.content == r.content

            page = await a.client.get("/ui/")
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert b'<script type="module" src="js/main.js"></script>' in page.content
            head = await a.client.head("/ui/")
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == str(len(page.content))


async def test_redirects_and_unknown_paths() -> None:
    async with in_process_agent(free_host(), "ui2") as a:
        with trio.fail_after(20):
            for path in ("/", "/ui"):
                r = await a.client.get(path)
                assert r.status_code == 301 and r.headers["location"] == "/ui/", path
            followed = await a.client.get("/", follow_redirects=True)
            assert followed.status_code == 200 and str(followed.url).endswith("/ui/")
            for path in ("/ui/nope.js", "/ui/js/", "/ui/%2e%2e/api/ui.py", "/ui/../config.py",
                         "/ui/js/../../api/ui.py", "/ui/index.html/x"):
                r = await a.client.get(path)
                assert r.status_code == 404 and r.text == "404 page not found", path
            r = await a.client.post("/ui/")
            assert r.status_code == 405 and "GET" in r.headers["allow"]
            # the API is untouched by the UI's routes
            assert (await a.client.get("/v1/agent/members")).status_code == 200


async def test_ui_off_serves_nothing_and_says_so_at_root() -> None:
    async with in_process_agent(free_host(), "ui3", ui=False) as a:
        with trio.fail_after(20):
            for path in ("/ui/", "/ui", "/ui/js/main.js", "/ui/style.css"):
                r = await a.client.get(path)
                assert r.status_code == 404, path
            root = await a.client.get("/")
            assert root.status_code == 200 and root.text == DISABLED_TEXT
            assert (await a.client.get("/v1/agent/members")).status_code == 200


def test_ui_process_flag_off(tmp_path: Path) -> None:
    host = free_host(f"{random_subnet()}")
    agent = AgentProcess("uioff", host, tmp_path / "uioff").start("-ui=false")
    try:
        agent.wait_ready()
        assert agent.request("GET", "/ui/").status == 404
        assert agent.request("GET", "/").text == DISABLED_TEXT
        assert "Web UI: off" in agent.log_path.read_text()
    finally:
        agent.stop()
    on = AgentProcess("uion", host, tmp_path / "uion").start()
    try:
        on.wait_ready()
        r = on.request("GET", "/")
        assert r.status == 301 and r.headers["location"] == "/ui/"
        assert on.request("GET", "/ui/").status == 200
        assert f"Web UI: http://{host}:8500/ui/" in on.log_path.read_text()
    finally:
        on.stop()


@pytest.mark.parametrize("content", [
    {"ui_config": {"enabled": False}},
    {"ui": False},
])
def test_config_file_keys_turn_it_off(tmp_path: Path, content: dict[str, object]) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(content))
    assert load_config([f"-config-file={path}"], {}).ui is False
    assert load_config([f"-config-file={path}", "-ui=true"], {}).ui is True


def test_flag_env_and_default() -> None:
    assert load_config([], {}).ui is True
    assert load_config(["-ui=false"], {}).ui is False
    assert load_config([], {"RUMOR_UI": "false"}).ui is False
    assert load_config(["-ui"], {"RUMOR_UI": "false"}).ui is True


@pytest.mark.parametrize(("content", "message"), [
    ({"ui_config": {"enabled": "no"}}, "ui_config.enabled: must be true or false"),
    ({"ui_config": {"content_path": "/x/"}}, "unknown key 'ui_config.content_path'"),
    ({"ui_config": True}, "ui_config: must be an object"),
    ({"ui": 1}, "ui: must be true or false"),
])
def test_bad_ui_config_names_the_field(tmp_path: Path, content: dict[str, object],
                                       message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config([f"-config-file={path}"], {})
