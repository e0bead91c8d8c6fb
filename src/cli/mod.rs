//! userctl, the command-line client: every RPC as a command, readable or JSON output, and
//! exit codes per failure class.

pub mod bench;
mod client;
mod commands;
mod export;
mod import;
mod input;
mod render;
mod sync;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use client::Connection;
pub use client::{Bearer, Failure, Target, exit};

const EXIT_CODES: &str = "Exit codes: 0 success, 1 other failure, 2 usage (bad flags or input file), \
3 not found, 4 permission (UNAUTHENTICATED or PERMISSION_DENIED), 5 unavailable (UNAVAILABLE or \
DEADLINE_EXCEEDED).";

#[derive(Parser)]
#[command(name = "userctl", version, about = "The command-line client for user-service", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Server address.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERCTL_ADDR",
        // Shown as the variable's name alone, not as if it were set to nothing.
        hide_env_values = true,
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    /// Bearer token; else the one `userctl login` stored.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERCTL_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// PEM CA certificate that signed the server's certificate (turns TLS on).
    #[arg(long, global = true, help_heading = "Global options")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (with --tls-key).
    #[arg(long, global = true, help_heading = "Global options")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, help_heading = "Global options")]
    tls_key: Option<PathBuf>,
    /// Time limit of each call, such as 10s or 1m (streams are not limited).
    #[arg(long, global = true,
        help_heading = "Global options", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, global = true,
        help_heading = "Global options", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Subcommand)]
