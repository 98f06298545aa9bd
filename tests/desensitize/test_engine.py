"""The analyzer engine: the Hyperscan-prefiltered scanner, overlap resolution, context words, thresholds,
allow and deny lists, the entity filter and per-document language detection.

The tests build small analyzers from hand-written patterns and stub recognizers, so they run in
milliseconds and do not depend on the built-in recognizers, which are tuned separately.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privet.desensitize import Analyzer, DenyTerm, detect_language
from privet.desensitize.engine import resolve_overlaps
from privet.desensitize.recognizers import en
from privet.desensitize.scanner import Scanner
from privet.desensitize.types import Finding, Pattern, Recognizer
from privet.errors import UsageError

EMAIL = Pattern("email", "EMAIL", r"[a-z]+@[a-z]+\.[a-z]{2,}", 0.9, flags=re.I)
NUMBER = Pattern("number", "NUMBER", r"(?<![0-9])\d{4}(?![0-9])", 0.4)


class StubRecognizer(Recognizer):
    """Returns fixed findings and counts its calls."""

    name = "stub"

    def __init__(self, findings: Sequence[Finding] = (), entities: tuple[str, ...] = ("PERSON",)) -> None:
        self._findings = list(findings)
        self.entities = entities
        self.calls = 0

    def find(self, text: str, language: str) -> list[Finding]:
        self.calls += 1
        return list(self._findings)


def spans(text: str, findings: Sequence[Finding]) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in findings]


# -- scanner -------------------------------------------------------------------------------------------------


class CountingRegex:
    """Stands in for a compiled pattern and counts how often the scanner runs it."""

    def __init__(self, compiled: re.Pattern[str]) -> None:
        self._compiled = compiled
        self.runs = 0

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        self.runs += 1
        return self._compiled.finditer(text)


def test_pattern_that_does_not_occur_is_not_run() -> None:
    validated: list[str] = []

    def validate(value: str) -> bool:
        validated.append(value)
        return True

    rare = Pattern("rare", "RARE", r"zq\d{3}", 0.5, validate=validate)
    analyzer = Analyzer([rare, EMAIL])
    spy = CountingRegex(analyzer._scanner._compiled[0])
    analyzer._scanner._compiled[0] = spy

    assert analyzer._scanner.candidates("write to ann@example.com") == [1]
    assert spans("write to ann@example.com", analyzer.analyze("write to ann@example.com")) == [
        ("EMAIL", "ann@example.com")
    ]
    assert spy.runs == 0
    assert validated == []

    text = "codes zq123 and zq456"
    assert spans(text, analyzer.analyze(text)) == [("RARE", "zq123"), ("RARE", "zq456")]
    assert spy.runs == 1
    assert validated == ["zq123", "zq456"]


def test_validator_rejection_drops_the_match() -> None:
    even = Pattern("even", "EVEN", r"\b\d+\b", 0.5, validate=lambda v: int(v) % 2 == 0)
    text = "1 2 3 44 57"
    assert spans(text, Analyzer([even]).analyze(text)) == [("EVEN", "2"), ("EVEN", "44")]


def test_group_selects_the_value() -> None:
    keyed = Pattern("keyed", "KEY", r"key=(\w+)", 0.5, group=1)
    text = "a key=s3cr3t here"
    assert spans(text, Analyzer([keyed]).analyze(text)) == [("KEY", "s3cr3t")]


def test_empty_scanner_and_empty_text() -> None:
    assert Scanner([]).candidates("anything at all") == []
    assert Analyzer().analyze("anything at all") == []
    assert Analyzer([EMAIL]).analyze("") == []


# Patterns with the constructs the built-in recognizers use: look-arounds, word boundaries, alternation,
# case-insensitivity, Unicode classes, and a back-reference (which Hyperscan can only approximate).
_PROPERTY_PATTERNS = (
    Pattern("dash_number", "A", r"(?<![0-9])\d{3}-\d{2,4}(?![0-9])", 0.5),
    Pattern("word", "B", r"\bab+c\b", 0.5, flags=re.I),
    Pattern("email", "C", r"(?<![\w.])[\w.]+@[a-z]+\.[a-z]{2,}(?![\w-])", 0.5),
    Pattern("unicode_word", "D", r"\w*é\w+", 0.5),
    Pattern("alternation", "E", r"(?:foo|bar)\s+\d{2,}", 0.5, flags=re.I),
    Pattern("backreference", "F", r"(\d)\1{2}", 0.5),
    Pattern("cjk", "G", "[\u4e00-\u9fff]{2}\\d", 0.5),
    Pattern("anchored", "H", r"^\d+$", 0.5, flags=re.MULTILINE),
)
_PROPERTY_SCANNER = Scanner(_PROPERTY_PATTERNS)
_ALPHABET = "abcABCfoFOrR0123456789 -.@_\né中文٣"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_prefilter_reports_every_pattern_that_matches(text: str) -> None:
    candidates = set(_PROPERTY_SCANNER.candidates(text))
    expected = []
    for index, pattern in enumerate(_PROPERTY_PATTERNS):
        found = [m.span() for m in re.finditer(pattern.regex, text, pattern.flags)]
        if found:
            assert index in candidates, (pattern.name, text)
        expected.extend((index, span) for span in found)
    reported = [(index, m.span()) for index, m in _PROPERTY_SCANNER.matches(text)]
    assert sorted(reported) == sorted(expected)


@pytest.fixture(scope="module")
def en_analyzer() -> Analyzer:
    """The built-in English patterns plus the property-test ones (compiling them takes about two seconds)."""
    return Analyzer((*_PROPERTY_PATTERNS, *en.PATTERNS))


_FRAGMENTS = (
    "jane.doe@example.com",
    "https://example.org/a?b=1",
    "www.example.co.uk",
    "192.168.0.1",
    "2001:db8::1",
    "4111 1111 1111 1111",
    "GB82WEST12345698765432",
    "536-90-4321",
    "+1 202-555-0147",
    "(212) 555-0100",
    "2021-03-15T10:20:30Z",
    "12/31/1999",
    "January 2, 2020",
    "Monday",
    "10:45 pm",
    "aged 42",
    "zip 94103",
    "passport X1234567",
    "license D1234567",
    "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
    "0x742d35Cc6634C0532925a3b844Bc454e4438f44e",
    "in 1999",
    "北京",
    "é",
    "x",
    "7",
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_FRAGMENTS), st.sampled_from(" ,.;:-/\n()x7")), max_size=8))
def test_prefilter_is_a_superset_for_the_builtin_english_patterns(
    en_analyzer: Analyzer, parts: list[tuple[str, str]]
) -> None:
    text = "".join(a + b for a, b in parts)
    candidates = set(en_analyzer._scanner.candidates(text))
    for index, pattern in enumerate(en_analyzer.patterns):
        if re.search(pattern.regex, text, pattern.flags):
            assert index in candidates, (pattern.name, text)


def test_concurrent_analysis_matches_serial(en_analyzer: Analyzer) -> None:
    analyzer = en_analyzer
    texts = [
        f"Mail {i}: user{i}@example.com, call +1 202-555-01{i:02d} on 2021-03-{i % 28 + 1:02d}; abc {i:03d}-{i:02d}"
        for i in range(60)
    ] + ["中文123 é-word foo 123", "nothing here", "", "111 222 abbbc"]
    serial = [analyzer.analyze(t, language="en") for t in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda t: analyzer.analyze(t, language="en"), texts * 8))
    assert concurrent == serial * 8


def test_invalid_regex_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'broken'"):
        Scanner([Pattern("broken", "X", r"(unclosed", 0.5)])
    with pytest.raises(UsageError):
        Analyzer([EMAIL, Pattern("broken", "X", r"a{2,1}", 0.5)])


def test_regex_hyperscan_cannot_compile_is_a_usage_error() -> None:
    # Valid for Python's re, unsupported by Hyperscan.
    with pytest.raises(UsageError, match="multi-pattern"):
        Scanner([Pattern("named_char", "X", r"\N{LATIN SMALL LETTER A}", 0.5)])


def test_verbose_flag_is_honoured_or_refused() -> None:
    # Hyperscan has no VERBOSE mode: compiling "a b" literally would make the prefilter miss what re matches.
    pattern = Pattern("verbose", "X", r"a b  # the letters a and b", 0.5, flags=re.VERBOSE)
    try:
        analyzer = Analyzer([pattern])
    except UsageError:
        return  # refusing an unsupported flag is acceptable too
    assert spans("xx ab yy", analyzer.analyze("xx ab yy")) == [("X", "ab")]


# -- overlap resolution ----------------------------------------------------------------------------------------


def f(entity: str, start: int, end: int, score: float) -> Finding:
    return Finding(entity, start, end, score, "test")


def test_higher_score_wins_an_overlap() -> None:
    low, high = f("A", 0, 10, 0.5), f("B", 5, 8, 0.9)
    assert resolve_overlaps([low, high]) == [high]


def test_longer_span_wins_a_tie() -> None:
    short, long_ = f("A", 2, 6, 0.7), f("B", 0, 10, 0.7)
    assert resolve_overlaps([short, long_]) == [long_]


def test_earlier_span_wins_a_full_tie() -> None:
    first, second = f("A", 0, 5, 0.7), f("B", 3, 8, 0.7)
    assert resolve_overlaps([second, first]) == [first]


def test_adjacent_spans_do_not_overlap_and_come_in_text_order() -> None:
    a, b, c = f("A", 10, 15, 0.3), f("B", 5, 10, 0.9), f("C", 0, 5, 0.5)
    assert resolve_overlaps([a, b, c]) == [c, b, a]


def test_analyzer_resolves_overlaps_between_patterns_and_recognizers() -> None:
    text = "call 5551234 now"
    stub = StubRecognizer([f("PERSON", 0, 11, 0.3), f("PERSON", 13, 16, 0.95)])
    digits = Pattern("digits", "PHONE", r"\d{7}", 0.8)
    assert spans(text, Analyzer([digits], [stub]).analyze(text)) == [("PHONE", "5551234"), ("PERSON", "now")]


_finding = st.builds(
    lambda start, length, score, entity: Finding(entity, start, start + length, score, "h"),
    st.integers(0, 60),
    st.integers(1, 15),
    st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 1.0]),
    st.sampled_from(["A", "B", "C"]),
)


def _rank(x: Finding) -> tuple[float, int, int]:
    return (-x.score, -x.length, x.start)


@settings(max_examples=300, deadline=None)
@given(st.lists(_finding, max_size=25))
def test_resolved_findings_never_overlap(findings: list[Finding]) -> None:
    kept = resolve_overlaps(findings)
    assert all(k in findings for k in kept)
    assert [k.start for k in kept] == sorted(k.start for k in kept)
    assert all(a.end <= b.start for a, b in itertools.pairwise(kept))
    # Nothing is dropped without cause: each dropped finding overlaps a kept one that ranks at least as high.
    for dropped in findings:
        if dropped in kept:
            continue
        assert any(k.start < dropped.end and dropped.start < k.end and _rank(k) <= _rank(dropped) for k in kept)


# -- context words -------------------------------------------------------------------------------------------------


def _pin(**kwargs: object) -> Pattern:
    base = {"score": 0.4, "context": ("pin",), "context_boost": 0.3, "context_window": 10}
    return Pattern("pin", "PIN", r"(?<![0-9])\d{4}(?![0-9])", **(base | kwargs))  # type: ignore[arg-type]


def test_context_word_before_or_after_boosts_the_score() -> None:
    analyzer = Analyzer([_pin()])
    assert [x.score for x in analyzer.analyze("my PIN: 1234")] == [0.7]
    assert [x.score for x in analyzer.analyze("1234 is my pin")] == [0.7]
    assert [x.score for x in analyzer.analyze("my code: 1234")] == [0.4]


def test_context_word_outside_the_window_does_not_count() -> None:
    analyzer = Analyzer([_pin()])
    assert [x.score for x in analyzer.analyze("pin" + " " * 20 + "1234")] == [0.4]


def test_boost_is_capped_at_one() -> None:
    analyzer = Analyzer([_pin(score=0.9)])
    assert [x.score for x in analyzer.analyze("pin 1234")] == [1.0]


def test_context_required_drops_bare_matches() -> None:
    analyzer = Analyzer([_pin(context_required=True)])
    assert analyzer.analyze("order 1234 shipped") == []
    assert spans("pin 1234", analyzer.analyze("pin 1234")) == [("PIN", "1234")]


# -- thresholds ----------------------------------------------------------------------------------------------------

_HIGH = Pattern("high", "HIGH", r"\bhh\b", 0.6)
_LOW = Pattern("low", "LOW", r"\bll\b", 0.3)
_TEXT = "hh and ll"


@pytest.mark.parametrize(
    ("thresholds", "expected"),
    [
        (None, ["HIGH", "LOW"]),
        ({"*": 0.4}, ["HIGH"]),
        ({"*": 0.4, "LOW": 0.3}, ["HIGH", "LOW"]),
        ({"HIGH": 0.7}, ["LOW"]),
        ({"*": 0.7, "HIGH": 0.6}, ["HIGH"]),
        ({"*": 1.0}, []),
    ],
)
def test_thresholds_per_entity_and_default(thresholds: dict[str, float] | None, expected: list[str]) -> None:
    found = Analyzer([_HIGH, _LOW], thresholds=thresholds).analyze(_TEXT)
    assert [x.entity for x in found] == expected


def test_finding_below_threshold_does_not_hide_an_overlapping_one() -> None:
    text = "ab12"
    strong = Pattern("strong", "STRONG", r"ab12", 0.9)
    weak = Pattern("weak", "WEAK", r"12", 0.5)
    assert spans(text, Analyzer([strong, weak], thresholds={"STRONG": 0.95}).analyze(text)) == [("WEAK", "12")]


# -- allow and deny lists ------------------------------------------------------------------------------------------


def test_allow_list_is_exact_and_case_insensitive() -> None:
    analyzer = Analyzer([EMAIL], allow=["  Support@Example.COM ", ""])
    text = "write to support@example.com or SUPPORT@EXAMPLE.COM, not jane@example.com or support@example.co"
    assert spans(text, analyzer.analyze(text)) == [("EMAIL", "jane@example.com"), ("EMAIL", "support@example.co")]


def test_deny_term_is_always_found() -> None:
    analyzer = Analyzer(deny=[DenyTerm("Project Zephyr", "ORGANIZATION"), DenyTerm("张三丰", "PERSON")])
    en_text = "Budget for Project Zephyr approved."
    zh_text = "张三丰今天来了。"
    assert spans(en_text, analyzer.analyze(en_text)) == [("ORGANIZATION", "Project Zephyr")]
    assert spans(zh_text, analyzer.analyze(zh_text)) == [("PERSON", "张三丰")]
    assert [x.score for x in analyzer.analyze(en_text)] == [1.0]
    assert analyzer.analyze("project zephyr, in lower case") == []


def test_deny_term_metacharacters_are_literal() -> None:
    analyzer = Analyzer(deny=[DenyTerm("A.B (C++)*", "ORGANIZATION"), DenyTerm("x|y", "PERSON")])
    assert analyzer.analyze("AxB (CC)") == []
    assert analyzer.analyze("x and y") == []
    text = "we met A.B (C++)* and x|y"
    assert spans(text, analyzer.analyze(text)) == [("ORGANIZATION", "A.B (C++)*"), ("PERSON", "x|y")]


def test_deny_term_beats_an_overlapping_pattern() -> None:
    analyzer = Analyzer([Pattern("word", "WORD", r"[A-Z][a-z]+ [A-Z][a-z]+", 0.95)], deny=[DenyTerm("Acme", "ORG")])
    text = "Acme Widgets"
    assert spans(text, analyzer.analyze(text)) == [("ORG", "Acme")]


# -- entity filter and language ---------------------------------------------------------------------------------


def test_entity_filter_limits_patterns_and_skips_recognizers() -> None:
    stub = StubRecognizer([f("PERSON", 0, 3, 0.9)])
    analyzer = Analyzer([EMAIL, NUMBER], [stub])
    text = "Ann: ann@example.com 1234"
    assert spans(text, analyzer.analyze(text, entities=["EMAIL"])) == [("EMAIL", "ann@example.com")]
    assert stub.calls == 0
    assert spans(text, analyzer.analyze(text, entities=["PERSON", "NUMBER"])) == [
        ("PERSON", "Ann"),
        ("NUMBER", "1234"),
    ]
    assert stub.calls == 1
    assert analyzer.analyze(text, entities=[]) == []
    assert analyzer.entities == frozenset({"EMAIL", "NUMBER", "PERSON"})


def test_recognizer_findings_of_unwanted_entities_are_dropped() -> None:
    stub = StubRecognizer([f("PERSON", 0, 3, 0.9), f("LOCATION", 4, 8, 0.9)], entities=("PERSON", "LOCATION"))
    assert [x.entity for x in Analyzer([], [stub]).analyze("Ann Oslo", entities=["LOCATION"])] == ["LOCATION"]


def test_unknown_language_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        Analyzer([EMAIL]).analyze("bonjour", language="fr")
    assert "en" in info.value.hint
    assert "zh" in info.value.hint


def test_patterns_and_recognizers_run_only_for_their_languages() -> None:
    zh_only = Pattern("zh_digits", "ZH", r"\d{4}", 0.5, languages=("zh",))
    stub = StubRecognizer([f("PERSON", 0, 2, 0.9)])
    stub.languages = ("en",)
    analyzer = Analyzer([zh_only], [stub])
    assert [x.entity for x in analyzer.analyze("Jo 1234")] == ["PERSON"]
    assert [x.entity for x in analyzer.analyze("Jo 1234", language="zh")] == ["ZH"]
    assert [x.entity for x in analyzer.analyze("张三的号码1234")] == ["ZH"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Please send the report to the finance team by Friday.", "en"),
        ("你好，我叫张三，住在北京市海淀区。", "zh"),
        ("请联系我：zhangsan@example.com 谢谢", "zh"),
        ("The meeting with our partners in 北京 went well today", "en"),
        ("", "en"),
        ("12345 !!! ---", "en"),
    ],
)
def test_language_detection(text: str, language: str) -> None:
    assert detect_language(text) == language
