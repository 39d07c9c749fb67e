"""Two instrumented services as the OpenTelemetry Python SDK reports them over OTLP/HTTP:
`frontend` calls `checkout` (a CLIENT span and the SERVER span under it), and `checkout`
queries its database (a CLIENT span with db.name). Every ERROR_EVERY-th call fails on the
server side (0: none).

Usage: two_services.py ENDPOINT CALLS ERROR_EVERY
Prints one line: "sent calls=N errors=M".
"""
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

endpoint, calls, error_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def provider(service):
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), schedule_delay_millis=200
        )
    )
    return tp


front, back = provider("frontend"), provider("checkout")
ft, bt = front.get_tracer("frontend"), back.get_tracer("checkout")
errors = 0
for i in range(calls):
    with ft.start_as_current_span("POST /checkout", kind=SpanKind.CLIENT):
        with bt.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as server:
            with bt.start_as_current_span(
                "SELECT orders", kind=SpanKind.CLIENT, attributes={"db.name": "orders-db"}
            ):
                pass
            if error_every and i % error_every == 0:
                server.set_status(Status(StatusCode.ERROR, "payment declined"))
                errors += 1
for tp in (front, back):
    tp.force_flush()
    tp.shutdown()
print(f"sent calls={calls} errors={errors}")
