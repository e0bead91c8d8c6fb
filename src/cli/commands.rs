//! The one-call commands: create, get, update, delete, list, login, token, health.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::client::{Connection, Failure, forget_login, retrying, store_login};
use super::input::{role, status};
use super::render::{
    list_json, rfc3339, to_json, user_json, user_record, user_table_header, user_table_rows,
};
use crate::files::read_secret_file;
use crate::pb;
use crate::tokens::Role;
use crate::tokens::{Jwt, JwtSettings};

fn key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))
}

fn print_user(user: Option<pb::User>, json: bool) -> Result<(), Failure> {
    let user = user.ok_or_else(|| Failure::other("the server answered without a user"))?;
    if json {
        println!("{}", user_json(&user));
    } else {
        print!("{}", user_record(&user));
    }
    Ok(())
}

#[derive(Args)]
pub struct CreateArgs {
    /// 3-30 ASCII letters, digits or '_'.
    #[arg(long)]
    username: String,
    /// The email address.
    #[arg(long)]
    email: String,
    /// The full name (may be empty).
    #[arg(long, default_value = "")]
    full_name: String,
    /// Asked for without echo when not given.
    #[arg(long, env = "USERCTL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// user, admin or moderator.
    #[arg(long, value_parser = role)]
    role: Option<i32>,
    /// Metadata entry KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = key_value)]
    metadata: Vec<(String, String)>,
}

/// The password given (`--password` or `USERCTL_PASSWORD`); else asked for without echo when
/// standard input is a terminal; else the first line of standard input, where a script pipes
/// it.
fn password_or_prompt(password: Option<String>) -> Result<String, Failure> {
    use std::io::{BufRead, IsTerminal};
    if let Some(password) = password {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return rpassword::prompt_password("Password: ").map_err(|err| {
            Failure::usage(format!("cannot read the password from the terminal: {err}"))
        });
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|err| {
        Failure::usage(format!(
            "cannot read the password from standard input: {err}"
        ))
    })?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Failure::usage(
            "no password: there is no terminal to ask on and standard input is empty; \
             give --password, set USERCTL_PASSWORD, or pipe it on standard input",
        ));
    }
    Ok(password.to_owned())
}

pub async fn create(connection: &Connection, args: CreateArgs, json: bool) -> Result<(), Failure> {
    let request = pb::CreateUserRequest {
        username: args.username,
        email: args.email,
        full_name: args.full_name,
        password: password_or_prompt(args.password)?,
        role: args.role.unwrap_or_default(),
        metadata: args.metadata.into_iter().collect(),
        password_hash: String::new(),
        status: 0,
    };
    // Not retried: a create that reached the server must not be made twice.
    let response = connection
        .users()
        .create_user(connection.request(request))
        .await?;
    print_user(response.into_inner().user, json)
}

#[derive(Args)]
pub struct GetArgs {
    /// The user's id; several ids are read in one BatchGetUsers call (at most 1,000).
    #[arg(required_unless_present_any = ["username", "email"])]
    id: Vec<String>,
    /// Look the user up by username (any letter case) instead.
    #[arg(long, conflicts_with_all = ["id", "email"])]
    username: Option<String>,
    /// Look the user up by email (any letter case) instead.
    #[arg(long, conflicts_with_all = ["id", "username"])]
    email: Option<String>,
}

pub async fn get(connection: &Connection, args: GetArgs, json: bool) -> Result<(), Failure> {
    use pb::lookup_user_request::Key;
    let client = connection.users();
    if args.id.len() > 1 {
        return get_many(connection, args.id, json).await;
    }
    let key = match (args.username, args.email) {
        (Some(username), _) => Some(Key::Username(username)),
        (None, Some(email)) => Some(Key::Email(email)),
        (None, None) => None,
    };
    let response = retrying(connection.timeout, || {
        let mut client = client.clone();
        let by_id = args
            .id
            .first()
            .cloned()
            .map(|user_id| pb::GetUserRequest { user_id });
        let lookup = key
            .clone()
            .map(|key| pb::LookupUserRequest { key: Some(key) });
        async move {
            match (by_id, lookup) {
                (Some(request), _) => client.get_user(connection.request(request)).await,
                (None, Some(request)) => client.lookup_user(connection.request(request)).await,
                (None, None) => unreachable!("clap requires an id, a username or an email"),
            }
        }
    })
    .await?;
    print_user(response.into_inner().user, json)
}

