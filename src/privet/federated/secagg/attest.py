"""Signed keys and the consistency round: secure aggregation against a server that may lie (``malicious``).

A semi-honest server follows the protocol. A malicious one may also substitute keys (to sit in the middle of
two clients' share exchange) or tell different clients different stories about who dropped (to collect a
client's self-mask seed shares from some neighbours and its masking-key shares from others, and so unmask it).
Against that (Bonawitz et al. 2017, section 4; Bell et al. 2020):

- each client signs its round keys with its federation certificate's ECDSA P-256 key, over the round id, its
  index and its party id; every client checks each neighbour's certificate (issued by the federation's CA, naming
  the party the round's roster puts at that index) and signature before sharing anything with it;
- after the masked inputs, a *consistency round*: the server sends the survivors' set to every survivor, each
  signs it, and the server forwards the signatures with the unmasking request; a client answers only if the set
  is the one it signed and at least ``t`` of its neighbours signed the same set. With ``t > k / 2`` (the plan's
  ``malicious`` threshold) no two sets can each gather ``t`` neighbour signatures, so no client's seed and key
  shares are ever both released.

What remains out of reach: a server may still drop honest clients at will (denial of service), and clients
colluding with it learn what the semi-honest analysis allows; see docs/secagg.md.
"""

from __future__ import annotations

from collections.abc import Collection

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from privet.crypto import pki
from privet.errors import IntegrityError, UsageError
from privet.federated.secagg.protocol import PublicKeys

__all__ = ["Signer", "Verifier", "consistency_statement", "keys_statement"]


def keys_statement(round_id: bytes, index: int, party: str, keys: PublicKeys) -> bytes:
    """What a client signs in the keys stage."""
    name = party.encode()
    return (b"privet secagg keys\0" + round_id + index.to_bytes(4, "big") + len(name).to_bytes(2, "big") + name
            + keys.sharing + keys.masking)  # fmt: skip


def consistency_statement(round_id: bytes, survivors: Collection[int]) -> bytes:
    """What a surviving client signs in the consistency round."""
    return b"privet secagg survivors\0" + round_id + b"".join(i.to_bytes(4, "big") for i in sorted(survivors))


class Signer:
    """A client's signing half: its certificate and party key (from its provisioned folder)."""

    def __init__(self, certificate_pem: bytes, key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError("the party key is not an ECDSA key", "Use the folder `privet fl provision` wrote.")
        self.certificate_pem, self._key = certificate_pem, key
        self.party = pki.client_id(pki.certificate_from_pem(certificate_pem))

    def sign(self, statement: bytes) -> bytes:
        return self._key.sign(statement, ec.ECDSA(hashes.SHA256()))


class Verifier:
    """Checks certificates against the federation's CA and signatures against them."""

    def __init__(self, ca_pem: bytes) -> None:
        self._authority = pki.certificate_from_pem(ca_pem, "CA certificate")

    def peer(self, certificate_pem: bytes, party: str) -> ec.EllipticCurvePublicKey:
        """The public key of ``party``'s certificate; :class:`IntegrityError` unless the CA issued it to ``party``."""
        certificate = pki.certificate_from_pem(certificate_pem, f"certificate of {party!r}")
        pki.verify_issued(self._authority, certificate)
        if pki.client_id(certificate) != party:
            raise IntegrityError(f"the key certificate sent for {party!r} names another party")
        key = certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise IntegrityError(f"the certificate of {party!r} holds no ECDSA key")
        return key

    @staticmethod
    def valid(key: ec.EllipticCurvePublicKey, signature: bytes, statement: bytes) -> bool:
        try:
            key.verify(signature, statement, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True
