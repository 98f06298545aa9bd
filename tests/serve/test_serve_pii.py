"""PII masking of chat messages and exact restoration of replies, whole, chunked and as SSE streams."""

from __future__ import annotations

import asyncio
import json
import string
import time
from collections.abc import AsyncIterator, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.desensitize import Analyzer, DenyTerm, Pattern
from privet.desensitize.vault import TOKEN_PATTERN
from privet.errors import FormatError, PrivetError, UsageError
from privet.serve import pii
from privet.serve.pii import (
    SessionMasker,
    SseRestorer,
    StreamRestorer,
    default_pii_analyzer,
    restore,
    restore_completion,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
TRICKY = r"C:\new\1 $1 \g<0> (.*)+ [x]"  # backslashes, group references and regex syntax

# A small analyzer (compiles in milliseconds): e-mail addresses by pattern, a few names by literal.
SMALL = Analyzer(
    [Pattern(name="email", entity="EMAIL", regex=r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", score=0.95)],
    deny=[DenyTerm("Alice Smith", "PERSON"), DenyTerm("Bob Jones", "PERSON"), DenyTerm(TRICKY, "ORGANIZATION")],
)


@pytest.fixture(scope="module")
def full() -> Analyzer:
    return default_pii_analyzer()


def masker(key: bytes = KEY_A) -> SessionMasker:
    return SessionMasker(key, SMALL)


# -- tokens ----------------------------------------------------------------------------------------------
def test_token_format_agrees_with_the_vault_pattern() -> None:
    for char in string.ascii_uppercase + string.digits:
        assert bool(TOKEN_PATTERN.fullmatch(f"<<A_{char * 8}>>")) == (char in pii._ALPHABET)
    longest = f"<<{'E' * pii._ENTITY_MAX}_{'Z' * pii._ID_LENGTH}>>"
    assert TOKEN_PATTERN.fullmatch(longest) and len(longest) == pii._PREFIX_MAX + 1
    assert not TOKEN_PATTERN.fullmatch(f"<<{'E' * (pii._ENTITY_MAX + 1)}_{'Z' * pii._ID_LENGTH}>>")
    masked = masker().mask("Alice Smith wrote to alice@example.org")
    assert masked.text.count("<<") == 2
    assert all(TOKEN_PATTERN.fullmatch(token) for token in masked.mapping)
    assert masked.counts == {"PERSON": 1, "EMAIL": 1}


def test_same_value_gets_the_same_token_across_messages_and_requests() -> None:
    messages = [
        {"role": "user", "content": "Alice Smith asked about Bob Jones."},
        {"role": "assistant", "content": "Bob Jones is on leave."},
        {"role": "user", "content": "Then tell Alice Smith, alice@example.org"},
    ]
    first = masker().mask_messages(messages)
    again = masker().mask_messages(messages[2:])  # a later request of the same session
    assert len(first.mapping) == 3
    assert first.counts == {"PERSON": 4, "EMAIL": 1}
    alice = next(t for t, v in first.mapping.items() if v == "Alice Smith")
    assert first.messages[0]["content"].startswith(alice) and first.messages[2]["content"].count(alice) == 1
    assert again.mapping.items() <= first.mapping.items()
    for original, masked in zip(messages, first.messages, strict=True):
        assert "Alice" not in masked["content"] and "Bob" not in masked["content"]
        assert restore(masked["content"], first.mapping) == original["content"]


def test_other_sessions_get_unrelated_tokens_and_cannot_restore() -> None:
    a = masker(KEY_A).mask("Alice Smith")
    b = masker(KEY_B).mask("Alice Smith")
    assert a.text != b.text
    assert restore(a.text, b.mapping) == a.text  # another session's token stays a token
    assert restore(a.text + b.text, a.mapping) == "Alice Smith" + b.text


def test_the_key_must_be_bytes_of_sixteen_or_more() -> None:
    for key in (b"short", "x" * 32, None):
        with pytest.raises(UsageError):
            SessionMasker(key, SMALL)  # type: ignore[arg-type]


def test_values_with_regex_syntax_and_backslashes_round_trip() -> None:
    text = f"Pay {TRICKY} via alice@example.org, then {TRICKY}."
    masked = masker().mask(text)
    assert TRICKY not in masked.text and len(masked.mapping) == 2
    assert restore(masked.text, masked.mapping) == text


def test_restore_inserts_values_verbatim_in_one_pass() -> None:
    mapping = {
        "<<A_11111111>>": "<<B_22222222>>",  # a value that is itself a token is not restored again
        "<<B_22222222>>": "Bob",
        "<<C_33333333>>": r"\1 $1 \g<0> \\",
    }
    text = "<<A_11111111>><<B_22222222>><<C_33333333>> <<D_44444444>> <<A_1111111>>"
    assert restore(text, mapping) == r"<<B_22222222>>Bob\1 $1 \g<0> \\ <<D_44444444>> <<A_1111111>>"
    assert restore("no tokens here", mapping) == "no tokens here"


def test_a_pasted_token_comes_back_as_itself_never_as_another_value() -> None:
    session = masker().mask("Alice Smith")
    own = next(iter(session.mapping))
    foreign = masker(KEY_B).mask("Bob Jones").text
    text = f"Compare {foreign} and {own} with Alice Smith"
    masked = masker().mask(text)
    assert foreign not in masked.text and masked.text.count(own) == 1  # once: for the real Alice Smith
    assert masked.mapping[own] == "Alice Smith"  # the real value keeps its token ...
    assert sorted(v for v in masked.mapping.values() if v.startswith("<<")) == sorted([foreign, own])
    assert restore(masked.text, masked.mapping) == text  # ... and the pasted strings come back verbatim
    assert masked.counts == {"PERSON": 3}


def test_colliding_ids_never_map_one_token_to_two_values(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pii.keyed_digest

    def colliding(key: bytes, message: bytes) -> bytes:  # every value shares the first 40-bit window
        return b"\x00" * 5 + real(key, message)[5:]

    monkeypatch.setattr(pii, "keyed_digest", colliding)
    text = "Alice Smith, Bob Jones, Alice Smith"
    masked = masker().mask(text)
    assert len(masked.mapping) == 2 and len(set(masked.mapping.values())) == 2
    assert "<<PERSON_00000000>>" in masked.mapping
    assert restore(masked.text, masked.mapping) == text
    assert masker().mask(text) == masked  # resolved deterministically


def test_list_of_parts_is_masked_and_other_fields_are_kept() -> None:
    parts = [
        {"type": "text", "text": "Write to alice@example.org"},
        {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}},
    ]
    messages = [
        {"role": "user", "name": "u1", "content": parts},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
    ]
    snapshot = json.dumps(messages)
    out = masker().mask_messages(messages)
    assert json.dumps(messages) == snapshot  # the input is not modified
    assert out.messages[0]["content"][0]["text"].startswith("Write to <<EMAIL_")
    assert out.messages[0]["content"][1] == parts[1] and out.messages[0]["name"] == "u1"
    assert out.messages[1] == messages[1]
    assert out.counts == {"EMAIL": 1}


@pytest.mark.parametrize(
    "messages",
    [
        "hello",
        [["user", "hi"]],
        [{"content": "no role"}],
        [{"role": "user", "content": 42}],
        [{"role": "user", "content": ["text"]}],
        [{"role": "user", "content": [{"text": "no type"}]}],
        [{"role": "user", "content": [{"type": "text", "text": None}]}],
    ],
)
def test_malformed_messages_are_refused_in_one_line(messages: object) -> None:
    with pytest.raises(UsageError) as caught:
        masker().mask_messages(messages)  # type: ignore[arg-type]
    assert "\n" not in caught.value.one_line()


def test_mask_refuses_non_text_and_unusable_entity_names() -> None:
    with pytest.raises(UsageError):
        masker().mask(b"bytes")  # type: ignore[arg-type]
    lower = Analyzer(deny=[DenyTerm("Alice", "person")])
    with pytest.raises(UsageError):
        SessionMasker(KEY_A, lower).mask("Alice")


def test_reprs_hold_no_values() -> None:
    masked = masker().mask("Alice Smith")
    many = masker().mask_messages([{"role": "user", "content": "Alice Smith"}])
    for obj in (masked, many, masker(), StreamRestorer(masked.mapping), SseRestorer(masked.mapping)):
        assert "Alice" not in repr(obj)


def test_chinese_text(full: Analyzer) -> None:
    text = "您好，我是张伟，手机13812345678，邮箱zhangwei@example.cn。请回复张伟。"
    masked = SessionMasker(KEY_A, full).mask(text)
    assert "张伟" not in masked.text and "13812345678" not in masked.text
    assert masked.counts["PERSON"] == 2 and masked.text.count(next(iter(masked.mapping))) >= 1
    assert restore(masked.text, masked.mapping) == text


def test_mask_messages_timing(full: Analyzer) -> None:
    prompt = (
        "Hi, I'm writing on behalf of my colleague Margaret Thompson about the invoice we discussed last week. "
        "Please reply to margaret.thompson@example.com or call her at +1 (415) 555-0132 before Friday. "
        "She asked whether the revised quote can be sent today, and if the delivery to our office can move."
    )
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": prompt}]
    session = SessionMasker(KEY_A, full)
    out = session.mask_messages(messages)
    assert {"PERSON", "EMAIL", "PHONE"} <= set(out.counts)
    runs = 100
    start = time.perf_counter()
    for _ in range(runs):
        session.mask_messages(messages)
    per_call = (time.perf_counter() - start) / runs
    print(f"\nmask_messages, {len(prompt)}-character prompt: {per_call * 1e3:.2f} ms per call")


# -- streaming -------------------------------------------------------------------------------------------
MAPPING = {
    "<<PERSON_3FN3EWHM>>": "Margaret $1 \\1",
    "<<EMAIL_XRE2JCQF>>": "m@example.com",
    "<<CN_MOBILE_9HV3WPV1>>": "13812345678",
    f"<<{'E' * 32}_ZZZZZZZZ>>": "longest",
}
REPLY = (
    "Dear <<PERSON_3FN3EWHM>>,<<EMAIL_XRE2JCQF>><<CN_MOBILE_9HV3WPV1>> <<<PERSON_3FN3EWHM>>> "
    f"<<PERSON_AAAAAAAA>> <<{'E' * 32}_ZZZZZZZZ>> <<CN_MOB <<EMAIL_XRE2JCQ> x<<PERSON_3FN3EWHM"
)


def streamed(pieces: Iterable[str], mapping: dict[str, str] = MAPPING) -> str:
    restorer = StreamRestorer(mapping)
    return "".join(restorer.feed(piece) for piece in pieces) + restorer.finish()


def test_every_two_way_split_restores_like_the_whole() -> None:
    whole = restore(REPLY, MAPPING)
    assert whole.startswith("Dear Margaret $1 \\1,m@example.com13812345678 <Margaret")
    for cut in range(len(REPLY) + 1):
        assert streamed([REPLY[:cut], REPLY[cut:]]) == whole


def test_every_three_way_split_of_a_token_restores_like_the_whole() -> None:
    text = "a<<<PERSON_3FN3EWHM>>>b"
    whole = restore(text, MAPPING)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert streamed([text[:i], text[i:j], text[j:]]) == whole


def test_single_characters_restore_like_the_whole() -> None:
    restorer = StreamRestorer(MAPPING)
    out = "".join(restorer.feed(char) for char in REPLY) + restorer.finish()
    assert out == restore(REPLY, MAPPING)
    assert restorer.restored == 5 and restorer.unresolved == 1


def test_only_a_possible_token_prefix_is_held_back() -> None:
    restorer = StreamRestorer(MAPPING)
    assert restorer.feed("plain text " * 1000) == "plain text " * 1000
    assert restorer.feed("see <<PERSON_3FN") == "see "
    assert restorer.feed("3EWHM") == ""
    assert restorer.feed(">> and <") == "Margaret $1 \\1 and "
    assert restorer.feed(f"<{'E' * 32}_ZZZZZZZZ>") == ""
    assert restorer.feed(">") == "longest"
    assert restorer.feed("<<lower") == "<<lower"
    assert restorer.feed("<<PERSON_3FN3EWH") == ""
    assert restorer.finish() == "<<PERSON_3FN3EWH"  # an unfinished fragment goes out verbatim
    assert restorer.feed("ok") == "ok"


TOKENS = [*MAPPING, "<<PERSON_AAAAAAAA>>"]
NOISE = st.text(alphabet="<>_ PERSONCEMAIL0123456789ZHIx", max_size=12)
TEXTS = st.lists(st.one_of(st.sampled_from(TOKENS), NOISE), max_size=12).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, data=st.data())
def test_random_splits_restore_like_the_whole(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert streamed(pieces) == restore(text, MAPPING)


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.one_of(st.sampled_from(["Alice Smith", TRICKY, "a@b.org", *TOKENS]), NOISE), max_size=10))
def test_masking_then_restoring_gives_the_text_back(parts: list[str]) -> None:
    text = "".join(parts)
    masked = masker().mask(text)
    assert all(match.group(0) in masked.mapping for match in TOKEN_PATTERN.finditer(masked.text))
    assert restore(masked.text, masked.mapping) == text


# -- SSE -------------------------------------------------------------------------------------------------
def chunk(choices: list[dict[str, object]], **extra: object) -> bytes:
    event = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices, **extra}
    return b"data: " + json.dumps(event).encode()


