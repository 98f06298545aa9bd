"""Chinese recognizers through the engine: each entity found with the right span, check-digit failures ignored."""

from __future__ import annotations

import pytest

from privet.desensitize import types as t
from privet.desensitize.engine import Analyzer
from privet.desensitize.recognizers.zh import (
    PATTERNS,
    RECOGNIZERS,
    ChineseLocationRecognizer,
    ChineseNameRecognizer,
    bank_card_valid,
)
from privet.desensitize.types import Pattern


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(patterns=PATTERNS, recognizers=RECOGNIZERS)


def found(analyzer: Analyzer, text: str) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in analyzer.analyze(text, language="zh")]


def test_patterns_are_chinese_only_and_well_formed() -> None:
    assert len({p.name for p in PATTERNS}) == len(PATTERNS)
    for p in PATTERNS:
        assert isinstance(p, Pattern)
        assert p.languages == ("zh",)
        assert 0 < p.score <= 1
        # The engine lower-cases the text before looking for context words.
        assert all(w == w.lower() for w in p.context)


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("身份证号11010519491231002X。", t.CN_RESIDENT_ID, "11010519491231002X"),
        ("身份证：110105491231002，", t.CN_RESIDENT_ID, "110105491231002"),
        ("手机13812345678。", t.CN_MOBILE, "13812345678"),
        ("请拨打138-1234-5678联系", t.CN_MOBILE, "138-1234-5678"),
        ("电话：+86 138 1234 5678", t.CN_MOBILE, "+86 138 1234 5678"),
        ("联系电话0086 19912345678。", t.CN_MOBILE, "0086 19912345678"),
        ("座机010-87654321转123", t.CN_LANDLINE, "010-87654321转123"),
        ("电话（0571）88886666。", t.CN_LANDLINE, "（0571）88886666"),
        ("卡号6222021234567890128已冻结", t.CN_BANK_CARD, "6222021234567890128"),
        ("银行卡 6222 0212 3456 7890 128。", t.CN_BANK_CARD, "6222 0212 3456 7890 128"),
        ("统一社会信用代码：91350100M000100Y43", t.CN_CREDIT_CODE, "91350100M000100Y43"),
        ("护照号码E12345678。", t.CN_PASSPORT, "E12345678"),
        ("香港身份证A123456(3)，", t.HK_ID, "A123456(3)"),
        ("台湾身份证号A123456789，", t.TW_ID, "A123456789"),
        ("车牌号京A·12345，", t.CN_LICENSE_PLATE, "京A·12345"),
        ("新能源车粤BD12345。", t.CN_LICENSE_PLATE, "粤BD12345"),
        ("加我QQ：12345678", t.CN_QQ, "12345678"),
        ("微信号：zhang_san88。", t.CN_WECHAT, "zhang_san88"),
        ("wxid_abcdef1234567 已添加", t.CN_WECHAT, "wxid_abcdef1234567"),
        ("邮箱zhangsan@163.com。", t.EMAIL, "zhangsan@163.com"),
    ],
)
def test_entity_found(analyzer: Analyzer, text: str, entity: str, value: str) -> None:
    assert (entity, value) in found(analyzer, text)


@pytest.mark.parametrize(
    "text",
    [
        "身份证号110105194912310021。",  # wrong check digit
        "订单号20231105123045，",  # timestamp
        "工单15412345678已关闭",  # unallocated segment 154
        "编号12012345678。",
        "卡号6222021234567890127",  # fails Luhn
        "代码91350100M000100Y44",  # wrong credit-code check character
        "流水号202311051230451234。",
        "编号E12345678",  # passport shape without context
        "编号12345678",  # QQ shape without context
        "金额¥12,345.67元",
        "香港身份证A123456(4)",
        "台湾A123456788",
    ],
)
def test_nothing_found(analyzer: Analyzer, text: str) -> None:
    assert [e for e, _ in found(analyzer, text) if e not in (t.LOCATION, t.PERSON)] == []


def test_numbers_inside_longer_runs_are_not_split(analyzer: Analyzer) -> None:
    # A valid mobile embedded in a longer digit run is not a mobile.
    assert found(analyzer, "单号913812345678") == []
    assert found(analyzer, "批次138123456789") == []


def test_bank_card_refuses_resident_ids() -> None:
    # An 18-digit Gansu ID (62...) that happens to pass Luhn is an ID, not a UnionPay card.
    from privet.desensitize.validators import cn_resident_id_check_digit, luhn_valid

    for seq in range(1000):
        body = f"62010219900101{seq:03d}"
        value = body + cn_resident_id_check_digit(body)
        if value[-1] != "X" and luhn_valid(value):
            assert not bank_card_valid(value)
            break
    else:  # pragma: no cover - one in ten passes Luhn
        pytest.fail("no Luhn-valid ID generated")


def test_id_beats_card_and_credit_code(analyzer: Analyzer) -> None:
    text = "身份证号：11010519491231002X"
    assert found(analyzer, text) == [(t.CN_RESIDENT_ID, "11010519491231002X")]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("患者张伟，男，45岁。", "张伟"),
        ("姓名：王秀英；性别：女", "王秀英"),
        ("请联系李明先生。", "李明"),
        ("欧阳玉英女士您好", "欧阳玉英"),
        ("司马明医生今天出诊", "司马明"),
        ("联系人：陈小红，手机", "陈小红"),
        ("和张伟医生一起", "张伟"),
        ("客户申桂英反映问题", "申桂英"),
    ],
)
def test_person(text: str, name: str) -> None:
    r = ChineseNameRecognizer()
    assert [text[f.start : f.end] for f in r.find(text, "zh")] == [name]


def test_person_repetition_and_no_context() -> None:
    r = ChineseNameRecognizer()
    text = "患者张伟因发热入院。张伟表示已服药。"
    assert [text[f.start : f.end] for f in r.find(text, "zh")] == ["张伟", "张伟"]
    assert r.find("今天天气很好，王者荣耀很好玩。", "zh") == []


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("住址：北京市朝阳区建国路88号3单元502室。", "北京市朝阳区建国路88号3单元502室"),
        ("寄到广东省深圳市南山区科技路100号阳光花园5栋", "广东省深圳市南山区科技路100号阳光花园5栋"),
        ("我在上海工作。", "上海"),
        ("现住址：杭州市西湖区和平路12号和谐家园", "杭州市西湖区和平路12号和谐家园"),
    ],
)
def test_location(text: str, place: str) -> None:
    r = ChineseLocationRecognizer()
    assert [text[f.start : f.end] for f in r.find(text, "zh")] == [place]


def test_location_not_document_type() -> None:
    r = ChineseLocationRecognizer()
    assert r.find("香港身份证A123456(3)", "zh") == []


def test_findings_carry_no_value(analyzer: Analyzer) -> None:
    text = "身份证号11010519491231002X"
    assert "11010519491231002X" not in repr(analyzer.analyze(text, language="zh"))
