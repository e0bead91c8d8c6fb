//! `userctl export`: ExportUsers to a JSON Lines or CSV file that `userctl import` reads
//! back, with progress on a terminal; a broken stream is resumed from its last token.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost_types::Timestamp;
use serde_json::Value;
use tonic::Status;

use super::client::{Connection, Failure, backoff};
use super::input::Format;
use super::render::to_json;
use super::watch::connection_lost;
use crate::pb;

#[derive(Args)]
pub struct ExportArgs {
    /// Where to write: a .jsonl or .csv file (default: JSON Lines on standard output).
    file: Option<PathBuf>,
    /// The format, when the file's extension does not tell.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Include each user's password hash, so an import keeps passwords working.
    #[arg(long)]
    password_hashes: bool,
}

/// The CSV columns an export writes; `userctl import` reads every one of them (it gives new
/// users ids and times of its own, so it skips those).
pub const CSV_COLUMNS: [&str; 11] = [
    "id",
    "username",
    "email",
    "full_name",
    "role",
    "status",
    "created_at",
    "updated_at",
    "email_verified",
    "password_hash",
    "metadata",
];

/// How many times in a row a broken stream is resumed before giving up.
const MAX_RESUMES: usize = 10;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Writer {
    Jsonl(Box<dyn Write>),
    Csv(Box<csv::Writer<Box<dyn Write>>>),
}

impl Writer {
    fn open(args: &ExportArgs) -> Result<Self, Failure> {
        let (out, format): (Box<dyn Write>, Format) = match &args.file {
            None => (
                Box::new(std::io::BufWriter::new(std::io::stdout())),
                args.format.unwrap_or(Format::Jsonl),
            ),
            Some(path) => {
                let format = Format::of(path, args.format)?;
                let file = std::fs::File::create(path).map_err(|err| {
                    Failure::usage(format!("cannot write {}: {err}", path.display()))
                })?;
                (Box::new(std::io::BufWriter::new(file)), format)
            }
        };
        Ok(match format {
            Format::Jsonl => Writer::Jsonl(out),
            Format::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(CSV_COLUMNS).map_err(write_failed)?;
                Writer::Csv(Box::new(csv))
            }
        })
    }

    fn write(&mut self, exported: &pb::ExportedUser) -> Result<(), Failure> {
        match self {
            Writer::Jsonl(out) => {
                let line = to_json(exported, "userservice.ExportedUser");
                writeln!(out, "{line}").map_err(write_failed)
            }
            Writer::Csv(csv) => csv.write_record(csv_row(exported)).map_err(write_failed),
        }
    }

    fn finish(self) -> Result<(), Failure> {
        match self {
            Writer::Jsonl(mut out) => out.flush().map_err(write_failed),
            Writer::Csv(mut csv) => csv.flush().map_err(write_failed),
        }
    }
}

fn write_failed(err: impl std::fmt::Display) -> Failure {
    Failure::other(format!("cannot write the export: {err}"))
}

fn time(timestamp: Option<&Timestamp>) -> String {
    timestamp.map(ToString::to_string).unwrap_or_default()
}

/// One user as a CSV row, in `CSV_COLUMNS` order: roles and statuses by short name, times in
/// RFC 3339, metadata as a JSON object.
fn csv_row(exported: &pb::ExportedUser) -> Vec<String> {
    let user = exported.user.clone().unwrap_or_default();
    let short = |name: &str, prefix: &str| name.trim_start_matches(prefix).to_ascii_lowercase();
    let metadata: serde_json::Map<String, Value> = user
        .metadata
        .iter()
        .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
        .collect();
    let role = short(user.role().as_str_name(), "USER_ROLE_");
    let status = short(user.status().as_str_name(), "USER_STATUS_");
    vec![
        user.id,
        user.username,
        user.email,
        user.full_name,
        role,
        status,
        time(user.created_at.as_ref()),
        time(user.updated_at.as_ref()),
        user.email_verified.to_string(),
        exported.password_hash.clone(),
        Value::Object(metadata).to_string(),
    ]
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} users ({per_sec}), ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// How one ExportUsers call ended.
enum Ended {
    Done {
        revision: i64,
    },
    /// The stream broke for a reason a new call can fix; `progressed` when parts arrived.
    Broken {
        status: Status,
        progressed: bool,
    },
}

/// Where an export stands across its calls.
struct Position {
    resume_token: String,
    written: u64,
}

/// One ExportUsers call from `position`, writing what arrives.
async fn stream_once(
    connection: &Connection,
    args: &ExportArgs,
    writer: &mut Writer,
    progress: &ProgressBar,
    position: &mut Position,
) -> Result<Ended, Failure> {
    let request = pb::ExportUsersRequest {
        include_password_hashes: args.password_hashes,
        resume_token: position.resume_token.clone(),
    };
    let mut parts = match connection.users().export_users(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if connection_lost(&status) => {
            return Ok(Ended::Broken {
                status,
                progressed: false,
            });
        }
        Err(status) => return Err(status.into()),
    };
    let mut progressed = false;
    loop {
        let status = match parts.message().await {
            Ok(Some(part)) => {
                progress.set_length(u64::try_from(part.total_users).unwrap_or(0));
                for exported in &part.users {
                    writer.write(exported)?;
                }
                position.written += part.users.len() as u64;
                progress.set_position(position.written);
                if !part.resume_token.is_empty() {
                    position.resume_token = part.resume_token;
                }
                if part.done {
                    return Ok(Ended::Done {
                        revision: part.revision,
                    });
                }
                progressed = true;
                continue;
            }
            Ok(None) => Status::unavailable("the stream ended before its last part"),
            Err(status) if connection_lost(&status) => status,
            Err(status) => return Err(status.into()),
        };
        return Ok(Ended::Broken { status, progressed });
    }
}

pub async fn run(connection: &Connection, args: ExportArgs, json: bool) -> Result<(), Failure> {
    let mut writer = Writer::open(&args)?;
    let progress = progress_bar();
    let started = Instant::now();
    let mut position = Position {
        resume_token: String::new(),
        written: 0,
    };
    let mut resumes = 0;
    let mut delays = backoff(MAX_BACKOFF);
    let revision = loop {
        match stream_once(connection, &args, &mut writer, &progress, &mut position).await? {
            Ended::Done { revision } => break revision,
            Ended::Broken { status, progressed } => {
                if progressed {
                    resumes = 0;
                    delays = backoff(MAX_BACKOFF);
                }
                resumes += 1;
                if resumes > MAX_RESUMES {
                    return Err(status.into());
                }
                let delay = delays.next().unwrap_or(MAX_BACKOFF);
                progress.suspend(|| {
                    eprintln!(
                        "userctl: export interrupted ({}) after {}; resuming in {delay:.1?}",
                        status.message(),
                        crate::text::count(position.written, "user", "users"),
                    );
                });
                tokio::time::sleep(delay).await;
            }
        }
    };
    progress.finish_and_clear();
    writer.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let summary = if json {
        serde_json::json!({
            "exported": position.written,
            "revision": revision,
            "seconds": seconds,
        })
        .to_string()
    } else {
        format!(
            "exported {} as of revision {revision} in {seconds:.1}s ({:.0} users/s); WatchUsers from revision {} continues it",
            crate::text::count(position.written, "user", "users"),
            position.written as f64 / seconds.max(0.001),
            revision + 1,
        )
    };
    // Standard output may be the export itself.
    if args.file.is_some() {
        println!("{summary}");
    } else {
        eprintln!("{summary}");
    }
    Ok(())
}
