"""The signed records of a model artifact: the envelope (always readable) and the manifest (inside the
payload, so encrypted along with the model when the artifact is encrypted).

Both are pydantic models serialised as canonical JSON (sorted keys, no spaces), and parsed strictly:
unknown fields, wrong types, unsafe paths and out-of-range values are refused as :class:`FormatError`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import PurePosixPath
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from privet.errors import FormatError, UsageError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Version = Annotated[str, Field(pattern=VERSION_PATTERN)]
Scalar = str | int | float | bool | None
MAX_ENVELOPE = 64 * 1024
MAX_MANIFEST = 16 * 1024 * 1024
T = TypeVar("T", bound=BaseModel)
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._ +=@,-]{0,254}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TensorEntry(_Strict):
    """One tensor of a safetensors file: byte range within the file and its digest."""

    name: str = Field(min_length=1, max_length=4096)
    dtype: str = Field(pattern=r"^[A-Z0-9_]{1,16}$")
    shape: list[Annotated[int, Field(ge=0)]]
    offsets: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]
    sha256: Hex64

    @model_validator(mode="after")
    def _ordered(self) -> TensorEntry:
        if self.offsets[0] > self.offsets[1]:
            raise ValueError("tensor offsets are reversed")
        return self


class FileEntry(_Strict):
    """One file of the model, by relative POSIX path."""

    path: str
    size: int = Field(ge=0)
    sha256: Hex64
    tensors: list[TensorEntry] | None = None

    @field_validator("path")
    @classmethod
    def _safe_path(cls, value: str) -> str:
        parts = PurePosixPath(value).parts
        if not parts or value.startswith("/") or "\\" in value or str(PurePosixPath(*parts)) != value:
            raise ValueError("path must be a normalised relative POSIX path")
        if any(not _SEGMENT.fullmatch(part) for part in parts):
            raise ValueError("path has an unsafe component")
        return value

    @model_validator(mode="after")
    def _tensors_inside(self) -> FileEntry:
        for tensor in self.tensors or []:
            if tensor.offsets[1] > self.size:
                raise ValueError("a tensor lies outside its file")
        return self


class PrivacyGuarantee(_Strict):
    """A differential-privacy guarantee carried by a model: (epsilon, delta) under a named accountant."""

    epsilon: float = Field(ge=0)
    delta: float = Field(ge=0, lt=1)
    accountant: str = Field(min_length=1, max_length=64)
    details: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("epsilon")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("epsilon must be finite")
        return value


class Manifest(_Strict):
    """What the model is: its files and tensors with digests, and how it was trained."""

    format: Literal["privet-manifest/1"] = "privet-manifest/1"
    name: Name
    version: Version
    framework: str = Field(min_length=1, max_length=64)
    created_at: str = Field(max_length=64)
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    privacy: PrivacyGuarantee | None = None
    files: list[FileEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_paths(self) -> Manifest:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("duplicate file paths")
        return self


class Signer(_Strict):
    key: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=0)
    fingerprint: str = Field(pattern=r"^ed25519:[0-9a-f]{32}$")


class Envelope(_Strict):
    """The signed, always-readable part: identity of the model and digests binding the payload.

    ``payload_sha256`` covers the payload as stored, except that for an encrypted payload the key slot
    of the stream header is left out, so re-wrapping after a key rotation keeps the signature valid
    (the key slot is authenticated by the wrapping key itself).
    """

    format: Literal["privet-artifact/1"] = "privet-artifact/1"
    name: Name
    version: Version
    created_at: str = Field(max_length=64)
    encrypted: bool
    signer: Signer
    payload_size: int = Field(ge=0)
    payload_sha256: Hex64
    manifest_sha256: Hex64


def canonical(model: BaseModel) -> bytes:
    """The one byte string a record signs and hashes to."""
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def _parse(kind: type[T], data: bytes, what: str, limit: int) -> T:
    if len(data) > limit:
        raise FormatError(f"the artifact's {what} is larger than {limit} bytes")
    try:
        return kind.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"].startswith("json"):
            raise FormatError(f"the artifact's {what} is not valid JSON") from None
        where = ".".join(str(p) for p in first["loc"]) or what
        raise FormatError(f"the artifact's {what} is invalid at {where!r}") from None


def parse_envelope(data: bytes) -> Envelope:
    return _parse(Envelope, data, "envelope", MAX_ENVELOPE)


def parse_manifest(data: bytes) -> Manifest:
    return _parse(Manifest, data, "manifest", MAX_MANIFEST)


def check_identity(name: str, version: str) -> None:
    """Refuse a model name or version that could not appear in a manifest (or escape a directory)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise UsageError(f"model name {name!r} is not valid", "Use letters, digits and . _ - (at most 128).")
    if not re.fullmatch(VERSION_PATTERN, version):
        raise UsageError(f"model version {version!r} is not valid", "Use letters, digits and . _ + - (at most 64).")
