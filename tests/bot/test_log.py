"""No secret from settings or from a message appears in any log line."""

from __future__ import annotations

import json
import logging

import pytest

from bot.log import REDACTED, SecretRedactor, configure_logging, get_logger


def test_secrets_are_redacted_from_structlog_and_stdlib_lines(
        capsys: pytest.CaptureFixture[str]) -> None:
    secrets = ["whsec-0123456789", "sk-live-abcdef", "pg-pass-123"]
    configure_logging("DEBUG", "json", secrets)
    log = get_logger("test")
    log.info("calling", url="postgresql://app:pg-pass-123@db/bot", detail="key sk-live-abcdef")
    log.info("headers", headers={"Authorization": "Bearer abc", "X-Other": "fine"})
    log.info("posted", signature="sha256=deadbeef", api_key="anything")
    logging.getLogger("thirdparty").warning("secret is whsec-0123456789 in a stdlib line")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    text = json.dumps(lines)
    for secret in [*secrets, "Bearer abc", "deadbeef"]:
        assert secret not in text
    assert lines[0]["url"] == f"postgresql://app:{REDACTED}@db/bot"
    assert lines[1]["headers"] == {"Authorization": REDACTED, "X-Other": "fine"}
    assert lines[2]["signature"] == REDACTED and lines[2]["api_key"] == REDACTED
    assert lines[3]["event"] == f"secret is {REDACTED} in a stdlib line"
    configure_logging("WARNING", "console", [])


def test_redactor_leaves_ordinary_values_alone() -> None:
    redactor = SecretRedactor(["abcd1234"])
    event = redactor(None, "info", {"event": "x", "count": 3, "items": ["a", "abcd1234"]})
    assert event == {"event": "x", "count": 3, "items": ["a", REDACTED]}
