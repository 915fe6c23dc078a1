"""Request signature checks (adapters/verification.py): the generic webhook's `X-Signature:
sha256=<hex>` in either case of hex, and Discord's Ed25519 interaction signatures, refused
outside 5 minutes of now either way, as Slack's are."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from nacl.signing import SigningKey

from adapters.verification import (
    REPLAY_WINDOW_S,
    sha256_signature,
    verify_ed25519,
    verify_sha256_signature,
)

SECRET = "webhook-secret"
BODY = b'{"id": "m-1", "text": "What is zlib\'s CHUNK?"}'
HEX = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()


def test_the_signature_is_lowercase_hex_of_hmac_sha256() -> None:
    assert sha256_signature(SECRET, BODY) == f"sha256={HEX}"
    assert HEX == HEX.lower() and len(HEX) == 64


@pytest.mark.parametrize("header", [
    f"sha256={HEX}", f"sha256={HEX.upper()}",
    "sha256=" + "".join(c.upper() if i % 2 else c for i, c in enumerate(HEX)),
    f"  sha256={HEX.upper()} "])
def test_hex_in_either_case_is_accepted(header: str) -> None:
    assert verify_sha256_signature(SECRET, BODY, header)


@pytest.mark.parametrize("header", [
    None, "", HEX, f"sha256={HEX[:-1]}", f"sha256={HEX}0", f"sha1={HEX}",
    f"sha256={hmac.new(b'other', BODY, hashlib.sha256).hexdigest().upper()}",
    f"sha256={HEX[:-1]}g", f"sha256={HEX[:-1]}é", f"sha256= {HEX}"])
def test_anything_else_is_refused(header: str | None) -> None:
    assert not verify_sha256_signature(SECRET, BODY, header)


def test_a_different_body_is_refused_in_either_case() -> None:
    assert not verify_sha256_signature(SECRET, BODY + b" ", f"sha256={HEX.upper()}")


# Discord (Ed25519 over timestamp + raw body) ------------------------------------------------

KEY = SigningKey.generate()
NOW = 1_731_999_999


def ed25519(body: bytes, timestamp: str, key: SigningKey = KEY) -> str:
    return key.sign(timestamp.encode() + body).signature.hex()


@pytest.mark.parametrize("skew", [0, -REPLAY_WINDOW_S, REPLAY_WINDOW_S, -1, 1])
def test_discord_signatures_within_five_minutes_are_accepted(skew: int) -> None:
    ts = str(NOW + skew)
    assert verify_ed25519(KEY.verify_key, BODY, ts, ed25519(BODY, ts), now=NOW)
    assert verify_ed25519(KEY.verify_key, BODY, ts, ed25519(BODY, ts).upper(), now=NOW)


@pytest.mark.parametrize("timestamp", [
    "1000000000", str(NOW - REPLAY_WINDOW_S - 1), str(NOW + REPLAY_WINDOW_S + 1),
    "yesterday", f"{NOW}.5", f"-{NOW}", f"+{NOW}", f" {NOW}", "", "١٧٣١٩٩٩٩٩٩"])
def test_discord_timestamps_stale_future_or_not_seconds_are_refused(timestamp: str) -> None:
    signature = ed25519(BODY, timestamp)  # a valid signature: only the timestamp is wrong
    assert not verify_ed25519(KEY.verify_key, BODY, timestamp, signature, now=NOW)


def test_discord_bad_signatures_are_refused() -> None:
    ts = str(NOW)
    good = ed25519(BODY, ts)
    assert not verify_ed25519(KEY.verify_key, BODY + b" ", ts, good, now=NOW)
    assert not verify_ed25519(KEY.verify_key, BODY, ts, ed25519(BODY, ts, SigningKey.generate()),
                              now=NOW)
    assert not verify_ed25519(KEY.verify_key, BODY, str(NOW + 1), good, now=NOW)
    for broken in (None, "", "zz" * 64, good[:-2], "é" * 128):
        assert not verify_ed25519(KEY.verify_key, BODY, ts, broken, now=NOW)
    assert not verify_ed25519(KEY.verify_key, BODY, None, good, now=NOW)
