"""A federation's own public-key infrastructure: a private CA, server and client certificates, revocation.

Everything is X.509 from ``cryptography``: ECDSA P-256 keys and SHA-256 signatures (what every TLS stack,
gRPC's BoringSSL included, accepts). The CA signs

- one server certificate (``serverAuth``; subject alternative names: the host names and IP addresses clients
  dial), and
- one client certificate per party (``clientAuth``; the common name is the client's id, which is how the server
  knows who connected),

and a certificate revocation list (CRL) that the server consults on every connection: a revoked client is
refused even though its certificate still verifies. Certificates carry random 159-bit serial numbers and a
validity of ``days``.

Private keys leave this module only as PKCS#8 PEM encrypted under a passphrase (:func:`key_to_pem`), never in
the clear: the party that holds the key file also needs its passphrase, given out of band.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privet.errors import FormatError, IntegrityError, UsageError

__all__ = [
    "Certified",
    "certificate_from_pem",
    "check_id",
    "check_revocation",
    "client_id",
    "issue",
    "key_from_pem",
    "key_to_pem",
    "make_authority",
    "revocation_list",
    "unlocked_key_pem",
    "verify_issued",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Certified:
    """A private key and the certificate for it."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def check_id(name: str, what: str = "a party id") -> str:
    """``name`` if it is a usable party id (it names directories and certificates), else a usage error."""
    if not isinstance(name, str) or not _ID.match(name):
        raise UsageError(
            f"{what} must be 1-63 letters, digits, '.', '_' or '-' (starting with a letter or digit), got {name!r}"
        )
    return name


def make_authority(name: str, *, days: int = 3650) -> Certified:
    """A new self-signed CA for the federation ``name``."""
    check_id(name, "the federation name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"privet federation {name} CA")])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return Certified(key, certificate)


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue(authority: Certified, party: str, *, server_hosts: Sequence[str] = (), days: int = 825) -> Certified:
    """A certificate signed by ``authority``: a server's when ``server_hosts`` is given, else a client's."""
    check_id(party)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
    )
    if server_hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(server_hosts)), critical=False)
    return Certified(key, builder.sign(authority.key, hashes.SHA256()))


def revocation_list(authority: Certified, revoked: Iterable[int], *, days: int = 3650) -> bytes:
    """A CRL (PEM) signed by ``authority`` listing the certificates of serial numbers ``revoked``."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=days))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(authority.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def certificate_from_pem(data: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise FormatError(
            f"the {what} is not a PEM X.509 certificate", "Use the files `privet fl provision` wrote."
        ) from None


def verify_issued(authority: x509.Certificate, certificate: x509.Certificate) -> None:
    """Check that ``authority`` signed ``certificate`` and that it is within its validity period."""
    try:
        certificate.verify_directly_issued_by(authority)
    except (InvalidSignature, ValueError, TypeError):
        raise IntegrityError(
            f"the certificate of {client_id(certificate)!r} was not issued by this federation's CA",
            "Use a certificate from this federation's `privet fl provision`.",
        ) from None
    now = _now()
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise IntegrityError(f"the certificate of {client_id(certificate)!r} is expired or not yet valid")


def check_revocation(crl_pem: bytes, authority: x509.Certificate, certificate: x509.Certificate) -> None:
    """Refuse ``certificate`` if the CA-signed ``crl_pem`` lists it; refuse a CRL the CA did not sign."""
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError:
        raise FormatError("the revocation list is not a PEM CRL", "Use the crl.pem `privet fl` wrote.") from None
    public_key = authority.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public_key):
        raise IntegrityError("the revocation list is not signed by this federation's CA", "Refusing every client.")
    if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
        raise IntegrityError(f"the certificate of {client_id(certificate)!r} is revoked")


def client_id(certificate: x509.Certificate) -> str:
    """The party id a certificate names (its common name)."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def key_to_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """PKCS#8 PEM of ``key`` encrypted under ``passphrase`` (the library's best available scheme)."""
    if len(passphrase) < 16:
        raise UsageError("a key passphrase must have at least 16 bytes")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def key_from_pem(data: bytes, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    """Decrypt a key written by :func:`key_to_pem`; a wrong passphrase is an :class:`IntegrityError`."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError):
        raise IntegrityError(
            "the private key could not be decrypted (wrong passphrase or damaged file)",
            "Pass the passphrase `privet fl provision` printed for this party.",
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FormatError("the private key is not an EC key", "Use the key files `privet fl provision` wrote.")
    return key


def unlocked_key_pem(data: bytes, passphrase: bytes) -> bytes:
    """The unencrypted PKCS#8 PEM of an encrypted key, for a TLS library to use in memory (never to be written)."""
    return key_from_pem(data, passphrase).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
