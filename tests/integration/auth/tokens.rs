//! Bearer tokens: the reasons bad ones are refused, pinned algorithms, issuer and audience, the
//! development token, and EdDSA tokens Login signs.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;
use user_service::pb::ListUsersRequest;

use crate::helpers::{TestApp, create};

use super::{Op, attempt};

fn forged(header: &str, claims: &serde_json::Value, signature: &str) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!(
        "{}.{}.{}",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes()),
        signature
    )
}

fn in_an_hour() -> u64 {
    jsonwebtoken::get_current_timestamp() + 3600
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_with_a_reason() {
    let app = TestApp::spawn().await;
    let claims = |exp: u64| serde_json::json!({ "sub": "svc", "role": "admin", "exp": exp });
    let sign = |claims: &serde_json::Value, secret: &[u8]| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let cases = [
        ("garbage", "not.a.token".to_string(), "malformed"),
        (
            "expired",
            sign(
                &claims(jsonwebtoken::get_current_timestamp() - 3600),
                crate::helpers::TEST_SECRET.as_bytes(),
            ),
            "expired",
        ),
        (
            "wrong signature",
            sign(
                &claims(in_an_hour()),
                b"some-other-secret-of-thirty-two-bytes",
            ),
            "signature",
        ),
        (
            "alg none",
            forged(r#"{"alg":"none","typ":"JWT"}"#, &claims(in_an_hour()), ""),
            "token",
        ),
        (
            "no expiry",
            sign(
                &serde_json::json!({ "sub": "svc", "role": "admin" }),
                crate::helpers::TEST_SECRET.as_bytes(),
            ),
            "exp",
        ),
        (
            "unknown role",
            sign(
                &serde_json::json!({ "sub": "svc", "role": "root", "exp": in_an_hour() }),
                crate::helpers::TEST_SECRET.as_bytes(),
            ),
            "role",
        ),
    ];
    for (case, token, reason) in cases {
        let mut client = app.client_with(Some(&token)).await;
        let status = client
            .list_users(ListUsersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert!(
            status.message().contains(reason),
            "{case}: {}",
            status.message()
        );
    }

    let mut client = app.client_with(None).await;
    let status = client
        .list_users(ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("bearer token"),
        "{}",
        status.message()
    );

    let mut basic = user_service::pb::user_service_client::UserServiceClient::with_interceptor(
        app.channel().await,
        |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
            Ok(request)
        },
    );
    let status = basic
        .list_users(ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Bearer"), "{}", status.message());
}

const RSA_PUBLIC: &str = include_str!("../../fixtures/jwt/rsa_public.pem");
const RSA_PRIVATE: &str = include_str!("../../fixtures/jwt/rsa_private.pem");

#[tokio::test]
async fn with_an_rsa_key_the_algorithm_is_pinned_and_issuer_and_audience_are_checked() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.jwt.secret = None;
        settings.auth.jwt.public_key_pem = Some(RSA_PUBLIC.as_bytes().to_vec());
        settings.auth.jwt.issuer = Some("https://issuer.example".into());
        settings.auth.jwt.audience = Some("user-service".into());
    })
    .await;
    let claims = |iss: &str, aud: &str| serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(), "iss": iss, "aud": aud });
    let rs256 = |claims: &serde_json::Value| {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
    };
    // The classic confusion attack: HS256 with the public key as the shared secret.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("https://issuer.example", "user-service"),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .unwrap();
    let cases = [
        (
            "valid RS256",
            rs256(&claims("https://issuer.example", "user-service")),
            Code::Ok,
        ),
        (
            "HS256 signed with the RSA public key",
            confused,
            Code::Unauthenticated,
        ),
        (
            "wrong issuer",
            rs256(&claims("https://evil.example", "user-service")),
            Code::Unauthenticated,
        ),
        (
            "wrong audience",
            rs256(&claims("https://issuer.example", "other-service")),
            Code::Unauthenticated,
        ),
        (
            "no issuer",
            rs256(
                &serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(), "aud": "user-service" }),
            ),
            Code::Unauthenticated,
        ),
        (
            "no audience",
            rs256(
                &serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(), "iss": "https://issuer.example" }),
            ),
            Code::Unauthenticated,
        ),
        (
            "not valid for another ten minutes (nbf)",
            rs256(
                &serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(),
                "iss": "https://issuer.example", "aud": "user-service",
                "nbf": jsonwebtoken::get_current_timestamp() + 600 }),
            ),
            Code::Unauthenticated,
        ),
        (
            "valid since a minute ago (nbf)",
            rs256(
                &serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(),
                "iss": "https://issuer.example", "aud": "user-service",
                "nbf": jsonwebtoken::get_current_timestamp() - 60 }),
            ),
            Code::Ok,
        ),
    ];
    for (case, token, expected) in cases {
        let mut client = app.client_with(Some(&token)).await;
        assert_eq!(attempt(&mut client, Op::List).await, expected, "{case}");
    }
}

#[tokio::test]
async fn without_a_configured_key_the_logged_development_token_works() {
    let database = crate::helpers::TestDatabase::new();
    let server = crate::helpers::ServerProcess::start_without_key(&database);
    // Logged at start, before the address the harness waits for.
    let line = server.wait_for_log("DEVELOPMENT ONLY");
    let token = line
        .split("24 hours: ")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the line ends with the token")
        .to_owned();

    let channel = server.channel().await.unwrap();
    let mut client = user_service::pb::user_service_client::UserServiceClient::with_interceptor(
        channel,
        crate::helpers::Bearer::new(Some(&token)).unwrap(),
    );
    client
        .list_users(ListUsersRequest::default())
        .await
        .expect("the development token is an admin token");
}

const ED25519_PUBLIC: &str = include_str!("../../fixtures/jwt/ed25519_public.pem");
const ED25519_PRIVATE: &str = include_str!("../../fixtures/jwt/ed25519_private.pem");

#[tokio::test]
async fn with_a_legacy_ed25519_key_its_tokens_verify_and_login_signs_with_the_services_own_keys() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.jwt.secret = None;
        settings.auth.jwt.public_key_pem = Some(ED25519_PUBLIC.as_bytes().to_vec());
        settings.auth.jwt.private_key_pem = Some(ED25519_PRIVATE.as_bytes().to_vec());
    })
    .await;
    let admin_token = {
        let key = EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap();
        let claims = serde_json::json!({ "sub": "ops", "role": "admin", "exp": in_an_hour() });
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
    };
    let mut admin = app.client_with(Some(&admin_token)).await;
    let user = create(&mut admin, "edwards").await;

    let response = super::login::login(&app, "edwards", "correct horse battery")
        .await
        .expect("login signs");
    let header = jsonwebtoken::decode_header(&response.access_token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256, "the service's own key signs");
    assert!(header.kid.is_some(), "and names itself");
    let mut client = app.client_with(Some(&response.access_token)).await;
    assert_eq!(attempt(&mut client, Op::Get(user.id)).await, Code::Ok);
}
