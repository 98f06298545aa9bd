"""Recognizers for Chinese text: mainland, Hong Kong and Taiwan identifiers, names and addresses.

Numbers come as :class:`Pattern` specs (compiled by the engine into one Hyperscan pass). Every number is
bounded by explicit digit/letter look-arounds rather than ``\\b``: between a Han character and a digit
there is no word boundary, so ``\\b`` would miss ``手机13812345678`` and match inside longer numbers.
Checksummed identifiers must validate; bare numbers that look like anything (QQ, WeChat, passport) are
only reported next to a context word. Names and addresses come from dictionary recognizers.
"""

from __future__ import annotations

import re
from functools import cached_property

import ahocorasick

from .. import types as t
from ..types import Finding, Pattern, Recognizer
from ..validators import (
    cn_credit_code_valid,
    cn_mobile_valid,
    cn_resident_id_valid,
    hk_id_valid,
    luhn_valid,
    tw_id_valid,
)

__all__ = ["PATTERNS", "RECOGNIZERS", "ChineseLocationRecognizer", "ChineseNameRecognizer", "bank_card_valid"]

_ZH = ("zh",)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_NB = r"(?<![0-9A-Za-z])"  # number start: no digit or Latin letter right before
_NE = r"(?![0-9A-Za-z])"  # number end

# ------------------------------------------------------------------------------------- validators


def _resident_id_ok(value: str) -> bool:
    return cn_resident_id_valid(value)


