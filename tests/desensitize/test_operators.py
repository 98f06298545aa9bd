"""Operators: each transformation, the keyed ones failing closed, encryption tokens, and the policy registry."""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from privet.crypto import Keyring
from privet.desensitize import types as t
from privet.desensitize.operators import (
    OPERATORS,
    TOKEN_PATTERN,
    DateShift,
    Encrypt,
    Fpe,
    Generalize,
    Hash,
    Mask,
    OperatorContext,
    Pseudonym,
    Redact,
    Replace,
    build_operator,
    decrypt_tokens,
)
from privet.errors import IntegrityError, KeyDestroyedError, KeyNotFoundError, PrivetError, UsageError

KEYED = ["hash", "pseudonym", "encrypt", "fpe", "dateshift"]


@pytest.fixture
def ring(keyring: Keyring) -> Keyring:
    keyring.create("desensitize", "aead")
    return keyring


@pytest.fixture
def ctx(ring: Keyring) -> OperatorContext:
    return OperatorContext(ring, subject="subject-1")


def test_context_caches_derived_keys_and_hides_them(ctx: OperatorContext) -> None:
    version, key = ctx.derived_key("hash")
    assert version == 1 and len(key) == 32
    assert ctx.derived_key("hash") == (1, key)
    assert ctx.derived_key("pseudonym")[1] != key  # one key per operator
    assert key.hex() not in repr(ctx)


# -- simple operators ------------------------------------------------------------------------------
def test_redact_and_replace(ctx: OperatorContext) -> None:
    assert build_operator("redact", {}).apply("John", t.PERSON, ctx) == ""
    assert build_operator("replace", {}).apply("John", t.PERSON, ctx) == "<PERSON>"
    assert build_operator("replace", {"text": "[{entity} removed]"}).apply("a@b.c", t.EMAIL, ctx) == "[EMAIL removed]"
    assert Replace("X").apply("John", t.PERSON, OperatorContext(None)) == "X"  # no key needed


@pytest.mark.parametrize(
    ("params", "value", "expected"),
    [
        ({}, "4111-1111-1111-1111", "****-****-****-****"),
        ({"keep_last": 4}, "4111-1111-1111-1111", "****-****-****-1111"),
        ({"keep_first": 6, "keep_last": 4}, "4111 1111 1111 1111", "4111 11** **** 1111"),
        ({"keep_first": 1}, "john.doe@example.com", "j***.***@*******.***"),
        ({"keep_first": 1, "skip_separators": False}, "john.doe", "j*******"),
        ({"keep_last": 4, "char": "#"}, "13800138000", "#######8000"),
        ({"keep_first": 3, "keep_last": 3}, "12345", "*****"),  # would reveal everything: all masked
    ],
)
def test_mask(ctx: OperatorContext, params: dict[str, object], value: str, expected: str) -> None:
    assert build_operator("mask", params).apply(value, t.CREDIT_CARD, ctx) == expected


@pytest.mark.parametrize(
    ("params", "value", "entity", "expected"),
    [
        ({}, "2020-03-04", t.DATE_TIME, "2020"),
        ({}, "March 4, 2020 at 10:30", t.DATE_TIME, "2020"),
        ({}, "2020年3月4日", t.DATE_TIME, "2020年"),
        ({}, "in 1987", t.DATE_TIME, "1987"),
        ({"granularity": "month"}, "2020-03-04T10:11:12Z", t.DATE_TIME, "2020-03"),
        ({"granularity": "month"}, "04.03.2020", t.DATE_TIME, "2020-03"),
        ({"granularity": "month"}, "2020年3月4日", t.DATE_TIME, "2020年3月"),
        ({"granularity": "month"}, "March 2020", t.DATE_TIME, "2020-03"),
        ({}, "42", t.AGE, "40-49"),
        ({}, "42 years old", t.AGE, "40-49"),
        ({"width": 5}, "42岁", t.AGE, "40-44"),
        ({}, "93", t.AGE, "90+"),
        ({"top": None}, "93", t.AGE, "90-99"),
        ({}, "94107", t.ZIP_CODE, "941**"),
        ({"zip_prefix": 2}, "SW1A 1AA", t.ZIP_CODE, "SW** ***"),
        ({}, "94107-1234", t.ZIP_CODE, "941**-****"),
        ({"kind": "age"}, "aged 7", t.PERSON, "0-9"),
    ],
)
def test_generalize(ctx: OperatorContext, params: dict[str, object], value: str, entity: str, expected: str) -> None:
    assert build_operator("generalize", params).apply(value, entity, ctx) == expected


