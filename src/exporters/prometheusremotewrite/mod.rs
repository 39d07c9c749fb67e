//! The `prometheusremotewrite` exporter: metrics to Prometheus, Mimir, Cortex, Thanos or
//! VictoriaMetrics over Remote-Write 1.0 (protobuf WriteRequest, snappy block compression,
//! `Content-Encoding: snappy`, `X-Prometheus-Remote-Write-Version: 0.1.0`).
//!
//! Each batch is translated once ([`translate`]) and cut into requests under
//! `max_batch_size_bytes`. 5xx and 429 are retried (honouring `Retry-After`); any other 4xx
//! is permanent: counted, with the backend's answer logged. Delta-temporality points cannot be
//! written to Prometheus: they are dropped, counted in
//! `weir_prometheusremotewrite_dropped_points_total{reason="delta_temporality"}` and logged.
pub mod config;
pub mod names;
pub mod proto;
#[cfg(test)]
mod tests;
pub mod translate;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Method, Request};
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

use crate::config::loader::Body;
use crate::exporters::helper::{BoxFuture, ExportError, Sender, Sent};
use crate::pdata::{Batch, Signal};
use crate::pipeline::registry::{
    AuthSlot, Decode, ExporterParts, ExporterSettings, Factory, Handles, Stability,
};
use crate::telemetry::metrics::{Counter, Registry};
use config::PrwExporterConfig;
use proto::{Label, WriteRequest};
use translate::{translate, Settings};

pub static FACTORY: Factory = Factory {
    type_name: "prometheusremotewrite",
    aliases: &[],
    stability: &[(Handles::Signal(Signal::Metrics), Stability::Beta)],
    description: "Prometheus Remote-Write 1.0 (Prometheus, Mimir, Cortex, Thanos, VictoriaMetrics)",
    decode: Decode::Exporter(decode),
};

fn decode(b: &mut Body<'_>) -> Option<Box<dyn ExporterSettings>> {
    let c = b.decode_checked::<PrwExporterConfig>(|c| {
        c.normalize();
        c.validate()
    })?;
    Some(Box::new(c))
}

impl ExporterSettings for PrwExporterConfig {
    fn build(
        &self,
        id: &str,
        registry: &Arc<crate::telemetry::metrics::Registry>,
    ) -> Result<ExporterParts, String> {
        let _ = (id, registry);
        Ok(ExporterParts {
            sender: PrwSender::new(id, self, registry)?,
            queue: self.queue(),
            retry: self.retry_on_failure.clone(),
            timeout: self.timeout.0,
        })
    }
    fn auth_slot(&mut self) -> Option<AuthSlot<'_>> {
        self.auth.as_mut().map(|auth| AuthSlot {
            key: "auth".into(),
            auth,
        })
    }
}

pub struct PrwSender {
    id: Arc<str>,
    client: crate::exporters::HttpClient,
    url: http::Uri,
    headers: HeaderMap,
    tenant_header: Option<HeaderName>,
    /// The `auth` authenticator's headers, added to every request.
    auth: Option<std::sync::Arc<crate::extensions::auth::ClientAuth>>,
    settings: Settings,
    max_bytes: usize,
    dropped_delta: Counter,
    dropped_invalid: Counter,
}

impl PrwSender {
    pub fn new(
        id: &str,
        cfg: &PrwExporterConfig,
        registry: &Registry,
    ) -> Result<Arc<Self>, String> {
        let client = crate::exporters::http_client(cfg.proxy_url.as_deref(), &cfg.tls)?;
        let url = cfg
            .endpoint
            .parse()
            .map_err(|e| format!("invalid URL {:?}: {e}", cfg.endpoint))?;
        let headers = crate::exporters::header_map(&cfg.headers)?;
        let mut external: Vec<Label> = cfg
            .external_labels
            .iter()
            .map(|(k, v)| Label {
                name: k.clone(),
                value: v.clone(),
            })
            .collect();
        external.sort();
        let dropped = |reason: &str| {
            registry.counter(
                "weir_prometheusremotewrite_dropped_points_total",
                "Data points the remote-write exporter could not represent and dropped.",
                &[("exporter", id), ("reason", reason)],
            )
        };
        let tenant_header = crate::exporters::tenant_header_name(cfg.tenant_header.as_deref())?;
        Ok(Arc::new(PrwSender {
            id: Arc::from(id),
            client,
            url,
            headers,
            tenant_header,
            auth: crate::extensions::auth::ClientAuth::for_ref(&cfg.auth)?,
            settings: Settings {
                namespace: cfg.namespace.clone(),
                external_labels: external,
                resource_to_telemetry: cfg.resource_to_telemetry_conversion.enabled,
                target_info: cfg.target_info.enabled,
                add_suffixes: cfg.add_metric_suffixes,
                send_metadata: cfg.send_metadata,
            },
            max_bytes: cfg.max_batch_size_bytes,
            dropped_delta: dropped("delta_temporality"),
            dropped_invalid: dropped("unrepresentable"),
        }))
    }