def bank_card_valid(value: str) -> bool:
    """True for a 16-19 digit card number (spaces/hyphens allowed) with Luhn and a card-network prefix.

    An 18-digit number that is a valid resident ID is rejected: ID numbers pass Luhn one time in ten and
    Gansu IDs start with 62, the UnionPay prefix; as a card length 18 is rare, as an ID it is the norm.
    """
    digits = value.replace(" ", "").replace("-", "")
    n = len(digits)
    if not 16 <= n <= 19 or not digits.isascii() or not digits.isdigit() or not luhn_valid(digits):
        return False
    if n == 18 and cn_resident_id_valid(digits):
        return False
    p2, p4 = int(digits[:2]), int(digits[:4])
    if p2 in (62, 60) or 8100 <= p4 <= 8171:  # UnionPay (and 60xx domestic co-brands)
        return True
    if digits[0] == "4":  # Visa
        return n in (16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720 or 3528 <= p4 <= 3589:  # Mastercard, JCB
        return n == 16
    return digits[0] == "9" and n == 19  # pre-UnionPay domestic debit cards (9558..., 9559...)


def _credit_code_ok(value: str) -> bool:
    # An all-digit code can also be a resident ID (same region digits in the same place); the ID wins.
    return cn_credit_code_valid(value) and not (value.isdigit() and cn_resident_id_valid(value))


_LANDLINE = re.compile(r"[(（]?(0[0-9]{2,3})[)）]?[- ]? ?([0-9]{7,8})")


def _landline_ok(value: str) -> bool:
    m = _LANDLINE.match(value)
    if not m:
        return False
    # Beijing, Shanghai, ... (3-digit area codes 010, 02x) have 8-digit local numbers; others 7 or 8.
    return len(m.group(1)) == 4 or len(m.group(2)) == 8


def _wechat_ok(value: str) -> bool:
    # Real WeChat IDs almost always carry a digit, '_' or '-'; plain words ("WeChat", "hello") do not.
    return 6 <= len(value) <= 20 and any(c.isdigit() or c in "_-" for c in value)


# --------------------------------------------------------------------------------------- patterns

_MOBILE_SEG = r"1(?:3[0-9]|4[5-9]|5[0-35-9]|6[2567]|7[0-8]|8[0-9]|9[0-35-9])"
_AREA = r"(?:010|02[0-9]|0[3-9][0-9]{2})"
_PROVINCES_ABBR = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_PLATE_CHAR = "A-HJ-NP-Z0-9"  # plates never use I or O
_USCC_CHAR = "0-9A-HJ-NPQRTUWXY"

_ID_CONTEXT = ("身份证", "身份证号", "证件号", "公民身份", "居民身份", "id")
_MOBILE_CONTEXT = ("手机", "电话", "联系方式", "号码", "致电", "来电", "tel", "mobile", "phone")
_CARD_CONTEXT = (
    "银行卡",
    "卡号",
    "账号",
    "帐号",
    "储蓄卡",
    "借记卡",
    "信用卡",
    "银行账户",
    "开户行",
    "收款账户",
    "card",
)

PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "cn_resident_id",
        t.CN_RESIDENT_ID,
        _NB + r"[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]" + _NE,
        0.95,
        languages=_ZH,
        validate=_resident_id_ok,
        context=_ID_CONTEXT,
        context_boost=0.05,
    ),
    Pattern(
        "cn_resident_id_15",
        t.CN_RESIDENT_ID,
        _NB + r"[1-9][0-9]{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}" + _NE,
        0.6,
        languages=_ZH,
        validate=_resident_id_ok,
        context=_ID_CONTEXT,
        context_boost=0.3,
    ),
    Pattern(
        "cn_mobile",
        t.CN_MOBILE,
        r"(?<![0-9A-Za-z+])(?:(?:\+86|0086|\(\+?86\)|（\+?86）|86-)[ -]?)?"
        + _MOBILE_SEG
        + r"(?:[0-9]{8}|[ -][0-9]{4}[ -][0-9]{4})(?![0-9])",
        0.9,
        languages=_ZH,
        validate=cn_mobile_valid,
        context=_MOBILE_CONTEXT,
        context_boost=0.08,
    ),
    Pattern(
        "cn_landline",
        t.CN_LANDLINE,
        r"(?<![0-9A-Za-z])(?:\(" + _AREA + r"\)|（" + _AREA + r"）|" + _AREA + r"[- ])[ ]?[2-9][0-9]{6,7}"
        r"(?:(?:-|转|ext\.?)[0-9]{1,5})?(?![0-9])",
        0.7,
        languages=_ZH,
        validate=_landline_ok,
        context=("电话", "座机", "固话", "联系电话", "办公电话", "传真", "分机", "总机", "tel", "fax"),
        context_boost=0.2,
    ),
    Pattern(
        "cn_bank_card",
        t.CN_BANK_CARD,
        # 16 to 19 digits, run together or printed in groups of four.
        _NB + r"(?:[2-9][0-9]{15,18}|[2-9][0-9]{3}(?:[ -][0-9]{4}){3}(?:[ -][0-9]{2,3})?)" + _NE,
        0.9,
        languages=_ZH,
        validate=bank_card_valid,
        context=_CARD_CONTEXT,
        context_boost=0.08,
    ),
    Pattern(
        "cn_credit_code",
        t.CN_CREDIT_CODE,
        _NB + f"[{_USCC_CHAR}]{{2}}[0-9]{{6}}[{_USCC_CHAR}]{{10}}" + _NE,
        0.9,
        languages=_ZH,
        validate=_credit_code_ok,
        context=("统一社会信用代码", "信用代码", "社会信用", "纳税人识别号", "税号", "营业执照", "uscc"),
        context_boost=0.08,
    ),
    Pattern(
        # The shared e-mail pattern refuses a word character before the address, and Han characters are word
        # characters to ``re``: "邮箱zhang@qq.com" needs a boundary of ASCII characters only.
        "cn_email",
        t.EMAIL,
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])",
        0.95,
        languages=_ZH,
    ),
    Pattern(
        "cn_passport",
        t.CN_PASSPORT,
        _NB + r"(?:[EG][0-9]{8}|E[A-HJ-NP-Z][0-9]{7}|[DPS]E?[0-9]{7})" + _NE,
        0.5,
        languages=_ZH,
        context=("护照", "passport"),
        context_required=True,
        context_boost=0.4,
        context_window=20,
    ),
    Pattern(
        "hk_id",
        t.HK_ID,
        _NB + r"[A-Z]{1,2}[0-9]{6}(?:\([0-9A]\)|（[0-9A]）|[0-9A])" + _NE,
        0.75,
        languages=_ZH,
        validate=hk_id_valid,
        context=("香港身份证", "香港居民身份证", "身份证", "hkid", "身份證"),
        context_boost=0.2,
    ),
    Pattern(
        "tw_id",
        t.TW_ID,
        _NB + r"[A-Z][12389A-D][0-9]{8}" + _NE,
        0.8,
        languages=_ZH,
        validate=tw_id_valid,
        context=("台湾", "台灣", "身分證", "身份证", "统一证号", "統一證號", "居留证", "居留證"),
        context_boost=0.15,
    ),
    Pattern(
        "cn_license_plate",
        t.CN_LICENSE_PLATE,
        f"[{_PROVINCES_ABBR}][A-HJ-NP-Z][·• -]?"
        f"(?:[DF][{_PLATE_CHAR}][0-9]{{4}}|[0-9]{{5}}[DF]|[{_PLATE_CHAR}]{{4}}[{_PLATE_CHAR}挂学警港澳领])" + _NE,
        0.75,
        languages=_ZH,
        context=("车牌", "号牌", "车辆", "牌照", "车主"),
        context_boost=0.2,
    ),
    Pattern(
        "cn_qq",
        t.CN_QQ,
        # Q/q may touch the number ("QQ12345678"); other letters, '@', '.', '_' mean it is part of something else.
        r"(?<![0-9A-PR-Za-pr-z_.@-])[1-9][0-9]{4,10}(?![0-9@])",
        0.5,
        languages=_ZH,
        context=("qq", "扣扣"),
        context_required=True,
        context_window=10,
    ),
    Pattern(
        "cn_wechat_wxid",
        t.CN_WECHAT,
        r"(?<![0-9A-Za-z_])wxid_[a-z0-9]{8,20}(?![0-9A-Za-z_])",
        0.9,
        languages=_ZH,
    ),
    Pattern(
        "cn_wechat",
        t.CN_WECHAT,
        r"(?<![0-9A-Za-z_.@-])[A-Za-z][-_A-Za-z0-9]{5,19}(?![0-9A-Za-z_.@-])",
        0.5,
        languages=_ZH,
        validate=_wechat_ok,
        context=("微信", "wechat", "weixin", "vx", "wx"),
        context_required=True,
        context_window=10,
    ),
)

