"""Request signature helpers shared by the webhook adapters. Comparisons are constant-time
(`hmac.compare_digest`); presented signatures and secrets are never logged."""

from __future__ import annotations

import hashlib
import hmac
import time


def sha256_signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of body keyed with secret>`, the generic webhook header value."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_sha256_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is the `sha256=` signature of `body`; False for a missing header."""
    if not header:
        return False
    presented = _ascii(header)  # a valid signature is ASCII; anything else is simply wrong
    if presented is None:
        return False
    return hmac.compare_digest(sha256_signature(secret, body).encode(), presented)


#: Slack's replay window: requests more than 5 minutes from now either way are refused.
SLACK_WINDOW_S = 300


def _ascii(value: str) -> bytes | None:
    try:
        return value.strip().encode("ascii")
    except UnicodeError:
        return None


def verify_slack_v0(secret: str, body: bytes, timestamp: str | None, signature: str | None,
                    now: float | None = None) -> bool:
    """Slack request signing v0 (docs.slack.dev/authentication/verifying-requests-from-slack):
    `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}` keyed with the signing secret, and
    |now - timestamp| <= 300 s. Computed over the raw bytes, so a body that is not UTF-8 is
    verified like any other (slack_sdk's verifier decodes it first and raises). Never raises.
    """
    if not timestamp or not signature:
        return False
    ts = _ascii(timestamp)
    presented = _ascii(signature)
    if ts is None or presented is None or not ts.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(ts)) > SLACK_WINDOW_S:
        return False
    digest = hmac.new(secret.encode(), b"v0:" + ts + b":" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(b"v0=" + digest.encode(), presented)