/// Several users by id: each found one as `get` prints it, then the ids not found on standard
/// error; exit 3 (not found) when any was missing.
async fn get_many(connection: &Connection, ids: Vec<String>, json: bool) -> Result<(), Failure> {
    let response = connection
        .users()
        .batch_get_users(connection.request(pb::BatchGetUsersRequest { user_ids: ids }))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.BatchGetUsersResponse")
        );
    } else {
        for user in response.users {
            print_user(Some(user), false)?;
        }
    }
    if response.missing_ids.is_empty() {
        return Ok(());
    }
    Err(Failure {
        code: super::client::exit::NOT_FOUND,
        message: format!("not found: {}", response.missing_ids.join(", ")),
    })
}

#[derive(Args)]
pub struct UpdateArgs {
    /// The user's id.
    id: String,
    /// A new username.
    #[arg(long)]
    username: Option<String>,
    /// A new email address.
    #[arg(long)]
    email: Option<String>,
    /// A new full name.
    #[arg(long)]
    full_name: Option<String>,
    /// user, admin or moderator.
    #[arg(long, value_parser = role)]
    role: Option<i32>,
    /// active, inactive or suspended.
    #[arg(long, value_parser = status)]
    status: Option<i32>,
    /// Set metadata KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    /// Remove metadata KEY (repeatable).
    #[arg(long = "remove-meta")]
    remove_metadata: Vec<String>,
    /// Update only if the user is still at this etag.
    #[arg(long)]
    etag: Option<String>,
}

pub async fn update(connection: &Connection, args: UpdateArgs, json: bool) -> Result<(), Failure> {
    let mut metadata: std::collections::BTreeMap<_, _> = args.metadata.into_iter().collect();
    for key in args.remove_metadata {
        metadata.insert(key, String::new());
    }
    let request = pb::UpdateUserRequest {
        user_id: args.id,
        username: args.username,
        email: args.email,
        full_name: args.full_name,
        role: args.role,
        status: args.status,
        metadata,
        etag: args.etag,
    };
    let response = connection
        .users()
        .update_user(connection.request(request))
        .await?;
    print_user(response.into_inner().user, json)
}

pub async fn delete(
    connection: &Connection,
    id: String,
    etag: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let request = pb::DeleteUserRequest { user_id: id, etag };
    let response = connection
        .users()
        .delete_user(connection.request(request))
        .await?
        .into_inner();
    if json {
        println!("{}", to_json(&response, "userservice.DeleteUserResponse"));
    } else {
        println!("{}", response.message);
    }
    Ok(())
}

#[derive(Args)]
pub struct ListArgs {
    /// Only users with this status: active, inactive or suspended.
    #[arg(long, value_parser = status)]
    status: Option<i32>,
    /// Only users with this role: user, admin or moderator.
    #[arg(long, value_parser = role)]
    role: Option<i32>,
    /// Only users whose username or email starts with this text, without letter case; they
    /// come in the order of the name that matched.
    #[arg(long, short = 'q', default_value = "")]
    query: String,
    /// An AIP-160 filter, e.g. 'status = ACTIVE AND metadata.team = "core"' (see the README).
    #[arg(long, default_value = "")]
    filter: String,
    /// created_at, updated_at or username, optionally followed by asc or desc.
    #[arg(long, default_value = "")]
    order_by: String,
    /// Users per page: the server gives at most 100, and 10 for 0.
    #[arg(long, default_value_t = 20)]
    page_size: i32,
    /// Continue from a next_page_token.
    #[arg(long, default_value = "")]
    page_token: String,
    /// Follow page tokens to the end (with -o json: one user per line).
    #[arg(long)]
    all: bool,
}

