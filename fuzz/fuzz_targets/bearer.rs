//! Bearer-token parsing and verification on arbitrary `authorization` values: nothing
//! panics, and nothing unsigned is accepted.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use user_service::auth::authenticator::bearer;
use user_service::tokens::{Jwt, JwtSettings};

static JWT: LazyLock<Jwt> = LazyLock::new(|| {
    let settings = JwtSettings {
        secret: Some(b"a-fuzzing-secret-that-is-long-enough".to_vec()),
        token_ttl: Duration::from_secs(60),
        ..JwtSettings::default()
    };
    Jwt::new(&settings).expect("a valid secret")
});

fuzz_target!(|value: &[u8]| {
    if let Ok(token) = bearer(value)
        && let Ok(token) = std::str::from_utf8(token)
    {
        // Arbitrary bytes never carry a valid signature under a secret they do not know.
        assert!(JWT.verify(token).is_err());
    }
});
