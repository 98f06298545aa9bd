"""The envelope and the manifest: strict parsing (property-based), canonical round trips, refused values."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from privet.errors import FormatError, UsageError
from privet.models.manifest import (
    MAX_ENVELOPE,
    MAX_MANIFEST,
    Envelope,
    FileEntry,
    Manifest,
    PrivacyGuarantee,
    Signer,
    TensorEntry,
    canonical,
    check_identity,
    parse_envelope,
    parse_manifest,
)

# Sized to keep this module to a few seconds; run with --hypothesis-seed / a larger profile to dig deeper.
BYTES = settings(max_examples=200, deadline=None)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------------------
HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True)
VERSIONS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", fullmatch=True)
SEGMENTS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._ +=@,-]{0,40}", fullmatch=True)
PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join)
DTYPES = st.from_regex(r"[A-Z0-9_]{1,16}", fullmatch=True)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.none() | st.booleans() | st.integers() | FINITE | st.text(max_size=20)
SCALAR_DICTS = st.dictionaries(st.text(max_size=20), SCALARS, max_size=5)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@st.composite
def file_entries(draw: st.DrawFn) -> FileEntry:
    size = draw(st.integers(min_value=0, max_value=2**50))
    tensors = None
    if draw(st.booleans()):
        tensors = []
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            first = draw(st.integers(min_value=0, max_value=size))
            last = draw(st.integers(min_value=first, max_value=size))
            tensors.append(
                TensorEntry(
                    name=draw(st.text(min_size=1, max_size=30)),
                    dtype=draw(DTYPES),
                    shape=draw(st.lists(st.integers(min_value=0, max_value=2**40), max_size=4)),
                    offsets=(first, last),
                    sha256=draw(HEX64),
                )
            )
    return FileEntry(path=draw(PATHS), size=size, sha256=draw(HEX64), tensors=tensors)


PRIVACY = st.builds(
    PrivacyGuarantee,
    epsilon=st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
    delta=st.floats(min_value=0, max_value=1, exclude_max=True, allow_nan=False),
    accountant=st.text(min_size=1, max_size=64),
    details=SCALAR_DICTS,
)

MANIFESTS = st.builds(
    Manifest,
    name=NAMES,
    version=VERSIONS,
    framework=st.text(min_size=1, max_size=64),
    created_at=st.text(max_size=64),
    metadata=SCALAR_DICTS,
    privacy=st.none() | PRIVACY,
    files=st.lists(file_entries(), min_size=1, max_size=3, unique_by=lambda f: f.path),
)

ENVELOPES = st.builds(
    Envelope,
    name=NAMES,
    version=VERSIONS,
    created_at=st.text(max_size=64),
    encrypted=st.booleans(),
    signer=st.builds(
        Signer,
        key=st.text(min_size=1, max_size=64),
        version=st.integers(min_value=0),
        fingerprint=st.from_regex(r"ed25519:[0-9a-f]{32}", fullmatch=True),
    ),
    payload_size=st.integers(min_value=0),
    payload_sha256=HEX64,
    manifest_sha256=HEX64,
)

PARSERS = {"envelope": (parse_envelope, ENVELOPES), "manifest": (parse_manifest, MANIFESTS)}


def _containers(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict | list):
        yield path
        for key, child in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _containers(child, (*path, key))


@st.composite
def mutated(draw: st.DrawFn, records: st.SearchStrategy[BaseModel]) -> bytes:
    """A valid record's JSON with one value replaced, one key or item deleted, or one key or item added."""
    document = draw(records).model_dump(mode="json")
    node = document
    for key in draw(st.sampled_from(list(_containers(document)))):
        node = node[key]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace" and keys:
        node[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
    elif action == "delete" and keys:
        del node[draw(st.sampled_from(keys))]
    elif isinstance(node, dict):
        node[draw(st.text(max_size=12))] = draw(JSON_VALUES)
    else:
        node.append(draw(JSON_VALUES))
    return json.dumps(document).encode()


def _parse_or_format_error(parse: Any, data: bytes) -> BaseModel | None:
    """The record, or None when refused; anything but FormatError escaping fails the test."""
    try:
        return parse(data)
    except FormatError as error:
        line = error.one_line()
        assert line.startswith("error: ")
        assert "\n" not in line
        return None


# -- parsing arbitrary input -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(PARSERS))
@BYTES
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_format_error(kind: str, data: bytes) -> None:
    assert _parse_or_format_error(PARSERS[kind][0], data) is None


@pytest.mark.parametrize("kind", sorted(PARSERS))
@FUZZ
@given(value=JSON_VALUES)
def test_arbitrary_json_raises_only_format_error(kind: str, value: Any) -> None:
    assert _parse_or_format_error(PARSERS[kind][0], json.dumps(value).encode()) is None


@pytest.mark.parametrize("kind", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_mutated_records_parse_strictly_or_raise_format_error(kind: str, data: st.DataObject) -> None:
    parse, records = PARSERS[kind]
    document = data.draw(mutated(records))
    parsed = _parse_or_format_error(parse, document)
    if parsed is not None:  # some mutations keep the record valid (e.g. a string for a string)
        assert parse(canonical(parsed)) == parsed


# -- canonical round trips ---------------------------------------------------------------------------------
@ROUND_TRIP
@given(manifest=MANIFESTS)
def test_manifest_round_trip(manifest: Manifest) -> None:
    data = canonical(manifest)
    assert parse_manifest(data) == manifest
    assert canonical(parse_manifest(data)) == data
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()


@ROUND_TRIP
@given(envelope=ENVELOPES)
def test_envelope_round_trip(envelope: Envelope) -> None:
    data = canonical(envelope)
    assert parse_envelope(data) == envelope
    assert canonical(parse_envelope(data)) == data


@settings(ROUND_TRIP, max_examples=25)
@given(manifest=MANIFESTS)
def test_canonical_form_does_not_depend_on_key_order(manifest: Manifest) -> None:
    document = manifest.model_dump(mode="json")
    reordered = json.dumps(dict(reversed(list(document.items())))).encode()
    assert canonical(parse_manifest(reordered)) == canonical(manifest)


# -- specific refusals --------------------------------------------------------------------------------------
def _manifest_doc(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": "privet-manifest/1",
        "name": "model",
        "version": "1",
        "framework": "pytorch",
        "created_at": "2026-01-01T00:00:00+00:00",
        "metadata": {"model.kind": "mlp"},
        "privacy": {"epsilon": 1.0, "delta": 1e-5, "accountant": "rdp", "details": {}},
        "files": [
            {
                "path": "model.safetensors",
                "size": 100,
                "sha256": "a" * 64,
                "tensors": [{"name": "w", "dtype": "F32", "shape": [4], "offsets": [8, 24], "sha256": "b" * 64}],
            }
        ],
    }
    document.update(changes)
    return document


def _envelope_doc(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": "privet-artifact/1",
        "name": "model",
        "version": "1",
        "created_at": "2026-01-01T00:00:00+00:00",
        "encrypted": True,
        "signer": {"key": "signing", "version": 1, "fingerprint": "ed25519:" + "c" * 32},
        "payload_size": 1000,
        "payload_sha256": "d" * 64,
        "manifest_sha256": "e" * 64,
    }
    document.update(changes)
    return document


def _refused_manifest(document: dict[str, Any]) -> FormatError:
    with pytest.raises(FormatError) as refused:
        parse_manifest(json.dumps(document).encode())
    return refused.value


def test_reference_documents_are_valid() -> None:
    manifest = parse_manifest(json.dumps(_manifest_doc()).encode())
    assert manifest.files[0].tensors is not None and manifest.files[0].tensors[0].offsets == (8, 24)
    assert parse_envelope(json.dumps(_envelope_doc()).encode()).signer.version == 1


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "..",
        "a/../b",
        "a/..",
        "/abs",
        "/",
        "a//b",
        "a/./b",
        "./a",
        ".",
        "a/",
        "a\\b",
        "..\\x",
        "",
        ".hidden",
        "a/.git/config",
        "a b/-x",
        "a\x00b",
        "x" * 256,
        "a\n",
        "model.safetensors\n",
        "a\n/b",
    ],
)
def test_unsafe_file_paths_are_refused(path: str) -> None:
    document = _manifest_doc()
    document["files"][0]["path"] = path
    error = _refused_manifest(document)
    assert "files.0.path" in error.message
    with pytest.raises(ValidationError):
        FileEntry(path=path, size=0, sha256="0" * 64)


