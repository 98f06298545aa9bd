"""Operators: what happens to a detected value (redact, replace, mask, generalize, hash, pseudonym, ...).

An operator is a small immutable object built from a policy entry with :func:`build_operator`; its
:meth:`~Operator.apply` turns one detected value into its replacement. Keyed operators (``hash``,
``pseudonym``, ``encrypt``, ``fpe``, ``dateshift``) derive their own key with HKDF-SHA256 from the keyring
key ``ctx.key_name``, with a distinct info string each, so that no two operators share key material. They
fail closed: without a keyring they raise, they never fall back to unkeyed output.

Encrypted values are tokens ``ENC[<ENTITY>:v<version>:<base64url>]``: AES-SIV (deterministic, so equal
values give equal tokens and stay joinable) with the entity type as associated data. :data:`TOKEN_PATTERN`
finds them in free text and :func:`decrypt_tokens` puts the plaintext back.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import types as pytypes
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from typing import ClassVar, Literal, Protocol, Union, get_args, get_origin, get_type_hints

from privet.crypto.fpe import ALNUM, DIGITS, FF1, LOWER_ALNUM, UPPER_ALNUM
from privet.crypto.keyed import DeterministicAead, derive_key, keyed_digest
from privet.crypto.keyring import Keyring
from privet.desensitize import types as t
from privet.desensitize.surrogates import surrogate
from privet.errors import IntegrityError, KeyNotFoundError, UsageError

__all__ = [
    "OPERATORS",
    "TOKEN_PATTERN",
    "DateShift",
    "Encrypt",
    "Fpe",
    "Generalize",
    "Hash",
    "Mask",
    "Operator",
    "OperatorContext",
    "Pseudonym",
    "Redact",
    "Replace",
    "build_operator",
    "decrypt_tokens",
]

DEFAULT_KEY_NAME = "desensitize"
_KDF_LABEL = "privet desensitize v1"
_SIV_AD = b"privet desensitize encrypt v1"
_ENTITY = re.compile(r"[A-Z][A-Z0-9_]*")
TOKEN_PATTERN = re.compile(r"ENC\[([A-Z][A-Z0-9_]*):v([1-9][0-9]{0,8}):([A-Za-z0-9_-]{22,})\]")
"""An encrypted value in text: group 1 the entity, group 2 the key version, group 3 the ciphertext."""

Fallback = Literal["replace", "redact", "error"]


# -- context and keys ------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorContext:
    """What operators need besides the value: the keyring, the key to use, the subject and the language.

    Derived keys are cached on the context (one context per job or request), so a key rotation takes
    effect for the next context.
    """

    keyring: Keyring | None
    key_name: str = DEFAULT_KEY_NAME
    subject: str | None = None
    language: str = "en"
    _keys: dict[tuple[str, int, int | None], tuple[int, bytes]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def derived_key(self, purpose: str, length: int = 32, version: int | None = None) -> tuple[int, bytes]:
        """(key version, HKDF-SHA256 key for ``purpose``) from ``key_name`` at ``version`` (primary if None)."""
        cache_key = (purpose, length, version)
        cached = self._keys.get(cache_key)
        if cached is not None:
            return cached
        if self.keyring is None:
            raise UsageError(
                f"the {purpose!r} operator needs a keyring and none is open",
                "Unlock the keyring (PRIVET_PASSPHRASE or PRIVET_MASTER_KEY), or use redact, replace or mask.",
            )
        try:
            data_key = self.keyring.data_key(self.key_name, version)
        except KeyNotFoundError as exc:
            if version is not None:
                raise
            raise KeyNotFoundError(
                exc.message,
                f"Create an aead key named {self.key_name!r} in the keyring, or set key_name to an existing one.",
            ) from None
        info = f"{_KDF_LABEL}|{purpose}|{data_key.name}|{data_key.version}".encode()
        derived = derive_key(data_key.material, info, length)
        result = (data_key.version, derived)
        self._keys[cache_key] = result
        if version is None:  # the primary is also that explicit version
            self._keys[(purpose, length, data_key.version)] = result
        return result


class Operator(Protocol):
    """Transforms one detected value of type ``entity``."""

    name: str

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str: ...


def _fallback(kind: Fallback, operator: str, entity: str) -> str:
    """What an operator outputs for a value it cannot parse: never the value itself."""
    if kind == "error":
        raise UsageError(
            f"the {operator} operator could not parse a {entity} value",
            "Use fallback: replace (or redact) in the policy, or another operator for this entity.",
        )
    return "" if kind == "redact" else f"<{entity}>"


# -- simple operators ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Redact:
    """Removes the value (empty string)."""

    name: ClassVar[str] = "redact"

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        return ""


@dataclass(frozen=True)
class Replace:
    """Replaces the value by ``text`` (``{entity}`` in it becomes the entity name), by default ``<ENTITY>``."""

    name: ClassVar[str] = "replace"
    text: str = "<{entity}>"

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        return self.text.replace("{entity}", entity)


@dataclass(frozen=True)
class Mask:
    """Replaces characters by ``char``, keeping the first ``keep_first`` and last ``keep_last``.

    With ``skip_separators`` the characters in ``separators`` stay and do not count. When the kept parts
    would cover the whole value, everything is masked: a mask never returns the value unchanged.
    """

    name: ClassVar[str] = "mask"
    keep_first: int = 0
    keep_last: int = 0
    char: str = "*"
    skip_separators: bool = True
    separators: str = " -_.@/()+:"

    def __post_init__(self) -> None:
        if self.keep_first < 0 or self.keep_last < 0:
            raise UsageError("mask: keep_first and keep_last must be 0 or more")
        if len(self.char) != 1:
            raise UsageError("mask: char must be a single character")

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        chars = list(value)
        positions = [i for i, c in enumerate(chars) if not (self.skip_separators and c in self.separators)]
        n = len(positions)
        first, last = (self.keep_first, self.keep_last) if self.keep_first + self.keep_last < n else (0, 0)
        for i in positions[first : n - last]:
            chars[i] = self.char
        return "".join(chars)


# -- dates -----------------------------------------------------------------------------------------
_MONTHS = [m.lower() for m in calendar.month_name[1:]]
_MONTH_ABBR = [m.lower() for m in calendar.month_abbr[1:]]
_MONTH_RE = "January|February|March|April|May|June|July|August|September|October|November|December|Sept|" + (
    "|".join(calendar.month_abbr[1:])
)
_ORDINAL = r"(?P<suf>st|nd|rd|th)?"


def _month_number(text: str) -> int:
    word = text.rstrip(".").lower()
    return (_MONTHS.index(word) if word in _MONTHS else _MONTH_ABBR.index(word[:3])) + 1


def _month_like(month: int, model: str) -> str:
    """The month's name in the style of ``model``: full or abbreviated, its case, its trailing dot."""
    dot = "." if model.endswith(".") else ""
    word = model.rstrip(".")
    name = calendar.month_name[month] if word.lower() in _MONTHS else calendar.month_abbr[month]
    if word.isupper() and len(word) > 1:
        name = name.upper()
    elif word.islower():
        name = name.lower()
    return name + dot


