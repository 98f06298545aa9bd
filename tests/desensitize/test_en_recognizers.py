"""The English pattern recognizers, through the default analyzer: what each entity finds and what it must not.

Values are published test and documentation examples (card-network test numbers, the IBAN registry's
examples, RFC 5737/3849 addresses, the 555 phone range), never real people's data.
"""

from __future__ import annotations

import pytest

from privet.desensitize import Analyzer, default_analyzer
from privet.desensitize import types as t
from privet.desensitize.recognizers.en import card_valid, date_valid, ip_valid, phone_valid, wallet_valid
from privet.desensitize.validators import luhn_valid


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return default_analyzer()


def found(analyzer: Analyzer, text: str) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in analyzer.analyze(text)]


def values(analyzer: Analyzer, text: str, entity: str) -> list[str]:
    """The values of ``entity`` found in ``text`` (with every recognizer competing for the spans)."""
    return [text[f.start : f.end] for f in analyzer.analyze(text) if f.entity == entity]


def assert_found(analyzer: Analyzer, text: str, entity: str, value: str) -> None:
    assert (entity, value) in found(analyzer, text), found(analyzer, text)


def assert_not_found(analyzer: Analyzer, text: str, entity: str) -> None:
    assert values(analyzer, text, entity) == [], found(analyzer, text)


# -- e-mail, URL, domain, IP ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Email me at jane.doe@example.com please.", "jane.doe@example.com"),
        ("Contact: first.last+tag@mail.example.co.uk.", "first.last+tag@mail.example.co.uk"),
        ("<a_b-c@sub-domain.example.org>", "a_b-c@sub-domain.example.org"),
    ],
)
def test_email_positive(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.EMAIL, value)


@pytest.mark.parametrize("text", ["Write to user@localhost today.", "a@b is not an address", "name at example dot com"])
def test_email_negative(analyzer: Analyzer, text: str) -> None:
    assert_not_found(analyzer, text, t.EMAIL)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("See https://www.example.com/path?q=1 for details.", "https://www.example.com/path?q=1"),
        ("Mirror at ftp://files.example.org/pub.", "ftp://files.example.org/pub"),
        ("(see http://example.net/a/b)", "http://example.net/a/b"),
    ],
)
def test_url_positive(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.URL, value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Visit our website example.org today.", "example.org"),
        ("Our blog is at www.example.co.uk.", "www.example.co.uk"),
    ],
)
def test_bare_domain_positive(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.DOMAIN, value)


@pytest.mark.parametrize("text", ["Open report.txt now.", "Version 3.14 is out.", "Read the file setup.py first."])
def test_domain_negative(analyzer: Analyzer, text: str) -> None:
    assert_not_found(analyzer, text, t.DOMAIN)
    assert_not_found(analyzer, text, t.URL)


def test_domain_inside_an_email_is_not_a_separate_domain(analyzer: Analyzer) -> None:
    assert found(analyzer, "mail jane@example.com now") == [(t.EMAIL, "jane@example.com")]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Server at 192.0.2.20 responded.", "192.0.2.20"),
        ("gateway=198.51.100.1;", "198.51.100.1"),
        ("IPv6 2001:db8::8a2e:370:7334 is up.", "2001:db8::8a2e:370:7334"),
        ("loopback ::1 only", "::1"),
        ("link fe80::1 and more", "fe80::1"),
    ],
)
def test_ip_positive(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.IP_ADDRESS, value)


@pytest.mark.parametrize(
    "text", ["Server at 999.1.1.1 responded.", "host 256.256.256.256 down", "1.2.3.4.5 is a version", "at 10:30:45"]
)
def test_ip_negative(analyzer: Analyzer, text: str) -> None:
    assert_not_found(analyzer, text, t.IP_ADDRESS)


def test_ip_validator() -> None:
    assert ip_valid("192.0.2.1")
    assert ip_valid("2001:db8::1")
    assert not ip_valid("999.1.1.1")
    assert not ip_valid("1:2")


# -- cards, IBAN, SSN ------------------------------------------------------------------------------------------

CARDS = {
    "visa": "4111 1111 1111 1111",
    "visa_compact": "4012888888881881",
    "mastercard": "5555555555554444",
    "mastercard_2_series": "2223003122003222",
    "amex": "378282246310005",
    "amex_dashed": "3714-496353-98431",
    "discover": "6011111111111117",
}


