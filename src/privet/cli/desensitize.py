"""``privet desensitize`` (text, file, eval) and ``privet restore``: personal data out of text, and back."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from privet.cli.common import OPTIONS, JsonOption, emit, progress, stderr, stdout, workspace
from privet.errors import KeyNotFoundError, NotFoundError, UsageError

if TYPE_CHECKING:
    from privet.crypto.keyring import Keyring
    from privet.desensitize.text import Desensitizer

# privet.desensitize (word lists, the scanner, the store) loads only when one of these commands runs.

app = typer.Typer(help="Find personal data in text and files and transform it as a policy says.", no_args_is_help=True)

PolicyOption = Annotated[
    Path | None, typer.Option("--policy", help="Policy YAML file (default: privet's default policy).")
]
LanguageOption = Annotated[
    str | None, typer.Option("--language", help="auto, en or zh (default: the policy's language).")
]
SubjectOption = Annotated[
    str | None, typer.Option("--subject", help="Privacy subject the text is about (dateshift keeps one offset each).")
]
_LANGUAGES = ("auto", "en", "zh")
_RESTORE_HELP = (
    "Put the values back for vault tokens (<<PERSON_XXXXXXXX>>) in a text or a file.\n\n"
    "You run this as an operator of the local workspace (you hold its master key), so the restore is granted "
    "here once --principal and --purpose are given; both are written to the vault access log with every attempt, "
    "granted or not. Remote callers never get this path: the gateway's role system decides whether they may "
    "restore."
)
_FORMATS = ("auto", "text", "jsonl")


def register(root: typer.Typer) -> None:
    """Add ``desensitize`` and ``restore`` to the ``privet`` app."""
    root.add_typer(app, name="desensitize")
    root.command(name="restore", help=_RESTORE_HELP)(restore)


def _check_choice(value: str | None, choices: tuple[str, ...], option: str) -> None:
    if value is not None and value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=option)


def _ensure_key(keyring: Keyring, name: str) -> None:
    """Create the policy's keyring key on first use (an explicit CLI step; the library never does this)."""
    try:
        keyring.data_key(name)
    except KeyNotFoundError:
        keyring.create(name, "aead")
        if not OPTIONS.quiet:
            stderr.print(f"created keyring key {name!r} for the policy's keyed operators")


@contextlib.contextmanager
def _desensitizer(policy_path: Path | None) -> Iterator[Desensitizer]:
    """The policy's Desensitizer, with the workspace keyring (and vault) only when the policy needs them."""
    from privet.desensitize.policy import KEYED_OPERATORS, Policy
    from privet.desensitize.text import Desensitizer
    from privet.desensitize.vault import Vault

    policy = Policy.default() if policy_path is None else Policy.load(policy_path)
    if not policy.needs_keyring:
        yield Desensitizer(policy)
        return
    with workspace() as ws:
        keyring = ws.keyring
        if policy.operator_names() & KEYED_OPERATORS:
            _ensure_key(keyring, policy.key)
        vault = Vault(ws.store, keyring, policy.vault.tenant) if policy.needs_vault else None
        yield Desensitizer(policy, keyring=keyring, vault=vault)


def _read_text(text: str) -> tuple[str, bool]:
    """The text argument, or stdin for ``-``; and whether it came from stdin."""
    if text != "-":
        return text, False
    try:
        return sys.stdin.read(), True
    except UnicodeDecodeError:
        raise UsageError("standard input is not UTF-8 text", "Convert it to UTF-8.") from None


