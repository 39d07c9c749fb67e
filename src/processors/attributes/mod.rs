//! TEMPORARY STUB (replaced by the attrs-proc branch).
pub mod config {
    #[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
    pub struct AttributesConfig {
        pub actions: Vec<serde_yaml::Value>,
    }
    #[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
    pub struct ResourceConfig {
        pub attributes: Vec<serde_yaml::Value>,
    }
}
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}
pub struct AttributesProcessor;
impl AttributesProcessor {
    pub fn new(_c: &config::AttributesConfig) -> Result<Self, ConfigProblem> {
        Ok(Self)
    }
    pub fn apply_traces(
        &self,
        _r: &mut ExportTraceServiceRequest,
        _c: &dyn Fn(&str) -> Option<String>,
    ) {
    }
    pub fn apply_metrics(
        &self,
        _r: &mut ExportMetricsServiceRequest,
        _c: &dyn Fn(&str) -> Option<String>,
    ) {
    }
    pub fn apply_logs(
        &self,
        _r: &mut ExportLogsServiceRequest,
        _c: &dyn Fn(&str) -> Option<String>,
    ) {
    }
}
pub struct ResourceProcessor;
impl ResourceProcessor {
    pub fn new(_c: &config::ResourceConfig) -> Result<Self, ConfigProblem> {
        Ok(Self)
    }
    pub fn apply_traces(
        &self,
        _r: &mut ExportTraceServiceRequest,
        _c: &dyn Fn(&str) -> Option<String>,
    ) {
    }
    pub fn apply_metrics(
        &self,
        _r: &mut ExportMetricsServiceRequest,
        _c: &dyn Fn(&str) -> Option<String>,
    ) {
    }
    pub fn apply_logs(
        &self,
        _r: &mut ExportLogsServiceRequest,
        _c: &dyn Fn(&str) -> Option<String>,
    ) {
    }
}
