"""The gateway's routes: the whole authorization matrix, verified models, limits, masking and exact restoration,
and one audit record per request. The chat upstream is the stand-in served over real HTTP on loopback."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from privet.crypto import Keyring
from privet.dp.ledger import Ledger
from privet.models.reference import ModelSpec, save_weights
from privet.models.registry import Registry
from privet.serve.access import ALLOWED, Action, Role
from privet.serve.app import create_app
from privet.serve.background import running
from privet.serve.chain import verify
from privet.serve.gateway import Gateway
from privet.serve.keys import ApiKeys
from privet.serve.limits import Limits
from privet.serve.settings import GatewaySettings
from privet.serve.standin import standin_app
from privet.store import Store

TENANTS = ("north", "south")


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The stand-in chat upstream on a real loopback port."""
    with running(standin_app(chunk=3)) as url:
        yield f"{url}/v1"


def _register(registry: Registry, keyring: Keyring, directory: Path, name: str) -> None:
    spec = ModelSpec("logreg", 4, 2)
    torch.manual_seed(0)
    directory.mkdir()
    save_weights(spec.build(), directory / "model.safetensors")
    registry.add(directory, name=name, version="1", signer=keyring.signing_key(), keys=keyring,
                 metadata=spec.to_metadata())  # fmt: skip


@pytest.fixture
def served(sqlite_store: Store, keyring: Keyring, tmp_path: Path, upstream: str) -> Iterator[tuple]:
    registry = Registry(sqlite_store, tmp_path / "registry")
    _register(registry, keyring, tmp_path / "toy", "toy")
    _register(registry, keyring, tmp_path / "other", "other")
    visits = tmp_path / "visits.csv"
    pd.DataFrame({"age": [30, 40, 50, 60] * 50, "cost": [1.0, 2.0, 3.0, 4.0] * 50}).to_csv(visits, index=False)
    settings = GatewaySettings(upstream=upstream, datasets={"north/visits": visits}, key_cache_seconds=0)
    keys = ApiKeys(sqlite_store, keyring)
    tokens: dict[tuple[str, str], str] = {}
    for tenant in TENANTS:
        keys.create_tenant(tenant)
        for role in Role:
            tokens[(tenant, role.value)] = keys.issue(tenant, role.value).token
    Ledger(sqlite_store).create("north", "visits", 5.0, 1e-6)
    gateway = Gateway(sqlite_store, keyring, registry, settings)
    with TestClient(create_app(gateway)) as client:
        yield client, tokens, gateway, keys


ROUTES = {
    Action.PREDICT: ("post", "/v1/predict/toy", {"inputs": [[0.1, 0.2, 0.3, 0.4]]}),
    Action.CHAT: ("post", "/v1/chat/completions", {"model": "s", "messages": [{"role": "user", "content": "hi"}]}),
    Action.DESENSITIZE: ("post", "/v1/desensitize", {"text": "Call Alice Smith on 555-0100"}),
    Action.DP_QUERY: ("post", "/v1/dp/query", {"dataset": "visits", "sql": "SELECT COUNT(*) FROM t", "epsilon": 0.01}),
    Action.AUDIT_READ: ("get", "/v1/audit", None),
}


def test_every_route_role_and_tenant_is_denied_unless_allowed(served: tuple) -> None:
    client, tokens, _, _ = served
    for (action, (method, path, body)), tenant, role in itertools.product(ROUTES.items(), TENANTS, Role):
        headers = {"Authorization": f"Bearer {tokens[(tenant, role.value)]}"}
        response = client.request(method, path, json=body, headers=headers)
        allowed = action in ALLOWED[role]
        if not allowed:
            assert response.status_code == 403, (action, tenant, role, response.text)
            assert response.json()["error"]["code"] == "forbidden"
        elif action is Action.DP_QUERY and tenant == "south":
            assert response.status_code == 404  # north's table is not south's: it does not exist for it
        else:
            assert response.status_code == 200, (action, tenant, role, response.text)
    for method, path, body in ROUTES.values():  # no credentials, or a forged key: 401 everywhere
        assert client.request(method, path, json=body).status_code == 401
        forged = {"Authorization": "Bearer pvt_abcdefghjk_" + "A" * 43}
        assert client.request(method, path, json=body, headers=forged).status_code == 401


def test_audit_records_stay_within_their_tenant_and_the_chain_verifies(served: tuple) -> None:
    client, tokens, gateway, _ = served
    consumer = {"Authorization": f"Bearer {tokens[('north', 'consumer')]}"}
    for _ in range(3):
        assert client.post("/v1/predict/toy", json={"inputs": [[1, 2, 3, 4]]}, headers=consumer).status_code == 200
    south = client.get("/v1/audit", headers={"Authorization": f"Bearer {tokens[('south', 'auditor')]}"}).json()
    north = client.get("/v1/audit", headers={"Authorization": f"Bearer {tokens[('north', 'auditor')]}"}).json()
    assert all(r["tenant"] == "south" for r in south["records"])
    predictions = [r for r in north["records"] if r["route"] == "predict"]
    assert len(predictions) == 3 and all(r["model_digest"] and r["decision"] == "allowed" for r in predictions)
    text = json.dumps(north)
    assert "pvt_" not in text and "Alice" not in text
    gateway.chain.checkpoint()
    assert verify(gateway.store, gateway.keyring).ok


