"""Sends traces, metrics and logs to weir with the OpenTelemetry Python SDK over OTLP/HTTP.

Usage: send_otlp.py ENDPOINT SPANS LOGS
Prints one line: "sent spans=N points=M logs=L".
"""
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
import logging

endpoint, n_spans, n_logs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
resource = Resource.create({"service.name": "python-client"})

tp = TracerProvider(resource=resource)
tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
tracer = tp.get_tracer("weir-test")
for i in range(n_spans):
    with tracer.start_as_current_span(f"py-span-{i}") as span:
        span.set_attribute("i", i)
tp.force_flush()
tp.shutdown()

reader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"), export_interval_millis=60000
)
mp = MeterProvider(resource=resource, metric_readers=[reader])
counter = mp.get_meter("weir-test").create_counter("py_requests")
for k in range(3):
    counter.add(k + 1, {"route": f"/r{k}"})
mp.shutdown()  # one final collection and export: 3 data points

lp = LoggerProvider(resource=resource)
lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")))
try:
    from opentelemetry.sdk._logs import LoggingHandler
except ImportError:  # newer SDKs moved it
    from opentelemetry.instrumentation.logging.handler import LoggingHandler  # type: ignore
log = logging.getLogger("weir-test")
log.propagate = False
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))
log.setLevel(logging.INFO)
for i in range(n_logs):
    log.info("python log %d", i)
lp.force_flush()
lp.shutdown()
print(f"sent spans={n_spans} points=3 logs={n_logs}")
