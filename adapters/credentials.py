"""Is each configured platform's token valid? One authentication call per platform, for
`bot preflight` (before a deployment takes traffic).

- Slack: `auth.test` (https://api.slack.com/methods/auth.test): `{"ok": true, "user", "team"}`,
  or `{"ok": false, "error": "invalid_auth" | "not_authed" | "account_inactive" | ...}`.
- Telegram: `getMe` (https://core.telegram.org/bots/api#getme): `{"ok": true, "result": User}`;
  a bad token gets 401 `{"ok": false, "description": "Unauthorized"}`.
- Discord: `GET /users/@me` with `Authorization: Bot TOKEN`
  (https://discord.com/developers/docs/resources/user#get-current-user); a bad token gets 401.

The token never appears in a result: Telegram's travels in the URL path, so a failure is
described by its exception type and HTTP status only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.config import Settings

#: Each call's limit, seconds.
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CredentialCheck:
    """One platform's result: `detail` says who the token belongs to, or why it failed."""

    platform: str
    ok: bool
    detail: str


async def check_credentials(s: Settings, http: aiohttp.ClientSession) -> list[CredentialCheck]:
    """One check per platform whose token is set (none when no platform is configured)."""
    checks: list[CredentialCheck] = []
    if s.slack_bot_token is not None:
        checks.append(await _slack(http, s.slack_api_url, s.slack_bot_token.get_secret_value()))
    if s.telegram_bot_token is not None:
        checks.append(await _telegram(http, s.telegram_api_url,
                                      s.telegram_bot_token.get_secret_value()))
    if s.discord_bot_token is not None:
        checks.append(await _discord(http, s.discord_api_url,
                                     s.discord_bot_token.get_secret_value()))
    return checks


async def _call(http: aiohttp.ClientSession, method: str, url: str,
                headers: dict[str, str]) -> tuple[int, Any]:
    """(HTTP status, JSON body or None). Raises aiohttp.ClientError, TimeoutError."""
    async with http.request(method, url, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as response:
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = None
        return response.status, body


def _unreachable(platform: str, exc: BaseException) -> CredentialCheck:
    return CredentialCheck(platform, False, f"API unreachable ({type(exc).__name__})")


async def _slack(http: aiohttp.ClientSession, api_url: str, token: str) -> CredentialCheck:
    url = api_url if api_url.endswith("/") else api_url + "/"
    try:
        status, body = await _call(http, "POST", url + "auth.test",
                                   {"Authorization": f"Bearer {token}"})
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _unreachable("slack", exc)
    if isinstance(body, dict) and body.get("ok") is True:
        return CredentialCheck("slack", True, f"auth.test: bot user {body.get('user', '?')!s} "
                                              f"in team {body.get('team', body.get('team_id'))!s}")
    error = body.get("error") if isinstance(body, dict) else None
    return CredentialCheck("slack", False, f"auth.test: {error or f'HTTP {status}'}")


async def _telegram(http: aiohttp.ClientSession, api_url: str, token: str) -> CredentialCheck:
    try:
        status, body = await _call(http, "POST", f"{api_url.rstrip('/')}/bot{token}/getMe", {})
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _unreachable("telegram", exc)
    if isinstance(body, dict) and body.get("ok") is True and isinstance(body.get("result"), dict):
        return CredentialCheck("telegram", True,
                               f"getMe: @{body['result'].get('username', '?')!s}")
    description = body.get("description") if isinstance(body, dict) else None
    return CredentialCheck("telegram", False,
                           f"getMe: HTTP {status}" + (f" {description!s}" if description else ""))


async def _discord(http: aiohttp.ClientSession, api_url: str, token: str) -> CredentialCheck:
    try:
        status, body = await _call(http, "GET", f"{api_url.rstrip('/')}/users/@me",
                                   {"Authorization": f"Bot {token}"})
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _unreachable("discord", exc)
    if status == 200 and isinstance(body, dict):
        return CredentialCheck("discord", True, f"users/@me: {body.get('username', '?')!s}")
    message = body.get("message") if isinstance(body, dict) else None
    return CredentialCheck("discord", False,
                           f"users/@me: HTTP {status}" + (f" {message!s}" if message else ""))
