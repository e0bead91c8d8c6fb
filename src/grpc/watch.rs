//! WatchUsers: replay from the stored log, then follow live commits, with no gap and no
//! duplicate. A watcher that falls behind the live buffer catches up from the log instead of
//! losing events, and never slows writers or other watchers.
//!
//! The caller's right to watch is judged for every event, against their role and status as
//! of that event: the log itself says when a watching user is demoted, suspended or deleted,
//! so the watch ends at that point in the stream without a lookup per event. It also ends
//! when the caller's token expires.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::{event_to_pb, parse_user_id, user_to_pb};
use super::{EventStream, UserServiceImpl, invalid};
use crate::auth::policy::{Access, authorize};
use crate::caller::Caller;
use crate::domain::{EventKind, FieldViolation, UserEvent, UserId, ValidationError};
use crate::error::ServiceError;
use crate::filter::Filter;
use crate::pb;
use crate::shutdown::Shutdown;
use crate::storage::Store;
use crate::storage::sessions::TokenBasis;
use crate::streams::StreamPlace;

/// Events read from the log per query while catching up.
const REPLAY_BATCH: usize = 256;
/// Events queued for one client before its watcher waits for it to read.
const CLIENT_BUFFER: usize = 64;
/// How long the status that ends a watch waits for a client that is not reading.
const LAST_WORD: Duration = Duration::from_secs(1);

/// Waits until `instant`, or forever when there is none.
pub(super) async fn until(instant: Option<Instant>) {
    match instant {
        Some(instant) => tokio::time::sleep_until(instant).await,
        None => std::future::pending().await,
    }
}

pub(super) fn expired() -> ServiceError {
    ServiceError::Unauthenticated("the token has expired".into())
}

enum Selection {
    All,
    Users(HashSet<UserId>),
}

/// Which events a watch sends: those of the selected users the filter (if any) admits.
struct Chosen {
    selection: Selection,
    filter: Option<Filter>,
}

impl Chosen {
    /// An event passes when the user matches the filter after the change, or matched it
    /// before (an update or a deletion), so a cache of the matches learns of a user leaving.
    fn matches(&self, event: &UserEvent) -> bool {
        self.selection.matches(event)
            && self.filter.as_ref().is_none_or(|filter| {
                filter.matches(&event.user)
                    || event
                        .previous
                        .as_ref()
                        .is_some_and(|before| filter.matches(before))
            })
    }
}

impl Selection {
    fn parse(request: &pb::WatchUsersRequest) -> Result<Self, ServiceError> {
        if request.include_all {
            return Ok(Selection::All);
        }
        if request.user_ids.is_empty() {
            return Err(invalid(FieldViolation::new(
                "user_ids",
                "must name at least one user, or set include_all",
            )));
        }
        let mut violations = Vec::new();
        let mut ids = HashSet::new();
        for (index, raw) in request.user_ids.iter().enumerate() {
            match parse_user_id(&format!("user_ids[{index}]"), raw) {
                Ok(id) => {
                    ids.insert(id);
                }
                Err(err) => violations.extend(err.violations),
            }
        }
        if violations.is_empty() {
            Ok(Selection::Users(ids))
        } else {
            Err(ServiceError::Invalid(ValidationError { violations }))
        }
    }

    fn matches(&self, event: &UserEvent) -> bool {
        match self {
            Selection::All => true,
            Selection::Users(ids) => ids.contains(&event.user.id),
        }
    }
}

/// What waits in a watcher's queue, boxed: the queue's slots are allocated in blocks of 32
/// whatever its capacity, so each slot is kept to two words.
type Queued = Result<Box<pb::UserEvent>, Box<Status>>;

/// A watch that ended without an error for the client: the client went away.
struct ClientGone;

