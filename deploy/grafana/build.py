"""Builds weir's Grafana dashboards with Grafana's Foundation SDK (PyPI `grafana-foundation-sdk`),
so every panel, query and variable is one the SDK's dashboard schema knows.

    python3 deploy/grafana/build.py           # writes deploy/grafana/dashboards/*.json
    python3 deploy/grafana/build.py --check   # fails if the committed JSON differs (CI)

Two dashboards:
- weir.json: the gateway itself (accepted, refused, sent, failed per signal; queues; exporter
  latency; tail sampling; cardinality limits; filters; reloads; memory), on the Collector's
  metric names, so a fleet mixing weir and Collectors shows in one place;
- services-red.json: the services behind it, from the spanmetrics connector (rate, errors,
  p50/p95/p99 per service, operation, MCP tool and model, exemplars to Tempo) and the
  servicegraph connector (the service map), with errored traces from Tempo.
Datasources are referred to by the uids provisioned in provisioning/datasources/.
"""
import json
import pathlib
import sys

from grafana_foundation_sdk.builders import dashboard, prometheus, table, tempo, timeseries, nodegraph, stat
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import TableCellHeight  # noqa: F401  (schema import check)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

HERE = pathlib.Path(__file__).resolve().parent
PROM = DataSourceRef(type_val="prometheus", uid="${datasource}")
TEMPO = DataSourceRef(type_val="tempo", uid="tempo")
RATE = "$__rate_interval"
SERVER = 'span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"'


def q(expr, legend="", ref="A", exemplar=False):
    d = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref)
    if exemplar:
        d = d.exemplar(True)
    return d


def ts(title, targets, unit, x, y, w=12, h=8, description=""):
    p = (
        timeseries.Panel()
        .title(title)
        .datasource(PROM)
        .unit(unit)
        .grid_pos(GridPos(h=h, w=w, x=x, y=y))
        .line_width(1)
        .fill_opacity(10)
    )
    if description:
        p = p.description(description)
    for i, t in enumerate(targets):
        p = p.with_target(t.ref_id(chr(ord("A") + i)))
    return p


def datasource_var():
    return dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def query_var(name, label, query):
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(PROM)
        .query(query)
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .refresh(2)  # on time range change
        .sort(1)
    )


def per_signal(title, metric, unit, x, y, by="", description=""):
    group = f" by ({by})" if by else ""
    legend = f"{{{{{by}}}}} " if by else ""
    return ts(
        title,
        [
            q(f'sum{group} (rate({metric.format(s="spans")}{{instance=~"$instance"}}[{RATE}]))', f"{legend}spans"),
            q(f'sum{group} (rate({metric.format(s="metric_points")}{{instance=~"$instance"}}[{RATE}]))', f"{legend}metric points"),
            q(f'sum{group} (rate({metric.format(s="log_records")}{{instance=~"$instance"}}[{RATE}]))', f"{legend}log records"),
        ],
        unit,
        x,
        y,
        description=description,
    )


