"""PII masking of chat requests and exact restoration of the replies, whole or streamed.

:class:`SessionMasker` replaces every value the analyzer finds in the messages with a vault-style token,
``<<PERSON_7K3M9Q2B>>`` (see :mod:`privet.desensitize.vault`). The token id is the first eight Crockford base32
characters of a keyed digest of (entity, value) under the session key, so the same value gets the same token in
every message and request of the session, and unrelated tokens in any other session or tenant. Nothing is shared
between maskers: each request carries its own mapping (token -> original), which holds only the values of that
request's messages.

A token-like string the client sent itself (say, pasted from another session) is masked like a value: upstream
sees a token of this session, and the reply gets the pasted string back verbatim, never another value (it is
counted under the entity its token names).

:func:`restore` puts originals back in one pass over the token matches; :class:`StreamRestorer` does the same for
a reply arriving in pieces, holding back at most a possible token prefix (44 characters); :class:`SseRestorer`
applies it per choice to an OpenAI ``chat.completion.chunk`` stream, and :func:`restore_completion` to a whole
``chat.completion`` reply. Tokens that are not in the mapping are left as they are. A stream that is not valid
JSON events or ends before ``data: [DONE]`` raises :class:`~privet.errors.FormatError`.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from privet.crypto.keyed import DIGEST_SIZE, keyed_digest
from privet.desensitize import Analyzer, default_analyzer
from privet.desensitize.policy import Policy
from privet.desensitize.vault import TOKEN_PATTERN, format_token
from privet.errors import FormatError, PrivetError, UsageError

__all__ = [
    "Masked",
    "MaskedMessages",
    "SessionMasker",
    "SseRestorer",
    "StreamRestorer",
    "default_pii_analyzer",
    "restore",
    "restore_completion",
]

# Must agree with TOKEN_PATTERN (tests check): Crockford base32, 8-character ids, entity names of 1-32 characters.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_CHARS = "0-9A-HJKMNP-TV-Z"
_ID_LENGTH = 8
_ID_BITS = 5 * _ID_LENGTH
_ENTITY_MAX = 32
_ENTITY = re.compile(rf"[A-Z][A-Z0-9_]{{0,{_ENTITY_MAX - 1}}}")
# A 256-bit digest holds six disjoint 40-bit ids: on a collision the value takes the next one.
_WINDOWS = DIGEST_SIZE * 8 // _ID_BITS
# The trailing text that may still become a token: "<", "<<", "<<PER", "<<PERSON_7K", ... "<<PERSON_7K3M9Q2B>".
_TOKEN_PREFIX = re.compile(
    rf"<(?:<(?:[A-Z][A-Z0-9_]{{0,{_ENTITY_MAX - 1}}}"
    rf"(?:_(?:[{_ID_CHARS}]{{0,{_ID_LENGTH - 1}}}|[{_ID_CHARS}]{{{_ID_LENGTH}}}>?))?)?)?\Z"
)
_PREFIX_MAX = 2 + _ENTITY_MAX + 1 + _ID_LENGTH + 1  # "<<" entity "_" id ">"
_MIN_KEY = 16
_MESSAGES_HINT = 'Send OpenAI chat messages: {"role": ..., "content": a string or a list of {"type": "text", ...}}.'
_STREAM_HINT = "The upstream did not send an OpenAI chat.completion.chunk stream; the reply was cut off there."
_REPLY_HINT = "The upstream did not send an OpenAI chat.completion reply; nothing was relayed."


@cache
def default_pii_analyzer() -> Analyzer:
    """privet's default analyzer (English and Chinese) at the default policy's thresholds, built once per process.

    Building it compiles every pattern (seconds): call this at start-up so the first request does not wait.
    """
    return default_analyzer(thresholds=Policy.default().thresholds())


@dataclass(frozen=True)
class Masked:
    """A masked text, its tokens (token -> original) and how many values of each entity type were masked."""

    text: str
    mapping: dict[str, str]
    counts: dict[str, int]

    def __repr__(self) -> str:  # the mapping holds personal data
        return f"Masked(text=<{len(self.text)} chars>, tokens={len(self.mapping)}, counts={self.counts!r})"


class MaskedMessages(NamedTuple):
    """Masked copies of the messages, the tokens of all of them (token -> original), and counts per entity."""

    messages: list[dict[str, Any]]
    mapping: dict[str, str]
    counts: dict[str, int]

    def __repr__(self) -> str:  # the mapping holds personal data
        return f"MaskedMessages(messages={len(self.messages)}, tokens={len(self.mapping)}, counts={self.counts!r})"


class SessionMasker:
    """Masks text with tokens deterministic per (``key``, entity, value).

    ``key`` (at least 16 bytes) is the caller's key for this tenant and session, dedicated to token ids.
    ``analyzer`` finds the values; by default :func:`default_pii_analyzer`.
    """

    def __init__(self, key: bytes, analyzer: Analyzer | None = None) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < _MIN_KEY:
            raise UsageError(f"the masking key must be at least {_MIN_KEY} bytes", "Derive it from the keyring.")
        self._key = bytes(key)
        self._analyzer = analyzer if analyzer is not None else default_pii_analyzer()

    def __repr__(self) -> str:
        return "SessionMasker(key=<secret>)"

    def mask(self, text: str) -> Masked:
        """``text`` with every value found replaced by its token."""
        if not isinstance(text, str):
            raise UsageError("the text to mask must be a string")
        mapping: dict[str, str] = {}
        counts: Counter[str] = Counter()
        masked = self._mask_into(text, mapping, counts)
        return Masked(masked, mapping, dict(counts))

    def mask_messages(self, messages: list[dict[str, Any]]) -> MaskedMessages:
        """Masked copies of OpenAI chat ``messages``: string content, the text of ``text`` parts, and a
        participant's ``name`` (which can be a person's).

        Other fields and part types (images, tool calls) are copied as they are; the input is not modified. One
        mapping covers every message, so a value repeated across messages is one token.
        """
        if not isinstance(messages, list):
            raise UsageError("the messages must be a list", _MESSAGES_HINT)
        mapping: dict[str, str] = {}
        counts: Counter[str] = Counter()
        out: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise UsageError(f"messages[{i}] is not an object", _MESSAGES_HINT)
            if not isinstance(message.get("role"), str):
                raise UsageError(f"messages[{i}] has no role string", _MESSAGES_HINT)
            content = message.get("content")
            copy = dict(message)
            if isinstance(message.get("name"), str):
                copy["name"] = self._mask_into(message["name"], mapping, counts)
            if isinstance(content, str):
                copy["content"] = self._mask_into(content, mapping, counts)
            elif isinstance(content, list):
                copy["content"] = [
                    self._mask_part(part, f"messages[{i}].content[{j}]", mapping, counts)
                    for j, part in enumerate(content)
                ]
            elif content is not None:
                raise UsageError(
                    f"messages[{i}].content is a {type(content).__name__}, not a string or a list of parts",
                    _MESSAGES_HINT,
                )
            out.append(copy)
        return MaskedMessages(out, mapping, dict(counts))

    def _mask_part(self, part: object, where: str, mapping: dict[str, str], counts: Counter[str]) -> object:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise UsageError(f"{where} is not a content part with a type", _MESSAGES_HINT)
        if part["type"] != "text":
            return dict(part)
        text = part.get("text")
        if not isinstance(text, str):
            raise UsageError(f"{where} is a text part without a text string", _MESSAGES_HINT)
        return {**part, "text": self._mask_into(text, mapping, counts)}

    def _mask_into(self, text: str, mapping: dict[str, str], counts: Counter[str]) -> str:
        pieces: list[str] = []
        position = 0
        for start, end, entity in self._spans(text):
            pieces.append(text[position:start])
            pieces.append(self._token(entity, text[start:end], mapping))
            counts[entity] += 1
            position = end
        pieces.append(text[position:])
        return "".join(pieces)

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, entity) to mask, in text order: the analyzer's findings and any token-like strings."""
        if not text:
            return []
        found = [(f.start, f.end, f.entity) for f in self._analyzer.analyze(text)]
        # A token-like string in the input must come back as itself, never as one of this mapping's values.
        pasted = [(m.start(), m.end(), m["entity"]) for m in TOKEN_PATTERN.finditer(text)] if "<<" in text else []
        if not pasted:
            return found
        starts = [start for start, _, _ in pasted]

        def clear(start: int, end: int) -> bool:
            i = bisect.bisect_right(starts, start)
            return not (i and pasted[i - 1][1] > start) and (i == len(pasted) or pasted[i][0] >= end)

        return sorted([*pasted, *(span for span in found if clear(span[0], span[1]))])

    def _token(self, entity: str, value: str, mapping: dict[str, str]) -> str:
        if not _ENTITY.fullmatch(entity):
            raise UsageError(
                "the analyzer reported an entity name that cannot be part of a token",
                f"Entity names must be 1-{_ENTITY_MAX} upper-case letters, digits and _, starting with a letter.",
            )
        digest = keyed_digest(self._key, entity.encode() + b"\x00" + value.encode("utf-8", "surrogatepass"))
        bits = int.from_bytes(digest, "big")
        for window in range(_WINDOWS):
            chunk = bits >> (DIGEST_SIZE * 8 - _ID_BITS * (window + 1))
            token_id = "".join(_ALPHABET[(chunk >> (5 * i)) & 31] for i in range(_ID_LENGTH - 1, -1, -1))
            token = format_token(entity, token_id)
            if mapping.setdefault(token, value) == value:
                return token
        raise PrivetError("every token id of a value collided with another value's", "Retry with another session key.")


