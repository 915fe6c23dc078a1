"""Request signature helpers shared by the webhook adapters. Comparisons are constant-time
(`hmac.compare_digest`, or Ed25519 verification); presented signatures and secrets are never
logged. Every `verify_*` returns a bool and never raises, whatever the headers hold."""

from __future__ import annotations

import hashlib
import hmac
import time

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

#: Replay window for timestamped signatures (Slack's and Discord's): a request signed more
#: than 5 minutes before or after now is refused.
REPLAY_WINDOW_S = 300
_SHA256_PREFIX = b"sha256="


def sha256_signature(secret: str, body: bytes) -> str:
    """`sha256=<lowercase hex HMAC-SHA256 of body keyed with secret>`, the generic webhook
    header value (`X-Signature`)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_sha256_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is `sha256=` and the hex HMAC-SHA256 of `body`, its 64 hex digits
    in either case (the prefix is lowercase, surrounding whitespace is ignored); False for a
    missing, non-ASCII or wrong header."""
    if not header:
        return False
    presented = _ascii(header)  # a valid signature is ASCII; anything else is simply wrong
    if presented is None or not presented.startswith(_SHA256_PREFIX):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    # lowercasing only the presented value: the compare stays constant-time in the secret
    return hmac.compare_digest(expected, presented[len(_SHA256_PREFIX):].lower())


def _ascii(value: str) -> bytes | None:
    try:
        return value.strip().encode("ascii")
    except UnicodeError:
        return None


def _fresh(timestamp: bytes, now: float | None) -> bool:
    """Whether `timestamp` is unix seconds (ASCII digits only) within REPLAY_WINDOW_S of
    `now` (default: the current time) either way."""
    if not timestamp.isdigit():
        return False
    return abs((time.time() if now is None else now) - int(timestamp)) <= REPLAY_WINDOW_S


def verify_slack_v0(secret: str, body: bytes, timestamp: str | None, signature: str | None,
                    now: float | None = None) -> bool:
    """Slack request signing v0
    (https://docs.slack.dev/authentication/verifying-requests-from-slack): `v0=` + hex
    HMAC-SHA256 of `v0:{timestamp}:{raw body}` keyed with the signing secret, and
    |now - timestamp| <= 300 s. Computed over the raw bytes, so a body that is not UTF-8 is
    verified like any other (slack_sdk's verifier decodes it first and raises).
    """
    if not timestamp or not signature:
        return False
    ts = _ascii(timestamp)
    presented = _ascii(signature)
    if ts is None or presented is None or not _fresh(ts, now):
        return False
    digest = hmac.new(secret.encode(), b"v0:" + ts + b":" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(b"v0=" + digest.encode(), presented)


def verify_ed25519(key: VerifyKey, body: bytes, timestamp: str | None, signature: str | None,
                   now: float | None = None) -> bool:
    """Discord's interaction signature
    (https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers):
    `X-Signature-Ed25519` is the hex Ed25519 signature, by the application's public `key`,
    of `X-Signature-Timestamp` + the raw body. The timestamp must also be unix seconds within
    300 s of `now` either way: Discord documents no window, so this is hardening against
    replays, the same as Slack's.
    """
    if not timestamp or not signature:
        return False
    try:
        ts = timestamp.encode("ascii")
        if not _fresh(ts, now):
            return False
        key.verify(ts + body, bytes.fromhex(signature))
    except (BadSignatureError, ValueError, UnicodeError):
        return False
    return True
