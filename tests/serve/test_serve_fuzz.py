"""Schema-driven fuzzing of the gateway with schemathesis: every operation of ``/openapi.json``, as an admin, a
consumer and nobody, bodies generated from the schema (valid and invalid), against a live gateway on loopback
whose chat upstream is the stand-in on another port.

For every response: no 5xx; no API key secret or upstream key in any body or header; no canary personal value in
an error; every error body is ``{"error": {"code", "message", "hint"}}`` with a one-line message. Afterwards: no
secret or canary anywhere in the database (audit records included), none of the canary's values in anything the
upstream received, and one audit record per audited request.

Half the generated cases are steered to where the gateway does real work (the canary's chat, the served model,
the configured table). The tests at the end pin the bugs this fuzzing once found: a model name the audit record
could not hold, a subnormal epsilon, and validation errors that echoed keys the caller chose.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import schemathesis
import torch
from hypothesis import HealthCheck, settings
from sqlalchemy import func, select

from privet.crypto import Keyring, from_env_value, new_env_value
from privet.dp.ledger import Ledger
from privet.models.reference import ModelSpec, save_weights
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

MAX_EXAMPLES = 10  # fuzzed cases per operation and identity, on top of schemathesis' examples and coverage phases
UPSTREAM_KEY_ENV = "PRIVET_FUZZ_UPSTREAM_KEY"
# The canary: one person's values, each of a kind the default analyzer finds, planted in chat messages.
CANARY_NAME = "Jonathan Petrovski"
CANARY_EMAIL = "jp.canary.7f3a@example.org"
CANARY_PHONE = "+1 415 555 0187"
CANARY = (CANARY_NAME, CANARY_EMAIL, CANARY_PHONE)
CANARY_TEXT = f"Hi, I am {CANARY_NAME}, email {CANARY_EMAIL}, phone {CANARY_PHONE}."
DP_SQL = ("SELECT COUNT(*) FROM t", "SELECT AVG(cost) FROM t", "SELECT age, SUM(cost) FROM t GROUP BY age")
UNAUDITED = {("/healthz", 200), ("/metrics", 200)}  # the service routes answer without an audit record
CHAT, PREDICT, DESENSITIZE, DP_QUERY = "/v1/chat/completions", "/v1/predict/{model}", "/v1/desensitize", "/v1/dp/query"


@dataclass
class Recorder:
    """An ASGI wrapper keeping every request body and ``Authorization`` header the wrapped app received."""

    app: Any
    bodies: list[bytes] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

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
        self.bodies.append(body)
        self.authorizations.append(dict(scope["headers"]).get(b"authorization", b"").decode("latin-1"))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@dataclass
class Fuzzed:
    """The live gateway under fuzzing and everything the checks need."""

    base: str
    db: Path
    store: Store
    upstream: Recorder
    tokens: dict[str, str]  # identity -> API key
    upstream_key: str
    secrets: list[str]  # must never leave the gateway: the keys, their secrets, the upstream key
    sent: list[tuple[str, int]] = field(default_factory=list)  # (operation path, status) of every request
    unaudited: list[str] = field(default_factory=list)  # requests answered without an audit record


def _register_toy(registry: Registry, keyring: Keyring, directory: Path) -> None:
    spec = ModelSpec("logreg", 4, 2)
    torch.manual_seed(0)
    directory.mkdir()
    save_weights(spec.build(), directory / "model.safetensors")
    registry.add(directory, name="toy", version="1", signer=keyring.signing_key(), keys=keyring,
                 metadata=spec.to_metadata())  # fmt: skip


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """A gateway (toy model, a DP table, two tenants) on loopback, its upstream the recorded stand-in."""
    root = tmp_path_factory.mktemp("fuzz")
    db = root / "privet.db"
    store = Store.open(f"sqlite:///{db}")
    keyring = Keyring.initialize(store, from_env_value(new_env_value()))
    registry = Registry(store, root / "registry")
    _register_toy(registry, keyring, root / "toy")
    visits = root / "visits.csv"
    pd.DataFrame({"age": [30, 40, 50, 60] * 50, "cost": [1.0, 2.0, 3.0, 4.0] * 50}).to_csv(visits, index=False)
    keys = ApiKeys(store, keyring)
    tokens: dict[str, str] = {}
    for tenant in ("north", "south"):
        keys.create_tenant(tenant)
        for role in ("admin", "consumer", "auditor"):
            tokens[f"{tenant}-{role}"] = keys.issue(tenant, role).token
    tokens["admin"], tokens["consumer"] = tokens["north-admin"], tokens["north-consumer"]
    Ledger(store).create("north", "visits", 1000.0, 1e-3)
    upstream_key = "sk-upstream-" + secrets.token_urlsafe(24)
    recorder = Recorder(standin_app(chunk=5))
    with pytest.MonkeyPatch.context() as patch, running(recorder) as upstream:
        patch.setenv(UPSTREAM_KEY_ENV, upstream_key)
        settings_ = GatewaySettings(upstream=f"{upstream}/v1", upstream_key_env=UPSTREAM_KEY_ENV, upstream_timeout=20,
                                    datasets={"north/visits": visits}, models=["toy"])  # fmt: skip
        gateway = Gateway(store, keyring, registry, settings_)
        key_secrets = [token.split("_", 2)[2] for token in tokens.values()]
        with running(create_app(gateway)) as base:
            secrets_ = [*set(tokens.values()), *set(key_secrets), upstream_key]
            yield Fuzzed(base, db, store, recorder, tokens, upstream_key, secrets_)
    store.close()


@pytest.fixture(params=["admin", "consumer", "anonymous"])
def who(request: pytest.FixtureRequest) -> str:
    """Who sends the fuzzed requests: an admin (every action allowed), a consumer, or no credentials."""
    return str(request.param)


def _error_problems(response: requests.Response) -> list[str]:
    """What is wrong with an error response's body (empty: it is a well-formed one-line error)."""
    try:
        body = response.json()
    except ValueError:
        return ["the error body is not JSON"]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(error, dict):
        return [f"the error body is not {{'error': {{...}}}}: {str(body)[:200]!r}"]
    problems = []
    if set(error) != {"code", "message", "hint"}:
        problems.append(f"the error has fields {sorted(error)}, not code, message, hint")
    if not isinstance(error.get("code"), str) or not error.get("code"):
        problems.append("the error has no code string")
    message = error.get("message")
    if not isinstance(message, str) or not message.strip():
        problems.append("the error has no message string")
    elif "\n" in message or "\r" in message:
        problems.append(f"the error message is not one line: {message!r}")
    if error.get("hint") is not None and not isinstance(error.get("hint"), str):
        problems.append("the error hint is neither a string nor null")
    return problems


