//! `userctl sync`: SyncUsers from a JSON Lines file, printing one result per input line, in
//! order. Rows that cannot be read are answered locally and never sent.

use std::path::Path;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{Connection, Failure, code_name};
use super::input;
use super::render::event_json;

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
        match entry {
            Entry::Unreadable { line, reason } => {
                failed += 1;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "line": line, "error": { "code": "INVALID_INPUT", "message": reason } })
                    );
                } else {
                    println!("line {line}: INVALID_INPUT: {reason}");
                }
            }
            Entry::Sent { line } => {
                let reply = replies.message().await?.ok_or_else(|| {
                    Failure::other("the server ended the sync before answering every line")
                })?;
                if let Some(failure) = &reply.failure {
                    failed += 1;
                    let code = code_name(tonic::Code::from_i32(failure.code));
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "line": line, "error": { "code": code, "message": failure.message, "userId": failure.user_id } })
                        );
                    } else {
                        println!("line {line}: {code}: {}", failure.message);
                    }
                } else if json {
                    println!(
                        "{}",
                        serde_json::json!({ "line": line, "event": event_json(&reply) })
                    );
                } else {
                    let user = reply.user.unwrap_or_default();
                    println!(
                        "line {line}: UPDATED {} {} revision {}",
                        user.id, user.username, reply.revision
                    );
                }
            }
        }
    }
    if failed > 0 {
        let lines = crate::text::count(failed, "line was", "lines were");
        return Err(Failure::other(format!("{lines} not applied")));
    }
    Ok(())
}
