"""Tenant and session isolation of the chat route under load: 1,000 concurrent chat requests of three tenants and
four sessions each (the same session names in every tenant), half of them streamed, through a live gateway on
loopback whose upstream is the stand-in on another port.

Every request carries its own person (name, email, phone) and a token pasted from another session's masked
output: one ``/v1/desensitize`` gave another tenant, or one the upstream saw in another session of the same or
another tenant (or in its own session, for a value the request does not hold). Every reply must be exactly
``"You said: " + prompt``: its own values restored, no other request's value, and the pasted token back
verbatim, never restored into anyone's value. Upstream, no personal value and no pasted token arrives as sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from privet.crypto import from_env_value, new_env_value
from privet.crypto.keyring import Keyring
from privet.desensitize.vault import TOKEN_PATTERN
from privet.models.registry import Registry
from privet.serve.app import create_app
from privet.serve.background import running
from privet.serve.gateway import Gateway
from privet.serve.keys import ApiKeys
from privet.serve.settings import GatewaySettings
from privet.serve.standin import standin_app
from privet.store import AuditRecord, Store

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUESTS = 1_000
CONCURRENCY = 64
TENANTS = ("north", "south", "east")
SESSIONS = ("s1", "s2", "s3", "s4")  # the same names in every tenant: the tenant alone must keep them apart
CHAT = "/v1/chat/completions"
FIRST = ("Alice", "Bruno", "Carmen", "Dmitri", "Elena", "Farid", "Greta", "Hiroshi", "Ingrid", "Jamal", "Katja",
         "Lorenzo", "Mei", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Stefan", "Tamara", "Umar", "Valeria",
         "Wesley", "Ximena", "Yusuf", "Zofia", "Andre", "Beatriz", "Cyrus", "Daphne", "Emil", "Fiona", "Gustavo",
         "Helena", "Ivan", "Julia", "Kenji", "Lucia", "Marco", "Nora")  # fmt: skip
LAST = ("Abbott", "Bergstrom", "Castellano", "Dubois", "Eriksen", "Fontaine", "Gallagher", "Horvath", "Ivanova",
        "Jaramillo", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quiroga", "Rasmussen",
        "Schneider", "Takahashi", "Umarov", "Valdez", "Whitfield", "Yamamoto", "Zielinski")  # fmt: skip
# One person every session seeds twice: its tokens show whether sessions and tenants are linkable upstream.
SHARED = ("Maria Gonzalez", "maria.gonzalez@example.org", "+1 415 555 9999")


@dataclass
class Recorder:
    """An ASGI wrapper keeping every request body the wrapped app (the upstream) received."""

    app: Any
    bodies: list[str] = field(default_factory=list)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = b"".join(chunks)
        self.bodies.append(body.decode("utf-8", "replace"))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@dataclass
class Served:
    """The live gateway, its recorded upstream, a consumer key per tenant and what the seeding showed upstream."""

    base: str
    store: Store
    upstream: Recorder
    tokens: dict[str, str]  # tenant -> consumer API key
    seen: dict[tuple[str, str], list[list[str]]]  # (tenant, session) -> tokens upstream saw, per seed request
    desensitized: dict[str, list[str]]  # tenant -> tokens /v1/desensitize gave it


def _seed_prompt() -> str:
    name, email, phone = SHARED
    return f"Hello, I am {name}, email {email}, phone {phone}."


def _post(base: str, path: str, token: str, body: dict[str, Any], session: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} | ({"X-Privet-Session": session} if session else {})
    response = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The gateway with three tenants, each session seeded twice with the shared person (tokens recorded)."""
    root = tmp_path_factory.mktemp("isolation")
    store = Store.open(f"sqlite:///{root / 'privet.db'}")
    keyring = Keyring.initialize(store, from_env_value(new_env_value()))
    keys = ApiKeys(store, keyring)
    tokens = {}
    for tenant in TENANTS:
        keys.create_tenant(tenant)
        tokens[tenant] = keys.issue(tenant, "consumer").token
    recorder = Recorder(standin_app(chunk=4))  # 4 characters an event: every token is split across events
    with running(recorder) as upstream:
        settings = GatewaySettings(upstream=f"{upstream}/v1", upstream_timeout=60)
        gateway = Gateway(store, keyring, Registry(store, root / "registry"), settings)
        with running(create_app(gateway)) as base:
            seen: dict[tuple[str, str], list[list[str]]] = {}
            for (tenant, session), stream in itertools.product(itertools.product(TENANTS, SESSIONS), (False, True)):
                before = len(recorder.bodies)
                body = {"model": "standin", "messages": [{"role": "user", "content": _seed_prompt()}],
                        "stream": stream}  # fmt: skip
                _post(base, CHAT, tokens[tenant], body, session)
                (sent,) = recorder.bodies[before:]
                seen.setdefault((tenant, session), []).append([m.group(0) for m in TOKEN_PATTERN.finditer(sent)])
            desensitized = {}
            for tenant in TENANTS:
                text = f"Call {SHARED[0]} at {SHARED[1]} or {SHARED[2]} about the account."
                masked = _post(base, "/v1/desensitize", tokens[tenant], {"text": text}).json()["text"]
                desensitized[tenant] = [m.group(0) for m in TOKEN_PATTERN.finditer(masked)]
            yield Served(base, store, recorder, tokens, seen, desensitized)
    store.close()