enum SessionsAction {
    /// End every session of a user (yourself without USER); their tokens stop working.
    #[command(after_help = "Example: userctl sessions end 0192a3b4-c5d6-7e8f-9012-3456789abcde")]
    End {
        /// The user's id; yourself when left out.
        user: Option<String>,
    },
    /// Forgive the wrong passwords counted against a user's account, from every address, so
    /// the login limit no longer holds them back (admins).
    #[command(
        after_help = "Example: userctl sessions clear-failures 0192a3b4-c5d6-7e8f-9012-3456789abcde"
    )]
    ClearFailures {
        /// The user's id.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum RecoverAction {
    /// Ask for a recovery code for a username or email (the answer is the same either way).
    Start {
        /// A username or an email.
        login: String,
    },
    /// Set a new password with the code; every session ends.
    Complete {
        /// The username or email the code was asked for.
        login: String,
        #[arg(long)]
        code: String,
        /// Asked for without echo when not given.
        #[arg(long, env = "USERCTL_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum VerifyAction {
    /// Ask for a code sent to a user's email (yourself without --user).
    Start {
        #[arg(long)]
        user: Option<String>,
    },
    /// Give the code back: the email is verified.
    Confirm {
        /// The user's username or email.
        login: String,
        code: String,
    },
}

#[derive(Debug, Subcommand)]
enum TotpAction {
    /// Start enrolling: prints the secret and its otpauth:// URI, shown this once.
    Enroll {
        /// Your password, checked again; asked for without echo when not given.
        #[arg(long, env = "USERCTL_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Confirm with the first code the authenticator app shows; prints the recovery codes,
    /// shown this once.
    Confirm {
        /// Six digits.
        code: String,
    },
    /// Turn the second factor off: your own with a code, anyone's as an admin.
    Disable {
        /// The user's id (admins); yourself when left out.
        #[arg(long)]
        user: Option<String>,
        /// A code from the authenticator app or a recovery code (for your own).
        #[arg(long, env = "USERCTL_CODE", hide_env_values = true)]
        code: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Create a key; its secret is printed this once.
    #[command(
        after_help = "Example: userctl keys create ci-deploy --role moderator --expires-in 90d"
    )]
    Create(commands::KeyCreateArgs),
    /// Every key, with its role, expiry and last use (never a secret).
    List,
    /// Revoke a key: it stops working at once, on every replica.
    #[command(after_help = "Example: userctl keys revoke 0192a3b4-c5d6-7e8f-9012-3456789abcde")]
    Revoke {
        /// The key's id.
        id: String,
    },
    /// Rotate the service's signing keys: a new key is published in the JWKS at once and
    /// signs from --signing-key-publish-ahead on; prints every key and its state.
    RotateSigning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Records and tables for people.
    Text,
    /// Canonical proto3 JSON, one object per line for streams.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a user.
    #[command(
        after_help = "Example: userctl create --username ann_lee --email ann@example.com --full-name 'Ann Lee' --role user --meta team=core"
    )]
    Create(commands::CreateArgs),
    /// Show one user.
    #[command(
        after_help = "Examples: userctl get 0192a3b4-c5d6-7e8f-9012-3456789abcde -o json\n          userctl get --email ann@example.com"
    )]
    Get(commands::GetArgs),
    /// Change the fields given, and only those.
    #[command(
        after_help = "Example: userctl update 0192a3b4-c5d6-7e8f-9012-3456789abcde --status suspended --etag 7"
    )]
    Update(commands::UpdateArgs),
    /// Delete a user.
    #[command(after_help = "Example: userctl delete 0192a3b4-c5d6-7e8f-9012-3456789abcde --etag 7")]
    Delete {
        /// The user's id.
        id: String,
        /// Delete only if the user is still at this etag.
        #[arg(long)]
        etag: Option<String>,
    },
    /// List users, newest first.
    #[command(after_help = "Example: userctl list --role admin --all -o json | jq -r .username")]
    List(commands::ListArgs),
    /// Stream changes; reconnects by itself and resumes where it stopped.
    #[command(after_help = "Example: userctl watch --all --from-revision 120")]
    Watch(watch::WatchArgs),
    /// Write every user as of one revision to a JSON Lines or CSV file (admins only).
    #[command(
        after_help = "Examples: userctl export users.jsonl --password-hashes\n          userctl export users.csv\n\n\
The file is what `userctl import` reads: into another server, it recreates the users with new ids and \
times, keeping names, emails, roles, statuses, metadata and, with --password-hashes, passwords."
    )]
    Export(export::ExportArgs),
    /// Create users from a JSON Lines or CSV file.
    #[command(
        after_help = "Example: userctl import users.csv --rejects rejected.txt\n\n\
JSON Lines rows look like {\"username\":\"ann\",\"email\":\"ann@example.com\",\"full_name\":\"Ann\",\"password\":\"...\",\"role\":\"user\",\"metadata\":{\"team\":\"core\"}}.\n\
CSV files have a header naming username, email, full_name, password, role, status, and meta.KEY columns.\n\
Files written by `userctl export` are read as they are (new ids and times are given)."
    )]
    Import(import::ImportArgs),
    /// Apply updates from a JSON Lines file through SyncUsers, one result per line.
    #[command(after_help = "Example: userctl sync updates.jsonl\n\n\
