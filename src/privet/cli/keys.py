"""``privet keys``: create, list, rotate and delete keyring keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from privet.cli.common import JsonOption, emit, stdout, workspace
from privet.config import MasterSource
from privet.crypto.keyring import KeyInfo
from privet.crypto.stream import rewrap_file
from privet.errors import UsageError
from privet.files import atomic_file

app = typer.Typer(help="Keyring: versioned keys wrapped by a master key.", no_args_is_help=True)


def _row(info: KeyInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "version": info.version,
        "purpose": info.purpose,
        "primary": info.primary,
        "deleted": info.destroyed,
        "created_at": info.created_at.isoformat(timespec="seconds"),
        "fingerprint": info.fingerprint,
    }


_COLUMNS = ("name", "version", "purpose", "primary", "deleted", "created_at", "fingerprint")


def _table(rows: list[dict[str, object]], title: str) -> None:
    table = Table(*_COLUMNS, title=title)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in _COLUMNS))
    stdout.print(table)


@app.command()
def init(
    source: Annotated[
        MasterSource | None,
        typer.Option(help="Where the master key comes from (default: the master_source setting)."),
    ] = None,
    scrypt_n: Annotated[
        int | None, typer.Option(help="scrypt cost for a passphrase (power of two, at least 2^14).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create the keyring with a 'default' encryption key and a 'signing' key."""
    if scrypt_n is not None and (scrypt_n < 2**14 or scrypt_n & (scrypt_n - 1)):
        raise UsageError(f"--scrypt-n {scrypt_n} is not a power of two of at least 16384")
    with workspace() as ws:
        keyring = ws.initialize_keyring(source, scrypt_n=scrypt_n)
        rows = [_row(info) for info in keyring.versions()]
        home = str(ws.settings.home)
    emit({"home": home, "keys": rows}, as_json, lambda: _table(rows, f"keyring created in {home}"))


@app.command("list")
def list_keys(as_json: JsonOption = False) -> None:
    """List every key version (never the keys themselves)."""
    with workspace() as ws:
        rows = [_row(info) for info in ws.keyring.versions()]
    emit({"keys": rows}, as_json, lambda: _table(rows, "keys"))


@app.command()
def rotate(
    name: Annotated[str, typer.Argument(help="Key to rotate.")],
    rewrap: Annotated[
        bool, typer.Option("--rewrap", help="Re-wrap registry artifacts (and --file files) under the new version.")
    ] = False,
    files: Annotated[
        list[Path] | None, typer.Option("--file", help="An encrypted file to re-wrap too (repeatable).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a new version of a key; new writes use it, old versions still decrypt."""
    if files and not rewrap:
        raise UsageError("--file only makes sense with --rewrap")
    with workspace() as ws:
        info = ws.keyring.rotate(name)
        rewrapped: list[str] = []
        if rewrap:
            rewrapped += [f"{e.name}:{e.version}" for e in ws.registry.rewrap(ws.keyring, name)]
            for path in files or []:
                rewrap_file(path, ws.keyring, name)
                rewrapped.append(str(path))
    result = {"key": _row(info), "rewrapped": rewrapped}

    def render() -> None:
        stdout.print(f"{name}: version {info.version} is now primary")
        if rewrap:
            stdout.print(f"re-wrapped {len(rewrapped)} item(s) under v{info.version}")

    emit(result, as_json, render)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Key to delete.")],
    version: Annotated[int | None, typer.Option(help="Delete only this version (not the primary).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Crypto-shred a key version (or the whole key): data encrypted under it becomes unreadable for good."""
    what = f"{name} v{version}" if version is not None else f"every version of {name}"
    if not yes and not typer.confirm(f"Delete {what}? Data encrypted under it can never be decrypted again"):
        raise UsageError("deletion not confirmed", "Pass --yes to delete without a prompt.")
    with workspace() as ws:
        rows = [_row(info) for info in ws.keyring.delete(name, version)]
    emit({"deleted": rows}, as_json, lambda: stdout.print(f"deleted {what}"))


@app.command()
def public(
    name: Annotated[str, typer.Argument(help="Signing key.")] = "signing",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the PEM here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Export the primary public key of a signing key (PEM), to pass to 'model verify --trust'."""
    with workspace() as ws:
        verify_key = ws.keyring.signing_key(name).verify_key
    pem = verify_key.pem()
    if output is not None:
        with atomic_file(output, mode=0o644) as handle:
            handle.write(pem.encode())
    result = {"name": name, "version": verify_key.version, "fingerprint": verify_key.fingerprint, "pem": pem}
    emit(result, as_json, lambda: typer.echo(pem if output is None else f"wrote {output}", nl=output is not None))