def _change_last_digit(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


@pytest.mark.parametrize("card", CARDS.values(), ids=CARDS.keys())
def test_credit_card_test_numbers_pass(analyzer: Analyzer, card: str) -> None:
    assert_found(analyzer, f"Card {card} on file.", t.CREDIT_CARD, card)
    assert card_valid(card)


@pytest.mark.parametrize("card", CARDS.values(), ids=CARDS.keys())
def test_credit_card_with_a_wrong_check_digit_fails(analyzer: Analyzer, card: str) -> None:
    wrong = _change_last_digit(card)
    assert not card_valid(wrong)
    assert_not_found(analyzer, f"Card {wrong} on file.", t.CREDIT_CARD)


def test_credit_card_with_an_unknown_issuer_fails(analyzer: Analyzer) -> None:
    number = "1234567812345670"  # Luhn-valid, but no network issues cards starting with 1
    assert luhn_valid(number)
    assert not card_valid(number)
    assert_not_found(analyzer, f"Reference {number} on file.", t.CREDIT_CARD)
    assert_not_found(analyzer, f"Shipment {number[:4]} {number[4:8]} {number[8:12]} {number[12:]} left.", t.CREDIT_CARD)


def test_unknown_issuer_in_card_context_scores_below_a_known_issuer(analyzer: Analyzer) -> None:
    # The text calling an unknown-issuer, Luhn-valid number a card may still make it one, but with less
    # confidence than a number in a known issuer range; a number failing Luhn never is one.
    unknown = [f.score for f in analyzer.analyze("Card 1234567812345670 on file.") if f.entity == t.CREDIT_CARD]
    known = [f.score for f in analyzer.analyze("Card 4012888888881881 on file.") if f.entity == t.CREDIT_CARD]
    assert len(known) == 1
    assert all(score < known[0] for score in unknown)
    assert_not_found(analyzer, "Card 1234567812345671 on file.", t.CREDIT_CARD)


def test_credit_card_with_the_wrong_length_for_its_issuer_fails() -> None:
    assert luhn_valid("378282246310005")
    assert not card_valid("3782822463100050")  # Amex is 15 digits; this is 16 (and fails Luhn anyway)
    assert not card_valid("0000000000000000")
    assert not card_valid("4111-1111-1111-111x")


@pytest.mark.parametrize(
    "iban",
    ["GB82WEST12345698765432", "DE89370400440532013000", "DE89 3704 0044 0532 0130 00", "GB29NWBK60161331926819"],
)
def test_iban_valid_examples_pass(analyzer: Analyzer, iban: str) -> None:
    assert_found(analyzer, f"Pay to IBAN {iban} please.", t.IBAN, iban)


@pytest.mark.parametrize("iban", ["GB82WEST12345698765433", "DE89370400440532013001", "DE89 3704 0044 0532 0131 00"])
def test_iban_with_a_changed_digit_fails(analyzer: Analyzer, iban: str) -> None:
    assert_not_found(analyzer, f"Pay to IBAN {iban} please.", t.IBAN)


def test_iban_in_printed_groups_is_an_iban(analyzer: Analyzer) -> None:
    # "WEST 1234" once read as a continental street line whose score beat the IBAN pattern's.
    text = "IBAN GB82 WEST 1234 5698 7654 32 ok"
    assert found(analyzer, text) == [(t.IBAN, "GB82 WEST 1234 5698 7654 32")]


@pytest.mark.parametrize("ssn", ["536-90-4321", "536 90 4321"])
def test_us_ssn_valid_format_passes(analyzer: Analyzer, ssn: str) -> None:
    assert_found(analyzer, f"SSN {ssn} on record.", t.US_SSN, ssn)


def test_us_ssn_without_separators_needs_context(analyzer: Analyzer) -> None:
    assert_found(analyzer, "social security number 536904321", t.US_SSN, "536904321")
    assert_not_found(analyzer, "order 536904321 shipped", t.US_SSN)


@pytest.mark.parametrize(
    "ssn",
    [
        "000-12-3456",  # area 000
        "666-12-3456",  # area 666
        "912-34-5678",  # area 9xx
        "536-00-4321",  # group 00
        "536-90-0000",  # serial 0000
        "078-05-1120",  # voided (Woolworth wallet card)
    ],
)
def test_us_ssn_invalid_ranges_fail(analyzer: Analyzer, ssn: str) -> None:
    assert_not_found(analyzer, f"SSN {ssn} on record.", t.US_SSN)


# -- phone --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Please call +1 202-555-0147 today.", "+1 202-555-0147"),
        ("Call me at (212) 555-0100.", "(212) 555-0100"),
        ("Phone: 202.555.0199 ext. 12", "202.555.0199 ext. 12"),
        ("Tel +44 20 7946 0958", "+44 20 7946 0958"),
    ],
)
def test_phone_positive(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.PHONE, value)


