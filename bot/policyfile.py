"""Reading a policy file (TOML or JSON by suffix) into a pydantic model, with errors that name
the setting, the file and the key: GUARDRAILS_POLICY and BOT_ACTIONS_POLICY."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from bot.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_policy_file(model: type[M], path: Path | None, setting: str) -> M:
    """The model read from `path` (.json is JSON, anything else TOML), or its defaults when
    `path` is None.

    Raises:
        ConfigError: "<setting>: <path>: ..." for an unreadable file, bad syntax, or an
            unknown or invalid key (named by its dotted path).
    """
    if path is None:
        return model()
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{setting}: {path}: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        raise ConfigError(f"{setting}: {path}: {where}: {err['msg']}") from None
