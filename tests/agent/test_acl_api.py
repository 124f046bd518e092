"""ACL enforcement on every endpoint of an in-process agent, through real HTTP on loopback.

For each endpoint: a token with the right Consul asks for passes, one without gets 403 and
Consul's `Permission denied…` text; anonymous requests follow `acl.default_policy`; the
initial management token passes everything; an unknown token gets 403 `ACL not found`.
Lists (events, members, services) are filtered rather than refused, as Consul does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from agent.acl import parse_token_list
from agent.logs import MonitorHub
from tests.agent.helpers import InProc, eventually, finished, free_host, in_process_agent

TOKENS = parse_token_list([
    {"SecretID": "ev-writer", "AccessorID": "acc-ev-writer",
     "Rules": 'event "deploy" { policy = "write" }'},
    {"SecretID": "ev-reader",
     "Rules": 'event_prefix "" { policy = "read" }\nevent "secret" { policy = "deny" }'},
    {"SecretID": "agent-reader", "Rules": 'agent_prefix "" { policy = "read" }'},
    {"SecretID": "agent-writer", "Rules": {"agent": {"a1": {"policy": "write"}}}},
    {"SecretID": "node-reader", "Rules": 'node "a1" { policy = "read" }'},
    {"SecretID": "operator", "Rules": 'operator = "write"'},
    {"SecretID": "keyring-reader", "Rules": 'keyring = "read"'},
    {"SecretID": "keyring-writer", "Rules": 'keyring = "write"'},
    {"SecretID": "svc-writer", "Rules": 'service_prefix "web" { policy = "write" }'},
    {"SecretID": "nothing", "Rules": ""},
    # explicit rules, so they are refused under default_policy "allow" too
    {"SecretID": "reader-all", "Rules": "\n".join(
        f'{r}_prefix "" {{ policy = "read" }}' for r in ("agent", "event", "node", "service"))
        + '\noperator = "read"'},
    {"SecretID": "denier", "Rules": "\n".join(
        f'{r}_prefix "" {{ policy = "deny" }}' for r in ("agent", "event", "node", "service"))
        + '\noperator = "deny"'},
])
ROOT = "root-secret"


@asynccontextmanager
async def acl_agent(default_policy: str) -> AsyncIterator[InProc]:
    async with in_process_agent(free_host(), "a1", hub=MonitorHub(), acl_enabled=True,
                                acl_default_policy=default_policy, acl_token_list=TOKENS,
                                acl_initial_management_token=ROOT) as a:
        a.agent.reloader = lambda: a.agent.config
        yield a


async def call(a: InProc, method: str, path: str, token: str | None,
               body: bytes | None = None) -> tuple[int, str]:
    headers = {"X-Consul-Token": token} if token else {}
    if path.endswith("/monitor"):  # a stream: look at the status, then hang up
        async with a.client.stream(method, path, headers=headers) as r:
            text = "" if r.status_code == 200 else (await r.aread()).decode()
            return r.status_code, text
    r = await a.client.request(method, path, headers=headers, content=body)
    return r.status_code, r.text


# (method, path, body, token with the right, token without it, the right Consul asks for)
MATRIX: list[tuple[str, str, bytes | None, str, str, str]] = [
    ("PUT", "/v1/event/fire/deploy", b"v1", "ev-writer", "ev-reader", "event:write"),
    ("GET", "/v1/agent/self", None, "agent-reader", "denier", "agent:read"),
    ("GET", "/v1/agent/metrics", None, "agent-reader", "denier", "agent:read"),
    ("GET", "/v1/agent/monitor", None, "agent-reader", "denier", "agent:read"),
    ("PUT", "/v1/agent/reload", None, "agent-writer", "agent-reader", "agent:write"),
    ("PUT", "/v1/agent/join/{serf}", None, "agent-writer", "reader-all", "agent:write"),
    ("PUT", "/v1/agent/force-leave/nobody", None, "operator", "reader-all",
     "operator:write"),
    ("PUT", "/v1/agent/service/register", b'{"Name": "web1", "ID": "w1"}', "svc-writer",
     "reader-all", "service:write"),
    ("PUT", "/v1/agent/service/deregister/w1", None, "svc-writer", "reader-all",
     "service:write"),
    ("PUT", "/v1/agent/leave", None, "agent-writer", "agent-reader", "agent:write"),
]


@pytest.mark.parametrize("default_policy", ["deny", "allow"])
async def test_every_endpoint_allows_and_denies_by_token(default_policy: str) -> None:
    with trio.fail_after(30):
        async with acl_agent(default_policy) as a:
            for method, path, body, good, bad, right in MATRIX:
                path = path.replace("{serf}", a.serf_addr)
                what = f"{method} {path}"
                status, text = await call(a, method, path, bad, body)
                assert status == 403, (what, status, text)
                assert text.startswith("Permission denied: ") and f"'{right}'" in text, text
                status, text = await call(a, method, path, "who-knows", body)
                assert (status, text) == (403, "ACL not found"), what
                if path.endswith("/leave"):
                    assert not a.agent.leaving  # no refused request made it leave
                status, text = await call(a, method, path, None, body)  # anonymous
                if default_policy == "deny":
                    assert status == 403, what
                    assert ("token with AccessorID '00000000-0000-0000-0000-000000000002' "
                            f"lacks permission '{right}'") in text
                else:
                    assert status != 403, (what, text)
                status, text = await call(a, method, path, good, body)
                assert status != 403, (what, status, text)
                # the stand-ins that pass must do the real thing, not just get past the ACL
                expected = 404 if "force-leave" in path else 200
                if "deregister" in path and default_policy == "allow":
                    expected = 404  # the anonymous request already removed it
                assert status == expected, (what, status, text)
                status, _ = await call(a, method, path, ROOT, body)
                assert status != 403, what
            assert a.agent.leaving


async def test_keyring_needs_keyring_read_and_write() -> None:
    key = '{"Key": "' + "A" * 43 + '="}'
    with trio.fail_after(30):
        async with acl_agent("deny") as a:
            for method, body, good, bad, right in [
                    ("GET", None, "keyring-reader", "reader-all", "keyring:read"),
                    ("POST", key.encode(), "keyring-writer", "keyring-reader", "keyring:write"),
                    ("PUT", key.encode(), "keyring-writer", "keyring-reader", "keyring:write"),
                    ("DELETE", key.encode(), "keyring-writer", "keyring-reader",
                     "keyring:write")]:
                status, text = await call(a, method, "/v1/operator/keyring", bad, body)
                assert status == 403 and f"'{right}'" in text, (method, status, text)
                status, text = await call(a, method, "/v1/operator/keyring", None, body)
                assert status == 403, (method, status, text)
                # past the ACL, the (unencrypted) agent answers as without ACLs
                for token in (good, ROOT):
                    status, text = await call(a, method, "/v1/operator/keyring", token, body)
                    assert status != 403, (method, token, status, text)


async def test_streams_carry_only_what_the_token_may_read_and_sinks_need_operator() -> None:
    import json

    with trio.fail_after(30):
        async with acl_agent("deny") as a:
            for name in ("deploy", "secret", "other"):
                r = await a.client.put(f"/v1/event/fire/{name}", headers={"X-Consul-Token": ROOT})
                assert r.status_code == 200
            await eventually(lambda: len(a.agent.store) == 3, "three events stored")

            async def stream_keys(token: str) -> list[tuple[str, str]]:
                seen: list[tuple[str, str]] = []
                async with a.client.stream("GET", "/v1/event/stream",
                                           params={"index": "0", "token": token}) as r:
                    assert r.status_code == 200
                    async with finished(r, r.aiter_lines()) as lines:
                        async for line in lines:
                            doc = json.loads(line)
                            for ev in doc.get("Events", []):
                                seen.append((ev["Topic"], ev["Key"]))
                            if ("Event", "other") in seen:
                                return seen
                return seen

            mine = await stream_keys("ev-reader")  # deny on "secret", no node rules
            assert [k for t, k in mine if t == "Event"] == ["deploy", "other"], mine
            assert not [k for t, k in mine if t == "Node"], mine
            everything = await stream_keys(ROOT)
            assert [k for t, k in everything if t == "Event"] == ["deploy", "secret", "other"]
            assert ("Node", "a1") in everything
            r = await a.client.get("/v1/event/stream", params={"token": "who-knows"})
            assert (r.status_code, r.text) == (403, "ACL not found")

            sink = b'{"Type": "webhook", "Topics": {"Event": ["*"]}, "Address": "http://127.0.0.1:9/x"}'
            status, text = await call(a, "PUT", "/v1/event/sink/s1", "reader-all", sink)
            assert status == 403 and "'operator:write'" in text, text
            status, text = await call(a, "GET", "/v1/event/sinks", "denier", None)
            assert status == 403 and "'operator:read'" in text, text
            status, text = await call(a, "PUT", "/v1/event/sink/s1", "operator", sink)
            assert status == 200, text
            assert [s["ID"] for s in (await a.client.get(
                "/v1/event/sinks", headers={"X-Consul-Token": "reader-all"})).json()] == ["s1"]


async def test_fire_denied_broadcasts_nothing_and_lists_are_filtered() -> None:
    with trio.fail_after(30):
        async with acl_agent("deny") as a:
            for name in ("deploy", "secret", "other"):
                r = await a.client.put(f"/v1/event/fire/{name}", headers={"X-Consul-Token": ROOT})
                assert r.status_code == 200
            r = await a.client.put("/v1/event/fire/other", params={"token": "ev-writer"})
            assert r.status_code == 403 and "on \"other\"" in r.text

            async def names(token: str | None) -> list[str]:
                params = {"token": token} if token else {}
                r = await a.client.get("/v1/event/list", params=params)
                assert r.status_code == 200 and r.headers["X-Consul-Index"] != "", r.text
                return sorted(e["Name"] for e in r.json())

            await eventually(lambda: len(a.agent.store) == 3, "three events stored")
            assert a.agent.metrics.events_fired == 3  # the denied fire was never broadcast
            assert await names(ROOT) == ["deploy", "other", "secret"]
            assert await names("ev-reader") == ["deploy", "other"]  # deny beats the prefix
            assert await names(None) == []
            assert await names("nothing") == []
            r = await a.client.get("/v1/event/list?name=secret&token=ev-reader")
            assert r.json() == []

            async def members(token: str) -> list[Any]:
                r = await a.client.get("/v1/agent/members", headers={"X-Consul-Token": token})
                assert r.status_code == 200
                return [m["Name"] for m in r.json()]

            assert await members("node-reader") == ["a1"]
            assert await members("nothing") == []

            for sid, name in (("w2", "web2"), ("d1", "db")):
                body = f'{{"Name": "{name}", "ID": "{sid}"}}'.encode()
                r = await a.client.put("/v1/agent/service/register", content=body,
                                       headers={"X-Consul-Token": ROOT})
                assert r.status_code == 200
            r = await a.client.put("/v1/agent/service/register",
                                   content=b'{"Name": "db", "ID": "d2"}',
                                   headers={"Authorization": "Bearer svc-writer"})
            assert r.status_code == 403 and "'service:write' on \"db\"" in r.text
            # replacing a service it may not write under a name it may: refused too
            r = await a.client.put("/v1/agent/service/register",
                                   content=b'{"Name": "web3", "ID": "d1"}',
                                   headers={"Authorization": "Bearer svc-writer"})
            assert r.status_code == 403
            assert a.agent.catalog.get("d1") is not None and "d2" not in a.agent.catalog
            r = await a.client.get("/v1/agent/services",
                                   headers={"Authorization": "Bearer svc-writer"})
            assert list(r.json()) == ["w2"]


async def test_token_sources_and_acls_off() -> None:
    with trio.fail_after(20):
        async with acl_agent("deny") as a:
            for headers, params in (({"X-Consul-Token": "agent-reader"}, {}),
                                    ({}, {"token": "agent-reader"}),
                                    ({"Authorization": "Bearer agent-reader"}, {}),
                                    ({"X-Nomad-Token": "agent-reader"}, {}),
                                    ({"X-Vault-Token": "agent-reader"}, {})):
                r = await a.client.get("/v1/agent/self", headers=headers, params=params)
                assert r.status_code == 200, (headers, params)
        async with in_process_agent(free_host(), "a1", acl_token_list=TOKENS) as off:
            r = await off.client.put("/v1/event/fire/deploy", params={"token": "nobody"})
            assert r.status_code == 200  # ACLs disabled: nothing is enforced