@pytest.mark.parametrize("path", ["a", "model.safetensors", "sub/dir/file.json", "A_b-c.d/e f+g=h@i,j", "_x"])
def test_safe_file_paths_are_accepted(path: str) -> None:
    document = _manifest_doc()
    document["files"][0]["path"] = path
    assert parse_manifest(json.dumps(document).encode()).files[0].path == path


@pytest.mark.parametrize(("offsets", "size"), [([8, 101], 100), ([101, 101], 100), ([0, 1], 0), ([24, 8], 100)])
def test_tensor_offsets_outside_the_file_or_reversed_are_refused(offsets: list[int], size: int) -> None:
    document = _manifest_doc()
    document["files"][0]["size"] = size
    document["files"][0]["tensors"][0]["offsets"] = offsets
    _refused_manifest(document)


def test_tensor_ending_exactly_at_the_end_of_the_file_is_accepted() -> None:
    document = _manifest_doc()
    document["files"][0]["tensors"][0]["offsets"] = [8, 100]
    assert parse_manifest(json.dumps(document).encode()).files[0].size == 100


def test_duplicate_paths_are_refused() -> None:
    document = _manifest_doc()
    document["files"].append(dict(document["files"][0], tensors=None))
    _refused_manifest(document)
    document["files"][1]["path"] = "other.safetensors"
    assert len(parse_manifest(json.dumps(document).encode()).files) == 2