struct Watcher {
    store: Store,
    selection: Chosen,
    /// The users the request named (`None`: everyone), for judging the caller again.
    only: Option<Vec<UserId>>,
    /// The caller as of `caller_revision`; later events about them update it.
    caller: Caller,
    caller_revision: i64,
    /// When the caller's token expires.
    expires: Option<Instant>,
    /// What the caller's token needs to go on working (its session open), checked before
    /// every event.
    basis: Option<TokenBasis>,
    /// The stream's place under the caps, held until it ends.
    _place: StreamPlace,
    /// The revision of the next event to consider; everything before it was handled.
    next: i64,
    client: mpsc::Sender<Queued>,
    shutdown: Shutdown,
    /// Turns false when the database cannot be reached; the stream then ends.
    reachable: watch::Receiver<bool>,
    /// How long the stream may be quiet before a progress notice, when the client asked.
    progress: Option<Duration>,
    /// Whether updates and deletions carry the user as they were before.
    prev_user: bool,
}

pub async fn start(
    service: &UserServiceImpl,
    caller: &Caller,
    (expires, basis): (Option<Instant>, Option<TokenBasis>),
    place: StreamPlace,
    request: pb::WatchUsersRequest,
) -> Result<(EventStream, i64), ServiceError> {
    let selection = Selection::parse(&request)?;
    let filter = super::filtered::parse_filter(&request.filter).map_err(invalid)?;
    let only = match &selection {
        Selection::All => None,
        Selection::Users(ids) => Some(ids.iter().copied().collect::<Vec<_>>()),
    };
    service.authorize(
        caller,
        &Access::Watch {
            only: only.as_deref(),
        },
    )?;
    let store = service.store.clone();
    let shutdown = service.shutdown.clone();
    if request.start_revision < 0 {
        return Err(invalid(FieldViolation::new(
            "start_revision",
            format!(
                "must be 0 (live events only) or a revision to resume from, got {}",
                request.start_revision
            ),
        )));
    }
    // Subscribe before reading the head, so nothing committed in between is missed.
    let live = store.subscribe();
    let reachable = store.reachable();
    let next = match request.start_revision {
        0 => store.head_revision() + 1,
        start => {
            let oldest = store.oldest_revision();
            if start < oldest {
                return Err(ServiceError::Compacted {
                    requested: start,
                    oldest,
                });
            }
            start
        }
    };
    // The caller as they stand now: every later change to them is in the events to come.
    let caller_revision = store.head_revision();
    let caller = crate::auth::current(caller, basis, &store).await?;
    let (client, receiver) = mpsc::channel(CLIENT_BUFFER);
    let watcher = Watcher {
        store,
        selection: Chosen { selection, filter },
        only,
        caller,
        caller_revision,
        expires,
        basis,
        _place: place,
        next,
        client,
        shutdown: shutdown.clone(),
        reachable,
        progress: request
            .progress_notify
            .then_some(service.streams.watch_progress),
        prev_user: request.prev_user,
    };
    shutdown.spawn(watcher.run(live));
    let stream = ReceiverStream::new(receiver)
        .map(|queued| queued.map(|event| *event).map_err(|status| *status));
    Ok((Box::pin(stream), next))
}

impl Watcher {
    async fn run(mut self, live: broadcast::Receiver<Arc<UserEvent>>) {
        if let Err(err) = self.follow(live).await {
            // A client that stopped reading cannot take even this: do not wait on it.
            let _ =
                tokio::time::timeout(LAST_WORD, self.client.send(Err(Box::new(err.into())))).await;
        }
    }

    /// Judges the caller again when `event` changed them.
    fn follow_caller(&mut self, event: &UserEvent) -> Result<(), ServiceError> {
        if event.revision <= self.caller_revision || self.caller.user_id() != Some(event.user.id) {
            return Ok(());
        }
        self.caller = match event.kind {
            EventKind::Deleted => return Err(crate::auth::gone()),
            EventKind::Created | EventKind::Updated => crate::auth::acting_as(&event.user)?,
        };
        let access = Access::Watch {
            only: self.only.as_deref(),
        };
        Ok(authorize(&self.caller, &access, false)?)
    }

