//! `userctl import`: BatchCreateUsers from a file, streamed in batches, with progress,
//! a summary, and a file of rejected rows with their line numbers and reasons.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use super::client::{Connection, Failure};
use super::input::{self, Format, Row};
use crate::pb;

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

/// Progress on stderr, by bytes of the file read (the only measure known before the end): a
/// bar with the share of the file read, the rows read and their rate, and the ETA, drawn only
/// when stderr is a terminal.
fn progress_bar(total_bytes: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {percent:>3}% of the file, {msg}, ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(rows_read(0, Duration::ZERO));
    bar
}

/// `1,234 rows read (567 rows/s)`, for the progress bar.
fn rows_read(rows: u64, elapsed: Duration) -> String {
    let rate = rows as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "{} read ({rate:.0} rows/s)",
        crate::text::count(rows, "row", "rows")
    )
}

/// Rejected rows, written in line order; the file is made only if there is one. A row the
/// server has not answered yet may still be rejected, so a reject waits until every row
/// before it is settled.
struct Rejects {
    path: PathBuf,
    file: Option<BufWriter<std::fs::File>>,
    waiting: BTreeMap<u64, String>,
    count: u64,
}

impl Rejects {
    fn add(&mut self, line: u64, reason: impl Into<String>) {
        self.waiting.insert(line, reason.into());
        self.count += 1;
    }

    fn fail(&self, err: std::io::Error) -> Failure {
        Failure::other(format!("cannot write {}: {err}", self.path.display()))
    }

