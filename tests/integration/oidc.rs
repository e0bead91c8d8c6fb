//! The directory as an issuer: its own signing keys (ES256, with `kid`), published in a JWKS
//! with ETag and 304, rotated ahead of use and kept across restarts; discovery; and token
//! introspection and revocation for callers with a service key, on both backends.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{GetUserRequest, RefreshRequest, RotateSigningKeyRequest, UserRole};

use crate::auth::keys::{admin_auth, auth_as, create_key};
use crate::auth::login::login;
use crate::helpers::{TestApp, create};

/// An HTTP/1.1 answer.
pub struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }
}

/// One HTTP/1.1 request, its connection closed after the answer.
pub async fn http1(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        addr,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub async fn jwks_at(addr: std::net::SocketAddr) -> JwkSet {
    let answer = http1(addr, "GET", "/.well-known/jwks.json", &[], "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

async fn jwks(app: &TestApp) -> JwkSet {
    jwks_at(app.addr).await
}

/// `token` verified with the key its `kid` names in `set`, as any JWT library does it.
fn verified_by(set: &JwkSet, token: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|err| err.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|err| err.to_string())?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|err| err.to_string())
}

/// A new user's access token from Login.
async fn signed_in(app: &TestApp, username: &str) -> String {
    create(&mut app.client().await, username).await;
    login(app, username, "correct horse battery")
        .await
        .unwrap()
        .access_token
}

pub fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn login_tokens_are_es256_with_a_kid_that_the_published_jwks_verifies() {
    let app = TestApp::spawn().await;
    let token = signed_in(&app, "issued").await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let claims = verified_by(&jwks(&app).await, &token).expect("the JWKS verifies the token");
    assert_eq!(
        claims["iss"],
        format!("http://{}", app.addr),
        "the issuer is the server"
    );

    let jwks = http1(app.addr, "GET", "/.well-known/jwks.json", &[], "").await;
    let key = &jwks.json()["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert_eq!(
        (key["use"].as_str(), key["alg"].as_str()),
        (Some("sig"), Some("ES256"))
    );
    assert!(key.get("d").is_none(), "no private part is published");
    let etag = jwks.header("etag").expect("an ETag").to_owned();
    assert!(jwks.header("cache-control").unwrap().contains("max-age="));
    let again = http1(
        app.addr,
        "GET",
        "/.well-known/jwks.json",
        &[("If-None-Match", &etag)],
        "",
    )
    .await;
    assert_eq!(again.status, 304, "a verifier holding it is told so");
    assert!(again.body.is_empty());
    let other = http1(
        app.addr,
        "GET",
        "/.well-known/jwks.json",
        &[("If-None-Match", "\"other\"")],
        "",
    )
    .await;
    assert_eq!(other.status, 200);
}

#[tokio::test]
async fn the_jwks_and_discovery_are_served_over_http2_too() {
    let app = TestApp::spawn().await;
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ] {
        let request = http::Request::get(format!("http://{}{path}", app.addr))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let mut body = response.into_body();
        let mut received = Vec::new();
        while let Some(data) = body.data().await {
            received.extend_from_slice(&data.unwrap());
        }
        let document: Value = serde_json::from_slice(&received).unwrap();
        assert!(document.is_object(), "{path}");
        client = client.ready().await.unwrap();
    }
}

#[tokio::test]
async fn discovery_names_this_issuer_and_only_what_it_serves() {
    let app = TestApp::spawn().await;
    let answer = http1(
        app.addr,
        "GET",
        "/.well-known/openid-configuration",
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 200);
    let document = answer.json();
    let issuer = format!("http://{}", app.addr);
    assert_eq!(document["issuer"], issuer.as_str());
    assert_eq!(
        document["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json")
    );
    assert_eq!(
        document["introspection_endpoint"],
        format!("{issuer}/oauth2/introspect")
    );
    assert_eq!(
        document["revocation_endpoint"],
        format!("{issuer}/oauth2/revoke")
    );
    for absent in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
    ] {
        assert!(document.get(absent).is_none(), "{absent} is not served yet");
    }
    assert!(answer.header("etag").is_some());
}

