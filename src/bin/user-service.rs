//! The server binary: parse flags, start logging, hand over to the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use user_service::config::{Cli, HealthcheckArgs, ServerCommand, Settings};
use user_service::startup::{Application, termination_signal};
use user_service::telemetry;

/// How long exiting waits for blocking work a cut-off call left running (a password hash,
/// say). Storage is closed by then, so nothing that work could still do matters.
const EXIT_WAIT: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(ServerCommand::Healthcheck(args)) = &cli.command {
        return healthcheck(&cli, args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the trace exporter's connection lives on it.
    let logs = {
        let _entered = runtime.enter();
        telemetry::init(
            cli.telemetry.log_format,
            cli.telemetry.otlp_endpoint.as_deref(),
        )
    };
    let logs = match logs {
        Ok(logs) => logs,
        Err(err) => {
            eprintln!("{}", user_service::text::chain(&err));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        type BoxError = Box<dyn std::error::Error>;
        let settings = Settings::from_cli(cli)?;
        let app = Application::build(settings).await?;
        app.run_until(termination_signal()).await?;
        Ok::<(), BoxError>(())
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{}", user_service::text::chain(err.as_ref()));
            ExitCode::FAILURE
        }
    };
    let dropped = logs.dropped_lines();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "log lines were dropped while the writer could not keep up"
        );
    }
    // Sends the spans still held, while the runtime runs, and writes every line still queued.
    logs.finish();
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}

/// `user-service healthcheck`: exit 0 only when the server reports SERVING. It reads the
/// server's own settings (the listen address, TLS), from the same flags and variables.
fn healthcheck(cli: &Cli, args: &HealthcheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("healthcheck: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match cli.healthcheck_tls(args) {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("healthcheck: {}", user_service::text::chain(&err));
            return ExitCode::FAILURE;
        }
    };
    let addr = cli.healthcheck_addr(args);
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    match runtime.block_on(user_service::health::probe(
        &addr,
        &args.service,
        timeout,
        tls.as_ref(),
    )) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("healthcheck: {addr} is not SERVING");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("healthcheck: {addr}: {err}");
            ExitCode::FAILURE
        }
    }
}
