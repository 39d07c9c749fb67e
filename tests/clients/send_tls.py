"""Sends spans to weir with the OpenTelemetry Python SDK over OTLP/HTTP with TLS.

Usage: send_tls.py URL SPANS CA_FILE [CLIENT_CERT CLIENT_KEY]
Exports SPANS spans in one call and prints the exporter's result: "SUCCESS" or "FAILURE".
"""
import logging
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

logging.disable(logging.CRITICAL)
url, n, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cert = sys.argv[4] if len(sys.argv) > 5 else None
key = sys.argv[5] if len(sys.argv) > 5 else None

memory = InMemorySpanExporter()
tp = TracerProvider(resource=Resource.create({"service.name": "python-tls"}))
tp.add_span_processor(SimpleSpanProcessor(memory))
tracer = tp.get_tracer("weir-tls-test")
for i in range(n):
    with tracer.start_as_current_span(f"tls-span-{i}"):
        pass

exporter = OTLPSpanExporter(
    endpoint=url,
    certificate_file=ca,
    client_certificate_file=cert,
    client_key_file=key,
    timeout=10,
)
# No retries: one attempt, its result printed.
exporter._MAX_RETRY_TIMEOUT = 0  # older SDKs
result = exporter.export(memory.get_finished_spans())
print(result.name)
