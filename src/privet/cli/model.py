"""``privet model``: pack, verify, unpack and list signed, encrypted model artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from privet.cli.common import JsonOption, emit, progress, stdout, workspace
from privet.crypto.keyring import DEFAULT_AEAD, DEFAULT_SIGNING, Keyring
from privet.crypto.signing import VerifyKey
from privet.errors import NotFoundError, UsageError
from privet.models import artifact
from privet.models.manifest import PrivacyGuarantee, Scalar
from privet.workspace import Workspace

app = typer.Typer(help="Signed, encrypted model artifacts and the registry.", no_args_is_help=True)

Reference = Annotated[str, typer.Argument(help="An artifact file, or a registered model as NAME or NAME:VERSION.")]
TrustOption = Annotated[
    list[Path] | None,
    typer.Option("--trust", help="Trust only this signer's public key (PEM; repeatable). Default: the keyring."),
]


def _metadata(pairs: list[str]) -> dict[str, Scalar]:
    metadata: dict[str, Scalar] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta {pair!r} is not KEY=VALUE")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        metadata[key] = value if isinstance(value, str | int | float | bool) or value is None else text
    return metadata


def _locate(ws: Workspace, reference: str) -> Path:
    path = Path(reference)
    if path.is_file():
        return path
    if "/" in reference or reference.endswith(artifact.SUFFIX):
        raise NotFoundError(f"{reference} is not a file")
    return ws.registry.resolve(reference).path


def _trust(ws: Workspace, pems: list[Path] | None) -> artifact.Trust:
    if not pems:
        return ws.keyring.verify_key
    keys = []
    for pem in pems:
        if not pem.is_file():
            raise NotFoundError(f"trusted key file {pem} does not exist")
        keys.append(VerifyKey.from_pem(pem.read_bytes(), name=pem.stem))
    return artifact.trust_only(keys)


def _summary(verified: artifact.Verified, path: Path) -> dict[str, object]:
    manifest = verified.manifest
    return {
        "path": str(path),
        "name": manifest.name,
        "version": manifest.version,
        "framework": manifest.framework,
        "encrypted": verified.envelope.encrypted,
        "key": None if verified.key_name is None else f"{verified.key_name}:{verified.key_version}",
        "signer": verified.envelope.signer.model_dump(),
        "files": len(manifest.files),
        "tensors": sum(len(f.tensors or []) for f in manifest.files),
        "bytes": sum(f.size for f in manifest.files),
        "privacy": None if manifest.privacy is None else manifest.privacy.model_dump(),
        "metadata": manifest.metadata,
    }


def _prepare(ws: Workspace, reference: str, pems: list[Path] | None) -> tuple[Path, artifact.Trust, Keyring | None]:
    """The artifact's path, whom to trust, and the keyring when the payload is encrypted."""
    path = _locate(ws, reference)
    keys = ws.keyring if artifact.inspect(path).encrypted else None
    return path, _trust(ws, pems), keys


