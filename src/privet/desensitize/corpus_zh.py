"""A labelled Chinese corpus for measuring recognizers, in the presidio-research JSON record format.

Each record is ``{"full_text", "masked", "spans", "template_id", "metadata"}``; a span is
``{"entity_type", "entity_value", "start_position", "end_position"}``. Templates (medical notes, bank
forms, HR records, customer-service chats, logistics, insurance and government forms) are filled with
valid values (IDs with correct check digits, allocated mobile segments, Luhn card numbers, credit codes)
and with distractors that must *not* be labelled: order and tracking numbers, timestamps, invoice
numbers, amounts, and numbers that fail their check (ID check digit, mobile segment, Luhn, credit code).
Distractor positions are listed in ``metadata["distractors"]`` so tests can assert nothing is found there.

Generation is deterministic in ``seed``; it uses :class:`random.Random`, since this is test data.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import string
from collections.abc import Callable
from functools import lru_cache

from . import types as t
from .recognizers.zh import bank_card_valid
from .validators import (
    CN_MOBILE_SEGMENTS,
    cn_credit_code_check_char,
    cn_credit_code_valid,
    cn_mobile_valid,
    cn_resident_id_check_digit,
    cn_resident_id_valid,
    hk_id_check_char,
    luhn_check_digit,
    tw_id_check_digit,
)

__all__ = ["TEMPLATES", "generate"]

# Each template: (domain, text). {slot} names are filled by _SLOTS; upper-case entity slots are labelled.
TEMPLATES: tuple[tuple[str, str], ...] = (
    # medical
    (
        "medical",
        "门诊病历 就诊时间：{datetime}\n患者{name}，身份证号{id}，联系电话{mobile}。主诉：咳嗽三天。处方单号{order}。",
    ),
    ("medical", "住院登记：姓名：{name}；证件号码：{id}；家庭住址：{addr}；紧急联系人：{name2}，手机 {mobile2}。"),
    ("medical", "{name}医生您好，患者家属来电{mobile}询问检查结果，检验条码{tracking}，报告时间{ts}。"),
    ("medical", "体检报告编号{invoice}。受检人：{name}，身份证：{id}，工作单位地址{addr}。费用{amount}已结清。"),
    ("medical", "护理记录：{ts} 患者{name}体温38.5度，已通知{name2}医生。床位号{room}，住院号{order}。"),
    ("medical", "病案首页 姓名：{name} 性别：男 身份证号：{id} 现住址：{addr} 联系人电话：{landline}"),
    ("medical", "预约挂号成功！就诊人{name}，就诊卡号{bad_card}，预约时间{datetime}，如需取消请致电{landline}。"),
    ("medical", "转诊单：患者{name}（身份证{id}）由{city}第一人民医院转入，经办人{name2}，电话{mobile}。"),
    # bank
    ("bank", "开户申请表\n户名：{name}\n身份证号：{id}\n手机号码：{mobile}\n银行卡号：{card}\n开户行：{city}分行"),
    ("bank", "尊敬的{name}客户，您尾号{card_tail}的账户于{datetime}转入{amount}，流水号{order}。"),
    ("bank", "还款提醒：持卡人{name}，信用卡号{card}，本期应还{amount}，账单号{invoice}，客服电话{landline}。"),
    (
        "bank",
        "转账凭证 付款人：{name} 付款账号：{card} 收款人：{name2} 收款账号：{card2} 交易时间：{ts} 金额：{amount}",
    ),
    ("bank", "贷款合同编号{order}\n借款人：{name}\n证件号码：{id}\n住址：{addr}\n担保人：{name2}，身份证{id2}"),
    ("bank", "企业账户开立：单位名称{company}，统一社会信用代码{uscc}，法定代表人{name}，联系电话{mobile}。"),
    ("bank", "交易异常：卡号{bad_card}校验失败，请核对。参考号{ts}，受理机构代码{invoice}。"),
    ("bank", "客户{name}申请绑定银行卡{card}，预留手机{mobile}，验证码已发送至邮箱{email}。"),
    # HR
    (
        "hr",
        "员工入职登记：姓名：{name}，身份证号：{id}，手机：{mobile}，邮箱：{email}，户籍地址：{addr}。工号{order}。",
    ),
    ("hr", "{name}你好，你的工资卡{card}已于{date}发放{amount}，工资单号{invoice}。"),
    ("hr", "面试通知：候选人{name}，请于{datetime}到{addr}参加面试，联系人{name2}，座机{landline}。"),
    ("hr", "社保缴纳明细 职工{name} 身份证{id} 单位{company} 信用代码{uscc} 缴费基数{amount}"),
    ("hr", "离职证明：兹证明{name}（身份证号{id}）自{date}起与我公司解除劳动关系。档案编号{order}。"),
    ("hr", "背景调查：候选人{name}，护照号码{passport}，前雇主联系人{name2}，电话{mobile}，邮箱{email}。"),
    ("hr", "员工通讯录更新：{name}，分机{ext}，手机{mobile}，微信号：{wechat}，工位{room}。"),
    # customer service
    ("service", "客服：您好，请问有什么可以帮您？\n用户：我叫{name}，手机号{mobile}，订单{order}一直没发货。"),
    ("service", "用户：我的快递单号{tracking}，收件人{name}，地址是{addr}，电话{mobile}。\n客服：好的，已为您登记。"),
    ("service", "工单{invoice}：客户{name}反映编号{bad_mobile}的设备无法开机，回访电话{mobile}，创建时间{ts}。"),
    ("service", "您好{name}女士，您在{date}提交的退款{amount}已原路退回，如有疑问加客服QQ：{qq}。"),
    ("service", "用户反馈：我的QQ号是{qq}，微信{wechat}，邮箱{email}，请尽快联系我。会员号{bad_mobile}。"),
    ("service", "回访记录 {datetime} 联系人：{name} 固定电话：{landline} 问题：发票{invoice}未收到。"),
    ("service", "客户{name}咨询，身份证号{bad_id}系统提示校验失败，请客户{name}重新核对后再提交。"),
    ("service", "亲爱的{name}，您的账号已绑定手机{mobile}与邮箱{email}，登录时间{ts}，IP归属地{city}。"),
    # logistics
    ("logistics", "【顺丰】寄件人：{name}，{mobile}，{addr}\n收件人：{name2}，{mobile2}，{addr2}\n运单号{tracking}"),
    ("logistics", "发货单{order}\n收货人：{name}\n联系方式：{mobile}\n收货地址：{addr}\n重量2.5kg 运费{amount}"),
    ("logistics", "您的包裹{tracking}已到达{city}转运中心，派送员{name}，电话{mobile}，时间{ts}。"),
    ("logistics", "车辆进场登记：司机{name}，车牌号{plate}，手机{mobile}，进场时间{datetime}，磅单号{invoice}。"),
    ("logistics", "冷链运输：承运方{company}（统一社会信用代码{uscc}），车牌{plate}，随车联系人{name}，{mobile}。"),
    ("logistics", "退货地址：{addr}，联系人{name}先生，电话{landline}，退货单号{order}，批次号{bad_id}。"),
    # insurance / government / cross-border
    (
        "insurance",
        "投保人：{name}，身份证号码：{id}，被保险人：{name2}，身份证号码：{id2}，保单号{order}，保费{amount}。",
    ),
    ("government", "居住证申领：申请人{name}，公民身份号码{id}，现居住地址{addr}，受理编号{invoice}，受理时间{ts}。"),
    ("crossborder", "访客登记：{name}先生，香港身份证{hkid}，入境时间{datetime}，联系电话{mobile}。"),
    ("crossborder", "台胞证办理：申请人{name}，台湾身份证号{twid}，内地联系电话{mobile}，邮箱{email}，编号{order}。"),
    ("government", "车辆违章通知：车主{name}，车牌{plate}，违章时间{datetime}，罚款{amount}，决定书编号{invoice}。"),
)

_ENTITY_SLOTS: dict[str, str] = {
    "name": t.PERSON,
    "name2": t.PERSON,
    "id": t.CN_RESIDENT_ID,
    "id2": t.CN_RESIDENT_ID,
    "mobile": t.CN_MOBILE,
    "mobile2": t.CN_MOBILE,
    "card": t.CN_BANK_CARD,
    "card2": t.CN_BANK_CARD,
    "uscc": t.CN_CREDIT_CODE,
    "email": t.EMAIL,
    "addr": t.LOCATION,
    "addr2": t.LOCATION,
    "city": t.LOCATION,
    "landline": t.CN_LANDLINE,
    "passport": t.CN_PASSPORT,
    "plate": t.CN_LICENSE_PLATE,
    "qq": t.CN_QQ,
    "wechat": t.CN_WECHAT,
    "hkid": t.HK_ID,
    "twid": t.TW_ID,
}


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_BANK_BINS = ("622202", "622848", "621700", "622588", "621483", "623058", "622609", "621226", "622262", "625965")
_AREA_CODES = ("010", "020", "021", "022", "023", "024", "025", "027", "028", "029", "0571", "0755", "0512", "0731")
_ROADS = _words(
    "建国路 人民路 中山路 解放路 长安街 南京路 淮海中路 学院路 科技路 "
    "新华街 和平路 幸福大街 文化路 滨江大道 光明路 朝阳路 东风路 青年路 "
    "民主路 胜利街 团结路 迎宾大道 延安路 北京路 五一路 育才路 花园路 "
    "金融街 世纪大道 华山路"
)
_ESTATES = _words("阳光 幸福 翠苑 锦绣 金色 碧水 万科 绿地 和谐 书香 紫荆 丽景 怡和 枫林 海棠")
_ESTATE_SUFFIX = ("小区", "花园", "家园", "公寓", "新村", "大厦")
_COMPANIES = ("华宇科技有限公司", "恒信贸易有限公司", "瑞丰物流有限公司", "博远医疗器械有限公司", "星辰软件有限公司")
_MAIL_DOMAINS = ("qq.com", "163.com", "126.com", "sina.com", "gmail.com", "outlook.com", "foxmail.com", "corp.com.cn")
_PINYIN = _words("zhang wang li liu chen yang huang zhao wu zhou xu sun ma zhu hu guo lin he gao luo wei jun hua ming")
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_PROVINCE_ABBR = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_UNALLOCATED = ("100", "110", "120", "122", "140", "141", "144", "154", "160", "161", "164", "169", "179", "194")


@lru_cache(maxsize=1)
def _faker_tables() -> dict[str, tuple]:
    from faker.providers.address.zh_CN import Provider as Address
    from faker.providers.person.zh_CN import Provider as Person
    from faker.providers.ssn.zh_CN import Provider as Ssn

    from .recognizers.zh import _CITIES_EXTRA, _DISTRICTS_EXTRA

    surnames = tuple(Person.last_names)
    # Real prefecture codes only (xxxx00 and xx0000 are province/city headers, not places of issue).
    areas = tuple(sorted(c for c in Ssn.area_codes if not c.endswith("00")))
    cities = tuple(c for c in (*Address.cities, *_CITIES_EXTRA) if c not in ("香港", "澳门", "台北"))
    provinces = tuple(p for p in Address.provinces if p not in ("香港特别行政区", "澳门特别行政区", "台湾省"))
    districts = tuple(d + "区" for d in Address.districts if not d.endswith("区")) + tuple(_DISTRICTS_EXTRA)
    return {
        "surnames": surnames,
        "weights": tuple(Person.last_names[s] for s in surnames),
        "given": tuple(Person.first_names),
        "areas": areas,
        "cities": cities,
        "provinces": provinces,
        "districts": districts,
    }


class _Gen:
    """Value makers over one random stream."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng
        self.f = _faker_tables()

    def digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    # ---- labelled values

    def name(self) -> str:
        r = self.r
        if r.random() < 0.04:
            surname = r.choice(("欧阳", "司马", "上官", "诸葛", "慕容", "司徒"))
        else:
            surname = r.choices(self.f["surnames"], weights=self.f["weights"])[0]
        return surname + r.choice(self.f["given"])

    def birth(self) -> dt.date:
        return dt.date(1940, 1, 1) + dt.timedelta(days=self.r.randrange(365 * 65))

    def id(self) -> str:
        r = self.r
        born = self.birth()
        area = r.choice(self.f["areas"])
        if r.random() < 0.03:  # legacy 15-digit card: YYMMDD, no check digit
            return area + born.strftime("%y%m%d") + self.digits(3)
        body = area + born.strftime("%Y%m%d") + self.digits(3)
        return body + cn_resident_id_check_digit(body)

    def mobile(self) -> str:
        r = self.r
        number = r.choice(sorted(CN_MOBILE_SEGMENTS)) + self.digits(8)
        style = r.random()
        if style < 0.6:
            return number
        if style < 0.75:
            return f"{number[:3]}-{number[3:7]}-{number[7:]}"
        if style < 0.87:
            return f"{number[:3]} {number[3:7]} {number[7:]}"
        return r.choice(("+86 ", "+86-", "+86", "0086 ", "(+86)")) + number

    def card(self) -> str:
        r = self.r
        kind = r.random()
        if kind < 0.8:
            body = r.choice(_BANK_BINS) + self.digits(r.choice((9, 12)))
        elif kind < 0.9:
            body = "4" + self.digits(14)
        else:
            body = "5" + r.choice("12345") + self.digits(13)
        number = body + luhn_check_digit(body)
        if r.random() < 0.3:
            return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
        return number

    def company(self) -> str:
        return self.r.choice(_COMPANIES)

    def card_tail(self) -> str:
        return self.digits(4)

    def uscc(self) -> str:
        r = self.r
        while True:
            head = r.choice(("91", "91", "91", "92", "93", "12", "52", "11", "Y1"))
            org = r.choice(("MA", "")) if head.startswith("9") else ""
            org += "".join(r.choice(_USCC_ALPHABET) for _ in range(9 - len(org)))
            body = head + r.choice(self.f["areas"]) + org
            code = body + cn_credit_code_check_char(body)
            if not (code.isdigit() and cn_resident_id_valid(code)):
                return code

    def email(self) -> str:
        r = self.r
        local = r.choice(_PINYIN) + r.choice(("", ".", "_")) + r.choice(_PINYIN) + self.digits(r.choice((0, 2, 3)))
        if r.random() < 0.2:
            local = str(r.randrange(10_000, 3_000_000_000))  # QQ-number addresses
        return f"{local}@{r.choice(_MAIL_DOMAINS)}"

    def addr(self) -> str:
        r = self.r
        province = r.choice(self.f["provinces"])
        city = "" if province in ("北京市", "上海市", "天津市", "重庆市") else r.choice(self.f["cities"]) + "市"
        out = province + city + r.choice(self.f["districts"]) + r.choice(_ROADS) + f"{r.randrange(1, 999)}号"
        if r.random() < 0.6:
            out += r.choice(_ESTATES) + r.choice(_ESTATE_SUFFIX)
        if r.random() < 0.7:
            out += f"{r.randrange(1, 30)}栋{r.randrange(1, 6)}单元{r.randrange(1, 33)}0{r.randrange(1, 5)}室"
        if r.random() < 0.2:  # people often drop the province
            out = out[len(province) :] if city else out
        return out

    def city(self) -> str:
        return self.r.choice(self.f["cities"]) + self.r.choice(("", "市"))

    def landline(self) -> str:
        r = self.r
        area = r.choice(_AREA_CODES)
        local = r.choice("2345678") + self.digits(7 if len(area) == 3 else r.choice((6, 7)))
        out = r.choice((f"{area}-{local}", f"({area}){local}", f"{area}-{local}", f"（{area}）{local}"))
        if r.random() < 0.15:
            out += r.choice(("转", "-")) + self.digits(3)
        return out

    def passport(self) -> str:
        return self.r.choice(("E", "E", "G")) + self.digits(8)

    def plate(self) -> str:
        r = self.r
        head = r.choice(_PROVINCE_ABBR) + r.choice(_PLATE_LETTERS.replace("I", "").replace("O", ""))
        if r.random() < 0.3:
            return head + r.choice("DF") + r.choice(_PLATE_LETTERS + string.digits) + self.digits(4)
        tail = "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(2)) + self.digits(3)
        return head + r.choice(("", "·")) + tail

    def qq(self) -> str:
        return str(self.r.randrange(10_000, 3_000_000_000))

    def wechat(self) -> str:
        r = self.r
        if r.random() < 0.3:
            return "wxid_" + "".join(r.choice(string.ascii_lowercase + string.digits) for _ in range(14))
        return r.choice(_PINYIN) + r.choice(("_", "-", "")) + r.choice(_PINYIN) + self.digits(r.choice((2, 3, 4)))

    def hkid(self) -> str:
        r = self.r
        prefix = "".join(r.choice(string.ascii_uppercase) for _ in range(r.choice((1, 1, 2))))
        digits = self.digits(6)
        check = hk_id_check_char(prefix, digits)
        return f"{prefix}{digits}({check})" if r.random() < 0.7 else f"{prefix}{digits}{check}"

    def twid(self) -> str:
        r = self.r
        body = r.choice(string.ascii_uppercase) + r.choice("12") + self.digits(7)
        return body + tw_id_check_digit(body)

    # ---- distractors (verified to fail every numeric recognizer)

    def order(self) -> str:
        r = self.r
        return r.choice(("", "DD", "NO", "SO")) + self.ts() + self.digits(r.choice((2, 4, 6)))

    def ts(self) -> str:
        moment = dt.datetime(2019, 1, 1) + dt.timedelta(seconds=self.r.randrange(5 * 365 * 86400))
        return moment.strftime("%Y%m%d%H%M%S")

    def datetime(self) -> str:
        moment = dt.datetime(2019, 1, 1) + dt.timedelta(seconds=self.r.randrange(5 * 365 * 86400))
        return moment.strftime(self.r.choice(("%Y-%m-%d %H:%M", "%Y年%m月%d日 %H:%M", "%Y/%m/%d %H:%M:%S")))

    def date(self) -> str:
        moment = dt.date(2019, 1, 1) + dt.timedelta(days=self.r.randrange(5 * 365))
        return moment.strftime(self.r.choice(("%Y-%m-%d", "%Y年%m月%d日")))

    def tracking(self) -> str:
        r = self.r
        return r.choice(("SF", "YT", "JD", "ZTO", "")) + r.choice("3579") + self.digits(r.choice((11, 12, 14)))

    def invoice(self) -> str:
        return self.digits(self.r.choice((8, 10, 12, 20)))

    def amount(self) -> str:
        r = self.r
        value = r.randrange(100, 5_000_000) / 100
        return r.choice((f"¥{value:,.2f}", f"{value:.2f}元", f"人民币{int(value)}元", f"RMB {value:,.2f}"))

    def room(self) -> str:
        return f"{self.r.randrange(1, 40)}-{self.r.randrange(1, 60):02d}"

    def ext(self) -> str:
        return self.digits(4)

    def bad_id(self) -> str:
        body = self.r.choice(self.f["areas"]) + self.birth().strftime("%Y%m%d") + self.digits(3)
        good = cn_resident_id_check_digit(body)
        return body + self.r.choice([c for c in "0123456789X" if c != good])

    def bad_mobile(self) -> str:
        return self.r.choice(_UNALLOCATED) + self.digits(8)

    def bad_card(self) -> str:
        body = self.r.choice(_BANK_BINS) + self.digits(9)
        good = luhn_check_digit(body)
        return body + self.r.choice([c for c in string.digits if c != good])


