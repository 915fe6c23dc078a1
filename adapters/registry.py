"""The chat platforms a process runs, built from its settings (each enabled by its token).

The engine imports this module, never a concrete adapter: each adapter is imported here only
when its platform is enabled, so a process without Slack never loads slack-sdk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import SecretStr

from adapters.base import AdapterDeps, PlatformAdapter
from bot.config import Settings

if TYPE_CHECKING:
    from adapters.console.adapter import ConsoleAdapter


def build_platforms(s: Settings, deps: AdapterDeps) -> list[PlatformAdapter]:
    """The console and the generic webhook (always: every process sends their replies; the
    webhook serves its route only with WEBHOOK_SECRET), then the chat platforms the settings
    enable (each by its token). The console and webhook need `deps.rendezvous`."""
    from adapters.console.adapter import ConsoleAdapter
    from adapters.webhook.adapter import WebhookAdapter
    from adapters.webhook.send import WebhookSender

    if deps.rendezvous is None:
        raise ValueError("build_platforms needs deps.rendezvous for the console and webhook")
    secret = _plain(s.webhook_secret)
    platforms: list[PlatformAdapter] = [
        ConsoleAdapter(deps.inbox, deps.rendezvous),
        WebhookAdapter(deps.inbox, deps.rendezvous, secret=secret,
                       wait_timeout_s=s.webhook_wait_timeout_s,
                       max_text_chars=deps.max_text_chars, limit=deps.limit,
                       sender=WebhookSender(deps.rendezvous, deps.http, secret=secret,
                                            callback_url=s.webhook_callback_url,
                                            timeout_s=s.webhook_callback_timeout_s)),
    ]
    if s.slack_bot_token is not None:
        from adapters.slack.adapter import SlackAdapter

        platforms.append(SlackAdapter(
            deps, bot_token=s.slack_bot_token.get_secret_value(), api_url=s.slack_api_url,
            signing_secret=_plain(s.slack_signing_secret), app_token=_plain(s.slack_app_token)))
    if s.telegram_bot_token is not None:
        from adapters.telegram.adapter import TelegramAdapter

        platforms.append(TelegramAdapter(
            deps, token=s.telegram_bot_token.get_secret_value(), api_url=s.telegram_api_url,
            webhook_secret=_plain(s.telegram_webhook_secret),
            poll_timeout_s=s.telegram_poll_timeout_s))
    if s.discord_bot_token is not None or s.discord_public_key:
        from adapters.discord.adapter import DiscordAdapter

        platforms.append(DiscordAdapter(
            deps, bot_token=_plain(s.discord_bot_token), public_key=s.discord_public_key,
            api_url=s.discord_api_url, gateway_url=s.discord_gateway_url))
    return platforms


def console(platforms: list[PlatformAdapter]) -> ConsoleAdapter:
    """The console among `platforms` (`bot ask` and `bot chat` ask through it)."""
    from adapters.console.adapter import ConsoleAdapter

    found = next(p for p in platforms if p.name == "console")
    assert isinstance(found, ConsoleAdapter)
    return found


def _plain(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
