use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::config::TenantConfig;
use super::*;
use crate::pdata::{Context, Signal};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// One resource per namespace, two records each.
fn logs(namespaces: &[&str]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: namespaces
            .iter()
            .map(|ns| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("k8s.namespace.name", ns)],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(), LogRecord::default()],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn processor(yaml: &str) -> (TenantProcessor, Arc<Registry>) {
    let mut c: TenantConfig = serde_yaml::from_str(yaml).expect("yaml");
    let errs = prepare(&mut c);
    assert!(errs.is_empty(), "{errs:?}");
    let reg = Registry::new();
    (TenantProcessor::new("tenant", &c, &reg), reg)
}

type Out = Vec<(Option<String>, usize, ExportLogsServiceRequest)>;

/// Runs `r` through the processor as an encoded batch (the wire path, what a receiver hands
/// on) or as a decoded one (the path after a processor that decoded).
fn process(
    p: &mut TenantProcessor,
    r: &ExportLogsServiceRequest,
    metadata: &[(&str, &str)],
    decoded: bool,
) -> Out {
    let ctx = Arc::new(Context {
        metadata: Some(Arc::new(
            metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )),
        ..Default::default()
    });
    let items = crate::pdata::count_logs(r);
    let mut b = Batch::encoded(Signal::Logs, Bytes::from(r.encode_to_vec()), items, ctx);
    if decoded {
        b.payload = Payload::Logs(r.clone());
    }
    let mut out = Vec::new();
    p.process(b, &mut out);
    out.into_iter()
        .map(|b| {
            let r = match &b.payload {
                Payload::Logs(r) => r.clone(),
                Payload::Encoded(bytes) => {
                    ExportLogsServiceRequest::decode(bytes.clone()).expect("valid output")
                }
                _ => panic!("logs"),
            };
            assert_eq!(b.items, crate::pdata::count_logs(&r), "items of a batch");
            (b.context.tenant.as_deref().map(str::to_owned), b.items, r)
        })
        .collect()
}

/// The tenant attribute of each resource of a request (at most one copy each).
fn written(r: &ExportLogsServiceRequest) -> Vec<String> {
    r.resource_logs
        .iter()
        .map(|rl| {
            let copies: Vec<&str> = rl
                .resource
                .as_ref()
                .map(|res| {
                    res.attributes
                        .iter()
                        .filter(|kv| kv.key == "tenant.id")
                        .filter_map(|kv| kv.value.as_ref().and_then(str_value))
                        .collect()
                })
                .unwrap_or_default();
            assert!(copies.len() <= 1, "one tenant attribute: {copies:?}");
            copies.first().copied().unwrap_or("").to_owned()
        })
        .collect()
}

/// The wire path: (tenant, items, the tenant attribute of each resource) per batch out.
fn run(
    p: &mut TenantProcessor,
    r: &ExportLogsServiceRequest,
    metadata: &[(&str, &str)],
) -> Vec<(Option<String>, usize, Vec<String>)> {
    process(p, r, metadata, false)
        .into_iter()
        .map(|(t, n, r)| (t, n, written(&r)))
        .collect()
}

