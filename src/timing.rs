//! How long some repeated work took (hashes, commits), as a histogram that the work's own layer
//! records into without knowing who reads it: the metrics register the same histogram.

use std::time::Duration;

/// Now, in nanoseconds since the Unix epoch: how every stored and compared instant is kept.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        })
}

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Debug, Clone)]
pub struct Timings(Histogram);

impl Timings {
    /// Buckets whose upper bounds start at `first` and double, `count` of them.
    pub fn new(first: Duration, count: u16) -> Self {
        Self(Histogram::new(exponential_buckets(
            first.as_secs_f64(),
            2.0,
            count,
        )))
    }

    pub fn record(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }

    /// The histogram itself, to register for a scrape.
    pub fn histogram(&self) -> Histogram {
        self.0.clone()
    }
}
