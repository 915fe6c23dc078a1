"""Webhook JSON body -> `Message`.

Body: `{"id": str, "user": str, "conversation": str, "text": str}`; ids are 1-200 characters,
text 1 to `BOT_MAX_TEXT_CHARS` (4,000) characters that show something. The message id is
`webhook:<name>:<id>`, so a repeated `id` on the same webhook is recognized as a duplicate. A
button press sends `"button": "<token>"` (a token from a reply's `buttons`) instead of `text`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from bot.errors import PayloadError
from bot.messages import Conversation, Message, is_blank


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


Name = Annotated[str, AfterValidator(_no_control)]
# constraints on the str itself, so that errors speak of characters, not of items
Text = Annotated[str, StringConstraints(min_length=1), AfterValidator(_no_nul)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                         pattern=r"^[A-Za-z0-9_-]+$")]


class WebhookEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: Name = Field(min_length=1, max_length=200)
    user: Name = Field(min_length=1, max_length=200)
    conversation: Name = Field(min_length=1, max_length=200)
    text: Text | None = None
    button: Token | None = None


def normalize(name: str, payload: Any, max_text_chars: int = 4000) -> Message:
    """Raises: PayloadError naming the first bad field (`max_text_chars` is
    BOT_MAX_TEXT_CHARS)."""
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
    elif len(env.text) > max_text_chars:
        raise PayloadError(f"text: at most {max_text_chars} characters (BOT_MAX_TEXT_CHARS), "
                           f"not {len(env.text)}")
    elif is_blank(env.text):
        raise PayloadError("text: shows nothing (only spaces or invisible characters)")
    return Message(id=f"webhook:{name}:{env.id}",
                   conversation=Conversation(platform="webhook", workspace=name,
                                             channel=env.conversation),
                   user=env.user, text=env.text or "(pressed a button)", meta=meta)
