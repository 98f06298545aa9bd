"""``privet admin``, ``privet serve`` with TLS terminated in the gateway, and ``privet audit verify``, as real
processes."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.test_cli import PRIVET, home, master, one_error_line, run  # noqa: F401


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the test trusts it directly)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privet test gateway")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert, key_file = folder / "gateway.crt", folder / "gateway.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert, key_file


def test_admin_serve_over_tls_and_audit_verify(home: Path, master: str, tmp_path: Path) -> None:  # noqa: F811
    env = {"PRIVET_MASTER_KEY": master}
    roles = json.loads(run(home, "admin", "roles", "--json").stdout)["roles"]
    assert roles["auditor"] == ["audit.read", "dashboard"] and "dp.query" not in roles["consumer"]
    run(home, "admin", "tenants", "create", "north", "--json", **env)
    issued = json.loads(run(home, "admin", "keys", "create", "--tenant", "north", "--role", "auditor", "--json",
                            **env).stdout)  # fmt: skip
    listed = run(home, "admin", "keys", "list", "--json", **env).stdout
    assert issued["key_id"] in listed and issued["key"].split("_", 2)[2] not in listed
    refused = run(home, "admin", "keys", "create", "--tenant", "south", "--role", "auditor", code=2, **env)
    assert "no tenant 'south'" in one_error_line(refused)

    cert, key = _certificate(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRIVET_")}
    environment.update(PRIVET_HOME=str(home), **env)
    server = subprocess.Popen([PRIVET, "serve", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)],
                              env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    assert client.get("/healthz").json() == {"status": "ok"}
                    break
                except httpx.TransportError:
                    assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()  # type: ignore[union-attr]
                    time.sleep(0.2)
            headers = {"Authorization": f"Bearer {issued['key']}"}
            assert client.get("/v1/audit", headers=headers).status_code == 200
            assert client.get("/v1/audit").status_code == 401
        with httpx.Client(timeout=5) as plain:  # no cleartext HTTP on the TLS port
            try:
                answered = plain.get(f"http://127.0.0.1:{port}/healthz").status_code
            except httpx.HTTPError:
                answered = None
            assert answered != 200
    finally:
        server.terminate()
        server.wait(30)
    verified = json.loads(run(home, "audit", "verify", "--json", **env).stdout)
    assert verified["ok"] is True and verified["records"] >= 2
    bad = run(home, "serve", "--tls-cert", str(cert), code=2, **env)
    assert "both --tls-cert and --tls-key" in one_error_line(bad)
