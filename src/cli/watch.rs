//! `userctl watch`: follows changes, and when the connection drops reconnects with backoff
//! and resumes after the last revision it printed (a progress notice's too), so nothing is
//! lost or printed twice.

use std::time::Duration;

use clap::Args;
use tonic::{Code, Status};

use super::client::{Connection, Failure, backoff};
use super::render::{event_json, event_line};
use crate::contract::WATCH_START_REVISION;
use crate::pb;

#[derive(Args)]
pub struct WatchArgs {
    /// Watch this user (repeatable).
    #[arg(long = "user", value_name = "ID")]
    users: Vec<String>,
    /// Watch everyone.
    #[arg(long, conflicts_with = "users")]
    all: bool,
    /// Replay from this revision before following live changes.
    #[arg(long)]
    from_revision: Option<i64>,
    /// When the stream has been quiet a while, print a progress line: the revision it is
    /// current to (`N PROGRESS`; in JSON, an event with only the revision).
    #[arg(long)]
    progress: bool,
    /// Ask for the user as they were before each update or deletion (`prevUser` in JSON).
    #[arg(long)]
    prev: bool,
    /// Only events of users this AIP-160 filter matches after the change, or matched before.
    #[arg(long, default_value = "")]
    filter: String,
}

/// Whether the stream broke for a reason a new connection can fix.
pub(super) fn connection_lost(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) || (status.code() == Code::Internal && status.message().contains("h2"))
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub async fn run(connection: &Connection, args: WatchArgs, json: bool) -> Result<(), Failure> {
    if !args.all && args.users.is_empty() {
        return Err(Failure::usage(
            "name users with --user ID, or watch everyone with --all",
        ));
    }
    let mut client = connection.users();
    // The revision to resume from; unknown until the first stream says where it starts.
    let mut next = args.from_revision;
    let mut delays = backoff(MAX_BACKOFF);
    loop {
        let request = pb::WatchUsersRequest {
            user_ids: args.users.clone(),
            include_all: args.all,
            start_revision: next.unwrap_or(0),
            progress_notify: args.progress,
            prev_user: args.prev,
            filter: args.filter.clone(),
        };
        let lost = match client.watch_users(request).await {
            Ok(response) => {
                if next.is_none() {
                    next = response
                        .metadata()
                        .get(WATCH_START_REVISION)
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse().ok());
                }
                let mut events = response.into_inner();
                loop {
                    match events.message().await {
                        Ok(Some(event)) => {
                            if json {
                                println!("{}", event_json(&event));
                            } else {
                                println!("{}", event_line(&event));
                            }
                            next = Some(event.revision + 1);
                            delays = backoff(MAX_BACKOFF);
                        }
                        Ok(None) => return Ok(()),
                        Err(status) if connection_lost(&status) => break status,
                        Err(status) => return Err(status.into()),
                    }
                }
            }
            Err(status) if connection_lost(&status) => status,
            Err(status) => return Err(status.into()),
        };
        let delay = delays.next().unwrap_or(MAX_BACKOFF);
        match next {
            Some(next) => eprintln!(
                "userctl: watch interrupted ({}); reconnecting in {delay:.1?} from revision {next}",
                lost.message()
            ),
            None => eprintln!(
                "userctl: watch interrupted ({}); reconnecting in {delay:.1?}",
                lost.message()
            ),
        }
        tokio::time::sleep(delay).await;
    }
}
