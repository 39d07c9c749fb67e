//! Connectors: components that are an exporter of one pipeline and a receiver of others.
pub mod routing;
pub mod servicegraph;
pub mod spanmetrics;
pub mod sum;

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

use crate::pdata::{Batch, Context, Payload, Signal};
use crate::pipeline::registry::Targets;

/// One request of derived metrics per tenant: (tenant, request, data points).
pub type TenantRequests = Vec<(Option<Arc<str>>, ExportMetricsServiceRequest, usize)>;

/// Hands a connector's derived metrics to every pipeline it feeds, each tenant's in a batch
/// carrying that tenant, waiting for room (backpressure).
pub async fn emit_metrics(id: &Arc<str>, targets: &Mutex<Targets>, requests: TenantRequests) {
    if requests.is_empty() {
        return;
    }
    let targets: Vec<(String, tokio::sync::mpsc::Sender<Batch>)> = targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (tenant, req, points) in requests {
        let batch = Batch {
            signal: Signal::Metrics,
            items: points,
            payload: Payload::Metrics(req),
            context: Arc::new(Context {
                receiver: id.clone(),
                tenant,
                ..Default::default()
            }),
            held: None,
            compressed: None,
        };
        for (p, tx) in &targets {
            if tx.send(batch.clone()).await.is_err() {
                tracing::error!(connector = %id, "pipeline {p} has stopped; dropped {points} data points");
            }
        }
    }
}
