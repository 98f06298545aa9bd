"""The analyzer: runs every recognizer over a document and resolves overlaps into one set of findings."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from privet.errors import UsageError

from .language import LANGUAGES, detect_language
from .scanner import Scanner
from .types import Finding, Pattern, Recognizer


@dataclass(frozen=True, slots=True)
class DenyTerm:
    """A literal that is always reported as ``entity`` (for names a policy knows in advance)."""

    term: str
    entity: str


def context_regex(words: Sequence[str]) -> re.Pattern[str]:
    """Context words match whole words ("age" is not in "messages"); a word written with a trailing space or
    punctuation ("yo ", "ss#") is matched as written."""
    # Latin letters and digits bound a word; Han characters do not ("加我QQ：", "护照号码" both count).
    parts = [
        (r"(?<![A-Za-z0-9])" if w[:1].isascii() and w[:1].isalnum() else "")
        + re.escape(w)
        + (r"(?![A-Za-z0-9])" if w[-1:].isascii() and w[-1:].isalnum() else "")
        for w in words
    ]
    return re.compile("|".join(parts))


def _has_context(lower: str, start: int, end: int, context: re.Pattern[str], window: int) -> bool:
    return bool(
        context.search(lower, max(0, start - window), start)
        or context.search(lower, end, min(len(lower), end + window))
    )


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the best non-overlapping findings: higher score first, then the longer span, then the earlier.

    Returned in text order.
    """
    ranked = sorted(findings, key=lambda f: (-f.score, -f.length, f.start))
    starts: list[int] = []
    kept: list[Finding] = []
    for finding in ranked:
        i = bisect.bisect_left(starts, finding.start)
        if i > 0 and kept[i - 1].end > finding.start:
            continue
        if i < len(kept) and kept[i].start < finding.end:
            continue
        starts.insert(i, finding.start)
        kept.insert(i, finding)
    return kept


class Analyzer:
    """Finds personal data in text.

    ``patterns`` run through one multi-pattern scan; ``recognizers`` (dictionaries, NER plug-ins) run
    after it. ``allow`` holds values never reported (matched exactly after trimming); ``deny`` holds
    literals always reported. ``thresholds`` maps an entity (or ``"*"``) to the minimum score kept.
    """

    def __init__(
        self,
        patterns: Sequence[Pattern] = (),
        recognizers: Sequence[Recognizer] = (),
        *,
        allow: Iterable[str] = (),
        deny: Iterable[DenyTerm] = (),
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        deny_patterns = [
            Pattern(name=f"deny:{t.entity}", entity=t.entity, regex=re.escape(t.term), score=1.0) for t in deny
        ]
        self.patterns = (*patterns, *deny_patterns)
        self.recognizers = tuple(recognizers)
        self._scanner = Scanner(self.patterns)
        self._allow = frozenset(a.strip().casefold() for a in allow if a.strip())
        self._thresholds = dict(thresholds or {})
        self._contexts = {i: context_regex(p.context) for i, p in enumerate(self.patterns) if p.context}
        self._by_language = {
            lang: frozenset(i for i, p in enumerate(self.patterns) if lang in p.languages) for lang in LANGUAGES
        }
        self.entities = frozenset(p.entity for p in self.patterns) | frozenset(
            e for r in self.recognizers for e in r.entities
        )

    def _threshold(self, entity: str) -> float:
        return self._thresholds.get(entity, self._thresholds.get("*", 0.0))

    def _pattern_findings(self, text: str, language: str, entities: frozenset[str] | None) -> list[Finding]:
        allowed = self._by_language[language]
        if entities is not None:
            allowed = frozenset(i for i in allowed if self.patterns[i].entity in entities)
        lower: str | None = None
        out: list[Finding] = []
        for index, match in self._scanner.matches(text, allowed):
            pattern = self.patterns[index]
            start, end = match.span(pattern.group)
            if start < 0 or start == end:
                continue
            if pattern.validate is not None and not pattern.validate(match.group(pattern.group)):
                continue
            score = pattern.score
            if pattern.context:
                if lower is None:
                    lower = text.lower()
                if _has_context(lower, start, end, self._contexts[index], pattern.context_window):
                    score = min(1.0, score + pattern.context_boost)
                elif pattern.context_required:
                    continue
            out.append(Finding(pattern.entity, start, end, round(score, 4), pattern.name))
        return out

    def analyze(
        self,
        text: str,
        language: str | None = None,
        entities: Iterable[str] | None = None,
    ) -> list[Finding]:
        """Findings in ``text``, non-overlapping and in text order.

        ``language`` is ``"en"`` or ``"zh"``; ``None`` detects it per document.
        """
        if language is None:
            language = detect_language(text)
        elif language not in LANGUAGES:
            raise UsageError(f"language {language!r} is not supported", f"Use one of: {', '.join(LANGUAGES)}.")
        wanted = None if entities is None else frozenset(entities)
        found = self._pattern_findings(text, language, wanted)
        for recognizer in self.recognizers:
            if language not in recognizer.languages:
                continue
            if wanted is not None and not wanted.intersection(recognizer.entities):
                continue
            found.extend(f for f in recognizer.find(text, language) if wanted is None or f.entity in wanted)
        kept = [f for f in found if f.score >= self._threshold(f.entity)]
        if self._allow:
            kept = [f for f in kept if text[f.start : f.end].strip().casefold() not in self._allow]
        return resolve_overlaps(kept)
