"""Request signature helpers shared by the webhook adapters. Comparisons are constant-time
(`hmac.compare_digest`); presented signatures and secrets are never logged."""

from __future__ import annotations

import hashlib
import hmac


def sha256_signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of body keyed with secret>`, the generic webhook header value."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_sha256_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is the `sha256=` signature of `body`; False for a missing header."""
    if not header:
        return False
    try:
        presented = header.strip().encode("ascii")
    except UnicodeError:  # a valid signature is ASCII; anything else is simply wrong
        return False
    return hmac.compare_digest(sha256_signature(secret, body).encode(), presented)
