"""Webhook JSON body -> `Message`.

Body: `{"id": str, "user": str, "conversation": str, "text": str}`; ids are 1-200 characters,
text 1-32,000 characters. The message id is `webhook:<name>:<id>`, so a repeated `id` on the
same webhook is recognized as a duplicate. A button press sends `"button": "<token>"` (a token
from a reply's `buttons`) instead of `text`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from bot.errors import PayloadError
from bot.messages import Conversation, Message


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators: none of them may
#: reach a header (`Idempotency-Key`), a Redis key or a log line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (line breaks, escapes)")
    return value


NoNul = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, AfterValidator(_no_control)]


class WebhookEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: Name = Field(min_length=1, max_length=200)
    user: Name = Field(min_length=1, max_length=200)
    conversation: Name = Field(min_length=1, max_length=200)
    text: NoNul | None = Field(default=None, min_length=1, max_length=32_000)
    button: NoNul | None = Field(default=None, min_length=1, max_length=64,
                                 pattern=r"^[A-Za-z0-9_-]+$")


def normalize(name: str, payload: Any) -> Message:
    """Raises: PayloadError naming the first bad field."""
    if not isinstance(payload, dict):
        raise PayloadError("body must be a JSON object")
    try:
        env = WebhookEnvelope.model_validate(payload, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise PayloadError(f"{field}: {err['msg']}") from None
    meta = {"webhook": name, "id": env.id}
    if env.button:
        meta["button"] = env.button
    elif not env.text:
        raise PayloadError("text: Field required")
    return Message(id=f"webhook:{name}:{env.id}",
                   conversation=Conversation(platform="webhook", workspace=name,
                                             channel=env.conversation),
                   user=env.user, text=env.text or "(pressed a button)", meta=meta)
