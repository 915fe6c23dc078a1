"""The floor of the webhook hot path: the same parts, nothing else, to show what the minimal
durable path costs in server CPU per message on this machine.

    WEBHOOK_SECRET=... python -m bench.floor --port P --redis-url U --database-url D \\
        --callback-url C [--workers 4]

Runs until SIGTERM (or SIGINT), in its own process, so bench/hotpath.py can start it as it
starts `bot run` and count its CPU (and Valkey's and Postgres's) the same way. With the same
libraries as the bot (an aiohttp server and client session, redis.asyncio on a plain
ConnectionPool, an asyncpg pool) it does per message:
- ingress, `POST /webhooks/load`: verify the HMAC-SHA256 `X-Signature` of the body (401 if
  wrong), parse the JSON, XADD the raw body to a stream (field `m`, one round trip), 202;
- `--workers` consumer tasks: XREADGROUP (up to 16 entries, blocking 250 ms), one transcript
  row per message in `floor_messages` written for the whole batch by one `executemany` (one
  round trip, one commit), one signed callback POST per message (`Idempotency-Key:
  webhook:load:<id>`, as the bot's), all of the batch's concurrently, then XACK + XDEL of the
  batch in one pipeline.
Batching across the messages in flight is the floor's only trick, so its CPU per message is a
lower bound for verify+store, read, one transcript row, one callback and ack on this machine,
against which `bot run`'s figure can be read. It is not durable-correct in every way the bot
is: no dedupe (a repeated id is stored again and answered again; its row is kept once), no
per-conversation order, no retries (a failed batch stays pending in the group, never
reclaimed), no rate limits, no payload validation but the JSON's `id`.
Its row goes to a table of its own with two indexes, where the transcript's `messages` has ten
and a stored tsvector (the admin console's search): the floor's Postgres share is low.

`--rows bot` writes the bot's own rows instead, on the migrated schema, with the bot's own
writers: for each message the transcript's exchange (`bot.transcript.Transcript.record`: the
conversation upserted, the message and its reply, the reply being the bot's `!help` answer)
and one finished audit row
(`actions.audit.AuditLog.begin`, as a read-only action like `!help` writes it), the batch's
rows in one statement each and one commit (their group commit). What the bot's data model
costs, and the floor below which no engine with that model gets on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import asyncpg
from aiohttp import web
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ResponseError

from actions import builtin
from actions.audit import AuditLog
from actions.registry import specs_in
from actions.spec import ActionContext, ActionSpec
from adapters.verification import sha256_signature, verify_sha256_signature
from bot.messages import Conversation, Message, Reply
from bot.transcript import Transcript
from migrations.runner import migrate

STREAM, GROUP = "floor:inbox", "floor"
BATCH, BLOCK_MS = 16, 250
log = logging.getLogger("bench.floor")


async def serve_floor(port: int, redis_url: str, database_url: str, secret: str,
                      callback_url: str, stop: asyncio.Event, workers: int = 4,
                      rows: str = "floor") -> None:
    """Serve the floor path on 127.0.0.1:`port` until `stop` is set; `rows`: "floor" (its own
    table) or "bot" (the bot's transcript and audit rows)."""
    # the socket timeout must exceed XREADGROUP's block (redis-py 8 defaults to 5 s)
    redis = Redis.from_pool(ConnectionPool.from_url(redis_url, socket_timeout=10))
    pool: asyncpg.Pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    session = aiohttp.ClientSession()
    if rows == "bot":
        async with pool.acquire() as conn:
            await migrate(conn, embedding_dim=384)
        write_rows = _bot_writer(Transcript(pool), AuditLog(pool), await _help_text())
    else:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS floor_messages (id bigserial PRIMARY KEY, message_id"
            " text UNIQUE, conversation text, text text, reply text, created_at timestamptz"
            " DEFAULT now())")
        write_rows = _floor_writer(pool)
    with contextlib.suppress(ResponseError):  # BUSYGROUP: made by an earlier run
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)

    async def ingress(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_sha256_signature(secret, body, request.headers.get("X-Signature")):
            return web.json_response({"error": "invalid signature"}, status=401)
        try:
            payload = json.loads(body)
            public_id = str(payload["id"])
        except (ValueError, RecursionError, TypeError, KeyError):
            return web.json_response({"error": "body is not a JSON message"}, status=400)
        await redis.xadd(STREAM, {"m": body})
        return web.json_response({"id": public_id, "status": "accepted"}, status=202)

    async def ready(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def callback(message: dict[str, Any], reply: str) -> None:
        body = json.dumps({"text": reply}, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": f"webhook:load:{message['id']}",
                   "X-Signature": sha256_signature(secret, body)}
        async with session.post(callback_url, data=body, headers=headers) as response:
            await response.read()

    async def consume(name: str) -> None:
        while not stop.is_set():
            try:
                read: Any = await redis.xreadgroup(GROUP, name, {STREAM: ">"}, count=BATCH,
                                                   block=BLOCK_MS)
                if not read:
                    continue
                ids = [entry_id for entry_id, _ in read[0][1]]
                messages = [json.loads(fields[b"m"]) for _, fields in read[0][1]]
                replies = await write_rows(messages)
                await asyncio.gather(*[callback(m, r)
                                       for m, r in zip(messages, replies, strict=True)])
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.xack(STREAM, GROUP, *ids)
                    pipe.xdel(STREAM, *ids)
                    await pipe.execute()
            except Exception:  # the batch stays pending: no retries in the floor
                log.exception("batch failed")
                await asyncio.sleep(0.1)

    app = web.Application()
    app.add_routes([web.post("/webhooks/load", ingress), web.get("/health/ready", ready)])
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    tasks = [asyncio.create_task(consume(f"floor-{i}")) for i in range(workers)]
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await stop.wait()
    finally:
        await runner.cleanup()  # no new messages; the consumers stop within one block
        _done, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
        await session.close()
        await pool.close()
        await redis.aclose()


#: Writes a batch's rows and returns each message's reply text.
RowWriter = Callable[[list[dict[str, Any]]], Awaitable[list[str]]]


def _floor_writer(pool: asyncpg.Pool) -> RowWriter:
    """The floor's own rows: one per message in `floor_messages`, one `executemany`."""
    async def write(messages: list[dict[str, Any]]) -> list[str]:
        replies = [f"ok: {m.get('text', '')}" for m in messages]
        await pool.executemany(
            "INSERT INTO floor_messages (message_id, conversation, text, reply) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING",
            [(str(m["id"]), str(m.get("conversation", "")), str(m.get("text", "")), r)
             for m, r in zip(messages, replies, strict=True)])
        return replies

    return write


def _bot_writer(transcript: Transcript, audit: AuditLog, help_text: str) -> RowWriter:
    """The bot's rows for each message, answered with `help_text`: the transcript's exchange
    and a finished audit row (the writers' group commits batch them)."""
    async def write(messages: list[dict[str, Any]]) -> list[str]:
        await asyncio.gather(*[_bot_rows(transcript, audit, m, help_text) for m in messages])
        return [help_text] * len(messages)

    return write


async def _help_text() -> str:
    """The bot's `!help` answer with every built-in action listed (`--rows bot` writes it as
    the reply: the transcript's full-text column and index cost by the text's length)."""
    async def available() -> list[ActionSpec]:
        return specs_in(builtin)

    caller = cast(ActionContext, SimpleNamespace(available=available))
    text: str = await builtin.show_help(caller, builtin.HelpArgs())
    return text


async def _bot_rows(transcript: Transcript, audit: AuditLog, payload: dict[str, Any],
                    reply_text: str) -> None:
    """The bot's rows for one answered `!help`: the exchange and the finished audit row."""
    public_id = str(payload["id"])
    conversation = Conversation("webhook", str(payload.get("conversation", "")),
                                workspace="load")
    message = Message(id=f"webhook:load:{public_id}", conversation=conversation,
                      user=str(payload.get("user", "")), text=str(payload.get("text", "")))
    reply = Reply(message_id=message.id, conversation=conversation, text=reply_text)
    await asyncio.gather(
        transcript.record(message, reply, None, 1, [], action="help",
                          stage_ms={"RouteAction": 0, "SendReply": 0}),
        audit.begin(message.id, "help", "command", message, {}, "floor",
                    status="ok", reply=reply_text, result=reply_text, attempts=1,
                    duration_ms=0))


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve_floor(args.port, args.redis_url, args.database_url,
                      os.environ["WEBHOOK_SECRET"], args.callback_url, stop, args.workers,
                      args.rows)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--callback-url", required=True)
    parser.add_argument("--workers", type=int, default=4, help="consumer tasks")
    parser.add_argument("--rows", choices=("floor", "bot"), default="floor",
                        help="its own table, or the bot's transcript and audit rows")
    asyncio.run(_main(parser.parse_args()))
