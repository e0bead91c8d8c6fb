//! Recovery and verification codes: StartRecovery answers alike for everyone, the code reaches
//! the mailer's WatchDeliveries only, CompleteRecovery sets the password once per code and
//! ends every session, wrong guesses run out, and VerifyEmail marks the email verified until
//! it changes.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{
    CompleteRecoveryRequest, Delivery, DeliveryPurpose, LoginRequest,
    StartEmailVerificationRequest, StartRecoveryRequest, UpdateUserRequest, VerifyEmailRequest,
    WatchDeliveriesRequest,
};

use crate::helpers::{Bearer, TestApp, create};

type Auth = AuthServiceClient<InterceptedService<Channel, Bearer>>;

async fn auth_as(app: &TestApp, token: Option<&str>) -> Auth {
    AuthServiceClient::with_interceptor(app.channel().await, Bearer::new(token).unwrap())
}

/// The mailer: a service with admin rights reading deliveries after `after`.
async fn mailer(app: &TestApp, after: i64) -> tonic::Streaming<Delivery> {
    auth_as(app, Some(&app.token("mailer", Role::Admin)))
        .await
        .watch_deliveries(WatchDeliveriesRequest {
            after_revision: after,
        })
        .await
        .expect("a service reads deliveries")
        .into_inner()
}

async fn next(deliveries: &mut tonic::Streaming<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), deliveries.message())
        .await
        .expect("a delivery within 5 s")
        .expect("the stream is healthy")
        .expect("the stream goes on")
}

