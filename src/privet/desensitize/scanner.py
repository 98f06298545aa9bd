"""One-pass multi-pattern scanning: a Hyperscan prefilter, then Python ``re`` for the patterns that fired.

Every :class:`Pattern` is compiled twice: into one Hyperscan database in prefilter mode (Hyperscan
may report a superset of matches, never fewer) and as a Python regular expression. A scan runs the
whole database over the text once and learns which patterns can match; only those are then run with
``re`` to get exact spans and groups. Text in which no pattern fires costs one Hyperscan pass.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence

import hyperscan

from privet.errors import UsageError

from .types import Pattern

_BASE_FLAGS = (
    hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP
)


_SUPPORTED_FLAGS = (
    re.IGNORECASE | re.DOTALL | re.MULTILINE | re.UNICODE | re.ASCII
)  # ASCII narrows re; the prefilter stays a superset


def _hs_flags(flags: int) -> int:
    out = _BASE_FLAGS
    if flags & re.IGNORECASE:
        out |= hyperscan.HS_FLAG_CASELESS
    if flags & re.DOTALL:
        out |= hyperscan.HS_FLAG_DOTALL
    if flags & re.MULTILINE:
        out |= hyperscan.HS_FLAG_MULTILINE
    return out


class Scanner:
    """Finds the raw regular-expression matches of many patterns with one prefilter pass."""

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self.patterns = tuple(patterns)
        self._compiled = []
        for pattern in self.patterns:
            if pattern.flags & ~_SUPPORTED_FLAGS:
                # Hyperscan would read the expression differently (e.g. VERBOSE whitespace) and silently miss.
                raise UsageError(
                    f"pattern {pattern.name!r} uses regular-expression flags the scanner does not support",
                    "Use only IGNORECASE, DOTALL, MULTILINE, UNICODE or ASCII (inline (?i) groups work too).",
                )
            try:
                self._compiled.append(re.compile(pattern.regex, pattern.flags))
            except re.error as exc:
                raise UsageError(f"pattern {pattern.name!r} is not a valid regular expression ({exc})") from exc
        self._db: hyperscan.Database | None = None
        if self.patterns:
            self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            try:
                self._db.compile(
                    expressions=[p.regex.encode("utf-8") for p in self.patterns],
                    ids=list(range(len(self.patterns))),
                    elements=len(self.patterns),
                    flags=[_hs_flags(p.flags) for p in self.patterns],
                )
            except hyperscan.error as exc:
                raise UsageError(f"patterns could not be compiled for multi-pattern scanning ({exc})") from exc
        # A Hyperscan scratch space may be used by one scan at a time: one per thread.
        self._local = threading.local()

    def _scratch(self) -> hyperscan.Scratch:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = hyperscan.Scratch(self._db)
            self._local.scratch = scratch
        return scratch

    def candidates(self, text: str) -> list[int]:
        """Indices of the patterns that may match ``text`` (a superset of those that do)."""
        if self._db is None or not text:
            return []
        fired: set[int] = set()

        def on_match(pattern_id: int, _start: int, _end: int, _flags: int, _context: object) -> None:
            fired.add(pattern_id)

        self._db.scan(text.encode("utf-8"), match_event_handler=on_match, scratch=self._scratch())
        return sorted(fired)

    def matches(self, text: str, allowed: frozenset[int] | None = None) -> Iterator[tuple[int, re.Match[str]]]:
        """``(pattern index, match)`` for every match of the patterns that fired, limited to ``allowed``."""
        for index in self.candidates(text):
            if allowed is not None and index not in allowed:
                continue
            for match in self._compiled[index].finditer(text):
                yield index, match