def _plant(case: schemathesis.Case, n: int, headers: dict[str, str]) -> None:
    """Steer half the cases to where the gateway does real work: the canary in chat messages (a whole valid
    conversation on even cases, one more message after the generated ones on odd cases) and in texts to
    desensitize; the served model for predictions; the configured table for DP queries."""
    path, body = case.operation.path, case.body
    if path == CHAT and isinstance(body, dict):
        canary = {"role": "user", "content": CANARY_TEXT}
        if n % 2 == 0 or not isinstance(body.get("messages"), list):
            body["messages"] = [{"role": "system", "content": "Be brief."}, canary]
        else:
            body["messages"] = [*body["messages"], canary]
        if n % 3 == 0:
            headers["X-Privet-Session"] = f"fuzz-session-{n % 4}"
    elif path == DESENSITIZE and isinstance(body, dict) and isinstance(body.get("text"), str):
        body["text"] = f"{CANARY_TEXT} {body['text']}"
    elif path == PREDICT and n % 2 == 0 and case.path_parameters is not None:
        case.path_parameters["model"] = "toy"
        rows = body.get("inputs") if isinstance(body, dict) else None
        if isinstance(rows, list) and all(isinstance(row, list) for row in rows):  # the generated numbers, 4 a row
            numbers = [x for row in rows for x in row] + [0.5] * 4
            body["inputs"] = [numbers[i : i + 4] for i in range(0, len(numbers) - 3, 4)]
    elif path == DP_QUERY and n % 2 == 0 and isinstance(body, dict):
        body["dataset"] = "visits"
        if n % 4 == 0:  # a query that runs, with the generated bounds, unit and delta
            body.update(sql=DP_SQL[n // 4 % len(DP_SQL)], epsilon=0.05)


def _unaudited(response: requests.Response) -> bool:
    """Whether the gateway answered without writing the request's audit record."""
    return response.status_code == 500 or '"audit_unavailable"' in response.text


def _problems(case: schemathesis.Case, response: requests.Response, secrets_: list[str]) -> list[str]:
    """Every violated expectation of one fuzzed response."""
    status, path = response.status_code, case.operation.path
    raw = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    problems = [f"a secret ({secret[:8]}...) is in the response" for secret in secrets_ if secret in raw]
    if status >= 400 or path in (DESENSITIZE, "/v1/audit"):  # only a chat reply may hold the canary
        problems += [f"the canary {value!r} is in the response" for value in CANARY if value in raw]
    if status >= 400:
        problems += _error_problems(response)
    if status >= 500:
        problems.append(f"status {status}: {response.text[:300]}")
    return problems


def _openapi() -> dict[str, Any]:
    """The gateway's OpenAPI document. It depends on the routes only, so an unstarted gateway gives the same one
    the live server serves (checked below); schemathesis needs it when tests are collected, before any fixture."""
    return create_app(Gateway.__new__(Gateway)).openapi()


_cases = itertools.count()
# Left out: status_code_conformance (an unparsable body is an undocumented 400), the request-side checks (the
# planting above makes some generated-invalid cases valid), and 405's Allow header (see the report).
SCHEMA_CHECKS = [schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance,
                 schemathesis.checks.response_headers_conformance]  # fmt: skip
schema = schemathesis.openapi.from_dict(_openapi())


def test_the_fuzzed_schema_is_the_one_the_gateway_serves(fuzzed: Fuzzed) -> None:
    """The document fuzzed below is the live ``/openapi.json``, and it covers the gateway's routes."""
    live = requests.get(f"{fuzzed.base}/openapi.json", timeout=10).json()
    assert live == _openapi()
    assert {CHAT, PREDICT, DESENSITIZE, DP_QUERY, "/v1/audit", "/healthz"} <= set(live["paths"])


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_fuzz_every_operation(case: schemathesis.Case, who: str, fuzzed: Fuzzed) -> None:
    """No 5xx, no leaked secret or canary, and well-formed one-line errors, whatever the request."""
    n = next(_cases)
    headers = {} if who == "anonymous" else {"Authorization": f"Bearer {fuzzed.tokens[who]}"}
    _plant(case, n, headers)
    response = case.call(base_url=fuzzed.base, headers=headers, timeout=30)
    fuzzed.sent.append((case.operation.path, response.status_code))
    if _unaudited(response):
        fuzzed.unaudited.append(f"{case.operation.label}: {response.status_code}")
    problems = _problems(case, response, fuzzed.secrets)
    assert not problems, f"{case.operation.label} as {who}: {problems}\n{case.as_curl_command(headers=headers)}"
    case.validate_response(response, checks=SCHEMA_CHECKS)  # bodies and media types as the schema declares them


def _post(fuzzed: Fuzzed, path: str, token: str, body: object, **headers: str) -> requests.Response:
    """A request of this module outside the fuzzing, counted like the fuzzed ones."""
    headers = {"Authorization": f"Bearer {token}", **headers}
    response = requests.post(f"{fuzzed.base}{path}", json=body, headers=headers, timeout=30)
    fuzzed.sent.append((path, response.status_code))
    if _unaudited(response):
        fuzzed.unaudited.append(f"{path}: {response.status_code}")
    return response


def _chat(
    fuzzed: Fuzzed, token: str, content: object, *, stream: bool, session: str | None = None
) -> requests.Response:
    body = {"model": "standin", "messages": [{"role": "user", "content": content}], "stream": stream}
    return _post(fuzzed, CHAT, token, body, **({"X-Privet-Session": session} if session else {}))


def _streamed_text(response: requests.Response) -> str:
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    return "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events)


def test_the_canary_and_secrets_stay_out_of_audit_errors_and_upstream(fuzzed: Fuzzed) -> None:
    """After the fuzzing (and a few canary chats of its own): the canary is restored in replies, but the
    upstream never received it, no error echoes it, and neither it nor any secret is anywhere in the database."""
    for who, stream in itertools.product(("north-admin", "south-consumer"), (False, True)):
        reply = _chat(fuzzed, fuzzed.tokens[who], CANARY_TEXT, stream=stream, session=f"canary-{who}")
        assert reply.status_code == 200, reply.text
        text = _streamed_text(reply) if stream else reply.json()["choices"][0]["message"]["content"]
        assert text == "You said: " + CANARY_TEXT
    for content in ([{"type": "text"}, CANARY_TEXT], 7, [{"type": "text", "text": CANARY_TEXT}, {"no": "type"}]):
        refused = _chat(fuzzed, fuzzed.tokens["admin"], content, stream=False)
        assert refused.status_code == 422 and not _error_problems(refused), refused.text
        assert not any(value in refused.text for value in CANARY), refused.text
    assert fuzzed.upstream.bodies, "the upstream was never called"
    received = b"\n".join(fuzzed.upstream.bodies).decode("utf-8", "replace")
    assert [value for value in CANARY if value in received] == []
    assert set(fuzzed.upstream.authorizations) == {f"Bearer {fuzzed.upstream_key}"}  # the planted key was used
    with fuzzed.store.transaction() as session:
        rows = session.scalars(select(AuditRecord)).all()
        audited = json.dumps([{c.name: getattr(r, c.name) for c in AuditRecord.__table__.columns} for r in rows],
                             default=str)  # fmt: skip
    leaked = [v for v in (*CANARY, *fuzzed.secrets) if v in audited]
    assert leaked == [], "audit records hold a canary value or a secret"
    files = [p for p in fuzzed.db.parent.iterdir() if p.name.startswith(fuzzed.db.name)]  # the database, WAL, SHM
    stored = b"".join(p.read_bytes() for p in files)
    assert [v for v in (*CANARY, *fuzzed.secrets) if v.encode() in stored] == []


def _audit_records(fuzzed: Fuzzed) -> int:
    with fuzzed.store.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(AuditRecord)) or 0)


