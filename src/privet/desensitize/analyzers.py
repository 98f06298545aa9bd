"""The analyzer privet uses by default: every built-in pattern and dictionary recognizer, NER optional."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

from .engine import Analyzer, DenyTerm
from .recognizers import en, zh
from .recognizers.address import AddressRecognizer
from .recognizers.names import EnglishEntityRecognizer
from .types import Recognizer


@cache
def _builtin_recognizers() -> tuple[Recognizer, ...]:
    return (
        EnglishEntityRecognizer(),
        AddressRecognizer(),
        *zh.RECOGNIZERS,
    )


def default_analyzer(
    *,
    allow: Iterable[str] = (),
    deny: Iterable[DenyTerm] = (),
    thresholds: Mapping[str, float] | None = None,
    extra: Iterable[Recognizer] = (),
) -> Analyzer:
    """An analyzer with all built-in recognizers (English and Chinese) plus ``extra`` ones (e.g. an NER plug-in)."""
    return Analyzer(
        (*en.PATTERNS, *zh.PATTERNS),
        (*_builtin_recognizers(), *extra),
        allow=allow,
        deny=deny,
        thresholds=thresholds,
    )
