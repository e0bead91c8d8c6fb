//! The server binary: parse flags, start logging, hand over to the library.

use clap::Parser;
use user_service::config::{Cli, Settings};
use user_service::startup::{Application, termination_signal};
use user_service::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = async {
        type BoxError = Box<dyn std::error::Error>;
        let settings = Settings::from_cli(cli)?;
        let app = Application::build(settings).await?;
        app.run_until(termination_signal()).await?;
        Ok::<(), BoxError>(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{}", user_service::error::chain(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