Rows look like {\"user_id\":\"...\",\"status\":\"suspended\",\"metadata\":{\"team\":\"\"}}.")]
    Sync {
        /// The JSON Lines file.
        file: PathBuf,
    },
    /// Log in and store the token for later calls (mode 0600).
    #[command(after_help = "Example: userctl login --username ann_lee")]
    Login {
        /// The username, in any letter case.
        #[arg(long)]
        username: String,
        /// Asked for without echo when not given.
        #[arg(long, env = "USERCTL_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// A code from the authenticator app (or a recovery code), for an account with a
        /// second factor.
        #[arg(long, env = "USERCTL_CODE", hide_env_values = true)]
        code: Option<String>,
    },
    /// End this login's session on the server and forget the stored tokens.
    #[command(after_help = "Example: userctl logout")]
    Logout,
    /// Change your password (or, as an admin, anyone's with --user); asks without echo.
    #[command(
        after_help = "Examples: userctl passwd\n          userctl passwd --user 0192a3b4-c5d6-7e8f-9012-3456789abcde"
    )]
    Passwd(commands::PasswdArgs),
    /// Manage sessions.
    #[command(
        after_help = "Examples: userctl sessions end 0192a3b4-c5d6-7e8f-9012-3456789abcde (a user's; without an id, your own)\n          userctl sessions clear-failures 0192a3b4-c5d6-7e8f-9012-3456789abcde"
    )]
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Recover an account with a code sent to its email.
    #[command(
        after_help = "Examples: userctl recover start ann@example.com\n          userctl recover complete ann@example.com --code 4kx7m-q2hzp (asks for the new password)"
    )]
    Recover {
        #[command(subcommand)]
        action: RecoverAction,
    },
    /// Prove a user's email with a code sent to it.
    #[command(
        after_help = "Examples: userctl verify-email start\n          userctl verify-email confirm ann_lee 4kx7m-q2hzp"
    )]
    VerifyEmail {
        #[command(subcommand)]
        action: VerifyAction,
    },
    /// For the mailer: print the codes to send as JSON Lines, from after a revision, and go
    /// on printing new ones (a service token with admin rights).
    #[command(after_help = "Example: userctl deliveries --after 41")]
    Deliveries {
        /// The last revision already handled.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Your TOTP second factor: enroll, confirm with a first code, or disable.
    #[command(
        after_help = "Examples: userctl totp enroll\n          userctl totp confirm 123456\n          userctl totp disable --code 123456\n          userctl totp disable --user 0192a3b4-c5d6-7e8f-9012-3456789abcde (admins)"
    )]
    Totp {
        #[command(subcommand)]
        action: TotpAction,
    },
    /// Manage service keys: credentials for machine callers (admins).
    #[command(
        after_help = "Examples: userctl keys create ci-deploy --role moderator --expires-in 90d\n          userctl keys list\n          userctl keys revoke 0192a3b4-c5d6-7e8f-9012-3456789abcde\n          userctl keys rotate-signing"
    )]
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Mint a bearer token with the server's HS256 secret.
    #[command(
        after_help = "Example: USER_SERVICE_JWT_SECRET=... userctl token --subject deploy-bot --role admin --ttl 1h"
    )]
    Token(commands::TokenArgs),
    /// Load the server and report calls per second and latency percentiles.
    #[command(
        after_help = "Example: userctl bench --rpc get --concurrency 64 --connections 4 --duration 10s"
    )]
    Bench(bench::BenchArgs),
    /// The standard gRPC health check.
    #[command(after_help = "Example: userctl health --service userservice.UserService")]
    Health {
        /// The service to ask about; the whole server when empty.
        #[arg(long, default_value = "")]
        service: String,
    },
}

/// Entry points for the fuzz targets in `fuzz/`: the import and sync file parsers.
#[doc(hidden)]
pub mod fuzzing {
    use crate::pb;

    /// One JSON Lines row of an import file.
    pub fn import_json_line(line: &str) -> Result<pb::CreateUserRequest, String> {
        super::input::create_from_json(line)
    }

    /// One JSON Lines row of a sync file.
    pub fn sync_json_line(line: &str) -> Result<pb::UpdateUserRequest, String> {
        super::input::update_from_json(line)
    }

    /// Every row of a CSV import file; `Err` when the file itself is refused (its header).
    pub fn import_csv(bytes: &[u8]) -> Result<Vec<Result<pb::CreateUserRequest, String>>, String> {
        let rows = super::input::csv_from(
            std::io::Cursor::new(bytes.to_vec()),
            std::path::Path::new("input.csv"),
        )
        .map_err(|failure| failure.message)?;
        Ok(rows.map(|row| row.parsed).collect())
    }
}