def test_every_audited_request_left_one_record(fuzzed: Fuzzed) -> None:
    """One audit record per request this module sent, but for the service routes' successes (never audited)."""
    audited = [sent for sent in fuzzed.sent if sent not in UNAUDITED]
    assert fuzzed.unaudited == [] and _audit_records(fuzzed) == len(audited)


def test_a_model_name_the_audit_cannot_hold_is_still_audited(fuzzed: Fuzzed) -> None:
    """A model name with a space (any character an audit record refuses) is answered as usual, and audited."""
    before = _audit_records(fuzzed)
    predict = _post(fuzzed, "/v1/predict/no such model", fuzzed.tokens["admin"], {"inputs": [[0, 0, 0, 0]]})
    chat = _post(
        fuzzed, CHAT, fuzzed.tokens["admin"], {"model": "gpt 4", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert (predict.status_code, chat.status_code, _audit_records(fuzzed) - before) == (404, 200, 2)


def test_a_subnormal_epsilon_is_refused_and_audited(fuzzed: Fuzzed) -> None:
    """epsilon=5e-324 is a one-line 422 (or 429) error like any unusable epsilon, and audited."""
    before = _audit_records(fuzzed)
    body = {"dataset": "visits", "sql": "SELECT COUNT(*) FROM t", "epsilon": 5e-324}
    response = _post(fuzzed, DP_QUERY, fuzzed.tokens["admin"], body)
    assert response.status_code in (422, 429) and not _error_problems(response), response.text
    assert _audit_records(fuzzed) - before == 1


def test_a_validation_error_echoes_no_client_key(fuzzed: Fuzzed) -> None:
    """A body with an unexpected key, or a dict keyed by personal data, gets a one-line error that names neither."""
    extra = _post(fuzzed, "/v1/predict/toy", fuzzed.tokens["admin"], {"inputs": [[0, 0, 0, 0]], "a\nb": 1})
    body = {"dataset": "visits", "sql": "SELECT COUNT(*) FROM t", "epsilon": 1.0, "bounds": {CANARY_EMAIL: [0]}}
    keyed = _post(fuzzed, DP_QUERY, fuzzed.tokens["admin"], body)
    assert extra.status_code == keyed.status_code == 422
    assert _error_problems(extra) == [] and CANARY_EMAIL not in keyed.text, (extra.text, keyed.text)
