"""The values every part of desensitization shares: entity names, findings, pattern specifications."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

# Entity types privet detects. Names are upper-case, stable, and used in policies, tokens and reports.
PERSON = "PERSON"
LOCATION = "LOCATION"
ORGANIZATION = "ORGANIZATION"
TITLE = "TITLE"
NRP = "NRP"  # nationality, religious or political group
STREET_ADDRESS = "STREET_ADDRESS"
EMAIL = "EMAIL"
PHONE = "PHONE"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
US_SSN = "US_SSN"
IP_ADDRESS = "IP_ADDRESS"
URL = "URL"
DOMAIN = "DOMAIN"
DATE_TIME = "DATE_TIME"
AGE = "AGE"
ZIP_CODE = "ZIP_CODE"
PASSPORT = "PASSPORT"
DRIVER_LICENSE = "DRIVER_LICENSE"
CRYPTO_WALLET = "CRYPTO_WALLET"
CN_RESIDENT_ID = "CN_RESIDENT_ID"
CN_MOBILE = "CN_MOBILE"
CN_LANDLINE = "CN_LANDLINE"
CN_BANK_CARD = "CN_BANK_CARD"
CN_CREDIT_CODE = "CN_CREDIT_CODE"
CN_PASSPORT = "CN_PASSPORT"
HK_ID = "HK_ID"
TW_ID = "TW_ID"
CN_LICENSE_PLATE = "CN_LICENSE_PLATE"
CN_QQ = "CN_QQ"
CN_WECHAT = "CN_WECHAT"


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected span: ``text[start:end]`` is personal data of type ``entity``.

    A finding never carries the value itself, so it is safe to log, count and put in reports.
    """

    entity: str
    start: int
    end: int
    score: float
    recognizer: str

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"bad span [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start


Validator = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Pattern:
    """A regular-expression recognizer, compiled with all the others into one multi-pattern scanner.

    ``regex`` uses Python ``re`` syntax and should avoid look-arounds where a word boundary does;
    the scanner runs a one-pass prefilter (Hyperscan) and then ``re`` only for patterns that may match.
    ``group`` selects the capturing group that is the value (0: the whole match).
    ``validate`` (checksum, range, date) must accept the value or the match is dropped.
    ``context`` words near the value raise the score by ``context_boost``; with ``context_required`` the
    match is dropped when no context word is within ``context_window`` characters (for bare numbers such
    as passport or QQ numbers that are indistinguishable from order numbers without it).
    """

    name: str
    entity: str
    regex: str
    score: float
    languages: tuple[str, ...] = ("en", "zh")
    group: int = 0
    validate: Validator | None = None
    context: tuple[str, ...] = ()
    context_required: bool = False
    context_boost: float = 0.35
    context_window: int = 40
    flags: int = 0
    tags: frozenset[str] = field(default_factory=frozenset)


class Recognizer(abc.ABC):
    """A recognizer that is not a single regular expression (dictionaries, NER models, segmenters).

    Subclasses set ``name``, ``entities`` and ``languages`` and implement :meth:`find`. ``find`` must be
    safe to call from several threads and must not log the text.
    """

    name: str = "recognizer"
    entities: tuple[str, ...] = ()
    languages: tuple[str, ...] = ("en", "zh")

    @abc.abstractmethod
    def find(self, text: str, language: str) -> list[Finding]:
        """The findings in ``text``, which the caller has detected or declared to be in ``language``."""
