"""LLM_PROVIDERS parsing and the single-provider fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.llm.providers import ProviderConfig, parse_providers

TOML = """
[[providers]]
name = "groq"
base_url = "https://api.groq.com/openai/v1"
model = "llama-3.1-8b-instant"
api_key_env = "GROQ_API_KEY"
priority = 2

[[providers]]
name = "local"
base_url = "http://127.0.0.1:11434/v1"
model = "llama3.1"
timeout_s = 120
priority = 1
"""


def test_toml_json_and_file_forms_parse_alike(tmp_path: Path) -> None:
    from_toml = parse_providers(TOML)
    assert [p.name for p in from_toml] == ["local", "groq"]  # sorted by priority
    assert from_toml[0].timeout_s == 120 and from_toml[1].api_key_env == "GROQ_API_KEY"
    as_json = "[" + ",".join(p.model_dump_json() for p in from_toml) + "]"
    assert parse_providers(as_json) == from_toml
    path = tmp_path / "providers.toml"
    path.write_text(TOML)
    assert parse_providers(str(path)) == from_toml


@pytest.mark.parametrize(("text", "needle"), [
    ("[", "invalid JSON"),
    ("[]", "empty"),
    ('[{"name": "a"}]', "0.model"),
    ('[{"name": "a", "model": "m", "api_key": "sk-123"}]', "api_key"),
    ('[{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]', "duplicate"),
    ('[{"name": "a b", "model": "m"}]', "0.name"),
    ("providers = 3", "providers"),
    ("/nonexistent/providers.toml", "cannot read"),
])
def test_bad_provider_lists_are_clear_config_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="LLM_PROVIDERS") as caught:
        parse_providers(text)
    assert needle in str(caught.value)


def test_settings_reject_a_bad_list_at_start_up() -> None:
    with pytest.raises(ConfigError, match="LLM_PROVIDERS"):
        load_settings(_env_file=None, llm_providers="[{}]")


def test_single_provider_settings_still_work() -> None:
    s = load_settings(_env_file=None, llm_base_url="http://127.0.0.1:9/v1", llm_model="m1",
                      llm_timeout_s=5, llm_context_tokens=4096)
    assert s.llm_configured
    [only] = s.providers()
    assert (only.name, only.base_url, only.model, only.timeout_s, only.context_tokens) == (
        "default", "http://127.0.0.1:9/v1", "m1", 5, 4096)


def test_api_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ProviderConfig(name="g", model="m", api_key_env="SB_TEST_GROQ_KEY")
    monkeypatch.delenv("SB_TEST_GROQ_KEY", raising=False)
    with pytest.raises(ConfigError, match="SB_TEST_GROQ_KEY"):
        config.api_key()
    monkeypatch.setenv("SB_TEST_GROQ_KEY", "gsk-secret")
    assert config.api_key() == "gsk-secret"


def test_keys_named_by_providers_are_redacted_from_logs(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("SB_TEST_OTHER_KEY", "gsk-provider-secret-123")
    s = load_settings(_env_file=None, llm_providers='[{"name": "g", "model": "m", '
                                                    '"api_key_env": "SB_TEST_OTHER_KEY"}]')
    assert "gsk-provider-secret-123" in s.secret_values()
