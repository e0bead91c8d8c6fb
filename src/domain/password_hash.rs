//! A stored password: its hash in PHC string format, a value like any other field.

use std::fmt;

/// A password hash in PHC string format (Argon2id when this server made it). Never printed:
/// `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// The hasher makes hashes, and storage rebuilds the ones it wrote.
    pub(crate) fn from_phc(phc: String) -> Self {
        Self(phc)
    }

    pub(crate) fn as_phc(&self) -> &str {
        &self.0
    }

    /// The algorithm, version and costs, without the salt and the hash: `$argon2id$v=19$m=…`.
    /// Safe to show.
    pub fn parameters(&self) -> &str {
        // `$algorithm$version$params$salt$hash`: everything before the fourth `$`.
        match self.0.match_indices('$').nth(3) {
            Some((end, _)) => &self.0[..end],
            None => "",
        }
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}
