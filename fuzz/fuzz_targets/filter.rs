//! The ListUsers filter parser on arbitrary text: nothing panics, a refusal points inside the
//! text, and a filter it accepts prints a canonical text that parses back to the same filter.

#![no_main]

use libfuzzer_sys::fuzz_target;
use user_service::filter::Filter;

fuzz_target!(|text: &str| {
    match Filter::parse(text) {
        Ok(Some(filter)) => {
            let canonical = filter.canonical();
            assert_eq!(Filter::parse(&canonical), Ok(Some(filter)), "{canonical}");
        }
        Ok(None) => {}
        Err(error) => assert!(
            (1..=text.chars().count() + 1).contains(&error.position),
            "{error} is outside the text"
        ),
    }
});
