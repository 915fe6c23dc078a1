"""PII and secret redaction on real-looking text, including text that must stay untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.guardrails.pii import PIIRedactor, shannon_bits

REDACTOR = PIIRedactor(phone_regions=["US", "GB", "DE"])


@pytest.mark.parametrize(("text", "expected", "kinds"), [
    ("Write to jane.doe+billing@example.co.uk today.", "Write to [EMAIL] today.", ["email"]),
    ("Call +1 (415) 555-2671 or 020 7946 0958.", "Call [PHONE] or [PHONE].",
     ["phone", "phone"]),
    ("Ruf mich an: 030 12345678.", "Ruf mich an: [PHONE].", ["phone"]),
    ("My card is 4111 1111 1111 1111, exp 12/27.", "My card is [CARD], exp 12/27.", ["card"]),
    ("Pay to GB82 WEST 1234 5698 7654 32 please", "Pay to [IBAN] please", ["iban"]),
    ("Server 10.0.0.12 and fe80::1ff:fe23:4567:890a failed",
     "Server [IP] and [IP] failed", ["ip", "ip"]),
    ("key sk-proj-abcdEFGH1234ijklMNOP5678qrst ok", "key [SECRET] ok", ["secret"]),
    ("slack xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx", "slack [SECRET]",
     ["secret"]),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [SECRET]", ["secret"]),
    ("tg 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0", "tg [SECRET]", ["secret"]),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmN"
     "HlFeqqZaf8MH6BpxIt0MPOuvxCw", "Authorization: Bearer [SECRET]", ["secret"]),
    ("random Zx9Qp2Lm8Rt4Vw7Yb1Nc5Kd3Hf6Gj0Ts end", "random [SECRET] end", ["secret"]),
])
def test_finds_and_redacts(text: str, expected: str, kinds: list[str]) -> None:
    assert REDACTOR.redact(text) == (expected, kinds)


@pytest.mark.parametrize("text", [
    "Version 1.2.3 was released on 2024-05-01 as build 20240501.",
    "Order 12345678 shipped; tracking code arrives by mail.",
    "The card number 4111 1111 1111 1112 fails the Luhn check.",  # not a valid card
    "GB82 WEST 1234 5698 7654 33 is not a valid IBAN.",
    "Use get_user_by_email_address_v2 from the UserAccountRecordFactory module.",
    "See https://example.com/docs/getting-started/installation-guide and run `make test`.",
    "At 10:30:45 the std::vector<int> was resized; commit 3f2a9c1 fixed it.",
    "Wie kann ich mein Passwort zurücksetzen? 我的订单在哪里？",
    "IP 999.10.10.10 is not an address; neither is 1.2.3.",
])
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert REDACTOR.redact(text) == (text, [])


def test_kinds_can_be_limited_and_are_validated() -> None:
    only_email = PIIRedactor(kinds=["email"])
    text = "a@b.io 4111 1111 1111 1111"
    assert only_email.redact(text) == ("[EMAIL] 4111 1111 1111 1111", ["email"])
    with pytest.raises(ValueError, match="ssn"):
        PIIRedactor(kinds=["ssn"])


def test_entropy() -> None:
    assert shannon_bits("aaaa") == 0
    assert shannon_bits("abcd") == 2


#: One token of each `_SECRET_FORMATS` alternative (fake values, the formats' shapes).
ONE_OF_EACH_FORMAT = [
    "sk-abcdEFGH1234ijklMNOP5678", "sk-ant-api03-abcdEFGH1234ijklMNOP5678",
    "xoxb-1234567890-AbCdEfGhIj", "xapp-1-A0123456789-abcdef", "ghp_" + "a1B2" * 9,
    "gho_" + "a1B2" * 9, "ghu_" + "a1B2" * 9, "ghs_" + "a1B2" * 9, "ghr_" + "a1B2" * 9,
    "github_pat_" + "a1B2_" * 7, "glpat-abcdEFGH1234ijklMNOP", "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE", "AIza" + "Sy0123456789abcdefghijABCDEFGHIJ-_x", "sk_live_" + "a1" * 9,
    "rk_test_" + "a1" * 9, "123456789:" + "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawx",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmN",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    "Bearer abcdefghijklmnop1234",
]


@pytest.mark.parametrize("token", ONE_OF_EACH_FORMAT)
def test_the_prefilter_never_skips_a_secret_format(token: str) -> None:
    """`_secret_format_matches` skips the big regex only when no alternative can match: each
    format is found alone, inside prose and next to another one, exactly as the regex finds
    it."""
    from bot.guardrails.pii import _SECRET_FORMATS, _secret_format_matches

    for text in (token, f"here is mine: {token} thanks", f"a ({token}) b 12345678: c"):
        expected = [m.span() for m in _SECRET_FORMATS.finditer(text)]
        assert expected, text  # the sample is of the format
        assert [m.span() for m in _secret_format_matches(text)] == expected
    prose = "Deploys are on Tuesdays at 10:30; the changelog says: nothing else."
    assert _secret_format_matches(prose) == [] == list(_SECRET_FORMATS.finditer(prose))


def _matcher_spans(text: str, regions: list[str | None]) -> set[tuple[int, int]]:
    import phonenumbers

    return {(m.start, m.end) for region in regions for m in phonenumbers.PhoneNumberMatcher(
        text, region, leniency=phonenumbers.Leniency.VALID)}


def test_the_phone_prefilter_never_skips_a_valid_number_of_any_region() -> None:
    """Each region's example number (libphonenumber's own) in each of its formats (RFC 3966
    `tel:` included) and spread out with the widest punctuation the matcher accepts between
    digits, and the non-geographic ones (+800 ...): the redactor finds exactly what
    libphonenumber's matcher finds, so skipping texts with too few digits, too few close
    together (`_digit_run`) or no `+` loses nothing; and the international floor is below
    every real number's digit count."""
    import phonenumbers

    from bot.guardrails.pii import _INTERNATIONAL_MIN_DIGITS

    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        number = phonenumbers.example_number(region)
        if number is None:
            continue
        redactor = PIIRedactor(kinds=["phone"], phone_regions=[region])
        styles = (phonenumbers.PhoneNumberFormat.NATIONAL,
                  phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                  phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.RFC3966)
        wide = " -- ".join(phonenumbers.national_significant_number(number))  # 4 between
        for written in [*(phonenumbers.format_number(number, s) for s in styles), wide]:
            text = f"call me on {written} tonight"
            found = {(f.start, f.end) for f in redactor.find(text)}
            assert found == _matcher_spans(text, [None, region]), (region, text)
            checked += bool(found)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        assert metadata is not None and metadata.general_desc is not None
        shortest = len(str(number.country_code)) + min(metadata.general_desc.possible_length)
        assert _INTERNATIONAL_MIN_DIGITS <= shortest, region
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is None:
            continue
        text = f"free: {phonenumbers.format_number(number, 1)}."  # INTERNATIONAL
        assert {(f.start, f.end) for f in PIIRedactor(kinds=["phone"]).find(text)} == \
            _matcher_spans(text, [None, "US"]), text
    assert checked > 800  # the examples are real numbers the matcher finds


