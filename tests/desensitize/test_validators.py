"""Checksum and validity rules: published examples, generated round trips and known-bad values."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from privet.desensitize import validators as v


def test_luhn() -> None:
    assert v.luhn_valid("4111111111111111")
    assert v.luhn_valid("79927398713")
    assert not v.luhn_valid("79927398710")
    assert not v.luhn_valid("4111 1111 1111 1111")  # digits only
    assert not v.luhn_valid("7")
    assert v.luhn_check_digit("7992739871") == "3"
    rng = random.Random(1)
    for _ in range(200):
        body = "".join(rng.choice("0123456789") for _ in range(rng.randrange(5, 19)))
        assert v.luhn_valid(body + v.luhn_check_digit(body))
    with pytest.raises(ValueError):
        v.luhn_check_digit("12a")


def test_unionpay_prefix() -> None:
    assert v.unionpay_prefix("6222021234567890")
    assert v.unionpay_prefix("6222 0212 3456 7890")
    assert v.unionpay_prefix("8171000000000000")
    assert not v.unionpay_prefix("8172000000000000")
    assert not v.unionpay_prefix("4111111111111111")


def test_iban() -> None:
    assert v.iban_valid("GB82 WEST 1234 5698 7654 32")
    assert v.iban_valid("de89370400440532013000")
    assert v.iban_valid("NO9386011117947")
    assert not v.iban_valid("GB82WEST12345698765433")  # one digit off
    assert not v.iban_valid("GB82WEST123456987654")  # wrong length for GB
    assert not v.iban_valid("QQ82WEST12345698765432")  # no such country
    assert v.iban_check_digits("GB", "WEST12345698765432") == "82"
    assert v.iban_check_digits("de", "370400440532013000") == "89"


def test_us_ssn() -> None:
    assert v.us_ssn_valid("536-22-1234")
    assert v.us_ssn_valid("536221234")
    assert v.us_ssn_valid("536 22 1234")
    for bad in ("000-12-3456", "666-12-3456", "912-12-3456", "536-00-1234", "536-22-0000"):
        assert not v.us_ssn_valid(bad)
    for voided in ("078-05-1120", "219-09-9999", "123-45-6789"):
        assert not v.us_ssn_valid(voided)
    assert not v.us_ssn_valid("536-22 1234")  # mixed separators


def test_cn_resident_id_gb11643_example() -> None:
    assert v.cn_resident_id_check_digit("11010519491231002") == "X"
    assert v.cn_resident_id_valid("11010519491231002X")
    assert v.cn_resident_id_valid("11010519491231002x")
    assert not v.cn_resident_id_valid("110105194912310021")  # wrong check digit


def test_cn_resident_id_rules() -> None:
    today = dt.date(2024, 6, 1)
    body = "440308" + "20240602" + "123"  # born tomorrow
    assert not v.cn_resident_id_valid(body + v.cn_resident_id_check_digit(body), today=today)
    body = "440308" + "18991231" + "123"  # before 1900
    assert not v.cn_resident_id_valid(body + v.cn_resident_id_check_digit(body))
    body = "440308" + "19900230" + "123"  # 30 February
    assert not v.cn_resident_id_valid(body + v.cn_resident_id_check_digit(body))
    body = "990308" + "19900101" + "123"  # no province 99
    assert not v.cn_resident_id_valid(body + v.cn_resident_id_check_digit(body))
    # A region code Faker does not list but with a real province prefix: accepted unless strict.
    body = "110118" + "19900101" + "123"  # 密云区, created 2015
    value = body + v.cn_resident_id_check_digit(body)
    assert v.cn_resident_id_valid(value)
    assert not v.cn_resident_id_valid(value, strict_region=True)
    assert v.cn_region_code_known("110105", strict=True)


def test_cn_resident_id_legacy_15() -> None:
    assert v.cn_resident_id_valid("110105491231002")
    assert not v.cn_resident_id_valid("110105491331002")  # month 13
    assert not v.cn_resident_id_valid("990105491231002")


def test_cn_credit_code() -> None:
    assert v.cn_credit_code_valid("91350100M000100Y43")  # the GB 32100-2015 example
    assert v.cn_credit_code_check_char("91350100M000100Y4") == "3"
    assert not v.cn_credit_code_valid("91350100M000100Y44")
    assert not v.cn_credit_code_valid("91350100M000100I43")  # I is not in the alphabet
    assert not v.cn_credit_code_valid("Z1350100M000100Y43")  # no authority Z
    rng = random.Random(2)
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    for _ in range(200):
        body = "91" + "".join(rng.choice("0123456789") for _ in range(6))
        body += "".join(rng.choice(alphabet) for _ in range(9))
        assert v.cn_credit_code_valid(body + v.cn_credit_code_check_char(body))


def test_hk_id() -> None:
    assert v.hk_id_valid("A123456(3)")
    assert v.hk_id_valid("A1234563")
    assert v.hk_id_valid("G123456(A)")
    assert v.hk_id_valid("A123456（3）")
    assert v.hk_id_check_char("AB", "987654") == "3"
    assert v.hk_id_valid("AB987654(3)")
    assert not v.hk_id_valid("A123456(4)")
    assert not v.hk_id_valid("ABC123456(3)")


def test_tw_id() -> None:
    assert v.tw_id_valid("A123456789")  # the textbook example
    assert not v.tw_id_valid("A123456788")
    assert not v.tw_id_valid("A323456789")  # no type 3
    rng = random.Random(3)
    for _ in range(100):
        body = rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + rng.choice("1289AB") + str(rng.randrange(10**6, 10**7))
        assert v.tw_id_valid(body + v.tw_id_check_digit(body))


def test_cn_mobile() -> None:
    for good in ("13812345678", "+86 138-1234-5678", "0086 13812345678", "(+86)19912345678", "86-16612345678"):
        assert v.cn_mobile_valid(good), good
    for bad in ("15412345678", "17912345678", "19412345678", "12012345678", "1381234567", "138123456789"):
        assert not v.cn_mobile_valid(bad), bad
    assert "145" in v.CN_MOBILE_SEGMENTS
    assert "140" not in v.CN_MOBILE_SEGMENTS