# ---------------------------------------------------------------------------------------- names

# Compound surnames of the 百家姓 still in use (Faker lists only 欧阳).
_COMPOUND_SURNAMES = _words(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 司空 "
    "夏侯 轩辕 令狐 钟离 独孤 南宫 西门 百里 呼延 端木 太史 申屠 公羊 "
    "澹台 公冶 宗政 濮阳 淳于 单于 仲孙 万俟 闻人 赫连 拓跋 东郭 第五 "
    "梁丘 左丘 谷梁 颛孙 巫马 公西 漆雕 乐正 壤驷 公良 夹谷 宰父 段干 "
    "子车 亓官 司寇 鲜于 闾丘 东门 羊舌 微生 梁丘 南门 呼延 归海"
)

# Characters common in given names, in addition to Faker's list (which alone would overfit its own corpus).
_GIVEN_EXTRA = (
    "一丁三义乐书云亚仁今佩依俊修倩兴兵冰凡凤刚初利力勇勤华卫卿厚友双可吉君启和品嘉国圣坚培城墨士天奇婉婕媛嫣子"
    "孝宏宗定宜宝家容宸富寒尚岚川巧帆希庆康廷彤彦影德心忠思怡恒恩悦惠意懿承振敬文斐新方昊昌昕星春昭晓晗晟晴智曦"
    "月朗木朝杉松柏栋树格桐梓森楠榕欣正武毅永江沛沫泉泽洪浩润淼清渊湘源溪滨潇澜灵炎烨焕然熙煜燕爽琪瑶瑾璇生田甜"
    "益盈真睿硕祥祺福秋程稳立竹笑筱紫红素维继美羽翔翠耀聪胜舒航艺苗若茜茵荷莎莲菁菲萌蓉蕾薇虹蝶行豪贝贞贤辰达远"
    "迪逸钧铭锋锦长雅雨雯震霖露青韵顺颖飘馨驰骏鸣鹤黎鼎"
)

