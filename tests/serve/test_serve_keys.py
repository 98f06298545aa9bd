"""API keys on SQLite and PostgreSQL (digests only, expiry, revocation, rotation) and JWTs against a JWKS file."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import text

from privet.crypto import Keyring
from privet.crypto.master import LocalMasterKey
from privet.errors import NotFoundError, UsageError
from privet.models.registry import Registry
from privet.serve.app import create_app
from privet.serve.gateway import Gateway
from privet.serve.keys import ApiKeys, UnauthenticatedError
from privet.serve.settings import GatewaySettings, JwtSettings
from privet.store import Store


@pytest.fixture
def keys(store: Store, master_key: LocalMasterKey) -> ApiKeys:
    api = ApiKeys(store, Keyring.initialize(store, master_key), cache_seconds=0)
    api.create_tenant("north")
    return api


def test_a_key_is_stored_as_a_digest_and_checked(keys: ApiKeys, store: Store) -> None:
    issued = keys.issue("north", "consumer", models=["toy"], label="ci")
    principal, limits = keys.authenticate(issued.token)
    assert principal.tenant == "north" and principal.role.value == "consumer" and principal.models == {"toy"}
    assert principal.subject == f"key:{issued.info.key_id}" and limits.rate is None
    secret = issued.token.split("_", 2)[2]
    with store.transaction() as session:
        rows = session.execute(text("SELECT * FROM gateway_keys")).all()
    assert secret not in repr(rows) and secret.encode() not in b"".join(bytes(r.digest) for r in rows)
    assert "token=<secret>" in repr(issued) and secret not in repr(keys.keys("north"))
    for forged in (issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B"), "pvt_x_y", "nonsense", ""):
        with pytest.raises(UnauthenticatedError):
            keys.authenticate(forged)


def test_expiry_revocation_and_rotation(keys: ApiKeys) -> None:
    short = keys.issue("north", "consumer", ttl=timedelta(seconds=1))
    keys.authenticate(short.token)
    time.sleep(1.1)
    with pytest.raises(UnauthenticatedError, match="expired"):
        keys.authenticate(short.token)
    revoked = keys.issue("north", "auditor")
    keys.revoke(revoked.info.key_id)
    with pytest.raises(UnauthenticatedError, match="not valid"):
        keys.authenticate(revoked.token)
    old = keys.issue("north", "analyst", models=["a"])
    new = keys.rotate(old.info.key_id, grace=timedelta(seconds=1))
    assert keys.authenticate(new.token)[0].models == {"a"} and keys.authenticate(old.token)  # both, for a while
    time.sleep(1.1)
    with pytest.raises(UnauthenticatedError, match="expired"):
        keys.authenticate(old.token)
    with pytest.raises(NotFoundError, match="no tenant"):
        keys.issue("south", "consumer")
    with pytest.raises(UsageError, match="unknown role"):
        keys.issue("north", "root")
    with pytest.raises(UsageError, match="already exists"):
        keys.create_tenant("north")


def _token(key: ec.EllipticCurvePrivateKey, kid: str = "k1", **claims: object) -> str:
    now = int(time.time())
    body = {"sub": "alice@north", "iss": "https://idp.example", "aud": "privet", "exp": now + 60,
            "privet_tenant": "north", "privet_role": "auditor", **claims}  # fmt: skip
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid})


def test_jwts_are_checked_against_the_jwks_file(sqlite_store: Store, keyring: Keyring, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    settings = GatewaySettings(jwt=JwtSettings(jwks_file=tmp_path / "jwks.json", issuer="https://idp.example",
                                               audience="privet"))  # fmt: skip
    ApiKeys(sqlite_store, keyring).create_tenant("north")
    gateway = Gateway(sqlite_store, keyring, Registry(sqlite_store, tmp_path / "registry"), settings)
    stranger = ec.generate_private_key(ec.SECP256R1())
    with TestClient(create_app(gateway)) as client:

        def status(token: str) -> int:
            return client.get("/v1/audit", headers={"Authorization": f"Bearer {token}"}).status_code

        assert status(_token(key)) == 200
        assert status(_token(key, privet_role="consumer")) == 403
        assert status(_token(key, exp=int(time.time()) - 10)) == 401
        assert status(_token(key, aud="someone-else")) == 401
        assert status(_token(key, privet_tenant="south")) == 401  # no such tenant here
        assert status(_token(key, kid="k2")) == 401
        assert status(_token(stranger)) == 401  # signed by a key the JWKS does not hold
        assert status(_token(key, sub="has spaces")) == 401
        records = client.get("/v1/audit", headers={"Authorization": f"Bearer {_token(key)}"}).json()["records"]
        assert any(r["principal"] == "jwt:alice@north" for r in records)