@app.command()
def pack(
    source: Annotated[Path, typer.Argument(help="A model directory or a .safetensors file.", show_default=False)],
    name: Annotated[str, typer.Option(help="Model name.", show_default=False)],
    version: Annotated[str, typer.Option(help="Model version (immutable once registered).", show_default=False)],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write a standalone artifact here instead of the registry.")
    ] = None,
    plain: Annotated[bool, typer.Option("--plain", help="Sign only; do not encrypt the payload.")] = False,
    key: Annotated[str, typer.Option(help="Keyring key that encrypts the payload.")] = DEFAULT_AEAD,
    signer: Annotated[str, typer.Option(help="Keyring signing key.")] = DEFAULT_SIGNING,
    framework: Annotated[str, typer.Option(help="Framework the weights are for.")] = "pytorch",
    meta: Annotated[list[str] | None, typer.Option("--meta", help="Training metadata KEY=VALUE (repeatable).")] = None,
    epsilon: Annotated[
        float | None, typer.Option(help="Differential-privacy epsilon the model was trained under.")
    ] = None,
    delta: Annotated[float | None, typer.Option(help="Differential-privacy delta.")] = None,
    accountant: Annotated[str | None, typer.Option(help="Accountant that computed epsilon (e.g. prv, rdp).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Pack a model into a signed (and by default encrypted) artifact."""
    privacy = None
    if (epsilon, delta, accountant) != (None, None, None):
        if None in (epsilon, delta, accountant):
            raise UsageError("a privacy guarantee needs all of --epsilon, --delta and --accountant")
        try:
            privacy = PrivacyGuarantee(epsilon=epsilon, delta=delta, accountant=accountant)
        except ValueError:
            raise UsageError("--epsilon must be finite and >= 0 and --delta in [0, 1)") from None
    metadata = _metadata(meta or [])
    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) if source.is_dir() else 0
    with workspace() as ws, progress("packing", total) as advance:
        keys = None if plain else ws.keyring
        options = {
            "name": name,
            "version": version,
            "signer": ws.keyring.signing_key(signer),
            "keys": keys,
            "key_name": key,
            "framework": framework,
            "metadata": metadata,
            "privacy": privacy,
            "progress": advance,
        }
        if output is None:
            entry = ws.registry.add(source, **options)  # type: ignore[arg-type]
            path, digest = entry.path, entry.signer
        else:
            envelope = artifact.pack(source, output, **options)  # type: ignore[arg-type]
            path, digest = output, envelope.signer.fingerprint
    result = {"name": name, "version": version, "path": str(path), "encrypted": not plain, "signer": digest}
    emit(result, as_json, lambda: stdout.print(f"packed {name}:{version} -> {path} (signed by {digest})"))


@app.command()
def verify(reference: Reference, trust: TrustOption = None, as_json: JsonOption = False) -> None:
    """Check signature, digests of payload, manifest, files and tensors; decrypts to check, writes nothing."""
    with workspace() as ws:
        path, trusted, keys = _prepare(ws, reference, trust)
        with progress("verifying", path.stat().st_size) as advance:
            verified = artifact.verify(path, trusted, keys, progress=advance)
    result = _summary(verified, path)
    emit(result, as_json, lambda: stdout.print(f"verified {result['name']}:{result['version']} ({path})"))


@app.command()
def unpack(
    reference: Reference,
    output: Annotated[Path, typer.Option("-o", "--output", help="New directory to write the files into.")],
    trust: TrustOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify an artifact, then write its files; the directory appears only if every check holds."""
    with workspace() as ws:
        path, trusted, keys = _prepare(ws, reference, trust)
        with progress("unpacking", path.stat().st_size) as advance:
            verified = artifact.unpack(path, output, trusted, keys, progress=advance)
    result = {**_summary(verified, path), "output": str(output)}
    emit(result, as_json, lambda: stdout.print(f"unpacked {result['name']}:{result['version']} -> {output}"))


@app.command("list")
def list_models(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None, as_json: JsonOption = False
) -> None:
    """List registered artifacts (from the index; 'verify' checks the files themselves)."""
    with workspace() as ws:
        entries = ws.registry.entries(name)
    rows = [
        {
            "name": e.name,
            "version": e.version,
            "encrypted": e.encrypted,
            "key": None if e.key_name is None else f"{e.key_name}:{e.key_version}",
            "signer": e.signer,
            "size": e.size,
            "created_at": e.created_at.isoformat(timespec="seconds"),
            "path": str(e.path),
        }
        for e in entries
    ]

    def render() -> None:
        table = Table("name", "version", "encrypted", "key", "signer", "size", "created_at", title="models")
        for row in rows:
            table.add_row(
                *(str(row[c]) for c in ("name", "version", "encrypted", "key", "signer", "size", "created_at"))
            )
        stdout.print(table)

    emit({"models": rows}, as_json, render)
