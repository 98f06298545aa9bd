"""Checksum and validity rules for identifiers, shared by recognizers and surrogate generation.

Every function here is pure and total: it returns ``False`` (or raises ``ValueError`` for the
check-digit builders) on malformed input, never logs, and never puts its argument into a message.

Decisions written down:

- Chinese region codes: an 18-digit resident ID is accepted when its 6-digit region code is in Faker's
  ``zh_CN`` ssn provider list (2015 statistics-bureau codes plus 710000/810000/820000/830000 for
  Taiwan/Hong Kong/Macau residence permits), **or**, as a fallback, when its first two digits are a
  province-level code. IDs keep the region code of the place and year they were issued, so codes that
  were renamed or abolished (or created after 2015) still appear on valid cards; the check digit and the
  birth date carry the precision. ``strict_region=True`` uses only the 6-digit list. 15-digit legacy IDs
  have no check digit, so they always use the 6-digit list.
- Mainland mobile segments (MIIT allocations, including virtual operators and data-only numbers that
  still receive SMS): 13x, 145-149, 150-153, 155-159, 162, 165-167, 170-178, 18x, 190-193, 195-199.
  Not allocated to the public: 154, 160/161/163/164/168/169, 179, 194, and 140-144 (13-digit IoT).
- US SSN: besides the structural rules (area 000, 666, 900-999; group 00; serial 0000) we reject the
  numbers the SSA voided after public misuse: 078-05-1120 (Woolworth wallet card), 219-09-9999
  (advertisement) and 123-45-6789 (the textbook example, never issued).
- Taiwan ID: the national ID ([A-Z][12]) and the 2021 resident certificate ([A-Z][89]) share the digit
  rule; the pre-2021 resident certificate ([A-Z][A-D]) uses the units digit of the second letter's code.
"""

from __future__ import annotations

import datetime as _dt
import re
from functools import lru_cache

__all__ = [
    "CN_MOBILE_SEGMENTS",
    "CN_PROVINCE_CODES",
    "IBAN_LENGTHS",
    "cn_credit_code_check_char",
    "cn_credit_code_valid",
    "cn_mobile_valid",
    "cn_region_code_known",
    "cn_resident_id_check_digit",
    "cn_resident_id_valid",
    "hk_id_check_char",
    "hk_id_valid",
    "iban_check_digits",
    "iban_valid",
    "luhn_check_digit",
    "luhn_valid",
    "tw_id_check_digit",
    "tw_id_valid",
    "unionpay_prefix",
    "us_ssn_valid",
]

_DIGITS = frozenset("0123456789")
_SEPARATORS = re.compile(r"[\s\-]")


def _only_digits(value: str) -> bool:
    return bool(value) and all(c in _DIGITS for c in value)


# --------------------------------------------------------------------------------------------- Luhn


