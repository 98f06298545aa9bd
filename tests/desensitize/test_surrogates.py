"""Surrogates: valid (check digits, Luhn, mod-97, phone validity), shape-preserving and consistent per key."""

from __future__ import annotations

import ipaddress
import random
import re
from datetime import date, datetime

import phonenumbers
import pytest

from privet.desensitize import types as t
from privet.desensitize import validators
from privet.desensitize.surrogates import surrogate
from privet.errors import UsageError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
RNG = random.Random(20240611)  # fixed seed: the inputs are test data, not secrets


# -- independent checks (written here so that the tests do not reuse the code under test) -------------
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def resident_id_ok(value: str) -> bool:
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    total = sum(int(c) * w for c, w in zip(value[:17], weights, strict=True))
    return value[17] == "10X98765432"[total % 11]


def iban_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


CREDIT = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def credit_code_ok(value: str) -> bool:
    weights = [3**i % 31 for i in range(17)]
    total = sum(CREDIT.index(c) * w for c, w in zip(value[:17], weights, strict=True))
    return value[17] == CREDIT[(31 - total % 31) % 31]


def luhn_complete(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


def random_resident_id() -> str:
    region = RNG.choice(["110105", "310115", "440305", "510107", "330106"])
    birth = date(1950, 1, 1).toordinal() + RNG.randrange(20000)
    body = region + date.fromordinal(birth).strftime("%Y%m%d") + f"{RNG.randrange(1000):03d}"
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


# -- validity --------------------------------------------------------------------------------------
def test_resident_id_keeps_region_and_is_valid() -> None:
    for _ in range(200):
        value = random_resident_id()
        out = surrogate(t.CN_RESIDENT_ID, value, KEY)
        assert re.fullmatch(r"\d{17}[\dX]", out)
        assert out[:6] == value[:6]
        assert resident_id_ok(out)
        assert validators.cn_resident_id_valid(out)
        datetime.strptime(out[6:14], "%Y%m%d")  # a real calendar date
        assert out != value


def test_legacy_15_digit_resident_id_stays_15_digits() -> None:
    out = surrogate(t.CN_RESIDENT_ID, "110105491231002", KEY)
    assert re.fullmatch(r"\d{15}", out)
    assert out.startswith("110105")
    datetime.strptime("19" + out[6:12], "%Y%m%d")
    assert validators.cn_resident_id_valid(out)


def test_resident_id_with_lower_case_x() -> None:
    assert resident_id_ok(surrogate(t.CN_RESIDENT_ID, "11010519491231002x", KEY))


@pytest.mark.parametrize("entity", [t.CREDIT_CARD, t.CN_BANK_CARD])
@pytest.mark.parametrize("length", [16, 19])
def test_cards_keep_issuer_and_length_and_pass_luhn(entity: str, length: int) -> None:
    for _ in range(100):
        value = luhn_complete(
            RNG.choice(["411111", "622202", "555555", "378282"])
            + "".join(RNG.choice("0123456789") for _ in range(length - 7))
        )
        out = surrogate(entity, value, KEY)
        assert len(out) == length and out.isdigit()
        assert out[:6] == value[:6]
        assert luhn_ok(out)
        assert validators.luhn_valid(out)


def test_card_keeps_its_grouping() -> None:
    out = surrogate(t.CREDIT_CARD, "4111 1111-1111 1111", KEY)
    assert re.fullmatch(r"4111 11\d\d-\d{4} \d{4}", out)
    assert luhn_ok(out.replace(" ", "").replace("-", ""))


@pytest.mark.parametrize(
    "value", ["13800138000", "138-0013-8000", "138 0013 8000", "+86 138 0013 8000", "+8613912345678"]
)
def test_cn_mobile_keeps_country_carrier_and_separators(value: str) -> None:
    out = surrogate(t.CN_MOBILE, value, KEY)
    assert re.sub(r"\d", "0", out) == re.sub(r"\d", "0", value)
    digits_in, digits_out = re.sub(r"\D", "", value), re.sub(r"\D", "", out)
    keep = len(digits_in) - 8  # country code (if any) and the 3-digit carrier prefix
    assert digits_out[:keep] == digits_in[:keep]
    assert phonenumbers.is_valid_number(phonenumbers.parse(out, "CN"))


@pytest.mark.parametrize(
    ("value", "region"),
    [
        ("+1 (415) 555-2671", "US"),
        ("+44 20 7946 0958", "GB"),
        ("+49 30 901820", "DE"),
        ("+33 1 42 68 53 00", "FR"),
        ("(212) 555-0100", "US"),
        ("+81 3-1234-5678", "JP"),
    ],
)
def test_international_phone_stays_valid_for_its_region(value: str, region: str) -> None:
    out = surrogate(t.PHONE, value, KEY)
    assert re.sub(r"\d", "0", out) == re.sub(r"\d", "0", value)
    parsed = phonenumbers.parse(out, "US")
    assert phonenumbers.region_code_for_number(parsed) == region
    assert phonenumbers.is_valid_number(parsed)
    assert out != value


def test_unparseable_phone_keeps_shape() -> None:
    out = surrogate(t.PHONE, "12-34-56", KEY)
    assert re.fullmatch(r"1\d-\d\d-\d\d", out)
    assert re.sub(r"\d", "0", surrogate(t.PHONE, "#12-34", KEY)) == "#00-00"  # too short: classes only


@pytest.mark.parametrize("value", ["John Smith", "Mary-Jane O'Connor", "Dr. Alice Brown", "ROBERT", "li wei"])
def test_latin_name_becomes_latin_name_of_same_shape(value: str) -> None:
    out = surrogate(t.PERSON, value, KEY)
    assert out != value
    assert out.isascii()
    assert len(out.split()) == len(value.split())
    assert re.sub(r"[A-Za-z]+", "w", out) == re.sub(r"[A-Za-z]+", "w", value)  # punctuation and spacing kept
    if value.startswith("Dr."):
        assert out.startswith("Dr. ")
    if value.isupper():
        assert out.isupper()
    if value.islower():
        assert out.islower()


def test_latin_surname_is_consistent_across_mentions() -> None:
    full = surrogate(t.PERSON, "John Smith", KEY)
    other = surrogate(t.PERSON, "Jane Smith", KEY)
    assert full.split()[-1] == other.split()[-1]
    assert full.split()[0] == surrogate(t.PERSON, "John Doe", KEY).split()[0]


@pytest.mark.parametrize("value", ["王伟", "李小明", "欧阳修", "司马相如", "张三"])
def test_chinese_name_becomes_chinese_name_of_same_length(value: str) -> None:
    out = surrogate(t.PERSON, value, KEY)
    assert out != value
    assert len(out) == len(value)
    assert all("\u4e00" <= c <= "\u9fff" for c in out)


def test_chinese_family_keeps_one_surrogate_surname() -> None:
    assert surrogate(t.PERSON, "王伟", KEY)[0] == surrogate(t.PERSON, "王芳", KEY)[0]


@pytest.mark.parametrize(
    "value", ["john.doe@example.com", "j_smith42@mail.acme-corp.co.uk", "li.wei@company.com.cn", "a@b.io"]
)
def test_email_keeps_tld_and_shape(value: str) -> None:
    out = surrogate(t.EMAIL, value, KEY)
    assert out != value
    local, domain = value.split("@")
    new_local, new_domain = out.split("@")
    shape = lambda s: re.sub(r"[a-z]", "a", re.sub(r"\d", "0", s.lower()))  # noqa: E731
    assert shape(new_local) == shape(local)
    assert new_domain.count(".") == domain.count(".")
    suffix = ".co.uk" if domain.endswith(".co.uk") else ".com.cn" if domain.endswith(".com.cn") else None
    assert new_domain.endswith(suffix or "." + domain.rsplit(".", 1)[1])


def test_email_domain_is_consistent_and_free_mail_is_kept() -> None:
    a = surrogate(t.EMAIL, "alice@acme.org", KEY).split("@")[1]
    b = surrogate(t.EMAIL, "bob@acme.org", KEY).split("@")[1]
    assert a == b != "acme.org"
    assert surrogate(t.EMAIL, "someone@gmail.com", KEY).endswith("@gmail.com")


@pytest.mark.parametrize(
    "value",
    ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606", "NL91ABNA0417164300"],
)
def test_iban_keeps_country_and_length_with_valid_check_digits(value: str) -> None:
    assert iban_ok(value)
    out = surrogate(t.IBAN, value, KEY)
    assert out[:2] == value[:2]
    assert len(out) == len(value)
    assert [i for i, c in enumerate(out) if c == " "] == [i for i, c in enumerate(value) if c == " "]
    assert iban_ok(out)
    assert validators.iban_valid(out)
    assert out != value


def test_ssn_is_in_the_valid_range() -> None:
    for i in range(200):
        value = f"{100 + i:03d}-{10 + i % 80:02d}-{1000 + i:04d}"
        out = surrogate(t.US_SSN, value, KEY)
        m = re.fullmatch(r"(\d{3})-(\d{2})-(\d{4})", out)
        assert m
        area, group, serial = (int(g) for g in m.groups())
        assert 1 <= area <= 899 and area != 666
        assert group >= 1 and serial >= 1
        assert validators.us_ssn_valid(out)


def test_credit_code_has_a_valid_check_char() -> None:
    value = "91350100M000100Y43"
    assert credit_code_ok(value)
    out = surrogate(t.CN_CREDIT_CODE, value, KEY)
    assert len(out) == 18 and out[:8] == value[:8]
    assert all(c in CREDIT for c in out)
    assert credit_code_ok(out)
    assert validators.cn_credit_code_valid(out)


@pytest.mark.parametrize("value", ["192.168.1.20", "8.8.8.8", "2001:db8::1", "fe80:0000:0000:0000:0202:b3ff:fe1e:8329"])
def test_ip_keeps_version(value: str) -> None:
    out = surrogate(t.IP_ADDRESS, value, KEY)
    assert ipaddress.ip_address(out).version == ipaddress.ip_address(value).version
    assert out != value
    if value.count(":") == 7:
        assert out.count(":") == 7  # the exploded form stays exploded


def test_other_entities_keep_character_classes() -> None:
    value = "AB-123 xyz 北京市海淀区"
    out = surrogate(t.PASSPORT, value, KEY)
    assert len(out) == len(value)
    for a, b in zip(value, out, strict=True):
        if a.isdigit():
            assert b.isdigit()
        elif a.isupper():
            assert b.isupper() and b.isascii()
        elif a.islower():
            assert b.islower() and b.isascii()
        elif "\u4e00" <= a <= "\u9fff":
            assert "\u4e00" <= b <= "\u9fff"
        else:
            assert a == b


def test_invalid_shapes_fall_back_to_character_classes() -> None:
    out = surrogate(t.CN_RESIDENT_ID, "12345", KEY)
    assert out.isdigit() and len(out) == 5
    assert surrogate(t.EMAIL, "not-an-email", KEY).count("-") == 2


# -- consistency -----------------------------------------------------------------------------------
CASES = [
    (t.CN_RESIDENT_ID, "11010519491231002X"),
    (t.CREDIT_CARD, "4111111111111111"),
    (t.PHONE, "+1 415 555 2671"),
    (t.PERSON, "John Smith"),
    (t.PERSON, "王小明"),
    (t.EMAIL, "john@example.com"),
    (t.IBAN, "DE89370400440532013000"),
    (t.US_SSN, "123-45-6789"),
    (t.IP_ADDRESS, "10.0.0.1"),
    (t.LOCATION, "221B Baker Street"),
]


@pytest.mark.parametrize(("entity", "value"), CASES)
def test_same_key_and_value_give_the_same_surrogate(entity: str, value: str) -> None:
    assert surrogate(entity, value, KEY) == surrogate(entity, value, bytes(KEY))


@pytest.mark.parametrize(("entity", "value"), CASES)
def test_another_key_gives_another_surrogate(entity: str, value: str) -> None:
    assert surrogate(entity, value, KEY) != surrogate(entity, value, OTHER_KEY)


@pytest.mark.parametrize(
    ("entity", "make"),
    [
        (t.CN_RESIDENT_ID, random_resident_id),
        (t.CREDIT_CARD, lambda: luhn_complete("411111" + "".join(RNG.choice("0123456789") for _ in range(9)))),
        (t.CN_MOBILE, lambda: "139" + "".join(RNG.choice("0123456789") for _ in range(8))),
        (t.PERSON, lambda: RNG.choice(["Ann", "Bob", "Carl", "Dora"]) + " " + f"Name{RNG.randrange(10**6)}"[4:]),
        (t.EMAIL, lambda: f"user{RNG.randrange(10**9)}@example.com"),
        (t.PASSPORT, lambda: f"E{RNG.randrange(10**8):08d}"),
    ],
)
def test_different_values_give_different_surrogates(entity: str, make: object) -> None:
    values = {make() for _ in range(300)}  # type: ignore[operator]
    outputs = {surrogate(entity, v, KEY) for v in values}
    assert len(outputs) >= 0.97 * len(values)


def test_short_key_is_refused() -> None:
    with pytest.raises(UsageError):
        surrogate(t.PERSON, "John", b"short")


def test_empty_value_stays_empty() -> None:
    assert surrogate(t.PERSON, "", KEY) == ""


@pytest.mark.parametrize(("value", "upper"), [("Paris", False), ("ESPOO", True), ("Villafranca del Cid", False)])
def test_place_becomes_another_town_keeping_case_and_particles(value: str, upper: bool) -> None:
    out = surrogate(t.LOCATION, value, KEY)
    assert out != value
    assert out.isupper() == upper
    assert ("del" in out.split()) == ("del" in value.split())
    assert out == surrogate(t.LOCATION, value, KEY)


def test_organisation_keeps_its_legal_form() -> None:
    out = surrogate(t.ORGANIZATION, "Davis, Reynolds and Williamson Inc.", KEY)
    assert out.endswith(" Inc.")
    assert ", " in out
    assert " and " in out
    assert "Davis" not in out
    assert "Williamson" not in out


@pytest.mark.parametrize("value", ["北京市朝阳区建国路88号3单元502室", "浙江省杭州市西湖区", "上海", "哈尔滨"])
def test_chinese_place_keeps_units_and_changes_names(value: str) -> None:
    out = surrogate(t.LOCATION, value, KEY)
    assert out != value
    assert len(out) == len(value)
    for suffix in ("省", "市", "区", "路", "号", "单元", "室"):
        assert (suffix in out) == (suffix in value) or suffix == "市"  # a drawn name may itself contain 市
    assert sum(c.isdigit() for c in out) == sum(c.isdigit() for c in value)
    assert out == surrogate(t.LOCATION, value, KEY)
