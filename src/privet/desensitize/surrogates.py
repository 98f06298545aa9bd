"""Consistent, format-preserving, valid surrogate values (pseudonyms) for detected personal data.

:func:`surrogate` is a pure function of (key, entity, value): the same inputs give the same surrogate in
every process, and a different key gives unrelated surrogates. Randomness comes from an HMAC-SHA256 keyed
pseudo-random generator (HMAC in counter mode, seeded by HMAC over the key, the entity and the value, or one
part of it such as a surname), never from ``random``: beyond the parts deliberately kept (region code,
issuer prefix, country and carrier prefix, TLD), the surrogate reveals nothing about the value without the key.

Surrogates keep what makes data useful and pass the checks downstream code applies: region codes and
check digits of resident ids, issuer prefixes and Luhn digits of cards, country and carrier prefixes of
phone numbers, the script of names, the TLD of e-mail addresses, mod-97 of IBANs. Anything else keeps its
character classes (digit, upper, lower, CJK, other scripts) and separators.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from functools import cache

import phonenumbers
from faker.providers.address import de_DE as faker_places_de
from faker.providers.address import en_GB as faker_places_gb
from faker.providers.address import fr_FR as faker_places_fr
from faker.providers.address import it_IT as faker_places_it
from faker.providers.address import zh_CN as faker_places_zh
from faker.providers.internet import en_US as faker_internet_en
from faker.providers.person import en_US as faker_en
from faker.providers.person import zh_CN as faker_zh

from privet.crypto.keyed import KeyedStream
from privet.desensitize import types as t
from privet.desensitize.validators import (
    cn_credit_code_check_char,
    cn_resident_id_check_digit,
    iban_check_digits,
    luhn_check_digit,
    us_ssn_valid,
)
from privet.errors import UsageError

__all__ = ["surrogate"]

_MIN_KEY = 16
_ATTEMPTS = 8  # retries (new PRG streams) when a surrogate happens to equal its value
_DIGITS = "0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


# -- keyed generator -------------------------------------------------------------------------------
class _Prg:
    """Deterministic random numbers from a :class:`~privet.crypto.keyed.KeyedStream` bound to key and parts."""

    __slots__ = ("_stream",)

    def __init__(self, key: bytes, *parts: str) -> None:
        # Length-prefixed parts, so that ("ab", "c") and ("a", "bc") seed different streams.
        message = b"privet surrogate v1" + b"".join(
            len(raw).to_bytes(4, "big") + raw for raw in (p.encode("utf-8", "surrogatepass") for p in parts)
        )
        self._stream = KeyedStream(key, message)

    def below(self, n: int) -> int:
        """A uniform integer in [0, n), by rejection sampling (no modulo bias)."""
        if n <= 1:
            return 0
        bits = (n - 1).bit_length()
        nbytes = (bits + 7) // 8
        mask = (1 << bits) - 1
        while True:
            x = int.from_bytes(self._stream.read(nbytes), "big") & mask
            if x < n:
                return x

    def between(self, low: int, high: int) -> int:
        """A uniform integer in [low, high]."""
        return low + self.below(high - low + 1)

    def choice(self, items: Sequence[str]) -> str:
        return items[self.below(len(items))]

    def digits(self, n: int) -> str:
        return "".join(_DIGITS[self.below(10)] for _ in range(n))


Factory = Callable[..., _Prg]  # factory(*parts) -> a generator keyed and bound to entity and attempt


# -- check characters ------------------------------------------------------------------------------
_CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015: no I, O, Z, S, V
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def _org_code_check_char(body8: str) -> str:
    """GB 11714-1997 check character of the 9-character organization code inside a credit code."""
    c = 11 - sum(int(ch) * w for ch, w in zip(body8, _ORG_WEIGHTS, strict=True)) % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


# -- word lists (from Faker's providers) -----------------------------------------------------------
@cache
def _latin_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    first = tuple(sorted({n for n in faker_en.Provider.first_names if n.isascii() and n.isalpha()}))
    last = tuple(sorted({n for n in faker_en.Provider.last_names if n.isascii() and n.isalpha()}))
    return first, last


@cache
def _latin_words_by_length() -> dict[int, tuple[str, ...]]:
    first, last = _latin_names()
    by_length: dict[int, set[str]] = {}
    for word in first + last:
        by_length.setdefault(len(word), set()).add(word.lower())
    return {n: tuple(sorted(words)) for n, words in by_length.items()}


@cache
def _latin_places() -> tuple[str, ...]:
    """Real town names of several Latin-script countries (Faker's lists), single words so the shape holds."""
    towns: set[str] = set()
    for provider in (faker_places_de.Provider, faker_places_fr.Provider, faker_places_it.Provider):
        towns.update(c for c in getattr(provider, "cities", ()) if isinstance(c, str) and c.isalpha() and c.isascii())
    towns.update(c for c in getattr(faker_places_gb.Provider, "cities", ()) if isinstance(c, str) and c.isalpha())
    return tuple(sorted(towns))


@cache
def _chinese_place_names() -> dict[int, tuple[str, ...]]:
    """Faker's Chinese city and district names (suffix removed), by length."""
    by_length: dict[int, set[str]] = {}
    for name in (*faker_places_zh.Provider.cities, *faker_places_zh.Provider.districts):
        by_length.setdefault(len(name), set()).add(name)
    return {n: tuple(sorted(v)) for n, v in by_length.items()}


@cache
def _chinese_place_chars() -> tuple[str, ...]:
    return tuple(sorted({ch for names in _chinese_place_names().values() for name in names for ch in name}))


@cache
def _chinese_names() -> tuple[dict[int, tuple[str, ...]], tuple[str, ...]]:
    surnames: dict[int, set[str]] = {}
    for s in faker_zh.Provider.last_names:
        surnames.setdefault(len(s), set()).add(s)
    given = sorted({ch for name in faker_zh.Provider.first_names for ch in name})
    return {n: tuple(sorted(v)) for n, v in surnames.items()}, tuple(given)


@cache
def _cjk_pool() -> tuple[str, ...]:
    """Common characters (from Faker's zh_CN names), so replaced Chinese text stays readable."""
    surnames, given = _chinese_names()
    return tuple(sorted({ch for pool in (*surnames.values(), given) for word in pool for ch in word}))


@cache
def _letters_like(block: int, upper: bool) -> tuple[str, ...]:
    """Letters of one 128-code-point block with the given case, to replace letters of other scripts."""
    chars = (chr(c) for c in range(block * 128, block * 128 + 128))
    return tuple(c for c in chars if c.isalpha() and (c.isupper() if upper else not c.isupper()))


_FREE_MAIL = frozenset(faker_internet_en.Provider.free_email_domains) | {
    "outlook.com",
    "icloud.com",
    "qq.com",
    "163.com",
    "126.com",
    "sina.com",
}
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "ne", "or"})
_HAN = re.compile(r"[\u4e00-\u9fff]")
# A named administrative or street unit and its suffix: 浙江省, 杭州市, 西湖区, 文三路, 阳光小区.
_PLACE_UNIT = re.compile(
    r"([\u4e00-\u9fff]{1,6}?)(自治区|特别行政区|省|市|区|县|镇|乡|村|街道|大道|路|街|巷|小区|花园|大厦)"
)
_FIRM_WORDS = frozenset(
    {"inc", "llc", "ltd", "plc", "corp", "co", "corporation", "company", "group", "gmbh", "ag", "sa", "and", "sons",
     "the", "of", "bank", "university", "hospital", "clinic", "foundation", "institute", "partners", "holdings",
     "systems", "technologies", "solutions", "services", "international", "associates", "consulting", "labs"}
)  # fmt: skip
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "madam", "mx", "jr", "sr", "ii", "iii", "iv"})