pub async fn list(connection: &Connection, args: ListArgs, json: bool) -> Result<(), Failure> {
    let client = connection.users();
    let mut token = args.page_token;
    let mut shown = 0;
    let mut first_page = true;
    loop {
        let request = pb::ListUsersRequest {
            page_size: args.page_size,
            page_token: token.clone(),
            status_filter: args.status.unwrap_or_default(),
            role_filter: args.role.unwrap_or_default(),
            query: args.query.clone(),
            filter: args.filter.clone(),
            order_by: args.order_by.clone(),
        };
        let page = retrying(connection.timeout, || {
            let mut client = client.clone();
            let request = connection.request(request.clone());
            async move { client.list_users(request).await }
        })
        .await?
        .into_inner();
        shown += page.users.len();
        match (json, args.all) {
            (true, true) => {
                for user in &page.users {
                    println!("{}", user_json(user));
                }
            }
            (true, false) => println!("{}", list_json(&page)),
            (false, _) => {
                // The columns have fixed widths, so pages line up under one header.
                if first_page {
                    print!("{}", user_table_header());
                    first_page = false;
                }
                print!("{}", user_table_rows(&page.users));
            }
        }
        if !args.all || page.next_page_token.is_empty() {
            if !json {
                eprintln!("{shown} of {} users", page.total_count);
                if !page.next_page_token.is_empty() {
                    eprintln!("next page: --page-token {}", page.next_page_token);
                }
            }
            return Ok(());
        }
        token = page.next_page_token;
    }
}

pub async fn login(
    connection: &Connection,
    username: String,
    password: Option<String>,
    code: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let request = pb::LoginRequest {
        username,
        password: password_or_prompt(password)?,
        second_factor_code: code.unwrap_or_default(),
    };
    let response = connection
        .auth()
        .login(connection.request(request))
        .await?
        .into_inner();
    let path = store_login(&response.access_token, &response.refresh_token)?;
    let expires = response
        .expires_at
        .as_ref()
        .map(rfc3339)
        .unwrap_or_default();
    let user = response.user.unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({ "user": user_json(&user), "expiresAt": expires, "tokenFile": path })
        );
    } else {
        println!(
            "logged in as {}; the token, valid until {expires}, is stored in {}",
            user.username,
            path.display()
        );
    }
    Ok(())
}

pub async fn logout(connection: &Connection, stored: bool, json: bool) -> Result<(), Failure> {
    connection
        .auth()
        .logout(connection.request(pb::LogoutRequest {}))
        .await?;
    let forgot = stored && forget_login();
    if json {
        println!(
            "{}",
            serde_json::json!({ "loggedOut": true, "forgotStoredLogin": forgot })
        );
    } else if forgot {
        println!("logged out; the stored login is removed");
    } else {
        println!("logged out");
    }
    Ok(())
}

pub async fn start_recovery(
    connection: &Connection,
    login: String,
    json: bool,
) -> Result<(), Failure> {
    let response = connection
        .auth()
        .start_recovery(connection.request(pb::StartRecoveryRequest { login }))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.StartRecoveryResponse")
        );
    } else {
        println!("if the account exists and is active, a recovery code is on its way to its email");
    }
    Ok(())
}

pub async fn complete_recovery(
    connection: &Connection,
    login: String,
    code: String,
    new_password: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let response = connection
        .auth()
        .complete_recovery(connection.request(pb::CompleteRecoveryRequest {
            login,
            code,
            new_password: password_or_prompt(new_password)?,
        }))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.CompleteRecoveryResponse")
        );
    } else {
        println!("the new password is set and every earlier session has ended: log in with it");
    }
    Ok(())
}