def delta(index: int, content: str | None, finish: str | None = None) -> dict[str, object]:
    return {"index": index, "delta": {} if content is None else {"content": content}, "finish_reason": finish}


def upstream(replies: dict[int, list[str]], *, finish: bool = True) -> list[bytes]:
    """Interleaved events of several choices, each event followed by a blank line, then [DONE]."""
    lines: list[bytes] = [b": keep-alive", b""]
    for step in range(max(len(pieces) for pieces in replies.values())):
        for index, pieces in replies.items():
            if step < len(pieces):
                lines += [chunk([delta(index, pieces[step])]), b""]
    if finish:
        lines += [chunk([delta(index, None, "stop") for index in replies]), b""]
    lines += [chunk([], usage={"total_tokens": 3}), b"", b"data: [DONE]", b""]
    return lines


def contents(lines: Iterable[str]) -> dict[int, str]:
    """What a client assembles from the restored stream; checks that [DONE] comes last."""
    out: dict[int, str] = {}
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data:")]
    assert data[-1] == "[DONE]"
    for payload in data[:-1]:
        for choice in json.loads(payload)["choices"]:
            out[choice["index"]] = out.get(choice["index"], "") + (choice["delta"].get("content") or "")
    return out


@pytest.mark.parametrize("finish", [True, False])
def test_sse_restores_each_choice_with_tokens_split_across_events(finish: bool) -> None:
    replies = {
        0: ["Hi <<PERS", "ON_3FN3EW", "HM>>, write to <", "<EMAIL_XRE2JCQF>> <<PERSON_3F"],
        1: ["<", "<CN_MOBILE_9HV3WPV1", ">> ok <<"],
    }
    restorer = SseRestorer(MAPPING)
    out = list(restorer.restore_sync(upstream(replies, finish=finish)))
    assert contents(out) == {i: restore("".join(p), MAPPING) for i, p in replies.items()}
    assert out[:2] == [": keep-alive", ""] and out[-2:] == ["data: [DONE]", ""]
    assert restorer.restored == 3 and restorer.unresolved == 0
    tails = [json.loads(line[6:]) for line in out if "<<PERSON_3F" in line]
    assert len(tails) == 1  # held-back text went out once: with the finish event, or in a synthetic event
    assert (tails[0]["choices"][0]["finish_reason"] == "stop") is finish


