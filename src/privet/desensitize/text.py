"""The text engine: find personal data in text with an analyzer and transform it as a policy says.

:class:`Desensitizer` puts a :class:`~privet.desensitize.policy.Policy` to work: the analyzer (built from the
policy's allow list, deny list and thresholds unless one is given) finds non-overlapping spans, and each span
whose entity has a rule is replaced by its operator's output, in one left-to-right pass that builds a new
string (values are never used as patterns, and replacements are never scanned again). The result says where
every replacement landed in the new text, without the values.

Keyed operators (pseudonym, hash, encrypt, fpe, dateshift) need a keyring and the vault operator a
:class:`~privet.desensitize.vault.Vault`; a Desensitizer refuses to be built without them (fail closed). It
derives each operator key once and keeps it for its lifetime: build one per job, so a key rotation takes effect
for the next job.

:func:`desensitize_file` streams a text file line by line, or a JSONL file record by record, into an output
that appears only when the whole input went through; :func:`restore_file` puts vault tokens back the same way.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

from privet.crypto.keyring import Keyring
from privet.desensitize.analyzers import default_analyzer
from privet.desensitize.engine import Analyzer, DenyTerm
from privet.desensitize.language import LANGUAGES, detect_language
from privet.desensitize.operators import Operator, OperatorContext
from privet.desensitize.policy import KEYED_OPERATORS, Policy
from privet.desensitize.types import Finding
from privet.desensitize.vault import RestoreGrant, Vault, VaultOperator
from privet.errors import NotFoundError, PrivetError, UsageError
from privet.files import atomic_file
from privet.log import get_logger

__all__ = [
    "Desensitizer",
    "FileFormat",
    "FileSummary",
    "Replacement",
    "RestoreSummary",
    "Result",
    "desensitize_file",
    "restore_file",
]

_log = get_logger("privet.desensitize.text")

FileFormat = Literal["auto", "text", "jsonl"]
Progress = Callable[[int], None]
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_RESTORE_CHUNK = 1 << 20  # characters of lines restored per vault call (one access record each)


@dataclass(frozen=True)
class Replacement:
    """One transformed span: ``text[start:end]`` of the input became ``result[new_start:new_end]``.

    Carries positions, the entity, the operator and the score, never the value or its replacement.
    """

    entity: str
    start: int
    end: int
    new_start: int
    new_end: int
    operator: str
    score: float


@dataclass(frozen=True)
class Result:
    """The desensitized ``text``, every finding (transformed or not), the replacements, and the language used."""

    text: str
    findings: tuple[Finding, ...]
    replacements: tuple[Replacement, ...]
    language: str

    def __repr__(self) -> str:  # an entity the policy leaves untouched is still in the text: keep it out of reprs
        return (
            f"Result(text=<{len(self.text)} chars>, findings={len(self.findings)}, "
            f"replacements={len(self.replacements)}, language={self.language!r})"
        )


@lru_cache(maxsize=8)
def _policy_analyzer(
    allow: tuple[str, ...], deny: tuple[DenyTerm, ...], thresholds: tuple[tuple[str, float], ...]
) -> Analyzer:
    """The default analyzer for a policy's lists; shared, since building one compiles every pattern (~2 s)."""
    return default_analyzer(allow=allow, deny=deny, thresholds=dict(thresholds))