/// The wire path and the decoded path give the same batches, byte for byte once decoded,
/// for every kind of source, spoofed copies of the tenant attribute and odd values.
#[test]
fn the_wire_path_and_the_decoded_path_agree() {
    let configs = [
        "sources: [{static: team-a}]",
        "sources: [{attribute: {key: k8s.namespace.name, map: {'team-a-.*': team-a, billing: team-b}}}, {static: shared}]",
        "sources: [{attribute: {key: k8s.namespace.name}}]\nmissing: reject",
        "sources: [{header: X-Scope-OrgID}]\ndefault_tenant: nobody",
        "sources: [auth, {header: X-Scope-OrgID}]\ntrust_client_header: false\ntokens: {tok-a: team-a}",
    ];
    let mut spoofed = logs(&["team-a-prod", "billing", "other"]);
    // A client that writes the tenant attribute itself, twice, and a namespace that is not a
    // string.
    for rl in &mut spoofed.resource_logs {
        let attrs = &mut rl.resource.as_mut().expect("resource").attributes;
        attrs.insert(0, kv("tenant.id", "evil"));
        attrs.push(kv("tenant.id", "evil-2"));
    }
    spoofed.resource_logs.push(ResourceLogs {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "k8s.namespace.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(7)),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: vec![LogRecord::default(); 3],
            ..Default::default()
        }],
        ..Default::default()
    });
    // No resource at all.
    spoofed.resource_logs.push(ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: vec![LogRecord::default()],
            ..Default::default()
        }],
        ..Default::default()
    });
    let inputs = [
        logs(&["team-a-prod", "billing", "other", "team-a-dev"]),
        spoofed,
        logs(&[]),
    ];
    let metadata: [&[(&str, &str)]; 3] = [
        &[],
        &[("x-scope-orgid", "team-b")],
        &[
            ("authorization", "Bearer tok-a"),
            ("x-scope-orgid", "team-a"),
        ],
    ];
    for yaml in configs {
        for r in &inputs {
            for md in metadata {
                let (mut wire, wreg) = processor(yaml);
                let (mut decoded, dreg) = processor(yaml);
                let a = process(&mut wire, r, md, false);
                let b = process(&mut decoded, r, md, true);
                assert_eq!(a, b, "{yaml} {md:?}");
                for out in &a {
                    assert!(written(&out.2).iter().all(|t| Some(t) == out.0.as_ref()));
                }
                for reason in ["missing", "header_mismatch"] {
                    let labels = [("processor", "tenant"), ("reason", reason)];
                    assert_eq!(
                        wreg.value("weir_tenant_dropped_items_total", &labels),
                        dreg.value("weir_tenant_dropped_items_total", &labels),
                        "{yaml} {reason}"
                    );
                }
            }
        }
    }
}

/// Bytes that do not walk take the decoding path: what decodes is kept, the rest counted.
#[test]
fn a_payload_that_does_not_walk_falls_back_to_decoding() {
    let (mut p, reg) = processor("sources: [{static: team-a}]");
    let mut bytes = logs(&["a"]).encode_to_vec();
    bytes.extend_from_slice(&[0x0a, 0xff, 0x01]); // a second resource claiming 255 bytes
    let b = Batch::encoded(
        Signal::Logs,
        Bytes::from(bytes),
        2,
        Arc::new(Context::default()),
    );
    let mut out = Vec::new();
    p.process(b, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].items, 2);
    assert_eq!(out[0].context.tenant.as_deref(), Some("team-a"));
    assert_eq!(
        reg.value(
            "weir_tenant_dropped_items_total",
            &[("processor", "tenant"), ("reason", "undecodable")]
        ),
        Some(0.0)
    );
}

#[test]
fn sources_in_order_and_batches_split_by_tenant() {
    let (mut p, _) = processor(
        "sources:
  - auth
  - header: X-Scope-OrgID
  - attribute: {key: k8s.namespace.name, map: {'team-a-.*': team-a, billing: team-b}}
  - static: shared
tokens: {tok-a: team-a}",
    );
    // No token, no header: the attribute decides per resource; unmatched falls to static.
    let out = run(
        &mut p,
        &logs(&["team-a-prod", "billing", "other", "team-a-dev"]),
        &[],
    );
    assert_eq!(
        out,
        vec![
            (
                Some("team-a".into()),
                4,
                vec!["team-a".into(), "team-a".into()]
            ),
            (Some("team-b".into()), 2, vec!["team-b".into()]),
            (Some("shared".into()), 2, vec!["shared".into()]),
        ]
    );
    // A header beats the attribute; a token beats the header.
    let out = run(&mut p, &logs(&["billing"]), &[("x-scope-orgid", "team-h")]);
    assert_eq!(out[0].0.as_deref(), Some("team-h"));
    let out = run(
        &mut p,
        &logs(&["billing"]),
        &[
            ("authorization", "Bearer tok-a"),
            ("x-scope-orgid", "team-h"),
        ],
    );
    assert_eq!(out[0].0.as_deref(), Some("team-a"));
}