#[tokio::test]
async fn a_rotation_publishes_the_next_key_at_once_and_signs_with_it_only_after_publish_ahead() {
    const AHEAD: Duration = Duration::from_secs(2);
    let app = TestApp::spawn_with(|settings| {
        settings.keys.publish_ahead = AHEAD;
        settings.keys.rotation = Duration::from_secs(3600);
    })
    .await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "rotated").await;
    let before = login(&app, "rotated", "correct horse battery")
        .await
        .unwrap();
    let old = kid_of(&before.access_token);

    let mut auth = admin_auth(&app).await;
    let keys = auth
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .expect("an admin rotates")
        .into_inner()
        .keys;
    let states: Vec<(&str, &str)> = keys
        .iter()
        .map(|key| (key.kid.as_str(), key.state.as_str()))
        .collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert_eq!(states[0], (old.as_str(), "active"));
    assert_eq!(states[1].1, "next");
    let new = states[1].0.to_owned();
    let set = jwks(&app).await;
    assert!(
        set.find(&new).is_some(),
        "the next key is published at once"
    );
    let again = auth
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(again.len(), 2, "a rotation already waiting adds nothing");

    let during = login(&app, "rotated", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(
        kid_of(&during.access_token),
        old,
        "the next key does not sign yet"
    );
    tokio::time::sleep(AHEAD + Duration::from_millis(200)).await;
    let after = login(&app, "rotated", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(
        kid_of(&after.access_token),
        new,
        "the next key signs from its instant"
    );
    let set = jwks(&app).await;
    verified_by(&set, &before.access_token).expect("the retired key stays published");
    verified_by(&set, &after.access_token).expect("the new key verifies");
    let mut old_client = app.client_with(Some(&before.access_token)).await;
    old_client
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("a token signed by the retired key still works");

    let mut user_auth = auth_as(&app, &after.access_token).await;
    let refused = user_auth
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

#[tokio::test]
async fn signing_keys_and_their_tokens_survive_a_restart() {
    let app = TestApp::spawn().await;
    let token = signed_in(&app, "restarted").await;
    let app = app.restart().await;
    assert!(
        jwks(&app).await.find(&kid_of(&token)).is_some(),
        "the same key"
    );
    let mut client = app.client_with(Some(&token)).await;
    client
        .list_users(user_service::pb::ListUsersRequest::default())
        .await
        .map(|_| ())
        .or_else(|status| match status.code() {
            // A user may not list; what matters is that the token was accepted.
            Code::PermissionDenied => Ok(()),
            _ => Err(status),
        })
        .expect("a token from before the restart is accepted");
}

#[tokio::test]
async fn a_token_naming_our_key_with_another_algorithm_is_refused_and_other_kids_go_to_the_legacy_key()
 {
    let app = TestApp::spawn().await;
    let token = signed_in(&app, "tricked").await;
    let kid = kid_of(&token);
    let claims = serde_json::json!({
        "sub": "intruder", "role": "admin",
        "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600,
    });
    // HS256 keyed with the published public key's text: the old alg-confusion attack.
    let public = serde_json::to_string(&jwks(&app).await.find(&kid).unwrap()).unwrap();
    let confused = jsonwebtoken::encode(
        &Header {
            kid: Some(kid.clone()),
            ..Header::new(Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    let foreign = |secret: &str| {
        jsonwebtoken::encode(
            &Header {
                kid: Some("another-issuers-key".into()),
                ..Header::new(Algorithm::HS256)
            },
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let forged = foreign("a secret that is not the legacy one, 32+ bytes long");
    for (what, token, says) in [
        ("alg confusion", confused, "algorithm"),
        (
            "a kid not ours, not signed by the legacy key",
            forged,
            "signature",
        ),
    ] {
        let mut client = app.client_with(Some(&token)).await;
        let refused = client
            .list_users(user_service::pb::ListUsersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}");
        assert!(refused.message().contains(says), "{what}: {refused:?}");
    }
    // A kid from another issuer (as identity providers write) is the legacy key's to judge.
    let legacy = foreign(crate::helpers::TEST_SECRET);
    app.client_with(Some(&legacy))
        .await
        .list_users(user_service::pb::ListUsersRequest::default())
        .await
        .expect("the legacy key verifies a token whatever kid it names");
}

fn form(token: &str) -> String {
    format!("token={token}")
}

async fn introspect(app: &TestApp, key: &str, token: &str) -> Value {
    let bearer = format!("Bearer {key}");
    let answer = http1(
        app.addr,
        "POST",
        "/oauth2/introspect",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form(token),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    answer.json()
}

#[tokio::test]
async fn introspection_says_active_until_the_user_is_suspended_and_revocation_ends_the_session() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "inspected").await;
    let key = create_key(&app, "resource-server", UserRole::User, None)
        .await
        .secret;
    let session = login(&app, "inspected", "correct horse battery")
        .await
        .unwrap();

    let access = introspect(&app, &key, &session.access_token).await;
    assert_eq!(access["active"], true, "{access}");
    assert_eq!(access["sub"], user.id.as_str());
    assert_eq!(access["role"], "user");
    let refresh = introspect(&app, &key, &session.refresh_token).await;
    assert_eq!(refresh["active"], true, "{refresh}");
    assert_eq!(refresh["token_type"], "refresh_token");
    assert_eq!(
        introspect(&app, &key, "garbage").await,
        serde_json::json!({ "active": false })
    );

    // Revoking the refresh token ends its session: both tokens turn inactive.
    let bearer = format!("Bearer {key}");
    let revoked = http1(
        app.addr,
        "POST",
        "/oauth2/revoke",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form(&session.refresh_token),
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let a_key = http1(
        app.addr,
        "POST",
        "/oauth2/revoke",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "Application/X-WWW-Form-Urlencoded"),
        ],
        &form(&key),
    )
    .await;
    assert_eq!(
        a_key.status, 400,
        "a service key is not revoked here: {}",
        a_key.body
    );
    assert_eq!(a_key.json()["error"], "unsupported_token_type");
    assert_eq!(
        introspect(&app, &key, &session.refresh_token).await["active"],
        false
    );
    assert_eq!(
        introspect(&app, &key, &session.access_token).await["active"],
        false
    );
    let mut auth = AuthServiceClient::new(app.channel().await);
    let refused = auth
        .refresh(RefreshRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // A new session's tokens turn inactive the moment the user is suspended.
    let second = login(&app, "inspected", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(
        introspect(&app, &key, &second.access_token).await["active"],
        true
    );
    crate::helpers::update(
        &mut admin,
        user_service::pb::UpdateUserRequest {
            user_id: user.id.clone(),
            status: Some(user_service::pb::UserStatus::Suspended as i32),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        introspect(&app, &key, &second.access_token).await["active"],
        false
    );
    assert_eq!(
        introspect(&app, &key, &second.refresh_token).await["active"],
        false
    );
}

#[tokio::test]
async fn introspection_refuses_callers_without_a_service_key_and_names_what_is_missing() {
    let app = TestApp::spawn().await;
    let admin_token = app.token("test-admin", Role::Admin);
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    let forged = "Bearer usk_00000000000000000000000000000000_AAAA".to_owned();
    let cases = [
        ("no credentials", None, "token=x"),
        (
            "a JWT, not a service key",
            Some(format!("Bearer {admin_token}")),
            "token=x",
        ),
        ("a forged key", Some(forged), "token=x"),
        ("no credentials and no token", None, ""),
    ];
    for (what, authorization, body) in cases {
        let mut headers = vec![form_type];
        if let Some(authorization) = &authorization {
            headers.push(("Authorization", authorization.as_str()));
        }
        let answer = http1(app.addr, "POST", "/oauth2/introspect", &headers, body).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_client", "{what}");
        assert!(answer.header("www-authenticate").is_some(), "{what}");
    }
    let key = create_key(&app, "checker", UserRole::User, None)
        .await
        .secret;
    let bearer = format!("Bearer {key}");
    let missing = http1(
        app.addr,
        "POST",
        "/oauth2/introspect",
        &[("Authorization", &bearer), form_type],
        "token_type_hint=access_token",
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["error"], "invalid_request");
    assert!(
        missing.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("token")
    );
    let get = http1(app.addr, "GET", "/oauth2/introspect", &[], "").await;
    assert_eq!(get.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_login_tokens_against_the_published_jwks_across_a_rotation() {
    let has_pyjwt = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        has_pyjwt,
        "Python's PyJWT is missing: make test installs it (python3 -m pip install PyJWT cryptography)"
    );
    const AHEAD: Duration = Duration::from_secs(1);
    let app = TestApp::spawn_with(|settings| {
        settings.keys.publish_ahead = AHEAD;
        settings.keys.rotation = Duration::from_secs(3600);
    })
    .await;
    let user = create(&mut app.client().await, "verified").await;
    let first = login(&app, "verified", "correct horse battery")
        .await
        .unwrap()
        .access_token;
    let mut auth = admin_auth(&app).await;
    auth.rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .unwrap();
    tokio::time::sleep(AHEAD + Duration::from_millis(200)).await;
    let second = login(&app, "verified", "correct horse battery")
        .await
        .unwrap()
        .access_token;
    assert_ne!(kid_of(&first), kid_of(&second), "two keys signed them");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/pyjwt_jwks.py");
    let issuer = format!("http://{}", app.addr);
    let args = [script.to_owned(), issuer, first.clone(), second.clone()];
    // The server answers PyJWT's JWKS request on this runtime while the script runs.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(args).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let subjects: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(subjects, [user.id.clone(), user.id], "PyJWT verified both");
}

#[tokio::test]
async fn guessing_service_keys_at_introspection_is_limited_per_address_as_on_calls() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for guess in 0..5 {
        let bearer = format!("Bearer usk_{guess:032}_AAAA");
        let answer = http1(
            app.addr,
            "POST",
            "/oauth2/introspect",
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            "token=x",
        )
        .await;
        statuses.push(answer.status);
    }
    assert_eq!(&statuses[..2], [401, 401], "{statuses:?}");
    assert!(
        statuses[2..].contains(&429),
        "past the burst, refused: {statuses:?}"
    );
}
