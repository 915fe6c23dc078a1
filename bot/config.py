"""Typed settings, read from the environment and `.env`.

Every setting is documented, with its unit and default, in `deploy/env.example`. Field names
are the environment variable names in lower case (`BOT_HTTP_PORT` -> `bot_http_port`).
Secrets are `SecretStr`: their repr is `'**********'` and `secret_values()` hands them to
the log redactor so they never reach a log line.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError
from bot.llm.providers import ProviderConfig, parse_providers

MiB = 1024 * 1024


class RetrievalMode(StrEnum):
    """How chunks are ranked: by embedding, by full-text search, or a weighted fusion of both."""

    DENSE = "dense"
    LEXICAL = "lexical"
    HYBRID = "hybrid"


class EmbeddingBackend(StrEnum):
    """Which embedder computes chunk and query vectors (see docs/adr/0001-default-embedder.md)."""

    ONNX = "onnx"
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    OPENAI = "openai"


PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """All of Switchboard's settings. Construct with `load_settings()` for a clear error."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # services; unset means: start the embedded server under BOT_DATA_DIR
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    bot_data_dir: Path = Path(platformdirs.user_data_dir("switchboard"))
    bot_key_prefix: str = Field("sb", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    # language model (any OpenAI-compatible chat endpoint); unset means extractive answers
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    llm_timeout_s: PositiveFloat = 120.0
    llm_temperature: float = Field(0.2, ge=0, le=2)
    llm_max_tokens: PositiveInt = 800
    llm_providers: str | None = None
    llm_context_tokens: Annotated[int, Field(ge=512)] = 8192
    llm_retries: Annotated[int, Field(ge=0, le=10)] = 2
    llm_backoff_initial_s: PositiveFloat = 0.5
    llm_backoff_max_s: PositiveFloat = 8.0
    llm_retry_after_max_s: PositiveFloat = 30.0
    llm_breaker_failures: PositiveInt = 3
    llm_breaker_cooldown_s: PositiveFloat = 60.0
    llm_cache_ttl_s: Annotated[int, Field(ge=0)] = 3600
    llm_stream: bool = True
    llm_stream_edit_interval_s: Annotated[float, Field(ge=0.2)] = 1.0

    # guardrails: the policy file (TOML or JSON); unset means the built-in defaults
    guardrails_policy: Path | None = None

    # actions: plugins, permissions, the http_request built-in
    bot_action_modules: str = ""
    bot_action_entry_points: bool = True
    bot_actions_policy: Path | None = None
    bot_http_action_url: str | None = None
    bot_http_action_secret: SecretStr | None = None
    bot_http_action_timeout_s: PositiveFloat = 10.0

    # embeddings
    embedding_backend: EmbeddingBackend = EmbeddingBackend.ONNX
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_base_url: str | None = None
    embedding_dim: PositiveInt = 384
    embedding_threads: PositiveInt = 1
    embedding_batch_size: PositiveInt = 8

    # knowledge
    chunk_tokens: Annotated[int, Field(ge=32, le=250)] = 192
    chunk_overlap_tokens: Annotated[int, Field(ge=0, le=128)] = 32
    retrieval_mode: RetrievalMode = RetrievalMode.DENSE
    retrieval_top_k: Annotated[int, Field(ge=0, le=50)] = 5
    retrieval_dense_weight: float = Field(0.8, ge=0, le=1)
    ingest_max_bytes: PositiveInt = 50 * MiB
    ingest_fetch_timeout_s: PositiveFloat = 30.0

    # engine
    bot_workers: Annotated[int, Field(ge=0, le=256)] = 16
    bot_concurrency: Annotated[int, Field(ge=0, le=256)] | None = None
    bot_claim_idle_s: PositiveFloat = 30.0
    bot_max_deliveries: PositiveInt = 5
    bot_max_backlog: Annotated[int, Field(ge=0)] = 100_000
    bot_turn_messages: PositiveInt = 8
    bot_turn_s: PositiveFloat = 1.0
    bot_max_retry_age_s: PositiveFloat = 600.0
    # rate limits (docs/rate-limits.md): inbound per user and per conversation, messages per
    # minute (0 disables) with the burst allowed at once; outbound pacing to platform limits
    bot_rate_user_per_min: Annotated[float, Field(ge=0)] = 20.0
    bot_rate_user_burst: PositiveInt = 10
    bot_rate_conversation_per_min: Annotated[float, Field(ge=0)] = 60.0
    bot_rate_conversation_burst: PositiveInt = 20
    bot_send_pacing: bool = True
    bot_shutdown_grace_s: PositiveFloat = 30.0
    bot_message_timeout_s: PositiveFloat = 300.0
    bot_dedupe_ttl_s: PositiveInt = 7 * 24 * 3600
    # apply pending migrations at start-up; false: refuse to start until `bot migrate` ran
    bot_migrate_on_start: bool = True
    memory_turns: Annotated[int, Field(ge=0, le=500)] = 20
    memory_ttl_s: PositiveInt = 30 * 24 * 3600

    # HTTP server and the generic webhook adapter
    bot_http_host: str = "127.0.0.1"
    bot_http_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # `bot worker`'s own server (health and metrics only); 0 = none
    bot_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    bot_max_body_bytes: PositiveInt = 1 * MiB
    bot_max_text_chars: PositiveInt = 4000
    bot_http_header_timeout_s: PositiveFloat = 10.0
    bot_http_body_timeout_s: PositiveFloat = 30.0
    bot_http_max_connections_per_peer: Annotated[int, Field(ge=0)] = 256
    webhook_secret: SecretStr | None = None
    webhook_callback_url: str | None = None
    webhook_wait_timeout_s: PositiveFloat = 30.0
    webhook_callback_timeout_s: PositiveFloat = 10.0
    webhook_reply_ttl_s: PositiveInt = 24 * 3600

    # Slack (enabled by SLACK_BOT_TOKEN)
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    # Telegram (enabled by TELEGRAM_BOT_TOKEN)
    telegram_bot_token: SecretStr | None = None
    telegram_webhook_secret: SecretStr | None = Field(
        None, description="1-256 of A-Z a-z 0-9 _ -")
    telegram_api_url: str = "https://api.telegram.org"
    telegram_poll_timeout_s: Annotated[int, Field(ge=1, le=50)] = 30

    # Discord (enabled by DISCORD_BOT_TOKEN or DISCORD_PUBLIC_KEY)
    discord_bot_token: SecretStr | None = None
    discord_public_key: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"

    # admin console (docs/admin.md): off unless one of these is set (`bot admin` serves it on
    # loopback without them); ADMIN_TOKEN is the admin role, ADMIN_READONLY_TOKEN read-only;
    # ADMIN_TRUSTED_USER_HEADER names the user an OAuth2 proxy authenticated, believed only
    # from ADMIN_TRUSTED_PROXIES (comma-separated addresses or CIDR networks); the users in
    # ADMIN_USERS (comma-separated) get the admin role, other proxy users read-only
    admin_token: SecretStr | None = None
    admin_readonly_token: SecretStr | None = None
    admin_trusted_user_header: str | None = Field(None, pattern=r"^[A-Za-z0-9-]+$")
    admin_trusted_proxies: str = ""
    admin_users: str = ""
    # signs session cookies and CSRF tokens; unset: derived from ADMIN_TOKEN, else random per
    # process (set it when several processes serve the console behind a proxy)
    admin_session_secret: SecretStr | None = None
    admin_session_ttl_s: PositiveInt = 12 * 3600
    admin_upload_max_bytes: PositiveInt = 20 * MiB
    # a link from a trace id to the tracing backend, "{trace_id}" replaced
    # (e.g. "http://jaeger:16686/trace/{trace_id}")
    otel_traces_url_template: str | None = None

    # logging
    bot_log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    bot_log_format: str = Field("auto", pattern=r"^(auto|json|console)$")
    # error tracking: Sentry's DSN (bot run and bot worker report errors there when set)
    sentry_dsn: SecretStr | None = None

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _telegram_secret(cls, value: SecretStr | None) -> SecretStr | None:
        import re

        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}",
                                                  value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("webhook_secret", "openai_api_key", "slack_bot_token", "slack_app_token",
                     "slack_signing_secret", "telegram_bot_token", "discord_bot_token",
                     "admin_token", "admin_readonly_token", "admin_session_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty when set")
        return value

    @field_validator("admin_token", "admin_readonly_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("at least 16 characters (e.g. `openssl rand -hex 24`)")
        return value

    @property
    def concurrency(self) -> int:
        """In-flight messages per process (engine worker tasks): BOT_CONCURRENCY, or the older
        BOT_WORKERS when it is unset."""
        return self.bot_workers if self.bot_concurrency is None else self.bot_concurrency

    @property
    def llm_configured(self) -> bool:
        """True when a chat endpoint is configured (`LLM_BASE_URL` or `OPENAI_API_KEY`)."""
        return bool(self.llm_base_url) or self.openai_api_key is not None \
            or bool(self.llm_providers)

    def providers(self) -> list[ProviderConfig]:
        """The LLM providers: `LLM_PROVIDERS`, else one named "default" built from the
        single-provider settings (the router gets its key, OPENAI_API_KEY, separately).

        Raises:
            ConfigError: `LLM_PROVIDERS` is malformed.
        """
        if self.llm_providers:
            return parse_providers(self.llm_providers)
        return [ProviderConfig(name="default", base_url=self.llm_base_url or None,
                               model=self.llm_model,
                               api_key_env=None,
                               timeout_s=self.llm_timeout_s,
                               context_tokens=self.llm_context_tokens)]

    def provider_api_keys(self) -> dict[str, str]:
        """API keys by provider name that override `api_key_env`: OPENAI_API_KEY belongs to
        the single-provider form ("default") only; listed providers name their own key
        variable."""
        if self.openai_api_key is None or self.llm_providers:
            return {}
        return {"default": self.openai_api_key.get_secret_value()}

    def action_modules(self) -> list[str]:
        """BOT_ACTION_MODULES as a list of module names (comma- or space-separated)."""
        return [m for m in self.bot_action_modules.replace(",", " ").split() if m]

    def secret_values(self) -> list[str]:
        """Every secret's plain value (and the password inside service URLs), for redaction,
        including the API keys that `LLM_PROVIDERS` names by environment variable."""
        values: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                plain = value.get_secret_value()
                values.append(plain)
                values.extend(_url_password(plain))
        if self.llm_providers:
            for provider in parse_providers(self.llm_providers):
                if provider.api_key_env:
                    values.append(os.environ.get(provider.api_key_env, "").strip())
        return [v for v in values if len(v) >= 4]


def _url_password(url: str) -> list[str]:
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password] if password else []


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment and `.env`.

    Raises:
        ConfigError: one line naming the first bad variable and what is wrong with it.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]).upper() if err["loc"] else "settings"
        raise ConfigError(f"{name}: {err['msg']}") from None
    _check_combinations(settings)
    return settings


def _check_combinations(s: Settings) -> None:
    """Settings that are required only together with others."""
    if s.embedding_backend is EmbeddingBackend.OPENAI and not s.embedding_base_url \
            and s.openai_api_key is None:
        raise ConfigError("EMBEDDING_BASE_URL: required when EMBEDDING_BACKEND=openai "
                          "(or set OPENAI_API_KEY to use api.openai.com)")
    if s.slack_bot_token is not None and s.slack_signing_secret is None \
            and s.slack_app_token is None:
        raise ConfigError("SLACK_SIGNING_SECRET: required when SLACK_BOT_TOKEN is set "
                          "(or set SLACK_APP_TOKEN for Socket Mode)")
    if s.llm_providers:
        parse_providers(s.llm_providers)
    if s.chunk_overlap_tokens >= s.chunk_tokens:
        raise ConfigError("CHUNK_OVERLAP_TOKENS: must be smaller than CHUNK_TOKENS "
                          f"({s.chunk_tokens})")