    /// The translated batch as encoded WriteRequests, each under `max_bytes` (a single series
    /// larger than that goes alone).
    pub fn requests(&self, req: &ExportMetricsServiceRequest) -> Vec<Vec<u8>> {
        let t = translate(req, &self.settings);
        if t.dropped_delta > 0 {
            self.dropped_delta.add(t.dropped_delta as u64);
            tracing::warn!(
                exporter = %self.id,
                "dropped {} data points with delta temporality: Prometheus remote-write takes cumulative data only (add a deltatocumulative step upstream)",
                t.dropped_delta
            );
        }
        if t.dropped_invalid > 0 {
            self.dropped_invalid.add(t.dropped_invalid as u64);
            tracing::warn!(
                exporter = %self.id,
                "dropped {} data points Prometheus cannot represent: exponential histograms with a scale below -4 (Prometheus' coarsest schema), or metrics whose name has no character a Prometheus name can hold",
                t.dropped_invalid
            );
        }
        split(t.series, t.metadata, self.max_bytes)
    }
}

/// Cuts series into WriteRequests of at most `max` encoded bytes; metadata rides with the
/// first request.
pub fn split(
    series: Vec<proto::TimeSeries>,
    metadata: Vec<proto::MetricMetadata>,
    max: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = WriteRequest {
        timeseries: Vec::new(),
        metadata,
    };
    let mut size = cur.encoded_len();
    for ts in series {
        let len = ts.encoded_len();
        let field = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if !cur.timeseries.is_empty() && size + field > max {
            out.push(std::mem::take(&mut cur).encode_to_vec());
            size = 0;
        }
        size += field;
        cur.timeseries.push(ts);
    }
    if !cur.timeseries.is_empty() || !cur.metadata.is_empty() {
        out.push(cur.encode_to_vec());
    }
    out
}

impl Sender for PrwSender {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            if batch.signal != Signal::Metrics {
                return Err(ExportError::permanent(format!(
                    "prometheusremotewrite exports metrics, not {}",
                    batch.signal
                )));
            }
            let req = batch
                .metrics_request()
                .map_err(|e| ExportError::permanent(format!("cannot decode metrics: {e}")))?;
            for body in self.requests(&req) {
                self.post(body, batch.context.tenant.as_deref(), &batch.context)
                    .await?;
            }
            Ok(Sent::default())
        })
    }
}

impl PrwSender {
    async fn post(
        &self,
        body: Vec<u8>,
        tenant: Option<&str>,
        ctx: &crate::pdata::Context,
    ) -> Result<(), ExportError> {
        let compressed = crate::compression::snappy_block(body)
            .await
            .map_err(ExportError::permanent)?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(
                header::USER_AGENT,
                concat!("weir/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(compressed)))
            .map_err(|e| ExportError::permanent(format!("cannot build request: {e}")))?;
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        if let (Some(h), Some(t)) = (&self.tenant_header, tenant) {
            req.headers_mut()
                .insert(h.clone(), crate::exporters::tenant_value(t)?);
        }
        if let Some(a) = &self.auth {
            a.apply(ctx, req.headers_mut());
        }
        let resp =
            self.client.request(req).await.map_err(|e| {
                ExportError::retryable(format!("request to {} failed: {e}", self.url))
            })?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(
            crate::exporters::http_failure("remote write", &self.url, resp)
                .await
                .0,
        )
    }
}