/// Parses the command line, runs the command, and turns failures into exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("userctl: cannot start: {err}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("userctl: {failure}");
            failure.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let global = cli.global;
    let json = global.output == Output::Json;
    if global
        .token
        .as_deref()
        .is_some_and(|token| token.trim().is_empty())
    {
        return Err(Failure::usage(
            "the token given with --token or USERCTL_TOKEN is empty: give a token, or leave \
             both out to use the one `userctl login` stored",
        ));
    }
    // Without --token, the stored login, refreshed when its access token has expired (not
    // for the commands that make or end a login).
    let stored = global.token.is_none();
    let mut target = Target {
        addr: global.addr,
        token: global.token,
        tls_ca: global.tls_ca,
        tls_cert: global.tls_cert,
        tls_key: global.tls_key,
        timeout: global.timeout,
    };
    if stored {
        target.token = match cli.command {
            Command::Login { .. }
            | Command::Token(_)
            | Command::Recover { .. }
            | Command::VerifyEmail {
                action: VerifyAction::Confirm { .. },
            } => None,
            _ => client::stored_login(&target).await?,
        };
    }
    let connect = || Connection::open(&target);
    match cli.command {
        Command::Create(args) => commands::create(&connect()?, args, json).await,
        Command::Get(args) => commands::get(&connect()?, args, json).await,
        Command::Update(args) => commands::update(&connect()?, args, json).await,
        Command::Delete { id, etag } => commands::delete(&connect()?, id, etag, json).await,
        Command::List(args) => commands::list(&connect()?, args, json).await,
        Command::Watch(args) => watch::run(&connect()?, args, json).await,
        Command::Import(args) => import::run(&connect()?, args, json).await,
        Command::Export(args) => export::run(&connect()?, args, json).await,
        Command::Sync { file } => sync::run(&connect()?, &file, json).await,
        Command::Login {
            username,
            password,
            code,
        } => commands::login(&connect()?, username, password, code, json).await,
        Command::Logout => commands::logout(&connect()?, stored, json).await,
        Command::Passwd(args) => commands::passwd(&connect()?, args, stored, json).await,
        Command::Sessions {
            action: SessionsAction::End { user },
        } => commands::end_sessions(&connect()?, user, stored, json).await,
        Command::Sessions {
            action: SessionsAction::ClearFailures { user },
        } => commands::clear_login_failures(&connect()?, user, json).await,
        Command::Recover { action } => match action {
            RecoverAction::Start { login } => {
                commands::start_recovery(&connect()?, login, json).await
            }
            RecoverAction::Complete {
                login,
                code,
                new_password,
            } => commands::complete_recovery(&connect()?, login, code, new_password, json).await,
        },
        Command::VerifyEmail { action } => match action {
            VerifyAction::Start { user } => {
                commands::start_verification(&connect()?, user, json).await
            }
            VerifyAction::Confirm { login, code } => {
                commands::verify_email(&connect()?, login, code, json).await
            }
        },
        Command::Deliveries { after } => commands::deliveries(&connect()?, after).await,
        Command::Totp { action } => match action {
            TotpAction::Enroll { password } => {
                commands::enroll_totp(&connect()?, password, json).await
            }
            TotpAction::Confirm { code } => commands::confirm_totp(&connect()?, code, json).await,
            TotpAction::Disable { user, code } => {
                commands::disable_totp(&connect()?, user, code, json).await
            }
        },
        Command::Keys { action } => match action {
            KeysAction::Create(args) => commands::create_key(&connect()?, args, json).await,
            KeysAction::List => commands::list_keys(&connect()?, json).await,
            KeysAction::Revoke { id } => commands::revoke_key(&connect()?, id, json).await,
            KeysAction::RotateSigning => commands::rotate_signing_key(&connect()?, json).await,
        },
        Command::Health { service } => commands::health(&connect()?, service, json).await,
        Command::Token(args) => commands::token(args, json),
        Command::Bench(args) => {
            let max_error_ratio = args.max_error_ratio;
            let report = bench::run(&target, args).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "rpc": format!("{:?}", report.rpc).to_lowercase(),
                        "calls": report.calls,
                        "errors": report.errors,
                        "seconds": report.elapsed.as_secs_f64(),
                        "perSecond": report.per_second(),
                        "p50Micros": report.latency.value_at_quantile(0.50),
                        "p90Micros": report.latency.value_at_quantile(0.90),
                        "p99Micros": report.latency.value_at_quantile(0.99),
                        "maxMicros": report.latency.max(),
                    })
                );
            } else {
                println!("{}", report.summary());
            }
            match report.too_many_errors(max_error_ratio) {
                Some(why) => Err(Failure::other(why)),
                None => Ok(()),
            }
        }
    }
}
