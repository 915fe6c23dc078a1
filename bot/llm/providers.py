"""The list of language-model providers: any OpenAI-compatible chat endpoint.

`LLM_PROVIDERS` holds a JSON array or TOML `[[providers]]` tables (or the path of a .json or
.toml file holding them), e.g.

    [{"name": "groq", "base_url": "https://api.groq.com/openai/v1",
      "model": "llama-3.1-8b-instant", "api_key_env": "GROQ_API_KEY", "priority": 1},
     {"name": "local", "base_url": "http://127.0.0.1:11434/v1", "model": "llama3.1",
      "priority": 2}]

Lower `priority` is tried first. When `LLM_PROVIDERS` is unset, the single-provider settings
(`LLM_BASE_URL`, `LLM_MODEL`, `OPENAI_API_KEY`, `LLM_TIMEOUT_S`) make a list of one.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bot.errors import ConfigError


class ProviderConfig(BaseModel):
    """One OpenAI-compatible endpoint.

    Attributes:
        name: shown in logs and metrics (letters, digits, `_ . -`).
        base_url: the endpoint's `/v1` URL; None for api.openai.com.
        model: the model name sent with each request.
        api_key_env: the environment variable holding the API key (the key itself never
            appears in settings, so it cannot leak through them); None for keyless servers.
        timeout_s: per request, seconds.
        priority: lower is tried first; ties keep the list order.
        context_tokens: the model's context window (prompt + completion), tokens.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str | None = None
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    priority: int = 0
    context_tokens: Annotated[int, Field(ge=512)] = 8192

    def api_key(self) -> str | None:
        """The key read from `api_key_env`.

        Raises:
            ConfigError: `api_key_env` names a variable that is unset or empty.
        """
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env, "").strip()
        if not value:
            raise ConfigError(f"LLM_PROVIDERS: provider {self.name!r} reads its API key from "
                              f"{self.api_key_env}, which is unset")
        return value


_PROVIDER_LIST = TypeAdapter(list[ProviderConfig])


def parse_providers(text: str) -> list[ProviderConfig]:
    """Parse `LLM_PROVIDERS` (JSON, TOML, or a path to a .json/.toml file), sorted by priority.

    Raises:
        ConfigError: unreadable, malformed, empty, or two providers share a name.
    """
    raw = text.strip()
    if raw.endswith((".json", ".toml")) and "\n" not in raw:
        try:
            raw = Path(raw).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"LLM_PROVIDERS: cannot read {text!r} ({exc.strerror})") from None
    data: object
    if raw.startswith("[") and not raw.startswith("[["):  # "[[providers]]" is TOML
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"LLM_PROVIDERS: invalid JSON ({exc.msg} at line {exc.lineno})"
                              ) from None
    else:
        try:
            data = tomllib.loads(raw).get("providers")
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"LLM_PROVIDERS: neither a JSON array nor TOML ({exc})") from None
    try:
        providers = _PROVIDER_LIST.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "providers." + ".".join(str(part) for part in err["loc"])
        raise ConfigError(f"LLM_PROVIDERS: {where}: {err['msg']}") from None
    if not providers:
        raise ConfigError("LLM_PROVIDERS: the list is empty")
    names = [p.name for p in providers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"LLM_PROVIDERS: duplicate provider name {duplicates[0]!r}")
    return sorted(providers, key=lambda p: p.priority)
