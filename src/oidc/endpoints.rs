//! What relying parties and gateways read over plain HTTP on the service's own port (HTTP/1.1
//! and HTTP/2): the discovery document, the JWKS, token introspection (RFC 7662) and token
//! revocation (RFC 7009). Introspection and revocation answer callers that authenticate with
//! a service key; the token they ask about is judged exactly as a call bearing it would be,
//! by the same authenticator, so `active` turns false the moment a call would be refused.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::body::Body;

use super::keys::KeyRing;
use crate::auth::authenticator::{Authentication, Authenticator, Rejected};
use crate::caller::{Authenticated, Caller};
use crate::error::ServiceError;
use crate::storage::Store;
use crate::storage::sessions::RefreshDigest;
use crate::tokens::Jwt;

pub const DISCOVERY: &str = "/.well-known/openid-configuration";
pub const JWKS: &str = "/.well-known/jwks.json";
pub const INTROSPECT: &str = "/oauth2/introspect";
pub const REVOKE: &str = "/oauth2/revoke";

/// The largest form a caller may post.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The endpoints, with what they read.
pub struct Endpoints {
    ring: KeyRing,
    /// This server's public URL (`--issuer`, or its own address on loopback).
    issuer: String,
    jwt: Arc<Jwt>,
    authenticator: Arc<Authenticator>,
    store: Store,
    /// The discovery document and its entity tag, made once.
    discovery: (Bytes, String),
    /// How long a verifier may cache the JWKS: well inside `publish_ahead`.
    jwks_max_age: Duration,
    /// How long a posted form may take to arrive (`--request-body-timeout`).
    body_timeout: Duration,
}

fn etag_of(body: &[u8]) -> String {
    format!(
        "\"{}\"",
        URL_SAFE_NO_PAD.encode(&Sha256::digest(body)[..16])
    )
}

/// A JSON answer with `status` and the given cache policy.
fn json_answer(status: StatusCode, body: &Value, cache: &'static str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(
        body.to_string(),
    ))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// An OAuth error body (RFC 6749 section 5.2): its code, and a description naming the
/// parameter and the rule.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> http::Response<Body> {
    let mut response = json_answer(
        status,
        &json!({ "error": error, "error_description": description }),
        "no-store",
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"user-service\""),
        );
    }
    response
}