pub async fn start_verification(
    connection: &Connection,
    user: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let response = connection
        .auth()
        .start_email_verification(connection.request(pb::StartEmailVerificationRequest {
            user_id: user.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.StartEmailVerificationResponse")
        );
    } else {
        let expires = response
            .expires_at
            .as_ref()
            .map(rfc3339)
            .unwrap_or_default();
        println!("a verification code is on its way to the email; it works until {expires}");
    }
    Ok(())
}

pub async fn verify_email(
    connection: &Connection,
    login: String,
    code: String,
    json: bool,
) -> Result<(), Failure> {
    let response = connection
        .auth()
        .verify_email(connection.request(pb::VerifyEmailRequest { login, code }))
        .await?
        .into_inner();
    if json {
        println!("{}", to_json(&response, "userservice.VerifyEmailResponse"));
    } else {
        let user = response.user.unwrap_or_default();
        println!("{} is verified for {}", user.email, user.username);
    }
    Ok(())
}

/// Prints each delivery as a JSON line as it comes, until the stream ends.
pub async fn deliveries(connection: &Connection, after: i64) -> Result<(), Failure> {
    let mut stream = connection
        .auth()
        .watch_deliveries(connection.request(pb::WatchDeliveriesRequest {
            after_revision: after,
        }))
        .await?
        .into_inner();
    while let Some(delivery) = stream.message().await? {
        println!("{}", to_json(&delivery, "userservice.Delivery"));
    }
    Ok(())
}

pub async fn enroll_totp(
    connection: &Connection,
    password: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let current_password = password_or_prompt(password)?;
    let response = connection
        .auth()
        .enroll_totp(connection.request(pb::EnrollTotpRequest { current_password }))
        .await?
        .into_inner();
    if json {
        println!("{}", to_json(&response, "userservice.EnrollTotpResponse"));
    } else {
        println!("secret: {}", response.secret);
        println!("uri:    {}", response.otpauth_uri);
        eprintln!(
            "userctl: add the secret (or the URI, as a QR code) to an authenticator app, then run `userctl totp confirm CODE` with the code it shows"
        );
    }
    Ok(())
}

pub async fn confirm_totp(
    connection: &Connection,
    code: String,
    json: bool,
) -> Result<(), Failure> {
    let response = connection
        .auth()
        .confirm_totp(connection.request(pb::ConfirmTotpRequest { code }))
        .await?
        .into_inner();
    if json {
        println!("{}", to_json(&response, "userservice.ConfirmTotpResponse"));
    } else {
        for code in &response.recovery_codes {
            println!("{code}");
        }
        eprintln!(
            "userctl: the second factor is on. Keep these recovery codes somewhere safe: each works once, in place of a code, and they are shown this once"
        );
    }
    Ok(())
}

pub async fn disable_totp(
    connection: &Connection,
    user: Option<String>,
    code: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let response = connection
        .auth()
        .disable_totp(connection.request(pb::DisableTotpRequest {
            user_id: user.unwrap_or_default(),
            code: code.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    if json {
        println!("{}", to_json(&response, "userservice.DisableTotpResponse"));
    } else {
        println!("the second factor is off");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct KeyCreateArgs {
    /// The key's name: letters, digits, '.', '-' or '_', unique.
    name: String,
    /// admin, moderator or user: the rights its calls get.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Lifetime, such as 30d or 12h; without it the key does not expire.
    #[arg(long, value_parser = humantime::parse_duration)]
    expires_in: Option<Duration>,
}

pub async fn create_key(
    connection: &Connection,
    args: KeyCreateArgs,
    json: bool,
) -> Result<(), Failure> {
    let expires_at = args
        .expires_in
        .map(|lifetime| prost_types::Timestamp::from(std::time::SystemTime::now() + lifetime));
    let response = connection
        .auth()
        .create_service_key(connection.request(pb::CreateServiceKeyRequest {
            name: args.name,
            role: args.role as i32,
            expires_at,
        }))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.CreateServiceKeyResponse")
        );
    } else {
        let key = response.key.unwrap_or_default();
        println!("created service key {} ({})", key.name, key.id);
        println!("{}", response.secret);
        eprintln!(
            "userctl: the secret above is shown this once: send it as `authorization: Bearer <secret>` (or USERCTL_TOKEN)"
        );
    }
    Ok(())
}

pub async fn list_keys(connection: &Connection, json: bool) -> Result<(), Failure> {
    let response = connection
        .auth()
        .list_service_keys(connection.request(pb::ListServiceKeysRequest {}))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.ListServiceKeysResponse")
        );
    } else {
        print!("{}", super::render::keys_table(&response.keys));
    }
    Ok(())
}

pub async fn revoke_key(connection: &Connection, id: String, json: bool) -> Result<(), Failure> {
    let response = connection
        .auth()
        .revoke_service_key(connection.request(pb::RevokeServiceKeyRequest { key_id: id }))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.RevokeServiceKeyResponse")
        );
    } else {
        println!("revoked; the key stops working on every replica");
    }
    Ok(())
}

