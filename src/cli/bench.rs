//! `userctl bench`: a load generator. Several HTTP/2 connections (one tonic channel is bound
//! by a single connection's lock), many concurrent callers, latency in an HDR histogram.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;

use super::client::{Connection, Failure, Target, retrying};
use crate::pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Rpc {
    /// GetUser on users listed at the start.
    Get,
    /// ListUsers, one page, from `--page-token`.
    List,
    /// CreateUser with fresh usernames (each pays a password hash).
    Create,
    /// UpdateUser of users listed at the start, a new full name each time (no etag).
    Update,
    /// `--concurrency` watchers of everyone while `--updates` updates are made.
    Watch,
    /// BatchGetUsers of `--ids` of the users listed at the start (up to 1,000 of them).
    BatchGet,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The call to make.
    #[arg(long, value_enum, default_value_t = Rpc::Get)]
    pub rpc: Rpc,
    /// Concurrent callers [default: 32; for watch, watchers: 16, the server's default
    /// --max-open-streams-per-caller].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// How long to run (for watch: the most to wait for every event).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// list: the page to ask for.
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// list: only users whose username or email starts with this text.
    #[arg(long, default_value = "")]
    pub query: String,
    /// list: users per page.
    #[arg(long, default_value_t = 10)]
    pub page_size: i32,
    /// list: an AIP-160 filter.
    #[arg(long, default_value = "")]
    pub filter: String,
    /// list: created_at, updated_at or username, optionally followed by asc or desc.
    #[arg(long, default_value = "")]
    pub order_by: String,
    /// batch-get: ids per call.
    #[arg(long, default_value_t = 100)]
    pub ids: usize,
    /// watch: updates to make while the watchers listen.
    #[arg(long, default_value_t = 1000)]
    pub updates: usize,
    /// Exit non-zero when more than this share of calls failed: a run that mostly measures
    /// refusals (a rate limit, say) is not a benchmark.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_ratio: f64,
}

impl BenchArgs {
    /// Callers, or watchers, to run.
    pub fn callers(&self) -> usize {
        self.concurrency
            .unwrap_or(if self.rpc == Rpc::Watch { 16 } else { 32 })
            .max(1)
    }
}

/// The unary calls a caller repeats (watch runs on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Get,
    List,
    Create,
    Update,
    BatchGet,
}

/// What a watch run saw.
#[derive(Debug, Clone)]
pub struct WatchOutcome {
    pub watchers: usize,
    pub updates: usize,
    /// Watchers that received every update, in revision order.
    pub complete_in_order: usize,
}

#[derive(Debug)]
pub struct Report {
    pub rpc: Rpc,
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Microseconds: call latency, or for watch the delay from commit to delivery.
    pub latency: Histogram<u64>,
    pub watch: Option<WatchOutcome>,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(quantile))
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.latency.max())
    }

    /// The share of calls that failed.
    pub fn error_ratio(&self) -> f64 {
        self.errors as f64 / (self.calls + self.errors).max(1) as f64
    }

    /// Why the run does not count, when errors dominate it.
    pub fn too_many_errors(&self, max_ratio: f64) -> Option<String> {
        (self.error_ratio() > max_ratio).then(|| {
            let mut text = format!(
                "errors dominate this run: {} of {} calls failed ({:.1}%, more than --max-error-ratio {max_ratio})",
                self.errors,
                self.calls + self.errors,
                100.0 * self.error_ratio(),
            );
            if let Some(error) = &self.first_error {
                text.push_str(&format!("; first error: {error}"));
            }
            if self
                .first_error
                .as_deref()
                .is_some_and(|error| error.contains("ResourceExhausted"))
            {
                text.push_str(
                    "; the server's rate limit refused them: benchmark a server started with --rate-limit-per-second 0",
                );
            }
            text
        })
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "{:?}: {} calls in {:.2}s = {:.0}/s, {} errors; latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
            self.rpc,
            self.calls,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.errors,
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
            self.max(),
        );
        if let Some(watch) = &self.watch {
            text.push_str(&format!(
                "; {} of {} watchers got all {} updates in order",
                watch.complete_in_order, watch.watchers, watch.updates
            ));
        }
        if let Some(error) = &self.first_error {
            text.push_str(&format!("; first error: {error}"));
        }
        text
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 60_000_000)
}

