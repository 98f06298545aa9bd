"""The text engine: policies applied to English and Chinese text, consistency, files, the vault, and logs."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from privet.crypto import Keyring, LocalMasterKey
from privet.desensitize import types as t
from privet.desensitize.analyzers import default_analyzer
from privet.desensitize.engine import Analyzer
from privet.desensitize.policy import Policy
from privet.desensitize.text import Desensitizer, desensitize_file, restore_file
from privet.desensitize.types import Finding
from privet.desensitize.validators import cn_mobile_valid, cn_resident_id_valid, luhn_valid
from privet.desensitize.vault import TOKEN_PATTERN, RestoreGrant, Vault
from privet.errors import PrivetError, UsageError
from privet.store import Store

EMAIL, PHONE, CARD = "jane.doe@example.com", "415-555-0132", "4111 1111 1111 1111"
ENGLISH = f"Please mail {EMAIL} or call {PHONE}; the card on file is {CARD}. Thanks."
CN_ID, CN_MOBILE = "11010519491231002X", "13812345678"
CHINESE = f"患者的身份证号是{CN_ID}，联系电话{CN_MOBILE}，请及时回访。"
GRANT = RestoreGrant(principal="svc:test", purpose="check the round trip", allowed=True)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    """One analyzer for the module: building one compiles every pattern (about 2 s)."""
    return default_analyzer(thresholds={"*": 0.4})


@pytest.fixture
def ring(keyring: Keyring) -> Keyring:
    keyring.create("desensitize", "aead")
    return keyring


@pytest.fixture
def default(ring: Keyring, analyzer: Analyzer) -> Desensitizer:
    return Desensitizer(Policy.default(), keyring=ring, analyzer=analyzer)


def _untouched_outside_replacements(original: str, result_text: str, replacements: tuple) -> None:
    """Everything between replacements is the original text, at the positions the replacements say."""
    position = new_position = 0
    for r in replacements:
        assert original[position : r.start] == result_text[new_position : r.new_start]
        position, new_position = r.end, r.new_end
    assert original[position:] == result_text[new_position:]


def test_english_email_phone_and_card_become_valid_surrogates(default: Desensitizer) -> None:
    result = default.desensitize(ENGLISH)
    assert result.language == "en"
    for value in (EMAIL, PHONE, CARD):
        assert value not in result.text
    by_entity = {r.entity: result.text[r.new_start : r.new_end] for r in result.replacements}
    assert {t.EMAIL, t.PHONE, t.CREDIT_CARD} <= set(by_entity)
    assert re.fullmatch(r"[\w.+-]+@[\w-]+\.com", by_entity[t.EMAIL])  # same TLD
    assert re.fullmatch(r"415-\d{3}-\d{4}", by_entity[t.PHONE])  # same area code and shape
    card = by_entity[t.CREDIT_CARD]
    assert len(card) == len(CARD) and card[:4] == "4111" and luhn_valid(card.replace(" ", ""))
    assert all(r.operator == "pseudonym" for r in result.replacements if r.entity != t.DATE_TIME)
    _untouched_outside_replacements(ENGLISH, result.text, result.replacements)
    assert "Please mail" in result.text and result.text.endswith("Thanks.")


def test_chinese_resident_id_and_mobile_become_valid_surrogates(default: Desensitizer) -> None:
    result = default.desensitize(CHINESE)
    assert result.language == "zh"
    assert CN_ID not in result.text and CN_MOBILE not in result.text
    by_entity = {r.entity: result.text[r.new_start : r.new_end] for r in result.replacements}
    assert cn_resident_id_valid(by_entity[t.CN_RESIDENT_ID]) and by_entity[t.CN_RESIDENT_ID][:6] == CN_ID[:6]
    assert cn_mobile_valid(by_entity[t.CN_MOBILE]) and by_entity[t.CN_MOBILE][:3] == CN_MOBILE[:3]
    _untouched_outside_replacements(CHINESE, result.text, result.replacements)
    assert result.text.startswith("患者的身份证号是") and result.text.endswith("请及时回访。")


def test_pseudonyms_are_consistent_across_calls_and_instances(
    default: Desensitizer, ring: Keyring, analyzer: Analyzer, master_key: LocalMasterKey, tmp_path: Path
) -> None:
    first = default.desensitize(ENGLISH).text
    assert default.desensitize(ENGLISH).text == first
    again = Desensitizer(Policy.default(), keyring=ring, analyzer=analyzer)
    assert again.desensitize(f"Reply to {EMAIL} please.").text.split()[2] in first  # same value, same surrogate

    other_store = Store.open(f"sqlite:///{tmp_path}/other.db")
    try:
        other_ring = Keyring.initialize(other_store, master_key)
        other_ring.create("desensitize", "aead")
        other = Desensitizer(Policy.default(), keyring=other_ring, analyzer=analyzer).desensitize(ENGLISH).text
    finally:
        other_store.close()
    assert other != first  # another key, unrelated surrogates


def test_only_listed_entities_change_and_thresholds_apply(analyzer: Analyzer) -> None:
    listed = Desensitizer(Policy.from_yaml("entities: {EMAIL: redact}"), analyzer=analyzer)
    result = listed.desensitize(ENGLISH)
    assert EMAIL not in result.text and PHONE in result.text and CARD in result.text
    assert [r.entity for r in result.replacements] == [t.EMAIL]
    assert {f.entity for f in result.findings} == {t.EMAIL}  # only listed entities are looked for

    everything = Desensitizer(Policy.from_yaml("default: replace"), analyzer=analyzer).desensitize(ENGLISH)
    assert f"<{t.EMAIL}>" in everything.text and f"<{t.CREDIT_CARD}>" in everything.text

    strict = Desensitizer(
        Policy.from_yaml("entities: {PHONE: {operator: replace, threshold: 0.99}, EMAIL: replace}"), analyzer=analyzer
    ).desensitize(ENGLISH)
    assert PHONE in strict.text and EMAIL not in strict.text


def test_policy_allow_and_deny_lists() -> None:
    policy = Policy.from_yaml(
        "default: replace\nallow: ['ops@example.org']\ndeny: [{term: Project Falcon, entity: ORGANIZATION}]"
    )
    result = Desensitizer(policy).desensitize("Project Falcon status goes to ops@example.org and kim@example.com.")
    assert result.text == "<ORGANIZATION> status goes to ops@example.org and <EMAIL>."


def test_replacement_text_is_inserted_verbatim(analyzer: Analyzer) -> None:
    policy = Policy.from_yaml(r"entities: {EMAIL: {operator: replace, params: {text: '\1 $0 \g<0> {entity}'}}}")
    result = Desensitizer(policy, analyzer=analyzer).desensitize(f"a {EMAIL} b {EMAIL} c")
    assert result.text == r"a \1 $0 \g<0> EMAIL b \1 $0 \g<0> EMAIL c"
    _untouched_outside_replacements(f"a {EMAIL} b {EMAIL} c", result.text, result.replacements)


def test_keyed_operators_and_the_vault_fail_closed(analyzer: Analyzer) -> None:
    with pytest.raises(UsageError, match="keyed operators \\(pseudonym\\)"):
        Desensitizer(Policy.default(), analyzer=analyzer)
    with pytest.raises(UsageError, match="vault operator"):
        Desensitizer(Policy.from_yaml("entities: {PERSON: vault}"), analyzer=analyzer)
    plain = Desensitizer(Policy.from_yaml("entities: {EMAIL: mask}"), analyzer=analyzer)
    assert plain.desensitize(EMAIL).text == "****.***@*******.***"
    with pytest.raises(UsageError, match="not supported"):
        plain.desensitize(EMAIL, language="fr")


def test_dateshift_is_consistent_per_subject(ring: Keyring, analyzer: Analyzer) -> None:
    policy = Policy.from_yaml("entities: {DATE_TIME: dateshift}")
    shifter = Desensitizer(policy, keyring=ring, analyzer=analyzer)
    text = "Admitted on 2021-03-04, discharged on 2021-03-09."
    a1 = shifter.desensitize(text, subject="patient-1").text
    assert a1 == shifter.desensitize(text, subject="patient-1").text and "2021-03-04" not in a1
    with pytest.raises(UsageError, match="subject"):
        shifter.desensitize(text)
    assert repr(shifter.desensitize(text, subject="p")).startswith("Result(text=<")


def test_jsonl_file_streams_named_fields_atomically(default: Desensitizer, tmp_path: Path) -> None:
    source = tmp_path / "tickets.jsonl"
    records = [
        {"id": 1, "text": f"call {PHONE}", "note": f"mail {EMAIL}", "score": 3},
        {"id": 2, "text": CHINESE, "note": None},
    ]
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    seen: list[int] = []
    summary = desensitize_file(default, source, output, fields=["text"], progress=seen.append)
    assert sum(seen) == source.stat().st_size == summary.bytes_in and summary.lines == 3
    lines = output.read_text(encoding="utf-8").split("\n")
    out = [json.loads(line) for line in lines if line]
    assert lines[-2:] == ["", ""]  # the blank line is kept
    assert PHONE not in out[0]["text"] and out[0]["note"] == f"mail {EMAIL}"  # only --field text
    assert CN_ID not in out[1]["text"] and out[1]["id"] == 2 and out[1]["note"] is None
    assert summary.replaced[t.CN_RESIDENT_ID] == 1 and summary.format == "jsonl"

    every = desensitize_file(default, source, tmp_path / "all.jsonl")
    assert EMAIL not in (tmp_path / "all.jsonl").read_text(encoding="utf-8") and every.replaced[t.EMAIL] == 1
    with pytest.raises(UsageError, match="field 'score' is a int"):
        desensitize_file(default, source, tmp_path / "bad.jsonl", fields=["score"])
    assert not (tmp_path / "bad.jsonl").exists()


def test_text_file_keeps_line_endings(default: Desensitizer, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(f"first {EMAIL}\r\nsecond line\nthird {CN_MOBILE}".encode())
    output = tmp_path / "notes.out"
    summary = desensitize_file(default, source, output)
    data = output.read_bytes().decode()
    assert data.count("\r\n") == 1 and data.count("\n") == 2 and not data.endswith("\n")
    assert EMAIL not in data and "second line" in data and summary.format == "text"
    with pytest.raises(UsageError, match="is the input file"):
        desensitize_file(default, source, source)
    with pytest.raises(UsageError, match="is the input file"):
        desensitize_file(default, source, tmp_path / "." / "notes.txt")


class _Exploding(Analyzer):
    """An analyzer that fails on the third call, like a crash in the middle of a long file."""

    def __init__(self, inner: Analyzer) -> None:
        self.inner, self.calls = inner, 0

    def analyze(self, text: str, language: str | None = None, entities: object = None) -> list[Finding]:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("simulated crash")
        return self.inner.analyze(text, language, entities)  # type: ignore[arg-type]


def test_interrupted_file_leaves_old_output_intact(ring: Keyring, analyzer: Analyzer, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i} mail {EMAIL}\n" for i in range(5)), encoding="utf-8")
    output = tmp_path / "out.txt"
    output.write_text("previous result\n", encoding="utf-8")
    crashing = Desensitizer(Policy.default(), keyring=ring, analyzer=_Exploding(analyzer))
    with pytest.raises(RuntimeError, match="simulated"):
        desensitize_file(crashing, source, output)
    assert output.read_text(encoding="utf-8") == "previous result\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.txt")]  # no temporary file left

    # An operator that refuses a value (fpe finds no digits in an e-mail address) stops the file the same way,
    # with the line number and no value in the message.
    refusing = Desensitizer(Policy.from_yaml("entities: {EMAIL: fpe}"), keyring=ring, analyzer=analyzer)
    fresh = tmp_path / "fresh.txt"
    with pytest.raises(UsageError) as caught:
        desensitize_file(refusing, source, fresh)
    assert caught.value.message.startswith("line 1 of in.txt: fpe") and EMAIL not in caught.value.one_line()
    assert not fresh.exists()


def test_vault_operator_round_trip(ring: Keyring, sqlite_store: Store, analyzer: Analyzer, tmp_path: Path) -> None:
    vault = Vault(sqlite_store, ring, "clinic")
    policy = Policy.from_yaml("entities: {EMAIL: vault, CN_MOBILE: vault, CN_RESIDENT_ID: vault}")
    tokenizer = Desensitizer(policy, vault=vault, analyzer=analyzer)
    masked = tokenizer.desensitize(CHINESE + f" {EMAIL}")
    assert CN_ID not in masked.text and EMAIL not in masked.text
    tokens = TOKEN_PATTERN.findall(masked.text)
    assert {entity for entity, _ in tokens} == {t.EMAIL, t.CN_MOBILE, t.CN_RESIDENT_ID}
    assert tokenizer.desensitize(EMAIL).text in masked.text  # the same value, the same token
    assert vault.restore(masked.text, grant=GRANT, strict=True) == CHINESE + f" {EMAIL}"

    source, output = tmp_path / "masked.txt", tmp_path / "restored.txt"
    source.write_text(masked.text + "\n" + masked.text + "\n", encoding="utf-8")
    summary = restore_file(vault, source, output, grant=GRANT, strict=True)
    assert output.read_text(encoding="utf-8") == (CHINESE + f" {EMAIL}\n") * 2
    assert summary.restored == 6 and summary.unresolved == 0


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + (self.format(record) if record.exc_info else ""))


@pytest.fixture
def raw_logs() -> Iterator[_Capture]:
    """Every privet log record at DEBUG, unscrubbed: what call sites log, before the scrubbing net."""
    logger = logging.getLogger("privet")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    handler = _Capture()
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.handlers[:], logger.level, logger.propagate = saved


def test_no_detected_value_reaches_logs_or_errors(
    raw_logs: _Capture, ring: Keyring, default: Desensitizer, analyzer: Analyzer, tmp_path: Path
) -> None:
    values = [EMAIL, PHONE, CARD, CN_ID, CN_MOBILE]
    default.desensitize(ENGLISH)
    default.desensitize(CHINESE)
    source = tmp_path / "in.txt"
    source.write_text(ENGLISH + "\n" + CHINESE + "\n", encoding="utf-8")
    desensitize_file(default, source, tmp_path / "out.txt")
    errors: list[str] = []
    refusing = Desensitizer(
        Policy.from_yaml(
            "entities:\n  EMAIL: fpe\n  CN_RESIDENT_ID: {operator: generalize, params: {kind: date, fallback: error}}"
        ),
        keyring=ring,
        analyzer=analyzer,
    )
    for text in (ENGLISH, CHINESE):
        with pytest.raises(PrivetError) as caught:
            refusing.desensitize(text)
        errors.append(caught.value.one_line() + repr(caught.value))
    assert any("desensitized" in line for line in raw_logs.lines)  # DEBUG logging was on and was used
    for value in values:
        assert not any(value in line for line in raw_logs.lines), value
        assert not any(value in line for line in errors), value