#[test]
fn missing_default_and_reject() {
    let (mut p, _) = processor("sources: [{header: X-Scope-OrgID}]\ndefault_tenant: anon");
    assert_eq!(
        run(&mut p, &logs(&["x"]), &[])[0].0.as_deref(),
        Some("anon")
    );
    let (mut p, reg) = processor("sources: [{header: X-Scope-OrgID}]\nmissing: reject");
    assert!(run(&mut p, &logs(&["x", "y"]), &[]).is_empty());
    assert_eq!(
        reg.value(
            "weir_tenant_dropped_items_total",
            &[("processor", "tenant"), ("reason", "missing")]
        ),
        Some(4.0)
    );
}

#[test]
fn an_untrusted_header_cannot_claim_another_tenant() {
    let (mut p, reg) = processor(
        "sources: [auth, {header: X-Scope-OrgID}]\ntrust_client_header: false\ntokens: {tok-a: team-a}",
    );
    // The token says team-a; the header claims team-b: dropped and counted.
    let out = run(
        &mut p,
        &logs(&["x"]),
        &[
            ("authorization", "Bearer tok-a"),
            ("x-scope-orgid", "team-b"),
        ],
    );
    assert!(out.is_empty());
    assert_eq!(
        reg.value(
            "weir_tenant_dropped_items_total",
            &[("processor", "tenant"), ("reason", "header_mismatch")]
        ),
        Some(2.0)
    );
    // Agreeing header and token pass.
    let out = run(
        &mut p,
        &logs(&["x"]),
        &[
            ("authorization", "Bearer tok-a"),
            ("x-scope-orgid", "team-a"),
        ],
    );
    assert_eq!(out[0].0.as_deref(), Some("team-a"));
}

#[test]
fn untrusted_claims_count_only_for_an_authenticated_client() {
    let (mut p, _) = processor(
        "sources: [auth, {header: X-Scope-OrgID}, {attribute: {key: k8s.namespace.name}}]\ntrust_client_header: false\ntokens: {tok-a: team-a}\ndefault_tenant: shared",
    );
    // No token: neither the header nor the resource attribute the client wrote makes it team-b.
    for md in [
        &[("x-scope-orgid", "team-b")][..],
        &[("authorization", "Bearer "), ("x-scope-orgid", "team-b")][..],
        &[
            ("authorization", "Bearer nope"),
            ("x-scope-orgid", "team-b"),
        ][..],
    ] {
        let out = run(&mut p, &logs(&["team-b"]), md);
        assert_eq!(out.len(), 1, "{md:?}");
        assert_eq!(out[0].0.as_deref(), Some("shared"), "{md:?}");
        assert_eq!(out[0].2, vec!["shared"], "{md:?}");
    }
    // With trust_client_header: true the same header is taken at its word.
    let (mut p, _) = processor(
        "sources: [auth, {header: X-Scope-OrgID}]\ntrust_client_header: true\ntokens: {tok-a: team-a}",
    );
    let out = run(&mut p, &logs(&["x"]), &[("x-scope-orgid", "team-b")]);
    assert_eq!(out[0].0.as_deref(), Some("team-b"));
}

#[test]
fn one_bearer_rule_for_every_transport() {
    use super::{credential, Credential};
    let ctx = |v: &str| Context {
        metadata: Some(Arc::new(vec![("authorization".into(), v.into())])),
        ..Default::default()
    };
    assert_eq!(credential(&ctx("Bearer ")), Credential::Empty);
    assert_eq!(credential(&ctx("Bearer")), Credential::Empty);
    assert_eq!(credential(&ctx("bearer  tok ")), Credential::Bearer("tok"));
    assert_eq!(credential(&ctx("BEARER tok")), Credential::Bearer("tok"));
    assert_eq!(credential(&ctx("Basic dXNlcg==")), Credential::Absent);
    assert_eq!(credential(&Context::default()), Credential::Absent);
}

