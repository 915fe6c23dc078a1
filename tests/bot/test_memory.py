"""Conversation memory end to end: the second turn's prompt carries the first exchange."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.protocols import Turn
from bot.runtime import Runtime
from tests.fakes.bot_server import envelope
from tests.fakes.openai_server import FakeOpenAI


async def test_webhook_conversation_remembers_an_earlier_turn(
        server_factory: Callable[..., Any], fake_llm: FakeOpenAI) -> None:
    srv = await server_factory(llm_base_url=fake_llm.base_url)
    for mid, conv, text in (("t1", "alice", "My name is Alice and I use zlib."),
                            ("t2", "alice", "What is my name?"),
                            ("t3", "bob", "What is my name?")):
        status, _ = await srv.post(envelope(id=mid, conversation=conv, text=text),
                                   path="/webhooks/support?wait=true")
        assert status == 200
    first, second, other = fake_llm.requests
    assert [m["role"] for m in first["messages"]] == ["system", "system", "user"]
    history = [(m["role"], m["content"]) for m in second["messages"][2:]]
    assert history == [("user", "My name is Alice and I use zlib."),
                       ("assistant", "ANSWER to: My name is Alice and I use zlib. [1]"),
                       ("user", "What is my name?")]
    assert [m["role"] for m in other["messages"]] == ["system", "system", "user"]


async def test_memory_keeps_only_the_last_turns_and_expires(make_settings: Callable[..., Any]
                                                           ) -> None:
    async with Runtime(make_settings(memory_turns=2, memory_ttl_s=100)) as rt:
        for i in range(5):
            await rt.memory.append("conv", [Turn("user", f"q{i}"), Turn("assistant", f"a{i}")])
        turns = await rt.memory.load("conv")
        assert [t.content for t in turns] == ["q3", "a3", "q4", "a4"]
        key = f"{rt.settings.bot_key_prefix}:mem:conv"
        assert 0 < await rt.redis.ttl(key) <= 100
        assert await rt.memory.load("other") == []


async def test_an_append_with_the_same_once_id_happens_once(runtime: Runtime) -> None:
    for _ in range(3):
        await runtime.memory.append("c", [Turn("user", "q"), Turn("assistant", "a")],
                                    once_id="message-1")
    await runtime.memory.append("c", [Turn("user", "q2")], once_id="message-2")
    assert [t.content for t in await runtime.memory.load("c")] == ["q", "a", "q2"]