/// Per-caller results, merged at the end.
struct Tally {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            calls: 0,
            errors: 0,
            first_error: None,
            latency: histogram(),
        }
    }

    fn record(&mut self, started: Instant, outcome: Result<(), tonic::Status>) {
        match outcome {
            Ok(()) => {
                self.calls += 1;
                let _ = self.latency.record(micros(started.elapsed()));
            }
            Err(status) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
}

pub async fn run(target: &Target, args: BenchArgs) -> Result<Report, Failure> {
    let connections = (0..args.connections.max(1))
        .map(|_| Connection::open(target))
        .collect::<Result<Vec<_>, _>>()?;
    let call = match args.rpc {
        Rpc::Get => Call::Get,
        Rpc::List => Call::List,
        Rpc::Create => Call::Create,
        Rpc::Update => Call::Update,
        Rpc::BatchGet => Call::BatchGet,
        Rpc::Watch => return watch(&connections, &args).await,
    };
    let ids = if matches!(call, Call::Get | Call::Update | Call::BatchGet) {
        let wanted = if call == Call::BatchGet { 1_000 } else { 100 };
        let ids = listed_ids(&connections[0], wanted).await?;
        if ids.is_empty() {
            return Err(Failure::usage(
                "there are no users to call on: create some first",
            ));
        }
        ids
    } else {
        Vec::new()
    };
    let ids = Arc::new(ids);
    let started = Instant::now();
    let deadline = started + args.duration;
    let callers: Vec<_> = (0..args.callers())
        .map(|caller| {
            let connection = &connections[caller % connections.len()];
            let mut client = connection.users();
            let timeout = connection.timeout;
            let ids = ids.clone();
            let args = args.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut n = caller.wrapping_mul(7919);
                let mut made = 0u64;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let outcome = match call {
                        Call::Get => {
                            n = n.wrapping_mul(31).wrapping_add(17) % ids.len();
                            let mut request = tonic::Request::new(pb::GetUserRequest {
                                user_id: ids[n].clone(),
                            });
                            request.set_timeout(timeout);
                            client.get_user(request).await.map(drop)
                        }
                        Call::List => {
                            let mut request = tonic::Request::new(pb::ListUsersRequest {
                                page_size: args.page_size,
                                page_token: args.page_token.clone(),
                                query: args.query.clone(),
                                filter: args.filter.clone(),
                                order_by: args.order_by.clone(),
                                ..Default::default()
                            });
                            request.set_timeout(timeout);
                            client.list_users(request).await.map(drop)
                        }
                        Call::Create => {
                            made += 1;
                            let name = format!("b{}_{caller}_{made}", std::process::id());
                            let request = pb::CreateUserRequest {
                                email: format!("{name}@bench.example.com"),
                                username: name,
                                full_name: "Bench User".into(),
                                password: "benchmark password".into(),
                                role: 0,
                                metadata: Default::default(),
                                password_hash: String::new(),
                                status: 0,
                            };
                            client.create_user(request).await.map(drop)
                        }
                        Call::Update => {
                            made += 1;
                            n = n.wrapping_mul(31).wrapping_add(17) % ids.len();
                            let mut request = tonic::Request::new(pb::UpdateUserRequest {
                                user_id: ids[n].clone(),
                                full_name: Some(format!("Bench User {caller} {made}")),
                                ..Default::default()
                            });
                            request.set_timeout(timeout);
                            client.update_user(request).await.map(drop)
                        }
                        Call::BatchGet => {
                            n = n.wrapping_mul(31).wrapping_add(17) % ids.len();
                            let user_ids = (0..args.ids)
                                .map(|i| ids[(n + i * 97) % ids.len()].clone())
                                .collect();
                            let mut request =
                                tonic::Request::new(pb::BatchGetUsersRequest { user_ids });
                            request.set_timeout(timeout);
                            client.batch_get_users(request).await.map(drop)
                        }
                    };
                    tally.record(began, outcome);
                }
                tally
            })
        })
        .collect();
    let mut report = Report {
        rpc: args.rpc,
        calls: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latency: histogram(),
        watch: None,
    };
    for caller in callers {
        let tally = caller
            .await
            .map_err(|err| Failure::other(format!("a bench caller failed: {err}")))?;
        report.calls += tally.calls;
        report.errors += tally.errors;
        report.first_error = report.first_error.or(tally.first_error);
        report
            .latency
            .add(&tally.latency)
            .map_err(|err| Failure::other(err.to_string()))?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

/// Opens the watchers, makes the updates, and measures commit-to-delivery delay.
/// The ids of up to `wanted` users, newest first, from ListUsers pages of 100.
async fn listed_ids(connection: &Connection, wanted: usize) -> Result<Vec<String>, Failure> {
    let mut ids = Vec::with_capacity(wanted);
    let mut page_token = String::new();
    while ids.len() < wanted {
        let page = retrying(connection.timeout, || {
            let mut client = connection.users();
            let request = connection.request(pb::ListUsersRequest {
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            });
            async move { client.list_users(request).await }
        })
        .await?
        .into_inner();
        ids.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    ids.truncate(wanted);
    Ok(ids)
}

async fn watch(connections: &[Connection], args: &BenchArgs) -> Result<Report, Failure> {
    let updater = &connections[0];
    let page = updater
        .users()
        .list_users(updater.request(pb::ListUsersRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await?
        .into_inner();
    let target = page
        .users
        .into_iter()
        .next()
        .ok_or_else(|| Failure::usage("there is no user to update: create one first"))?;
    let mut streams = Vec::with_capacity(args.callers());
    for watcher in 0..args.callers() {
        let connection = &connections[watcher % connections.len()];
        let request = pb::WatchUsersRequest {
            include_all: true,
            ..Default::default()
        };
        streams.push(connection.users().watch_users(request).await?.into_inner());
    }
    let updates = args.updates;
    let deadline = Instant::now() + args.duration;
    let watchers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut received, mut last, mut ordered) = (0, 0, true);
                while received < updates {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(remaining, stream.message()).await {
                        Ok(Ok(Some(event))) => {
                            let committed = event
                                .timestamp
                                .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000);
                            let delay = u64::try_from(now_micros() - committed).unwrap_or(0);
                            let _ = latency.record(delay.clamp(1, 60_000_000));
                            ordered &= event.revision > last;
                            last = event.revision;
                            received += 1;
                        }
                        _ => break,
                    }
                }
                (received == updates && ordered, latency)
            })
        })
        .collect();
    let started = Instant::now();
    let mut client = updater.users();
    let mut errors = 0;
    let mut first_error = None;
    for update in 0..updates {
        let request = pb::UpdateUserRequest {
            user_id: target.id.clone(),
            full_name: Some(format!("Bench update {update}")),
            ..Default::default()
        };
        if let Err(status) = client.update_user(request).await {
            errors += 1;
            first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
        }
    }
    let mut latency = histogram();
    let mut complete = 0;
    for watcher in watchers {
        let (whole, seen) = watcher
            .await
            .map_err(|err| Failure::other(format!("a watcher failed: {err}")))?;
        complete += usize::from(whole);
        latency
            .add(&seen)
            .map_err(|err| Failure::other(err.to_string()))?;
    }
    Ok(Report {
        rpc: Rpc::Watch,
        calls: updates as u64,
        errors,
        first_error,
        elapsed: started.elapsed(),
        latency,
        watch: Some(WatchOutcome {
            watchers: args.callers(),
            updates,
            complete_in_order: complete,
        }),
    })
}