# Basic alphabets of a few scripts, by case: (first, last) letter ranges.
_BASIC_LETTERS: dict[bool, tuple[tuple[str, str], ...]] = {
    True: (("\u0410", "\u042f"), ("\u0391", "\u03a1"), ("\u03a3", "\u03a9")),  # Cyrillic А-Я, Greek Α-Ω (no U+03A2)
    False: (("\u0430", "\u044f"), ("\u03b1", "\u03c9")),  # Cyrillic а-я, Greek α-ω
}


# -- generic ---------------------------------------------------------------------------------------
def _char_like(ch: str, prg: _Prg) -> str:
    """A random character of the same class as ``ch``; separators and punctuation are kept."""
    if ch in _DIGITS:
        return _DIGITS[prg.below(10)]
    if "A" <= ch <= "Z":
        return _UPPER[prg.below(26)]
    if "a" <= ch <= "z":
        return _LOWER[prg.below(26)]
    if _CJK.fullmatch(ch):
        return prg.choice(_cjk_pool())
    if ch.isdigit():
        return _DIGITS[prg.below(10)]
    if ch.isalpha():
        script = _BASIC_LETTERS.get(ch.isupper())
        basic = next((r for r in script if r[0] <= ch <= r[1]), None) if script else None
        if basic is not None:  # the common letters of that script, not archaic or extended ones
            return chr(ord(basic[0]) + prg.below(ord(basic[1]) - ord(basic[0]) + 1))
        pool = _letters_like(ord(ch) // 128, ch.isupper())
        return prg.choice(pool) if pool else ch
    return ch


def _classes(value: str, prg: _Prg) -> str:
    return "".join(_char_like(ch, prg) for ch in value)


def _put_digits(value: str, digits: str) -> str:
    """``value`` with its ASCII digits replaced, in order, by ``digits`` (separators stay in place)."""
    it = iter(digits)
    return "".join(next(it) if ch in _DIGITS else ch for ch in value)


def _digits_of(value: str) -> str:
    return "".join(ch for ch in value if ch in _DIGITS)


def _match_case(word: str, model: str) -> str:
    if len(model) > 1 and model.isupper():
        return word.upper()
    if model.islower():
        return word.lower()
    return word[:1].upper() + word[1:].lower()


def _word_like(word: str, prg: _Prg) -> str:
    """A name-like word of the same length and case pattern (random letters when no word fits)."""
    pool = _latin_words_by_length().get(len(word))
    out = prg.choice(pool) if pool else "".join(_LOWER[prg.below(26)] for _ in word)
    return _match_case(out, word)


# -- entities --------------------------------------------------------------------------------------
def _resident_id(value: str, new: Factory) -> str | None:
    compact = value.strip()
    prg = new()
    if re.fullmatch(r"\d{17}[\dXx]", compact):
        birth = _birth_date(prg, date(1940, 1, 1), date(2010, 12, 31))
        body = compact[:6] + birth.strftime("%Y%m%d") + prg.digits(3)
        return body + cn_resident_id_check_digit(body)
    if re.fullmatch(r"\d{15}", compact):  # legacy ids (before 1999): YYMMDD birth date, no check digit
        birth = _birth_date(prg, date(1930, 1, 1), date(1999, 12, 31))
        return compact[:6] + birth.strftime("%y%m%d") + prg.digits(3)
    return None


def _birth_date(prg: _Prg, first: date, last: date) -> date:
    return first + timedelta(days=prg.below((last - first).days + 1))


def _card(value: str, new: Factory) -> str | None:
    digits = _digits_of(value)
    if not 12 <= len(digits) <= 19:
        return None
    prg = new()
    body = digits[:6] + prg.digits(len(digits) - 7)
    return _put_digits(value, body + luhn_check_digit(body))


def _phone(value: str, entity: str, new: Factory) -> str | None:
    digits = _digits_of(value)
    if len(digits) < 5:
        return None
    prg = new()
    parsed = _parse_phone(value, entity)
    if parsed is not None:
        number, region = parsed
        nsn = phonenumbers.national_significant_number(number)
        if digits.endswith(nsn):
            lead = len(digits) - len(nsn)  # country code, national prefix or IDD prefix as written
            ndc = phonenumbers.length_of_national_destination_code(number)
            keep = ndc if 0 < ndc < len(nsn) - 2 else min(3, len(nsn) - 4)
            if entity == t.CN_MOBILE:
                keep = max(keep, 3)
            keep = max(keep, 0)
            candidate = ""
            for _ in range(64):  # most random tails are valid; a few regions need a handful of tries
                candidate = nsn[:keep] + prg.digits(len(nsn) - keep)
                try:
                    trial = phonenumbers.parse(f"+{number.country_code}{candidate}", None)
                except phonenumbers.NumberParseException:
                    continue
                if phonenumbers.is_valid_number(trial) and phonenumbers.region_code_for_number(trial) == region:
                    break
            return _put_digits(value, digits[:lead] + candidate)
    keep = 3 if len(digits) >= 7 else 1
    return _put_digits(value, digits[:keep] + prg.digits(len(digits) - keep))


def _parse_phone(value: str, entity: str) -> tuple[phonenumbers.PhoneNumber, str] | None:
    regions: tuple[str | None, ...]
    if entity in (t.CN_MOBILE, t.CN_LANDLINE):
        regions = ("CN",)
    elif value.lstrip().startswith("+"):
        regions = (None,)
    else:
        regions = ("US", "CN", "GB")
    for region in regions:
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            found = phonenumbers.region_code_for_number(number)
            if found:
                return number, found
    return None


def _person(value: str, new: Factory) -> str | None:
    stripped = value.strip()
    if re.fullmatch(r"[\u3400-\u4dbf\u4e00-\u9fff]{2,4}", stripped):
        return value.replace(stripped, _chinese_name(stripped, new))
    if re.fullmatch(r"[A-Za-z\u00c0-\u024f.'\- ]+", value) and any(c.isalpha() for c in value):
        return _latin_name(value, new)
    return None


def _chinese_name(name: str, new: Factory) -> str:
    surnames, given = _chinese_names()
    n = 2 if len(name) > 2 and name[:2] in surnames.get(2, ()) else 1
    # The surname and the given name are drawn separately so that one family keeps one surrogate surname.
    surname = new("surname", name[:n]).choice(surnames.get(n) or surnames[1])
    prg = new("given", name)
    return surname + "".join(prg.choice(given) for _ in range(len(name) - n))


def _latin_name(value: str, new: Factory) -> str:
    first, last = _latin_names()
    words = re.findall(r"[^\W\d_]+", value)
    names = [w for w in words if w.lower() not in _TITLES and len(w) > 1]
    last_word = names[-1] if len(names) > 1 else None

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        if word.lower() in _TITLES:
            return word
        if len(word) == 1:  # an initial
            return _match_case(new("initial", word.lower()).choice(_UPPER), word)
        # Each part is drawn on its own (per role), so "John Smith" and "Smith" share the surname.
        is_last = match.start() == value.rfind(last_word) if last_word else False
        pool, role = (last, "last") if is_last else (first, "first")
        return _match_case(new(role, word.lower()).choice(pool), word)

    return re.sub(r"[^\W\d_]+", swap, value)


def _place(value: str, new: Factory) -> str | None:
    """A Latin place name becomes a real town name, word by word (casing kept: "ESPOO" -> "BREMEN")."""
    if not re.fullmatch(r"[A-Za-z\u00c0-\u024f.'\- ]+", value):
        return None
    towns = _latin_places()

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        if word.islower() and not value.islower():
            return word  # a particle: "Villafranca del Cid"
        return _match_case(new("place", word.lower()).choice(towns), word)

    return re.sub(r"[^\W\d_]{3,}", swap, value)


def _chinese_place(value: str, new: Factory) -> str | None:
    """北京市朝阳区建国路88号 -> 潮州市和平区沙市路17号: each named unit gets a place name of its length and keeps
    its suffix (省, 市, 区, 县, 路 ...); house and room numbers keep their digit count."""
    if not _HAN.search(value):
        return None
    names = _chinese_place_names()

    def rename(name: str) -> str:
        pool = names.get(len(name))
        if pool:
            return new("place", name).choice(pool)
        prg = new("place", name)
        return "".join(prg.choice(_chinese_place_chars()) for _ in name)

    out = _PLACE_UNIT.sub(lambda m: rename(m.group(1)) + m.group(2), value)
    if out == value:  # no suffixed unit ("上海"): the Han run itself is the name
        out = re.sub(r"[\u4e00-\u9fff]+", lambda m: rename(m.group(0)), value)
    digits = new("number", value)
    return re.sub(r"\d", lambda _: _DIGITS[digits.below(10)], out)


def _organisation(value: str, new: Factory) -> str | None:
    """A firm keeps its legal form ("Inc.", "GmbH", "and Sons"); its name words become surnames."""
    if not re.fullmatch(r"[A-Za-z\u00c0-\u024f0-9.,'&\- ]+", value):
        return None
    _, last = _latin_names()

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        if word.lower() in _FIRM_WORDS:
            return word
        return _match_case(new("firm", word.lower()).choice(last), word)

    return re.sub(r"[^\W\d_]{2,}", swap, value)


def _email(value: str, new: Factory) -> str | None:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain:
        return None
    prg = new("local", value.lower())
    new_local = re.sub(r"[^\W\d_]+", lambda m: _word_like(m.group(0), prg), local)
    new_local = re.sub(r"\d", lambda _: _DIGITS[prg.below(10)], new_local)
    return f"{new_local}@{_domain(domain, new)}"


def _domain(domain: str, new: Factory) -> str:
    if domain.lower() in _FREE_MAIL:  # not identifying, and keeping it keeps the data realistic
        return domain
    labels = domain.split(".")
    keep = 1
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2].lower() in _SECOND_LEVEL:
        keep = 2  # example.co.uk, example.com.cn
    prg = new("domain", domain.lower())  # one organization's domain maps to one surrogate domain
    head = [_classes_words(label, prg) for label in labels[:-keep]]
    return ".".join([*head, *labels[-keep:]])