/// Whether `If-None-Match` names `etag` (or is `*`), weak or strong.
fn not_modified<B>(request: &http::Request<B>, etag: &str) -> bool {
    request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// A document served with `Cache-Control` and `ETag`, or 304 when the caller holds it.
fn document<B>(
    request: &http::Request<B>,
    body: &Bytes,
    etag: &str,
    max_age: Duration,
) -> http::Response<Body> {
    let cache = HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
        .expect("digits are a header value");
    let etag_value = HeaderValue::from_str(etag).expect("base64url is a header value");
    let mut response = if not_modified(request, etag) {
        let mut response = http::Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = http::Response::new(Body::new(http_body_util::Full::new(body.clone())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, cache);
    headers.insert(header::ETAG, etag_value);
    response
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// What a posted form asked about.
struct Asked {
    token: String,
    hint: Option<String>,
}

impl Endpoints {
    pub fn new(
        ring: KeyRing,
        issuer: String,
        jwt: Arc<Jwt>,
        authenticator: Arc<Authenticator>,
        store: Store,
        body_timeout: Duration,
    ) -> Self {
        let jwks_max_age = (ring.pass_every() * 2).min(Duration::from_secs(3600));
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}{JWKS}"),
            "introspection_endpoint": format!("{issuer}{INTROSPECT}"),
            "introspection_endpoint_auth_methods_supported": ["bearer"],
            "revocation_endpoint": format!("{issuer}{REVOKE}"),
            "revocation_endpoint_auth_methods_supported": ["bearer"],
        })
        .to_string();
        let etag = etag_of(discovery.as_bytes());
        Self {
            ring,
            issuer,
            jwt,
            authenticator,
            store,
            discovery: (Bytes::from(discovery), etag),
            jwks_max_age,
            body_timeout,
        }
    }

    /// Whether a request is one of these endpoints'.
    pub fn serves(path: &str) -> bool {
        matches!(path, DISCOVERY | JWKS | INTROSPECT | REVOKE)
    }

    /// The answer to a request `serves` accepted.
    pub async fn answer(self: Arc<Self>, request: http::Request<Body>) -> http::Response<Body> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        match (path.as_str(), method) {
            (DISCOVERY, Method::GET | Method::HEAD) => {
                let (body, etag) = &self.discovery;
                document(&request, body, etag, Duration::from_secs(3600))
            }
            (JWKS, Method::GET | Method::HEAD) => {
                let (body, etag) = self.ring.jwks();
                document(&request, &body, &etag, self.jwks_max_age)
            }
            (INTROSPECT | REVOKE, Method::POST) => self.posted(&path, request).await,
            (DISCOVERY | JWKS, _) => {
                let mut response = oauth_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "invalid_request",
                    "this document is read with GET",
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                response
            }
            _ => {
                let mut response = oauth_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "invalid_request",
                    "this endpoint takes a POST of an application/x-www-form-urlencoded form",
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                response
            }
        }
    }

    /// Introspection or revocation: the caller authenticated, the form read, then the work.
    async fn posted(&self, path: &str, request: http::Request<Body>) -> http::Response<Body> {
        let judged = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|authorization| {
                self.authenticator
                    .authenticate_bearer(authorization, request.extensions())
            });
        match authenticate(judged).await {
            Ok(Some(Caller::Key { .. })) => {}
            Ok(_) => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "authenticate with a service key: Authorization: Bearer usk_...",
                );
            }
            Err(response) => return response,
        }
        let asked = match tokio::time::timeout(self.body_timeout, read_form(request)).await {
            Ok(Ok(asked)) => asked,
            Ok(Err(wrong)) => {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &wrong);
            }
            Err(_) => {
                return oauth_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request",
                    &format!(
                        "the form did not arrive whole within {} (--request-body-timeout)",
                        humantime::format_duration(self.body_timeout)
                    ),
                );
            }
        };
        let answered = if path == INTROSPECT {
            self.introspect(&asked).await
        } else {
            self.revoke(&asked).await
        };
        answered.unwrap_or_else(|err| {
            tracing::warn!(error = %crate::text::chain(&err), "a token endpoint could not read storage");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "storage could not be read: retry",
            )
        })
    }

    /// RFC 7662: `{"active": false}` and nothing else for any token a call could not use.
    async fn introspect(&self, asked: &Asked) -> Result<http::Response<Body>, ServiceError> {
        let inactive = || json_answer(StatusCode::OK, &json!({ "active": false }), "no-store");
        let token = asked.token.as_str();
        if let Some(digest) = self.refresh_digest(asked) {
            let Some(presented) = self.store.refresh_token(digest).await? else {
                return Ok(inactive());
            };
            if !crate::storage::sessions::refresh_works(&presented, crate::timing::now_ns()) {
                return Ok(inactive());
            }
            return Ok(json_answer(
                StatusCode::OK,
                &json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "sub": presented.user.to_string(),
                    "sid": presented.session.to_string(),
                    "exp": presented.expires_at_ns / 1_000_000_000,
                    "iss": self.issuer,
                }),
                "no-store",
            ));
        }
        let Ok(authorization) = HeaderValue::try_from(format!("Bearer {token}")) else {
            return Ok(inactive());
        };
        let judged = self
            .authenticator
            .authenticate_bearer(&authorization, &http::Extensions::new());
        let Some(authenticated) = standing(judged).await? else {
            return Ok(inactive());
        };
        let role = authenticated.caller.role().map(|role| role.name());
        let exp = authenticated.expiry.map(|expiry| expiry.0);
        let body = match &authenticated.caller {
            Caller::Key { id, .. } => json!({
                "active": true,
                "token_type": "service_key",
                "sub": format!("key:{id}"),
                "role": role,
                "exp": exp.filter(|exp| *exp != u64::MAX),
            }),
            _ => {
                // The authenticator has just verified it (and keeps the verdict): its claims
                // are read, not checked a second time.
                let Some(claims) = Jwt::claims_of_verified(token) else {
                    return Ok(inactive());
                };
                json!({
                    "active": true,
                    "token_type": "Bearer",
                    "sub": claims.sub,
                    "role": role,
                    "exp": claims.exp,
                    "iat": claims.iat,
                    "iss": claims.iss,
                    "aud": claims.aud,
                    "sid": claims.sid,
                })
            }
        };
        Ok(json_answer(StatusCode::OK, &body, "no-store"))
    }

    /// RFC 7009: a refresh token ends its session; an access token from a session ends it
    /// too (and with it every token the session issued); an unknown token is answered 200.
    async fn revoke(&self, asked: &Asked) -> Result<http::Response<Body>, ServiceError> {
        let done = || http::Response::new(Body::empty());
        if crate::auth::keys::is_key(asked.token.as_bytes()) {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_token_type",
                "token: a service key is revoked with RevokeServiceKey (userctl keys revoke), by an admin",
            ));
        }
        if let Some(digest) = self.refresh_digest(asked) {
            if let Some(presented) = self.store.refresh_token(digest).await? {
                self.store.end_session(presented.session).await?;
            }
            return Ok(done());
        }
        let Ok((claims, _)) = self.jwt.verify(&asked.token) else {
            return Ok(done());
        };
        match claims.sid.as_deref().map(uuid::Uuid::try_parse) {
            Some(Ok(session)) => {
                self.store.end_session(session).await?;
                Ok(done())
            }
            _ => Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_token_type",
                "token: this access token belongs to no session, so it cannot be revoked before its exp; revoke the service key or end the user's sessions instead",
            )),
        }
    }

    /// The refresh token's digest, when the token is shaped like one (or hinted as one).
    fn refresh_digest(&self, asked: &Asked) -> Option<RefreshDigest> {
        if asked.hint.as_deref() == Some("access_token") && asked.token.contains('.') {
            return None;
        }
        RefreshDigest::of_token(&asked.token)
    }
}

