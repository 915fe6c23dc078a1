"""The http_request built-in against a real HTTP endpoint on loopback: a signed body with the
caller and an idempotency key; 5xx retried with the same key, 4xx a failure."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from actions.builtin import sign_body
from tests.actions.test_runner import audit, say
from tests.fakes.bot_server import Server
from tests.fakes.openai_server import CallbackRecorder

SIGNING_SECRET = "http-action-secret-0123456789"


async def test_http_request_posts_a_signed_body_and_retries_5xx(
        server_factory: Callable[..., Any], callback: CallbackRecorder) -> None:
    srv: Server = await server_factory(bot_http_action_url=callback.url,
                                       bot_http_action_secret=SIGNING_SECRET)
    reply = await say(srv, "alice", "!http_request deploy finished for web")
    assert reply["answer"] == "Sent. The endpoint answered 200."
    [(body, headers)] = callback.calls
    sent = json.loads(body)
    assert sent == {"text": "deploy finished for web", "user": "alice", "platform": "webhook",
                    "channel": "c1", "conversation": "webhook:support:c1:-",
                    "call_id": sent["call_id"]}
    timestamp = headers["X-Switchboard-Timestamp"]
    expected = hmac.new(SIGNING_SECRET.encode(), f"{timestamp}.".encode() + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Switchboard-Signature"] == f"sha256={expected}"
    assert sign_body(SIGNING_SECRET, timestamp, body) == f"sha256={expected}"
    assert headers["Idempotency-Key"] == sent["call_id"]

    callback.status = 503
    failed = await say(srv, "alice", "!http_request again")
    assert failed["answer"].startswith("Sorry, `http_request` failed (trace id")
    retried = callback.calls[1:]
    assert len(retried) == 3  # one attempt and two retries, with one key
    assert len({h["Idempotency-Key"] for _, h in retried}) == 1
    callback.status = 403
    refused = await say(srv, "alice", "!http_request once more")
    assert "the endpoint refused the request (403)" in refused["answer"]
    assert len(callback.calls) == 5  # a 4xx is not retried
    rows = [(r["status"], r["attempts"]) for r in await audit(srv)]
    assert rows == [("ok", 1), ("failed", 3), ("failed", 1)]
