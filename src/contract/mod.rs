//! What the server and its clients agree on beyond the schema, owned by neither side: the
//! metadata keys and limits a client relies on, how secrets are read, and how tokens are
//! minted and read. The server's layers and handlers and userctl all import from here.

pub mod tokens;

use std::path::{Path, PathBuf};

/// Initial metadata of a WatchUsers response: the first revision the stream covers.
pub const WATCH_START_REVISION: &str = "x-watch-start-revision";

/// ListUsers page size when the request gives 0.
pub const DEFAULT_PAGE_SIZE: usize = crate::domain::limits::DEFAULT_PAGE_SIZE;
/// ListUsers never returns more than this many users at once.
pub const MAX_PAGE_SIZE: usize = crate::domain::limits::MAX_PAGE_SIZE;
/// The longest username, which clients size their tables by.
pub const USERNAME_MAX_CHARS: usize = crate::domain::limits::USERNAME_MAX_CHARS;

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}")]
pub struct ReadError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Reads a file named by a flag.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|source| ReadError {
        path: path.to_owned(),
        source,
    })
}

/// Reads a secret file, without the trailing newline such files usually end with.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let mut secret = read_file(path)?;
    while secret.last().is_some_and(u8::is_ascii_whitespace) {
        secret.pop();
    }
    Ok(secret)
}
