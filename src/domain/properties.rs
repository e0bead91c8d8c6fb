//! Property tests of the field parsers: what they accept parses again to the same value,
//! and their limits hold at the boundaries, for any input, not just the examples.

use proptest::prelude::*;

use super::limits;
use super::{Email, FullName, Metadata, MetadataPatch, Password, Username};

proptest! {
    #[test]
    fn a_username_of_allowed_characters_and_length_is_accepted_and_round_trips(
        raw in "[A-Za-z0-9_]{3,30}"
    ) {
        let username = Username::parse(raw.clone()).unwrap();
        prop_assert_eq!(username.as_str(), raw.as_str());
        prop_assert!(Username::parse(username.as_str().to_owned()).is_ok());
        prop_assert_eq!(username.key(), raw.to_ascii_lowercase());
    }

    #[test]
    fn a_username_outside_the_length_bounds_is_rejected(
        raw in prop_oneof!["[a-z]{0,2}", "[a-z]{31,60}"]
    ) {
        prop_assert!(Username::parse(raw).is_err());
    }

    #[test]
    fn a_username_with_any_other_character_is_rejected(
        head in "[a-z]{2,10}", bad in "[^A-Za-z0-9_]", tail in "[a-z]{0,10}"
    ) {
        let raw = format!("{head}{bad}{tail}");
        prop_assert!(Username::parse(raw).is_err());
    }

    #[test]
    fn whatever_email_is_accepted_parses_again_and_fits_the_limit(raw in "\\PC{0,300}") {
        if let Ok(email) = Email::parse(raw) {
            prop_assert!(email.as_str().chars().count() <= limits::EMAIL_MAX_CHARS);
            prop_assert!(Email::parse(email.as_str().to_owned()).is_ok());
        }
    }

    #[test]
    fn a_plain_address_is_accepted(local in "[a-z][a-z0-9.]{0,20}[a-z0-9]", domain in "[a-z]{1,20}\\.[a-z]{2,6}") {
        let raw = format!("{local}@{domain}");
        prop_assume!(!raw.contains(".."));
        prop_assert!(Email::parse(raw).is_ok());
    }

    #[test]
    fn a_password_is_bounded_in_characters_whatever_they_are(raw in "\\PC{0,140}") {
        let chars = raw.chars().count();
        let allowed = (limits::PASSWORD_MIN_CHARS..=limits::PASSWORD_MAX_CHARS).contains(&chars);
        prop_assert_eq!(Password::parse(raw).is_ok(), allowed);
    }

    #[test]
    fn a_full_name_without_control_characters_up_to_the_limit_is_accepted(raw in "[^\\p{Cc}]{0,128}") {
        let name = FullName::parse(raw.clone()).unwrap();
        prop_assert_eq!(name.as_str(), raw.as_str());
    }

    #[test]
    fn a_full_name_with_a_control_character_is_rejected(
        head in "[a-z ]{0,20}", control in "\\p{Cc}", tail in "[a-z ]{0,20}"
    ) {
        let raw = format!("{head}{control}{tail}");
        prop_assert!(FullName::parse(raw).is_err());
    }

    #[test]
    fn valid_metadata_round_trips_and_a_merge_stays_valid(
        entries in proptest::collection::btree_map("[A-Za-z0-9_.-]{1,64}", "[a-z ]{1,40}", 0..=32),
        patch in proptest::collection::btree_map("[A-Za-z0-9_.-]{1,64}", "[a-z ]{0,40}", 0..=8),
    ) {
        let metadata = Metadata::parse(entries.clone()).unwrap();
        prop_assert_eq!(metadata.entries(), &entries);
        let patch = MetadataPatch::parse(patch).unwrap();
        match metadata.merged(&patch) {
            Ok(merged) => {
                prop_assert!(merged.entries().len() <= limits::METADATA_MAX_ENTRIES);
                prop_assert!(Metadata::parse(merged.entries().clone()).is_ok());
            }
            Err(violation) => prop_assert!(violation.description.contains("at most")),
        }
    }

    #[test]
    fn metadata_past_the_entry_limit_is_rejected(extra in 1usize..8) {
        let entries = (0..limits::METADATA_MAX_ENTRIES + extra)
            .map(|i| (format!("k{i}"), "v".to_owned()));
        prop_assert!(Metadata::parse(entries).is_err());
    }
}
