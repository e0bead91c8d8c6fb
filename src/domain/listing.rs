//! What a listing asks for, validated: how many users a page holds, and a search's prefix.

use super::FieldViolation;
use super::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, QUERY_MAX_CHARS};

/// Users on one page: 0 asks for the default, more than the most gets the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(usize);

impl PageSize {
    pub fn parse(raw: i32) -> Result<Self, FieldViolation> {
        match usize::try_from(raw) {
            Ok(0) => Ok(Self(DEFAULT_PAGE_SIZE)),
            Ok(size) => Ok(Self(size.min(MAX_PAGE_SIZE))),
            Err(_) => Err(FieldViolation::new(
                "page_size",
                format!(
                    "must not be negative (0 means {DEFAULT_PAGE_SIZE}, the most is {MAX_PAGE_SIZE}), got {raw}"
                ),
            )),
        }
    }

    pub fn get(self) -> usize {
        self.0
    }
}

/// A search's prefix of usernames and emails, in the stored keys' letter case (usernames are
/// ASCII, emails any letters); `None` when the request does not search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(String);

impl SearchQuery {
    pub fn parse(raw: &str) -> Result<Option<Self>, FieldViolation> {
        if raw.is_empty() {
            return Ok(None);
        }
        let chars = raw.chars().count();
        if chars > QUERY_MAX_CHARS {
            return Err(FieldViolation::new(
                "query",
                format!("must be at most {QUERY_MAX_CHARS} characters, got {chars}"),
            ));
        }
        if super::validation::has_control(raw) {
            return Err(FieldViolation::new(
                "query",
                "must not contain control characters (such as NUL): no username or email holds one",
            ));
        }
        Ok(Some(Self(raw.to_lowercase())))
    }

    pub fn prefix(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_size_of_zero_means_the_default_and_a_large_one_the_most() {
        assert_eq!(PageSize::parse(0).map(PageSize::get), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(PageSize::parse(7).map(PageSize::get), Ok(7));
        assert_eq!(PageSize::parse(5_000).map(PageSize::get), Ok(MAX_PAGE_SIZE));
        let negative = PageSize::parse(-1).unwrap_err();
        assert_eq!(negative.field, "page_size");
        assert!(negative.description.contains("got -1"), "{negative:?}");
    }

    #[test]
    fn a_query_is_lower_cased_and_bounded() {
        assert_eq!(SearchQuery::parse(""), Ok(None));
        assert_eq!(
            SearchQuery::parse("Ann").map(|query| query.map(|q| q.prefix().to_owned())),
            Ok(Some("ann".to_owned()))
        );
        let long = "a".repeat(QUERY_MAX_CHARS + 1);
        let refused = SearchQuery::parse(&long).unwrap_err();
        assert_eq!(refused.field, "query");
    }
}