    /// Writes the rejects before `unsettled`, the first line still waiting for an answer
    /// (`None`: every row read so far is settled).
    fn write_settled(&mut self, unsettled: Option<u64>) -> Result<(), Failure> {
        let waiting = match unsettled {
            Some(line) => self.waiting.split_off(&line),
            None => BTreeMap::new(),
        };
        let settled = std::mem::replace(&mut self.waiting, waiting);
        if settled.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            let file = std::fs::File::create(&self.path).map_err(|err| self.fail(err))?;
            self.file = Some(BufWriter::new(file));
        }
        for (line, reason) in settled {
            let file = self.file.as_mut().expect("opened above");
            if let Err(err) = writeln!(file, "line {line}: {reason}") {
                return Err(self.fail(err));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Failure> {
        self.write_settled(None)?;
        if let Some(file) = &mut self.file
            && let Err(err) = file.flush()
        {
            return Err(self.fail(err));
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

/// A row on its way to the server: its line in the file, and the user to create.
type Pending = (u64, pb::CreateUserRequest);

/// How many times in a row a refused call is tried again after the wait the server asked for.
const MAX_WAITS: u32 = 30;

/// One BatchCreateUsers call for `batch`. A call the rate limiter refused never reached the
/// handler, so nothing of it was created: it is sent again once the server's `retry-after`
/// has passed.
async fn send(
    connection: &Connection,
    batch: &[Pending],
) -> Result<pb::BatchCreateUsersResponse, tonic::Status> {
    let mut waits = 0;
    loop {
        let requests: Vec<_> = batch.iter().map(|(_, request)| request.clone()).collect();
        let refused = match connection
            .users()
            .batch_create_users(tokio_stream::iter(requests))
            .await
        {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) => status,
        };
        let retry_after = refused
            .metadata()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        match retry_after {
            Some(seconds)
                if refused.code() == tonic::Code::ResourceExhausted && waits < MAX_WAITS =>
            {
                waits += 1;
                eprintln!("userctl: the server is limiting calls; sending again in {seconds} s");
                tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
            }
            _ => return Err(refused),
        }
    }
}

/// What happened to the rows of a file.
#[derive(Default)]
struct Tally {
    read: u64,
    created: u64,
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
        waiting: BTreeMap::new(),
        count: 0,
    };
    let started = Instant::now();
    let progress = progress_bar(total_bytes);
    let mut batch_size = args.batch_size.max(1);
    let mut tally = Tally::default();
    // Rows the server did not take (past its batch limit), sent first in the next call.
    let mut carried: VecDeque<Pending> = VecDeque::new();
    let mut end_of_file = false;
    let outcome = loop {
        let mut batch: Vec<Pending> = carried.drain(..carried.len().min(batch_size)).collect();
        while batch.len() < batch_size && !end_of_file {
            let Some(row) = rows.recv().await else {
                end_of_file = true;
                break;
            };
            tally.read += 1;
            progress.set_position(row.bytes_read);
            progress.set_message(rows_read(tally.read, started.elapsed()));
            match row.parsed {
                Ok(request) => batch.push((row.line, request)),
                Err(reason) => rejects.add(row.line, reason),
            }
        }
        if batch.is_empty() {
            break Ok(());
        }
        let response = match send(connection, &batch).await {
            Ok(response) => response,
            Err(status) => {
                // Nothing of this call is known to exist: its rows and the carried ones
                // were not created.
                carried.extend(batch);
                break Err(Failure::from(status));
            }
        };
        tally.created += response.users.len() as u64;
        // The server's structured failures: each item's broken rules, and at most one run of
        // items it did not take.
        let mut cut_off = None;
        let mut reasons: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for failure in &response.failures {
            let first = usize::try_from(failure.position).unwrap_or(usize::MAX);
            let last = usize::try_from(failure.last_position).unwrap_or(first);
            let not_taken =
                failure.code == tonic::Code::ResourceExhausted as i32 && failure.field.is_empty();
            if not_taken {
                cut_off = Some((first, failure.message.clone()));
                continue;
            }
            let reason = if failure.field.is_empty() {
                failure.message.clone()
            } else {
                format!("{}: {}", failure.field, failure.message)
            };
            for position in first..=last.min(batch.len().saturating_sub(1)) {
                reasons.entry(position).or_default().push(reason.clone());
            }
        }
        for (position, reasons) in reasons {
            let line = batch.get(position).map_or(0, |(line, _)| *line);
            rejects.add(line, reasons.join("; "));
        }
        if let Some((first, reason)) = cut_off {
            // The server takes at most `first` items a call: send the rest again, in calls
            // that size.
            if first == 0 {
                for (line, _) in batch {
                    rejects.add(line, reason.clone());
                }
            } else {
                batch_size = batch_size.min(first);
                for pending in batch.into_iter().skip(first).rev() {
                    carried.push_front(pending);
                }
            }
        }
        rejects.write_settled(carried.front().map(|(line, _)| *line))?;
    };
    progress.finish_and_clear();
    let mut not_sent = carried.len() as u64;
    if outcome.is_err() {
        // Count what the import never reached, so the summary says what is left to do.
        while rows.recv().await.is_some() {
            not_sent += 1;
        }
    }
    let first_not_sent = carried.front().map(|(line, _)| *line);
    rejects.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let rejects_file = (rejects.count > 0).then(|| rejects.path.display().to_string());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "rowsRead": tally.read,
                "created": tally.created,
                "rejected": rejects.count,
                "notSent": not_sent,
                "rejectsFile": rejects_file,
                "seconds": seconds,
            })
        );
    } else {
        let rows = crate::text::count(tally.read, "row", "rows");
        let users = crate::text::count(tally.created, "user", "users");
        let mut summary = format!(
            "imported {users} from {rows} in {seconds:.1}s ({:.0} rows/s); {} rejected",
            tally.read as f64 / seconds.max(0.001),
            rejects.count,
        );
        if let Some(file) = &rejects_file {
            summary.push_str(&format!(", listed in {file}"));
        }
        if let Some(line) = first_not_sent {
            summary.push_str(&format!(
                "; {} not sent, from line {line} on",
                crate::text::count(not_sent, "row", "rows")
            ));
        }
        println!("{summary}");
    }
    outcome?;
    if rejects.count > 0 {
        let rows = crate::text::count(rejects.count, "row was", "rows were");
        return Err(Failure::other(format!(
            "{rows} rejected; see {}",
            rejects.path.display()
        )));
    }
    Ok(())
}