def _ordinal(day: int) -> str:
    return "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


# Each pattern names its parts y, m (number) or mon (name), d and an optional ordinal suffix.
_DATE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<!\d)(?P<y>\d{4})\s*年\s*(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]"), "ymd"),
    (re.compile(r"(?<![\d.])(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})(?![\d])"), "ymd"),
    (re.compile(r"(?<![\d.])(?P<a>\d{1,2})(?P<sep>[-/.])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})(?!\d)"), "ab-y"),
    (
        re.compile(rf"\b(?P<mon>(?:{_MONTH_RE})\.?)\s+(?P<d>\d{{1,2}}){_ORDINAL},?\s+(?P<y>\d{{4}})\b", re.I),
        "mdy",
    ),
    (
        re.compile(rf"\b(?P<d>\d{{1,2}}){_ORDINAL}\s+(?:of\s+)?(?P<mon>(?:{_MONTH_RE})\.?),?\s+(?P<y>\d{{4}})\b", re.I),
        "dmy",
    ),
)


@dataclass(frozen=True)
class _FoundDate:
    start: int
    end: int
    value: date
    render: Callable[[date], str]


def _find_dates(text: str, language: str) -> list[_FoundDate]:
    """Every valid calendar date in ``text``, leftmost-longest, without overlaps."""
    found: list[_FoundDate] = []
    for pattern, order in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            parsed = _parse_match(m, order, language)
            if parsed is not None:
                found.append(parsed)
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    chosen: list[_FoundDate] = []
    for f in found:
        if not chosen or f.start >= chosen[-1].end:
            chosen.append(f)
    return chosen