def test_seeded_tokens_are_stable_within_a_session_and_unrelated_across_sessions_and_tenants(served: Served) -> None:
    """Upstream, the shared person has the same three tokens in both requests of a session, and tokens no other
    session of any tenant (nor any /v1/desensitize call) shares."""
    per_session = {}
    for key, (first, second) in served.seen.items():
        assert len(first) == 3 and first == second, (key, first, second)
        per_session[key] = first
    tokens = [t for ts in (*per_session.values(), *served.desensitized.values()) for t in ts]
    assert len(tokens) == len(set(tokens)) == 3 * (len(TENANTS) * len(SESSIONS) + len(TENANTS))
    assert not any(value in body for body in served.upstream.bodies for value in SHARED)


@dataclass(frozen=True)
class Request:
    """One chat request of the load: who sends it, in which session, with whose values and which pasted token."""

    i: int
    tenant: str
    session: str
    values: tuple[str, str, str]  # name, email, phone: this request's alone
    foreign: str  # a token of another session's masked output
    stream: bool

    @property
    def prompt(self) -> str:
        name, email, phone = self.values
        return f"Request {self.i}: I am {name}, email {email}, phone {phone}. Earlier you wrote {self.foreign} there."


def _requests(served: Served) -> list[Request]:
    """The load: tenants, sessions, streaming and token sources interleaved independently; each request has its own
    person and pastes a token of the shared person from another session's masked output: another tenant's
    desensitize, another session of its own tenant, another tenant's session of the same name, or (the hardest
    case for restoration) its own session, where that token stands for a value the request never sent."""
    load = []
    for i in range(REQUESTS):
        tenant, session = TENANTS[i % len(TENANTS)], SESSIONS[i // len(TENANTS) % len(SESSIONS)]
        other = TENANTS[(TENANTS.index(tenant) + 1 + i // 96 % 2) % len(TENANTS)]
        sources = (
            served.desensitized[other],
            served.seen[(tenant, SESSIONS[(SESSIONS.index(session) + 1) % len(SESSIONS)])][0],
            served.seen[(other, session)][0],
            served.seen[(tenant, session)][0],
        )
        pool = sources[i // 24 % len(sources)]
        first, last = FIRST[i % len(FIRST)], LAST[i // len(FIRST) % len(LAST)]
        values = (f"{first} {last}", f"{first.lower()}.{last.lower()}.{i}@example.org", f"+1 415 555 {i:04d}")
        load.append(Request(i, tenant, session, values, pool[i // 192 % len(pool)], stream=i // 12 % 2 == 1))
    return load


async def _ask(client: httpx.AsyncClient, gate: asyncio.Semaphore, request: Request, token: str) -> str:
    """The reply's text (streamed events joined), or a description of what went wrong."""
    body = {"model": "standin", "messages": [{"role": "user", "content": request.prompt}], "stream": request.stream}
    headers = {"Authorization": f"Bearer {token}", "X-Privet-Session": request.session}
    async with gate:
        try:
            if not request.stream:
                response = await client.post(CHAT, json=body, headers=headers)
                if response.status_code != 200:
                    return f"HTTP {response.status_code}: {response.text[:200]}"
                return str(response.json()["choices"][0]["message"]["content"])
            async with client.stream("POST", CHAT, json=body, headers=headers) as response:
                if response.status_code != 200:
                    return f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return await _streamed(response)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__} ({'streamed' if request.stream else 'whole'}): {exc}"


async def _streamed(response: httpx.Response) -> str:
    """The content of an OpenAI chat completion stream, or what is wrong with it."""
    parts, done = [], False
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            continue
        event = json.loads(line[6:])
        if "choices" not in event:
            return f"stream event without choices: {line[:200]}"
        parts += [choice.get("delta", {}).get("content") or "" for choice in event["choices"]]
    return "".join(parts) if done else "the stream ended before [DONE]"


async def _load(served: Served, load: list[Request]) -> list[str]:
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=served.base, limits=limits, timeout=120) as client:
        return await asyncio.gather(*(_ask(client, gate, r, served.tokens[r.tenant]) for r in load))


def test_no_restoration_crosses_a_tenant_or_session_under_concurrent_load(served: Served) -> None:
    """1,000 concurrent mixed-tenant chats, half streamed: every reply is exactly its own prompt, restored."""
    load = _requests(served)
    assert len({r.values for r in load}) == REQUESTS and all(TOKEN_PATTERN.fullmatch(r.foreign) for r in load)
    owner = {value: r.i for r in load for value in r.values}
    values = re.compile("|".join(re.escape(v) for v in sorted(owner, key=len, reverse=True)))
    upstream_before = len(served.upstream.bodies)

    started = time.perf_counter()
    replies = asyncio.run(_load(served, load))
    elapsed = time.perf_counter() - started
    print(f"\n{REQUESTS} chat requests ({CONCURRENCY} at a time, half streamed) in {elapsed:.1f} s")

    wrong = [
        (r.i, r.stream, reply[:300]) for r, reply in zip(load, replies, strict=True) if reply != "You said: " + r.prompt
    ]
    assert wrong == [], f"{len(wrong)} replies are not their prompt restored exactly, e.g. {wrong[:3]}"
    crossed = [
        (r.i, v) for r, reply in zip(load, replies, strict=True) for v in values.findall(reply) if owner[v] != r.i
    ]
    assert crossed == [], f"replies hold other requests' values: {crossed[:5]}"
    assert all(r.foreign in reply for r, reply in zip(load, replies, strict=True))
    assert not any(value in reply for reply in replies for value in SHARED)  # no pasted token was restored

    sent = served.upstream.bodies[upstream_before:]
    assert len(sent) == REQUESTS
    exposed = [v for body in sent for v in values.findall(body)]
    assert exposed == [], f"the upstream received {len(exposed)} personal values, e.g. {exposed[:3]}"
    pasted = {r.foreign for r in load}
    assert not any(token in body for body in sent for token in pasted)  # re-masked as a token of the request's session

    with served.store.transaction() as session:
        audited = Counter(session.scalars(select(AuditRecord.tenant).where(AuditRecord.route == "chat")).all())
    seeds = 2 * len(SESSIONS)
    assert audited == {t: seeds + sum(r.tenant == t for r in load) for t in TENANTS}


def test_an_unreachable_upstream_is_a_502_and_audited(sqlite_store: Store, keyring: Keyring, tmp_path: Path) -> None:
    """With nothing listening at the upstream's address, chat answers a JSON 502 (streamed or not), audited: a
    connection the upstream refuses or drops under load must not become an unaudited plain-text 500."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = GatewaySettings(upstream=f"http://127.0.0.1:{closed}/v1", upstream_timeout=5)
    gateway = Gateway(sqlite_store, keyring, Registry(sqlite_store, tmp_path / "registry"), settings)
    keys = ApiKeys(sqlite_store, keyring)
    keys.create_tenant("north")
    headers = {"Authorization": f"Bearer {keys.issue('north', 'consumer').token}"}
    messages = [{"role": "user", "content": "hi"}]
    with TestClient(create_app(gateway), raise_server_exceptions=False) as client:
        replies = [client.post(CHAT, headers=headers, json={"model": "m", "messages": messages, "stream": stream})
                   for stream in (False, True)]  # fmt: skip
    assert [(r.status_code, r.headers["content-type"]) for r in replies] == [(502, "application/json")] * 2
    with sqlite_store.transaction() as session:
        assert session.scalars(select(AuditRecord.status).where(AuditRecord.route == "chat")).all() == [502, 502]
