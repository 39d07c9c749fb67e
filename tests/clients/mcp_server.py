"""An MCP server's tool calls, as the OpenTelemetry Python SDK reports them over OTLP/HTTP:
one SERVER span per `tools/call`, with the MCP and GenAI semantic-convention attributes
(mcp.method.name, gen_ai.operation.name, gen_ai.tool.name) and a caller unique per call
(enduser.id), and every ERROR_EVERY-th call
failing (0: none fail). The calls are spread over SECONDS.

Usage: mcp_server.py ENDPOINT SECONDS CALLS ERROR_EVERY [TENANT]
With TENANT, every request carries `X-Scope-OrgID: TENANT`. With MCP_LLM_CALLS=1 in the
environment, each tool call also makes an LLM call (a CLIENT `chat` span under it with
gen_ai.request.model and 100 input / 20 output tokens in gen_ai.usage.*).
Prints one line: "sent calls=N errors=M".
"""
import os
import sys
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

endpoint, seconds, calls, error_every = (
    sys.argv[1],
    float(sys.argv[2]),
    int(sys.argv[3]),
    int(sys.argv[4]),
)
headers = {"X-Scope-OrgID": sys.argv[5]} if len(sys.argv) > 5 else None
tp = TracerProvider(resource=Resource.create({"service.name": "weather-mcp"}))
tp.add_span_processor(
    BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers),
        schedule_delay_millis=200,
    )
)
tracer = tp.get_tracer("mcp-server")
tools = ["get_forecast", "search_docs"]
errors = 0
start = time.monotonic()
for i in range(calls):
    tool = tools[i % len(tools)]
    with tracer.start_as_current_span(f"tools/call {tool}", kind=SpanKind.SERVER) as span:
        span.set_attribute("mcp.method.name", "tools/call")
        span.set_attribute("gen_ai.operation.name", "execute_tool")
        span.set_attribute("gen_ai.tool.name", tool)
        span.set_attribute("enduser.id", f"user-{i}")
        span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        if os.environ.get("MCP_LLM_CALLS") == "1":
            with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as chat:
                chat.set_attribute("gen_ai.operation.name", "chat")
                chat.set_attribute("gen_ai.provider.name", "openai")
                chat.set_attribute("gen_ai.request.model", "gpt-4o-mini")
                chat.set_attribute("gen_ai.usage.input_tokens", 100)
                chat.set_attribute("gen_ai.usage.output_tokens", 20)
        if error_every and i % error_every == 0:
            span.set_status(Status(StatusCode.ERROR, "tool failed"))
            errors += 1
    # Spread the calls over the run.
    due = start + seconds * (i + 1) / calls
    pause = due - time.monotonic()
    if pause > 0:
        time.sleep(pause)
tp.force_flush()
tp.shutdown()
print(f"sent calls={calls} errors={errors}")