def test_phone_context_raises_the_score(analyzer: Analyzer) -> None:
    plain = [f.score for f in analyzer.analyze("see 202-555-0147", entities=[t.PHONE])]
    called = [f.score for f in analyzer.analyze("call 202-555-0147", entities=[t.PHONE])]
    assert len(plain) == len(called) == 1
    assert called[0] > plain[0]


@pytest.mark.parametrize(
    "text",
    [
        "call 20210315123045 now",  # a 14-digit timestamp
        "Created 20210315123045 ok",
        "call me on 2021-03-15",  # an ISO date
        "phone 03/15/2021",
        "call 1111111",  # one repeated digit
        "call +999 12",  # too short, no such country
    ],
)
def test_phone_negative(analyzer: Analyzer, text: str) -> None:
    # Alone, without the DATE_TIME pattern competing for the span.
    assert analyzer.analyze(text, entities=[t.PHONE]) == []


def test_phone_validator() -> None:
    assert phone_valid("+1 202-555-0147")
    assert not phone_valid("20210315123045")
    assert not phone_valid("2021-03-15")
    assert not phone_valid("12-34")


# -- dates, ages, zip codes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("On 2021-03-15 we met.", "2021-03-15"),
        ("Logged 2021-03-15T10:20:30Z by the system.", "2021-03-15T10:20:30Z"),
        ("Logged 2021-03-15 10:20:30+01:00.", "2021-03-15 10:20:30+01:00"),
        ("We met on January 2, 2020.", "January 2, 2020"),
        ("See you Monday.", "Monday"),
        ("Born 12/31/1999 in a hospital.", "12/31/1999"),
        ("Due in Sept 2021 at the latest.", "Sept 2021"),
    ],
)
def test_date_time_positive(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.DATE_TIME, value)


def test_day_month_year_text_date(analyzer: Analyzer) -> None:
    assert values(analyzer, "It happened on the 2nd of March 2021.", t.DATE_TIME) == ["2nd of March 2021"]
    assert analyzer.analyze("on 2 March 2021", entities=[t.DATE_TIME])[0].length == len("2 March 2021")


def test_day_month_year_is_a_date_not_an_address(analyzer: Analyzer) -> None:
    # "2 March 2021" once read as a continental street line (house number, street word, number).
    assert found(analyzer, "We met on 2 March 2021.") == [(t.DATE_TIME, "2 March 2021")]


@pytest.mark.parametrize("text", ["Due 2021-02-30.", "Due 2021-13-01.", "Due 31/31/2020."])
def test_invalid_dates_are_rejected(analyzer: Analyzer, text: str) -> None:
    assert_not_found(analyzer, text, t.DATE_TIME)


def test_date_validator() -> None:
    assert date_valid("2020-02-29")
    assert not date_valid("2021-02-29")
    assert date_valid("31/12/99")  # day first
    assert date_valid("12/31/99")  # month first


@pytest.mark.parametrize(
    ("text", "value"),
    [("The patient, aged 42, arrived.", "42"), ("He is 42 years old.", "42"), ("a 7-year-old boy", "7")],
)
def test_age_with_context(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.AGE, value)


@pytest.mark.parametrize("text", ["There are 42 apples.", "Room 42 is free.", "He is aged 150."])
def test_age_needs_context_and_range(analyzer: Analyzer, text: str) -> None:
    assert_not_found(analyzer, text, t.AGE)


@pytest.mark.parametrize(
    ("text", "value"), [("My zip code is 94103.", "94103"), ("Postal code: 94103-1234", "94103-1234")]
)
def test_zip_code_with_context(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.ZIP_CODE, value)


@pytest.mark.parametrize("text", ["The number 94103 is big.", "We sold 94103 units."])
def test_zip_code_needs_context(analyzer: Analyzer, text: str) -> None:
    assert_not_found(analyzer, text, t.ZIP_CODE)


# -- passport, driver licence ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"), [("My passport is 123456789.", "123456789"), ("passport: X1234567", "X1234567")]
)
def test_passport_with_context(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.PASSPORT, value)


