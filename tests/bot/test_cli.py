"""The `bot` command as a user runs it: real subprocesses against this test's servers."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CORPUS, subprocess_env
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.processes import bot_command

FACTS = [
    ("How do I get pathlib Path objects instead of strings from platformdirs?",
     "platformdirs-readme.md"),
    ("What buffer size does the zlib example define as CHUNK?", "zlib-usage-example.html"),
    ("When is the finally clause executed if a return statement runs in the try suite?",
     "python-try-and-with-statements.pdf"),
    ("In which two steps is the basic import statement executed?",
     "python-import-statement.docx"),
]


def run(args: list[str], env: dict[str, str], timeout_s: float = 180
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bot_command(*args), env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def test_ingest_then_ask_each_format(env_settings: dict[str, str], tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    env = subprocess_env(env_settings)
    first = run(["ingest", str(corpus)], env)
    assert first.returncode == 0, first.stderr
    assert "documents: 4 (4 changed)" in first.stdout
    again = run(["ingest", str(corpus)], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("nothing changed: 4 documents up to date")
    assert " 0 added" not in again.stdout  # says so in words, no counts to misread

    for question, document in FACTS:
        result = run(["ask", "--json", question], env)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert set(answer) == {"answer", "sources", "filtered"}
        assert all(set(f) == {"uri", "reason", "score", "removed_chars"}
                   for f in answer["filtered"])
        first_source = answer["sources"][0]
        assert first_source["uri"] == str(corpus / document), (question, answer["sources"])
        assert set(first_source) == {"uri", "title", "score"}
        assert "No language model is configured" in answer["answer"]

    text = run(["ask", FACTS[1][0]], env)
    assert text.returncode == 0
    assert "Sources:\n[1] zlib Usage Example" in text.stdout
    assert "#define CHUNK 16384" in text.stdout or "16384" in text.stdout


def test_forget_removes_a_source_from_answers(env_settings: dict[str, str]) -> None:
    env = subprocess_env(env_settings)
    html = CORPUS / "zlib-usage-example.html"
    md = CORPUS / "platformdirs-readme.md"
    assert run(["ingest", str(html), str(md)], env).returncode == 0
    forgot = run(["forget", str(html)], env)
    assert forgot.returncode == 0 and f"forgotten: {html}" in forgot.stdout
    answer = json.loads(run(["ask", "--json", FACTS[1][0]], env).stdout)
    assert all(s["uri"] != str(html) for s in answer["sources"])
    missing = run(["forget", str(html)], env)
    assert missing.returncode == 1 and "no ingested source" in missing.stderr


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("BOT_HTTP_PORT", "eighty",
     "BOT_HTTP_PORT: Input should be a valid integer, unable to parse string as an integer"),
    ("RETRIEVAL_MODE", "magic", "RETRIEVAL_MODE: Input should be 'dense', 'lexical' or 'hybrid'"),
    ("CHUNK_TOKENS", "5000", "CHUNK_TOKENS: Input should be less than or equal to 250"),
])
def test_a_bad_setting_stops_with_one_line_naming_it(env_settings: dict[str, str],
                                                     variable: str, value: str,
                                                     message: str) -> None:
    result = run(["ask", "hello"], subprocess_env(env_settings, **{variable: value}), 60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_clear_line(env_settings: dict[str, str]) -> None:
    env = subprocess_env(env_settings, DATABASE_URL="postgresql://nobody:pw-s3cret@127.0.0.1:1/x")
    result = run(["migrate"], env, 60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: DATABASE_URL: cannot connect")
    assert "pw-s3cret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_retrieval_reports_metrics(env_settings: dict[str, str], tmp_path: Path) -> None:
    env = subprocess_env(env_settings)
    assert run(["ingest", str(CORPUS)], env).returncode == 0
    labels = tmp_path / "queries.jsonl"
    labels.write_text("\n".join(json.dumps({"query": q, "relevant": [d]}) for q, d in FACTS))
    result = run(["eval", "retrieval", str(labels), "--json"], env)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert set(scores) == {"dense", "lexical", "hybrid"}
    assert scores["dense"]["queries"] == 4
    assert scores["dense"]["mrr"] == 1.0 and scores["dense"]["recall_at_10"] == 1.0
    # the same retrieval after the passage rails, and what they cut or dropped from the top 10
    railed = scores["dense"]
    assert 0.0 <= railed["railed_ndcg_at_10"] <= 1.0
    assert railed["cut_at_10"] >= 0.0 and railed["dropped_at_10"] >= 0.0
    table = run(["eval", "retrieval", str(labels), "--mode", "dense"], env)
    assert "railed nDCG@10" in table.stdout and "dropped@10" in table.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "no labels"}\n')
    failed = run(["eval", "retrieval", str(bad)], env)
    assert failed.returncode == 2 and "line 1" in failed.stderr


async def test_chat_remembers_earlier_turns(env_settings: dict[str, str],
                                            fake_llm: FakeOpenAI) -> None:
    env = subprocess_env(env_settings, LLM_BASE_URL=fake_llm.base_url,
                         OPENAI_API_KEY="sk-chat-test-secret-value", BOT_LOG_LEVEL="DEBUG")
    proc = await asyncio.create_subprocess_exec(
        *bot_command("chat"), env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(
        proc.communicate(b"My favourite library is zlib.\n\nWhich library do I like?\nexit\n"),
        120)
    assert proc.returncode == 0, stderr.decode()
    replies = [line for line in stdout.decode().splitlines() if line.startswith("bot> ")]
    assert replies[0].startswith("bot> ANSWER to: My favourite library is zlib. [1]")
    assert replies[1].startswith("bot> ANSWER to: Which library do I like? [1]")
    assert len(fake_llm.requests) == 2  # the blank line was not sent
    second = [(m["role"], m["content"]) for m in fake_llm.requests[1]["messages"][2:]]
    assert second == [("user", "My favourite library is zlib."),
                      ("assistant", "ANSWER to: My favourite library is zlib. [1]"),
                      ("user", "Which library do I like?")]
    logs = stderr.decode()
    assert "message processed" in logs  # DEBUG-level logs were written ...
    assert "sk-chat-test-secret-value" not in logs  # ... and hold no secret
    assert env_settings["WEBHOOK_SECRET"] not in logs


async def test_dead_letters_can_be_listed_and_retried(env_settings: dict[str, str]) -> None:
    from bot.messages import Conversation, Message
    from bot.runtime import Runtime
    from tests.conftest import settings_from

    async with Runtime(settings_from(env_settings)) as rt:
        message = Message(id="webhook:w:poison", user="u", text="hi",
                          conversation=Conversation("webhook", "c", "w"))
        await rt.inbox.enqueue(message)
        [delivery] = await rt.inbox.read("test", 1, 100)
        await rt.inbox.dead_letter(delivery, "max deliveries exceeded")
        assert await rt.inbox.backlog() == 0
    env = subprocess_env(env_settings)

    async def bot(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *bot_command(*args), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, _ = await bot("dlq", "list", "--json")
    [letter] = json.loads(out)
    assert code == 0 and letter["message_id"] == "webhook:w:poison"
    assert letter["error"] == "max deliveries exceeded" and letter["attempts"] == 0  # never run
    assert (await bot("dlq", "retry", "0-1"))[0] == 1  # unknown id
    code, out, _ = await bot("dlq", "retry", letter["id"])
    assert code == 0 and "requeued 1" in out
    async with Runtime(settings_from(env_settings)) as rt:
        assert await rt.inbox.backlog() == 1 and await rt.inbox.dead_letters() == []
        [again] = await rt.inbox.read("test", 1, 100)
        assert again.message is not None and again.message.id == "webhook:w:poison"


async def run_async(args: list[str], env: dict[str, str], stdin: bytes = b""
                    ) -> tuple[int, str, str]:
    """`bot ARGS` with `stdin` piped in, without blocking this test's event loop (where the
    fake servers run); (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *bot_command(*args), env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("question", ["", " \t ", "\u200b\u200e\u2066", "\u00a0\ufeff\u2069\n"])
async def test_ask_refuses_an_empty_question(env_settings: dict[str, str],
                                             fake_llm: FakeOpenAI, question: str) -> None:
    env = subprocess_env(env_settings, LLM_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-t")
    code, out, err = await run_async(["ask", question], env)
    assert (code, out, err) == (2, "", "error: the question is empty\n")
    assert fake_llm.requests == []


async def test_chat_commands_and_empty_lines_never_reach_the_model(
        env_settings: dict[str, str], fake_llm: FakeOpenAI) -> None:
    env = subprocess_env(env_settings, LLM_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-t")
    typed = ("/help\n/nonsense\n\u200b\u200e\u2066\nMy favourite library is zlib.\n/reset\n"
             "Which library do I like?\n/quit\nnot read\n")
    code, out, err = await run_async(["chat"], env, typed.encode())
    assert code == 0, err
    replies = [line for line in out.splitlines() if line.startswith("bot> ")]
    assert len(replies) == 2 and len(fake_llm.requests) == 2
    second = [(m["role"], m["content"]) for m in fake_llm.requests[1]["messages"][2:]]
    assert second == [("user", "Which library do I like?")]  # /reset: memory starts empty
    assert "unknown command /nonsense" in err and "/reset" in err
    assert "new conversation chat-" in err


# `bot ARGS` (a --help) in a fresh interpreter, after `{before}`; writes the names of the
# modules imported since `before` as the last line of stderr.
_IMPORT_PROBE = """
import json, sys
{before}
base = set(sys.modules)
from bot.cli import app
try:
    app(sys.argv[1:], prog_name="bot")
except SystemExit:
    pass
sys.stderr.write("\\n" + json.dumps(sorted(set(sys.modules) - base)) + "\\n")
"""


def _modules_imported_by(*args: str, before: str = "") -> set[str]:
    """Modules `bot ARGS` imported, less those the Python statement `before` imported."""
    import os
    import sys

    done = subprocess.run([sys.executable, "-c", _IMPORT_PROBE.format(before=before), *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "100"})
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
    return set(json.loads(done.stderr.splitlines()[-1]))


def test_help_imports_no_model_or_embedding_libraries() -> None:
    imported = _modules_imported_by("--help")
    roots = {name.split(".")[0] for name in imported}
    assert roots & {"openai", "instructor", "onnxruntime", "tiktoken", "redis",
                    "structlog"} == set()


@pytest.mark.parametrize("args", [["--help"], ["ask", "--help"], ["chat", "--help"],
                                  ["rails", "--help"], ["actions", "--help"]])
def test_cli_modules_import_nothing_heavy_for_help(args: list[str]) -> None:
    # beyond what the `bot` package itself imports (see the test above)
    imported = _modules_imported_by(*args, before="import bot")
    roots = {name.split(".")[0] for name in imported}
    assert roots & {"openai", "instructor", "onnxruntime", "tiktoken", "redis", "asyncpg",
                    "numpy", "phonenumbers", "stdnum", "langdetect", "prompt_toolkit",
                    "aiohttp", "prometheus_client", "knowledge", "actions"} == set()
    assert {n for n in imported if n.startswith(("bot.guardrails", "bot.runtime",
                                                 "bot.llm"))} == set()
