"""Logging that never prints secrets or personal data.

Two defences: values registered with :func:`register_secret` are replaced wherever they appear, and
patterns that look like personal data or key material (e-mail addresses, long hex or base64 runs,
card-like digit runs) are replaced before a record is written. Call sites should log ids and counts,
never values; the filter is the net under that rule, not a licence to break it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading

_PATTERNS = [
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b\d(?:[ -]?\d){11,18}\b"), "<number>"),
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), "<hex>"),
    (re.compile(r"[A-Za-z0-9+/_-]{40,}={0,2}"), "<blob>"),
]
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | bytes) -> None:
    """Make every later log line replace ``value`` (a passphrase, a key in text form) with ``<secret>``."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) >= 4:
        with _lock:
            _secrets.add(text)


def scrub(text: str) -> str:
    """Return ``text`` with registered secrets and PII-like patterns replaced."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "<secret>")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class ScrubbingFormatter(logging.Formatter):
    """A formatter whose output, exception text included, passes through :func:`scrub`."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure(level: str = "WARNING") -> None:
    """Send privet's logs to stderr through the scrubbing formatter."""
    logger = logging.getLogger("privet")
    logger.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("privet") else f"privet.{name}")
