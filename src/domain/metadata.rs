//! The metadata field, and the merge an update applies to it.

use std::collections::BTreeMap;

use super::FieldViolation;
use super::validation::{has_control, limits};

fn parse_metadata_key(key: &str) -> Result<(), FieldViolation> {
    let max = limits::METADATA_KEY_MAX_CHARS;
    let valid = !key.is_empty()
        && key.chars().count() <= max
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(FieldViolation::new(
            "metadata",
            format!(
                "key {} must be 1-{max} characters of ASCII letters, digits, '_', '-' or '.'",
                crate::text::quoted(key)
            ),
        ))
    }
}

fn parse_metadata_value(key: &str, value: &str) -> Result<(), FieldViolation> {
    let max = limits::METADATA_VALUE_MAX_CHARS;
    let len = value.chars().count();
    if len > max {
        return Err(FieldViolation::new(
            "metadata",
            format!(
                "value of key {} must be at most {max} characters, got {len}",
                crate::text::quoted(key)
            ),
        ));
    }
    if has_control(value) {
        return Err(FieldViolation::new(
            "metadata",
            format!(
                "value of key {} must not contain control characters",
                crate::text::quoted(key)
            ),
        ));
    }
    Ok(())
}

fn check_entry_count(count: usize) -> Result<(), FieldViolation> {
    let max = limits::METADATA_MAX_ENTRIES;
    if count > max {
        return Err(FieldViolation::new(
            "metadata",
            format!("must have at most {max} entries, got {count}"),
        ));
    }
    Ok(())
}

/// At most 32 entries; keys 1-64 of `[A-Za-z0-9_.-]`; values non-empty, at most 512
/// characters, no control characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn parse(raw: impl IntoIterator<Item = (String, String)>) -> Result<Self, FieldViolation> {
        let entries: BTreeMap<String, String> = raw.into_iter().collect();
        check_entry_count(entries.len())?;
        for (key, value) in &entries {
            parse_metadata_key(key)?;
            if value.is_empty() {
                return Err(FieldViolation::new(
                    "metadata",
                    format!(
                        "value of key {} must not be empty",
                        crate::text::quoted(key)
                    ),
                ));
            }
            parse_metadata_value(key, value)?;
        }
        Ok(Self(entries))
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Applies a merge, checking the entry limit on the result.
    pub fn merged(&self, patch: &MetadataPatch) -> Result<Self, FieldViolation> {
        let mut entries = self.0.clone();
        for (key, value) in &patch.0 {
            match value {
                Some(value) => entries.insert(key.clone(), value.clone()),
                None => entries.remove(key),
            };
        }
        check_entry_count(entries.len())?;
        Ok(Self(entries))
    }

    /// Storage rebuilds metadata it validated when it was written.
    pub(crate) fn from_trusted(entries: BTreeMap<String, String>) -> Self {
        Self(entries)
    }
}

/// A metadata merge: each key is set to a value, or removed (an empty value on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataPatch(BTreeMap<String, Option<String>>);

impl MetadataPatch {
    pub fn parse(raw: impl IntoIterator<Item = (String, String)>) -> Result<Self, FieldViolation> {
        let mut entries = BTreeMap::new();
        for (key, value) in raw {
            parse_metadata_key(&key)?;
            parse_metadata_value(&key, &value)?;
            entries.insert(key, (!value.is_empty()).then_some(value));
        }
        check_entry_count(entries.len())?;
        Ok(Self(entries))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_bounds_entries_keys_and_values() {
        let too_many = (0..33).map(|i| (format!("k{i}"), "v".to_string()));
        assert!(Metadata::parse(too_many).is_err());
        assert!(Metadata::parse([("bad key".into(), "v".into())]).is_err());
        assert!(Metadata::parse([("k".into(), "v".repeat(513))]).is_err());
        assert!(Metadata::parse([("k".into(), String::new())]).is_err());
        assert!(Metadata::parse([("team".into(), "core".into())]).is_ok());
    }

    #[test]
    fn a_metadata_patch_sets_and_removes_keys() {
        let current =
            Metadata::parse([("a".into(), "1".into()), ("b".into(), "2".into())]).unwrap();
        let patch =
            MetadataPatch::parse([("a".into(), String::new()), ("c".into(), "3".into())]).unwrap();
        let merged = current.merged(&patch).unwrap();
        let keys: Vec<_> = merged.entries().keys().cloned().collect();
        assert_eq!(keys, ["b", "c"]);
    }
}