def test_chat_masks_upstream_and_restores_exactly_streamed_or_not(served: tuple) -> None:
    client, tokens, _, _ = served
    headers = {"Authorization": f"Bearer {tokens[('north', 'consumer')]}", "X-Privet-Session": "s1"}
    content = "Email alice.smith@example.org or call +1 415 555 0100 about $1 \\1 (a+b)*"
    body = {"model": "standin", "messages": [{"role": "user", "content": content}]}
    whole = client.post("/v1/chat/completions", json=body, headers=headers)
    assert whole.status_code == 200
    assert whole.json()["choices"][0]["message"]["content"] == "You said: " + content
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in lines)
    assert text == "You said: " + content


def test_limits_and_budgets_answer_429_with_retry_after(served: tuple) -> None:
    client, _, _, keys = served
    limited = keys.issue("north", "consumer", limits=Limits(budget_queries=2, budget_window=3600)).token
    headers = {"Authorization": f"Bearer {limited}"}
    body = {"inputs": [[0.0, 0.0, 0.0, 0.0]]}
    assert [client.post("/v1/predict/toy", json=body, headers=headers).status_code for _ in range(2)] == [200, 200]
    refused = client.post("/v1/predict/toy", json=body, headers=headers)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "query_budget_exhausted"
    assert client.post("/v1/predict/other", json=body, headers=headers).status_code == 200  # its own budget


def test_scoped_revoked_and_expired_keys(served: tuple) -> None:
    client, _, _, keys = served
    body = {"inputs": [[0.0, 0.0, 0.0, 0.0]]}
    scoped = keys.issue("north", "consumer", models=["other"])
    headers = {"Authorization": f"Bearer {scoped.token}"}
    assert client.post("/v1/predict/toy", json=body, headers=headers).status_code == 403
    assert client.post("/v1/predict/other", json=body, headers=headers).status_code == 200
    keys.revoke(scoped.info.key_id)
    assert client.post("/v1/predict/other", json=body, headers=headers).status_code == 401
    rotated = keys.issue("north", "consumer")
    fresh = keys.rotate(rotated.info.key_id)
    assert client.post("/v1/predict/toy", json=body, headers={"Authorization": f"Bearer {fresh.token}"}).is_success


def test_a_tampered_artifact_is_refused_and_bad_inputs_are_one_line_errors(served: tuple, tmp_path: Path) -> None:
    client, tokens, gateway, _ = served
    entry = gateway.models._registry.resolve("other")
    data = bytearray(entry.path.read_bytes())
    data[len(data) // 2] ^= 1
    entry.path.write_bytes(bytes(data))
    headers = {"Authorization": f"Bearer {tokens[('north', 'consumer')]}"}
    refused = client.post("/v1/predict/other", json={"inputs": [[0, 0, 0, 0]]}, headers=headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "artifact_refused"
    assert client.post("/v1/predict/nope", json={"inputs": [[0, 0, 0, 0]]}, headers=headers).status_code == 404
    wrong = client.post("/v1/predict/toy", json={"inputs": [[0, 0]]}, headers=headers)
    assert wrong.status_code == 422 and "4 features" in wrong.json()["error"]["message"]
    assert client.post("/v1/predict/toy", json={"inputs": "x"}, headers=headers).status_code == 422
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "privet_requests_total" in client.get("/metrics").text


def test_the_scale_out_setup_postgresql_and_redis(pg_url: str, master_key: object, tmp_path: Path,
                                                  upstream: str) -> None:  # fmt: skip
    """The same gateway on PostgreSQL with its limits in Redis (what several workers or hosts share)."""
    from privet.serve.limits import RedisLimiter

    with socket.create_connection(("127.0.0.1", 6379), timeout=1):
        pass
    store = Store.open(pg_url)
    try:
        keyring = Keyring.initialize(store, master_key)  # type: ignore[arg-type]
        registry = Registry(store, tmp_path / "registry")
        _register(registry, keyring, tmp_path / "toy", "toy")
        keys = ApiKeys(store, keyring)
        keys.create_tenant("north")
        token = keys.issue("north", "admin", limits=Limits(budget_queries=2, budget_window=3600)).token
        settings = GatewaySettings(upstream=upstream, redis_url="redis://127.0.0.1:6379/15")
        gateway = Gateway(store, keyring, registry, settings)
        assert isinstance(gateway.limiter, RedisLimiter)
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(gateway)) as client:
            body = {"inputs": [[0.0, 0.0, 0.0, 0.0]]}
            statuses = [client.post("/v1/predict/toy", json=body, headers=headers).status_code for _ in range(3)]
            chat = {"model": "s", "messages": [{"role": "user", "content": "Call Alice Smith"}]}
            assert client.post("/v1/chat/completions", json=chat, headers=headers).status_code == 200
            assert statuses == [200, 200, 429]  # the budget is counted in Redis
        gateway.chain.checkpoint()
        assert verify(store, keyring).ok and verify(store, keyring).records == 4
    finally:
        store.close()
