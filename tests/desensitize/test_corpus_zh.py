"""The generated Chinese corpus: well-formed, deterministic, with distractors, and the accuracy bar."""

from __future__ import annotations

import collections
import json

import pytest

from privet.desensitize import types as t
from privet.desensitize.corpus_zh import TEMPLATES, generate
from privet.desensitize.engine import Analyzer
from privet.desensitize.evaluate import LabelledText, Span, score
from privet.desensitize.recognizers import en, zh
from privet.desensitize.validators import cn_credit_code_valid, cn_mobile_valid, cn_resident_id_valid, luhn_valid

CHECKED = (t.CN_RESIDENT_ID, t.CN_MOBILE, t.CN_BANK_CARD, t.CN_CREDIT_CODE, t.EMAIL)


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return generate(1200, seed=11)


def test_record_format_and_spans(corpus: list[dict]) -> None:
    assert len(corpus) == 1200
    known = {v for k, v in vars(t).items() if k.isupper() and isinstance(v, str)}
    for r in corpus:
        assert set(r) == {"full_text", "masked", "spans", "template_id", "metadata"}
        text = r["full_text"]
        last = -1
        for s in r["spans"]:
            assert s["entity_type"] in known
            assert text[s["start_position"] : s["end_position"]] == s["entity_value"]
            assert s["start_position"] >= last  # sorted, non-overlapping
            last = s["end_position"]
        for d in r["metadata"]["distractors"]:
            assert not any(d["start"] < s["end_position"] and s["start_position"] < d["end"] for s in r["spans"])
    json.dumps(corpus, ensure_ascii=False)


def test_deterministic() -> None:
    assert generate(50, seed=3) == generate(50, seed=3)
    assert generate(50, seed=3) != generate(50, seed=4)


def test_variety(corpus: list[dict]) -> None:
    assert len(TEMPLATES) >= 40
    assert {r["template_id"] for r in corpus} == set(range(len(TEMPLATES)))
    assert len({r["metadata"]["domain"] for r in corpus}) >= 5
    kinds = collections.Counter(d["kind"] for r in corpus for d in r["metadata"]["distractors"])
    for kind in ("order", "ts", "tracking", "invoice", "bad_id", "bad_mobile", "bad_card", "amount"):
        assert kinds[kind] >= 20, kind


def test_values_are_valid_and_distractors_are_not(corpus: list[dict]) -> None:
    for r in corpus:
        for s in r["spans"]:
            value = s["entity_value"]
            if s["entity_type"] == t.CN_RESIDENT_ID:
                assert cn_resident_id_valid(value)
            elif s["entity_type"] == t.CN_MOBILE:
                assert cn_mobile_valid(value)
            elif s["entity_type"] == t.CN_BANK_CARD:
                assert luhn_valid(value.replace(" ", ""))
            elif s["entity_type"] == t.CN_CREDIT_CODE:
                assert cn_credit_code_valid(value)
        text = r["full_text"]
        for d in r["metadata"]["distractors"]:
            value = text[d["start"] : d["end"]]
            if d["kind"] == "bad_id":
                assert len(value) == 18 and not cn_resident_id_valid(value)
            elif d["kind"] == "bad_mobile":
                assert len(value) == 11 and not cn_mobile_valid(value)
            elif d["kind"] == "bad_card":
                assert len(value) == 16 and not luhn_valid(value)


def test_accuracy_through_engine(corpus: list[dict]) -> None:
    analyzer = Analyzer(patterns=(*en.PATTERNS, *zh.PATTERNS), recognizers=zh.RECOGNIZERS)
    docs = [
        LabelledText(
            r["full_text"],
            tuple(Span(s["entity_type"], s["start_position"], s["end_position"]) for s in r["spans"]),
        )
        for r in corpus
    ]
    predictions = [analyzer.analyze(r["full_text"], language="zh") for r in corpus]
    report = score(docs, predictions)
    for entity in CHECKED:
        assert report.per_entity[entity].f1 >= 0.99, (entity, report.per_entity[entity].as_dict())
    # Nothing of a checksummed or context-gated Chinese type may land on a distractor.
    ours = {p.entity for p in zh.PATTERNS}
    for r, found in zip(corpus, predictions, strict=True):
        for d in r["metadata"]["distractors"]:
            hits = [f.entity for f in found if f.entity in ours and f.start < d["end"] and d["start"] < f.end]
            assert hits == [], (d["kind"], hits)