def test_generalize_fallbacks_never_return_the_value(ctx: OperatorContext) -> None:
    assert Generalize().apply("yesterday", t.DATE_TIME, ctx) == "<DATE_TIME>"
    assert Generalize(fallback="redact").apply("unknown", t.AGE, ctx) == ""
    assert Generalize(granularity="month").apply("1987", t.DATE_TIME, ctx) == "<DATE_TIME>"
    with pytest.raises(UsageError) as info:
        Generalize(fallback="error").apply("last week", t.DATE_TIME, ctx)
    assert "last week" not in info.value.one_line()
    with pytest.raises(UsageError, match="PERSON") as info:
        Generalize().apply("John", t.PERSON, ctx)
    assert "kind" in info.value.hint


# -- keyed operators fail closed -------------------------------------------------------------------
@pytest.mark.parametrize("name", KEYED)
def test_keyed_operators_need_a_keyring(name: str) -> None:
    op = build_operator(name, {"per_subject": False} if name == "dateshift" else {})
    with pytest.raises(UsageError, match="keyring") as info:
        op.apply("2020-01-02 4111111111111111", t.CREDIT_CARD, OperatorContext(None))
    assert "4111" not in info.value.one_line()


@pytest.mark.parametrize("name", KEYED)
def test_keyed_operators_need_the_key(keyring: Keyring, name: str) -> None:
    op = build_operator(name, {"per_subject": False} if name == "dateshift" else {})
    with pytest.raises(KeyNotFoundError) as info:
        op.apply("2020-01-02 4111111111111111", t.CREDIT_CARD, OperatorContext(keyring))
    assert "desensitize" in info.value.hint
    # Another existing aead key can be named instead.
    out = op.apply("2020-01-02 4111111111111111", t.CREDIT_CARD, OperatorContext(keyring, key_name="default"))
    assert out != "2020-01-02 4111111111111111"


# -- hash ------------------------------------------------------------------------------------------
def test_hash_is_keyed_and_truncated(ctx: OperatorContext, keyring: Keyring) -> None:
    out = Hash().apply("alice@example.com", t.EMAIL, ctx)
    assert re.fullmatch(r"[0-9a-f]{32}", out)
    assert out == Hash().apply("alice@example.com", t.EMAIL, OperatorContext(ctx.keyring))
    assert not hashlib.sha256(b"alice@example.com").hexdigest().startswith(out)  # not a bare hash
    assert Hash(length=12).apply("alice@example.com", t.EMAIL, ctx) == out[:12]
    assert Hash().apply("bob@example.com", t.EMAIL, ctx) != out
    assert Hash().apply("alice@example.com", t.EMAIL, OperatorContext(keyring, key_name="default")) != out


# -- pseudonym -------------------------------------------------------------------------------------
def test_pseudonym_is_consistent_and_keyed(ctx: OperatorContext, keyring: Keyring) -> None:
    op = Pseudonym()
    a = op.apply("11010519491231002X", t.CN_RESIDENT_ID, ctx)
    assert a == op.apply("11010519491231002X", t.CN_RESIDENT_ID, OperatorContext(ctx.keyring))
    assert a.startswith("110105") and a != "11010519491231002X"
    assert op.apply("11010519491231002X", t.CN_RESIDENT_ID, OperatorContext(keyring, key_name="default")) != a


# -- encrypt ---------------------------------------------------------------------------------------
def test_encrypt_token_format_and_determinism(ctx: OperatorContext) -> None:
    token = Encrypt().apply("张三", t.PERSON, ctx)
    m = TOKEN_PATTERN.fullmatch(token)
    assert m and m.group(1) == "PERSON" and m.group(2) == "1"
    assert token.isascii()
    assert Encrypt().apply("张三", t.PERSON, ctx) == token  # deterministic: joinable
    assert Encrypt().apply("张三", t.LOCATION, ctx) != token  # the entity is bound