class Desensitizer:
    """Applies ``policy`` to text. ``keyring`` serves keyed operators, ``vault`` the operator ``vault``.

    ``analyzer`` replaces the one built from the policy (its allow and deny lists are then the analyzer's
    business); the policy's thresholds apply to its findings either way.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        keyring: Keyring | None = None,
        vault: Vault | None = None,
        analyzer: Analyzer | None = None,
    ) -> None:
        keyed = sorted(policy.operator_names() & KEYED_OPERATORS)
        if keyed and keyring is None:
            raise UsageError(
                f"policy {policy.name!r} uses keyed operators ({', '.join(keyed)}) and no keyring is open",
                "Unlock the keyring (PRIVET_PASSPHRASE or PRIVET_MASTER_KEY), or use redact, replace or mask.",
            )
        if policy.needs_vault and vault is None:
            raise UsageError(
                f"policy {policy.name!r} uses the vault operator and no vault is open",
                "Open a Vault for the policy's vault.tenant, or use another operator.",
            )
        self.policy = policy
        self.analyzer = analyzer or _policy_analyzer(
            tuple(policy.allow), tuple(policy.deny_terms()), tuple(sorted(policy.thresholds().items()))
        )
        self._keyring = keyring
        self._thresholds = policy.thresholds()
        self._targets = policy.target_entities
        ttl = None if policy.vault.ttl_days is None else timedelta(days=policy.vault.ttl_days)
        self._vault_operator = VaultOperator(vault, ttl=ttl) if vault is not None else None
        # Derived operator keys, shared by the per-call contexts (one keyring lookup per operator and job).
        self._derived: dict[tuple[str, int, int | None], tuple[int, bytes]] = {}

    def __repr__(self) -> str:
        return f"Desensitizer(policy={self.policy.name!r})"

    def _operator(self, entity: str) -> Operator | None:
        rule = self.policy.rule_for(entity)
        if rule is None:
            return None
        if rule.operator == "vault":
            return self._vault_operator
        return self.policy.operator_for(entity)

    def _context(self, subject: str | None, language: str) -> OperatorContext:
        ctx = OperatorContext(self._keyring, self.policy.key, subject, language)
        object.__setattr__(ctx, "_keys", self._derived)  # the context is frozen; its key cache is ours to share
        return ctx

    def _language(self, text: str, language: str | None) -> str:
        chosen = language or (None if self.policy.language == "auto" else self.policy.language)
        if chosen in (None, "auto"):
            return detect_language(text)
        if chosen not in LANGUAGES:
            raise UsageError(f"language {chosen!r} is not supported", f"Use auto or one of: {', '.join(LANGUAGES)}.")
        return chosen

    def _kept(self, finding: Finding) -> bool:
        return finding.score >= self._thresholds.get(finding.entity, self._thresholds["*"])

    def analyze(self, text: str, *, language: str | None = None) -> list[Finding]:
        """The findings the policy acts on (its entities and thresholds), in text order."""
        lang = self._language(text, language)
        return [f for f in self.analyzer.analyze(text, lang, self._targets) if self._kept(f)]

    def desensitize(self, text: str, *, subject: str | None = None, language: str | None = None) -> Result:
        """``text`` with every finding the policy has a rule for transformed.

        ``subject`` is the privacy subject the text is about (dateshift keeps one offset per subject);
        ``language`` overrides the policy's (``auto``, ``en``, ``zh``).
        """
        if not isinstance(text, str):
            raise UsageError("the text to desensitize must be a string")
        lang = self._language(text, language)
        if not text:
            return Result("", (), (), lang)
        findings = tuple(f for f in self.analyzer.analyze(text, lang, self._targets) if self._kept(f))
        ctx = self._context(subject, lang)
        pieces: list[str] = []
        replacements: list[Replacement] = []
        position = out_length = 0
        for finding in findings:
            operator = self._operator(finding.entity)
            if operator is None:
                continue
            new = operator.apply(text[finding.start : finding.end], finding.entity, ctx)
            before = text[position : finding.start]
            pieces.append(before)
            new_start = out_length + len(before)
            pieces.append(new)
            out_length = new_start + len(new)
            replacements.append(
                Replacement(
                    finding.entity,
                    finding.start,
                    finding.end,
                    new_start,
                    out_length,
                    operator.name,
                    finding.score,
                )
            )
            position = finding.end
        pieces.append(text[position:])
        if _log.isEnabledFor(10):  # DEBUG: counts only, never values
            counts = Counter(r.entity for r in replacements)
            _log.debug(
                "desensitized %d characters (%s): %d findings, %d replaced %s",
                len(text),
                lang,
                len(findings),
                len(replacements),
                dict(sorted(counts.items())),
            )
        return Result("".join(pieces), findings, tuple(replacements), lang)


# -- files -----------------------------------------------------------------------------------------------
@dataclass
class FileSummary:
    """What :func:`desensitize_file` did: counts only."""

    format: str
    lines: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    replaced: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "lines": self.lines,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "findings": dict(sorted(self.findings.items())),
            "replaced": dict(sorted(self.replaced.items())),
        }


@dataclass
class RestoreSummary:
    """What :func:`restore_file` did: counts only."""

    lines: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    restored: int = 0
    unresolved: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "restored": self.restored,
            "unresolved": self.unresolved,
        }


def _check_paths(source: Path, output: Path) -> None:
    if not source.is_file():
        raise NotFoundError(f"{source} is not a file", "Pass the path of an existing file.")
    same = output.resolve() == source.resolve()
    if not same and output.exists():
        try:
            same = source.samefile(output)
        except OSError:
            same = False
    if same:
        raise UsageError(f"the output {output} is the input file", "Write to another path; the input stays as it is.")


def _format_of(source: Path, fmt: FileFormat) -> str:
    if fmt == "auto":
        return "jsonl" if source.suffix.lower() in _JSONL_SUFFIXES else "text"
    if fmt not in ("text", "jsonl"):
        raise UsageError(f"file format {fmt!r} is not known", "Use auto, text or jsonl.")
    return fmt


def _split_ending(line: str) -> tuple[str, str]:
    if line.endswith("\r\n"):
        return line[:-2], "\r\n"
    if line.endswith(("\n", "\r")):
        return line[:-1], line[-1]
    return line, ""


def _lines(handle: BinaryIO, source: Path, progress: Progress | None) -> Iterator[tuple[int, int, str]]:
    """(line number, bytes, decoded line with its ending) for every line of ``handle``."""
    for number, raw in enumerate(handle, start=1):
        if progress is not None:
            progress(len(raw))
        try:
            yield number, len(raw), raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"line {number} of {source} is not UTF-8 text", "Convert the file to UTF-8.") from None


def _located(exc: PrivetError, where: str) -> PrivetError:
    """``exc`` with ``where`` (a line and file) in front of its message; the message has no values in it."""
    try:
        return type(exc)(f"{where}: {exc.message}", exc.hint)
    except TypeError:
        return exc


def _jsonl_record(
    desensitizer: Desensitizer,
    body: str,
    where: str,
    fields: Sequence[str] | None,
    subject: str | None,
    language: str | None,
    summary: FileSummary,
) -> str:
    try:
        record = json.loads(body)
    except ValueError as exc:
        position = f" (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise UsageError(f"{where} is not valid JSON{position}", "Give one JSON object per line.") from None
    if not isinstance(record, dict):
        raise UsageError(f"{where} is not a JSON object", "Give one JSON object per line, or use --format text.")
    names: Iterable[str] = [k for k, v in record.items() if isinstance(v, str)] if fields is None else fields
    for name in names:
        value = record.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise UsageError(
                f"{where}: field {name!r} is a {type(value).__name__}, not a string",
                "Only string fields are desensitized: convert it to a string, or leave it out of --field.",
            )
        result = desensitizer.desensitize(value, subject=subject, language=language)
        summary.findings.update(f.entity for f in result.findings)
        summary.replaced.update(r.entity for r in result.replacements)
        record[name] = result.text
    return json.dumps(record, ensure_ascii=False)


def desensitize_file(
    desensitizer: Desensitizer,
    source: Path,
    output: Path,
    *,
    fmt: FileFormat = "auto",
    fields: Sequence[str] | None = None,
    subject: str | None = None,
    language: str | None = None,
    progress: Progress | None = None,
) -> FileSummary:
    """Desensitize ``source`` into ``output``, streaming; ``output`` appears (or is replaced) only on success.

    Text files go line by line (line endings kept). JSONL files go record by record: the string fields named in
    ``fields``, or every top-level string field when it is None; blank lines are kept. ``progress`` is called
    with the number of bytes read.
    """
    source, output = Path(source), Path(output)
    _check_paths(source, output)
    kind = _format_of(source, fmt)
    summary = FileSummary(format=kind)
    with source.open("rb") as handle, atomic_file(output) as out:
        for number, size, line in _lines(handle, source, progress):
            where = f"line {number} of {source.name}"
            body, ending = _split_ending(line)
            if number == 1 and kind == "jsonl":
                body = body.removeprefix("\ufeff")  # a byte-order mark is not part of the first record
            try:
                if kind == "jsonl" and body.strip():
                    new = _jsonl_record(desensitizer, body, where, fields, subject, language, summary)
                elif kind == "jsonl":
                    new = body
                else:
                    result = desensitizer.desensitize(body, subject=subject, language=language)
                    summary.findings.update(f.entity for f in result.findings)
                    summary.replaced.update(r.entity for r in result.replacements)
                    new = result.text
            except PrivetError as exc:
                if exc.message.startswith(where):
                    raise
                raise _located(exc, where) from exc
            data = (new + ending).encode("utf-8")
            out.write(data)
            summary.lines = number
            summary.bytes_in += size
            summary.bytes_out += len(data)
    _log.debug("desensitized %d lines of %s: %d replaced", summary.lines, kind, sum(summary.replaced.values()))
    return summary


def restore_file(
    vault: Vault,
    source: Path,
    output: Path,
    *,
    grant: RestoreGrant,
    strict: bool = False,
    progress: Progress | None = None,
) -> RestoreSummary:
    """Restore the vault tokens in ``source`` into ``output`` (atomic), about a megabyte of lines per vault call.

    Every call is recorded in the vault's access log. With ``strict`` an unrestorable token refuses the whole
    file (``output`` is not written).
    """
    source, output = Path(source), Path(output)
    _check_paths(source, output)
    summary = RestoreSummary()
    with source.open("rb") as handle, atomic_file(output) as out:
        batch: list[str] = []
        size = 0

        def flush() -> None:
            nonlocal size
            if not batch:
                return
            result = vault.restore_detailed("".join(batch), grant=grant, strict=strict)
            data = result.text.encode("utf-8")
            out.write(data)
            summary.restored += result.restored
            summary.unresolved += result.unresolved
            summary.bytes_out += len(data)
            batch.clear()
            size = 0

        for number, raw_size, line in _lines(handle, source, progress):
            batch.append(line)  # tokens never span lines, so a batch boundary never splits one
            size += len(line)
            summary.lines = number
            summary.bytes_in += raw_size
            if size >= _RESTORE_CHUNK:
                flush()
        flush()
    return summary
