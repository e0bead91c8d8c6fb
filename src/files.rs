//! Reading the files flags name (keys, certificates, secrets), for the server's settings and
//! userctl alike.

use std::path::{Path, PathBuf};

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
