//! Caps on long-lived streams (WatchUsers, SyncUsers, BatchCreateUsers, health Watch): so
//! many per caller (per client address when anonymous), and so many server-wide. A stream
//! holds its place until it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServiceError;
use crate::rate::CallerKey;

/// What a stream is counted by: the stream caps, and the rate limit its messages count
/// against (an anonymous caller by the address the outermost layer resolved).
#[derive(Clone)]
pub struct StreamControls {
    pub limits: Arc<StreamLimits>,
    pub rate: crate::rate::RateLimiter,
    /// How long a watch that asked for progress notices may be quiet.
    pub watch_progress: std::time::Duration,
}

impl StreamControls {
    /// The key the caps and the rate limit count `caller` under.
    pub fn key(
        &self,
        caller: &crate::caller::Caller,
        extensions: &http::Extensions,
    ) -> Option<CallerKey> {
        CallerKey::of(caller, extensions)
    }

    /// A place for one more stream of the request's caller.
    pub fn enter<T>(
        &self,
        caller: &crate::caller::Caller,
        request: &tonic::Request<T>,
        kind: StreamKind,
    ) -> Result<(StreamPlace, Option<CallerKey>), ServiceError> {
        let key = self.key(caller, request.extensions());
        Ok((self.limits.enter(key.clone(), kind)?, key))
    }
}

/// Which call a stream belongs to, for the count of each kind open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Watch,
    Sync,
    Batch,
    HealthWatch,
    Export,
}

impl StreamKind {
    pub const ALL: [StreamKind; 5] = [
        StreamKind::Watch,
        StreamKind::Sync,
        StreamKind::Batch,
        StreamKind::HealthWatch,
        StreamKind::Export,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Watch => "watch",
            StreamKind::Sync => "sync",
            StreamKind::Batch => "batch",
            StreamKind::HealthWatch => "health_watch",
            StreamKind::Export => "export",
        }
    }
}

pub struct StreamLimits {
    per_caller: usize,
    /// Open streams by caller; callers without a key (anonymous, address unknown) share one.
    open: Mutex<HashMap<Option<CallerKey>, usize>>,
    server_wide: Arc<Semaphore>,
    server_wide_limit: usize,
    /// Streams open now, by `StreamKind`.
    by_kind: [AtomicUsize; StreamKind::ALL.len()],
}

/// A stream's place; given back when dropped.
pub struct StreamPlace {
    limits: Arc<StreamLimits>,
    key: Option<CallerKey>,
    kind: StreamKind,
    _server_wide: OwnedSemaphorePermit,
}

impl StreamLimits {
    pub fn new(per_caller: usize, server_wide: usize) -> Self {
        Self {
            per_caller,
            open: Mutex::new(HashMap::new()),
            server_wide: Arc::new(Semaphore::new(server_wide)),
            server_wide_limit: server_wide,
            by_kind: Default::default(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<Option<CallerKey>, usize>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Streams of `kind` open now.
    pub fn open_streams(&self, kind: StreamKind) -> usize {
        self.by_kind[kind as usize].load(Ordering::Relaxed)
    }

    /// A place for one more stream of `key`, or RESOURCE_EXHAUSTED naming the limit that is
    /// full.
    pub fn enter(
        self: &Arc<Self>,
        key: Option<CallerKey>,
        kind: StreamKind,
    ) -> Result<StreamPlace, ServiceError> {
        let full =
            |what: String| ServiceError::ResourceExhausted(format!("{what}; close one first"));
        let server_wide = self.server_wide.clone().try_acquire_owned().map_err(|_| {
            full(format!(
                "the server has its limit of {} open",
                crate::text::count(self.server_wide_limit as u64, "stream", "streams")
            ))
        })?;
        let mut open = self.open();
        let count = open.entry(key.clone()).or_default();
        if *count >= self.per_caller {
            return Err(full(format!(
                "this caller has its limit of {} open",
                crate::text::count(self.per_caller as u64, "stream", "streams")
            )));
        }
        *count += 1;
        self.by_kind[kind as usize].fetch_add(1, Ordering::Relaxed);
        Ok(StreamPlace {
            limits: self.clone(),
            key,
            kind,
            _server_wide: server_wide,
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        self.limits.by_kind[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
        let mut open = self.limits.open();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> Option<CallerKey> {
        Some(CallerKey::Service(name.into()))
    }

    fn address(last: u8) -> Option<CallerKey> {
        Some(CallerKey::Address([10, 0, 0, last].into()))
    }

    #[test]
    fn a_caller_past_its_limit_is_refused_and_a_closed_stream_frees_its_place() {
        let limits = Arc::new(StreamLimits::new(2, 10));
        let first = limits.enter(service("a"), StreamKind::Watch).unwrap();
        let _second = limits.enter(service("a"), StreamKind::Watch).unwrap();
        assert!(limits.enter(service("a"), StreamKind::Watch).is_err());
        assert!(
            limits.enter(service("b"), StreamKind::Watch).is_ok(),
            "others are not affected"
        );
        drop(first);
        assert!(limits.enter(service("a"), StreamKind::Watch).is_ok());
    }

    #[test]
    fn the_server_wide_limit_holds_across_callers() {
        let limits = Arc::new(StreamLimits::new(5, 2));
        let _a = limits.enter(address(1), StreamKind::Watch).unwrap();
        let _b = limits.enter(address(2), StreamKind::Watch).unwrap();
        assert!(limits.enter(address(3), StreamKind::Watch).is_err());
    }
}
