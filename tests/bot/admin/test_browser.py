"""The admin console in a real browser: Debian's Chromium driven by Playwright, against the
real HTTP app and workers (tests/fakes/bot_server.py) on real Postgres and Redis.

A user logs in, uploads a document, asks about it through the webhook, finds the conversation
by a filter, opens it and sees the uploaded document among its sources and the rails'
verdicts; a message whose callback failed is dead-lettered and retried from the console, and
its answer arrives. A read-only user sees no upload form and is refused a retry. Every page
is saved as a screenshot under build/screenshots/admin (BOT_SCREENSHOT_DIR overrides).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.fakes.bot_server import Server, envelope
from tests.fakes.openai_server import CallbackRecorder

ROOT = Path(__file__).resolve().parents[3]
SHOTS = Path(os.environ.get("BOT_SCREENSHOT_DIR", ROOT / "build" / "screenshots" / "admin"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADMIN = "admin-token-for-the-browser-test"
READER = "read-only-token-for-the-browser-test"
DOCUMENT = """# Heron valves

The heron valve of the north cistern opens at a pressure of 42 kilopascals and closes again
when the pressure falls below 17 kilopascals. Inspect its gasket every ninety days.
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM,
                                            args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        await chromium.close()


async def shot(page: Page, name: str) -> None:
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def log_in(page: Page, url: str, token: str) -> None:
    await page.goto(url + "/admin/conversations")
    assert "/admin/login" in page.url  # not logged in: sent to the login form
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/admin/conversations")


async def until(check: Callable[[], Any], timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_admin_logs_in_uploads_finds_the_answer_and_retries_a_dead_letter(
        server_factory: Callable[..., Any], callback: CallbackRecorder, browser: Browser,
        tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[input]\nredact_pii = true\n")  # addresses never reach the transcript
    server: Server = await server_factory(
        workers=1, admin_token=ADMIN, admin_readonly_token=READER, guardrails_policy=policy,
        webhook_callback_url=callback.url, bot_max_retry_age_s=1.0)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(server.url + "/admin/login")
    await shot(page, "01-login")
    await page.fill("input[name=token]", "not-the-token")
    await page.click("button[type=submit]")
    assert await page.locator("[role=alert]").count() == 1  # a wrong token is refused
    await log_in(page, server.url, ADMIN)

    # upload a document through the knowledge base page
    source = tmp_path / "heron-valves.md"
    source.write_text(DOCUMENT)
    await page.goto(server.url + "/admin/documents")
    await page.set_input_files("input[type=file]", str(source))
    await page.click("form[aria-label=Upload] button[type=submit]")
    await page.wait_for_selector("[role=status]")
    assert "upload:heron-valves.md: version 1" in await page.inner_text("[role=status]")
    assert "upload:heron-valves.md" in await page.inner_text("#documents")
    await shot(page, "02-knowledge-base")

    # a user asks about it; the extractive answer cites the upload
    question = "At what pressure does the heron valve open? Mail me at alice.w@example.org"
    status, _ = await server.post(envelope(id="q1", user="alice", conversation="valves",
                                           text=question))
    assert status == 202
    await callback.wait_for(1, timeout_s=90)
    answer = json.loads(callback.calls[0][0])
    assert answer["sources"][0]["uri"] == "upload:heron-valves.md"

    # find it with filters, open it, see its sources and the rails' verdicts
    await page.goto(server.url + "/admin/conversations")
    await page.fill("input[name=q]", "heron")
    await page.select_option("select[name=platform]", "webhook")
    await page.click("form[aria-label=Filters] button[type=submit]")
    await page.wait_for_url("**q=heron**")
    rows = page.locator("#conversations tbody tr")
    assert await rows.count() == 1
    assert "alice" in await rows.first.inner_text()
    await shot(page, "03-conversations-filtered")
    await page.fill("input[name=q]", "zeppelin")
    await page.click("form[aria-label=Filters] button[type=submit]")
    await page.wait_for_url("**q=zeppelin**")
    assert "No conversation matches" in await page.inner_text("#conversations")
    await page.go_back()
    await page.locator("#conversations tbody tr a").first.click()
    await page.wait_for_url("**/admin/conversations/webhook*")
    sources = page.locator("[data-answer] .sources")
    assert "upload:heron-valves.md" in await sources.inner_text()
    verdicts = await page.locator("[data-answer] .verdicts").inner_text()
    assert "pii" in verdicts and "redact" in verdicts  # the address was redacted ...
    assert "alice.w@example.org" not in await page.content()  # ... and is nowhere on the page
    await shot(page, "04-conversation")
    await page.locator("[data-answer] .sources a").first.click()
    await page.wait_for_url("**/admin/documents/*")
    assert "42 kilopascals" in await page.inner_text("main")
    await shot(page, "05-document")

    # tag and review it
    await page.go_back()
    await page.fill("input[name=tags]", "valves checked")
    await page.check("input[name=reviewed]")
    await page.click("form[aria-label=Review] button[type=submit]")
    await page.wait_for_load_state()
    assert "reviewed by admin-token" in await page.inner_text("main")
    await page.goto(server.url + "/admin/conversations?reviewed=1&tag=valves")
    assert await page.locator("#conversations tbody tr a").count() == 1

    # a message whose callback keeps failing is dead-lettered ...
    callback.status = 500
    status, _ = await server.post(envelope(id="q2", user="bob", conversation="later",
                                           text="When is the heron valve gasket inspected?"))
    assert status == 202
    await until(lambda: _dead_letters(server, 1))
    await page.goto(server.url + "/admin/dead-letters")
    assert "webhook:support:q2" in await page.inner_text("#dead-letters")
    await shot(page, "06-dead-letters")
    # ... and retried from the console once the callback is back
    callback.status = 200
    delivered = len(callback.calls)
    await page.locator("#dead-letters button").first.click()
    await page.wait_for_selector("[role=status]")
    assert "requeued 1" in await page.inner_text("[role=status]")
    await until(lambda: _answered(callback, delivered, "q2"))

    # the overview shows the day's traffic, and its bars link to the conversations
    await page.goto(server.url + "/admin/")
    assert int(await page.inner_text("#total-messages")) >= 2
    bars = page.locator("svg.chart a")
    assert await bars.count() > 0
    await shot(page, "07-overview")
    await bars.first.click()
    await page.wait_for_url("**/admin/conversations?**")
    assert await page.locator("#conversations tbody tr a").count() >= 1

    # every change above is on the audit page
    await page.click("header >> text=Audit")
    audit_rows = await page.inner_text("#audit")
    for action in ("login", "document.upload", "conversation.review", "dead_letter.retry"):
        assert action in audit_rows, action
    await shot(page, "08-audit")

    # a read-only user sees no upload form and cannot retry
    reader = await browser.new_page()
    await log_in(reader, server.url, READER)
    await reader.goto(server.url + "/admin/documents")
    assert await reader.locator("form[aria-label=Upload]").count() == 0
    await shot(reader, "09-read-only-knowledge-base")
    response = await reader.request.post(server.url + "/admin/dead-letters/retry",
                                         form={"all": "1"})
    assert response.status == 403


async def _dead_letters(server: Server, count: int) -> bool:
    return await server.rt.inbox.dead_letter_count() >= count


async def _answered(callback: CallbackRecorder, after: int, message_id: str) -> bool:
    for body, _headers in callback.calls[after:]:
        reply = json.loads(body)
        if reply.get("id", "").endswith(message_id) and "notice" not in reply:
            return True
    return False