async fn login(app: &TestApp, username: &str, password: &str) -> Result<(), tonic::Status> {
    auth_as(app, None)
        .await
        .login(LoginRequest {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .map(drop)
}

async fn complete(
    app: &TestApp,
    login: &str,
    code: &str,
    password: &str,
) -> Result<(), tonic::Status> {
    auth_as(app, None)
        .await
        .complete_recovery(CompleteRecoveryRequest {
            login: login.into(),
            code: code.into(),
            new_password: password.into(),
        })
        .await
        .map(drop)
}

async fn start_recovery(app: &TestApp, login: &str) -> Duration {
    let started = Instant::now();
    auth_as(app, None)
        .await
        .start_recovery(StartRecoveryRequest {
            login: login.into(),
        })
        .await
        .expect("StartRecovery always answers the same");
    started.elapsed()
}

#[tokio::test]
async fn a_recovery_code_reaches_only_the_mailer_sets_the_password_once_and_ends_sessions() {
    let app = TestApp::spawn().await;
    let user = create(&mut app.client().await, "forgot").await;
    let mut own = app
        .client_with(Some(&app.token(&user.id, Role::User)))
        .await;
    let mut deliveries = mailer(&app, 0).await;

    // An unknown name first: its (absent) delivery would come before the real one.
    start_recovery(&app, "nobody_at_all").await;
    start_recovery(&app, &user.email.to_uppercase()).await;
    let delivery = next(&mut deliveries).await;
    assert_eq!(delivery.purpose, DeliveryPurpose::Recovery as i32);
    assert_eq!(
        delivery.user_id, user.id,
        "only the existing user's code is delivered"
    );
    assert_eq!(delivery.email, user.email);

    let wrong = complete(&app, "forgot", "aaaaa-aaaaa", "a new passphrase")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    complete(
        &app,
        "forgot",
        &delivery.code.to_uppercase(),
        "a new passphrase",
    )
    .await
    .expect("the code, typed in capitals, sets the password");
    let reused = complete(&app, "forgot", &delivery.code, "another passphrase")
        .await
        .unwrap_err();
    assert_eq!(
        reused.code(),
        Code::Unauthenticated,
        "a code works once: {reused:?}"
    );

    login(&app, "forgot", "a new passphrase")
        .await
        .expect("the new password works");
    let old = login(&app, "forgot", "correct horse battery")
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    let ended = own
        .get_user(user_service::pb::GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        ended.code(),
        Code::Unauthenticated,
        "tokens from before end: {ended:?}"
    );
}

#[tokio::test]
async fn wrong_codes_run_out_and_an_unknown_login_is_refused_alike() {
    let app = TestApp::spawn().await;
    create(&mut app.client().await, "guessed_at").await;
    let mut deliveries = mailer(&app, 0).await;
    start_recovery(&app, "guessed_at").await;
    let code = next(&mut deliveries).await.code;
    for _ in 0..5 {
        let wrong = complete(&app, "guessed_at", "22222-22222", "a new passphrase")
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let void = complete(&app, "guessed_at", &code, "a new passphrase")
        .await
        .unwrap_err();
    assert_eq!(
        void.code(),
        Code::Unauthenticated,
        "five wrong guesses void the code"
    );
    let unknown = complete(&app, "nobody_here", &code, "a new passphrase")
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.code(), unknown.message()),
        (void.code(), void.message()),
        "an unknown login is answered as a wrong code"
    );
}

#[tokio::test]
async fn start_recovery_takes_as_long_for_an_unknown_user_as_for_a_real_one() {
    let app = TestApp::spawn().await;
    create(&mut app.client().await, "timed").await;
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..15 {
        known.push(start_recovery(&app, "timed").await);
        unknown.push(start_recovery(&app, "not_timed").await);
    }
    let (known, unknown) = (median(known), median(unknown));
    let gap = known.abs_diff(unknown);
    assert!(
        gap < Duration::from_millis(20),
        "answers wait on nothing that depends on the user: known {known:?}, unknown {unknown:?}"
    );
}

#[tokio::test]
async fn a_verification_code_marks_the_email_verified_until_it_changes() {
    let app = TestApp::spawn().await;
    let user = create(&mut app.client().await, "verifier").await;
    assert!(!user.email_verified);
    let mut deliveries = mailer(&app, 0).await;
    let mut own = auth_as(&app, Some(&app.token(&user.id, Role::User))).await;
    let started = own
        .start_email_verification(StartEmailVerificationRequest::default())
        .await
        .expect("a user asks to verify their email")
        .into_inner();
    assert!(started.expires_at.is_some());
    let delivery = next(&mut deliveries).await;
    assert_eq!(delivery.purpose, DeliveryPurpose::Verification as i32);

    let verified = auth_as(&app, None)
        .await
        .verify_email(VerifyEmailRequest {
            login: "verifier".into(),
            code: delivery.code.clone(),
        })
        .await
        .expect("the code verifies the email")
        .into_inner()
        .user
        .unwrap();
    assert!(verified.email_verified);
    let again = own
        .start_email_verification(StartEmailVerificationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "already verified");

    let changed = app
        .client()
        .await
        .update_user(UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("verifier@elsewhere.example".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!changed.email_verified, "a new email is not verified");
}

#[tokio::test]
async fn only_an_admin_service_reads_deliveries_and_a_reader_resumes_after_a_revision() {
    let app = TestApp::spawn().await;
    let user = create(&mut app.client().await, "resumed").await;
    for token in [
        app.token(&user.id, Role::User),
        app.token("helpdesk", Role::Moderator),
    ] {
        let refused = auth_as(&app, Some(&token))
            .await
            .watch_deliveries(WatchDeliveriesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let admin_user = create(&mut app.client().await, "admin_person").await;
    let refused = auth_as(&app, Some(&app.token(&admin_user.id, Role::Admin)))
        .await
        .watch_deliveries(WatchDeliveriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "a user, even an admin, does not see codes"
    );

    let mut deliveries = mailer(&app, 0).await;
    start_recovery(&app, "resumed").await;
    let first = next(&mut deliveries).await;
    start_recovery(&app, "resumed").await;
    let second = next(&mut deliveries).await;
    assert!(second.revision > first.revision);
    let mut resumed = mailer(&app, first.revision).await;
    assert_eq!(
        next(&mut resumed).await,
        second,
        "a reader resumes after what it handled"
    );
}

#[tokio::test]
async fn a_flood_of_recoveries_for_one_account_sends_five_codes_and_answers_alike() {
    let app = TestApp::spawn().await;
    let user = create(&mut app.client().await, "flooded").await;
    let mut deliveries = mailer(&app, 0).await;
    for _ in 0..12 {
        start_recovery(&app, "flooded").await;
    }
    // By email too: the same account.
    start_recovery(&app, &user.email).await;
    for _ in 0..5 {
        assert_eq!(next(&mut deliveries).await.user_id, user.id);
    }
    let more = tokio::time::timeout(Duration::from_secs(1), deliveries.message()).await;
    assert!(
        more.is_err(),
        "five codes an hour reach one account: {more:?}"
    );
    // Another account is not held up by this one's limit.
    let other = create(&mut app.client().await, "bystander").await;
    start_recovery(&app, "bystander").await;
    assert_eq!(next(&mut deliveries).await.user_id, other.id);
}

#[tokio::test]
async fn the_owner_is_told_when_a_second_factor_goes_on_or_off_and_when_recovery_leaves_one() {
    let app = TestApp::spawn().await;
    let mut deliveries = mailer(&app, 0).await;
    let (_, _, id) = super::totp::enrolled(&app, "targeted").await;
    let notice = next(&mut deliveries).await;
    assert_eq!(
        (
            notice.purpose,
            notice.user_id.as_str(),
            notice.code.as_str()
        ),
        (DeliveryPurpose::SecondFactorEnabled as i32, id.as_str(), ""),
        "a notice, with no code: {notice:?}"
    );
    start_recovery(&app, "targeted").await;
    let code = next(&mut deliveries).await;
    assert_eq!(code.purpose, DeliveryPurpose::Recovery as i32);
    let recovered = auth_as(&app, None)
        .await
        .complete_recovery(CompleteRecoveryRequest {
            login: "targeted".into(),
            code: code.code,
            new_password: "a new passphrase".into(),
        })
        .await
        .expect("the code recovers the account")
        .into_inner();
    assert!(
        recovered.second_factor_enabled,
        "the answer says a second factor stays"
    );
    let notice = next(&mut deliveries).await;
    assert_eq!(notice.purpose, DeliveryPurpose::PasswordRecovered as i32);
    auth_as(&app, Some(&app.token("test-admin", Role::Admin)))
        .await
        .disable_totp(user_service::pb::DisableTotpRequest {
            user_id: id.clone(),
            code: String::new(),
        })
        .await
        .expect("an admin turns it off");
    let notice = next(&mut deliveries).await;
    assert_eq!(
        (notice.purpose, notice.user_id.as_str()),
        (DeliveryPurpose::SecondFactorDisabled as i32, id.as_str())
    );
}