def test_empty_file_list_is_refused() -> None:
    _refused_manifest(_manifest_doc(files=[]))


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_epsilon_is_refused(literal: str) -> None:
    data = json.dumps(_manifest_doc()).replace('"epsilon": 1.0', f'"epsilon": {literal}').encode()
    assert literal.encode() in data
    with pytest.raises(FormatError, match=r"invalid at 'privacy\.epsilon'"):
        parse_manifest(data)


@pytest.mark.parametrize("epsilon", [math.inf, math.nan, -1.0])
def test_non_finite_or_negative_epsilon_cannot_be_constructed(epsilon: float) -> None:
    with pytest.raises(ValidationError):
        PrivacyGuarantee(epsilon=epsilon, delta=0.0, accountant="rdp")


@pytest.mark.parametrize("delta", [1.0, -1e-9, 2.0, math.nan, math.inf])
def test_delta_outside_zero_one_is_refused(delta: float) -> None:
    with pytest.raises(ValidationError):
        PrivacyGuarantee(epsilon=1.0, delta=delta, accountant="rdp")


@pytest.mark.parametrize(
    "where",
    ["manifest", "file", "tensor", "privacy"],
)
def test_unknown_manifest_fields_are_refused(where: str) -> None:
    document = _manifest_doc()
    target = {
        "manifest": document,
        "file": document["files"][0],
        "tensor": document["files"][0]["tensors"][0],
        "privacy": document["privacy"],
    }[where]
    target["unexpected"] = 1
    error = _refused_manifest(document)
    assert "unexpected" in error.message


@pytest.mark.parametrize("where", ["envelope", "signer"])
def test_unknown_envelope_fields_are_refused(where: str) -> None:
    document = _envelope_doc()
    (document if where == "envelope" else document["signer"])["unexpected"] = True
    with pytest.raises(FormatError, match="unexpected"):
        parse_envelope(json.dumps(document).encode())


