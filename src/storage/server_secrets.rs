//! Secrets the server makes for itself (`server_secrets`), one per name: the first replica
//! to need one writes the value it drew, and every replica, that one included, reads back
//! whichever was written first, so all of them hold the same secret.

/// The key that signs page and resume tokens (`grpc::page_token::TokenSeal`).
pub const PAGE_TOKENS: &str = "page_tokens";

/// The key-encryption key a loopback server without one generates: development only (a copy
/// of the database then holds what opens its signing keys).
pub const DEVELOPMENT_KEK: &str = "development_key_encryption_key";

/// Bytes in every server secret: 256 bits.
pub const SECRET_BYTES: usize = 32;