def _classes_words(text: str, prg: _Prg) -> str:
    text = re.sub(r"[A-Za-z]+", lambda m: _word_like(m.group(0), prg), text)
    return "".join(_char_like(c, prg) if not c.isascii() or c.isdigit() else c for c in text)


def _iban(value: str, new: Factory) -> str | None:
    compact = value.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return None
    prg = new()
    country, bban = compact[:2], compact[4:]
    new_bban = "".join(_char_like(c, prg) for c in bban)
    out = iter(country + iban_check_digits(country, new_bban) + new_bban)
    return "".join(c if c == " " else next(out) for c in value)


def _ssn(value: str, new: Factory) -> str | None:
    if len(_digits_of(value)) != 9:
        return None
    prg = new()
    while True:  # a few numbers in the valid ranges are still void (advertised, e.g. 078-05-1120)
        area = prg.between(1, 898)
        area = 899 if area == 666 else area  # 666 is never issued; 899 stays in the valid range
        digits = f"{area:03d}{prg.between(1, 99):02d}{prg.between(1, 9999):04d}"
        if us_ssn_valid(digits):
            return _put_digits(value, digits)


def _credit_code(value: str, new: Factory) -> str | None:
    compact = value.strip().upper()
    if len(compact) != 18 or any(c not in _CREDIT_ALPHABET for c in compact):
        return None
    prg = new()
    org = prg.digits(8)
    body = compact[:8] + org + _org_code_check_char(org)
    return value.replace(value.strip(), body + cn_credit_code_check_char(body))