#[test]
fn tokens_file_and_config_errors() {
    let dir = std::env::temp_dir().join(format!("weir-tenant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = dir.join("tokens");
    std::fs::write(&f, "# token tenant\ntok-1 team-1\n\ntok-2 team-2\n").expect("write");
    let (mut p, _) = processor(&format!("sources: [auth]\ntokens_file: {}", f.display()));
    let out = run(&mut p, &logs(&["x"]), &[("authorization", "Bearer tok-2")]);
    assert_eq!(out[0].0.as_deref(), Some("team-2"));

    std::fs::write(&f, "tok-1 team-1 extra\n").expect("write");
    let mut c: TenantConfig =
        serde_yaml::from_str(&format!("sources: [auth]\ntokens_file: {}", f.display()))
            .expect("yaml");
    let errs = prepare(&mut c);
    assert_eq!(errs[0].0, "tokens_file");
    assert!(
        errs[0].1.ends_with(":1: expected `token tenant`"),
        "{}",
        errs[0].1
    );

    let mut c: TenantConfig = serde_yaml::from_str(
        "sources: [magic, {header: 'bad header'}, {attribute: {key: '', map: {'(': x}}}, {static: ''}]",
    )
    .expect("yaml");
    let keys: Vec<String> = prepare(&mut c).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec![
            "sources[0]",
            "sources[1].header",
            "sources[2].attribute.key",
            "sources[2].attribute.map.(",
            "sources[3].static"
        ]
    );
    let mut c: TenantConfig = serde_yaml::from_str("sources: [auth]").expect("yaml");
    assert_eq!(
        prepare(&mut c)[0].1,
        "source auth needs tokens (inline), tokens_file or identities"
    );
    let mut c: TenantConfig =
        serde_yaml::from_str("sources: [{header: X-Scope-OrgID}]\ntrust_client_header: false")
            .expect("yaml");
    assert_eq!(
        prepare(&mut c),
        vec![(
            "trust_client_header".to_string(),
            "false honours a tenant header only for a client that authenticated: add the auth source, or set it to true".to_string()
        )]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_authenticated_identity_names_the_tenant() {
    use crate::extensions::auth::Identity;
    let (mut p, _) = processor(
        "sources: [auth, {header: X-Scope-OrgID}]\ntrust_client_header: false\nidentities: {alice: team-a, agent-7: team-c}\ntokens: {tokB: team-b}\nmissing: reject",
    );
    let mut with = |method: &'static str, subject: &str, md: &[(&str, &str)]| {
        let ctx = Context {
            metadata: Some(Arc::new(
                md.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )),
            auth: Some(Arc::new(Identity {
                method,
                subject: Arc::from(subject),
            })),
            ..Default::default()
        };
        let b = Batch::encoded(
            Signal::Logs,
            Bytes::from(logs(&["x"]).encode_to_vec()),
            0,
            Arc::new(ctx),
        );
        let mut out = Vec::new();
        p.process(b, &mut out);
        out.iter()
            .map(|b| b.context.tenant.as_deref().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(with("basicauth", "alice", &[]), vec!["team-a"]);
    assert_eq!(with("mtls", "agent-7", &[]), vec!["team-c"]);
    // A bearertokenauth identity is its token: the tokens table maps it too.
    assert_eq!(with("bearertokenauth", "tokB", &[]), vec!["team-b"]);
    // An identity with no tenant, and a header claiming one: nothing (missing: reject).
    assert!(with("basicauth", "mallory", &[("x-scope-orgid", "team-a")]).is_empty());
}
