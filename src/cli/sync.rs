//! `userctl sync`: SyncUsers from a JSON Lines file, printing one result per input line, in
//! order: with `-o json`, the UserEvent the server answered. Rows that cannot be read are
//! answered here, as INVALID_ARGUMENT failures, and never sent.

use std::path::Path;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{Connection, Failure, code_name};
use super::input;
use super::render::event_json;
use crate::pb;

/// A reply in a few words: the change, or why there was none.
fn outcome(reply: &pb::UserEvent) -> String {
    let user = reply.user.clone().unwrap_or_default();
    match &reply.failure {
        Some(failure) => format!(
            "{}: {}",
            code_name(tonic::Code::from_i32(failure.code)),
            failure.message
        ),
        None if reply.revision == 0 => format!("UNCHANGED {} {}", user.id, user.username),
        None => format!(
            "UPDATED {} {} revision {}",
            user.id, user.username, reply.revision
        ),
    }
}

/// One input line, in order: sent to the server, or refused before sending.
enum Entry {
    Sent { line: u64 },
    Unreadable { line: u64, reason: String },
}

pub async fn run(connection: &Connection, file: &Path, json: bool) -> Result<(), Failure> {
    let rows = input::json_lines(file, input::update_from_json)?;
    let (requests, request_stream) = mpsc::channel(64);
    let (entries, mut pending) = mpsc::channel(1024);
    std::thread::spawn(move || {
        for row in rows {
            let entry = match row.parsed {
                Ok(request) => {
                    if requests.blocking_send(request).is_err() {
                        return;
                    }
                    Entry::Sent { line: row.line }
                }
                Err(reason) => Entry::Unreadable {
                    line: row.line,
                    reason,
                },
            };
            if entries.blocking_send(entry).is_err() {
                return;
            }
        }
    });
    let mut replies = connection
        .users()
        .sync_users(ReceiverStream::new(request_stream))
        .await?
        .into_inner();
    let mut failed = 0u64;
    while let Some(entry) = pending.recv().await {
        let (line, reply) = match entry {
            // Answered here as the server would answer a request it cannot decode.
            Entry::Unreadable { line, reason } => (
                line,
                pb::UserEvent {
                    failure: Some(pb::SyncFailure {
                        user_id: String::new(),
                        code: tonic::Code::InvalidArgument as i32,
                        message: reason,
                    }),
                    ..Default::default()
                },
            ),
            Entry::Sent { line } => {
                let reply = replies.message().await?.ok_or_else(|| {
                    Failure::other("the server ended the sync before answering every line")
                })?;
                (line, reply)
            }
        };
        failed += u64::from(reply.failure.is_some());
        if json {
            // The reply as the schema defines it: a UserEvent, with `failure` set when the
            // line was not applied. One per input line, in order, so the Nth object answers
            // the Nth line that is not blank.
            println!("{}", event_json(&reply));
        } else {
            println!("line {line}: {}", outcome(&reply));
        }
    }
    if failed > 0 {
        let lines = crate::text::count(failed, "line was", "lines were");
        return Err(Failure::other(format!("{lines} not applied")));
    }
    Ok(())
}