def _ip(value: str, new: Factory) -> str | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    prg = new()
    if address.version == 4:
        first = prg.between(1, 222)
        first = 223 if first in (10, 127) else first  # keep it a plain unicast-looking address
        octets = [first, prg.below(256), prg.below(256), prg.between(1, 254)]
        out = ".".join(map(str, octets))
    else:
        # A global unicast address (2000::/3), in the same compressed or exploded form as the value.
        bits = (0b001 << 125) | int.from_bytes(bytes(prg.below(256) for _ in range(16)), "big") >> 3
        v6 = ipaddress.IPv6Address(bits)
        out = v6.exploded if value.strip() == address.exploded else v6.compressed
    return value.replace(value.strip(), out)


# -- public ----------------------------------------------------------------------------------------
def surrogate(entity: str, value: str, key: bytes) -> str:
    """A consistent, format-preserving, valid surrogate for ``value`` of type ``entity`` under ``key``."""
    if not isinstance(key, bytes) or len(key) < _MIN_KEY:
        raise UsageError(f"a surrogate key must be at least {_MIN_KEY} bytes")
    if not value:
        return value
    out = value
    for attempt in range(_ATTEMPTS):

        def new(*parts: str, _attempt: int = attempt) -> _Prg:
            return _Prg(key, entity, str(_attempt), *(parts or (value,)))

        out = _one(entity, value, new)
        if out != value:
            return out
    return out


def _one(entity: str, value: str, new: Factory) -> str:
    out: str | None = None
    if entity == t.CN_RESIDENT_ID:
        out = _resident_id(value, new)
    elif entity in (t.CREDIT_CARD, t.CN_BANK_CARD):
        out = _card(value, new)
    elif entity in (t.PHONE, t.CN_MOBILE, t.CN_LANDLINE):
        out = _phone(value, entity, new)
    elif entity == t.PERSON:
        out = _person(value, new)
    elif entity == t.EMAIL:
        out = _email(value, new)
    elif entity == t.IBAN:
        out = _iban(value, new)
    elif entity == t.US_SSN:
        out = _ssn(value, new)
    elif entity == t.CN_CREDIT_CODE:
        out = _credit_code(value, new)
    elif entity == t.IP_ADDRESS:
        out = _ip(value, new)
    elif entity == t.LOCATION:
        out = _chinese_place(value, new) or _place(value, new)
    elif entity == t.ORGANIZATION:
        out = _organisation(value, new)
    # A value that does not have its entity's usual shape still gets a same-shaped surrogate.
    return out if out is not None else _classes(value, new())