def test_decrypt_tokens_in_free_text(ctx: OperatorContext) -> None:
    op = Encrypt()
    values = [("Alice Smith", t.PERSON), ("alice@example.com", t.EMAIL), ("13800138000", t.CN_MOBILE), ("", t.PERSON)]
    tokens = [op.apply(v, e, ctx) for v, e in values]
    text = f"Patient {tokens[0]} ({tokens[1]}), tel:{tokens[2]}. Nothing:{tokens[3]}; done ENC[notatoken]."
    assert decrypt_tokens(text, OperatorContext(ctx.keyring)) == (
        "Patient Alice Smith (alice@example.com), tel:13800138000. Nothing:; done ENC[notatoken]."
    )
    assert TOKEN_PATTERN.findall(text)[0][0] == "PERSON"


def test_tampered_or_relabelled_token_is_refused(ctx: OperatorContext) -> None:
    token = Encrypt().apply("Alice Smith", t.PERSON, ctx)
    relabelled = token.replace("ENC[PERSON:", "ENC[LOCATION:")
    with pytest.raises(IntegrityError) as info:
        decrypt_tokens(f"x {relabelled}", ctx)
    assert "Alice" not in info.value.one_line()
    body = token[:-2] + ("A" if token[-2] != "A" else "B") + "]"
    with pytest.raises(IntegrityError):
        decrypt_tokens(body, ctx)


def test_tokens_survive_rotation_and_die_with_their_key(ring: Keyring) -> None:
    old = Encrypt().apply("Alice", t.PERSON, OperatorContext(ring))
    ring.rotate("desensitize")
    new = Encrypt().apply("Alice", t.PERSON, OperatorContext(ring))
    assert ":v2:" in new and ":v1:" in old and new != old
    assert decrypt_tokens(f"{old} {new}", OperatorContext(ring)) == "Alice Alice"
    ring.delete("desensitize", 1)
    with pytest.raises(KeyDestroyedError):
        decrypt_tokens(old, OperatorContext(ring))
    assert decrypt_tokens(new, OperatorContext(ring)) == "Alice"


def test_encrypt_refuses_odd_entity_names(ctx: OperatorContext) -> None:
    with pytest.raises(UsageError):
        Encrypt().apply("x", "person]", ctx)


# -- fpe -------------------------------------------------------------------------------------------
def test_fpe_card_keeps_length_grouping_and_prefix(ctx: OperatorContext) -> None:
    op = Fpe(keep_prefix=6)
    value = "4111 1111 1111 1111"
    out = op.apply(value, t.CREDIT_CARD, ctx)
    assert re.fullmatch(r"4111 11\d\d \d{4} \d{4}", out)
    assert out != value
    assert op.apply(value, t.CREDIT_CARD, ctx) == out
    assert op.reverse(out, t.CREDIT_CARD, ctx) == value


def test_fpe_keeps_separators_and_other_characters(ctx: OperatorContext) -> None:
    op = Fpe(keep_suffix=1)
    value = "11010519491231002X"
    out = op.apply(value, t.CN_RESIDENT_ID, ctx)
    assert out.endswith("2X") and out[:16].isdigit() and out != value
    assert op.reverse(out, t.CN_RESIDENT_ID, ctx) == value
    alnum = Fpe(alphabet="upper_alnum")
    plate = "AB-12C-9XY"
    out = alnum.apply(plate, t.CN_LICENSE_PLATE, ctx)
    assert re.fullmatch(r"[0-9A-Z]{2}-[0-9A-Z]{3}-[0-9A-Z]{3}", out)
    assert alnum.reverse(out, t.CN_LICENSE_PLATE, ctx) == plate


def test_fpe_reverse_with_an_older_key_version(ring: Keyring) -> None:
    out = Fpe().apply("13800138000", t.CN_MOBILE, OperatorContext(ring))
    ring.rotate("desensitize")
    assert Fpe().reverse(out, t.CN_MOBILE, OperatorContext(ring)) != "13800138000"
    assert Fpe().reverse(out, t.CN_MOBILE, OperatorContext(ring), version=1) == "13800138000"


