//! The `k8s` resolver: the ready endpoints of a Service, read from the Kubernetes API's
//! EndpointSlices (`discovery.k8s.io/v1`) with the pod's service account, as the Collector's
//! resolver does (it watches; weir lists every `POLL`).
//!
//! In a pod: the API server from `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`, the
//! token, CA and namespace from `/var/run/secrets/kubernetes.io/serviceaccount` (or the
//! directory `WEIR_K8S_SERVICEACCOUNT_DIR` names). The service account needs `list` on
//! `endpointslices` in the Service's namespace (deploy/kubernetes/two-tier has the Role).
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::exporters::HttpClient;

/// How often the EndpointSlices are listed.
pub const POLL: Duration = Duration::from_secs(1);

pub struct K8sApi {
    base: String,
    token: Option<String>,
    client: HttpClient,
    /// The Service's namespace and name.
    pub namespace: String,
    pub name: String,
}

impl K8sApi {
    /// `service` is `name` or `name.namespace` (the pod's own namespace by default).
    pub fn in_cluster(service: &str) -> Result<K8sApi, String> {
        let dir = std::env::var_os("WEIR_K8S_SERVICEACCOUNT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount"));
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            "the k8s resolver runs in a pod: KUBERNETES_SERVICE_HOST is not set".to_string()
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let token = std::fs::read_to_string(dir.join("token"))
            .ok()
            .map(|t| t.trim().to_string());
        let own_ns = std::fs::read_to_string(dir.join("namespace"))
            .map(|n| n.trim().to_string())
            .unwrap_or_else(|_| "default".into());
        let (name, namespace) = match service.split_once('.') {
            Some((n, ns)) => (n.to_string(), ns.to_string()),
            None => (service.to_string(), own_ns),
        };
        let mut tls = crate::exporters::TlsClientConfig::default();
        let ca = dir.join("ca.crt");
        if ca.exists() {
            tls.common.ca_file = ca.to_string_lossy().into_owned();
        }
        Ok(K8sApi {
            base: format!("https://{host}:{port}"),
            token,
            client: crate::exporters::http_client(Some(""), &tls)?,
            namespace,
            name,
        })
    }

    /// The ready endpoints' addresses (or hostnames), sorted.
    pub async fn ready_addresses(
        &self,
        hostnames: bool,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let url = format!(
            "{}/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{}",
            self.base, self.namespace, self.name
        );
        let mut req = http::Request::get(&url).header("accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("k8s: {e}"))?;
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| format!("k8s: no answer from {} within {timeout:?}", self.base))?
            .map_err(|e| format!("k8s: {}: {e}", self.base))?;
        let status = resp.status();
        let body = tokio::time::timeout(
            timeout,
            http_body_util::Limited::new(resp.into_body(), 16 << 20).collect(),
        )
        .await
        .map_err(|_| "k8s: the answer did not arrive in time".to_string())?
        .map_err(|e| format!("k8s: {e}"))?
        .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "k8s: listing EndpointSlices of {}/{}: {status}: {}",
                self.namespace,
                self.name,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        parse_endpoint_slices(&body, hostnames)
    }
}

/// The ready endpoints of an EndpointSliceList: `addresses[0]` of each endpoint (or its
/// `hostname`), skipping those whose `conditions.ready` is false.
pub fn parse_endpoint_slices(body: &[u8], hostnames: bool) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("k8s: not an EndpointSliceList: {e}"))?;
    let mut out = Vec::new();
    for slice in v["items"].as_array().into_iter().flatten() {
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            if ep["conditions"]["ready"].as_bool() == Some(false) {
                continue;
            }
            let addr = if hostnames {
                ep["hostname"].as_str()
            } else {
                ep["addresses"][0].as_str()
            };
            if let Some(a) = addr.filter(|a| !a.is_empty()) {
                out.push(a.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_endpoints_of_every_slice() {
        let body = br#"{"kind":"EndpointSliceList","items":[
          {"endpoints":[
            {"addresses":["10.0.0.2"],"hostname":"weir-tier2-0","conditions":{"ready":true}},
            {"addresses":["10.0.0.3"],"hostname":"weir-tier2-1","conditions":{"ready":false}}]},
          {"endpoints":[
            {"addresses":["10.0.0.1"],"hostname":"weir-tier2-2"},
            {"addresses":["10.0.0.2"],"conditions":{"ready":true}}]}]}"#;
        assert_eq!(
            parse_endpoint_slices(body, false),
            Ok(vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()])
        );
        assert_eq!(
            parse_endpoint_slices(body, true),
            Ok(vec!["weir-tier2-0".to_string(), "weir-tier2-2".to_string()])
        );
        assert!(parse_endpoint_slices(b"not json", false).is_err());
        assert_eq!(parse_endpoint_slices(b"{}", false), Ok(Vec::new()));
    }
}