def test_the_digit_run_prefilter_keeps_what_the_matcher_finds_in_real_prose() -> None:
    """The redactor asks libphonenumber's matcher only about texts with enough digits close
    together (`_digit_run`): on the project's own documentation (prose full of ports, versions
    and times) it finds exactly what the matcher finds."""
    from bot.guardrails.pii import _digit_run

    run = _digit_run(7)
    assert run.search("call (555) 123-4567") and run.search("5 . 5 - 5 ( 1 ) 2 3 4")
    assert not run.search("port 8080, then wait 30 s") and not run.search("123456")
    docs = Path(__file__).resolve().parents[3] / "docs"
    redactor = PIIRedactor(kinds=["phone"], phone_regions=["US", "GB", "DE", "IN"])
    paragraphs = [p for path in sorted(docs.rglob("*.md"))
                  for p in path.read_text(encoding="utf-8").split("\n\n")]
    assert len(paragraphs) > 300
    for paragraph in paragraphs:
        assert {(f.start, f.end) for f in redactor.find(paragraph)} == _matcher_spans(
            paragraph, [None, "US", "GB", "DE", "IN"]), paragraph[:200]


@pytest.mark.parametrize(("regions", "text"), [
    (["AG"], "call me on 460 1234"), (["US", "TT"], "call 221-1234 tonight"),
    (["VI"], "642-1234"), (["BM"], "1 370 1234"), (["SM"], "886377"), (["NF"], "81234"),
    (["MG"], "212 3456")])
def test_local_numbers_completed_by_the_region_are_found(regions: list[str],
                                                          text: str) -> None:
    """Regions that complete a local number with their area code (the North American plan's
    7 digits, MG, NF, SM) accept fewer digits than their national numbers have: the prefilter
    must not skip them."""
    found = {(f.start, f.end) for f in PIIRedactor(kinds=["phone"],
                                                   phone_regions=regions).find(text)}
    assert found and found == _matcher_spans(text, [None, *regions])