def _restore(text: str, mapping: Mapping[str, str]) -> tuple[str, int, int]:
    """``text`` restored, with how many token matches were replaced and how many were not in ``mapping``."""
    if "<<" not in text:
        return text, 0, 0
    restored = 0

    def original(match: re.Match[str]) -> str:
        nonlocal restored
        value = mapping.get(match.group(0))
        if value is None:
            return match.group(0)
        restored += 1
        return value  # a function's result is inserted verbatim: no template escapes, never scanned again

    out, found = TOKEN_PATTERN.subn(original, text)
    return out, restored, found - restored


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """``text`` with every token in ``mapping`` replaced by its original, in one pass; other tokens stay."""
    return _restore(text, mapping)[0]


class StreamRestorer:
    """Restores a text that arrives in chunks exactly as :func:`restore` restores the whole of it.

    Only a trailing fragment that may still grow into a token is held back, so memory and work per call are
    bounded by the chunk plus 44 characters. ``restored`` and ``unresolved`` count token matches replaced and
    left in place (not in the mapping).
    """

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = mapping
        self._pending = ""
        self.restored = 0
        self.unresolved = 0

    def __repr__(self) -> str:
        return f"StreamRestorer(pending={len(self._pending)}, restored={self.restored}, unresolved={self.unresolved})"

    def feed(self, chunk: str) -> str:
        """The restored text that is safe to emit once ``chunk`` is appended."""
        text = self._pending + chunk
        # Tokens never overlap and hold '<' only in their first two characters, so no token crosses the cut.
        held = _TOKEN_PREFIX.search(text, max(0, len(text) - _PREFIX_MAX))
        cut = len(text) if held is None else held.start()
        self._pending = text[cut:]
        out, restored, unresolved = _restore(text[:cut], self._mapping)
        self.restored += restored
        self.unresolved += unresolved
        return out

    def finish(self) -> str:
        """The held-back fragment, verbatim (it is a proper prefix of a token, so it holds none); resets."""
        tail, self._pending = self._pending, ""
        return tail