@pytest.mark.parametrize(
    ("text", "entity"),
    [("Passport number 123456789.", t.PASSPORT), ("Driver license number 123456789.", t.DRIVER_LICENSE)],
)
def test_number_phrase_is_not_a_phone(analyzer: Analyzer, text: str, entity: str) -> None:
    # "number" is also a PHONE context word; the passport or licence context must outweigh it.
    assert found(analyzer, text) == [(entity, "123456789")]


@pytest.mark.parametrize("text", ["Order X1234567 shipped.", "Invoice 123456789 paid."])
def test_passport_needs_context(analyzer: Analyzer, text: str) -> None:
    assert_not_found(analyzer, text, t.PASSPORT)


@pytest.mark.parametrize(
    ("text", "value"),
    [("Driver license D1234567.", "D1234567"), ("Driving licence number: AB123456", "AB123456")],
)
def test_driver_license_with_context(analyzer: Analyzer, text: str, value: str) -> None:
    assert_found(analyzer, text, t.DRIVER_LICENSE, value)


@pytest.mark.parametrize("text", ["Ticket D1234567 issued.", "Seat AB123456 is free."])
def test_driver_license_needs_context(analyzer: Analyzer, text: str) -> None:
    assert_not_found(analyzer, text, t.DRIVER_LICENSE)


# -- crypto wallets ------------------------------------------------------------------------------------------------

WALLETS = {
    "base58_p2pkh": "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
    "base58_p2sh": "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
    "bech32": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "ethereum": "0x742d35Cc6634C0532925a3b844Bc454e4438f44e",
}


@pytest.mark.parametrize("wallet", WALLETS.values(), ids=WALLETS.keys())
def test_crypto_wallet_positive(analyzer: Analyzer, wallet: str) -> None:
    assert_found(analyzer, f"Send it to {wallet} now.", t.CRYPTO_WALLET, wallet)
    assert wallet_valid(wallet)


def _change_char(value: str, index: int) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    if value.startswith("bc1"):
        alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    current = value[index]
    replacement = alphabet[(alphabet.index(current) + 1) % len(alphabet)]
    return value[:index] + replacement + value[index + 1 :]


@pytest.mark.parametrize(
    "wallet",
    [
        _change_char(WALLETS["base58_p2pkh"], -1),
        _change_char(WALLETS["base58_p2pkh"], 10),
        _change_char(WALLETS["base58_p2sh"], 5),
        _change_char(WALLETS["bech32"], -1),
        _change_char(WALLETS["bech32"], 12),
    ],
)
def test_crypto_wallet_with_a_changed_character_fails(analyzer: Analyzer, wallet: str) -> None:
    assert not wallet_valid(wallet)
    assert_not_found(analyzer, f"Send it to {wallet} now.", t.CRYPTO_WALLET)


def test_ethereum_address_with_too_few_distinct_digits_fails(analyzer: Analyzer) -> None:
    assert_not_found(analyzer, "Send it to 0x" + "0" * 40 + " now.", t.CRYPTO_WALLET)


# -- languages ---------------------------------------------------------------------------------------------------


def test_english_only_patterns_do_not_run_on_chinese_text(analyzer: Analyzer) -> None:
    # Chinese text has CN_BANK_CARD for cards and CN_MOBILE/CN_LANDLINE for phones.
    text = "我的卡号是4111111111111111，谢谢。"
    assert t.CREDIT_CARD not in {f.entity for f in analyzer.analyze(text)}
    assert t.CREDIT_CARD in {f.entity for f in analyzer.analyze(text, language="en")}


def test_shared_patterns_run_on_chinese_text(analyzer: Analyzer) -> None:
    text = "请发邮件到zhangsan@example.com，服务器192.0.2.7。"
    assert (t.EMAIL, "zhangsan@example.com") in found(analyzer, text)
    assert (t.IP_ADDRESS, "192.0.2.7") in found(analyzer, text)


@pytest.mark.parametrize("value", ["394 13", "7412 SL", "B0J 2H0", "02139", "90210-1234"])
def test_postcodes_of_several_countries_with_context(analyzer, value: str) -> None:
    text = f"ZIP: {value}"
    assert [(f.entity, text[f.start : f.end]) for f in analyzer.analyze(text)] == [("ZIP_CODE", value)]


def test_postcode_after_its_town(analyzer) -> None:
    text = "We are looking to support them in Costamezzana 43015 in its mission."
    found = {(f.entity, text[f.start : f.end]) for f in analyzer.analyze(text)}
    assert ("ZIP_CODE", "43015") in found