/// The caller of the endpoint itself, as the authenticator judged its own `Authorization`
/// header (`None`: it sent none). An unverified key was counted against the request's client
/// address, as on every call, so guessing keys here is limited as it is anywhere.
async fn authenticate(
    judged: Option<Authentication>,
) -> Result<Option<Caller>, http::Response<Body>> {
    let Some(judged) = judged else {
        return Ok(None);
    };
    match standing(judged).await {
        Ok(Some(authenticated)) => Ok(Some(authenticated.caller)),
        Ok(None) => Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the Authorization header's service key is not valid",
        )),
        Err(ServiceError::ResourceExhausted(why)) => Err(oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            &why,
        )),
        Err(err) => Err(oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &err.to_string(),
        )),
    }
}

/// What the authenticator decided, once decided: `None` when a call with the credential would
/// be refused as unauthenticated.
async fn standing(judged: Authentication) -> Result<Option<Authenticated>, ServiceError> {
    let decided = match judged {
        Authentication::Now(decided) => decided,
        Authentication::Later(deciding) => deciding.await,
    };
    match decided {
        Ok(authenticated) => Ok(Some(authenticated)),
        Err(Rejected::Denied(ServiceError::Unauthenticated(_))) => Ok(None),
        Err(Rejected::Denied(err)) => Err(err),
        Err(Rejected::TooSoon(_)) => Err(ServiceError::ResourceExhausted(
            "too many calls with unverified credentials from this address: retry later".into(),
        )),
    }
}

/// The `token` (and `token_type_hint`) of a posted form; else what is wrong with it, for an
/// `invalid_request`.
async fn read_form(request: http::Request<Body>) -> Result<Asked, String> {
    let form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form {
        return Err("the body must be application/x-www-form-urlencoded".into());
    }
    let body = http_body_util::Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| "the form could not be read whole, or is over 16 KiB".to_owned())?
        .to_bytes();
    let fields = form_fields(&body);
    let one = |name: &str| {
        let mut values = fields.iter().filter(|(field, _)| field == name);
        match (values.next(), values.next()) {
            (Some((_, value)), None) => Ok(Some(value.clone())),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(format!("{name}: must be given once")),
        }
    };
    let token = one("token")?
        .filter(|token| !token.is_empty())
        .ok_or_else(|| "token: is required".to_owned())?;
    Ok(Asked {
        token,
        hint: one("token_type_hint")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_read_with_its_escapes() {
        assert_eq!(
            form_fields(b"token=a%2Bb+c&token_type_hint=refresh_token&&x"),
            [
                ("token".to_owned(), "a+b c".to_owned()),
                ("token_type_hint".to_owned(), "refresh_token".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn if_none_match_matches_strong_weak_lists_and_star() {
        let with = |value: &str| {
            http::Request::builder()
                .header(header::IF_NONE_MATCH, value)
                .body(())
                .unwrap()
        };
        for value in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            assert!(not_modified(&with(value), "\"abc\""), "{value}");
        }
        assert!(!not_modified(&with("\"abd\""), "\"abc\""));
    }
}