@app.command("text")
def text_command(
    text: Annotated[str, typer.Argument(help="Text to desensitize, or - to read standard input.", show_default=False)],
    policy: PolicyOption = None,
    language: LanguageOption = None,
    subject: SubjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Desensitize one text and print it (with --json: the text and the findings, never the values)."""
    _check_choice(language, _LANGUAGES, "--language")
    value, from_stdin = _read_text(text)
    with _desensitizer(policy) as desensitizer:
        result = desensitizer.desensitize(value, subject=subject, language=language)
    payload = {
        "text": result.text,
        "language": result.language,
        "findings": [{"entity": f.entity, "start": f.start, "end": f.end, "score": f.score} for f in result.findings],
        "replacements": [
            {
                "entity": r.entity,
                "start": r.start,
                "end": r.end,
                "new_start": r.new_start,
                "new_end": r.new_end,
                "operator": r.operator,
            }
            for r in result.replacements
        ],
    }
    ending = "" if from_stdin and result.text.endswith("\n") else "\n"
    emit(payload, as_json, lambda: sys.stdout.write(result.text + ending))


def _counts_table(findings: dict[str, int], replaced: dict[str, int], title: str) -> Table:
    table = Table("entity", "found", "replaced", title=title)
    for entity in sorted(findings):
        table.add_row(entity, str(findings[entity]), str(replaced.get(entity, 0)))
    table.add_row("total", str(sum(findings.values())), str(sum(replaced.values())), style="bold")
    return table


def _size(path: Path) -> int:
    if not path.is_file():
        raise NotFoundError(f"{path} is not a file", "Pass the path of an existing file.")
    return path.stat().st_size


@app.command("file")
def file_command(
    source: Annotated[Path, typer.Argument(help="Text or JSONL file to read.", show_default=False)],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="File to write (atomically; never the input).", show_default=False)
    ],
    policy: PolicyOption = None,
    fmt: Annotated[
        str, typer.Option("--format", help="auto (by suffix: .jsonl/.ndjson are JSONL), text or jsonl.")
    ] = "auto",
    fields: Annotated[
        list[str] | None,
        typer.Option(
            "--field", help="JSONL: a string field to desensitize (repeatable; default: every top-level one)."
        ),
    ] = None,
    language: LanguageOption = None,
    subject: SubjectOption = None,
    as_json: JsonOption = False,
) -> None:
    """Desensitize a file line by line (text) or record by record (JSONL); the output appears only when done."""
    from privet.desensitize.text import desensitize_file

    _check_choice(fmt, _FORMATS, "--format")
    _check_choice(language, _LANGUAGES, "--language")
    total = _size(source)
    started = time.perf_counter()
    with _desensitizer(policy) as desensitizer, progress("desensitizing", total) as advance:
        summary = desensitize_file(
            desensitizer,
            source,
            output,
            fmt=fmt,  # type: ignore[arg-type]  # checked above
            fields=fields or None,
            subject=subject,
            language=language,
            progress=advance,
        )
    seconds = time.perf_counter() - started
    result = {"input": str(source), "output": str(output), "seconds": round(seconds, 3), **summary.as_dict()}

    def render() -> None:
        stdout.print(_counts_table(summary.findings, summary.replaced, f"{source.name} -> {output.name}"))
        stdout.print(f"{summary.lines} lines ({summary.format}), {summary.bytes_in} bytes in {seconds:.2f} s")

    emit(result, as_json, render)


@app.command("eval")
def eval_command(
    data: Annotated[Path, typer.Argument(help="Labelled corpus (presidio-research JSON).", show_default=False)],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N documents.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Precision, recall, F1 and F2 of the default analyzer on a labelled corpus (type match, IoU >= 0.7)."""
    from privet.desensitize.analyzers import default_analyzer
    from privet.desensitize.evaluate import evaluate, load_labelled

    corpus = load_labelled(data)[:limit]
    analyzer = default_analyzer()
    started = time.perf_counter()
    with _document_progress(len(corpus)) as advance:
        report = evaluate(analyzer.analyze, corpus, advance)
    seconds = time.perf_counter() - started
    result = {
        "data": str(data),
        "seconds": round(seconds, 3),
        "chars_per_second": round(report.characters / seconds, 1) if seconds > 0 else None,
        **report.as_dict(),
    }

    def render() -> None:
        table = Table("entity", "tp", "fp", "fn", "precision", "recall", "F1", "F2", title=f"{data.name}")
        for entity, score in sorted(report.per_entity.items()):
            table.add_row(
                entity,
                str(score.tp),
                str(score.fp),
                str(score.fn),
                f"{score.precision:.3f}",
                f"{score.recall:.3f}",
                f"{score.f1:.3f}",
                f"{score.f2:.3f}",
            )
        o = report.overall
        table.add_row(
            "overall",
            str(o.tp),
            str(o.fp),
            str(o.fn),
            f"{o.precision:.3f}",
            f"{o.recall:.3f}",
            f"{o.f1:.3f}",
            f"{o.f2:.3f}",
            style="bold",
        )
        stdout.print(table)
        stdout.print(
            f"overall: precision {o.precision:.3f}, recall {o.recall:.3f}, F1 {o.f1:.3f}, F2 {o.f2:.3f}; "
            f"type-agnostic recall {report.agnostic_recall:.3f}; {report.documents} documents, "
            f"{report.characters} characters, {result['chars_per_second']} characters/s"
        )
        if report.unscored:
            unscored = ", ".join(f"{k} {v}" for k, v in sorted(report.unscored.items()))
            stdout.print(f"not scored (types the corpus does not label): {unscored}")

    emit(result, as_json, render)


@contextlib.contextmanager
def _document_progress(total: int) -> Iterator[Callable[[], None]]:
    """A per-document progress bar on stderr (rate and ETA); silent with --quiet or for a few documents."""
    if OPTIONS.quiet or total < 50:
        yield lambda: None
        return
    columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("evaluating", total=total)
        yield lambda: bar.advance(task)


def restore(
    tenant: Annotated[str, typer.Option(help="Vault tenant the tokens belong to.", show_default=False)],
    principal: Annotated[
        str, typer.Option(help="Who restores (a user or service id), recorded in the access log.", show_default=False)
    ],
    purpose: Annotated[
        str, typer.Option(help="Why the values are restored, recorded in the access log.", show_default=False)
    ],
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse (restore nothing) when a token is unknown or expired.")
    ] = False,
    file: Annotated[Path | None, typer.Option("--file", help="Restore this file instead of TEXT.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="With --file: file to write (atomic).")] = None,
    text: Annotated[
        str | None, typer.Argument(help="Text with vault tokens, or - to read standard input.", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Put the values back for vault tokens (<<PERSON_XXXXXXXX>>) in a text or a file."""
    from privet.desensitize.text import restore_file
    from privet.desensitize.vault import RestoreGrant, Vault

    for name, value in (("--tenant", tenant), ("--principal", principal), ("--purpose", purpose)):
        if not value.strip():
            raise UsageError(f"{name} is required", "Say whose tokens, who restores and why: all three are recorded.")
    if (text is None) == (file is None):
        raise UsageError("give either TEXT (or - for standard input) or --file", "See privet restore --help.")
    if file is not None and output is None:
        raise UsageError("--file needs -o/--output", "Name the file to write the restored text to.")
    if file is None and output is not None:
        raise UsageError("-o/--output goes with --file", "Restore a file with --file IN -o OUT.")
    grant = RestoreGrant(principal, purpose, allowed=True)
    if file is not None and output is not None:
        total = _size(file)
        with workspace() as ws, progress("restoring", total) as advance:
            summary = restore_file(
                Vault(ws.store, ws.keyring, tenant), file, output, grant=grant, strict=strict, progress=advance
            )
        emit(
            {"input": str(file), "output": str(output), **summary.as_dict()},
            as_json,
            lambda: stdout.print(
                f"restored {summary.restored} tokens ({summary.unresolved} left in place) -> {output}"
            ),
        )
        return
    value, from_stdin = _read_text(text or "")
    with workspace() as ws:
        result = Vault(ws.store, ws.keyring, tenant).restore_detailed(value, grant=grant, strict=strict)
    ending = "" if from_stdin and result.text.endswith("\n") else "\n"
    emit(
        {"text": result.text, "restored": result.restored, "unresolved": result.unresolved},
        as_json,
        lambda: sys.stdout.write(result.text + ending),
    )
