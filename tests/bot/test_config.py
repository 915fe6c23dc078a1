"""Settings: defaults, validation errors naming the variable, secrets hidden."""

from __future__ import annotations

import pytest

from bot.config import RetrievalMode, load_settings
from bot.errors import ConfigError


def test_defaults_follow_the_documented_values() -> None:
    s = load_settings(_env_file=None)
    assert s.bot_http_port == 8080
    assert s.memory_turns == 20 and s.memory_ttl_s == 30 * 24 * 3600
    assert s.retrieval_mode is RetrievalMode.DENSE
    assert s.embedding_threads == 1
    assert s.database_url is None and s.redis_url is None
    assert not s.llm_configured


def test_concurrency_falls_back_to_the_older_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_WORKERS", "3")
    assert load_settings(_env_file=None).concurrency == 3
    monkeypatch.setenv("BOT_CONCURRENCY", "8")
    assert load_settings(_env_file=None).concurrency == 8


def test_environment_names_map_to_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_HTTP_PORT", "9090")
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("WEBHOOK_SECRET", "hunter2-hunter2")
    s = load_settings(_env_file=None)
    assert s.bot_http_port == 9090 and s.llm_configured
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.webhook_secret is not None
    assert s.webhook_secret.get_secret_value() == "hunter2-hunter2"


def test_secret_values_include_passwords_inside_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pg-pass-123@db:5432/bot")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdef")
    secrets = load_settings(_env_file=None).secret_values()
    assert "pg-pass-123" in secrets and "sk-test-abcdef" in secrets


def test_settings_required_together_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_BACKEND", "openai")
    with pytest.raises(ConfigError, match=r"^EMBEDDING_BASE_URL: required when "
                                          r"EMBEDDING_BACKEND=openai"):
        load_settings(_env_file=None)
    monkeypatch.setenv("EMBEDDING_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CHUNK_TOKENS", "64")
    monkeypatch.setenv("CHUNK_OVERLAP_TOKENS", "64")
    with pytest.raises(ConfigError, match=r"^CHUNK_OVERLAP_TOKENS: must be smaller"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("BOT_WORKERS", "-1", "BOT_WORKERS: Input should be greater than or equal to 0"),
    ("WEBHOOK_SECRET", "  ", "WEBHOOK_SECRET: Value error, must not be empty when set"),
    ("EMBEDDING_BACKEND", "tf", "EMBEDDING_BACKEND: Input should be 'onnx', "
                                "'sentence-transformers' or 'openai'"),
])
def test_bad_values_raise_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                       name: str, value: str,
                                                       expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    assert str(info.value) == expected
