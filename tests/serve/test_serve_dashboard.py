"""The dashboard: ``/v1/dashboard``'s content and tenant isolation (TestClient), the static page's security headers,
and the page itself driven in headless Chromium against the gateway on a real loopback port (skipped, with the
reason, where Chromium, chromedriver or selenium is missing)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import text

from privet.crypto import Keyring
from privet.dp.ledger import Ledger
from privet.models.reference import ModelSpec, save_weights
from privet.models.registry import Registry
from privet.serve import dashboard
from privet.serve.access import Principal, Role
from privet.serve.app import create_app
from privet.serve.background import running
from privet.serve.dashboard import AUDIT_RECORDS, gather
from privet.serve.gateway import Gateway
from privet.serve.keys import ApiKeys
from privet.serve.limits import Limits
from privet.serve.settings import GatewaySettings
from privet.store import Store

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
XSS_LABEL = '<img src=x onerror="document.title=1">ci'
TOP_LEVEL = {"tenant", "subject", "role", "models", "keys", "budgets", "audit", "audit_problem", "chain"}


@dataclass
class Setup:
    gateway: Gateway
    keys: ApiKeys
    tokens: dict[tuple[str, str], str]  # (tenant, role) -> API key
    ids: dict[str, set[str]]  # tenant -> every key id issued to it


def _register(registry: Registry, keyring: Keyring, directory: Path, name: str) -> None:
    spec = ModelSpec("logreg", 4, 2)
    torch.manual_seed(0)
    directory.mkdir()
    save_weights(spec.build(), directory / "model.safetensors")
    registry.add(directory, name=name, version="1", signer=keyring.signing_key(), keys=keyring,
                 metadata=spec.to_metadata())  # fmt: skip


@pytest.fixture
def setup(sqlite_store: Store, keyring: Keyring, tmp_path: Path) -> Setup:
    """Two tenants with a key of every role, three models (one tampered with), budgets, and keys in every state."""
    registry = Registry(sqlite_store, tmp_path / "registry")
    for name in ("toy", "other", "broken"):
        _register(registry, keyring, tmp_path / name, name)
    broken = registry.resolve("broken").path
    data = bytearray(broken.read_bytes())
    data[len(data) // 2] ^= 1
    broken.write_bytes(bytes(data))
    visits = tmp_path / "visits.csv"
    pd.DataFrame({"age": [30, 40, 50, 60] * 50}).to_csv(visits, index=False)
    settings = GatewaySettings(datasets={"north/visits": visits}, key_cache_seconds=0)
    keys = ApiKeys(sqlite_store, keyring)
    tokens: dict[tuple[str, str], str] = {}
    ids: dict[str, set[str]] = {}
    for tenant in ("north", "south"):
        keys.create_tenant(tenant)
        for role in Role:
            issued = keys.issue(tenant, role.value, label=XSS_LABEL if tenant == "north" else "")
            tokens[(tenant, role.value)] = issued.token
        limited = keys.issue(tenant, "consumer", models=["toy"], limits=Limits(rate=5, burst=10, budget_queries=100))
        keys.revoke(limited.info.key_id)
        keys.issue(tenant, "consumer", ttl=timedelta(seconds=-1), label="expired")
        ids[tenant] = {info.key_id for info in keys.keys(tenant)}
    ledger = Ledger(sqlite_store)
    ledger.create("north", "visits", 5.0, 1e-6)
    ledger.create("south", "claims", 2.0, 1e-6)
    return Setup(Gateway(sqlite_store, keyring, registry, settings), keys, tokens, ids)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _traffic(client: TestClient | httpx.Client, tokens: dict[tuple[str, str], str]) -> None:
    """Requests of both tenants: predictions (one refused model), a DP query, a forbidden call."""
    row = {"inputs": [[0.1, 0.2, 0.3, 0.4]]}
    for tenant in ("north", "south"):
        consumer = _bearer(tokens[(tenant, "consumer")])
        assert client.post("/v1/predict/toy", json=row, headers=consumer).status_code == 200
        assert client.post("/v1/predict/broken", json=row, headers=consumer).status_code == 409
        assert client.get("/v1/audit", headers=consumer).status_code == 403
    query = {"dataset": "visits", "sql": "SELECT COUNT(*) FROM t", "epsilon": 0.5}
    assert client.post("/v1/dp/query", json=query, headers=_bearer(tokens[("north", "analyst")])).status_code == 200


def _secrets(tokens: dict[tuple[str, str], str]) -> list[str]:
    return [token.split("_", 2)[2] for token in tokens.values()]


@pytest.fixture
def client(setup: Setup) -> Iterator[TestClient]:
    with TestClient(create_app(setup.gateway)) as test_client:
        yield test_client


# -- /v1/dashboard without a browser -----------------------------------------------------------------------------


def test_dashboard_json_shows_the_callers_tenant_only(setup: Setup, client: TestClient) -> None:
    tokens = setup.tokens
    _traffic(client, tokens)
    north = client.get("/v1/dashboard", headers=_bearer(tokens[("north", "operator")]))
    assert north.status_code == 200, north.text
    assert north.headers["cache-control"] == "no-store"
    data = north.json()
    assert set(data) == TOP_LEVEL
    assert (data["tenant"], data["role"]) == ("north", "operator")

    models = {m["name"]: m for m in data["models"]}
    assert {name: m["status"] for name, m in models.items()} == {"toy": "loaded", "other": "available",
                                                                 "broken": "refused"}  # fmt: skip
    assert "refused" in models["broken"]["problem"] and models["toy"]["problem"] is None
    assert all(
        re.fullmatch(r"[0-9a-f]{12}", m["digest"]) and m["signer"].startswith("ed25519:") for m in models.values()
    )
    assert all(m["callable"] for m in models.values())

    keys = {k["key_id"]: k for k in data["keys"]}
    assert set(keys) == setup.ids["north"]
    assert all(set(k) >= {"role", "models", "expires_at", "revoked", "limits"} for k in keys.values())
    assert not any("digest" in k or "token" in k or "secret" in k for k in keys.values())
    revoked = [k for k in keys.values() if k["revoked"]]
    assert len(revoked) == 1 and revoked[0]["models"] == ["toy"]
    assert revoked[0]["limits"] == {"rate": 5.0, "burst": 10, "budget_queries": 100, "budget_window": 86400}
    assert [k["label"] for k in keys.values() if k["expired"]] == ["expired"]

    [budget] = data["budgets"]
    assert budget["dataset"] == "visits" and budget["epsilon"] == 5.0
    assert budget["spent_epsilon"] == pytest.approx(0.5, abs=1e-3) and budget["charges"] == 1

    north_subjects = {f"key:{key_id}" for key_id in setup.ids["north"]}
    assert data["audit"] and len(data["audit"]) <= AUDIT_RECORDS
    assert {a["principal"] for a in data["audit"]} <= north_subjects
    assert {"predict", "dp.query", "audit"} <= {a["route"] for a in data["audit"]}
    assert {a["decision"] for a in data["audit"]} >= {"allowed", "denied", "error"}
    seqs = [a["seq"] for a in data["audit"]]
    assert seqs == sorted(seqs, reverse=True)

    chain = data["chain"]
    assert chain["ok"] is True and chain["problem"] is None and "intact" in chain["summary"]
    assert chain["records"] == chain["head_seq"] >= len(seqs) and chain["unsigned"] == chain["records"]

    south = client.get("/v1/dashboard", headers=_bearer(tokens[("south", "auditor")])).json()
    assert south["tenant"] == "south" and {k["key_id"] for k in south["keys"]} == setup.ids["south"]
    assert [b["dataset"] for b in south["budgets"]] == ["claims"] and south["budgets"][0]["charges"] == 0
    assert {a["principal"] for a in south["audit"]} <= {f"key:{key_id}" for key_id in setup.ids["south"]}
    south_text = json.dumps(south)
    assert not any(key_id in south_text for key_id in setup.ids["north"])
    assert "visits" not in south_text
    for body in (north.text, south_text):
        assert not any(secret in body for secret in _secrets(tokens))

    scoped = setup.keys.issue("north", "operator", models=["toy", "other:1"]).token
    models = client.get("/v1/dashboard", headers=_bearer(scoped)).json()["models"]
    assert {m["name"]: m["callable"] for m in models} == {"toy": True, "other": True, "broken": False}


def test_dashboard_needs_a_role_that_may_and_every_request_is_audited(setup: Setup, client: TestClient) -> None:
    tokens = setup.tokens
    for role in Role:
        response = client.get("/v1/dashboard", headers=_bearer(tokens[("north", role.value)]))
        if role in (Role.OPERATOR, Role.AUDITOR, Role.ADMIN):
            assert response.status_code == 200, (role, response.text)
        else:
            assert response.status_code == 403, role
            assert response.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/dashboard").status_code == 401
    assert client.get("/v1/dashboard", headers=_bearer("pvt_abcdefghjk_" + "A" * 43)).status_code == 401
    records = [e.event for e in setup.gateway.chain.recent(limit=100) if e.event.route == "dashboard"]
    assert len(records) == 7
    assert sorted(r.decision for r in records if r.tenant == "north") == ["allowed"] * 3 + ["denied"] * 2
    assert sorted(r.status for r in records if r.tenant is None) == [401, 401]


def test_a_broken_chain_is_reported_not_hidden(setup: Setup, client: TestClient) -> None:
    _traffic(client, setup.tokens)
    with setup.gateway.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET latency_ms = 99.0 WHERE seq = 2"))
    data = client.get("/v1/dashboard", headers=_bearer(setup.tokens[("north", "auditor")])).json()
    assert data["chain"]["ok"] is False and "record 2 was edited" in data["chain"]["problem"]
    assert "BROKEN" in data["chain"]["summary"]
    report = gather(setup.gateway, Principal.of("south", "auditor", "test")).chain  # the function, uncached
    assert report.ok is False and report.problem == data["chain"]["problem"]


def test_the_chain_report_is_reused_and_a_slow_verification_does_not_hold_the_page(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifications: list[float] = []
    real = dashboard.verify_chain

    def slow(gateway: Gateway) -> dashboard.ChainRow:
        verifications.append(time.monotonic())
        time.sleep(0.3)
        return real(gateway)

    monkeypatch.setattr(dashboard, "verify_chain", slow)

    async def scenario() -> None:
        cache = dashboard._ChainCache(setup.gateway, ttl=60, wait=0.05)
        assert await cache.get() is None  # the first verification is under way: the page says so, at once
        await asyncio.sleep(0.5)
        first = await cache.get()
        assert first is not None and first.ok and await cache.get() is first and len(verifications) == 1
        cache._ttl = 0
        assert await cache.get() is first  # stale: verified again in the background, the old report meanwhile
        await asyncio.sleep(0.5)
        assert len(verifications) == 2 and cache._row is not first

    asyncio.run(scenario())


def test_the_page_is_static_self_contained_and_unaudited(setup: Setup, client: TestClient) -> None:
    head = setup.gateway.chain.recent(limit=1)
    html = client.get("/dashboard")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    sources = {"html": html.text}
    for name in ("dashboard.js", "dashboard.css", "favicon.svg"):
        response = client.get(f"/dashboard/{name}")
        assert response.status_code == 200, name
        assert response.headers["x-content-type-options"] == "nosniff"
        sources[name] = response.text
    csp = html.headers["content-security-policy"]
    assert "default-src 'self'" in csp.split("; ") and "frame-ancestors 'none'" in csp
    assert not re.search(r"<script(?![^>]*\bsrc=)", html.text), "inline script: the CSP would block it"
    assert not re.search(r"\son\w+=|style=|javascript:", html.text)
    assert not any(re.search(r"https?://(?!www\.w3\.org/2000/svg)", source) for source in sources.values())
    script = sources["dashboard.js"]
    assert not re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write|eval\(", script)
    assert "localStorage" not in script and "textContent" in script
    assert setup.gateway.chain.recent(limit=1) == head  # no audit record for a page that holds no data
    assert "/dashboard" not in client.get("/openapi.json").json()["paths"]


# -- the page in headless Chromium --------------------------------------------------------------------------------


@pytest.fixture
def live(setup: Setup) -> Iterator[str]:
    """The gateway on a real loopback port (uvicorn in a thread), with some traffic of both tenants."""
    with running(create_app(setup.gateway)) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            _traffic(http, setup.tokens)
        yield base


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through chromedriver; skips where either (or selenium) is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_dashboard_page_in_chromium(browser: Any, setup: Setup, live: str) -> None:  # browser first: skips early
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tokens = setup.tokens
    wait = WebDriverWait(browser, 15, poll_frequency=0.05)

    def element(id_: str) -> Any:
        return browser.find_element(By.ID, id_)

    def cells(table: str) -> list[str]:  # one round trip, not one per cell
        script = "return Array.from(document.querySelectorAll(arguments[0]), td => td.textContent)"
        return list(browser.execute_script(script, f"#{table} tbody td"))

    def sign_in(token: str) -> None:
        field = element("api-key")
        field.clear()
        field.send_keys(token)
        element("show").click()

    browser.get(f"{live}/dashboard")
    wait.until(lambda d: "Enter an API key" in element("message").text)
    assert element("data").get_attribute("hidden") is not None

    sign_in(tokens[("north", "operator")])
    wait.until(lambda d: "chain ok" in (element("chain-status").get_attribute("class") or ""))
    assert "intact" in element("chain-status").text
    assert element("chain-status").value_of_css_property("background-color") == "rgba(227, 244, 230, 1)"
    assert "Tenant north" in element("whoami").text and element("api-key").get_attribute("value") == ""
    models = cells("models-table")
    assert {"toy", "other", "broken", "loaded", "available"} <= set(models)
    assert any(c.startswith("model broken:1 is refused") for c in models)
    keys = cells("keys-table")
    assert setup.ids["north"] <= set(keys) and XSS_LABEL in keys  # the label shown as text, never parsed
    assert not browser.find_elements(By.CSS_SELECTOR, "#keys-table img") and browser.title != "1"
    assert cells("budgets-table")[0] == "visits" and cells("budgets-table")[2] == "5.000"
    audit = cells("audit-table")
    assert {"predict", "dp.query", "allowed", "denied"} <= set(audit)
    assert not any(key_id in " ".join(audit) for key_id in setup.ids["south"])
    source = browser.page_source
    assert not any(secret in source for secret in _secrets(tokens))
    stored = browser.execute_script("return [sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [1, 0, ""]

    browser.refresh()  # the key survives a reload of the tab (sessionStorage), and the page loads by itself
    wait.until(lambda d: "Tenant north" in element("whoami").text and cells("keys-table"))

    sign_in(tokens[("south", "auditor")])
    wait.until(lambda d: "Tenant south" in element("whoami").text)
    page = element("data").text
    assert not any(key_id in page for key_id in setup.ids["north"]) and "visits" not in page
    assert setup.ids["south"] <= set(cells("keys-table")) and cells("budgets-table")[0] == "claims"
    assert "key:" in page and "intact" in element("chain-status").text

    sign_in(tokens[("north", "consumer")])
    wait.until(lambda d: "may not view the dashboard" in element("message").text)
    assert "operator, auditor or admin" in element("message").text
    assert element("data").get_attribute("hidden") is not None and not cells("keys-table")
    assert "Not signed in" in element("whoami").text and not element("refresh").is_enabled()
    assert browser.execute_script("return sessionStorage.length") == 0  # a key that cannot is not kept

    sign_in("pvt_abcdefghjk_" + "A" * 43)
    wait.until(lambda d: "was not accepted" in element("message").text)
    assert browser.execute_script("return sessionStorage.length") == 0

    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    # The only errors are the refused fetches themselves (403, 401): no CSP violation, no script error.
    assert all(re.search(r"v1/dashboard - Failed to load resource: .* (401|403)", e) for e in errors), errors
