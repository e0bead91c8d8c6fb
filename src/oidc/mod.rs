//! The directory as an issuer others trust: its own signing keys that rotate (`keys`), and
//! the documents and endpoints a relying party or a gateway reads (`endpoints`): discovery,
//! the JWKS, token introspection (RFC 7662) and revocation (RFC 7009).

pub mod endpoints;
pub mod keys;