pub async fn rotate_signing_key(connection: &Connection, json: bool) -> Result<(), Failure> {
    let response = connection
        .auth()
        .rotate_signing_key(connection.request(pb::RotateSigningKeyRequest {}))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.RotateSigningKeyResponse")
        );
        return Ok(());
    }
    for key in &response.keys {
        let signs_from = key.activates_at.as_ref().map(rfc3339).unwrap_or_default();
        println!(
            "{}  {}  {:<7}  signs from {signs_from}",
            key.kid, key.algorithm, key.state
        );
    }
    Ok(())
}

pub async fn clear_login_failures(
    connection: &Connection,
    user: String,
    json: bool,
) -> Result<(), Failure> {
    let response = connection
        .auth()
        .clear_login_failures(connection.request(pb::ClearLoginFailuresRequest { user_id: user }))
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            to_json(&response, "userservice.ClearLoginFailuresResponse")
        );
    } else {
        println!("cleared {} login failure(s)", response.failures);
    }
    Ok(())
}

pub async fn end_sessions(
    connection: &Connection,
    user: Option<String>,
    stored: bool,
    json: bool,
) -> Result<(), Failure> {
    let own = user.is_none();
    let response = connection
        .auth()
        .end_sessions(connection.request(pb::EndSessionsRequest {
            user_id: user.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    if json {
        println!("{}", to_json(&response, "userservice.EndSessionsResponse"));
    } else {
        println!("ended {} open session(s)", response.ended);
    }
    if own && stored {
        // The stored login was one of them: say so, rather than fail at the next command.
        eprintln!(
            "userctl: this ended the login userctl had stored too: sign in again with `userctl login`"
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct PasswdArgs {
    /// Set this user's password instead of your own (admins only; no current password).
    #[arg(long)]
    user: Option<String>,
    /// Your current password; asked for without echo when not given.
    #[arg(long, env = "USERCTL_PASSWORD", hide_env_values = true)]
    current_password: Option<String>,
    /// The new password; asked for twice without echo when not given.
    #[arg(long, env = "USERCTL_NEW_PASSWORD", hide_env_values = true)]
    new_password: Option<String>,
}

/// A secret from its flag, else asked for without echo on the terminal.
fn secret(value: Option<String>, prompt: &str, flag: &str) -> Result<String, Failure> {
    use std::io::IsTerminal;
    if let Some(value) = value {
        return Ok(value);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!(
            "no terminal to ask for the {prompt} on: give {flag}"
        )));
    }
    rpassword::prompt_password(format!("{prompt}: "))
        .map_err(|err| Failure::usage(format!("cannot read the {prompt}: {err}")))
}

pub async fn passwd(
    connection: &Connection,
    args: PasswdArgs,
    stored: bool,
    json: bool,
) -> Result<(), Failure> {
    let own = args.user.is_none();
    let current_password = if own {
        secret(
            args.current_password,
            "current password",
            "--current-password",
        )?
    } else {
        String::new()
    };
    let new_password = match args.new_password {
        Some(password) => password,
        None => {
            let first = secret(None, "new password", "--new-password")?;
            let again = secret(None, "new password again", "--new-password")?;
            if first != again {
                return Err(Failure::usage("the two new passwords differ"));
            }
            first
        }
    };
    let response = connection
        .auth()
        .change_password(connection.request(pb::ChangePasswordRequest {
            user_id: args.user.unwrap_or_default(),
            current_password,
            new_password,
        }))
        .await
        .map_err(|status| {
            let mut failure = Failure::from(status);
            if own && failure.message.contains("when the caller is a service") {
                failure.message.push_str(
                    ": this token is a service's, which has no password of its own; \
                     name the user whose password to set with --user ID",
                );
            }
            failure
        })?
        .into_inner();
    // Every earlier session ended: the stored login goes on with the new one.
    let stored_in = match &response.login {
        Some(login) if stored => Some(store_login(&login.access_token, &login.refresh_token)?),
        _ => None,
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "changed": true, "tokenFile": stored_in })
        );
    } else {
        println!("password changed; every earlier session of the user has ended");
        if let Some(path) = stored_in {
            println!("the new login is stored in {}", path.display());
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct TokenArgs {
    /// The token's subject: a user id, or a service name.
    #[arg(long)]
    subject: String,
    /// admin, moderator or user.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Lifetime, such as 90s, 30m, 1h or 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// File holding the secret; otherwise USER_SERVICE_JWT_SECRET.
    #[arg(long, conflicts_with = "jwt_secret")]
    jwt_secret_file: Option<PathBuf>,
    /// The secret itself (prefer the file or the environment over a flag).
    #[arg(long, env = "USER_SERVICE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// `iss` claim, when the server requires one.
    #[arg(long, env = "USER_SERVICE_JWT_ISSUER")]
    issuer: Option<String>,
    /// `aud` claim, when the server requires one.
    #[arg(long, env = "USER_SERVICE_JWT_AUDIENCE")]
    audience: Option<String>,
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::from_name(raw).ok_or_else(|| format!("{raw:?} is not admin, moderator or user"))
}

pub fn token(args: TokenArgs, json: bool) -> Result<(), Failure> {
    let secret = match (args.jwt_secret_file, args.jwt_secret) {
        (Some(path), _) => {
            read_secret_file(&path).map_err(|err| Failure::usage(crate::text::chain(&err)))?
        }
        (None, Some(secret)) => secret.into_bytes(),
        (None, None) => {
            return Err(Failure::usage(
                "give --jwt-secret-file or set USER_SERVICE_JWT_SECRET",
            ));
        }
    };
    let settings = JwtSettings {
        secret: Some(secret),
        issuer: args.issuer,
        audience: args.audience,
        token_ttl: args.ttl,
        ..JwtSettings::default()
    };
    let jwt = Jwt::new(&settings).map_err(|err| Failure::usage(err.to_string()))?;
    let (token, expires) = jwt
        .mint(&args.subject, args.role, None)
        .map_err(|err| Failure::other(err.to_string()))?;
    if json {
        let expires_at = rfc3339(&prost_types::Timestamp {
            seconds: i64::try_from(expires).unwrap_or(i64::MAX),
            nanos: 0,
        });
        // The names LoginResponse uses for the same things.
        println!(
            "{}",
            serde_json::json!({ "accessToken": token, "expiresAt": expires_at })
        );
    } else {
        println!("{token}");
    }
    Ok(())
}

pub async fn health(connection: &Connection, service: String, json: bool) -> Result<(), Failure> {
    let client = HealthClient::new(connection.channel());
    let response = retrying(connection.timeout, || {
        let mut client = client.clone();
        let request = connection.request(HealthCheckRequest {
            service: service.clone(),
        });
        async move { client.check(request).await }
    })
    .await?
    .into_inner();
    let status = response.status().as_str_name();
    if json {
        println!("{}", serde_json::json!({ "status": status }));
    } else {
        println!("{status}");
    }
    if response.status() == tonic_health::pb::health_check_response::ServingStatus::Serving {
        Ok(())
    } else {
        Err(Failure {
            code: super::exit::UNAVAILABLE,
            message: format!("the server reports {status}"),
        })
    }
}