class SseRestorer:
    """Restores ``choices[i].delta.content`` of an OpenAI chat completion stream, one restorer per choice index.

    Feed it the upstream's lines (bytes or str, as ``httpx.Response.aiter_lines`` gives them); it returns the
    lines to send on, without line terminators. Events without content changes pass verbatim. Text held back
    for a choice goes out with that choice's ``finish_reason`` event, or in one synthetic event before
    ``data: [DONE]``. Malformed events, data after ``[DONE]`` and a stream that ends before it raise
    :class:`~privet.errors.FormatError`.
    """

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = mapping
        self._choices: dict[int, StreamRestorer] = {}
        self._envelope: dict[str, Any] = {}
        self._done = False

    def __repr__(self) -> str:
        return f"SseRestorer(choices={len(self._choices)}, done={self._done})"

    @property
    def restored(self) -> int:
        """Token matches replaced so far, over all choices."""
        return sum(r.restored for r in self._choices.values())

    @property
    def unresolved(self) -> int:
        """Token matches left in place (not in the mapping) so far, over all choices."""
        return sum(r.unresolved for r in self._choices.values())

    def feed(self, line: bytes | str) -> list[str]:
        """The lines to send for one upstream line."""
        if isinstance(line, bytes | bytearray):
            try:
                line = bytes(line).decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError("a stream line is not UTF-8", _STREAM_HINT) from None
        line = line.rstrip("\r\n")
        if not line.startswith("data:"):
            return [line]  # blank separators, comments, event:/id:/retry: fields carry no content
        if self._done:
            raise FormatError("the stream has data after [DONE]", _STREAM_HINT)
        payload = line[5:].removeprefix(" ")
        if payload.strip() == "[DONE]":
            self._done = True
            return [*self._flush(), line]
        try:
            event = json.loads(payload)
        except ValueError:
            raise FormatError("a stream event is not valid JSON", _STREAM_HINT) from None
        if not isinstance(event, dict):
            raise FormatError("a stream event is not a JSON object", _STREAM_HINT)
        choices = event.get("choices")
        if choices is None:
            return [line]  # an error or usage event: no choice content to restore
        if not isinstance(choices, list):
            raise FormatError("a stream event has choices that are not a list", _STREAM_HINT)
        self._envelope = {k: v for k, v in event.items() if k not in ("choices", "usage")}
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                raise FormatError("a stream event has a choice that is not an object", _STREAM_HINT)
            changed |= self._restore_choice(choice)
        return [f"data: {json.dumps(event, ensure_ascii=False)}"] if changed else [line]

    def _restore_choice(self, choice: dict[str, Any]) -> bool:
        """Restore one choice's delta content in place; whether it changed."""
        index = choice.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise FormatError("a stream event has a choice without a valid index", _STREAM_HINT)
        restorer = self._choices.get(index)
        if restorer is None:
            restorer = self._choices[index] = StreamRestorer(self._mapping)
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        elif not isinstance(delta, dict):
            raise FormatError("a stream event has a delta that is not an object", _STREAM_HINT)
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise FormatError("a stream event has delta content that is not a string", _STREAM_HINT)
        new = content if content is None else restorer.feed(content)
        if choice.get("finish_reason") is not None:
            tail = restorer.finish()
            if tail:
                new = (new or "") + tail
        if new == content:
            return False
        choice["delta"] = {**delta, "content": new}
        return True

    def _flush(self) -> list[str]:
        tails = [(index, r.finish()) for index, r in sorted(self._choices.items())]
        choices = [{"index": i, "delta": {"content": tail}, "finish_reason": None} for i, tail in tails if tail]
        if not choices:
            return []
        event = {**self._envelope, "choices": choices}
        return [f"data: {json.dumps(event, ensure_ascii=False)}", ""]

    def finish(self) -> None:
        """Check that the stream ended properly (with ``data: [DONE]``)."""
        if not self._done:
            raise FormatError("the stream ended before data: [DONE]", _STREAM_HINT)

    def restore_sync(self, lines: Iterable[bytes | str]) -> Iterator[str]:
        """The restored lines of a whole stream."""
        for line in lines:
            yield from self.feed(line)
        self.finish()

    async def restore_async(self, lines: AsyncIterable[bytes | str]) -> AsyncIterator[str]:
        """The restored lines of a whole stream, e.g. ``restore_async(response.aiter_lines())``."""
        async for line in lines:
            for out in self.feed(line):
                yield out
        self.finish()


def restore_completion(reply: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A copy of an OpenAI ``chat.completion`` reply with ``choices[i].message.content`` restored."""
    if not isinstance(reply, Mapping) or not isinstance(reply.get("choices"), list):
        raise FormatError("the reply is not a JSON object with a list of choices", _REPLY_HINT)
    choices: list[dict[str, Any]] = []
    for choice in reply["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise FormatError("a reply choice has no message object", _REPLY_HINT)
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise FormatError("a reply message has content that is not a string", _REPLY_HINT)
        if content is not None:
            message = {**message, "content": restore(content, mapping)}
        choices.append({**choice, "message": message})
    return {**reply, "choices": choices}
