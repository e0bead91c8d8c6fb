//! Server configuration: command-line flags, each with an environment fallback, in one group
//! per component (`args`), read into the settings start-up builds from (`settings`).

mod args;
pub mod duration;
mod settings;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

pub use args::{
    AuthArgs, ConfigError, KeyArgs, LimitArgs, ListenerArgs, ShutdownArgs, StorageArgs, StreamArgs,
    TelemetryArgs, TlsArgs, WebArgs,
};
pub use settings::*;

/// A gRPC user directory on durable embedded storage.
#[derive(Debug, Clone, Parser)]
#[command(name = "user-service", version, about)]
pub struct Cli {
    /// Something to do instead of serving.
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    #[command(flatten, next_help_heading = "Listener and connections")]
    pub listener: ListenerArgs,
    #[command(flatten, next_help_heading = "TLS")]
    pub tls: TlsArgs,
    #[command(flatten, next_help_heading = "Storage")]
    pub storage: StorageArgs,
    #[command(flatten, next_help_heading = "Tokens, passwords and sign-in")]
    pub auth: AuthArgs,
    #[command(flatten, next_help_heading = "Signing keys")]
    pub keys: KeyArgs,
    #[command(flatten, next_help_heading = "Limits")]
    pub limits: LimitArgs,
    #[command(flatten, next_help_heading = "Streams")]
    pub streams: StreamArgs,
    #[command(flatten, next_help_heading = "Browsers")]
    pub web: WebArgs,
    #[command(flatten, next_help_heading = "Logs, traces and metrics")]
    pub telemetry: TelemetryArgs,
    #[command(flatten, next_help_heading = "Shutdown")]
    pub shutdown: ShutdownArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServerCommand {
    /// Ask a running server whether it is SERVING (for container health checks): exit 0 if
    /// it is, 1 if not or if it does not answer in time.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// The server to ask [default: where --listen (USER_SERVICE_LISTEN) serves, on loopback;
    /// https when --tls-cert (USER_SERVICE_TLS_CERT) is set]. With TLS the check trusts
    /// exactly the server's own certificate, and when --tls-client-ca is set it presents
    /// --tls-cert and --tls-key as its client certificate: the same settings, from the same
    /// variables, as the server it runs beside.
    #[arg(long)]
    pub addr: Option<String>,
    /// The service to ask about; the whole server when empty.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
    /// PEM client certificate to present when the server requires one (--tls-client-ca)
    /// [default: the server's own --tls-cert, accepted when a CA in --tls-client-ca signed it
    /// and it does not restrict its use to servers].
    #[arg(
        long,
        env = "USER_SERVICE_HEALTHCHECK_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key for --client-cert.
    #[arg(
        long,
        env = "USER_SERVICE_HEALTHCHECK_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

impl Cli {
    /// Where `healthcheck` asks: `--addr`, or the server's own listen address on loopback,
    /// over TLS when the server serves it.
    pub fn healthcheck_addr(&self, args: &HealthcheckArgs) -> String {
        if let Some(addr) = &args.addr {
            return addr.clone();
        }
        let mut target = self.listener.listen;
        if target.ip().is_unspecified() {
            target.set_ip(match target.ip() {
                IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        let scheme = if self.tls.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{target}")
    }

    /// The health check's TLS, from the server's own TLS settings.
    pub fn healthcheck_tls(
        &self,
        args: &HealthcheckArgs,
    ) -> Result<Option<crate::health::ProbeTls>, ConfigError> {
        let Some(cert) = &self.tls.tls_cert else {
            return Ok(None);
        };
        let server_cert_pem = args::read(cert)?;
        let client = match (&args.client_cert, &args.client_key, &self.tls.tls_client_ca) {
            (Some(client_cert), Some(client_key), _) => {
                Some((args::read(client_cert)?, args::read(client_key)?))
            }
            (_, _, Some(_)) => match &self.tls.tls_key {
                Some(key) => Some((server_cert_pem.clone(), args::read(key)?)),
                None => None,
            },
            _ => None,
        };
        Ok(Some(crate::health::ProbeTls {
            server_cert_pem,
            client,
        }))
    }
}

impl Default for Settings {
    /// The flags' defaults, ignoring the environment: what the server does with no
    /// configuration at all, whatever the caller's shell has set.
    fn default() -> Self {
        let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["user-service"]);
        let cli = Cli::from_arg_matches(&matches).expect("the defaults parse");
        Settings::from_cli(cli).expect("the defaults name no files")
    }
}

impl Settings {
    /// Each component's settings from its group of flags, reading the files they name.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        Ok(Self {
            listener: cli.listener.settings(cli.tls.settings()?),
            storage: cli.storage.settings()?,
            health: cli.storage.health(),
            auth: cli.auth.settings()?,
            keys: cli.keys.settings()?,
            limits: cli.limits.settings(),
            streams: cli.streams.settings(),
            telemetry: cli.telemetry.settings(),
            metrics: cli.telemetry.metrics(),
            web: cli.web.settings(),
            shutdown: cli.shutdown.settings(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    fn parsed(args: &[&str]) -> Result<Cli, clap::Error> {
        let command = std::iter::once("user-service").chain(args.iter().copied());
        Cli::try_parse_from(command)
    }

    #[test]
    fn an_origin_is_kept_as_a_browser_would_send_it() {
        for (given, kept) in [
            ("https://admin.example.com", "https://admin.example.com"),
            ("https://Admin.Example.com/", "https://admin.example.com"),
            ("https://admin.example.com:443", "https://admin.example.com"),
            ("http://localhost:5173", "http://localhost:5173"),
        ] {
            assert_eq!(super::args::parse_origin(given).unwrap(), kept, "{given}");
        }
        for refused in [
            "*",
            "admin.example.com",
            "ftp://admin.example.com",
            "https://admin.example.com/app",
            "https://user@admin.example.com",
        ] {
            let err = super::args::parse_origin(refused).unwrap_err();
            assert!(err.contains("is not an origin"), "{refused}: {err}");
        }
    }

    #[test]
    fn every_boolean_flag_takes_every_documented_form() {
        for (given, expected) in [
            (&["--allow-signup"][..], true),
            (&["--allow-signup", "true"], true),
            (&["--allow-signup=true"], true),
            (&["--allow-signup", "yes"], true),
            (&["--allow-signup=on"], true),
            (&["--allow-signup", "1"], true),
            (&["--allow-signup", "false"], false),
            (&["--allow-signup=no"], false),
            (&["--allow-signup", "off"], false),
            (&["--allow-signup=0"], false),
            (&[], false),
        ] {
            let cli = parsed(given).unwrap_or_else(|err| panic!("{given:?}: {err}"));
            assert_eq!(cli.auth.allow_signup, expected, "{given:?}");
        }
        for (given, expected) in [
            (&["--access-log", "off"][..], false),
            (&["--access-log=false"], false),
            (&["--access-log", "0"], false),
            (&["--access-log"], true),
            (&["--access-log", "yes"], true),
            (&[], true),
        ] {
            let cli = parsed(given).unwrap_or_else(|err| panic!("{given:?}: {err}"));
            assert_eq!(cli.telemetry.access_log, expected, "{given:?}");
        }
        assert!(
            parsed(&["--access-log", "maybe"]).is_err(),
            "other words are refused"
        );
    }

    #[test]
    fn the_help_does_not_narrow_the_boolean_forms() {
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(!help.contains("possible values: true, false"), "{help}");
        assert!(help.contains("true/false, 1/0, yes/no or on/off"), "{help}");
    }

    #[test]
    fn durations_take_their_new_names_their_old_ones_and_human_units() {
        use std::time::Duration;
        let new = parsed(&[
            "--handshake-timeout",
            "30s",
            "--database-operation-timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(new.listener.handshake_timeout, Duration::from_secs(30));
        assert_eq!(
            new.storage.database_operation_timeout,
            Duration::from_secs(2)
        );
        let old = parsed(&[
            "--handshake-timeout-secs",
            "30",
            "--database-operation-timeout-ms",
            "2000",
            "--session-ttl-secs",
            "86400",
        ])
        .unwrap();
        assert_eq!(old.listener.handshake_timeout, Duration::from_secs(30));
        assert_eq!(
            old.storage.database_operation_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(old.auth.session_ttl, Duration::from_secs(86400));
        assert!(
            parsed(&["--watch-progress", "500ms"]).is_err(),
            "under a second"
        );
    }

    #[test]
    fn the_defaults_are_the_components_own() {
        use crate::storage::StorageSettings;
        let defaults = super::Settings::default();
        assert_eq!(
            defaults.storage.operation_timeout,
            StorageSettings::DEFAULT_OPERATION_TIMEOUT
        );
        assert_eq!(
            defaults.storage.statement_timeout,
            StorageSettings::DEFAULT_STATEMENT_TIMEOUT
        );
        assert_eq!(
            defaults.storage.connect_timeout,
            StorageSettings::DEFAULT_CONNECT_TIMEOUT
        );
        assert_eq!(
            defaults.storage.idle_in_transaction_timeout,
            StorageSettings::DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT
        );
    }

    #[test]
    fn each_component_has_its_heading_in_the_help() {
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for heading in [
            "Listener and connections:",
            "TLS:",
            "Storage:",
            "Tokens, passwords and sign-in:",
            "Limits:",
            "Streams:",
            "Browsers:",
            "Logs, traces and metrics:",
            "Shutdown:",
        ] {
            assert!(help.contains(heading), "{heading}: {help}");
        }
    }
}