def _parse_match(m: re.Match[str], order: str, language: str) -> _FoundDate | None:
    groups = m.groupdict()
    year = int(groups["y"])
    if order == "ab-y":
        a, b = int(groups["a"]), int(groups["b"])
        # "02.01.2020" is day-first everywhere; with / or - English reads month-first unless it cannot be.
        month_first = groups["sep"] != "." and language == "en" and a <= 12
        month, day = (a, b) if month_first else (b, a)
        names = {"m": "a", "d": "b"} if month_first else {"m": "b", "d": "a"}
    else:
        month = _month_number(groups["mon"]) if groups.get("mon") else int(groups["m"])
        day = int(groups["d"])
        names = {"m": "mon" if groups.get("mon") else "m", "d": "d"}
    try:
        value = date(year, month, day)
    except ValueError:
        return None

    def render(new: date) -> str:
        parts = {"y": (new.year, "y"), names["m"]: (new.month, "m"), names["d"]: (new.day, "d")}
        if groups.get("suf"):
            parts["suf"] = (new.day, "suf")
        out, pos = [], m.start()
        for group in sorted(parts, key=m.start):
            number, kind = parts[group]
            original = m.group(group)
            out.append(m.string[pos : m.start(group)])
            if kind == "suf":
                out.append(_ordinal(number) if original.islower() else _ordinal(number).upper())
            elif group == "mon":
                out.append(_month_like(number, original))
            else:
                # Numeric formats (2020-01-02, 02.01.2020) are zero-padded when written with two digits;
                # 2020年1月2日 and "January 2, 2020" are padded only when the value was.
                pad = original.startswith("0") or (len(original) == 2 and groups.get("sep") is not None)
                out.append(f"{number:0{len(original)}d}" if pad else str(number))
            pos = m.end(group)
        out.append(m.string[pos : m.end()])
        return "".join(out)

    return _FoundDate(m.start(), m.end(), value, render)


_YEAR_MONTH = (
    re.compile(r"(?<!\d)(?P<y>\d{4})\s*年\s*(?P<m>\d{1,2})\s*月"),
    re.compile(r"(?<![\d.])(?P<y>\d{4})[-/.](?P<m>\d{1,2})(?![\d/.-])"),
    re.compile(rf"\b(?P<mon>(?:{_MONTH_RE})\.?),?\s+(?P<y>\d{{4}})\b", re.I),
)
_YEAR = re.compile(r"(?<!\d)(1[6-9]\d\d|2\d\d\d)(?!\d)")


# -- generalize ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generalize:
    """Coarsens a value: a date to its year (or year-month), an age to a bucket, a postcode to its prefix.

    ``kind`` ``auto`` picks by entity (DATE_TIME, AGE, ZIP_CODE). Ages become ``"40-49"`` for
    ``width=10`` and ``"90+"`` from ``top``; postcodes keep ``zip_prefix`` characters and star the rest.
    Values that do not parse give the ``fallback`` (``<ENTITY>`` by default), never themselves.
    """

    name: ClassVar[str] = "generalize"
    kind: Literal["auto", "date", "age", "zip"] = "auto"
    granularity: Literal["year", "month"] = "year"
    width: int = 10
    top: int | None = 90
    zip_prefix: int = 3
    fallback: Fallback = "replace"

    def __post_init__(self) -> None:
        if self.width < 1:
            raise UsageError("generalize: width must be at least 1")
        if self.zip_prefix < 0:
            raise UsageError("generalize: zip_prefix must be 0 or more")

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        kind = self.kind
        if kind == "auto":
            auto = {t.DATE_TIME: "date", t.AGE: "age", t.ZIP_CODE: "zip"}.get(entity)
            if auto is None:
                raise UsageError(f"generalize does not know how to generalize {entity}", "Set kind: date, age or zip.")
            kind = auto
        out = {"date": self._date, "age": self._age, "zip": self._zip}[kind](value, ctx)
        return _fallback(self.fallback, self.name, entity) if out is None else out

    def _date(self, value: str, ctx: OperatorContext) -> str | None:
        chinese = "年" in value
        dates = _find_dates(value, ctx.language)
        year: int | None = None
        month: int | None = None
        if dates:
            year, month = dates[0].value.year, dates[0].value.month
        else:
            for pattern in _YEAR_MONTH:
                m = pattern.search(value)
                if m is not None:
                    month = _month_number(m["mon"]) if m.groupdict().get("mon") else int(m["m"])
                    if 1 <= month <= 12:
                        year = int(m["y"])
                        break
            if year is None:
                m = _YEAR.search(value)
                if m is None or self.granularity == "month":
                    return None
                year = int(m.group(1))
        if self.granularity == "year":
            return f"{year}年" if chinese else str(year)
        return f"{year}年{month}月" if chinese else f"{year}-{month:02d}"

    def _age(self, value: str, ctx: OperatorContext) -> str | None:
        m = re.search(r"\d{1,3}", value)
        if m is None:
            return None
        age = int(m.group(0))
        if self.top is not None and age >= self.top:
            return f"{self.top}+"
        low = age // self.width * self.width
        return str(low) if self.width == 1 else f"{low}-{low + self.width - 1}"

    def _zip(self, value: str, ctx: OperatorContext) -> str | None:
        if not any(c.isalnum() for c in value):
            return None
        kept = 0
        out = []
        for c in value:
            if c.isalnum():
                out.append(c if kept < self.zip_prefix else "*")
                kept += 1
            else:
                out.append(c)
        return "".join(out)


