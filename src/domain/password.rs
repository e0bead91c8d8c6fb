//! The password field, as a caller gives it (the stored form is `PasswordHash`).

use std::fmt;

use super::FieldViolation;
use super::validation::limits;

/// 8 to 128 characters (not bytes). Never printed: `Debug` shows a placeholder.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, FieldViolation> {
        use limits::{PASSWORD_MAX_CHARS as MAX, PASSWORD_MIN_CHARS as MIN};
        let len = raw.chars().count();
        if !(MIN..=MAX).contains(&len) {
            return Err(FieldViolation::new(
                "password",
                format!("must be {MIN}-{MAX} characters, got {len}"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_counted_in_characters_not_bytes() {
        assert!(
            Password::parse("ééééééé".into()).is_err(),
            "7 chars, 14 bytes"
        );
        assert!(Password::parse("éééééééé".into()).is_ok(), "8 chars");
        assert!(
            Password::parse("é".repeat(128)).is_ok(),
            "128 chars, 256 bytes"
        );
        assert!(Password::parse("a".repeat(129)).is_err());
    }

    #[test]
    fn a_password_never_appears_in_debug_output() {
        let password = Password::parse("correct horse".into()).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}

/// How hard a new password must be to guess: zxcvbn's estimate (0-4, from its dictionaries of
/// common passwords, words, names and keyboard patterns, with the user's own names counted as
/// guessable), and no username or email name inside it. Checked wherever a password is set;
/// never on a login, and never on imported hashes, whose passwords are unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordStrength {
    /// 0 turns the rule off.
    min_score: u8,
}

impl PasswordStrength {
    /// zxcvbn's highest score.
    pub const MAX_SCORE: u8 = 4;
    /// "Safely unguessable" in zxcvbn's terms: more than 10^10 guesses.
    pub const DEFAULT_SCORE: u8 = 3;

    /// `min_score` is at most `MAX_SCORE`.
    pub fn new(min_score: u8) -> Self {
        Self {
            min_score: min_score.min(Self::MAX_SCORE),
        }
    }

    /// Whether `password` may be set for the user named `username` with `email`. The refusal
    /// names the rule and what to do, never the password.
    pub fn check(
        &self,
        password: &Password,
        username: &str,
        email: &str,
    ) -> Result<(), FieldViolation> {
        if self.min_score == 0 {
            return Ok(());
        }
        let lower = password.expose().to_lowercase();
        let email_name = email.split('@').next().unwrap_or_default();
        let names = [username, email_name];
        if names
            .iter()
            .any(|name| name.chars().count() >= 3 && lower.contains(&name.to_lowercase()))
        {
            return Err(FieldViolation::new(
                "password",
                "must not contain the username or the name of the email address: choose words \
                 of your own",
            ));
        }
        let estimate = zxcvbn::zxcvbn(password.expose(), &[username, email, email_name]);
        let score = u8::from(estimate.score());
        if score >= self.min_score {
            return Ok(());
        }
        let mut message = format!(
            "is too easy to guess (strength {score} of {}, at least {} needed)",
            Self::MAX_SCORE,
            self.min_score
        );
        if let Some(feedback) = estimate.feedback() {
            if let Some(warning) = feedback.warning() {
                message.push_str(&format!(": {warning}"));
            }
            for suggestion in feedback.suggestions() {
                message.push_str(&format!(" {suggestion}"));
            }
        } else {
            message.push_str(": add another word or two; uncommon words are better");
        }
        Err(FieldViolation::new("password", message))
    }
}

#[cfg(test)]
mod strength_tests {
    use super::{Password, PasswordStrength};

    fn check(min: u8, password: &str) -> Result<(), String> {
        PasswordStrength::new(min)
            .check(
                &Password::parse(password.into()).unwrap(),
                "ann_lee",
                "ann.lee@example.com",
            )
            .map_err(|violation| violation.description)
    }

    #[test]
    fn the_commonest_passwords_are_refused_by_default() {
        for common in ["password123", "qwertyuiop", "letmein123", "iloveyou1"] {
            let refused = check(PasswordStrength::DEFAULT_SCORE, common).unwrap_err();
            assert!(refused.contains("too easy to guess"), "{common}: {refused}");
            assert!(
                !refused.contains(common),
                "the refusal never quotes the password"
            );
        }
    }

    #[test]
    fn a_long_uncommon_passphrase_is_accepted() {
        check(
            PasswordStrength::DEFAULT_SCORE,
            "plum tractor violet harbour 42",
        )
        .unwrap();
    }

    #[test]
    fn a_password_holding_the_username_or_email_name_is_refused() {
        for close in ["Ann_Lee-2026-rocks!", "xx-ann.lee-xx-zebra"] {
            let refused = check(PasswordStrength::DEFAULT_SCORE, close).unwrap_err();
            assert!(refused.contains("username"), "{close}: {refused}");
        }
    }

    #[test]
    fn score_zero_turns_the_rule_off() {
        check(0, "password123").unwrap();
    }
}
