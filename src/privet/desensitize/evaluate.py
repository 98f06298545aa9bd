"""Accuracy of an analyzer on a labelled corpus: precision, recall, F1 and F2 per entity type and overall.

The matching rule is fixed so figures compare across runs and tools: a predicted span matches a gold
span when their types are equal under :data:`GOLD_TYPES` / :data:`PREDICTED_TYPES` and their character
intersection-over-union is at least :data:`IOU_THRESHOLD`. Matching is one-to-one (each prediction
counts for at least one gold span at most, best IoU first). Predictions whose type the corpus never
labels are not scored (a corpus without IBANs cannot say whether an IBAN finding is right); they are
counted in ``unscored``. Type-agnostic recall counts gold spans matched by a prediction of any type.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from privet.errors import FormatError, NotFoundError

from . import types as t
from .types import Finding

IOU_THRESHOLD = 0.7

# presidio-research entity names -> privet's.
GOLD_TYPES: dict[str, str] = {
    "PERSON": t.PERSON,
    "STREET_ADDRESS": t.STREET_ADDRESS,
    "GPE": t.LOCATION,
    "LOCATION": t.LOCATION,
    "ORGANIZATION": t.ORGANIZATION,
    "CREDIT_CARD": t.CREDIT_CARD,
    "DATE_TIME": t.DATE_TIME,
    "TITLE": t.TITLE,
    "PHONE_NUMBER": t.PHONE,
    "AGE": t.AGE,
    "NRP": t.NRP,
    "EMAIL_ADDRESS": t.EMAIL,
    "ZIP_CODE": t.ZIP_CODE,
    "DOMAIN_NAME": t.DOMAIN,
    "URL": t.DOMAIN,
    "IBAN_CODE": t.IBAN,
    "US_SSN": t.US_SSN,
    "IP_ADDRESS": t.IP_ADDRESS,
    "US_DRIVER_LICENSE": t.DRIVER_LICENSE,
    "US_PASSPORT": t.PASSPORT,
    "CRYPTO": t.CRYPTO_WALLET,
}

# privet types compared as another: a URL finding answers a domain-name label, a Chinese mobile a phone label.
PREDICTED_TYPES: dict[str, str] = {t.URL: t.DOMAIN}


@dataclass(frozen=True, slots=True)
class Span:
    entity: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class LabelledText:
    text: str
    spans: tuple[Span, ...]


def load_labelled(path: str | Path) -> list[LabelledText]:
    """Read a corpus in the presidio-research JSON format (a list of records with ``full_text`` and ``spans``)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"corpus {path} does not exist", "Pass the path of a presidio-research JSON file.")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        return [
            LabelledText(
                r["full_text"],
                tuple(
                    Span(GOLD_TYPES.get(s["entity_type"], s["entity_type"]), s["start_position"], s["end_position"])
                    for s in r["spans"]
                ),
            )
            for r in records
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(
            f"corpus {path} is not in the presidio-research format ({type(exc).__name__})",
            "Each record needs full_text and spans with entity_type, start_position, end_position.",
        ) from exc


def _iou(a_start: int, a_end: int, b_start: int, b_end: int) -> float:
    inter = min(a_end, b_end) - max(a_start, b_start)
    if inter <= 0:
        return 0.0
    return inter / (max(a_end, b_end) - min(a_start, b_start))


def _fbeta(precision: float, recall: float, beta: float) -> float:
    if precision == 0.0 and recall == 0.0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * precision * recall / (b2 * precision + recall)


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return _fbeta(self.precision, self.recall, 1.0)

    @property
    def f2(self) -> float:
        return _fbeta(self.precision, self.recall, 2.0)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "f2": round(self.f2, 4),
        }


@dataclass
class Report:
    per_entity: dict[str, Score] = field(default_factory=dict)
    overall: Score = field(default_factory=Score)
    agnostic_matched: int = 0
    gold_total: int = 0
    unscored: Counter[str] = field(default_factory=Counter)
    documents: int = 0
    characters: int = 0

    @property
    def agnostic_recall(self) -> float:
        return self.agnostic_matched / self.gold_total if self.gold_total else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "documents": self.documents,
            "characters": self.characters,
            "iou_threshold": IOU_THRESHOLD,
            "overall": self.overall.as_dict(),
            "type_agnostic_recall": round(self.agnostic_recall, 4),
            "per_entity": {k: v.as_dict() for k, v in sorted(self.per_entity.items())},
            "unscored_predictions": dict(sorted(self.unscored.items())),
        }


def _match(gold: Sequence[Span], predicted: Sequence[Span], typed: bool) -> list[tuple[int, int]]:
    pairs = []
    for gi, g in enumerate(gold):
        for pi, p in enumerate(predicted):
            if typed and g.entity != p.entity:
                continue
            iou = _iou(g.start, g.end, p.start, p.end)
            if iou >= IOU_THRESHOLD:
                pairs.append((iou, gi, pi))
    pairs.sort(reverse=True)
    used_g: set[int] = set()
    used_p: set[int] = set()
    matched = []
    for _, gi, pi in pairs:
        if gi in used_g or pi in used_p:
            continue
        used_g.add(gi)
        used_p.add(pi)
        matched.append((gi, pi))
    return matched


def score(corpus: Sequence[LabelledText], predictions: Sequence[Sequence[Finding]]) -> Report:
    """Score predictions (one list of findings per document) against the corpus's gold spans."""
    if len(corpus) != len(predictions):
        raise ValueError("one prediction list per document is required")
    labelled_types = {s.entity for doc in corpus for s in doc.spans}
    report = Report(documents=len(corpus), characters=sum(len(d.text) for d in corpus))
    for doc, found in zip(corpus, predictions, strict=True):
        predicted = []
        everything = [Span(f.entity, f.start, f.end) for f in found]
        for f in found:
            entity = PREDICTED_TYPES.get(f.entity, f.entity)
            if entity in labelled_types:
                predicted.append(Span(entity, f.start, f.end))
            else:
                report.unscored[entity] += 1
        matched = _match(doc.spans, predicted, typed=True)
        matched_g = {g for g, _ in matched}
        matched_p = {p for _, p in matched}
        for gi, g in enumerate(doc.spans):
            s = report.per_entity.setdefault(g.entity, Score())
            if gi in matched_g:
                s.tp += 1
            else:
                s.fn += 1
        for pi, p in enumerate(predicted):
            if pi not in matched_p:
                report.per_entity.setdefault(p.entity, Score()).fp += 1
        report.gold_total += len(doc.spans)
        report.agnostic_matched += len(_match(doc.spans, everything, typed=False))
    for s in report.per_entity.values():
        report.overall.tp += s.tp
        report.overall.fp += s.fp
        report.overall.fn += s.fn
    return report


def evaluate(
    analyze: Callable[[str], list[Finding]], corpus: Iterable[LabelledText], progress: Callable[[], None] | None = None
) -> Report:
    """Run ``analyze`` on every document and score it."""
    docs = list(corpus)
    predictions = []
    for doc in docs:
        predictions.append(analyze(doc.text))
        if progress is not None:
            progress()
    return score(docs, predictions)