# Characters that end a name: particles, verbs and connectives that follow names in running text.
_STOP = frozenset(
    "的了是在和与及或因于为向从到把被让给对说称表示已将并也都就还又要会能可请您你我他她它们这那个先女医护老师经主"
    "电手联身地住现诉反映办理签确认提交申等于今昨年月日号时分由自患者家属本人所有入出来去"
)

# Surnames that are also connectives or prepositions; before another Han character they are read as such.
_CONNECTIVES = frozenset("和与及跟同向给对把被让叫问找请等由在于为从")

_PREFIX_CONTEXT = (
    "姓名",
    "名字",
    "联系人",
    "患者",
    "病人",
    "客户",
    "用户",
    "收件人",
    "寄件人",
    "收货人",
    "发货人",
    "申请人",
    "持卡人",
    "开户名",
    "户名",
    "经办人",
    "负责人",
    "法定代表人",
    "法人代表",
    "法人",
    "员工",
    "职工",
    "主治医师",
    "主治医生",
    "医生",
    "医师",
    "护士",
    "签字",
    "签名",
    "家属",
    "投保人",
    "被保险人",
    "受益人",
    "借款人",
    "担保人",
    "监护人",
    "我叫",
    "我是",
    "业主",
    "租户",
    "房东",
    "学生",
    "同事",
    "客服",
    "坐席",
    "尊敬的",
    "亲爱的",
    "收款人",
    "付款人",
    "乘客",
    "旅客",
    "车主",
    "报案人",
    "当事人",
    "委托人",
    "代理人",
    "候选人",
    "应聘者",
    "转交",
    "司机",
    "派送员",
    "快递员",
    "配送员",
    "受检人",
    "就诊人",
    "承办人",
    "职员",
    "致",
    "兹证明",
    "证明人",
)
_SUFFIX_TITLES = (
    "先生",
    "女士",
    "小姐",
    "医生",
    "医师",
    "大夫",
    "护士",
    "老师",
    "教授",
    "经理",
    "主任",
    "律师",
    "同学",
    "同志",
    "阿姨",
    "师傅",
    "总监",
    "院长",
    "博士",
    "工程师",
    "会计",
    "专员",
    "您好",
    "你好",
)
_GAP = frozenset(" :：　")  # may sit between a prefix context word and the name
# A short Han run standing alone between field delimiters ("更新：王伟，分机..."): a name if it parses as one.
_FIELD = re.compile(r"(?:^|(?<=[：:，,；;\s（(]))([\u4e00-\u9fff]{2,4})(?=[，,、；;\s（(）)]|$)", re.M)


