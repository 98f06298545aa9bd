"""Chunked, versioned messages: exact round trips, bounded memory, and refusals of malformed input."""

from __future__ import annotations

import json
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.errors import FormatError
from privet.net.frames import CHUNK, SCHEMA_VERSION, Message, Spooled, decode, encode


@given(st.binary(max_size=3 * CHUNK // 1000), st.booleans(), st.dictionaries(st.text(max_size=5), st.integers()))
@settings(max_examples=30, deadline=None)
def test_round_trip(payload: bytes, compress: bool, header: dict) -> None:
    out = decode(encode(Message("update", header, payload), compress=compress), max_size=len(payload))
    assert (out.kind, out.header, bytes(out.payload)) == ("update", header, payload)


def test_large_payload_is_sent_in_chunks_without_copies() -> None:
    payload = bytearray(os.urandom(1000)) * (5 * CHUNK // 1000 + 7)
    frames = list(encode(Message("model", {"n": 1}, memoryview(payload))))
    assert len(frames) == 1 + -(-len(payload) // CHUNK) and max(len(f) for f in frames[1:]) == CHUNK
    assert bytes(decode(frames, max_size=len(payload)).payload) == payload
    compressed = list(encode(Message("model", {}, bytes(len(payload))), compress=True))
    assert sum(len(f) for f in compressed) < len(payload) // 100  # zeros compress


def _frames(envelope: dict, *pieces: bytes, version: int = SCHEMA_VERSION) -> list[bytes]:
    return [b"PVT" + bytes([version]) + json.dumps(envelope).encode(), *pieces]


GOOD = {"kind": "x", "header": {}, "size": 4, "compression": None}


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "not send a privet message"),
        ([b"HTTP/1.1 200"], "not send a privet message"),
        (_frames(GOOD, b"abcd", version=2), "schema version 2"),
        (_frames({**GOOD, "size": -1}), "wrong type"),
        (_frames({"kind": "x"}), "malformed"),
        (_frames(GOOD, b"abc"), "after 3 of 4"),
        (_frames(GOOD, b"abcde"), "more payload"),
        (_frames({**GOOD, "size": 10**12}), "over this side's limit"),
        (_frames({**GOOD, "compression": "lz4"}), "unknown compression"),
        (_frames({**GOOD, "compression": "zlib"}, b"not zlib"), "corrupt"),
        (_frames({**GOOD, "compression": "zlib"}, zlib.compress(bytes(10**6))), "inflates past"),
    ],
)
def test_malformed_messages_are_refused(frames: list[bytes], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        decode(frames, max_size=10**6)


@pytest.mark.parametrize("compress", [False, True])
def test_a_large_payload_can_be_spooled_to_an_unnamed_file(tmp_path, compress: bool) -> None:
    payload = os.urandom(3 * CHUNK + 123)
    message = decode(encode(Message("update", {}, payload), compress=compress), max_size=1 << 30, spool=tmp_path,
                     spool_over=CHUNK)  # fmt: skip
    assert isinstance(message.payload, Spooled) and message.payload.nbytes == len(payload)
    assert list(tmp_path.iterdir()) == []  # unnamed: nothing to clean up, even after a crash
    assert message.payload.read(0, len(payload)) == payload
    assert message.payload.read(CHUNK - 5, 10) == payload[CHUNK - 5 : CHUNK + 5]
    with pytest.raises(FormatError, match="outside"):
        message.payload.read(len(payload) - 1, 2)
    message.payload.close()
    small = decode(encode(Message("update", {}, b"abc")), max_size=10, spool=tmp_path, spool_over=CHUNK)
    assert small.payload == bytearray(b"abc")
    frames = list(encode(Message("update", {}, payload)))
    with pytest.raises(FormatError, match="ended after"):
        decode(frames[:-1], max_size=1 << 30, spool=tmp_path, spool_over=CHUNK)