@pytest.mark.parametrize(
    "changes",
    [
        {"format": "privet-artifact/2"},
        {"format": "privet-manifest/1"},
        {"encrypted": "true"},
        {"encrypted": 1},
        {"payload_size": "1000"},
        {"payload_size": 1000.0},
        {"payload_size": -1},
        {"payload_size": True},
        {"payload_sha256": "D" * 64},
        {"payload_sha256": "d" * 63},
        {"manifest_sha256": None},
        {"name": "../evil"},
        {"version": ""},
        {"signer": {"key": "signing", "version": 1, "fingerprint": "ed25519:" + "c" * 31}},
        {"signer": {"key": "signing", "version": -1, "fingerprint": "ed25519:" + "c" * 32}},
        {"signer": {"key": "", "version": 1, "fingerprint": "ed25519:" + "c" * 32}},
        {"created_at": "x" * 65},
    ],
    ids=lambda changes: "-".join(f"{k}={str(v)[:12]}" for k, v in changes.items()),
)
def test_invalid_envelope_values_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(FormatError, match="envelope is invalid"):
        parse_envelope(json.dumps(_envelope_doc(**changes)).encode())


@pytest.mark.parametrize("missing", ["name", "signer", "payload_sha256", "manifest_sha256", "encrypted"])
def test_envelope_without_a_required_field_is_refused(missing: str) -> None:
    document = _envelope_doc()
    del document[missing]
    with pytest.raises(FormatError, match=missing):
        parse_envelope(json.dumps(document).encode())


def test_oversized_records_are_refused_before_parsing() -> None:
    with pytest.raises(FormatError, match="larger than"):
        parse_envelope(b" " * (MAX_ENVELOPE + 1))
    with pytest.raises(FormatError, match="larger than"):
        parse_manifest(b" " * (MAX_MANIFEST + 1))


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"a":' * 50_000, b"", b"\xff\xfe", b"null", b"{}"])
def test_pathological_json_is_a_format_error(data: bytes) -> None:
    for parse in (parse_envelope, parse_manifest):
        with pytest.raises(FormatError):
            parse(data)


def test_refusal_messages_name_the_field_not_the_value() -> None:
    document = _manifest_doc()
    document["files"][0]["sha256"] = "secret-looking-value"
    error = _refused_manifest(document)
    assert "files.0.sha256" in error.message
    assert "secret-looking-value" not in error.one_line()


# -- identities -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "version"),
    [("m", "1"), ("A.b_c-d", "1.0.0+build-7"), ("x" * 128, "v" * 64), ("0", "0"), ("model", "2026.01.01_rc-1")],
)
def test_check_identity_accepts_valid_names(name: str, version: str) -> None:
    check_identity(name, version)


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("", "1"),
        ("../evil", "1"),
        (".hidden", "1"),
        ("-flag", "1"),
        ("_x", "1"),
        ("a/b", "1"),
        ("a\\b", "1"),
        ("a b", "1"),
        ("x" * 129, "1"),
        ("modèle", "1"),
        ("a:b", "1"),
        ("m", ""),
        ("m", "../1"),
        ("m", "1/2"),
        ("m", "+1"),
        ("m", "v" * 65),
        ("m", "1 2"),
        ("m", "1:2"),
        ("evil\n", "1"),
        ("m", "1\n"),
    ],
)
def test_check_identity_refuses_bad_names(name: str, version: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_identity(name, version)
    line = refused.value.one_line()
    assert line.startswith("error: ")
    assert "\n" not in line


@given(name=NAMES, version=VERSIONS)
@settings(max_examples=50, deadline=None)
def test_check_identity_agrees_with_the_manifest(name: str, version: str) -> None:
    check_identity(name, version)
    Manifest(
        name=name, version=version, framework="f", created_at="", files=[FileEntry(path="a", size=0, sha256="0" * 64)]
    )
