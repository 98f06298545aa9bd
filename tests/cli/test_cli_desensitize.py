"""``privet desensitize`` and ``privet restore``.

Policy errors and one full ``desensitize text`` run go through a real process (exit codes, no traceback). The
rest calls ``privet.cli.main`` in this process, so the analyzer (about 2 s to build) is built once for all of
them; the workspace, environment and streams are the same as a process would see.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import privet.log
from privet.cli import main
from tests.cli.test_cli import one_error_line, run

EMAIL, PHONE, CARD = "jane.doe@example.com", "415-555-0132", "4111 1111 1111 1111"
ENGLISH = f"Please mail {EMAIL} or call {PHONE}; the card on file is {CARD}."
CN_ID, CN_MOBILE = "11010519491231002X", "13812345678"
CHINESE = f"患者的身份证号是{CN_ID}，联系电话{CN_MOBILE}，请及时回访。"


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def master() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def cli(tmp_path: Path, master: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator:
    """``cli(*args, code=0, stdin=None)`` runs ``privet`` in-process on a fresh workspace with a keyring."""
    for name in list(os.environ):
        if name.startswith("PRIVET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRIVET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PRIVET_MASTER_KEY", master)
    logger = logging.getLogger("privet")
    saved = (logger.handlers[:], logger.level, logger.propagate)

    def invoke(*args: str, code: int = 0, stdin: str | None = None) -> Outcome:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        result = main(["--quiet", *args])
        captured = capsys.readouterr()
        outcome = Outcome(result, captured.out, captured.err)
        assert result == code, outcome
        assert "Traceback" not in captured.err
        return outcome

    invoke("keys", "init", "--source", "env")
    yield invoke
    logger.handlers[:], logger.level, logger.propagate = saved


def _error_line(outcome: Outcome) -> str:
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    return lines[0]


# -- real processes ----------------------------------------------------------------------------------------
def test_bad_policies_exit_2_with_one_line(tmp_path: Path) -> None:
    cases = {
        "bad.yaml": ("entities: {PERSON: [pseudonym\n", "is not valid YAML at line"),
        "op.yaml": ("entities: {PERSON: shred}\n", "entities.PERSON.operator: unknown operator 'shred'"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        proc = run(tmp_path / "home", "desensitize", "text", "x", "--policy", str(tmp_path / name), code=2)
        assert expected in one_error_line(proc) and proc.stdout == ""


def test_text_command_as_a_process(tmp_path: Path, master: str) -> None:
    home = tmp_path / "home"
    run(home, "keys", "init", "--source", "env", PRIVET_MASTER_KEY=master)
    proc = run(home, "desensitize", "text", ENGLISH, "--json", PRIVET_MASTER_KEY=master)
    result = json.loads(proc.stdout)
    assert set(result) == {"text", "language", "findings", "replacements"}
    for value in (EMAIL, PHONE, CARD):
        assert value not in proc.stdout and value not in proc.stderr
    assert {f["entity"] for f in result["findings"]} >= {"EMAIL", "PHONE", "CREDIT_CARD"}
    assert all(set(f) == {"entity", "start", "end", "score"} for f in result["findings"])
    # The policy's key was created on first use, and says so on stderr (stdout stays one JSON object).
    assert "created keyring key 'desensitize'" in proc.stderr
    listed = json.loads(run(home, "keys", "list", "--json", PRIVET_MASTER_KEY=master).stdout)
    assert "desensitize" in {k["name"] for k in listed["keys"]}


# -- in-process ----------------------------------------------------------------------------------------------
def test_policy_mistakes_in_process(cli, tmp_path: Path) -> None:
    policy = tmp_path / "field.yaml"
    policy.write_text("entities: {PERSON: pseudonym}\ncolour: red\n", encoding="utf-8")
    unknown = cli("desensitize", "text", "x", "--policy", str(policy), code=2)
    assert "colour: unknown field" in _error_line(unknown) and unknown.stdout == ""
    missing = cli(
        "desensitize", "file", str(policy), "-o", str(tmp_path / "o"), "--policy", str(tmp_path / "no"), code=2
    )
    assert "does not exist" in _error_line(missing) and not (tmp_path / "o").exists()


def test_text_from_argument_and_stdin_english_and_chinese(cli) -> None:
    first = cli("desensitize", "text", ENGLISH).stdout
    assert first.endswith(".\n") and EMAIL not in first and CARD not in first
    assert cli("desensitize", "text", ENGLISH).stdout == first  # consistent pseudonyms across runs
    chinese = json.loads(cli("desensitize", "text", "-", "--json", stdin=CHINESE + "\n").stdout)
    assert chinese["language"] == "zh" and CN_ID not in chinese["text"] and CN_MOBILE not in chinese["text"]
    assert chinese["text"].endswith("请及时回访。\n")
    assert {f["entity"] for f in chinese["findings"]} >= {"CN_RESIDENT_ID", "CN_MOBILE"}
    forced = json.loads(cli("desensitize", "text", ENGLISH, "--language", "en", "--json").stdout)
    assert forced["language"] == "en"
    assert "--language" in _error_line(cli("desensitize", "text", "x", "--language", "fr", code=2))


def test_file_jsonl_streams_and_summarises(cli, tmp_path: Path) -> None:
    source = tmp_path / "records.jsonl"
    rows = [{"id": 1, "body": ENGLISH, "tag": "a"}, {"id": 2, "body": CHINESE, "tag": f"from {EMAIL}"}]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    summary = json.loads(cli("desensitize", "file", str(source), "-o", str(output), "--field", "body", "--json").stdout)
    out = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in out] == [1, 2] and out[1]["tag"] == f"from {EMAIL}"  # only --field body
    assert EMAIL not in out[0]["body"] and CN_ID not in out[1]["body"]
    assert summary["format"] == "jsonl" and summary["lines"] == 2
    assert summary["replaced"]["CN_RESIDENT_ID"] == 1 and summary["replaced"]["EMAIL"] == 1
    table = cli("desensitize", "file", str(source), "-o", str(output)).stdout
    assert "CN_MOBILE" in table and "total" in table and EMAIL not in output.read_text(encoding="utf-8")
    assert "is the input file" in _error_line(cli("desensitize", "file", str(source), "-o", str(source), code=2))
    missing = cli("desensitize", "file", str(tmp_path / "nope.jsonl"), "-o", str(output), code=2)
    assert "is not a file" in _error_line(missing)


def test_interrupted_file_run_leaves_no_output_or_the_old_one(cli, tmp_path: Path) -> None:
    policy = tmp_path / "fpe.yaml"
    policy.write_text("entities: {EMAIL: fpe, PHONE: pseudonym}\n", encoding="utf-8")  # fpe finds no digits
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"text": f"call {PHONE}"}) + "\n" + json.dumps({"text": f"mail {EMAIL}"}) + "\n", encoding="utf-8"
    )
    fresh, old = tmp_path / "fresh.jsonl", tmp_path / "old.jsonl"
    old.write_text("the previous run\n", encoding="utf-8")
    for output in (fresh, old):
        failed = cli("desensitize", "file", str(source), "-o", str(output), "--policy", str(policy), code=2)
        line = _error_line(failed)
        assert line.startswith("error: line 2 of in.jsonl: fpe") and EMAIL not in line
    assert not fresh.exists() and old.read_text(encoding="utf-8") == "the previous run\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_eval_on_a_tiny_labelled_corpus(cli, tmp_path: Path) -> None:
    def record(text: str, *spans: tuple[str, str]) -> dict:
        return {
            "full_text": text,
            "spans": [
                {
                    "entity_type": kind,
                    "entity_value": value,
                    "start_position": text.index(value),
                    "end_position": text.index(value) + len(value),
                }
                for kind, value in spans
            ],
        }

    corpus = [
        record(f"Write to {EMAIL} today.", ("EMAIL_ADDRESS", EMAIL)),
        record(f"My card is {CARD}, thanks.", ("CREDIT_CARD", CARD)),
        record("Nothing personal in this sentence.", ("EMAIL_ADDRESS", "personal")),  # a miss, on purpose
    ]
    data = tmp_path / "corpus.json"
    data.write_text(json.dumps(corpus), encoding="utf-8")
    report = json.loads(cli("desensitize", "eval", str(data), "--json").stdout)
    assert report["documents"] == 3 and report["chars_per_second"] > 0
    assert report["per_entity"]["EMAIL"] == {
        "tp": 1,
        "fp": 0,
        "fn": 1,
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.6667,
        "f2": 0.5556,
    }
    assert report["per_entity"]["CREDIT_CARD"]["recall"] == 1.0 and report["overall"]["tp"] == 2
    table = cli("desensitize", "eval", str(data), "--limit", "2").stdout
    assert "CREDIT_CARD" in table and "overall: precision 1.000, recall 1.000" in table and "characters/s" in table
    assert "2 documents" in table
    data.write_text('{"not": "a list"}', encoding="utf-8")
    assert "presidio-research" in _error_line(cli("desensitize", "eval", str(data), code=1))


def test_restore_round_trip_through_the_vault(cli, tmp_path: Path) -> None:
    policy = tmp_path / "vault.yaml"
    policy.write_text(
        "entities: {EMAIL: vault, CN_MOBILE: vault, CN_RESIDENT_ID: vault}\nvault: {tenant: clinic, ttl_days: 7}\n",
        encoding="utf-8",
    )
    original = f"{CHINESE} {EMAIL}"
    masked = json.loads(cli("desensitize", "text", original, "--policy", str(policy), "--json").stdout)["text"]
    assert "<<EMAIL_" in masked and "<<CN_RESIDENT_ID_" in masked and CN_ID not in masked
    grant = ["--tenant", "clinic", "--principal", "ops:alice", "--purpose", "answer ticket 42"]
    assert cli("restore", masked, *grant).stdout == original + "\n"
    restored = json.loads(cli("restore", "-", *grant, "--strict", "--json", stdin=masked).stdout)
    assert restored == {"text": original, "restored": 3, "unresolved": 0}

    source, output = tmp_path / "masked.txt", tmp_path / "restored.txt"
    source.write_text(f"{masked}\nno tokens here\n{masked}\n", encoding="utf-8")
    summary = json.loads(cli("restore", "--file", str(source), "-o", str(output), *grant, "--json").stdout)
    assert output.read_text(encoding="utf-8") == f"{original}\nno tokens here\n{original}\n"
    assert summary["restored"] == 6 and summary["unresolved"] == 0

    other = ["--tenant", "elsewhere", "--principal", "ops:alice", "--purpose", "answer ticket 42"]
    assert cli("restore", masked, *other).stdout == masked + "\n"  # not this tenant's tokens: left in place
    refused = cli("restore", masked, *other, "--strict", code=1)
    assert "3 of 3 tokens" in _error_line(refused) and refused.stdout == ""
    refused_file = cli("restore", "--file", str(source), "-o", str(tmp_path / "r2.txt"), *other, "--strict", code=1)
    assert "tokens" in _error_line(refused_file) and not (tmp_path / "r2.txt").exists()
    no_principal = cli("restore", masked, "--tenant", "clinic", "--purpose", "why", code=2)
    assert "--principal" in _error_line(no_principal)
    blank = cli("restore", masked, "--tenant", "clinic", "--principal", "ops:alice", "--purpose", " ", code=2)
    assert "--purpose is required" in _error_line(blank)
    assert "-o/--output" in _error_line(cli("restore", "--file", str(source), *grant, code=2))


def test_debug_logs_and_errors_carry_no_values(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --debug every privet log record is kept, unscrubbed, and none may contain a detected value."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    configure = privet.log.configure

    def configure_and_keep(level: str = "WARNING") -> None:
        configure(level)
        logging.getLogger("privet").addHandler(Keep(logging.DEBUG))

    monkeypatch.setattr(privet.log, "configure", configure_and_keep)
    values = [EMAIL, PHONE, CARD, CN_ID, CN_MOBILE]
    outputs = [cli("--debug", "desensitize", "text", text).stderr for text in (ENGLISH, CHINESE)]
    source = tmp_path / "in.txt"
    source.write_text(f"{ENGLISH}\n{CHINESE}\n", encoding="utf-8")
    outputs.append(cli("--debug", "desensitize", "file", str(source), "-o", str(tmp_path / "out.txt")).stderr)
    policy = tmp_path / "refuse.yaml"
    policy.write_text("entities: {EMAIL: fpe}\n", encoding="utf-8")
    outputs.append(cli("desensitize", "text", ENGLISH, "--policy", str(policy), code=2).stderr)
    outputs.append(
        cli("desensitize", "file", str(source), "-o", str(tmp_path / "x"), "--policy", str(policy), code=2).stderr
    )
    logged = [r.getMessage() for r in records]
    assert any("desensitized" in line for line in logged)  # debug logging was on and used
    for value in values:
        assert not any(value in line for line in logged), value
        assert not any(value in text for text in outputs), value
