//! The TOTP second factor: enrolled and confirmed by the user, asked for at Login with a clear
//! status, each code accepted once, recovery codes used once, and turned off with a code or by
//! an admin.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use totp_rs::{Builder, Secret, Totp};
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{
    ConfirmTotpRequest, DisableTotpRequest, EnrollTotpRequest, LoginRequest, LoginResponse,
};

use crate::helpers::{Bearer, TestApp, create};

const PASSWORD: &str = "correct horse battery";

type Auth = AuthServiceClient<InterceptedService<Channel, Bearer>>;

/// EnrollTotp as the user asks for it: with their password.
fn with_password() -> EnrollTotpRequest {
    EnrollTotpRequest {
        current_password: PASSWORD.into(),
    }
}

async fn auth_as(app: &TestApp, token: Option<&str>) -> Auth {
    AuthServiceClient::with_interceptor(app.channel().await, Bearer::new(token).unwrap())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code an authenticator app would show `seconds` from now.
fn code_at(totp: &Totp, seconds: u64) -> String {
    totp.generate(now() + seconds).to_string()
}

async fn login(app: &TestApp, username: &str, code: &str) -> Result<LoginResponse, tonic::Status> {
    auth_as(app, None)
        .await
        .login(LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
            second_factor_code: code.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Creates `username`, enrolls and confirms a second factor for them: the authenticator, the
/// recovery codes and the user's id.
pub(super) async fn enrolled(app: &TestApp, username: &str) -> (Totp, Vec<String>, String) {
    let user = create(&mut app.client().await, username).await;
    let mut own = auth_as(app, Some(&app.token(&user.id, Role::User))).await;
    let enrollment = own
        .enroll_totp(with_password())
        .await
        .expect("a user enrolls")
        .into_inner();
    assert!(
        enrollment
            .otpauth_uri
            .starts_with("otpauth://totp/user%2Dservice:"),
        "{}",
        enrollment.otpauth_uri
    );
    let secret = Secret::try_from_base32(&enrollment.secret).unwrap();
    let totp = Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .build()
        .unwrap();
    let confirmed = own
        .confirm_totp(ConfirmTotpRequest {
            code: code_at(&totp, 0),
        })
        .await
        .expect("the first code confirms it")
        .into_inner();
    assert_eq!(confirmed.recovery_codes.len(), 10);
    (totp, confirmed.recovery_codes, user.id)
}

#[tokio::test]
async fn login_asks_for_the_code_and_accepts_each_code_once() {
    let app = TestApp::spawn().await;
    let (totp, _, _) = enrolled(&app, "two_factor").await;

    let asked = login(&app, "two_factor", "").await.unwrap_err();
    assert_eq!(asked.code(), Code::FailedPrecondition, "{asked:?}");
    assert!(
        asked.message().contains("second_factor_code"),
        "{}",
        asked.message()
    );

    let valid = [
        totp.generate(now() - 30).to_string(),
        code_at(&totp, 0),
        code_at(&totp, 30),
    ];
    let not_valid = ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|code| !valid.iter().any(|valid| valid == code))
        .unwrap();
    let wrong = login(&app, "two_factor", not_valid).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");

    // The confirmation used this step's code: the next step's is accepted (a step of skew),
    // once.
    let next = code_at(&totp, 30);
    login(&app, "two_factor", &next)
        .await
        .expect("a fresh code logs in");
    let replayed = login(&app, "two_factor", &next).await.unwrap_err();
    assert_eq!(replayed.code(), Code::Unauthenticated, "{replayed:?}");
    assert!(
        replayed.message().contains("already used"),
        "{}",
        replayed.message()
    );
    let older = login(&app, "two_factor", &code_at(&totp, 0))
        .await
        .unwrap_err();
    assert_eq!(
        older.code(),
        Code::Unauthenticated,
        "an earlier step's code: {older:?}"
    );

    let malformed = login(&app, "two_factor", "12-34").await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
    assert!(malformed.message().contains("second_factor_code"));
}

#[tokio::test]
async fn a_recovery_code_logs_in_once() {
    let app = TestApp::spawn().await;
    let (_, codes, _) = enrolled(&app, "lost_phone").await;
    let typed = codes[3].to_uppercase().replace('-', " ");
    login(&app, "lost_phone", &typed)
        .await
        .expect("a recovery code, typed loosely, logs in");
    let again = login(&app, "lost_phone", &codes[3]).await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated, "used up: {again:?}");
    login(&app, "lost_phone", &codes[4])
        .await
        .expect("another one still works");
}

#[tokio::test]
async fn a_user_turns_it_off_with_a_code_and_an_admin_without_one() {
    let app = TestApp::spawn().await;
    let (totp, _, id) = enrolled(&app, "switcher").await;
    let mut own = auth_as(&app, Some(&app.token(&id, Role::User))).await;
    let without = own
        .disable_totp(DisableTotpRequest::default())
        .await
        .unwrap_err();
    assert_eq!(without.code(), Code::InvalidArgument, "{without:?}");
    let again = own.enroll_totp(with_password()).await.unwrap_err();
    assert_eq!(
        again.code(),
        Code::FailedPrecondition,
        "already on: {again:?}"
    );
    own.disable_totp(DisableTotpRequest {
        user_id: String::new(),
        code: code_at(&totp, 30),
    })
    .await
    .expect("a user turns it off with a code");
    login(&app, "switcher", "")
        .await
        .expect("no code is asked for any more");

    let (_, _, other) = enrolled(&app, "locked_out").await;
    let moderator = auth_as(&app, Some(&app.token("helpdesk", Role::Moderator))).await;
    let refused = moderator
        .clone()
        .disable_totp(DisableTotpRequest {
            user_id: other.clone(),
            code: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    auth_as(&app, Some(&app.token("test-admin", Role::Admin)))
        .await
        .disable_totp(DisableTotpRequest {
            user_id: other,
            code: String::new(),
        })
        .await
        .expect("an admin turns anyone's off");
    login(&app, "locked_out", "")
        .await
        .expect("and they log in with the password alone");
}

#[tokio::test]
async fn a_pending_enrollment_asks_for_nothing_and_a_wrong_first_code_confirms_nothing() {
    let app = TestApp::spawn().await;
    let user = create(&mut app.client().await, "hesitant").await;
    let mut own = auth_as(&app, Some(&app.token(&user.id, Role::User))).await;
    own.enroll_totp(with_password()).await.unwrap();
    login(&app, "hesitant", "")
        .await
        .expect("an enrollment not confirmed asks for no code");
    let wrong = own
        .confirm_totp(ConfirmTotpRequest {
            code: "12345x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");
    let service = auth_as(&app, Some(&app.token("test-admin", Role::Admin))).await;
    let refused = service
        .clone()
        .enroll_totp(with_password())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "a service has no second factor"
    );
}

#[tokio::test]
async fn without_a_second_factor_key_enrolling_is_refused_naming_the_flag() {
    let app = TestApp::spawn_with(|settings| settings.auth.second_factor_key = None).await;
    let user = create(&mut app.client().await, "keyless").await;
    let refused = auth_as(&app, Some(&app.token(&user.id, Role::User)))
        .await
        .enroll_totp(with_password())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("--second-factor-key-file"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn enrolling_takes_the_password_again_under_the_login_limits() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(3).unwrap()
    })
    .await;
    let user = create(&mut app.client().await, "stolen_token").await;
    // A stolen access token alone enrolls nothing.
    let mut thief = auth_as(&app, Some(&app.token(&user.id, Role::User))).await;
    let missing = thief
        .enroll_totp(EnrollTotpRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument, "{missing:?}");
    assert!(
        missing.message().contains("current_password"),
        "{}",
        missing.message()
    );
    let mut codes = Vec::new();
    for guess in 0..5 {
        let refused = thief
            .enroll_totp(EnrollTotpRequest {
                current_password: format!("guess number {guess}"),
            })
            .await
            .unwrap_err();
        codes.push(refused.code());
    }
    assert_eq!(
        codes,
        [
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::ResourceExhausted,
            Code::ResourceExhausted
        ],
        "guesses are limited as at Login"
    );
    let other = create(&mut app.client().await, "owner_here").await;
    auth_as(&app, Some(&app.token(&other.id, Role::User)))
        .await
        .enroll_totp(with_password())
        .await
        .expect("the owner, with the password, enrolls");
}

#[tokio::test]
async fn guessing_codes_to_turn_off_ones_own_factor_is_limited_as_at_login() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(3).unwrap()
    })
    .await;
    let (totp, _, id) = enrolled(&app, "guessed").await;
    let mut thief = auth_as(&app, Some(&app.token(&id, Role::User))).await;
    let valid = [
        totp.generate(now() - 30).to_string(),
        code_at(&totp, 0),
        code_at(&totp, 30),
    ];
    let wrong: Vec<String> = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .filter(|code| !valid.contains(code))
        .take(5)
        .collect();
    let mut codes = Vec::new();
    for code in wrong {
        let refused = thief
            .disable_totp(DisableTotpRequest {
                user_id: String::new(),
                code,
            })
            .await
            .unwrap_err();
        codes.push(refused.code());
    }
    assert_eq!(
        codes,
        [
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::ResourceExhausted,
            Code::ResourceExhausted
        ]
    );
}