def _is_han(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


class ChineseNameRecognizer(Recognizer):
    """Chinese personal names (2-4 characters): a surname from the dictionary, 1-2 given-name characters,
    and a context word right before (姓名：, 患者, 联系人 ...) or a title right after (先生, 女士, 医生 ...).

    A name found with context is also reported where it recurs in the same document without context.
    """

    name = "zh_person"
    entities = (t.PERSON,)
    languages = _ZH

    @cached_property
    def _tables(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        from faker.providers.person.zh_CN import Provider

        single = frozenset(s for s in Provider.last_names if len(s) == 1)
        compound = frozenset(s for s in Provider.last_names if len(s) == 2) | frozenset(_COMPOUND_SURNAMES)
        given = {c for n in Provider.first_names for c in n} | set(_GIVEN_EXTRA)
        return single, compound, frozenset(given - _STOP)

    def _surname_len(self, text: str, i: int) -> int:
        single, compound, _ = self._tables
        if text[i : i + 2] in compound:
            return 2
        return 1 if text[i : i + 1] in single else 0

    def _forward(self, text: str, i: int) -> int:
        """End of the name that starts at ``i`` (after a context word), or -1."""
        given = self._tables[2]
        s = self._surname_len(text, i)
        if not s:
            return -1
        j = i + s
        if j >= len(text) or text[j] not in given:
            return -1
        # Take a second given-name character unless a title starts there.
        if j + 1 < len(text) and text[j + 1] in given and not text.startswith(_SUFFIX_TITLES, j + 1):
            return j + 2
        return j + 1

    def _backward(self, text: str, end: int) -> int:
        """Start of the name that ends at ``end`` (before a title), or -1."""
        given = self._tables[2]
        compound = self._tables[1]
        # A compound surname first (欧阳玉英, not 阳玉英), then three characters, by far the most common length.
        for length in (4, 3, 2):
            i = end - length
            if i < 0 or (length == 4 and text[i : i + 2] not in compound):
                continue
            s = self._surname_len(text, i)
            if not s or length - s not in (1, 2):
                continue
            if all(c in given for c in text[i + s : end]):
                # "和张伟医生": 和 is a surname too, but after another Han character it is a connective.
                if length == 3 and s == 1 and text[i] in _CONNECTIVES:
                    continue
                return i
        return -1

    def find(self, text: str, language: str) -> list[Finding]:
        """Names with a context word or title, and their repetitions in ``text``."""
        spans: dict[int, tuple[int, float]] = {}
        for ctx in _PREFIX_CONTEXT:
            pos = text.find(ctx)
            while pos >= 0:
                i = pos + len(ctx)
                while i < len(text) and text[i] in _GAP and i - pos - len(ctx) < 3:
                    i += 1
                end = self._forward(text, i)
                if end > 0:
                    spans.setdefault(i, (end, 0.85))
                pos = text.find(ctx, pos + 1)
        for title in _SUFFIX_TITLES:
            pos = text.find(title)
            while pos >= 0:
                start = self._backward(text, pos)
                if start >= 0:
                    spans[start] = (pos, 0.85)  # a title fixes the end exactly, so it beats a guessed end
                pos = text.find(title, pos + 1)
        for m in _FIELD.finditer(text):
            if m.start() not in spans and self._forward(text, m.start()) == m.end():
                spans[m.start()] = (m.end(), 0.6)
        names = {text[s:e] for s, (e, score) in spans.items() if score > 0.6}
        for name in names:
            pos = text.find(name)
            while pos >= 0:
                # A repetition must not be glued to more name characters ("张伟" inside "张伟明").
                after = text[pos + len(name) : pos + len(name) + 1]
                if pos not in spans and not (after and after in self._tables[2]):
                    spans[pos] = (pos + len(name), 0.75)
                pos = text.find(name, pos + 1)
        out: list[Finding] = []
        last_end = -1
        for start in sorted(spans):
            end, score = spans[start]
            if start < last_end:
                continue
            out.append(Finding(t.PERSON, start, end, score, self.name))
            last_end = end
        return out


# ------------------------------------------------------------------------------------- locations

# Prefecture-level cities and districts beyond Faker's short lists (the most populous ones).
_CITIES_EXTRA = _words(
    "苏州 无锡 常州 徐州 南通 扬州 镇江 泰州 盐城 连云港 宿迁 宁波 温州 "
    "嘉兴 湖州 绍兴 金华 台州 丽水 衢州 舟山 青岛 烟台 潍坊 临沂 淄博 "
    "济宁 泰安 威海 日照 德州 聊城 滨州 菏泽 枣庄 东营 厦门 泉州 漳州 "
    "莆田 三明 南平 龙岩 珠海 汕头 湛江 江门 茂名 肇庆 中山 清远 韶关 "
    "揭阳 阳江 梅州 河源 云浮 桂林 北海 玉林 百色 钦州 贵港 洛阳 开封 "
    "新乡 南阳 安阳 许昌 平顶山 焦作 商丘 信阳 周口 驻马店 宜昌 襄阳 "
    "荆州 黄石 十堰 孝感 黄冈 咸宁 株洲 湘潭 衡阳 岳阳 常德 邵阳 郴州 "
    "怀化 益阳 永州 娄底 芜湖 蚌埠 淮南 安庆 阜阳 宿州 滁州 黄山 九江 "
    "赣州 上饶 景德镇 萍乡 宜春 吉安 抚州 绵阳 德阳 宜宾 南充 泸州 乐山 "
    "自贡 达州 遵义 曲靖 大理 丽江 保定 唐山 廊坊 秦皇岛 沧州 邢台 "
    "张家口 承德 衡水 大同 运城 长治 晋中 临汾 包头 鄂尔多斯 赤峰 大连 "
    "鞍山 抚顺 本溪 丹东 锦州 营口 铁岭 吉林 四平 延吉 大庆 牡丹江 "
    "佳木斯 宝鸡 咸阳 渭南 延安 榆林 汉中 天水 酒泉 克拉玛依 喀什 三亚 "
    "昆山 义乌 江阴"
)
_DISTRICTS_EXTRA = _words(
    "朝阳区 海淀区 东城区 西城区 丰台区 石景山区 通州区 顺义区 昌平区 "
    "大兴区 房山区 门头沟区 怀柔区 平谷区 密云区 延庆区 浦东新区 黄浦区 "
    "徐汇区 长宁区 静安区 普陀区 虹口区 杨浦区 闵行区 宝山区 嘉定区 松江区 "
    "青浦区 奉贤区 金山区 崇明区 天河区 越秀区 海珠区 荔湾区 白云区 番禺区 "
    "黄埔区 花都区 南沙区 增城区 从化区 福田区 罗湖区 南山区 宝安区 龙岗区 "
    "龙华区 盐田区 坪山区 光明区 西湖区 上城区 拱墅区 滨江区 萧山区 余杭区 "
    "临平区 钱塘区 鼓楼区 玄武区 秦淮区 建邺区 栖霞区 雨花台区 江宁区 "
    "浦口区 六合区 武侯区 锦江区 青羊区 金牛区 成华区 高新区 江岸区 江汉区 "
    "硚口区 汉阳区 武昌区 洪山区 雁塔区 碑林区 莲湖区 新城区 未央区 灞桥区 "
    "长安区 和平区 河西区 南开区 河东区 河北区 红桥区 滨海新区 渝中区 "
    "江北区 沙坪坝区 九龙坡区 南岸区 渝北区 巴南区 历下区 市中区 槐荫区 "
    "天桥区 历城区 市南区 市北区 崂山区 李沧区 城阳区 思明区 湖里区 集美区 "
    "海沧区 姑苏区 吴中区 相城区 工业园区 滨湖区 梁溪区 新吴区 岳麓区 "
    "芙蓉区 天心区 开福区 雨花区"
)

_ADMIN_SUFFIX = ("省", "市", "区", "县", "自治区", "自治州", "自治县", "特别行政区", "地区", "盟", "旗")
# A Han character that can be part of a place name: not a particle, pronoun or common verb. An
# administrative part may not start with a connective (和, 与, 及): "北京市和上海市" is two places, while
# roads and estates often do (和平路, 和谐花园).
_PH = r"(?:(?![的了是在我你他她它们这那个有也都就被把给对从向到为以将并请已住送寄往至于])[\u4e00-\u9fff])"
_PH1 = r"(?:(?![和与及或])" + _PH + ")"
_ADDRESS_PART = re.compile(
    "|".join(
        (
            _PH1 + _PH + r"{0,5}?(?:特别行政区|自治区|自治州|自治县|地区|省|市|区|县|旗|镇|乡|街道|村)",
            _PH + r"{1,8}?(?:大道|大街|胡同|路|街|巷|弄|道)(?:[0-9]+(?:号院|号楼|号|弄|巷))?",
            _PH + r"{1,8}(?:小区|花园|大厦|公寓|家园|新村|社区|大楼|苑)",  # greedy: 翠苑家园 is one name
            r"[0-9]+(?:号院|号楼|号|栋|幢|座|单元|层|楼|室|弄|巷|排|组)",
            r"[A-Z](?:座|栋|区)",
            r"[0-9]+-[0-9]+(?:-[0-9]+)?(?:室|号)?",
        )
    )
)
# A place name right before these is an attribute of a document, not a place ("香港身份证").
_NOT_PLACE_AFTER = ("身份证", "身分證", "居民身份证")
_ADDRESS_CONTEXT = (
    "地址",
    "住址",
    "住在",
    "居住在",
    "寄到",
    "寄往",
    "送到",
    "送至",
    "位于",
    "发往",
    "户籍所在地",
    "籍贯",
)
_MAX_ADDRESS = 80


class ChineseLocationRecognizer(Recognizer):
    """Chinese places and addresses: province/city/district names (Faker zh_CN lists plus common ones),
    extended over address parts (区, 县, 路, 街, 号, 小区, 单元, 室 ...) so that a full address such as
    ``北京市朝阳区建国路88号3单元502室`` is one span; after 地址/住址 an address without a known place
    name is taken too.
    """

    name = "zh_location"
    entities = (t.LOCATION,)
    languages = _ZH

    @cached_property
    def _automaton(self) -> ahocorasick.Automaton:
        from faker.providers.address.zh_CN import Provider

        names: set[str] = set()
        for p in Provider.provinces:
            names.add(p)
            short = p
            for suffix in ("壮族自治区", "回族自治区", "维吾尔自治区", "特别行政区", "自治区", "省", "市"):
                if short.endswith(suffix):
                    short = short[: -len(suffix)]
                    break
            names.add(short)
        for c in (*Provider.cities, *_CITIES_EXTRA):
            names.update((c, c + "市"))
        for d in Provider.districts:
            if len(d) >= 2 and not d.endswith("区"):
                names.update((d + "区", d + "县"))  # bare district names are common words (朝阳, 和平, 长寿)
        names.update(_DISTRICTS_EXTRA)
        automaton = ahocorasick.Automaton()
        for n in names:
            automaton.add_word(n, len(n))
        automaton.make_automaton()
        return automaton

    def _extend(self, text: str, pos: int) -> int:
        """Furthest end of consecutive address parts (known place names or suffix patterns) from ``pos``."""
        automaton = self._automaton
        limit = min(len(text), pos + _MAX_ADDRESS)
        while pos < limit:
            best = pos
            # Longest known place name starting exactly at pos.
            for n in range(min(9, limit - pos), 1, -1):
                if automaton.exists(text[pos : pos + n]):
                    best = pos + n
                    break
            m = _ADDRESS_PART.match(text, pos, limit)
            if m and m.end() > best:
                best = m.end()
            if best == pos:
                break
            pos = best
        return pos

    def find(self, text: str, language: str) -> list[Finding]:
        """Place names and whole addresses in ``text``."""
        found: list[tuple[int, int, float]] = []
        for end_idx, length in self._automaton.iter_long(text):
            start = end_idx + 1 - length
            end = self._extend(text, end_idx + 1)
            if end == end_idx + 1 and text.startswith(_NOT_PLACE_AFTER, end):
                continue
            found.append((start, end, 0.85 if end > end_idx + 1 else 0.7))
        for ctx in _ADDRESS_CONTEXT:
            pos = text.find(ctx)
            while pos >= 0:
                i = pos + len(ctx)
                while i < len(text) and text[i] in _GAP and i - pos - len(ctx) < 3:
                    i += 1
                end = self._extend(text, i)
                if end - i >= 4:
                    found.append((i, end, 0.8))
                pos = text.find(ctx, pos + 1)
        # Longest span first, then keep the ones that do not overlap a kept one.
        found.sort(key=lambda f: (-(f[1] - f[0]), f[0]))
        kept: list[tuple[int, int, float]] = []
        for s, e, score in found:
            if all(e <= ks or s >= ke for ks, ke, _ in kept):
                kept.append((s, e, score))
        return [Finding(t.LOCATION, s, e, score, self.name) for s, e, score in sorted(kept)]


RECOGNIZERS: tuple[Recognizer, ...] = (ChineseNameRecognizer(), ChineseLocationRecognizer())
