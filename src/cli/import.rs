//! `userctl import`: BatchCreateUsers from a file, streamed in batches, with progress,
//! a summary, and a file of rejected rows with their line numbers and reasons.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{Connection, Failure};
use super::input::{self, Format, Row};
use crate::pb;

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_error_names_its_position_and_keeps_the_username_and_reason() {
        let error = r#"item 12 (username "bad"): email: must be valid"#;
        assert_eq!(
            super::item_error(error),
            Some((12, r#"username "bad": email: must be valid"#.to_owned()))
        );
        assert_eq!(super::item_error("items 3 to 4: not created"), None);
    }

    #[test]
    fn a_summary_of_items_not_taken_names_their_positions() {
        let (positions, reason) =
            super::items_error("items 3 to 5: not created: too many; send the rest").unwrap();
        assert_eq!(positions, 3..=5);
        assert_eq!(reason, "not created: too many; send the rest");
    }
}

#[derive(Args)]
pub struct ImportArgs {
    /// JSON Lines (.jsonl) or CSV (.csv) file.
    file: PathBuf,
    /// The file's format, when its extension does not tell.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Where rejected rows go (default: FILE.rejects).
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Rows per BatchCreateUsers call.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
}

/// Progress on stderr: a bar with rate and ETA on a terminal, a line every few seconds
/// otherwise.
struct Progress {
    terminal: bool,
    total_bytes: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn show(&mut self, rows: u64, bytes: u64) {
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = rows as f64 / elapsed;
        let fraction = if self.total_bytes == 0 {
            1.0
        } else {
            (bytes as f64 / self.total_bytes as f64).min(1.0)
        };
        let eta = if fraction > 0.0 {
            elapsed / fraction - elapsed
        } else {
            0.0
        };
        if self.terminal {
            let filled = (fraction * 30.0) as usize;
            eprint!(
                "\r[{}{}] {:>3.0}% {rows} rows {rate:.0}/s ETA {eta:.0}s ",
                "=".repeat(filled),
                " ".repeat(30 - filled),
                fraction * 100.0
            );
        } else {
            eprintln!(
                "userctl: {rows} rows read ({:.0}%), {rate:.0} rows/s, about {eta:.0}s left",
                fraction * 100.0
            );
        }
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// Rejected rows, written as they are found; the file is made only if there is one.
struct Rejects {
    path: PathBuf,
    file: Option<BufWriter<std::fs::File>>,
    count: u64,
}

impl Rejects {
    fn write(&mut self, line: u64, reason: &str) -> Result<(), Failure> {
        let fail = |err: std::io::Error| {
            Failure::other(format!("cannot write {}: {err}", self.path.display()))
        };
        if self.file.is_none() {
            let file = std::fs::File::create(&self.path).map_err(fail)?;
            self.file = Some(BufWriter::new(file));
        }
        let file = self.file.as_mut().expect("opened above");
        writeln!(file, "line {line}: {reason}").map_err(|err| {
            Failure::other(format!("cannot write {}: {err}", self.path.display()))
        })?;
        self.count += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Failure> {
        if let Some(file) = &mut self.file {
            file.flush().map_err(|err| {
                Failure::other(format!("cannot write {}: {err}", self.path.display()))
            })?;
        }
        Ok(())
    }
}

/// Reads rows on a blocking thread and hands them over one by one.
fn read_rows(
    path: &Path,
    format: Format,
) -> Result<mpsc::Receiver<Row<pb::CreateUserRequest>>, Failure> {
    let (sender, receiver) = mpsc::channel(256);
    match format {
        Format::Jsonl => {
            let rows = input::json_lines(path, input::create_from_json)?;
            std::thread::spawn(move || rows.for_each(|row| drop(sender.blocking_send(row))));
        }
        Format::Csv => {
            let rows = input::csv_rows(path)?;
            std::thread::spawn(move || rows.for_each(|row| drop(sender.blocking_send(row))));
        }
    }
    Ok(receiver)
}

/// Splits an error of BatchCreateUsersResponse, `item N (username "x"): reason`, into the
/// item's position and `username "x": reason`.
fn item_error(error: &str) -> Option<(usize, String)> {
    let rest = error.strip_prefix("item ")?;
    let (position, rest) = rest.split_once(" (")?;
    let (who, reason) = rest.split_once("): ")?;
    Some((position.parse().ok()?, format!("{who}: {reason}")))
}

/// Splits the summary of items the server did not take, `items A to B: reason`, into the
/// positions and the reason.
fn items_error(error: &str) -> Option<(std::ops::RangeInclusive<usize>, &str)> {
    let rest = error.strip_prefix("items ")?;
    let (first, rest) = rest.split_once(" to ")?;
    let (last, reason) = rest.split_once(": ")?;
    Some((first.parse().ok()?..=last.parse().ok()?, reason))
}

pub async fn run(connection: &Connection, args: ImportArgs, json: bool) -> Result<(), Failure> {
    let format = Format::of(&args.file, args.format)?;
    let total_bytes = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    let mut rows = read_rows(&args.file, format)?;
    let mut rejects = Rejects {
        path: args.rejects.unwrap_or_else(|| {
            let mut name = args.file.clone().into_os_string();
            name.push(".rejects");
            PathBuf::from(name)
        }),
        file: None,
        count: 0,
    };
    let mut progress = Progress {
        terminal: std::io::stderr().is_terminal(),
        total_bytes,
        started: Instant::now(),
        last: Instant::now(),
    };
    let batch_size = args.batch_size.max(1);
    let (mut read, mut created) = (0u64, 0u64);
    let mut finished = false;
    while !finished {
        // One call per batch; only the batch's line numbers are kept.
        let (requests, stream) = mpsc::channel(64);
        let mut client = connection.users();
        let call =
            tokio::spawn(
                async move { client.batch_create_users(ReceiverStream::new(stream)).await },
            );
        let mut lines = Vec::with_capacity(batch_size);
        while lines.len() < batch_size {
            let Some(row) = rows.recv().await else {
                finished = true;
                break;
            };
            read += 1;
            progress.show(read, row.bytes_read);
            match row.parsed {
                Ok(request) => {
                    lines.push(row.line);
                    if requests.send(request).await.is_err() {
                        break; // the call ended early; its result says why
                    }
                }
                Err(reason) => rejects.write(row.line, &reason)?,
            }
        }
        drop(requests);
        let response = call
            .await
            .map_err(|err| Failure::other(format!("the import call failed: {err}")))??
            .into_inner();
        created += response.users.len() as u64;
        for error in &response.errors {
            if let Some((positions, reason)) = items_error(error) {
                // Items the server did not take (a batch over its limits): each one's line.
                for position in positions {
                    let line = lines.get(position).copied().unwrap_or(0);
                    rejects.write(line, reason)?;
                }
                continue;
            }
            let located = item_error(error)
                .and_then(|(position, reason)| Some((*lines.get(position)?, reason)));
            match located {
                Some((line, reason)) => rejects.write(line, &reason)?,
                None => rejects.write(0, error)?,
            }
        }
    }
    progress.done();
    rejects.finish()?;
    let seconds = progress.started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "rowsRead": read,
                "created": created,
                "rejected": rejects.count,
                "rejectsFile": (rejects.count > 0).then(|| rejects.path.display().to_string()),
                "seconds": seconds,
            })
        );
    } else {
        println!(
            "imported {created} users from {read} rows in {seconds:.1}s ({:.0} rows/s); {} rejected{}",
            read as f64 / seconds.max(0.001),
            rejects.count,
            if rejects.count > 0 {
                format!(", listed in {}", rejects.path.display())
            } else {
                String::new()
            }
        );
    }
    if rejects.count > 0 {
        return Err(Failure::other(format!(
            "{} rows were rejected; see {}",
            rejects.count,
            rejects.path.display()
        )));
    }
    Ok(())
}
