"""Traces across processes, as an operator with a collector sees them: a webhook message taken
in by `bot run --workers 0` and answered by a separate `bot worker` is one trace (the W3C
traceparent rides in the inbox entry), with GenAI attributes on the model call and no
message text anywhere. The collector is a real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import subprocess_env
from tests.fakes.bot_server import envelope
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI, LoopbackServer
from tests.fakes.processes import BotProcess, ingress_and_worker

QUESTION = "Where is the zlib buffer size CHUNK-7731 documented?"


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Collector(LoopbackServer):
    """`POST /v1/traces` (OTLP/HTTP, protobuf): every span with its service's role."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[dict[str, Any]] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/traces", self._traces)]

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append({
                        "role": resource.get("switchboard.role"), "name": s.name,
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(),
                        "links": [link.span_id.hex() for link in s.links],
                        "attributes": {a.key: _value(a.value) for a in s.attributes}})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


async def test_one_trace_from_the_ingress_through_the_inbox_to_the_worker(
        env_settings: dict[str, str], fake_llm: FakeOpenAI, callback: CallbackRecorder,
        processes: list[BotProcess], tmp_path: Path) -> None:
    collector = await Collector().start()
    try:
        env = subprocess_env(
            env_settings, LLM_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-trace",
            WEBHOOK_CALLBACK_URL=callback.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
            OTEL_BSP_SCHEDULE_DELAY="100")
        ingress, worker = await ingress_and_worker(env, tmp_path, processes)
        try:
            assert await ingress.post(envelope(id="traced-1", text=QUESTION)) == 202
            await callback.wait_for(1, timeout_s=90)
        finally:
            worker.send_signal(signal.SIGTERM)
            ingress.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 30) == 0
            assert await asyncio.to_thread(ingress.proc.wait, 30) == 0
    finally:
        await collector.stop()

    [publish] = [s for s in collector.spans if s["name"].startswith("publish ")
                 and s["attributes"].get("switchboard.message.id") == "webhook:support:traced-1"]
    trace = [s for s in collector.spans if s["trace_id"] == publish["trace_id"]]
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in trace:
        by_name[s["name"]].append(s)
    assert {s["role"] for s in trace} == {"run", "worker"}
    [server] = by_name["POST /webhooks/{name}"]
    assert server["role"] == "run" and publish["parent"] == server["span_id"]
    [process] = [s for s in trace if s["name"].startswith("process ")]
    assert process["role"] == "worker"
    assert process["parent"] == publish["span_id"] and process["links"] == [publish["span_id"]]
    assert process["attributes"]["messaging.message.id"] == \
        publish["attributes"]["messaging.message.id"]
    for stage in ("stage Generate", "stage SendReply"):
        assert by_name[stage][0]["parent"] == process["span_id"], stage
    [chat] = by_name["chat gpt-4o-mini"]
    attributes = chat["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.provider.name"] == "default"
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert by_name["send webhook"]
    # no message text in any span, by default
    for s in collector.spans:
        for value in s["attributes"].values():
            assert "CHUNK-7731" not in str(value), (s["name"], value)
