//! A base-2 exponential histogram of durations, as OpenTelemetry defines it: at scale `s`,
//! bucket `i` holds the values in `(2^(i/2^s), 2^((i+1)/2^s)]`. It starts at the finest scale
//! and lowers the scale (merging neighbour buckets in pairs) whenever the values seen would
//! need more than `max_size` buckets, so it never holds more than `max_size` counts.
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{Exemplar, ExponentialHistogramDataPoint};

/// The finest scale the SDKs use.
const MAX_SCALE: i32 = 20;
/// Below this the whole f64 range fits in a handful of buckets.
const MIN_SCALE: i32 = -10;

#[derive(Debug, Clone)]
pub struct ExpoHistogram {
    max_size: usize,
    scale: i32,
    /// Bucket index of `counts[0]`.
    offset: i32,
    counts: Vec<u64>,
    zero_count: u64,
    count: u64,
    min: f64,
    max: f64,
}

/// The bucket holding `v` (> 0) at `scale`.
pub fn index(v: f64, scale: i32) -> i32 {
    let l = v.log2() * f64::from(scale).exp2();
    (l.ceil() as i64 - 1).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

impl ExpoHistogram {
    pub fn new(max_size: usize) -> ExpoHistogram {
        ExpoHistogram {
            max_size: max_size.max(2),
            scale: MAX_SCALE,
            offset: 0,
            counts: Vec::new(),
            zero_count: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    #[cfg(test)]
    pub fn scale(&self) -> i32 {
        self.scale
    }

    pub fn record(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if v <= 0.0 {
            self.zero_count += 1;
            return;
        }
        let mut idx = index(v, self.scale);
        if self.counts.is_empty() {
            self.offset = idx;
            self.counts.push(1);
            return;
        }
        let hi_now = self.offset + self.counts.len() as i32 - 1;
        let (lo, hi) = (self.offset.min(idx), hi_now.max(idx));
        // How many halvings make the range fit.
        let mut shift = 0;
        while (i64::from(hi >> shift) - i64::from(lo >> shift) + 1) as usize > self.max_size
            && self.scale - shift > MIN_SCALE
        {
            shift += 1;
        }
        if shift > 0 {
            self.downscale(shift);
            idx = index(v, self.scale);
        }
        if idx < self.offset {
            let grow = (self.offset - idx) as usize;
            let mut c = vec![0; grow];
            c.extend_from_slice(&self.counts);
            self.counts = c;
            self.offset = idx;
        }
        let at = (idx - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += 1;
    }

    fn downscale(&mut self, shift: i32) {
        let new_offset = self.offset >> shift;
        let mut merged: Vec<u64> = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            let at = (((self.offset + i as i32) >> shift) - new_offset) as usize;
            if at >= merged.len() {
                merged.resize(at + 1, 0);
            }
            merged[at] += c;
        }
        self.counts = merged;
        self.offset = new_offset;
        self.scale -= shift;
    }

    #[cfg(test)]
    pub fn buckets(&self) -> usize {
        self.counts.len()
    }

    pub fn point(
        &self,
        attributes: Vec<KeyValue>,
        start: u64,
        now: u64,
        sum: f64,
        exemplars: Vec<Exemplar>,
    ) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: now,
            count: self.count,
            sum: Some(sum),
            scale: self.scale,
            zero_count: self.zero_count,
            positive: Some(Buckets {
                offset: self.offset,
                bucket_counts: self.counts.clone(),
            }),
            negative: Some(Buckets::default()),
            flags: 0,
            exemplars,
            min: (self.count > 0).then_some(self.min),
            max: (self.count > 0).then_some(self.max),
            zero_threshold: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds of bucket `i` at `scale`.
    fn bounds(i: i32, scale: i32) -> (f64, f64) {
        let base = 2f64.powf(2f64.powi(-scale));
        (base.powi(i), base.powi(i + 1))
    }

    #[test]
    fn every_value_lands_in_the_bucket_whose_bounds_hold_it() {
        let mut h = ExpoHistogram::new(160);
        let values = [0.5, 1.0, 2.0, 3.7, 10.0, 100.0, 1234.5, 15_000.0];
        for v in values {
            h.record(v);
        }
        assert!(h.buckets() <= 160);
        for v in values {
            let i = index(v, h.scale());
            let (lo, hi) = bounds(i, h.scale());
            assert!(
                lo < v * (1.0 + 1e-9) && v <= hi * (1.0 + 1e-9),
                "{v} in ({lo}, {hi}]"
            );
        }
        let p = h.point(Vec::new(), 0, 1, 0.0, Vec::new());
        let total: u64 = p
            .positive
            .as_ref()
            .map(|b| b.bucket_counts.iter().sum())
            .unwrap_or(0);
        assert_eq!(total, values.len() as u64);
        assert_eq!(p.count, values.len() as u64);
        assert_eq!(p.min, Some(0.5));
        assert_eq!(p.max, Some(15_000.0));
    }

    #[test]
    fn a_wide_range_lowers_the_scale_to_stay_within_max_size() {
        let mut h = ExpoHistogram::new(8);
        for k in 0..40 {
            h.record(2f64.powi(k));
        }
        assert!(h.buckets() <= 8, "{} buckets", h.buckets());
        assert!(h.scale() < 0, "scale {}", h.scale());
        assert_eq!(h.count, 40);
        let p = h.point(Vec::new(), 0, 1, 0.0, Vec::new());
        let total: u64 = p
            .positive
            .map(|b| b.bucket_counts.iter().sum())
            .unwrap_or(0);
        assert_eq!(total, 40);
    }

    #[test]
    fn zero_durations_count_as_zeros() {
        let mut h = ExpoHistogram::new(160);
        h.record(0.0);
        h.record(0.0);
        h.record(f64::NAN);
        assert_eq!(h.zero_count, 2);
        assert_eq!(h.count, 2);
        assert_eq!(h.buckets(), 0);
    }
}
