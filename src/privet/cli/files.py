"""``privet encrypt`` and ``privet decrypt``: streaming authenticated encryption of files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from privet.cli.common import JsonOption, emit, progress, stdout, workspace
from privet.crypto.keyring import DEFAULT_AEAD
from privet.crypto.stream import StreamStats, decrypt_file, encrypt_file
from privet.errors import NotFoundError

Input = Annotated[Path, typer.Argument(help="File to read.", show_default=False)]
Output = Annotated[Path, typer.Option("-o", "--output", help="File to write (atomically).", show_default=False)]


def _size(path: Path) -> int:
    if not path.is_file():
        raise NotFoundError(f"{path} is not a file")
    return path.stat().st_size


def _result(stats: StreamStats, source: Path, output: Path) -> dict[str, object]:
    return {
        "input": str(source),
        "output": str(output),
        "plaintext_bytes": stats.plaintext_bytes,
        "ciphertext_bytes": stats.ciphertext_bytes,
        "chunks": stats.chunks,
        "key": stats.key_name,
        "key_version": stats.key_version,
    }


def encrypt(
    source: Input,
    output: Output,
    key: Annotated[str, typer.Option(help="Keyring key to encrypt under (its primary version).")] = DEFAULT_AEAD,
    as_json: JsonOption = False,
) -> None:
    """Encrypt a file of any size in constant memory (chunked AES-256-GCM)."""
    total = _size(source)
    with workspace() as ws, progress("encrypting", total) as advance:
        stats = encrypt_file(source, output, ws.keyring, key, progress=advance)
    emit(
        _result(stats, source, output),
        as_json,
        lambda: stdout.print(f"encrypted {stats.plaintext_bytes} bytes under {key} v{stats.key_version} -> {output}"),
    )


def decrypt(source: Input, output: Output, as_json: JsonOption = False) -> None:
    """Decrypt a file; the output appears only if every chunk authenticates."""
    total = _size(source)
    with workspace() as ws, progress("decrypting", total) as advance:
        stats = decrypt_file(source, output, ws.keyring, progress=advance)
    emit(
        _result(stats, source, output),
        as_json,
        lambda: stdout.print(f"decrypted {stats.plaintext_bytes} bytes -> {output}"),
    )
