use super::*;
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, Status};

fn skv(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn span(
    trace: u8,
    id: u8,
    parent: u8,
    kind: SpanKind,
    ms: u64,
    error: bool,
    attrs: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            vec![parent; 8]
        },
        kind: kind as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
        status: Some(Status {
            code: if error { 2 } else { 0 },
            message: String::new(),
        }),
        attributes: attrs,
        ..Default::default()
    }
}

fn rs(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                skv("service.name", service),
                skv("k8s.cluster.name", "eu-1"),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

fn shared(yaml: &str) -> Shared {
    let c: ServiceGraphConfig = serde_yaml::from_str(yaml).expect("yaml");
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    Shared::new("servicegraph", c, &Registry::new())
}

fn attr(attrs: &[KeyValue], k: &str) -> String {
    find(attrs, k).map(text).unwrap_or_default()
}

/// (client, server, connection_type, failed).
type EdgeId = (String, String, String, String);
/// (total, failed total, server latency sum, client latency sum).
type EdgeCounts = (i64, i64, f64, f64);

fn edges(s: &Shared) -> Vec<(EdgeId, EdgeCounts)> {
    let mut out = Vec::new();
    for (_, req, _) in s.flush() {
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let get = |name: &str| metrics.iter().find(|m| m.name == name);
        let Some(metric::Data::Sum(total)) =
            get("traces_service_graph_request_total").and_then(|m| m.data.clone())
        else {
            panic!("no request_total")
        };
        for p in &total.data_points {
            let key = (
                attr(&p.attributes, "client"),
                attr(&p.attributes, "server"),
                attr(&p.attributes, "connection_type"),
                attr(&p.attributes, "failed"),
            );
            let v = |m: Option<&Metric>| -> i64 {
                match m.and_then(|m| m.data.clone()) {
                    Some(metric::Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .find(|q| q.attributes == p.attributes)
                        .and_then(|q| match q.value {
                            Some(number_data_point::Value::AsInt(i)) => Some(i),
                            _ => None,
                        })
                        .unwrap_or(0),
                    _ => 0,
                }
            };
            let h = |name: &str| -> f64 {
                match get(name).and_then(|m| m.data.clone()) {
                    Some(metric::Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .find(|q| q.attributes == p.attributes)
                        .and_then(|q| q.sum)
                        .unwrap_or(-1.0),
                    _ => -1.0,
                }
            };
            out.push((
                key,
                (
                    v(Some(&Metric {
                        name: String::new(),
                        data: Some(metric::Data::Sum(total.clone())),
                        ..Default::default()
                    })),
                    v(get("traces_service_graph_request_failed_total")),
                    h("traces_service_graph_request_server"),
                    h("traces_service_graph_request_client"),
                ),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn k(c: &str, s: &str, t: &str, f: bool) -> (String, String, String, String) {
    (c.into(), s.into(), t.into(), f.to_string())
}

#[test]
fn a_client_and_its_server_span_make_one_edge_with_both_latencies() {
    let s = shared("{}");
    let now = Instant::now();
    // frontend calls checkout twice; the second call fails on the server side.
    s.consume(
        None,
        &[rs(
            "frontend",
            vec![
                span(1, 10, 0, SpanKind::Client, 30, false, vec![]),
                span(2, 20, 0, SpanKind::Client, 40, false, vec![]),
            ],
        )],
        now,
    );
    s.consume(
        None,
        &[rs(
            "checkout",
            vec![
                span(1, 11, 10, SpanKind::Server, 20, false, vec![]),
                span(2, 21, 20, SpanKind::Server, 25, true, vec![]),
                span(2, 22, 21, SpanKind::Internal, 5, false, vec![]),
            ],
        )],
        now,
    );
    let e = edges(&s);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].0, k("frontend", "checkout", "", false));
    assert_eq!(e[0].1 .0, 1);
    assert!(
        (e[0].1 .2 - 0.020).abs() < 1e-9,
        "server latency in seconds: {e:?}"
    );
    assert!(
        (e[0].1 .3 - 0.030).abs() < 1e-9,
        "client latency in seconds: {e:?}"
    );
    assert_eq!(e[1].0, k("frontend", "checkout", "", true));
    assert_eq!((e[1].1 .0, e[1].1 .1), (1, 1), "failed counts in both");
    assert_eq!(
        s.state.lock().unwrap().edges.len(),
        0,
        "complete edges leave the store"
    );
    assert_eq!(s.total_edges.get(), 2);
}

#[test]
fn database_calls_messaging_and_dimensions() {
    let s = shared("{dimensions: [k8s.cluster.name, http.route]}");
    let now = Instant::now();
    s.consume(
        None,
        &[rs(
            "orders",
            vec![
                span(
                    1,
                    1,
                    0,
                    SpanKind::Client,
                    5,
                    false,
                    vec![skv("db.name", "orders-db")],
                ),
                span(
                    2,
                    2,
                    0,
                    SpanKind::Producer,
                    1,
                    false,
                    vec![skv("http.route", "/x")],
                ),
            ],
        )],
        now,
    );
    s.consume(
        None,
        &[rs(
            "billing",
            vec![span(2, 3, 2, SpanKind::Consumer, 2, false, vec![])],
        )],
        now,
    );
    let out = s.flush();
    let metrics = &out[0].1.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(
        out[0].1.resource_metrics[0]
            .resource
            .as_ref()
            .map(|r| r.attributes.len()),
        Some(0)
    );
    assert_eq!(
        out[0].1.resource_metrics[0].scope_metrics[0]
            .scope
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("traces_service_graph")
    );
    let Some(metric::Data::Sum(total)) = &metrics[0].data else {
        panic!()
    };
    let db = total
        .data_points
        .iter()
        .find(|p| attr(&p.attributes, "connection_type") == "database")
        .expect("database edge");
    assert_eq!(attr(&db.attributes, "server"), "orders-db");
    assert_eq!(
        attr(&db.attributes, "client_k8s.cluster.name"),
        "eu-1",
        "resource attribute"
    );
    let msg = total
        .data_points
        .iter()
        .find(|p| attr(&p.attributes, "connection_type") == "messaging_system")
        .expect("messaging edge");
    assert_eq!(attr(&msg.attributes, "client"), "orders");
    assert_eq!(attr(&msg.attributes, "server"), "billing");
    assert_eq!(attr(&msg.attributes, "client_http.route"), "/x");
    assert_eq!(attr(&msg.attributes, "server_k8s.cluster.name"), "eu-1");
    assert_eq!(metrics[1].name, "traces_service_graph_request_server");
    assert_eq!(metrics[1].unit, "s");
}

#[test]
fn unpaired_spans_become_virtual_nodes_after_the_ttl() {
    let s = shared("{store: {ttl: 1ms}, virtual_node_extra_label: true}");
    let now = Instant::now();
    s.consume(
        None,
        &[rs(
            "gateway",
            vec![
                span(1, 1, 0, SpanKind::Server, 5, false, vec![]), // root: the user called it
                span(
                    1,
                    2,
                    1,
                    SpanKind::Client,
                    5,
                    false,
                    vec![skv("peer.service", "stripe")],
                ), // nobody answers: a peer
                span(1, 3, 1, SpanKind::Client, 5, false, vec![]), // no peer attribute
                span(1, 4, 9, SpanKind::Server, 5, false, vec![]), // parent never comes: dropped
            ],
        )],
        now,
    );
    s.expire(now + Duration::from_secs(1));
    let e = edges(&s);
    let keys: Vec<_> = e.iter().map(|x| x.0.clone()).collect();
    assert_eq!(
        keys,
        vec![
            k("gateway", "stripe", "virtual_node", false),
            k("gateway", "unknown", "virtual_node", false),
            k("user", "gateway", "virtual_node", false),
        ]
    );
    assert_eq!(s.expired_edges.get(), 4);
    let out = s.flush();
    let Some(metric::Data::Sum(t)) = &out[0].1.resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        panic!()
    };
    let user = t
        .data_points
        .iter()
        .find(|p| attr(&p.attributes, "client") == "user")
        .expect("user");
    assert_eq!(attr(&user.attributes, "virtual_node"), "client");
    // Virtual nodes off: nothing but the count of expired edges.
    let off = shared("{store: {ttl: 1ms}, virtual_node_peer_attributes: []}");
    off.consume(
        None,
        &[rs(
            "gateway",
            vec![span(1, 1, 0, SpanKind::Server, 5, false, vec![])],
        )],
        now,
    );
    off.expire(now + Duration::from_secs(1));
    assert!(off.flush().is_empty());
    assert_eq!(off.expired_edges.get(), 1);
}

#[test]
fn a_full_store_drops_spans_and_tenants_never_pair() {
    let s = shared("{store: {max_items: 2}}");
    let now = Instant::now();
    s.consume(
        None,
        &[rs(
            "a",
            (1..=5)
                .map(|i| span(i, i, 0, SpanKind::Client, 1, false, vec![]))
                .collect(),
        )],
        now,
    );
    assert_eq!(s.state.lock().unwrap().edges.len(), 2);
    assert_eq!(s.dropped_spans.get(), 3);
    let t = shared("{}");
    let (x, y): (Option<Arc<str>>, Option<Arc<str>>) =
        (Some(Arc::from("acme")), Some(Arc::from("globex")));
    t.consume(
        x.clone(),
        &[rs(
            "a",
            vec![span(1, 1, 0, SpanKind::Client, 1, false, vec![])],
        )],
        now,
    );
    t.consume(
        y,
        &[rs(
            "b",
            vec![span(1, 2, 1, SpanKind::Server, 1, false, vec![])],
        )],
        now,
    );
    assert!(
        t.flush().is_empty(),
        "acme's client and globex's server do not pair"
    );
    t.consume(
        x.clone(),
        &[rs(
            "b",
            vec![span(1, 2, 1, SpanKind::Server, 1, false, vec![])],
        )],
        now,
    );
    let out = t.flush();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, x, "the edge is acme's, sent under acme");
}

#[test]
fn bad_settings_are_refused_with_upstreams_messages() {
    let c: ServiceGraphConfig = serde_yaml::from_str(
        "{exponential_histogram_max_size: -1, latency_histogram_buckets: [1s, 10ms]}",
    )
    .expect("yaml");
    let text = format!("{:?}", c.validate());
    assert!(
        text.contains("`exponential_histogram_max_size` can not be negative"),
        "{text}"
    );
    assert!(text.contains("must be in increasing order"), "{text}");
    let c: ServiceGraphConfig = serde_yaml::from_str(
        "{exponential_histogram_max_size: 10, latency_histogram_buckets: [1s]}",
    )
    .expect("yaml");
    assert!(format!("{:?}", c.validate())
        .contains("use either `latency_histogram_buckets` or `exponential_histogram_max_size`"));
}