def test_fpe_refuses_a_domain_that_is_too_small(ctx: OperatorContext) -> None:
    with pytest.raises(UsageError) as info:
        Fpe(keep_prefix=3).apply("123-45678", t.PHONE, ctx)  # 5 digits left to encrypt, FF1 needs 6
    assert "45678" not in info.value.one_line()
    with pytest.raises(UsageError):
        Fpe().apply("12345", t.AGE, ctx)
    with pytest.raises(UsageError):
        Fpe(keep_prefix=6, keep_suffix=6).apply("4111111111111111", t.CREDIT_CARD, ctx)


# -- dateshift -------------------------------------------------------------------------------------
FORMATS = [
    ("2020-01-02", r"\d{4}-\d{2}-\d{2}", date(2020, 1, 2)),
    ("2020/01/02", r"\d{4}/\d{2}/\d{2}", date(2020, 1, 2)),
    ("02.01.2020", r"\d{2}\.\d{2}\.\d{4}", date(2020, 1, 2)),
    ("January 2, 2020", r"[A-Z][a-z]+ \d{1,2}, \d{4}", date(2020, 1, 2)),
    ("Jan. 2nd, 2020", r"[A-Z][a-z]{2}\. \d{1,2}(st|nd|rd|th), \d{4}", date(2020, 1, 2)),
    ("2 January 2020", r"\d{1,2} [A-Z][a-z]+ \d{4}", date(2020, 1, 2)),
    ("2020年1月2日", r"\d{4}年\d{1,2}月\d{1,2}日", date(2020, 1, 2)),
    ("2020-01-02T08:30:00Z", r"\d{4}-\d{2}-\d{2}T08:30:00Z", date(2020, 1, 2)),
    ("01/02/2020", r"\d{2}/\d{2}/\d{4}", date(2020, 1, 2)),
]


def _read(text: str) -> date:
    """Reads back the shifted dates the tests produce (same formats as FORMATS)."""
    months = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
              "november", "december"]  # fmt: skip
    if m := re.search(r"(\d{4})年(\d{1,2})月(\d{1,2})日", text):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := re.search(r"(\d{4})[-/](\d{2})[-/](\d{2})", text):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := re.search(r"(\d{2})\.(\d{2})\.(\d{4})", text):
        return date(int(m[3]), int(m[2]), int(m[1]))
    if m := re.search(r"(\d{2})/(\d{2})/(\d{4})", text):
        return date(int(m[3]), int(m[1]), int(m[2]))
    if m := re.search(r"([A-Za-z]+)\.? (\d{1,2})\w*, (\d{4})", text):
        return date(int(m[3]), next(i for i, n in enumerate(months, 1) if n.startswith(m[1].lower())), int(m[2]))
    m = re.search(r"(\d{1,2}) ([A-Za-z]+) (\d{4})", text)
    assert m
    return date(int(m[3]), next(i for i, n in enumerate(months, 1) if n.startswith(m[2].lower())), int(m[1]))


@pytest.mark.parametrize(("value", "shape", "original"), FORMATS)
def test_dateshift_keeps_the_format(ctx: OperatorContext, value: str, shape: str, original: date) -> None:
    op = DateShift()
    out = op.apply(value, t.DATE_TIME, ctx)
    assert re.fullmatch(shape, out), out
    assert (_read(out) - original).days == op.offset(ctx)


RENDERERS = [
    lambda d: d.isoformat(),
    lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{d:%B} {d.day}, {d.year}",
    lambda d: f"{d.day} {d:%b} {d.year}",
    lambda d: f"{d.year}年{d.month}月{d.day}日",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)),
    st.sampled_from(range(len(RENDERERS))),
    st.text(alphabet=" ,:;()", max_size=4),
)
def test_dateshift_parses_what_it_writes(ctx: OperatorContext, day: date, form: int, pad: str) -> None:
    assume(not (form == 4 and day.month == 5))  # "May" is both full and short; it is read as the full name
    op = DateShift()
    value = RENDERERS[form](day)
    out = op.apply(f"{pad}{value}{pad}", t.DATE_TIME, ctx)
    assert out.startswith(pad) and out.endswith(pad)
    shifted = day + timedelta(days=op.offset(ctx))
    assert out[len(pad) : len(out) - len(pad)] == RENDERERS[form](shifted)


