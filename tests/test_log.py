"""Logging never prints registered secrets or data that looks personal or like key material."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterator

import pytest

from privet.log import ScrubbingFormatter, configure, get_logger, register_secret, scrub


def unique_secret() -> str:
    """A secret no other test registered (the registry is process-wide)."""
    return f"pw-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def privet_logger() -> Iterator[logging.Logger]:
    """The 'privet' logger, restored after the test (configure() replaces its handlers)."""
    logger = logging.getLogger("privet")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def test_registered_secret_is_replaced() -> None:
    secret = unique_secret()
    assert scrub(f"passphrase={secret}!") == f"passphrase={secret}!"
    register_secret(secret)
    assert scrub(f"passphrase={secret}!") == "passphrase=<secret>!"
    assert scrub(f"{secret}{secret}") == "<secret><secret>"


def test_registered_bytes_secret() -> None:
    secret = unique_secret()
    register_secret(secret.encode())
    assert scrub(f"got {secret}") == "got <secret>"


def test_longer_secret_wins() -> None:
    short = unique_secret()
    long = short + "-extended"
    register_secret(short)
    register_secret(long)
    assert scrub(f"a {long} b") == "a <secret> b"


def test_very_short_values_are_not_registered() -> None:
    register_secret("xyz")
    assert scrub("xyz is fine") == "xyz is fine"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contact alice.smith+ml@example.co.uk now", "contact <email> now"),
        ("card 4111 1111 1111 1111", "card <number>"),
        ("card 4111-1111-1111-1111", "card <number>"),
        ("iban-ish 4111111111111111111", "iban-ish <number>"),
        ("key " + "deadbeef" * 8, "key <hex>"),
        ("sha " + "ABCDEF0123456789" * 2, "sha <hex>"),
        ("blob " + base64.b64encode(b"\xfb\xef" * 20 + b"\x00").decode(), "blob <blob>"),
        ("token " + "A1b2C3d4_-" * 5, "token <blob>"),
    ],
)
def test_patterns(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_number_pattern_keeps_following_space() -> None:
    assert scrub("card 4111 1111 1111 1111 charged") == "card <number> charged"


@pytest.mark.parametrize(
    "text",
    [
        "loaded 1200 rows from model v3 in 4.5 s",
        "key default v2 rotated",
        "epsilon=1.0 delta=1e-05",
        "phone 555-1234",
        "short hex abcdef0123",
        "ed25519 fingerprint prefix 0123abcd",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert scrub(text) == text


def test_formatter_scrubs_message_and_args() -> None:
    secret = unique_secret()
    register_secret(secret)
    record = logging.LogRecord(
        "privet.x", logging.WARNING, __file__, 1, "user %s used %s", ("bob@example.com", secret), None
    )
    assert ScrubbingFormatter("%(message)s").format(record) == "user <email> used <secret>"


def test_configured_logger_scrubs_exception_text(
    privet_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = unique_secret()
    register_secret(secret)
    configure("INFO")
    log = get_logger("tests.log")
    assert log.name == "privet.tests.log"
    try:
        raise RuntimeError(f"could not unlock with {secret} for carol@example.org")
    except RuntimeError:
        log.exception("unlock failed for %s", "dave@example.net")
    log.debug("not shown at INFO")
    err = capsys.readouterr().err
    assert "ERROR privet.tests.log: unlock failed for <email>" in err
    assert "Traceback" in err
    assert "RuntimeError: could not unlock with <secret> for <email>" in err
    assert secret not in err
    assert "@example" not in err
    assert "not shown" not in err


def test_configure_replaces_handlers(privet_logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    configure("WARNING")
    configure("WARNING")
    assert len(privet_logger.handlers) == 1
    assert privet_logger.propagate is False
    get_logger("privet.store").warning("once")
    assert capsys.readouterr().err.count("once") == 1
