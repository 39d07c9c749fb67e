use super::*;
use crate::pdata::Context;
use bytes::Bytes;
use std::sync::Mutex as StdMutex;

/// Fails with the queued errors first, then succeeds.
struct Scripted {
    errors: StdMutex<Vec<ExportError>>,
    calls: AtomicUsize,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Sender for Scripted {
    fn send<'a>(&'a self, _batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            if let Some(g) = &self.gate {
                let _p = g.acquire().await;
            }
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.errors.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(Sent::default()),
            }
        })
    }
}

fn batch(items: usize) -> Batch {
    Batch::encoded(
        Signal::Traces,
        Bytes::new(),
        items,
        Arc::new(Context::default()),
    )
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial_interval: Duration::from_millis(5).into(),
        max_interval: Duration::from_millis(20).into(),
        ..RetryConfig::default()
    }
}

fn sent(r: &Registry, id: &str) -> f64 {
    r.value("otelcol_exporter_sent_spans_total", &[("exporter", id)])
        .unwrap_or(0.0)
}
fn failed(r: &Registry, id: &str) -> f64 {
    r.value(
        "otelcol_exporter_send_failed_spans_total",
        &[("exporter", id)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn retries_retryable_then_counts_sent() {
    let reg = Registry::new();
    let s = Arc::new(Scripted {
        errors: StdMutex::new(vec![
            ExportError::retryable("503"),
            ExportError::Retryable {
                message: "throttled".into(),
                retry_after: Some(Duration::from_millis(10)),
            },
        ]),
        calls: AtomicUsize::new(0),
        gate: None,
    });
    let (h, t) = start(
        "x",
        s.clone(),
        &QueueConfig::default(),
        &fast_retry(),
        Duration::from_secs(5),
        &reg,
    );
    h.push(batch(7)).await;
    drop(h);
    t.drain(Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(s.calls.load(Ordering::SeqCst), 3);
    assert_eq!(sent(&reg, "x"), 7.0);
    assert_eq!(failed(&reg, "x"), 0.0);
}

#[tokio::test]
async fn permanent_errors_are_not_retried_and_are_counted() {
    let reg = Registry::new();
    let s = Arc::new(Scripted {
        errors: StdMutex::new(vec![ExportError::permanent("HTTP 400: bad")]),
        calls: AtomicUsize::new(0),
        gate: None,
    });
    let (h, t) = start(
        "p",
        s.clone(),
        &QueueConfig::default(),
        &fast_retry(),
        Duration::from_secs(5),
        &reg,
    );
    h.push(batch(3)).await;
    drop(h);
    t.drain(Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    assert_eq!(failed(&reg, "p"), 3.0);
    assert_eq!(sent(&reg, "p"), 0.0);
}

#[tokio::test]
async fn full_queue_without_blocking_drops_and_counts() {
    let reg = Registry::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let s = Arc::new(Scripted {
        errors: StdMutex::new(vec![]),
        calls: AtomicUsize::new(0),
        gate: Some(gate.clone()),
    });
    let q = QueueConfig {
        num_consumers: 1,
        queue_size: 2,
        block_on_overflow: false,
        ..QueueConfig::default()
    };
    let (h, t) = start(
        "d",
        s.clone(),
        &q,
        &fast_retry(),
        Duration::from_secs(5),
        &reg,
    );
    // One in the worker's hands, two queued, the rest refused.
    for _ in 0..6 {
        h.push(batch(1)).await;
        tokio::task::yield_now().await;
    }
    let dropped = reg
        .value(
            "otelcol_exporter_enqueue_failed_spans_total",
            &[("exporter", "d")],
        )
        .unwrap();
    assert!((3.0..=4.0).contains(&dropped), "dropped {dropped}");
    gate.add_permits(100);
    drop(h);
    t.drain(Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(sent(&reg, "d") + dropped, 6.0);
}

#[tokio::test]
async fn shutdown_deadline_counts_what_was_not_delivered() {
    let reg = Registry::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let s = Arc::new(Scripted {
        errors: StdMutex::new(vec![]),
        calls: AtomicUsize::new(0),
        gate: Some(gate),
    });
    let q = QueueConfig {
        num_consumers: 1,
        ..QueueConfig::default()
    };
    let (h, t) = start("s", s, &q, &fast_retry(), Duration::from_secs(60), &reg);
    for _ in 0..5 {
        h.push(batch(2)).await;
    }
    drop(h);
    t.drain(Instant::now() + Duration::from_millis(100)).await;
    // The batch in the worker's hands and the four still queued are all counted.
    assert_eq!(failed(&reg, "s"), 10.0);
}

#[tokio::test]
async fn the_sizer_decides_what_queue_size_counts() {
    for (sizer, size, want_queued) in [
        // 30 items of room: three batches of 10 wait, the rest are refused.
        (config::Sizer::Items, 30, 30.0),
        // 3 requests of room.
        (config::Sizer::Requests, 3, 3.0),
        // Bytes of the encoded request: each batch below is 100 bytes.
        (config::Sizer::Bytes, 300, 300.0),
    ] {
        let reg = Registry::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let s = Arc::new(Scripted {
            errors: StdMutex::new(vec![]),
            calls: AtomicUsize::new(0),
            gate: Some(gate.clone()),
        });
        let q = QueueConfig {
            num_consumers: 1,
            queue_size: size,
            block_on_overflow: false,
            sizer,
            ..QueueConfig::default()
        };
        let (h, t) = start(
            "z",
            s.clone(),
            &q,
            &fast_retry(),
            Duration::from_secs(5),
            &reg,
        );
        let b = || {
            Batch::encoded(
                Signal::Traces,
                Bytes::from(vec![0u8; 100]),
                10,
                Arc::new(Context::default()),
            )
        };
        // The first is taken by the worker (and blocks there); then the queue fills.
        h.push(b()).await;
        while h.queued.load(Ordering::Relaxed) != 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            h.push(b()).await;
        }
        let labels = [("exporter", "z"), ("sizer", sizer.as_str())];
        assert_eq!(
            reg.value("otelcol_exporter_queue_size", &labels),
            Some(want_queued),
            "{sizer:?}"
        );
        assert_eq!(
            reg.value("otelcol_exporter_queue_capacity", &labels),
            Some(size as f64)
        );
        let dropped = reg
            .value(
                "otelcol_exporter_enqueue_failed_spans_total",
                &[("exporter", "z")],
            )
            .unwrap_or(0.0);
        assert_eq!(dropped, 70.0, "{sizer:?}: 11 pushed, 1 sending, 3 queued");
        gate.add_permits(100);
        drop(h);
        t.drain(Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(sent(&reg, "z"), 40.0);
    }
}

/// Records the item count of every batch it is sent.
struct Recording(StdMutex<Vec<usize>>);

impl Sender for Recording {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Sent, ExportError>> {
        Box::pin(async move {
            self.0.lock().unwrap().push(batch.items);
            Ok(Sent::default())
        })
    }
}

#[tokio::test]
async fn sending_queue_batch_merges_requests_before_they_are_queued() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let req = |n: usize| {
        let r = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Batch::encoded(
            Signal::Traces,
            Bytes::from(r.encode_to_vec()),
            n,
            Arc::new(Context::default()),
        )
    };
    let reg = Registry::new();
    let rec = Arc::new(Recording(StdMutex::new(Vec::new())));
    let q: QueueConfig = serde_yaml::from_str(
        "num_consumers: 1\nbatch: {flush_timeout: 50ms, min_size: 10, max_size: 12}",
    )
    .expect("yaml");
    assert_eq!(q.validate(), Ok(()));
    let (h, t) = start(
        "b",
        rec.clone(),
        &q,
        &fast_retry(),
        Duration::from_secs(5),
        &reg,
    );
    // 3 + 3 + 3 + 3 = 12 items: one batch of 12 (min 10 reached at 12 ≤ max 12).
    for _ in 0..4 {
        h.push(req(3)).await;
    }
    // 25 items in one request: split into 12 + 12, the last one waits for flush_timeout.
    h.push(req(25)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rec.0.lock().unwrap().iter().sum::<usize>() < 37 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", rec.0.lock());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(h);
    t.drain(Instant::now() + Duration::from_secs(5)).await;
    let got = rec.0.lock().unwrap().clone();
    assert_eq!(got.iter().sum::<usize>(), 37, "{got:?}");
    assert!(got.iter().all(|&n| n <= 12), "{got:?}");
    assert!(got.len() <= 4, "merged, not sent one by one: {got:?}");
    // The Collector's rule: min_size may not exceed max_size. The batch counts what the
    // queue's sizer counts unless it names its own.
    let bad: QueueConfig =
        serde_yaml::from_str("batch: {min_size: 10, max_size: 5}").expect("yaml");
    assert_eq!(bad.validate().map_err(|e| e.0), Err("batch.min_size"));
    let bytes: QueueConfig = serde_yaml::from_str("sizer: bytes\nbatch: {}").expect("yaml");
    assert_eq!(bytes.validate(), Ok(()));
    assert!(bytes.batch_in_bytes());
    let own: QueueConfig =
        serde_yaml::from_str("sizer: bytes\nbatch: {sizer: items}").expect("yaml");
    assert!(!own.batch_in_bytes());
    let own: QueueConfig = serde_yaml::from_str("batch: {sizer: bytes}").expect("yaml");
    assert!(own.batch_in_bytes());
}