# -- keyed operators -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hash:
    """HMAC-SHA256 of the value under a key derived from the keyring, as ``length`` hex characters."""

    name: ClassVar[str] = "hash"
    length: int = 32

    def __post_init__(self) -> None:
        if not 8 <= self.length <= 64:
            raise UsageError("hash: length must be between 8 and 64 hex characters")

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        _, key = ctx.derived_key(self.name)
        return keyed_digest(key, value.encode("utf-8")).hex()[: self.length]


@dataclass(frozen=True)
class Pseudonym:
    """A consistent, format-preserving and valid surrogate (see :mod:`privet.desensitize.surrogates`)."""

    name: ClassVar[str] = "pseudonym"

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        _, key = ctx.derived_key(self.name)
        return surrogate(entity, value, key)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Encrypt:
    """Deterministic AES-SIV encryption into a token ``ENC[<ENTITY>:v<version>:<base64url>]``."""

    name: ClassVar[str] = "encrypt"

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        if not _ENTITY.fullmatch(entity):
            raise UsageError(f"encrypt: entity name {entity!r} is not upper-case letters, digits and _")
        version, key = ctx.derived_key(self.name, 64)
        sealed = DeterministicAead(key).encrypt(value.encode("utf-8"), [_SIV_AD, entity.encode("ascii")])
        return f"ENC[{entity}:v{version}:{_b64encode(sealed)}]"


def decrypt_tokens(text: str, ctx: OperatorContext) -> str:
    """``text`` with every ``ENC[...]`` token replaced by its plaintext; a token that fails to verify raises."""

    def open_token(m: re.Match[str]) -> str:
        entity, version = m.group(1), int(m.group(2))
        _, key = ctx.derived_key(Encrypt.name, 64, version)
        try:
            plain = DeterministicAead(key).decrypt(_b64decode(m.group(3)), [_SIV_AD, entity.encode("ascii")])
            return plain.decode("utf-8")
        except (IntegrityError, binascii.Error, ValueError):
            raise IntegrityError(
                f"the encrypted {entity} token at character {m.start()} failed verification",
                f"It was altered, or made with another keyring or key than {ctx.key_name!r}.",
            ) from None

    return TOKEN_PATTERN.sub(open_token, text)


_ALPHABETS = {"digits": DIGITS, "lower_alnum": LOWER_ALNUM, "upper_alnum": UPPER_ALNUM, "alnum": ALNUM}


@dataclass(frozen=True)
class Fpe:
    """FF1 format-preserving encryption of the value's characters in ``alphabet``; others stay in place.

    ``alphabet`` is ``digits``, ``lower_alnum``, ``upper_alnum``, ``alnum`` or a string of the characters
    to encrypt. ``keep_prefix`` / ``keep_suffix`` count alphabet characters (a card's first 6 digits,
    whatever its grouping); they stay in clear and are the FF1 tweak, so that :meth:`reverse` can undo it.
    """

    name: ClassVar[str] = "fpe"
    alphabet: str = "digits"
    keep_prefix: int = 0
    keep_suffix: int = 0

    def __post_init__(self) -> None:
        chars = _ALPHABETS.get(self.alphabet, self.alphabet)
        if len(chars) < 2 or len(set(chars)) != len(chars):
            raise UsageError(
                "fpe: alphabet must be digits, lower_alnum, upper_alnum, alnum or at least 2 distinct characters"
            )
        if self.keep_prefix < 0 or self.keep_suffix < 0:
            raise UsageError("fpe: keep_prefix and keep_suffix must be 0 or more")

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        return self._run(value, entity, ctx, None, encrypt=True)

    def reverse(self, value: str, entity: str, ctx: OperatorContext, version: int | None = None) -> str:
        """Undo :meth:`apply` (with the key version that made it; the primary by default)."""
        return self._run(value, entity, ctx, version, encrypt=False)

    def _run(self, value: str, entity: str, ctx: OperatorContext, version: int | None, *, encrypt: bool) -> str:
        chars = _ALPHABETS.get(self.alphabet, self.alphabet)
        positions = [i for i, c in enumerate(value) if c in chars]
        n = len(positions)
        middle = positions[self.keep_prefix : n - self.keep_suffix] if self.keep_prefix + self.keep_suffix < n else []
        _, key = ctx.derived_key(self.name, 32, version)
        cipher = FF1(key, alphabet=chars)
        if len(middle) < cipher.min_length:
            raise UsageError(
                f"fpe: a {entity} value has {len(middle)} characters to encrypt; FF1 needs at least "
                f"{cipher.min_length} of this alphabet",
                "Keep fewer characters in clear, widen the alphabet, or use another operator for this entity.",
            )
        changed = set(middle)
        kept = "".join(value[i] for i in positions if i not in changed)
        tweak = f"{len(value)}|{kept}".encode()
        text = "".join(value[i] for i in middle)
        out = cipher.encrypt(text, tweak) if encrypt else cipher.decrypt(text, tweak)
        result = list(value)
        for i, c in zip(middle, out, strict=True):
            result[i] = c
        return "".join(result)