def _luhn_sum(digits: str, double_first: bool) -> int:
    # Walk from the right; ``double_first`` says whether the rightmost digit is doubled.
    total = 0
    double = double_first
    for c in reversed(digits):
        d = ord(c) - 48
        if double:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        double = not double
    return total


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only, at least 2) passes the Luhn mod-10 check."""
    if len(digits) < 2 or not _only_digits(digits):
        return False
    return _luhn_sum(digits, double_first=False) % 10 == 0


def luhn_check_digit(body: str) -> str:
    """The digit that, appended to ``body``, makes a Luhn-valid number."""
    if not _only_digits(body):
        raise ValueError("body must be ASCII digits")
    return str((10 - _luhn_sum(body, double_first=True) % 10) % 10)


def unionpay_prefix(value: str) -> bool:
    """True when a card number (separators allowed) has a China UnionPay IIN: 62 or 8100-8171."""
    digits = _SEPARATORS.sub("", value)
    if not _only_digits(digits) or len(digits) < 4:
        return False
    return digits.startswith("62") or 8100 <= int(digits[:4]) <= 8171


# --------------------------------------------------------------------------------------------- IBAN

# Total IBAN length per country (SWIFT IBAN registry). Unknown countries are rejected: every country that
# issues IBANs is listed, and a two-letter prefix outside the registry is not an IBAN.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

_IBAN_CHARS = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")


def _mod97(alnum: str) -> int:
    # Letters become 10..35; fold the number in chunks so the integer stays small.
    rem = 0
    for c in alnum:
        rem = (rem * 10 + ord(c) - 48) % 97 if c.isdigit() else (rem * 100 + ord(c) - 55) % 97
    return rem


def iban_valid(value: str) -> bool:
    """True for an IBAN (spaces allowed, any case) with the registry length and a mod-97 remainder of 1."""
    iban = re.sub(r"\s", "", value).upper()
    if not _IBAN_CHARS.fullmatch(iban):
        return False
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    if not 2 <= int(iban[2:4]) <= 98:  # 00, 01 and 99 can never be produced by ISO 13616
        return False
    return _mod97(iban[4:] + iban[:4]) == 1


def iban_check_digits(country: str, bban: str) -> str:
    """The two check digits for ``country`` + ``bban`` (ISO 13616: 98 minus the mod-97 of BBAN+CC00)."""
    cc = country.upper()
    b = bban.upper()
    if not re.fullmatch(r"[A-Z]{2}", cc) or not re.fullmatch(r"[A-Z0-9]+", b):
        raise ValueError("country must be two letters and bban alphanumeric")
    return f"{98 - _mod97(b + cc + '00'):02d}"


# ------------------------------------------------------------------------------------------- US SSN

_SSN = re.compile(r"(\d{3})([- ]?)(\d{2})\2(\d{4})")
_SSN_VOID = frozenset({"078051120", "219099999", "123456789"})


def us_ssn_valid(value: str) -> bool:
    """True for a structurally possible SSN (``AAA-GG-SSSS``, ``AAA GG SSSS`` or 9 digits), see module notes."""
    m = _SSN.fullmatch(value)
    if not m:
        return False
    area, group, serial = m.group(1), m.group(3), m.group(4)
    if area == "000" or area == "666" or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_VOID


# ----------------------------------------------------------------------------- Chinese resident ID

# Province-level codes of GB/T 2260 (83 is used by Taiwan residents' residence permits since 2018).
CN_PROVINCE_CODES: frozenset[str] = frozenset(
    str(n)
    for n in (
        *range(11, 16),
        *range(21, 24),
        *range(31, 38),
        *range(41, 47),
        *range(50, 55),
        *range(61, 66),
        71,
        81,
        82,
        83,
    )
)

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # indexed by (weighted sum mod 11)


@lru_cache(maxsize=1)
def _faker_area_codes() -> frozenset[str]:
    from faker.providers.ssn.zh_CN import Provider

    return frozenset(Provider.area_codes)


def cn_region_code_known(code: str, *, strict: bool = False) -> bool:
    """True when a 6-digit region code is listed by Faker (or, unless ``strict``, has a province prefix)."""
    if len(code) != 6 or not _only_digits(code):
        return False
    if code in _faker_area_codes():
        return True
    return not strict and code[:2] in CN_PROVINCE_CODES


def _date_ok(year: int, month: int, day: int, today: _dt.date | None) -> bool:
    try:
        born = _dt.date(year, month, day)
    except ValueError:
        return False
    return _dt.date(1900, 1, 1) < born <= (today or _dt.date.today())


def cn_resident_id_check_digit(body17: str) -> str:
    """The GB 11643 (ISO 7064 MOD 11-2) check character, ``0``-``9`` or ``X``, for a 17-digit body."""
    if len(body17) != 17 or not _only_digits(body17):
        raise ValueError("body must be 17 ASCII digits")
    return _ID_CHECK[sum(w * (ord(c) - 48) for w, c in zip(_ID_WEIGHTS, body17, strict=True)) % 11]


def cn_resident_id_valid(value: str, *, strict_region: bool = False, today: _dt.date | None = None) -> bool:
    """True for a mainland resident ID: 18 chars (check digit, region, birth date 1900..today) or 15 digits.

    A lower-case ``x`` check character is accepted. ``today`` is for tests.
    """
    if len(value) == 18:
        body, check = value[:17], value[17].upper()
        if not _only_digits(body) or cn_resident_id_check_digit(body) != check:
            return False
        if not cn_region_code_known(body[:6], strict=strict_region):
            return False
        return _date_ok(int(body[6:10]), int(body[10:12]), int(body[12:14]), today)
    if len(value) == 15:
        # Legacy IDs (issued before 1999) have no check digit: only the region list and the date guard them.
        if not _only_digits(value) or not cn_region_code_known(value[:6], strict=True):
            return False
        return _date_ok(1900 + int(value[6:8]), int(value[8:10]), int(value[10:12]), today)
    return False


# ------------------------------------------------------------------ Unified social credit code

_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015: no I, O, Z, S, V
_USCC_VALUE = {c: i for i, c in enumerate(_USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# First character: the registration authority (1 编制, 2 外交, ..., 9 工商, A 军队, N 农业, Y 其他).
_USCC_AUTHORITIES = frozenset("123456789ANY")


def cn_credit_code_check_char(body17: str) -> str:
    """The GB 32100-2015 check character for the first 17 characters of a unified social credit code."""
    if len(body17) != 17 or any(c not in _USCC_VALUE for c in body17):
        raise ValueError("body must be 17 characters of the credit-code alphabet")
    total = sum(w * _USCC_VALUE[c] for w, c in zip(_USCC_WEIGHTS, body17, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def cn_credit_code_valid(value: str) -> bool:
    """True for an 18-character unified social credit code: alphabet, authority, region digits, check char."""
    if len(value) != 18 or any(c not in _USCC_VALUE for c in value):
        return False
    if value[0] not in _USCC_AUTHORITIES or not _only_digits(value[2:8]):
        return False
    return cn_credit_code_check_char(value[:17]) == value[17]


# ---------------------------------------------------------------------------------------- HKID

_HKID = re.compile(r"([A-Z]{1,2})([0-9]{6})(?:\(([0-9A])\)|（([0-9A])）|([0-9A]))")


def hk_id_check_char(prefix: str, digits: str) -> str:
    """The HKID check character (``0``-``9`` or ``A``) for a 1-2 letter prefix and 6 digits."""
    if not re.fullmatch(r"[A-Z]{1,2}", prefix) or len(digits) != 6 or not _only_digits(digits):
        raise ValueError("prefix must be 1-2 capital letters and digits 6 ASCII digits")
    # A one-letter prefix is padded with a space, which counts 36; letters count A=10 .. Z=35.
    letters = [36] if len(prefix) == 1 else []
    letters += [ord(c) - 55 for c in prefix]
    total = (
        letters[0] * 9 + letters[1] * 8 + sum(w * (ord(c) - 48) for w, c in zip(range(7, 1, -1), digits, strict=True))
    )
    r = (11 - total % 11) % 11
    return "A" if r == 10 else str(r)


def hk_id_valid(value: str) -> bool:
    """True for a Hong Kong identity card number such as ``A123456(3)``, ``A1234563`` or ``AB987654(3)``."""
    m = _HKID.fullmatch(value.strip())
    if not m:
        return False
    check = m.group(3) or m.group(4) or m.group(5)
    return hk_id_check_char(m.group(1), m.group(2)) == check


# ------------------------------------------------------------------------------------- Taiwan ID

# Letter codes of the Taiwan ID rule (not alphabetical: I, O, W, X, Y, Z were added later).
_TW_LETTER = dict(zip("ABCDEFGHJKLMNPQRSTUVXYWZIO", range(10, 36), strict=True))
_TW_ID = re.compile(r"([A-Z])([12389]|[A-D])([0-9]{7})([0-9])")


def tw_id_check_digit(body9: str) -> str:
    """The check digit for the first nine characters of a Taiwan ID (letter, gender/type char, 7 digits)."""
    m = re.fullmatch(r"([A-Z])([12389]|[A-D])([0-9]{7})", body9)
    if not m:
        raise ValueError("body must be a capital letter, a type character and 7 digits")
    code = _TW_LETTER[m.group(1)]
    second = m.group(2)
    # Old resident certificates (second char A-D) use the units digit of that letter's code.
    d2 = _TW_LETTER[second] % 10 if second.isalpha() else int(second)
    total = (
        code // 10
        + (code % 10) * 9
        + d2 * 8
        + sum(w * (ord(c) - 48) for w, c in zip(range(7, 0, -1), m.group(3), strict=True))
    )
    return str((10 - total % 10) % 10)


def tw_id_valid(value: str) -> bool:
    """True for a Taiwan national ID (``A123456789``) or resident certificate number with a correct check digit."""
    m = _TW_ID.fullmatch(value)
    if not m:
        return False
    return tw_id_check_digit(value[:9]) == value[9]


# ------------------------------------------------------------------------------ Mainland mobile

CN_MOBILE_SEGMENTS: frozenset[str] = frozenset(
    [f"13{d}" for d in range(10)]
    + ["145", "146", "147", "148", "149"]
    + ["150", "151", "152", "153", "155", "156", "157", "158", "159"]
    + ["162", "165", "166", "167"]
    + [f"17{d}" for d in range(9)]
    + [f"18{d}" for d in range(10)]
    + ["190", "191", "192", "193", "195", "196", "197", "198", "199"]
)

_MOBILE_NOISE = re.compile(r"[\s\-()（）]")


def cn_mobile_valid(value: str) -> bool:
    """True for a mainland mobile number in an allocated segment; ``+86``/``0086``/``86`` and separators allowed."""
    digits = _MOBILE_NOISE.sub("", value)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return len(digits) == 11 and _only_digits(digits) and digits[:3] in CN_MOBILE_SEGMENTS