def test_sse_passes_unchanged_events_verbatim_and_works_async() -> None:
    lines = upstream({0: ["no tokens", " here"]})

    async def source() -> AsyncIterator[bytes]:
        for line in lines:
            yield line

    async def collect() -> list[str]:
        return [line async for line in SseRestorer(MAPPING).restore_async(source())]

    assert asyncio.run(collect()) == [line.decode() for line in lines]


@pytest.mark.parametrize(
    "lines",
    [
        [b"data: {not json", b"data: [DONE]"],
        [b"data: [1, 2]", b"data: [DONE]"],
        [b'data: {"choices": {"index": 0}}', b"data: [DONE]"],
        [b'data: {"choices": ["x"]}', b"data: [DONE]"],
        [b'data: {"choices": [{"delta": {"content": "x"}}]}', b"data: [DONE]"],
        [b'data: {"choices": [{"index": true, "delta": {}}]}', b"data: [DONE]"],
        [b'data: {"choices": [{"index": 0, "delta": "x"}]}', b"data: [DONE]"],
        [b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}', b"data: [DONE]"],
        [b"data: \xff", b"data: [DONE]"],
        [chunk([delta(0, "cut off")])],
        [b"data: [DONE]", chunk([delta(0, "late")])],
    ],
)
def test_sse_fails_closed_on_malformed_streams(lines: list[bytes]) -> None:
    with pytest.raises(FormatError) as caught:
        list(SseRestorer(MAPPING).restore_sync(lines))
    assert isinstance(caught.value, PrivetError) and "\n" not in caught.value.one_line()


def test_sse_passes_events_without_choices() -> None:
    error = b'data: {"error": {"message": "overloaded"}}'
    assert list(SseRestorer(MAPPING).restore_sync([error, "data: [DONE]\n"])) == [error.decode(), "data: [DONE]"]


# -- whole replies ---------------------------------------------------------------------------------------
def test_restore_completion() -> None:
    reply = {
        "id": "r1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi <<PERSON_3FN3EWHM>>"}},
            {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": []}},
        ],
    }
    out = restore_completion(reply, MAPPING)
    assert out["choices"][0]["message"]["content"] == "Hi Margaret $1 \\1"
    assert out["choices"][1] == reply["choices"][1] and out["id"] == "r1"
    assert reply["choices"][0]["message"]["content"] == "Hi <<PERSON_3FN3EWHM>>"  # the input is not modified
    for bad in ([], {"choices": None}, {"choices": [1]}, {"choices": [{"message": {"content": 1}}]}):
        with pytest.raises(FormatError):
            restore_completion(bad, MAPPING)  # type: ignore[arg-type]
