"""Calls between parties: gRPC over mutual TLS, each request and response a chunked :class:`Message`.

:class:`Server` serves named methods (``handler(message, peer) -> message``) on one port; :class:`Client`
calls them. Both sides present certificates of the same federation CA (:class:`Identity`):

- the TLS handshake itself refuses a client without a certificate issued by the CA (``require_client_auth``);
- on every call the server re-checks the presented certificate against the CA and the revocation list, and
  refuses a revoked client with ``PERMISSION_DENIED`` (gRPC's TLS has no CRL hook, so the check is here, before
  any handler runs); the handler receives the verified party id, never a self-declared one.

All methods are bidirectional streams of frames (:mod:`privet.net.frames`), registered as one generic gRPC
service, ``privet.v1.Party``: no generated code, and the message schema version travels in every message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

# gRPC's core logs every failed TLS handshake to stderr on its own; privet reports failures itself, in one line.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
import grpc  # after the verbosity is set: gRPC reads it when it loads

from privet.crypto import pki
from privet.errors import FormatError, PrivetError, UsageError
from privet.net.frames import Message, decode, encode

__all__ = ["Client", "Handler", "Identity", "RemoteError", "Server"]

SERVICE = "privet.v1.Party"
DEFAULT_MAX_PAYLOAD = 8 << 30
Handler = Callable[[Message, str], Message]


class RemoteError(PrivetError):
    """A call failed: the peer refused it, it timed out, or the connection broke."""


@dataclass(frozen=True)
class Identity:
    """One party's TLS material: the federation CA, its own certificate and (decrypted, in memory) key, and for
    a server the CA-signed revocation list."""

    ca_pem: bytes
    certificate_pem: bytes
    key_pem: bytes
    crl_pem: bytes | None = None
    he_key: bytes | None = None  # a client's sealed CKKS key (he.key), opened where homomorphic aggregation needs it

    def __repr__(self) -> str:  # the key never reaches a log
        return f"Identity({pki.client_id(pki.certificate_from_pem(self.certificate_pem))!r})"

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> Identity:
        """Read ``ca.crt``, ``party.crt``, ``party.key`` (encrypted) and, if present, ``crl.pem`` and ``he.key``."""
        directory = Path(directory)
        try:
            ca, cert, key = ((directory / n).read_bytes() for n in ("ca.crt", "party.crt", "party.key"))
        except FileNotFoundError as exc:
            raise UsageError(
                f"{exc.filename} is missing", "Point at a directory `privet fl provision` wrote."
            ) from None
        crl_path, he_path = directory / "crl.pem", directory / "he.key"
        crl = crl_path.read_bytes() if crl_path.exists() else None
        he_key = he_path.read_bytes() if he_path.exists() else None
        return cls(ca, cert, pki.unlocked_key_pem(key, passphrase), crl, he_key)

    @property
    def party(self) -> str:
        return pki.client_id(pki.certificate_from_pem(self.certificate_pem))


# Frames are at most 1 MiB plus an envelope, so gRPC's own message limits stay at their defaults.
_OPTIONS = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_permit_without_calls", 1)]


class Server:
    """Serve ``handlers`` (method name -> handler) on ``host:port`` (port 0: the OS picks; see :attr:`port`).

    With ``spool``, request payloads over ``spool_over`` bytes reach handlers as files there
    (:class:`~privet.net.frames.Spooled`), not in memory.
    """

    def __init__(
        self,
        identity: Identity,
        handlers: dict[str, Handler],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 16,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        spool: Path | None = None,
        spool_over: int = 64 << 20,
    ) -> None:
        if identity.crl_pem is None:
            raise UsageError("a server needs the federation's revocation list (crl.pem)", "Re-run provisioning.")
        self._identity = identity
        self._ca = pki.certificate_from_pem(identity.ca_pem, "CA certificate")
        self._crl_lock = threading.Lock()
        self._crl = identity.crl_pem
        self._max_payload = max_payload
        self._spool, self._spool_over = spool, spool_over
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=_OPTIONS)
        methods = {
            name: grpc.stream_stream_rpc_method_handler(self._wrap(handler)) for name, handler in handlers.items()
        }
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, methods)])
        credentials = grpc.ssl_server_credentials(
            [(identity.key_pem, identity.certificate_pem)],
            root_certificates=identity.ca_pem,
            require_client_auth=True,
        )
        self.port = self._server.add_secure_port(f"{host}:{port}", credentials)
        if self.port == 0:
            raise UsageError(f"could not listen on {host}:{port}", "Choose a free port or another host.")

    def revoke(self, crl_pem: bytes) -> None:
        """Use a new revocation list from now on (it must verify against the CA)."""
        pki.check_revocation(crl_pem, self._ca, self._ca)  # raises unless the CA signed it
        with self._crl_lock:
            self._crl = crl_pem

    def _peer(self, context: grpc.ServicerContext) -> str:
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        certificate = pki.certificate_from_pem(pems[0])
        with self._crl_lock:
            crl = self._crl
        try:
            pki.verify_issued(self._ca, certificate)
            pki.check_revocation(crl, self._ca, certificate)
        except PrivetError as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.message)
        return pki.client_id(certificate)

    def _wrap(self, handler: Handler) -> Callable[[Iterator[bytes], grpc.ServicerContext], Iterator[bytes]]:
        def call(frames: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            peer = self._peer(context)
            try:
                request = decode(frames, max_size=self._max_payload, spool=self._spool, spool_over=self._spool_over)
                response = handler(request, peer)
            except PrivetError as exc:
                code = grpc.StatusCode.INVALID_ARGUMENT if isinstance(exc, FormatError) else grpc.StatusCode.ABORTED
                context.abort(code, exc.message)
            yield from encode(response)

        return call

    def start(self) -> Server:
        self._server.start()
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        self._server.stop(grace).wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Client:
    """Calls to one server at ``address`` (``host:port``) as ``identity``."""

    def __init__(self, address: str, identity: Identity, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=identity.ca_pem,
            private_key=identity.key_pem,
            certificate_chain=identity.certificate_pem,
        )
        self._channel = grpc.secure_channel(address, credentials, options=_OPTIONS)
        self._max_payload = max_payload
        self.address = address

    def call(self, method: str, message: Message, *, timeout: float, compress: bool = False) -> Message:
        """Send ``message`` to ``method`` and return the reply; failures are :class:`RemoteError`."""
        stub = self._channel.stream_stream(f"/{SERVICE}/{method}")
        try:
            return decode(stub(encode(message, compress=compress), timeout=timeout), max_size=self._max_payload)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in (detail or ""):
                raise RemoteError(
                    f"{method} on {self.address} failed: UNTRUSTED_SERVER: its certificate was not issued by this "
                    "party's federation CA",
                    "Use this federation's server address, or the party folder of the server's federation.",
                ) from None
            raise RemoteError(
                f"{method} on {self.address} failed: {getattr(code, 'name', 'UNKNOWN')}: {detail}",
                "Check the server address, this party's certificate and the network.",
            ) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
