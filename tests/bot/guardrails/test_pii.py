"""PII and secret redaction on real-looking text, including text that must stay untouched."""

from __future__ import annotations

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