def weir_dashboard():
    inst = '{instance=~"$instance"}'
    d = (
        dashboard.Dashboard("weir")
        .uid("weir-gateway")
        .description("The weir gateway: what it takes, refuses, sends and drops, its queues, exporters, processors and memory. Collector metric names, so Collectors show here too.")
        .tags(["weir", "opentelemetry", "collector"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(datasource_var())
        .with_variable(query_var("instance", "Instance", "label_values(otelcol_process_uptime, instance)"))
        .with_row(dashboard.Row("Data flow"))
        .with_panel(per_signal("Accepted by receivers", "otelcol_receiver_accepted_{s}_total", "short", 0, 1,
                               description="Items receivers accepted (answered OK), per second."))
        .with_panel(per_signal("Refused by receivers", "otelcol_receiver_refused_{s}_total", "short", 12, 1,
                               description="Items refused with a retryable error (memory budget, full inboxes, memory_limiter) or as invalid."))
        .with_panel(per_signal("Sent by exporters", "otelcol_exporter_sent_{s}_total", "short", 0, 9, by="exporter"))
        .with_panel(per_signal("Send failures", "otelcol_exporter_send_failed_{s}_total", "short", 12, 9, by="exporter",
                               description="Items an exporter gave up on after its retries (or a permanent error)."))
        .with_row(dashboard.Row("Queues and exporters"))
        .with_panel(ts("Exporter queue fill", [
            q(f"max by (exporter) (otelcol_exporter_queue_size{inst} / otelcol_exporter_queue_capacity{inst})", "{{exporter}}"),
        ], "percentunit", 0, 18, description="Above 80 % the backend cannot keep up (alert: WeirExporterQueueNearlyFull)."))
        .with_panel(ts("Exporter send latency", [
            q(f"histogram_quantile(0.5, sum by (exporter, le) (rate(weir_exporter_send_duration_seconds_bucket{inst}[{RATE}])))", "p50 {{exporter}}"),
            q(f"histogram_quantile(0.95, sum by (exporter, le) (rate(weir_exporter_send_duration_seconds_bucket{inst}[{RATE}])))", "p95 {{exporter}}"),
            q(f"histogram_quantile(0.99, sum by (exporter, le) (rate(weir_exporter_send_duration_seconds_bucket{inst}[{RATE}])))", "p99 {{exporter}}"),
        ], "s", 12, 18))
        .with_panel(per_signal("Enqueue failures (queue full)", "otelcol_exporter_enqueue_failed_{s}_total", "short", 0, 26, by="exporter"))
        .with_panel(ts("Persistent queue", [
            q(f"sum by (pipeline) (weir_wal_disk_bytes{inst})", "{{pipeline}} bytes on disk"),
            q(f"sum(rate(weir_wal_write_failures_total{inst}[{RATE}]))", "write failures/s"),
        ], "bytes", 12, 26))
        .with_row(dashboard.Row("Processors"))
        .with_panel(ts("Tail sampling decisions", [
            q(f"sum by (sampled) (rate(otelcol_processor_tail_sampling_global_count_traces_sampled_total{inst}[{RATE}]))", "sampled={{sampled}}"),
            q(f"sum(otelcol_processor_tail_sampling_sampling_traces_on_memory{inst})", "traces held"),
        ], "short", 0, 35))
        .with_panel(ts("Cardinality limits", [
            q(f"sum by (processor) (rate(weir_cardinality_limited_points_total{inst}[{RATE}]))", "limited {{processor}}"),
            q(f"sum by (processor) (weir_cardinality_active_series{inst})", "active series {{processor}}"),
            q(f"sum by (connector) (rate(weir_connector_spanmetrics_overflow_total{inst}[{RATE}]))", "spanmetrics overflow {{connector}}"),
        ], "short", 12, 35))
        .with_panel(ts("Filtered", [
            q(f"sum by (filter) (rate(otelcol_processor_filter_spans_filtered_total{inst}[{RATE}]))", "spans {{filter}}"),
            q(f"sum by (filter) (rate(otelcol_processor_filter_datapoints_filtered_total{inst}[{RATE}]))", "data points {{filter}}"),
            q(f"sum by (filter) (rate(otelcol_processor_filter_logs_filtered_total{inst}[{RATE}]))", "logs {{filter}}"),
        ], "short", 0, 43))
        .with_panel(ts("Dropped by processors and tenants", [
            q(f"sum by (processor) (rate(weir_processor_dropped_items_total{inst}[{RATE}]))", "{{processor}}"),
            q(f"sum(rate(weir_tenant_refused_requests_total{inst}[{RATE}]))", "tenant refusals"),
        ], "short", 12, 43))
        .with_row(dashboard.Row("Process"))
        .with_panel(ts("Memory", [
            q(f"otelcol_process_memory_rss{inst}", "RSS {{instance}}"),
            q(f"weir_memory_budget_used_bytes{inst}", "budget used {{instance}}"),
            q(f"weir_memory_budget_limit_bytes{inst}", "budget {{instance}}"),
        ], "bytes", 0, 52))
        .with_panel(ts("CPU and budget refusals", [
            q(f"rate(otelcol_process_cpu_seconds{inst}[{RATE}])", "CPU cores {{instance}}"),
            q(f"rate(weir_memory_budget_refused_requests_total{inst}[{RATE}])", "refused requests/s {{instance}}"),
        ], "short", 12, 52))
        .with_panel(
            stat.Panel()
            .title("Last reload")
            .datasource(PROM)
            .grid_pos(GridPos(h=6, w=8, x=0, y=60))
            .with_target(q(f"min(weir_config_last_reload_successful{inst})", "successful"))
        )
        .with_panel(ts("Reloads", [
            q(f"sum(increase(weir_config_reloads_total{inst}[{RATE}]))", "reloads"),
            q(f"sum(increase(weir_config_reload_failures_total{inst}[{RATE}]))", "failures"),
        ], "short", 8, 60, w=16, h=6))
    )
    return d


def services_dashboard():
    sel = f'service_name=~"$service", {SERVER}'
    calls = f"traces_span_metrics_calls_total{{{sel}}}"
    errors = f'traces_span_metrics_calls_total{{{sel}, status_code="STATUS_CODE_ERROR"}}'
    bucket = f"traces_span_metrics_duration_milliseconds_bucket{{{sel}}}"

    def red(by, title_what, y):
        legend = "{{" + by + "}}"
        return [
            ts(f"Requests by {title_what}", [q(f"sum by ({by}) (rate({calls}[{RATE}]))", legend)], "reqps", 0, y, w=8),
            ts(f"Error ratio by {title_what}", [
                q(f"sum by ({by}) (rate({errors}[{RATE}])) / sum by ({by}) (rate({calls}[{RATE}]))", legend),
            ], "percentunit", 8, y, w=8),
            ts(f"p95 latency by {title_what}", [
                q(f"histogram_quantile(0.95, sum by ({by}, le) (rate({bucket}[{RATE}])))", legend, exemplar=True),
            ], "ms", 16, y, w=8),
        ]

    d = (
        dashboard.Dashboard("Services: RED")
        .uid("weir-services-red")
        .description("Rate, errors and duration of the services whose traces pass through weir, from the spanmetrics connector; MCP tools and models by their GenAI attributes; exemplars open the trace in Tempo, and Tempo links each trace to its logs in Loki.")
        .tags(["weir", "red", "spanmetrics", "mcp", "genai"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(datasource_var())
        .with_variable(query_var("service", "Service", "label_values(traces_span_metrics_calls_total, service_name)"))
        .with_row(dashboard.Row("Services"))
        .with_panel(ts("Requests", [q(f"sum by (service_name) (rate({calls}[{RATE}]))", "{{service_name}}")], "reqps", 0, 1, w=8))
        .with_panel(ts("Error ratio", [
            q(f"sum by (service_name) (rate({errors}[{RATE}])) / sum by (service_name) (rate({calls}[{RATE}]))", "{{service_name}}"),
        ], "percentunit", 8, 1, w=8, description="Alert ServiceErrorRateHigh fires above 1 % for 5 minutes."))
        .with_panel(ts("Latency", [
            q(f"histogram_quantile(0.5, sum by (service_name, le) (rate({bucket}[{RATE}])))", "p50 {{service_name}}", exemplar=True),
            q(f"histogram_quantile(0.95, sum by (service_name, le) (rate({bucket}[{RATE}])))", "p95 {{service_name}}", exemplar=True),
            q(f"histogram_quantile(0.99, sum by (service_name, le) (rate({bucket}[{RATE}])))", "p99 {{service_name}}", exemplar=True),
        ], "ms", 16, 1, w=8, description="Exemplars (dots) open their trace in Tempo."))
        .with_row(dashboard.Row("Operations"))
    )
    for p in red("span_name", "operation", 10):
        d = d.with_panel(p)
    d = d.with_row(dashboard.Row("MCP tools and models"))
    for p in red("gen_ai_tool_name", "tool", 19):
        d = d.with_panel(p)
    for p in red("gen_ai_request_model", "model", 27):
        d = d.with_panel(p)
    d = (
        d.with_row(dashboard.Row("Service map and traces"))
        .with_panel(
            nodegraph.Panel()
            .title("Service map")
            .description("From the servicegraph connector's traces_service_graph_* metrics, through Tempo's service map.")
            .datasource(TEMPO)
            .grid_pos(GridPos(h=10, w=12, x=0, y=36))
            .with_target(tempo.TempoQuery().ref_id("A").query_type("serviceMap").service_map_query('{server=~"$service"}'))
        )
        .with_panel(
            table.Panel()
            .title("Failed traces")
            .description("Errored traces of the selected services in Tempo; each opens the trace, and the trace its logs.")
            .datasource(TEMPO)
            .grid_pos(GridPos(h=10, w=12, x=12, y=36))
            .with_target(
                tempo.TempoQuery()
                .ref_id("A")
                .query_type("traceql")
                .query('{ resource.service.name =~ "$service" && status = error }')
                .limit(20)
            )
        )
    )
    return d


def render(d):
    doc = json.loads(JSONEncoder(sort_keys=True).encode(d.build()))
    # Every panel (rows included) gets its own id, in layout order.
    for i, panel in enumerate(doc["panels"], start=1):
        panel["id"] = i
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


def main():
    check = "--check" in sys.argv[1:]
    out = {
        HERE / "dashboards" / "weir.json": render(weir_dashboard()),
        HERE / "dashboards" / "services-red.json": render(services_dashboard()),
    }
    stale = []
    for path, text in out.items():
        json.loads(text)  # well-formed
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python3 deploy/grafana/build.py): " + ", ".join(stale))
        sys.exit(1)
    print(("checked " if check else "wrote ") + ", ".join(p.name for p in out))


if __name__ == "__main__":
    main()
