"""Pattern recognizers for identifiers written the same way in any language: contact details, cards,
bank accounts, network addresses, dates, ages, postcodes, national numbers, wallets.

Each pattern finds candidates; a validator (checksum, range, parse) drops what cannot be the entity;
context words raise the score, and bare numbers that look like anything (passport, licence, ZIP) are
only reported next to a context word.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import date

import phonenumbers

from .. import types as t
from ..types import Pattern
from ..validators import iban_valid, luhn_valid, us_ssn_valid

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"

# Card issuer ranges (prefix ranges and lengths) for the networks in common use.
_CARD_RANGES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # American Express
    (37, 37, (15,)),
    (300, 305, (14, 15, 16, 17, 18, 19)),  # Diners Club
    (36, 36, (14, 15, 16, 17, 18, 19)),
    (38, 39, (14, 15, 16, 17, 18, 19)),
    (6011, 6011, (16, 17, 18, 19)),  # Discover
    (644, 649, (16, 17, 18, 19)),
    (65, 65, (16, 17, 18, 19)),
    (3528, 3589, (16, 17, 18, 19)),  # JCB
    (1800, 1800, (15,)),
    (2131, 2131, (15,)),
    (62, 62, (16, 17, 18, 19)),  # UnionPay
    (2200, 2204, (16, 17, 18, 19)),  # Mir
    (50, 50, (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
    (56, 69, (12, 13, 14, 15, 16, 17, 18, 19)),
)


def card_valid(value: str) -> bool:
    """Luhn check plus a known issuer prefix and a length that issuer uses."""
    digits = re.sub(r"[ -]", "", value)
    if not digits.isdigit() or not 12 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    for low, high, lengths in _CARD_RANGES:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return luhn_valid(digits)
    return False


def ip_valid(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return address.version == 4 or value.count(":") >= 2


def _base58check_valid(value: str) -> bool:
    number = 0
    for char in value:
        number = number * 58 + _BASE58.index(char)
    raw = number.to_bytes(25, "big") if number.bit_length() <= 200 else b""
    if len(raw) != 25:
        return False
    return hashlib.sha256(hashlib.sha256(raw[:-4]).digest()).digest()[:4] == raw[-4:]


def _bech32_valid(value: str) -> bool:
    value = value.lower()
    hrp, _, data = value.rpartition("1")
    if not hrp or len(data) < 6 or any(c not in _BECH32 for c in data):
        return False
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for v in [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + [_BECH32.index(c) for c in data]:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(generators):
            if (top >> i) & 1:
                checksum ^= g
    return checksum in (1, 0x2BC830A3)  # bech32, bech32m


def wallet_valid(value: str) -> bool:
    """Bitcoin base58check or bech32/bech32m addresses; Ethereum addresses by shape."""
    if value.startswith("0x"):
        return len(set(value[2:].lower())) > 4
    if value.lower().startswith("bc1"):
        return _bech32_valid(value)
    return _base58check_valid(value)


_DATE_SHAPE = re.compile(r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})$")


def phone_valid(value: str) -> bool:
    """7 to 15 digits, not shaped like a date, and possible for its country when it has a country code."""
    digits = re.sub(r"\D", "", value.split("x")[0].split("ext")[0])
    if value.isdigit() and len(value) > 11:  # an unbroken run this long is an order or a timestamp, not a phone
        return False
    if not 7 <= len(digits) <= 15 or len(set(digits)) == 1 or _DATE_SHAPE.match(value.strip()):
        return False
    if value.lstrip().startswith("+"):
        try:
            return phonenumbers.is_possible_number(phonenumbers.parse(value, None))
        except phonenumbers.NumberParseException:
            return False
    return True


def date_valid(value: str) -> bool:
    """Numeric dates whose day and month are in range, in either day-first or month-first order."""
    parts = [int(p) for p in re.split(r"[-/.T :]", value) if p.isdigit()][:3]
    if len(parts) < 3:
        return True
    if parts[0] > 31:  # year first
        year, month, day = parts
    else:
        a, b, year = parts
        month, day = (a, b) if a <= 12 else (b, a)
    if year < 100:
        year += 2000 if year < 50 else 1900
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def age_valid(value: str) -> bool:
    return 0 < int(value) <= 120


_NUM_END = r"(?![0-9])"
_NUM_START = r"(?<![0-9])"

# 12 to 19 digits, optionally grouped by spaces or hyphens, not part of a longer number.
_CARD_CANDIDATE = _NUM_START + r"(?<![0-9][ -])(?:\d[ -]?){11,18}\d" + _NUM_END + r"(?![ -][0-9])"

PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "email",
        t.EMAIL,
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])",
        0.95,
    ),
    Pattern("url", t.URL, r"(?:https?|ftp)://[^\s<>\"'{}|\\^`]*[^\s<>\"'{}|\\^`.,;:!?)\]]", 0.9, flags=re.I),
    Pattern(
        "domain",
        t.DOMAIN,
        r"(?<![\w@./-])(?:www\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
        r"(?:com|org|net|edu|gov|io|ai|co|info|biz|uk|de|fr|it|es|nl|be|ch|at|se|no|dk|fi|pl|cz|pt|br|au|nz|ca|"
        r"us|ru|cn|jp|kr|in|hu|gr|ie|il|mx|ar|za|cy|sk|si|hr|ro|bg|lt|lv|ee|is|lu|tw|hk|sg|my|app|dev|health)"
        r"(?:/[^\s<>\"']*[^\s<>\"'.,;:!?)\]])?/?(?![\w@-])",
        0.6,
        context=("website", "site", "domain", "visit", "blog", "page", "link", "url", "web"),
        flags=re.I,
    ),
    Pattern("ipv4", t.IP_ADDRESS, r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)", 0.9, validate=ip_valid),
    Pattern(
        "ipv6",
        t.IP_ADDRESS,
        r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])",
        0.85,
        validate=ip_valid,
    ),
    Pattern(
        "credit_card",
        t.CREDIT_CARD,
        _CARD_CANDIDATE,
        0.85,
        languages=("en",),  # Chinese text has CN_BANK_CARD, which knows the same networks
        validate=card_valid,
        context=("card", "credit", "visa", "mastercard", "amex", "debit", "cc", "payment"),
        context_boost=0.15,
    ),
    Pattern(
        "card_number_in_context",
        t.CREDIT_CARD,
        _CARD_CANDIDATE,
        0.3,
        languages=("en",),
        validate=lambda v: luhn_valid(re.sub(r"[ -]", "", v)) and len(set(v)) > 2,
        context=("card", "credit", "debit", "cc ", "visa", "mastercard", "amex", "jcb", "maestro"),
        context_required=True,  # an unknown issuer range: only a Luhn-valid number the text calls a card
        context_boost=0.3,
    ),
    Pattern(
        "iban",
        t.IBAN,
        r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])",
        0.98,
        validate=iban_valid,
    ),
    Pattern(
        "us_ssn",
        t.US_SSN,
        _NUM_START + r"(?<![0-9]-)(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})" + _NUM_END + r"(?!-[0-9])",
        0.8,
        validate=us_ssn_valid,
        context=("ssn", "social security", "social sec", "ss#", "ss #"),
        context_boost=0.15,
    ),
    Pattern(
        "us_ssn_bare",
        t.US_SSN,
        _NUM_START + r"\d{9}" + _NUM_END,
        0.5,
        validate=us_ssn_valid,
        context=("ssn", "social security", "social sec"),
        context_required=True,
    ),
    Pattern(
        "phone",
        t.PHONE,
        r"(?<![\w+/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}"
        r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,5})?(?![\w/]|[.-]\d)",
        0.4,
        languages=("en",),  # Chinese text has CN_MOBILE and CN_LANDLINE
        validate=phone_valid,
        context=("phone", "call", "tel", "mobile", "cell", "fax", "number", "contact", "reach", "dial", "text me"),
        context_boost=0.45,
        context_window=30,
        flags=re.I,
    ),
    Pattern(
        "iso_datetime",
        t.DATE_TIME,
        _NUM_START + r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?" + _NUM_END,
        0.85,
        validate=date_valid,
    ),
    Pattern(
        "numeric_date",
        t.DATE_TIME,
        _NUM_START + r"(?<![0-9][/.-])\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})" + _NUM_END + r"(?![/.-][0-9])",
        0.6,
        validate=date_valid,
        context=("date", "born", "dob", "birth", "on", "since", "until", "admitted", "discharged"),
        context_boost=0.25,
    ),
    Pattern(
        "text_date",
        t.DATE_TIME,
        rf"(?<![\w])(?:(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+\d{{4}})"
        rf"|(?:(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?)"
        rf"|(?:(?:{_MONTHS})\.?,?\s+\d{{4}}))(?![\w])",
        0.8,
        flags=re.I,
    ),
    Pattern(
        "weekday",
        t.DATE_TIME,
        rf"(?<![\w])(?:{_WEEKDAYS})(?![\w])",
        0.6,
        flags=re.I,
    ),
    Pattern(
        "time",
        t.DATE_TIME,
        _NUM_START + r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:\s?[ap]\.?m\.?)?" + _NUM_END,
        0.6,
        flags=re.I,
    ),
    Pattern(
        "year",
        t.DATE_TIME,
        r"(?<![\w.,/-])(?:19|20)\d{2}(?![\w/-]|[.,]\d)",
        0.35,
        context=("in", "since", "year", "born", "founded", "established", "from", "until", "class of", "during"),
        context_boost=0.3,
        context_window=12,
    ),
    Pattern(
        "age",
        t.AGE,
        _NUM_START + r"(?<![0-9.,])\d{1,3}" + _NUM_END + r"(?![.,]\d)",
        0.4,
        validate=age_valid,
        context=(
            "age",
            "aged",
            "years old",
            "year old",
            "yrs old",
            "yo ",
            "y/o",
            "turn ",
            "turned",
            "birthday",
            "-year-old",
        ),
        context_required=True,
        context_window=16,
    ),
    Pattern(
        "zip",
        t.ZIP_CODE,
        # US/most countries, "394 13" (Sweden, Czechia), "7412 SL" (Netherlands), "B0J 2H0" (Canada).
        r"(?<![\w-])(?:\d{3} \d{2}|\d{4} ?[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d|\d{3,5}(?:-\d{3,4})?)(?![\w-])",
        0.4,
        context=("zip", "postal", "postcode", "post code", "zipcode"),
        context_required=True,
        context_window=16,
    ),
    Pattern(
        "passport",
        t.PASSPORT,
        r"(?<![\w])[A-Z]{0,2}\d{6,9}(?![\w])",
        0.4,
        context=("passport",),
        context_boost=0.55,  # above a phone number's "number" context
        context_required=True,
        context_window=30,
    ),
    Pattern(
        "driver_license",
        t.DRIVER_LICENSE,
        r"(?<![\w-])(?:[A-Z]\d{3,14}|\d{7,12}|\d{3,4}-\d{2,3}-\d{3,4}|[A-Z]{1,2}\d{5,8}[A-Z]?)(?![\w-])",
        0.4,
        context=("driver", "driving", "licence", "license", "dl#", "dl #", "dl no"),
        context_boost=0.55,
        context_required=True,
        context_window=20,
    ),
    Pattern(
        "crypto_wallet",
        t.CRYPTO_WALLET,
        r"(?<![\w])(?:[13][1-9A-HJ-NP-Za-km-z]{25,34}|bc1[02-9ac-hj-np-z]{11,71}|0x[0-9a-fA-F]{40})(?![\w])",
        0.85,
        validate=wallet_valid,
        context=("bitcoin", "btc", "wallet", "ethereum", "eth", "crypto"),
        context_boost=0.1,
    ),
)
