"""gRPC with mutual TLS between parties of one federation: calls work, strangers and revoked parties do not."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from privet.crypto import pki
from privet.errors import IntegrityError, UsageError
from privet.federated.provision import Provisioned, provision, revoke
from privet.net.frames import Message
from privet.net.rpc import Client, Identity, RemoteError, Server


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    return provision(tmp_path_factory.mktemp("fed") / "hospitals", "hospitals", ["alice", "bob", "carol"])


def _identity(fed: Provisioned, party: str) -> Identity:
    folder = fed.directory / ("server" if party == "server" else f"clients/{party}")
    return Identity.load(folder, fed.passphrases[party].encode())


def _echo(message: Message, peer: str) -> Message:
    return Message("echo", {"peer": peer, **message.header}, message.payload)


def test_provisioned_layout_and_key_protection(federation: Provisioned) -> None:
    root = federation.directory
    for path in ["ca/ca.crt", "ca/ca.key", "ca/crl.pem", "server/party.key", "clients/bob/party.crt"]:
        assert (root / path).is_file()
    for key in root.rglob("party.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    for sealed in root.rglob("he.key"):  # the CKKS secret, sealed under the party key: no TenSEAL context in clear
        assert stat.S_IMODE(sealed.stat().st_mode) == 0o600 and b"PHK1" not in sealed.read_bytes()
    assert len(list(root.rglob("he.key"))) == 3 and (root / "server/he.pub").is_file()
    with pytest.raises(IntegrityError, match="could not be decrypted"):
        Identity.load(root / "clients/alice", b"wrong passphrase, long enough")
    assert _identity(federation, "alice").party == "alice" and "PRIVATE" not in repr(_identity(federation, "alice"))
    with pytest.raises(UsageError, match="already exists"):
        provision(root, "hospitals", ["x"])


def _call(address: str, identity: Identity, message: Message, *, compress: bool = False) -> Message:
    with Client(address, identity) as client:
        return client.call("Echo" if message.kind != "refuse" else "Refuse", message, timeout=20, compress=compress)


def test_mutual_tls_call_with_a_large_payload(federation: Provisioned) -> None:
    payload = os.urandom(3 << 20)
    with Server(_identity(federation, "server"), {"Echo": _echo}) as server:
        message = Message("ping", {"round": 3}, payload)
        reply = _call(f"localhost:{server.port}", _identity(federation, "alice"), message, compress=True)
    assert reply.header == {"peer": "alice", "round": 3} and bytes(reply.payload) == payload


def test_a_client_without_a_federation_certificate_is_refused(federation: Provisioned, tmp_path: Path) -> None:
    other = provision(tmp_path / "other", "other", ["mallory"])
    stranger = _identity(other, "mallory")
    own = _identity(federation, "alice")
    # A certificate from another CA, and a certificate that is not the presented key's: both fail the handshake.
    impostors = [Identity(own.ca_pem, stranger.certificate_pem, stranger.key_pem),
                 Identity(own.ca_pem, own.certificate_pem, stranger.key_pem)]  # fmt: skip
    with Server(_identity(federation, "server"), {"Echo": _echo}) as server:
        for identity in impostors:
            with pytest.raises(RemoteError, match="UNAVAILABLE"):
                _call(f"localhost:{server.port}", identity, Message("ping"))


def test_a_revoked_client_is_refused_and_others_still_served(tmp_path: Path) -> None:
    fed = provision(tmp_path / "fed", "lab", ["alice", "bob"])
    with Server(_identity(fed, "server"), {"Echo": _echo}) as server:
        address = f"localhost:{server.port}"
        assert _call(address, _identity(fed, "bob"), Message("ping")).header["peer"] == "bob"
        server.revoke(revoke(fed.directory, "bob", fed.passphrases["ca"].encode()))
        with pytest.raises(RemoteError, match=r"PERMISSION_DENIED.*revoked"):
            _call(address, _identity(fed, "bob"), Message("ping"))
        assert _call(address, _identity(fed, "alice"), Message("ping")).header["peer"] == "alice"
        with pytest.raises(IntegrityError, match="not signed"):
            server.revoke(pki.revocation_list(pki.make_authority("rogue"), []))
    restarted = Server(_identity(fed, "server"), {"Echo": _echo})  # reads the crl.pem in its folder
    with restarted, pytest.raises(RemoteError, match="revoked"):
        _call(f"localhost:{restarted.port}", _identity(fed, "bob"), Message("ping"))
    with pytest.raises(UsageError, match="no certificate was issued"):
        revoke(fed.directory, "zed", fed.passphrases["ca"].encode())


def test_handler_errors_and_unknown_methods_reach_the_caller(federation: Provisioned) -> None:
    def refuse(message: Message, peer: str) -> Message:
        raise UsageError("round 7 is closed")

    with Server(_identity(federation, "server"), {"Refuse": refuse}) as server:
        address, carol = f"localhost:{server.port}", _identity(federation, "carol")
        with pytest.raises(RemoteError, match="ABORTED: round 7 is closed"):
            _call(address, carol, Message("refuse"))
        with pytest.raises(RemoteError, match="UNIMPLEMENTED"):
            _call(address, carol, Message("ping"))
