"""Provisioning a federation: the directory ``privet fl provision`` writes, and revocation.

Layout (each party gets its own folder, to be handed to it with its passphrase)::

    OUT/ca/ca.crt, ca.key, crl.pem, parties.json   # the CA: stays with the coordinator
    OUT/server/ca.crt, party.crt, party.key, crl.pem, he.pub
    OUT/clients/<id>/ca.crt, party.crt, party.key, he.key

Every ``*.key`` is PKCS#8 encrypted under its own random passphrase (24 random bytes, URL-safe base64), which
:func:`provision` returns and the CLI prints once; key files are written with mode 0600. ``parties.json`` maps
each certificate's serial number to its party, for revocation. ``he.key`` is the federation's CKKS secret key for
homomorphic aggregation (:mod:`privet.he.ckks`: the same for every client, never given to the
server, which gets only the public parameters in ``he.pub``), sealed with AES-256-GCM under a key derived from
the client's own party key, so it is as safe as that key's passphrase. The whole directory is written atomically: an
interrupted provisioning leaves nothing behind.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from privet.crypto import pki
from privet.crypto.keyed import Aead, derive_key
from privet.errors import IntegrityError, NotFoundError, UsageError
from privet.files import atomic_directory, atomic_file
from privet.he.ckks import HEKeys

__all__ = ["Provisioned", "open_he_keys", "provision", "revoke"]


@dataclass(frozen=True)
class Provisioned:
    """Where the federation was written and each party's key passphrase (``"ca"``, ``"server"``, client ids)."""

    directory: Path
    passphrases: dict[str, str]


def _passphrase() -> str:
    return base64.urlsafe_b64encode(os.urandom(24)).decode()


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def provision(
    out: Path, name: str, clients: Sequence[str], *, server_hosts: Sequence[str] = ("localhost", "127.0.0.1")
) -> Provisioned:
    """Create the CA, the server's and every client's certificate and key, and an empty revocation list."""
    ids = [pki.check_id(c, "a client id") for c in clients]
    if not ids or len(set(ids)) != len(ids) or "server" in ids:
        raise UsageError("client ids must be distinct, at least one, and not 'server'")
    if not server_hosts:
        raise UsageError("the server needs at least one host name or address that clients dial")
    out = Path(out)
    if out.exists():
        raise UsageError(f"{out} already exists", "Provision into a new directory; an existing federation is kept.")
    authority = pki.make_authority(name)
    secrets = {"ca": _passphrase(), "server": _passphrase(), **{c: _passphrase() for c in ids}}
    crl = pki.revocation_list(authority, [])
    ca_pem = authority.certificate_pem()
    parties: dict[str, str] = {}
    he_keys = HEKeys.generate()
    with atomic_directory(out) as root:
        _write(root / "ca" / "ca.crt", ca_pem)
        _write(root / "ca" / "ca.key", pki.key_to_pem(authority.key, secrets["ca"].encode()), 0o600)
        _write(root / "ca" / "crl.pem", crl)
        for party, folder, hosts in [("server", root / "server", server_hosts)] + [
            (c, root / "clients" / c, ()) for c in ids
        ]:
            issued = pki.issue(authority, party, server_hosts=hosts)
            parties[str(issued.certificate.serial_number)] = party
            _write(folder / "ca.crt", ca_pem)
            _write(folder / "party.crt", issued.certificate_pem())
            _write(folder / "party.key", pki.key_to_pem(issued.key, secrets[party].encode()), 0o600)
            if party != "server":
                sealed = _he_seal(issued.key, party).seal(he_keys.secret_bytes(), party.encode())
                _write(folder / "he.key", sealed, 0o600)
        _write(root / "server" / "crl.pem", crl)
        _write(root / "server" / "he.pub", he_keys.public_bytes())
        _write(root / "ca" / "parties.json", json.dumps({"name": name, "serials": parties}, indent=1).encode())
    return Provisioned(out, secrets)


def _he_seal(key: ec.EllipticCurvePrivateKey, party: str) -> Aead:
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return Aead(derive_key(scalar, b"privet fl he.key " + party.encode()))


def open_he_keys(sealed: bytes, key_pem: bytes, party: str) -> HEKeys:
    """A client's CKKS keys from its ``he.key`` and its unlocked party key (PEM)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError("the party key is not an ECDSA key", "Use the folder `privet fl provision` wrote.")
    try:
        return HEKeys.from_secret_bytes(_he_seal(key, party).open(sealed, party.encode()))
    except IntegrityError:
        raise IntegrityError(f"he.key of {party!r} does not open with its party key",
                             "Use the he.key provisioned with this party's folder.") from None  # fmt: skip


def revoke(federation: Path, party: str, ca_passphrase: bytes) -> bytes:
    """Add ``party``'s certificate to the revocation list (in ``ca/`` and ``server/``); returns the new CRL."""
    federation = Path(federation)
    try:
        registry = json.loads((federation / "ca" / "parties.json").read_text())
        ca_pem, key_pem = ((federation / "ca" / n).read_bytes() for n in ("ca.crt", "ca.key"))
    except FileNotFoundError:
        raise NotFoundError(f"{federation} is not a provisioned federation (its ca/ folder is incomplete)") from None
    authority = pki.Certified(pki.key_from_pem(key_pem, ca_passphrase), pki.certificate_from_pem(ca_pem))
    serials = [int(s) for s, p in registry["serials"].items() if p == party]
    if not serials:
        raise NotFoundError(f"no certificate was issued to {party!r} in this federation")
    revoked = set(registry.get("revoked", [])) | set(serials)
    crl = pki.revocation_list(authority, sorted(revoked))
    for folder in ("ca", "server"):
        with atomic_file(federation / folder / "crl.pem", mode=0o644) as handle:
            handle.write(crl)
    registry["revoked"] = sorted(revoked)
    with atomic_file(federation / "ca" / "parties.json", mode=0o644) as handle:
        handle.write(json.dumps(registry, indent=1).encode())
    return crl
