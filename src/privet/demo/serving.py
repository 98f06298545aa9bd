"""Stage 6: the gateway serves the demo model to two hospitals, masks a chat and restores it, and audits it all.

``privet serve``'s app runs on a loopback port (the chat upstream is the local stand-in, on another). Two tenants
get API keys; one calls the model registered in stage 1 (verified as it loads); the other cannot see the first
one's audit records or restore its pseudonyms; a chat message with a name, an e-mail address and a phone number
reaches the upstream masked and comes back restored exactly; the hash-chained audit log verifies.
"""

from __future__ import annotations

import time

import httpx

from privet.data.bundled import breast_cancer
from privet.demo.stage import DemoContext, Stage, StageReport
from privet.serve.app import create_app
from privet.serve.background import running
from privet.serve.chain import verify
from privet.serve.gateway import Gateway
from privet.serve.keys import ApiKeys
from privet.serve.settings import GatewaySettings
from privet.serve.standin import standin_app

MODEL = "breast-cancer-mlp"  # registered by stage 1
PATIENT = "Please summarise: Maria Garcia (maria.garcia@example.org, +1 415 555 0142) reports chest pain."


def run(ctx: DemoContext, report: StageReport) -> None:
    ws = ctx.workspace
    keys = ApiKeys(ws.store, ws.keyring)
    for tenant in ("st-mary", "riverside"):
        keys.create_tenant(tenant)
    mary = keys.issue("st-mary", "consumer", models=[MODEL, "standin"]).token
    mary_auditor = keys.issue("st-mary", "auditor").token
    river_auditor = keys.issue("riverside", "auditor").token
    river = keys.issue("riverside", "consumer").token
    data = breast_cancer(seed=ctx.seed)
    seen: list[str] = []
    with ctx.task("serving: gateway and a stand-in chat upstream on loopback"), running(standin_app(seen=seen)) as up:
        settings = GatewaySettings(upstream=f"{up}/v1", models=[MODEL])
        gateway = Gateway(ws.store, ws.keyring, ws.registry, settings)
        with running(create_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as client:

            def call(token: str, method: str, path: str, json: object = None) -> httpx.Response:
                return client.request(method, path, headers={"Authorization": f"Bearer {token}"}, json=json)

            started = time.perf_counter()
            predicted = call(mary, "POST", f"/v1/predict/{MODEL}", json={"inputs": data.x_test.tolist()})
            predict_ms = (time.perf_counter() - started) * 1000
            labels = predicted.json().get("predictions", []) if predicted.is_success else []
            hits = sum(int(p == y) for p, y in zip(labels, data.y_test.tolist(), strict=False))
            accurate = predicted.is_success and hits >= 0.9 * len(labels)
            detail = f"{len(labels)} patients, accuracy {hits / max(len(labels), 1):.3f}, {predict_ms:.0f} ms"
            report.check("a consumer's key calls the verified model", accurate, detail)
            no_key = client.post(f"/v1/predict/{MODEL}", json={"inputs": data.x_test[:1].tolist()})
            report.check("a call without a key is refused", no_key.status_code == 401, f"HTTP {no_key.status_code}")

            started = time.perf_counter()
            message = {"role": "user", "content": PATIENT}
            chat = call(mary, "POST", "/v1/chat/completions", json={"model": "standin", "messages": [message]})
            chat_ms = (time.perf_counter() - started) * 1000
            answer = chat.json()["choices"][0]["message"]["content"] if chat.is_success else ""
            leaked = any(v in said for said in seen for v in ("Maria", "maria.garcia", "555 0142"))
            report.check("the upstream saw only tokens", bool(seen) and not leaked,
                         f"upstream received: {seen[-1][:60] if seen else '-'}...")  # fmt: skip
            report.check("the reply is restored exactly", answer == "You said: " + PATIENT, f"{chat_ms:.0f} ms")

            theirs = call(river_auditor, "GET", "/v1/audit").json().get("records", [])
            mine = call(mary_auditor, "GET", "/v1/audit").json().get("records", [])
            # Riverside pastes st-mary's masked message into its own chat: the tokens must come back as tokens.
            pasted = seen[-1] if seen else ""
            replay = call(river, "POST", "/v1/chat/completions",
                          json={"model": "standin", "messages": [{"role": "user", "content": pasted}]})  # fmt: skip
            foreign = replay.json()["choices"][0]["message"]["content"] if replay.is_success else "Maria"
            report.check(
                "the other hospital sees none of st-mary's records and cannot restore its tokens",
                bool(mine) and all(r["tenant"] == "riverside" for r in theirs) and "Maria" not in foreign
                and "<<PERSON_" in foreign,
                f"st-mary's auditor sees {len(mine)} records, riverside's {len(theirs)}; st-mary's tokens pasted by "
                "riverside come back as tokens",
            )  # fmt: skip
        gateway.chain.checkpoint()
        chain = verify(ws.store, ws.keyring)
    report.check("the audit chain verifies", chain.ok, chain.summary())
    report.figures.update(serve_predict_ms=round(predict_ms, 1), serve_chat_ms=round(chat_ms, 1),
                          audit_records=chain.records)  # fmt: skip


STAGE = Stage("serving", "the gateway serves the model and a masked chat to two hospitals, audited", run)
