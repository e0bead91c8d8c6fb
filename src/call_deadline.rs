//! The caller's deadline as the call's task carries it: the deadline layer sets it around the
//! handler, and storage reads it, so a write is never committed after its caller was told the
//! call failed, and a database wait never outlives the call that asked for it.

use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// When the call running in this task must end, if its caller set a deadline.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Runs `poll` with `deadline` as the current call's deadline (nothing set when `None`).
pub fn sync_scope<R>(deadline: Option<Instant>, poll: impl FnOnce() -> R) -> R {
    match deadline {
        Some(deadline) => DEADLINE.sync_scope(deadline, poll),
        None => poll(),
    }
}

/// Runs `work` with `deadline` as the current call's deadline.
pub async fn scope<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, work).await,
        None => work.await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_deadline_is_seen_inside_its_scope_and_nowhere_else() {
        let at = Instant::now() + Duration::from_secs(3);
        assert_eq!(current(), None, "no call, no deadline");
        assert_eq!(scope(Some(at), async { current() }).await, Some(at));
        assert_eq!(sync_scope(Some(at), current), Some(at));
        assert_eq!(scope(None, async { current() }).await, None);
    }
}