# Values that must not be reported as any of the identifiers above (dates and times are not listed: they are
# personal data of their own kind, DATE_TIME, which this corpus does not label).
_DISTRACTOR_SLOTS = frozenset(
    {"order", "ts", "tracking", "invoice", "bad_id", "bad_mobile", "bad_card", "amount", "room"}
)
_SLOT = re.compile(r"\{(\w+)\}")
_NUMBER = re.compile(r"[0-9][0-9 \-]*[0-9X]")


def _is_clean(value: str) -> bool:
    """True when no numeric run in a distractor passes one of the checksummed recognizers' validators."""
    for m in _NUMBER.finditer(value):
        run = m.group(0)
        digits = run.replace(" ", "").replace("-", "")
        checks: tuple[Callable[[str], bool], ...] = (cn_resident_id_valid, cn_mobile_valid, bank_card_valid)
        if any(check(digits) for check in checks) or cn_credit_code_valid(run):
            return False
    return True


def _record(template_id: int, gen: _Gen) -> dict:
    domain, template = TEMPLATES[template_id]
    values: dict[str, str] = {}
    parts: list[str] = []
    masked: list[str] = []
    spans: list[dict] = []
    distractors: list[dict] = []
    pos = 0
    last = 0
    for m in _SLOT.finditer(template):
        literal = template[last : m.start()]
        parts.append(literal)
        masked.append(literal)
        pos += len(literal)
        last = m.end()
        slot = m.group(1)
        if slot not in values:  # a slot used twice in a template is the same value ("请客户{name}...")
            maker = getattr(gen, slot.rstrip("2"))
            value = maker()
            while slot in _DISTRACTOR_SLOTS and not _is_clean(value):
                value = maker()
            values[slot] = value
        value = values[slot]
        parts.append(value)
        entity = _ENTITY_SLOTS.get(slot)
        if entity is not None:
            masked.append("{{" + entity + "}}")
            spans.append(
                {"entity_type": entity, "entity_value": value, "start_position": pos, "end_position": pos + len(value)}
            )
        else:
            masked.append(value)
            if slot in _DISTRACTOR_SLOTS:
                distractors.append({"kind": slot, "start": pos, "end": pos + len(value)})
        pos += len(value)
    parts.append(template[last:])
    masked.append(template[last:])
    return {
        "full_text": "".join(parts),
        "masked": "".join(masked),
        "spans": spans,
        "template_id": template_id,
        "metadata": {"language": "zh", "domain": domain, "distractors": distractors},
    }


def generate(n: int, seed: int) -> list[dict]:
    """``n`` labelled Chinese records, the same for the same ``seed`` (templates used in turn, shuffled)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic test data, not a secret
    gen = _Gen(rng)
    order = list(range(len(TEMPLATES)))
    out: list[dict] = []
    while len(out) < n:
        rng.shuffle(order)
        out.extend(_record(i, gen) for i in order[: n - len(out)])
    return out
