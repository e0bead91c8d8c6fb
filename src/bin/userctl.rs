//! userctl: the command-line client. `userctl token` mints bearer tokens for operators and
//! scripts with the server's HS256 secret.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use user_service::auth::jwt::{Jwt, JwtSettings};
use user_service::domain::Role;

#[derive(Parser)]
#[command(
    name = "userctl",
    version,
    about = "Command-line client for user-service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mint a bearer token signed with the server's HS256 secret.
    ///
    /// Example: userctl token --subject deploy-bot --role admin --ttl 1h
    Token {
        /// The token's subject: a user id, or a service name.
        #[arg(long)]
        subject: String,
        /// admin, moderator or user.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Lifetime, such as 90s, 30m, 1h or 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// File holding the secret; otherwise USER_SERVICE_JWT_SECRET.
        #[arg(long, conflicts_with = "jwt_secret")]
        jwt_secret_file: Option<PathBuf>,
        #[arg(long, env = "USER_SERVICE_JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<String>,
        /// `iss` claim, when the server requires one.
        #[arg(long, env = "USER_SERVICE_JWT_ISSUER")]
        issuer: Option<String>,
        /// `aud` claim, when the server requires one.
        #[arg(long, env = "USER_SERVICE_JWT_AUDIENCE")]
        audience: Option<String>,
    },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::from_name(raw).ok_or_else(|| format!("{raw:?} is not admin, moderator or user"))
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{raw:?} needs a unit: s, m, h or d"))?;
    let (amount, unit) = raw.split_at(split);
    let amount: u64 = amount
        .parse()
        .map_err(|_| format!("{raw:?} must start with a number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(amount * seconds))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Token {
            subject,
            role,
            ttl,
            jwt_secret_file,
            jwt_secret,
            issuer,
            audience,
        } => {
            let secret = match (jwt_secret_file, jwt_secret) {
                (Some(path), _) => match std::fs::read_to_string(&path) {
                    Ok(secret) => secret.trim_end().as_bytes().to_vec(),
                    Err(err) => {
                        eprintln!("userctl: cannot read {}: {err}", path.display());
                        return ExitCode::from(2);
                    }
                },
                (None, Some(secret)) => secret.into_bytes(),
                (None, None) => {
                    eprintln!("userctl: give --jwt-secret-file or set USER_SERVICE_JWT_SECRET");
                    return ExitCode::from(2);
                }
            };
            let settings = JwtSettings {
                secret: Some(secret),
                issuer,
                audience,
                token_ttl: ttl,
                ..JwtSettings::default()
            };
            let jwt = match Jwt::new(&settings) {
                Ok((jwt, _)) => jwt,
                Err(err) => {
                    eprintln!("userctl: {err}");
                    return ExitCode::from(2);
                }
            };
            let (token, _) = jwt
                .mint(&subject, role, None)
                .expect("an HS256 key can sign");
            println!("{token}");
            ExitCode::SUCCESS
        }
    }
}
