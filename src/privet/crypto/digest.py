"""Content digests of files (SHA-256), for integrity checks against pinned or recorded values."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file"]


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``, read in blocks (constant memory)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
