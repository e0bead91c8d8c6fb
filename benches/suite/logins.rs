//! Figure 3c: Login, with and without a second factor, against Login's hashing limit.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use pb::auth_service_client::AuthServiceClient;
use user_service::domain::UserId;

use super::*;

/// Users seeded for the figure: each logs in with a second factor once (a code works once).
const USERS: usize = 2_000;

/// Seeds `USERS` users whose stored hash is `hash` (the default cost, so no login rehashes).
async fn seed_with(url: &str, hash: &user_service::domain::PasswordHash) -> Vec<UserId> {
    let store = Store::open(&StorageSettings {
        database_url: url.to_owned(),
        ..StorageSettings::default()
    })
    .await
    .unwrap();
    let items = (0..USERS)
        .map(|i| BatchItem {
            position: i,
            user: NewUser {
                username: Username::parse(format!("login{i}")).unwrap(),
                email: Email::parse(format!("login{i}@example.com")).unwrap(),
                full_name: FullName::parse(format!("Login User {i}")).unwrap(),
                password_hash: hash.clone(),
                role: Role::User,
                status: user_service::domain::UserStatus::Active,
                metadata: Metadata::default(),
                actor: Actor::Service("bench".into()),
            },
        })
        .collect();
    let outcomes = store.create_batch(items).await.unwrap();
    store.close().await.unwrap();
    outcomes
        .into_iter()
        .map(|(_, outcome)| outcome.unwrap().user.id)
        .collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Enrolls and confirms a second factor for `user`: their authenticator.
async fn enroll(app: &TestApp, channel: &tonic::transport::Channel, user: UserId) -> totp_rs::Totp {
    let token = app.token(&user.to_string(), Role::User);
    let mut own =
        AuthServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(&token)).unwrap());
    let secret = own
        .enroll_totp(pb::EnrollTotpRequest {
            current_password: "benchmark password".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let secret = totp_rs::Secret::try_from_base32(&secret).unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .build()
        .unwrap();
    own.confirm_totp(pb::ConfirmTotpRequest {
        code: totp.generate(now_secs()).to_string(),
    })
    .await
    .unwrap();
    totp
}

/// Logins per second for `run` from `callers` callers, each taking the next user; `code`
/// gives a user's second-factor code (empty: none).
async fn login_rate(
    channel: &tonic::transport::Channel,
    callers: usize,
    run: Duration,
    code: impl Fn(usize) -> String + Send + Sync + 'static,
) -> (f64, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let code = Arc::new(code);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (next, code) = (next.clone(), code.clone());
            let mut auth = AuthServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, 0usize);
                while started.elapsed() < run {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= USERS {
                        break;
                    }
                    let answer = auth
                        .login(pb::LoginRequest {
                            username: format!("login{i}"),
                            password: "benchmark password".into(),
                            second_factor_code: code(i),
                        })
                        .await;
                    match answer {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed += f;
    }
    (ok as f64 / started.elapsed().as_secs_f64(), failed)
}

/// Password checks per second on Login's share of the cores, with nothing else running: the
/// hashing limit, measured with the same hasher settings, callers and run as the logins.
async fn hashing_limit(callers: usize, run: Duration) -> f64 {
    let hasher = PasswordHasher::new(Argon2Settings::default()).unwrap();
    let password = Password::parse("benchmark password".into()).unwrap();
    let hash = hasher.hash(password.clone()).await.unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (hasher, password, hash) = (hasher.clone(), password.clone(), hash.clone());
            tokio::spawn(async move {
                let mut checked = 0usize;
                while started.elapsed() < run {
                    hasher.verify(password.clone(), hash.clone()).await.unwrap();
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    let mut checked = 0;
    for task in tasks {
        checked += task.await.unwrap();
    }
    checked as f64 / started.elapsed().as_secs_f64()
}

/// Figure 3c: Login with the default Argon2 cost, without and with a second factor, as a share
/// of Login's hashing limit (Login hashes on its own share of the cores: half, at least one).
/// The limit is measured just before each login run, with the same callers for as long, so
/// both see the machine alike.
pub(super) async fn logins(suite: &mut Suite) {
    println!("\n3c. Login, without and with a second factor (default Argon2)");
    let hasher = PasswordHasher::new(Argon2Settings::default()).unwrap();
    let password = Password::parse("benchmark password".into()).unwrap();
    let hash = hasher.hash(password.clone()).await.unwrap();
    let share = suite.cores.div_ceil(2);

    let database = suite.dir.path().join("logins.db");
    let url = format!("sqlite://{}", database.display());
    let users = seed_with(&url, &hash).await;
    let mut settings = settings(&database, Argon2Settings::default());
    settings.auth.login_attempts_per_minute = NonZeroU32::new(1_000_000).unwrap();
    settings.auth.second_factor_key =
        Some(b"the benchmark's second-factor key, 32+ bytes".to_vec());
    let (app, addr) = in_process(settings).await;
    let channel = tonic::transport::Endpoint::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let callers = suite.cores * 4;
    let run = Duration::from_secs(8);
    let plain_limit = hashing_limit(callers, run).await;
    let (plain, plain_failed) = login_rate(&channel, callers, run, |_| String::new()).await;
    println!(
        "   password checks alone ({share} core(s)): {plain_limit:.1}/s; Login: {plain:.1}/s ({plain_failed} failed)"
    );

    // A second factor for every user, then each logs in once with the next step's code (the
    // confirmation used this step's, and a code works once).
    let mut authenticators = Vec::with_capacity(users.len());
    for user in &users {
        authenticators.push(enroll(&app, &channel, *user).await);
    }
    let totp_limit = hashing_limit(callers, run).await;
    let at = now_secs() + 30;
    let codes: Vec<String> = authenticators
        .iter()
        .map(|totp| totp.generate(at).to_string())
        .collect();
    let (with_totp, totp_failed) =
        login_rate(&channel, callers, run, move |i| codes[i].clone()).await;
    println!(
        "   password checks alone: {totp_limit:.1}/s; Login with a TOTP code: {with_totp:.1}/s ({totp_failed} failed)"
    );
    let _ = app.stop().await;
    for (name, rate, limit) in [
        (
            "Login / Login's hashing limit (default Argon2)",
            plain,
            plain_limit,
        ),
        (
            "Login with TOTP / Login's hashing limit",
            with_totp,
            totp_limit,
        ),
    ] {
        let r = rate / limit;
        row(
            &mut suite.rows,
            name,
            format!("{rate:.1}/{limit:.1}/s = {r:.2}"),
            ">= 0.85",
            verdict(r, 0.85, true),
        );
    }
}
