//! Acknowledgements of durable data: what ties a batch to the write-ahead-log records it came
//! from, so a record is released only once everything made from it is delivered or given up.
//!
//! An [`Ack`] travels in a batch's [`Context`](super::Context). Stages that merge batches
//! (batch, tail sampling) merge their acks; stages that split or fan out share them. When the
//! last batch holding a record's ack is dropped, the record is done and the log may forget it.
//! A batch dropped because weir is stopping before it could be delivered is *abandoned*
//! instead: its records stay in the log and are replayed at the next start.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Told when a record is done.
pub trait AckSink: Send + Sync {
    fn done(&self, seq: u64, items: usize, bytes: usize);
}

/// One record of a log: done when dropped, unless abandoned.
pub struct Leaf {
    pub seq: u64,
    pub items: usize,
    pub bytes: usize,
    abandoned: AtomicBool,
    sink: Arc<dyn AckSink>,
}

impl Drop for Leaf {
    fn drop(&mut self) {
        if !self.abandoned.load(Ordering::Relaxed) {
            self.sink.done(self.seq, self.items, self.bytes);
        }
    }
}

/// The records a batch holds.
pub enum Ack {
    Leaf(Leaf),
    /// The acks of the batches merged into one.
    Many(Vec<Arc<Ack>>),
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ack::Leaf(l) => write!(f, "Ack({})", l.seq),
            Ack::Many(v) => f.debug_list().entries(v.iter()).finish(),
        }
    }
}

impl Ack {
    pub fn leaf(seq: u64, items: usize, bytes: usize, sink: Arc<dyn AckSink>) -> Arc<Ack> {
        Arc::new(Ack::Leaf(Leaf {
            seq,
            items,
            bytes,
            abandoned: AtomicBool::new(false),
            sink,
        }))
    }

    /// One ack for the union of `acks` (each counted once), or `None` when there are none.
    pub fn merge<'a>(acks: impl IntoIterator<Item = &'a Arc<Ack>>) -> Option<Arc<Ack>> {
        let mut all: Vec<Arc<Ack>> = Vec::new();
        let mut seen: std::collections::HashSet<*const Ack> = std::collections::HashSet::new();
        for a in acks {
            // Runs of one request's pieces are the common case.
            if all.last().is_some_and(|b| Arc::ptr_eq(a, b)) {
                continue;
            }
            if seen.insert(Arc::as_ptr(a)) {
                all.push(Arc::clone(a));
            }
        }
        match all.len() {
            0 => None,
            1 => all.pop(),
            _ => Some(Arc::new(Ack::Many(all))),
        }
    }

    /// Keeps every record under this ack in its log: the data was not delivered and must be
    /// replayed at the next start.
    pub fn abandon(&self) {
        match self {
            Ack::Leaf(l) => l.abandoned.store(true, Ordering::Relaxed),
            Ack::Many(v) => v.iter().for_each(|a| a.abandon()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Done(Mutex<Vec<u64>>);
    impl AckSink for Done {
        fn done(&self, seq: u64, _: usize, _: usize) {
            self.0.lock().unwrap().push(seq);
        }
    }

    #[test]
    fn a_record_is_done_when_the_last_batch_holding_it_goes() {
        let sink = Arc::new(Done::default());
        let a = Ack::leaf(1, 1, 10, sink.clone());
        let b = Ack::leaf(2, 1, 10, sink.clone());
        let merged = Ack::merge([&a, &b, &a]).unwrap();
        let Ack::Many(parts) = &*merged else {
            panic!("two records merge into Many")
        };
        assert_eq!(parts.len(), 2, "each record once");
        let shared = Arc::clone(&a);
        drop(a);
        drop(b);
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "the merged batch still holds both"
        );
        drop(merged);
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![2],
            "record 1 is still held by `shared`"
        );
        drop(shared);
        assert_eq!(*sink.0.lock().unwrap(), vec![2, 1]);
    }

    #[test]
    fn an_abandoned_record_is_never_done() {
        let sink = Arc::new(Done::default());
        let a = Ack::leaf(7, 1, 10, sink.clone());
        let m = Ack::merge([&a, &Ack::leaf(8, 1, 1, sink.clone())]).unwrap();
        m.abandon();
        drop(a);
        drop(m);
        assert!(sink.0.lock().unwrap().is_empty());
        assert!(Ack::merge(std::iter::empty()).is_none());
    }
}
