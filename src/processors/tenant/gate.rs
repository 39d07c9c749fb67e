//! The receiver-side half of the `tenant` processor: what can be decided from the request
//! alone (bearer token, tenant header, static tenant) is checked before the request is
//! accepted, so the client hears it: an unknown token or no tenant with `missing: reject` →
//! 401 / UNAUTHENTICATED; a tenant header that is not the token's tenant (with
//! `trust_client_header: false`) → 401 / PERMISSION_DENIED; a tenant over its rate → 429 /
//! RESOURCE_EXHAUSTED with Retry-After, for that tenant only.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{Limits, Missing, SourceConfig, TenantConfig};
use crate::pdata::{Context, Signal};
use crate::pipeline::inbox::{Gate, Refused};
use crate::telemetry::metrics::{Counter, Registry};

enum Src {
    Auth,
    Header(String),
    Static(Arc<str>),
    /// A resource attribute: only the data can tell.
    Data,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes `n` at `rate`/s (capacity: one second's worth). A request bigger than the
    /// capacity passes when the bucket is full and leaves it in debt.
    fn take(&mut self, n: f64, rate: f64) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
        if self.tokens >= n.min(rate) {
            self.tokens -= n;
            Ok(())
        } else {
            let wait = (n.min(rate) - self.tokens) / rate;
            Err(Duration::from_secs_f64(wait.max(0.0)).max(Duration::from_secs(1)))
        }
    }
}

pub struct TenantGate {
    sources: Vec<Src>,
    has_auth: bool,
    reject: bool,
    default_tenant: Arc<str>,
    trust_header: bool,
    tokens: HashMap<String, Arc<str>>,
    identities: HashMap<String, Arc<str>>,
    limits: Option<(Limits, HashMap<String, Limits>)>,
    buckets: Mutex<HashMap<(Arc<str>, u8), Bucket>>,
    refused: [Counter; 3],
}

impl TenantGate {
    pub fn new(id: &str, cfg: &TenantConfig, registry: &Registry) -> TenantGate {
        let sources: Vec<Src> = cfg
            .sources
            .iter()
            .filter_map(|s| match s {
                SourceConfig::Named(n) if n == "auth" => Some(Src::Auth),
                SourceConfig::Named(_) => None,
                SourceConfig::Header { header } => Some(Src::Header(header.clone())),
                SourceConfig::Static { value } => Some(Src::Static(Arc::from(value.as_str()))),
                SourceConfig::Attribute { .. } => Some(Src::Data),
            })
            .collect();
        let refused = |reason: &str| {
            registry.counter(
                "weir_tenant_refused_requests_total",
                "Requests refused before acceptance by a tenant processor's checks.",
                &[("processor", id), ("reason", reason)],
            )
        };
        TenantGate {
            has_auth: sources.iter().any(|s| matches!(s, Src::Auth)),
            sources,
            reject: cfg.missing == Missing::Reject,
            default_tenant: Arc::from(cfg.default_tenant.as_str()),
            trust_header: cfg.trust_client_header,
            tokens: cfg
                .tokens
                .iter()
                .map(|(k, v)| (k.clone(), Arc::from(v.as_str())))
                .collect(),
            identities: cfg
                .identities
                .iter()
                .map(|(k, v)| (k.clone(), Arc::from(v.as_str())))
                .collect(),
            limits: cfg.rate_limits.as_ref().map(|r| {
                (
                    r.default.clone(),
                    r.overrides
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            }),
            buckets: Mutex::new(HashMap::new()),
            refused: [
                refused("unauthenticated"),
                refused("permission_denied"),
                refused("rate_limited"),
            ],
        }
    }

    fn limit(&self, tenant: &Arc<str>, kind: u8, n: f64, rate: Option<u64>) -> Result<(), Refused> {
        let Some(rate) = rate.filter(|r| *r > 0) else {
            return Ok(());
        };
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = b.entry((tenant.clone(), kind)).or_insert(Bucket {
            tokens: rate as f64,
            last: Instant::now(),
        });
        bucket.take(n, rate as f64).map_err(|wait| {
            self.refused[2].inc();
            let what = match kind {
                0 => "spans",
                1 => "data points",
                2 => "log records",
                _ => "bytes",
            };
            Refused::RateLimited {
                message: format!(
                    "tenant {tenant:?} is over its rate of {rate} {what} per second; retry later"
                ),
                retry_after: wait,
            }
        })
    }
}

impl Gate for TenantGate {
    fn check(
        &self,
        ctx: &Context,
        signal: Signal,
        items: usize,
        bytes: usize,
    ) -> Result<(), Refused> {
        let auth = super::authenticated(ctx, &self.tokens, &self.identities);
        if self.has_auth && auth.is_none() {
            let why = match super::credential(ctx) {
                super::Credential::Absent => None,
                super::Credential::Empty => Some("empty bearer token"),
                super::Credential::Bearer(_) => Some("unknown bearer token"),
            };
            if let Some(why) = why {
                self.refused[0].inc();
                return Err(Refused::Unauthenticated(why.into()));
            }
        }
        // Untrusted claims (a header, a resource attribute the client wrote) count only for a
        // client that authenticated.
        let claims_count = self.trust_header || auth.is_some();
        if !self.trust_header {
            if let Some(a) = &auth {
                for s in &self.sources {
                    if let Src::Header(h) = s {
                        if let Some(v) = ctx.metadata_value(h) {
                            if v != &**a {
                                self.refused[1].inc();
                                return Err(Refused::PermissionDenied(format!(
                                    "{h} {v:?} is not the tenant of this client's token"
                                )));
                            }
                        }
                    }
                }
            }
        }
        let mut tenant: Option<Arc<str>> = None;
        for s in &self.sources {
            let found = match s {
                Src::Auth => auth.clone(),
                Src::Header(_) | Src::Data if !claims_count => None,
                Src::Header(h) => ctx
                    .metadata_value(h)
                    .filter(|v| !v.is_empty())
                    .map(Arc::from),
                Src::Static(v) => Some(v.clone()),
                // Only the data can tell from here on: the processor decides.
                Src::Data => return Ok(()),
            };
            if found.is_some() {
                tenant = found;
                break;
            }
        }
        let tenant = match tenant {
            Some(t) => t,
            None if self.reject => {
                self.refused[0].inc();
                return Err(Refused::Unauthenticated(if claims_count {
                    "no tenant: send a bearer token or a tenant header".into()
                } else {
                    "no tenant: send a bearer token (tenant headers count only with one)".into()
                }));
            }
            None => self.default_tenant.clone(),
        };
        let Some((default, overrides)) = &self.limits else {
            return Ok(());
        };
        let l = overrides.get(&*tenant).unwrap_or(default);
        let (kind, rate) = match signal {
            Signal::Traces => (0, l.spans_per_second),
            Signal::Metrics => (1, l.data_points_per_second),
            Signal::Logs => (2, l.log_records_per_second),
        };
        self.limit(&tenant, kind, items as f64, rate)?;
        self.limit(&tenant, 3, bytes as f64, l.bytes_per_second)
    }
}