    async fn follow(
        &mut self,
        mut live: broadcast::Receiver<Arc<UserEvent>>,
    ) -> Result<ClientGone, ServiceError> {
        if let Some(end) = self.catch_up().await? {
            return Ok(end);
        }
        let mut reachable = self.reachable.clone();
        let mut quiet_until = self.progress.map(|quiet| Instant::now() + quiet);
        loop {
            let received = tokio::select! {
                received = live.recv() => Some(received),
                () = until(quiet_until) => None,
                () = self.client.closed() => return Ok(ClientGone),
                () = self.shutdown.triggered() => return Err(self.shutting_down()),
                () = until(self.expires) => return Err(expired()),
                _ = reachable.wait_for(|reachable| !reachable) => {
                    return Err(self.unreachable());
                }
            };
            let Some(received) = received else {
                if let Some(end) = self.progress_notice().await? {
                    return Ok(end);
                }
                quiet_until = self.progress.map(|quiet| Instant::now() + quiet);
                continue;
            };
            let event = match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        next = self.next,
                        "watcher fell behind; reading the log"
                    );
                    if let Some(end) = self.catch_up().await? {
                        return Ok(end);
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(self.shutting_down()),
            };
            if event.revision > self.next {
                // Something before this event never reached us live: the log has it.
                if let Some(end) = self.catch_up().await? {
                    return Ok(end);
                }
            }
            if event.revision >= self.next {
                if let Some(end) = self.deliver(&event).await? {
                    return Ok(end);
                }
                // Any change considered, sent or not, makes the stream not quiet: the next
                // notice would say no more than a moment ago.
                quiet_until = self.progress.map(|quiet| Instant::now() + quiet);
            }
        }
    }

    /// A progress notice: every change up to its revision has been considered.
    async fn progress_notice(&mut self) -> Result<Option<ClientGone>, ServiceError> {
        crate::auth::session_holds(self.basis, &self.store).await?;
        let notice = pb::UserEvent {
            revision: self.next - 1,
            ..Default::default()
        };
        tokio::select! {
            sent = self.client.send(Ok(Box::new(notice))) => Ok(sent.err().map(|_| ClientGone)),
            () = self.shutdown.triggered() => Err(self.shutting_down()),
            () = until(self.expires) => Err(expired()),
        }
    }

    /// Sends every logged event from `next` on.
    async fn catch_up(&mut self) -> Result<Option<ClientGone>, ServiceError> {
        loop {
            let oldest = self.store.oldest_revision();
            if self.next < oldest {
                return Err(ServiceError::Compacted {
                    requested: self.next,
                    oldest,
                });
            }
            let batch = self.store.events_from(self.next, REPLAY_BATCH).await?;
            if let Some(first) = batch.first()
                && first.revision > self.next
            {
                // Pruned while we read.
                return Err(ServiceError::Compacted {
                    requested: self.next,
                    oldest: first.revision,
                });
            }
            let full = batch.len() == REPLAY_BATCH;
            for event in &batch {
                if let Some(end) = self.deliver(event).await? {
                    return Ok(Some(end));
                }
            }
            if !full {
                return Ok(None);
            }
        }
    }

    async fn deliver(&mut self, event: &UserEvent) -> Result<Option<ClientGone>, ServiceError> {
        self.next = event.revision + 1;
        self.follow_caller(event)?;
        if !self.selection.matches(event) {
            return Ok(None);
        }
        crate::auth::session_holds(self.basis, &self.store).await?;
        let mut message = event_to_pb(event.clone(), &self.caller);
        if self.prev_user {
            message.prev_user = event.previous.as_deref().map(user_to_pb);
        }
        let message = Ok(Box::new(message));
        tokio::select! {
            sent = self.client.send(message) => Ok(sent.err().map(|_| ClientGone)),
            () = self.shutdown.triggered() => Err(self.shutting_down()),
            () = until(self.expires) => Err(expired()),
        }
    }

    fn unreachable(&self) -> ServiceError {
        ServiceError::Unavailable(format!(
            "the database is unreachable: resume the watch with start_revision {}",
            self.next
        ))
    }

    fn shutting_down(&self) -> ServiceError {
        ServiceError::ShuttingDown(format!(
            ": resume the watch with start_revision {}",
            self.next
        ))
    }
}