def test_dateshift_is_per_subject_and_within_range(ring: Keyring) -> None:
    op = DateShift(days=30)
    offsets = [op.offset(OperatorContext(ring, subject=f"s{i}")) for i in range(200)]
    assert all(1 <= abs(o) <= 30 for o in offsets)
    assert len(set(offsets)) > 40  # spread over the range, both directions
    assert min(offsets) < 0 < max(offsets)
    assert op.offset(OperatorContext(ring, subject="s7")) == offsets[7]


def test_dateshift_keeps_intervals_of_one_subject(ctx: OperatorContext) -> None:
    out = DateShift().apply("admitted 2020-01-30, discharged 2020-02-02", t.DATE_TIME, ctx)
    first, second = re.findall(r"\d{4}-\d{2}-\d{2}", out)
    assert (date.fromisoformat(second) - date.fromisoformat(first)).days == 3


def test_dateshift_needs_a_subject_unless_told(ring: Keyring) -> None:
    with pytest.raises(UsageError, match="subject"):
        DateShift().apply("2020-01-02", t.DATE_TIME, OperatorContext(ring))
    shared = DateShift(per_subject=False)
    a = shared.apply("2020-01-02", t.DATE_TIME, OperatorContext(ring))
    b = shared.apply("2020-01-02", t.DATE_TIME, OperatorContext(ring, subject="other"))
    assert a == b != "2020-01-02"


def test_dateshift_fallback(ctx: OperatorContext) -> None:
    assert DateShift().apply("next Tuesday", t.DATE_TIME, ctx) == "<DATE_TIME>"
    assert DateShift().apply("2020-02-30", t.DATE_TIME, ctx) == "<DATE_TIME>"  # not a calendar date
    with pytest.raises(UsageError):
        DateShift(fallback="error").apply("next Tuesday", t.DATE_TIME, ctx)


def test_dateshift_reads_day_first_for_non_english(ring: Keyring) -> None:
    op = DateShift(per_subject=False)
    en = op.apply("03/04/2020", t.DATE_TIME, OperatorContext(ring, language="en"))
    fr = op.apply("03/04/2020", t.DATE_TIME, OperatorContext(ring, language="fr"))
    shift = op.offset(OperatorContext(ring))
    assert (_read(en) - date(2020, 3, 4)).days == shift
    m = re.fullmatch(r"(\d{2})/(\d{2})/(\d{4})", fr)
    assert m and (date(int(m[3]), int(m[2]), int(m[1])) - date(2020, 4, 3)).days == shift


# -- registry --------------------------------------------------------------------------------------
def test_registry_builds_every_operator() -> None:
    assert set(OPERATORS) == {"redact", "replace", "mask", "generalize", "hash", "pseudonym", "encrypt", "fpe",
                              "dateshift"}  # fmt: skip
    assert isinstance(build_operator("redact", {}), Redact)
    assert build_operator("mask", {"keep_last": 4, "char": "#"}) == Mask(keep_last=4, char="#")
    assert build_operator("generalize", {"kind": "zip", "top": None}) == Generalize(kind="zip", top=None)
    assert build_operator("fpe", {"alphabet": "ABCDEFGHIJ"}) == Fpe(alphabet="ABCDEFGHIJ")
    assert build_operator("dateshift", {"days": 30}).name == "dateshift"


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("shred", {}, "unknown operator"),
        ("mask", {"keep": 3}, "no parameter"),
        ("redact", {"x": 1}, "no parameter"),
        ("mask", {"keep_last": "4"}, "wrong type"),
        ("mask", {"keep_last": True}, "wrong type"),
        ("mask", {"keep_last": -1}, "0 or more"),
        ("mask", {"char": "**"}, "single character"),
        ("generalize", {"granularity": "day"}, "wrong type"),
        ("generalize", {"width": 0}, "width"),
        ("hash", {"length": 4}, "length"),
        ("fpe", {"alphabet": "x"}, "alphabet"),
        ("dateshift", {"days": 0}, "days"),
        ("dateshift", {"fallback": "keep"}, "wrong type"),
    ],
)
def test_registry_refuses_bad_policies(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        build_operator(name, params)
    assert isinstance(info.value, PrivetError)
