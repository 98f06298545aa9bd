"""Finding personal data never leaks it: with privet's logging at DEBUG, neither the log records nor the
findings' reprs contain the values the analyzer found.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from privet.desensitize import Analyzer, DenyTerm, default_analyzer
from privet.desensitize import types as t
from privet.desensitize.policy import Policy
from privet.desensitize.text import Desensitizer
from privet.log import configure

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
CARD_DIGITS = CARD.replace(" ", "")
CN_ID = "11010519491231002X"
NAME = "Jane Doe"
CN_NAME = "张三"
SECRET_PROJECT = "Project Zephyr"

TEXTS = {
    "en": f"My name is {NAME}. Write to {EMAIL} and charge card {CARD}. Budget: {SECRET_PROJECT}.",
    "zh": f"患者{CN_NAME}，身份证号{CN_ID}，邮箱{EMAIL}，负责{SECRET_PROJECT}。",
}
VALUES = (EMAIL, CARD, CARD_DIGITS, CN_ID, NAME, CN_NAME, SECRET_PROJECT, "Doe", "Zephyr")


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """privet's logging configured at DEBUG, with every record also captured by ``caplog``."""
    logger = logging.getLogger("privet")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    configure("DEBUG")
    logger.addHandler(caplog.handler)  # configure() stops propagation to the root logger caplog listens on
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="privet")
    try:
        yield caplog
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def _leaks(text: str) -> list[str]:
    return [v for v in VALUES if v in text]


def test_analysis_at_debug_logs_no_personal_data(debug_logs: pytest.LogCaptureFixture) -> None:
    analyzer = default_analyzer(deny=[DenyTerm(SECRET_PROJECT, t.ORGANIZATION)], allow=["nobody@example.org"])
    results = {lang: analyzer.analyze(text) for lang, text in TEXTS.items()}
    # The text engine on top of the analyzer logs at DEBUG: that is where a value could slip into a record.
    policy = Policy.from_yaml("entities: {EMAIL: redact, PERSON: redact}")
    desensitizer = Desensitizer(policy, analyzer=analyzer)
    outputs = [desensitizer.desensitize(text) for text in TEXTS.values()]
    assert all(EMAIL not in r.text for r in outputs)
    assert any(r.name.startswith("privet.desensitize") for r in debug_logs.records), "no DEBUG record captured"

    en_text, zh_text = TEXTS["en"], TEXTS["zh"]
    en = {(f.entity, en_text[f.start : f.end]) for f in results["en"]}
    zh = {(f.entity, zh_text[f.start : f.end]) for f in results["zh"]}
    # The values were found, so the test below is about real findings.
    assert {(t.PERSON, NAME), (t.EMAIL, EMAIL), (t.CREDIT_CARD, CARD), (t.ORGANIZATION, SECRET_PROJECT)} <= en
    assert {(t.CN_RESIDENT_ID, CN_ID), (t.EMAIL, EMAIL), (t.ORGANIZATION, SECRET_PROJECT)} <= zh
    assert (t.PERSON, CN_NAME) in zh

    for record in debug_logs.records:
        assert _leaks(record.getMessage()) == [], record.name
        assert _leaks(repr(record.args)) == [], record.name
    assert _leaks(debug_logs.text) == []

    for result in outputs:
        assert _leaks(repr(result)) == []
        assert _leaks(repr(result.replacements)) == []
    for findings in results.values():
        assert _leaks(repr(findings)) == []
        for finding in findings:
            assert _leaks(repr(finding)) == []
            assert _leaks(str(finding)) == []


def test_analyzer_repr_holds_no_deny_or_allow_terms() -> None:
    analyzer = Analyzer(deny=[DenyTerm(SECRET_PROJECT, t.ORGANIZATION)], allow=[EMAIL])
    assert _leaks(repr(analyzer)) == []
    assert _leaks(str(analyzer)) == []
