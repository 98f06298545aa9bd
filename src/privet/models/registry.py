"""The model registry: artifacts under ``<home>/registry/<name>/<version>.pvm``, indexed in the store.

Versions are immutable: packing a name and version that exist is refused. The index holds what is safe
to list without opening an artifact (name, version, digest, signer, key id); loading always goes through
full verification of the file itself, never through the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from privet.crypto.digest import sha256_file
from privet.crypto.keyring import DEFAULT_AEAD
from privet.crypto.signing import SigningKey
from privet.crypto.stream import KeySource, StreamHeader
from privet.errors import KeyDestroyedError, NotFoundError, UsageError
from privet.log import get_logger
from privet.models import artifact
from privet.models.manifest import PrivacyGuarantee, Scalar, check_identity
from privet.store import ArtifactRecord, Store

_log = get_logger(__name__)


@dataclass(frozen=True)
class Entry:
    """One registered artifact, as the index knows it."""

    name: str
    version: str
    path: Path
    sha256: str
    size: int
    encrypted: bool
    key_name: str | None
    key_version: int | None
    signer: str
    created_at: datetime


def _entry(row: ArtifactRecord) -> Entry:
    return Entry(
        row.name,
        row.version,
        Path(row.path),
        row.sha256,
        row.size,
        row.encrypted,
        row.key_name,
        row.key_version,
        row.signer,
        row.created_at,
    )


class Registry:
    """Artifacts of one privet home."""

    def __init__(self, store: Store, root: Path) -> None:
        self._store = store
        self.root = Path(root)

    def add(
        self,
        source: Path,
        *,
        name: str,
        version: str,
        signer: SigningKey,
        keys: KeySource | None,
        key_name: str = DEFAULT_AEAD,
        framework: str = "pytorch",
        metadata: dict[str, Scalar] | None = None,
        privacy: PrivacyGuarantee | None = None,
        progress: artifact.Progress | None = None,
    ) -> Entry:
        """Pack ``source`` into the registry; encrypted when ``keys`` is given."""
        check_identity(name, version)
        if self._find(name, version) is not None:
            raise UsageError(f"model {name}:{version} is already registered", "Versions are immutable; pick another.")
        path = (self.root / name / f"{version}{artifact.SUFFIX}").resolve()
        if path.exists():
            raise UsageError(f"{path} exists but is not in the index", "Move it away, then pack again.")
        envelope = artifact.pack(
            source,
            path,
            name=name,
            version=version,
            signer=signer,
            keys=keys,
            key_name=key_name,
            framework=framework,
            metadata=metadata,
            privacy=privacy,
            progress=progress,
        )
        header = self._stream_key(path) if envelope.encrypted else (None, None)
        row = ArtifactRecord(
            name=name,
            version=version,
            path=str(path),
            sha256=sha256_file(path),
            size=path.stat().st_size,
            encrypted=envelope.encrypted,
            key_name=header[0],
            key_version=header[1],
            signer=envelope.signer.fingerprint,
        )
        try:
            with self._store.transaction() as session:
                session.add(row)
        except DbIntegrityError:
            path.unlink(missing_ok=True)
            raise UsageError(f"model {name}:{version} was registered concurrently") from None
        return _entry(row)

    def entries(self, name: str | None = None) -> list[Entry]:
        query = select(ArtifactRecord).order_by(ArtifactRecord.name, ArtifactRecord.created_at, ArtifactRecord.id)
        if name is not None:
            query = query.where(ArtifactRecord.name == name)
        with self._store.transaction() as session:
            return [_entry(row) for row in session.scalars(query).all()]

    def resolve(self, reference: str) -> Entry:
        """``name:version``, or ``name`` for its newest version."""
        name, _, version = reference.partition(":")
        if version:
            row = self._find(name, version)
            if row is None:
                raise NotFoundError(f"model {name}:{version} is not registered", "Run 'privet model list'.")
            return _entry(row)
        found = self.entries(name)
        if not found:
            raise NotFoundError(f"model {name!r} is not registered", "Run 'privet model list'.")
        return found[-1]

    def rewrap(self, keys: KeySource, key_name: str) -> list[Entry]:
        """Re-wrap every encrypted artifact under ``key_name`` to that key's primary version."""
        changed = []
        unreadable = 0
        for entry in self.entries():
            if not entry.encrypted or entry.key_name != key_name:
                continue
            try:
                header = artifact.rewrap(entry.path, keys)
            except KeyDestroyedError:
                unreadable += 1  # its key version was shredded: nothing to re-wrap, ever
                continue
            if header is None or header.key_version == entry.key_version:
                continue
            with self._store.transaction() as session:
                row = session.scalars(
                    select(ArtifactRecord).where(
                        ArtifactRecord.name == entry.name, ArtifactRecord.version == entry.version
                    )
                ).one()
                row.key_version = header.key_version
                row.sha256 = sha256_file(entry.path)
                row.size = entry.path.stat().st_size
                changed.append(_entry(row))
        if unreadable:
            _log.warning("%d artifact(s) under deleted versions of %s could not be re-wrapped", unreadable, key_name)
        return changed

    def _find(self, name: str, version: str) -> ArtifactRecord | None:
        with self._store.transaction() as session:
            return session.scalars(
                select(ArtifactRecord).where(ArtifactRecord.name == name, ArtifactRecord.version == version)
            ).one_or_none()

    @staticmethod
    def _stream_key(path: Path) -> tuple[str, int]:
        with path.open("rb") as handle:
            handle.seek(len(artifact.MAGIC))
            header = StreamHeader.read(handle)
        return header.key_name, header.key_version