@dataclass(frozen=True)
class DateShift:
    """Moves every date in the value by a secret offset of 1..``days`` days (either way), same per subject.

    The offset is HMAC(key, subject), so one subject's dates keep their intervals and weekdays shift
    together. The format is kept (ISO, 2020/01/02, 02.01.2020, "January 2, 2020", 2020年1月2日). With
    ``per_subject: false`` one offset serves all values (weaker: one known date reveals it).
    """

    name: ClassVar[str] = "dateshift"
    days: int = 180
    per_subject: bool = True
    fallback: Fallback = "replace"

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 36500:
            raise UsageError("dateshift: days must be between 1 and 36500")

    def offset(self, ctx: OperatorContext) -> int:
        """The shift in days for ``ctx.subject``: never 0, within ±``days``."""
        if self.per_subject and ctx.subject is None:
            raise UsageError(
                "dateshift needs a subject for per-subject offsets",
                "Give the privacy subject id, or set per_subject: false in the policy.",
            )
        _, key = ctx.derived_key(self.name)
        subject = ctx.subject if self.per_subject else None
        message = b"all" if subject is None else b"subject|" + subject.encode("utf-8")
        # 64 bits reduced modulo at most 73000: the bias is below 2**-46.
        u = int.from_bytes(keyed_digest(key, message)[:8], "big") % (2 * self.days)
        return u - self.days if u < self.days else u - self.days + 1

    def apply(self, value: str, entity: str, ctx: OperatorContext) -> str:
        dates = _find_dates(value, ctx.language)
        if not dates:
            return _fallback(self.fallback, self.name, entity)
        shift = timedelta(days=self.offset(ctx))
        out, pos = [], 0
        for found in dates:
            try:
                moved = found.value + shift
            except OverflowError:
                return _fallback(self.fallback, self.name, entity)
            out.append(value[pos : found.start])
            out.append(found.render(moved))
            pos = found.end
        out.append(value[pos:])
        return "".join(out)


# -- registry --------------------------------------------------------------------------------------
OPERATORS: dict[str, type] = {
    op.name: op for op in (Redact, Replace, Mask, Generalize, Hash, Pseudonym, Encrypt, Fpe, DateShift)
}


def _is(value: object, expected: object) -> bool:
    if expected is type(None):
        return value is None
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(expected, type) and isinstance(value, expected)


def _accepts(value: object, hint: object) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(hint))
    if origin in (Union, pytypes.UnionType):
        return any(_accepts(value, a) for a in get_args(hint))
    return _is(value, hint)


def build_operator(name: str, params: dict[str, object] | None = None) -> Operator:
    """The operator ``name`` with ``params`` (from a policy); an unknown name, parameter or value raises."""
    cls = OPERATORS.get(name)
    if cls is None:
        raise UsageError(f"unknown operator {name!r}", f"Use one of: {', '.join(sorted(OPERATORS))}.")
    params = dict(params or {})
    hints = get_type_hints(cls)
    allowed = [f.name for f in fields(cls) if f.init]
    for key, value in params.items():
        if key not in allowed:
            choices = ", ".join(allowed) if allowed else "none"
            raise UsageError(f"operator {name!r} has no parameter {key!r}", f"Its parameters are: {choices}.")
        if not _accepts(value, hints[key]):
            raise UsageError(
                f"operator {name!r}: parameter {key!r} has the wrong type or value",
                f"Expected {_describe(hints[key])}.",
            )
    return cls(**params)


def _describe(hint: object) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) in (Union, pytypes.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))
