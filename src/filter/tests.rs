//! Tables of filters and what they mean or why they are refused, and properties over
//! generated text, filters and users.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;

use super::ast::{Equality, Expr, Op, Test, TextTest, fold_ascii, fold_unicode};
use super::{Bound, Filter, FilterError, MAX_COMPARISONS, MAX_DEPTH, MAX_TEXT_BYTES, Narrow};
use crate::domain::{Email, FullName, Metadata, Role, User, UserId, UserStatus, Username};

fn nanos(timestamp: &str) -> i64 {
    let parsed: prost_types::Timestamp = timestamp.parse().expect("a valid test timestamp");
    parsed.seconds * 1_000_000_000 + i64::from(parsed.nanos)
}

fn ann() -> User {
    User {
        id: UserId::new(),
        username: Username::from_trusted("Ann_Lee".into()),
        email: Email::from_trusted("Ann.Lee@Example.com".into()),
        full_name: FullName::from_trusted("Ann Lee".into()),
        role: Role::Admin,
        status: UserStatus::Active,
        created_at_ns: nanos("2024-03-01T12:00:00Z"),
        updated_at_ns: nanos("2024-06-01T00:00:00Z"),
        metadata: Metadata::from_trusted(BTreeMap::from([
            ("team".to_owned(), "core".to_owned()),
            ("tier".to_owned(), "Gold".to_owned()),
        ])),
        revision: 1,
        email_verified: true,
    }
}

fn parsed(text: &str) -> Filter {
    match Filter::parse(text) {
        Ok(Some(filter)) => filter,
        other => panic!("{text:?} should parse to a filter, got {other:?}"),
    }
}

fn refused(text: &str) -> FilterError {
    match Filter::parse(text) {
        Err(error) => error,
        Ok(other) => panic!("{text:?} should be refused, got {other:?}"),
    }
}

#[test]
fn empty_or_blank_text_is_no_filter() {
    for text in ["", "   ", " \t\r\n "] {
        assert_eq!(Filter::parse(text), Ok(None), "{text:?}");
    }
}

#[test]
fn each_field_and_operator_matches_as_documented() {
    let user = ann();
    let cases = [
        // username: without letter case, prefix with '*'
        ("username = ann_lee", true),
        ("username = \"ANN_LEE\"", true),
        ("username != ann_lee", false),
        ("username < b", true),
        ("username <= ann_lee", true),
        ("username > ann", true),
        ("username >= ann_lef", false),
        ("username = \"ann*\"", true),
        ("username = AN*", true),
        ("username = \"bob*\"", false),
        ("username != \"ann*\"", false),
        ("username != \"bob*\"", true),
        ("username = \"*\"", true),
        // email
        ("email = ann.lee@example.com", true),
        ("email = \"ANN*\"", true),
        ("email < b", true),
        ("email > \"ann.lee@example.com\"", false),
        ("email >= \"ann.lee@example.com\"", true),
        ("email <= ann", false),
        ("email != x@y.z", true),
        // full_name
        ("full_name = \"ann lee\"", true),
        ("full_name = \"Ann*\"", true),
        ("full_name = \"Lee*\"", false),
        ("full_name < b", true),
        ("full_name > ann", true),
        ("full_name != \"ANN LEE\"", false),
        // metadata: letter case counts; a missing entry satisfies only !=
        ("metadata.team = core", true),
        ("metadata.team = Core", false),
        ("metadata.\"team\" = core", true),
        ("metadata.team = \"co*\"", true),
        ("metadata.team != core", false),
        ("metadata.team != \"x*\"", true),
        ("metadata.team < d", true),
        ("metadata.team >= d", false),
        ("metadata.tier = Gold", true),
        ("metadata.missing = x", false),
        ("metadata.missing != x", true),
        ("metadata.missing < x", false),
        ("metadata.missing >= x", false),
        ("metadata.missing = \"x*\"", false),
        ("metadata.missing != \"x*\"", true),
        ("metadata:team", true),
        ("metadata:\"team\"", true),
        ("metadata.team:*", true),
        ("metadata:missing", false),
        ("metadata.missing:*", false),
        // role and status: short or full names, any letter case
        ("role = ADMIN", true),
        ("role = admin", true),
        ("role = USER_ROLE_ADMIN", true),
        ("role = \"user_role_admin\"", true),
        ("role != ADMIN", false),
        ("role = USER", false),
        ("role = MODERATOR", false),
        ("status = ACTIVE", true),
        ("status = USER_STATUS_ACTIVE", true),
        ("status != SUSPENDED", true),
        ("status = DELETED", false),
        ("status = inactive", false),
        // timestamps
        ("created_at = \"2024-03-01T12:00:00Z\"", true),
        ("created_at = \"2024-03-01T13:00:00+01:00\"", true),
        ("created_at != \"2024-03-01T12:00:00Z\"", false),
        ("created_at > \"2024-01-01T00:00:00Z\"", true),
        ("created_at < \"2024-01-01T00:00:00Z\"", false),
        ("created_at <= \"2024-03-01T12:00:00Z\"", true),
        ("created_at >= \"2024-03-01T12:00:00.000000001Z\"", false),
        ("updated_at > \"2024-05-31T23:59:59.999Z\"", true),
        ("updated_at < \"2024-06-01T00:00:00Z\"", false),
        // email_verified
        ("email_verified = true", true),
        ("email_verified = TRUE", true),
        ("email_verified = false", false),
        ("email_verified != false", true),
    ];
    for (text, expected) in cases {
        assert_eq!(parsed(text).matches(&user), expected, "{text}");
    }
}

#[test]
fn and_or_not_and_juxtaposition_combine_as_aip_160_says() {
    let user = ann();
    let cases = [
        ("status = ACTIVE role = ADMIN", true),
        ("status = ACTIVE role = USER", false),
        ("status = ACTIVE AND role = ADMIN", true),
        ("role = USER OR role = ADMIN", true),
        // OR binds tighter than AND: USER AND (ACTIVE OR ADMIN).
        ("role = USER AND status = ACTIVE OR role = ADMIN", false),
        ("(role = USER AND status = ACTIVE) OR role = ADMIN", true),
        // ... and tighter than juxtaposition.
        ("role = USER status = ACTIVE OR role = ADMIN", false),
        ("NOT role = USER", true),
        ("NOT(role = ADMIN)", false),
        ("-role = ADMIN", false),
        ("-(role = ADMIN)", false),
        ("NOT (role = USER OR status = DELETED)", true),
        ("NOT (NOT role = ADMIN)", true),
        ("role = USER OR NOT status = DELETED", true),
        ("((((role = ADMIN))))", true),
        ("  role=ADMIN\n\tstatus=ACTIVE  ", true),
    ];
    for (text, expected) in cases {
        assert_eq!(parsed(text).matches(&user), expected, "{text}");
    }
}

#[test]
fn refused_filters_say_where_and_why() {
    let cases = [
        (
            "username",
            9,
            "expected an operator (=, !=, <, <=, >, >= or :) after \"username\"",
        ),
        ("username =", 11, "expected a value after '='"),
        ("username != ", 13, "expected a value after '!='"),
        ("foo = 1", 1, "unknown field \"foo\""),
        ("username.x = y", 1, "\"username\" has no sub-fields"),
        ("role < ADMIN", 6, "role takes only = and !=, not '<'"),
        (
            "role = UNSPECIFIED",
            8,
            "role must be one of USER, ADMIN, MODERATOR",
        ),
        ("role = USER_ROLE_UNSPECIFIED", 8, "role must be one of"),
        (
            "status = USER_STATUS_UNSPECIFIED",
            10,
            "status must be one of ACTIVE",
        ),
        ("status : ACTIVE", 8, "status takes only = and !=, not ':'"),
        ("username = \"a*b\"", 12, "'*' may only end a value"),
        ("username = a**", 12, "'*' may only end a value"),
        (
            "username < \"ann*\"",
            12,
            "prefix match, which takes = or !=, not '<'",
        ),
        ("username : ann", 10, "':' (has) applies only to metadata"),
        (
            "created_at > \"yesterday\"",
            14,
            "expected an RFC 3339 timestamp",
        ),
        (
            "created_at > \"9999-01-01T00:00:00Z\"",
            14,
            "is out of range",
        ),
        ("updated_at : x", 12, "':' (has) applies only to metadata"),
        (
            "email_verified = yes",
            18,
            "email_verified must be true or false",
        ),
        (
            "email_verified > true",
            16,
            "email_verified takes only = and !=",
        ),
        (
            "metadata = x",
            10,
            "compare one metadata entry as metadata.KEY",
        ),
        (
            "metadata.team : x",
            17,
            "metadata.KEY:* asks whether the entry exists",
        ),
        ("metadata.\"\" = x", 10, "a metadata key must not be empty"),
        ("metadata:\"\"", 10, "a metadata key must not be empty"),
        ("metadata. = x", 10, "expected a metadata key"),
        ("(role = ADMIN", 14, "expected ')' to close the group"),
        ("role = ADMIN)", 13, "')' has no matching '('"),
        ("role = ADMIN AND", 17, "but the filter ends"),
        ("role = ADMIN AND  ", 19, "but the filter ends"),
        ("AND role = ADMIN", 1, "AND needs a comparison on each side"),
        (
            "role = ADMIN OR OR role = USER",
            17,
            "OR needs a comparison on each side",
        ),
        ("NOT NOT role = ADMIN", 5, "NOT (NOT ...)"),
        (
            "- role = ADMIN",
            2,
            "expected a comparison such as username = \"ann\", or '(', found \" \"",
        ),
        ("()", 2, "found \")\""),
        (
            "username = \"ann",
            12,
            "this quoted value has no closing '\"'",
        ),
        ("username = \"a\\n\"", 14, "unknown escape \"\\\\n\""),
        (
            "role = AND",
            8,
            "AND is a keyword; to compare with the word itself, quote it",
        ),
        (
            "role=ADMIN(status=ACTIVE)",
            11,
            "expected AND, OR or whitespace",
        ),
        ("émile = x", 1, "found \"é\""),
    ];
    for (text, position, message) in cases {
        let error = refused(text);
        assert_eq!(error.position, position, "{text}: {error}");
        assert!(error.message.contains(message), "{text}: {error}");
    }
}

#[test]
fn the_examples_in_the_module_documentation_parse() {
    for text in [
        "status = ACTIVE AND role != USER_ROLE_ADMIN",
        "username = \"ann*\" OR email = ann@example.com",
        "created_at >= \"2024-01-01T00:00:00Z\" -metadata:team",
        "NOT (metadata.team = \"core\" OR email_verified = false)",
    ] {
        parsed(text);
    }
}

#[test]
fn an_error_reads_as_position_then_message() {
    assert_eq!(
        refused("username = ").to_string(),
        "at position 12: expected a value after '='"
    );
}

#[test]
fn positions_count_characters_not_bytes() {
    let error = refused("full_name = \"Zoë\" AND nope = 1");
    assert_eq!(error.position, 23, "{error}");
}

#[test]
fn nesting_up_to_the_limit_is_accepted_and_one_more_level_is_refused() {
    let nested =
        |levels: usize| format!("{}role = ADMIN{}", "(".repeat(levels), ")".repeat(levels));
    assert!(
        parsed(&nested(MAX_DEPTH)).matches(&ann()),
        "{MAX_DEPTH} levels of parentheses are allowed"
    );
    let error = refused(&nested(MAX_DEPTH + 1));
    assert_eq!(error.position, MAX_DEPTH + 1, "{error}");
    assert!(error.message.contains("more than 32 levels"), "{error}");
}

#[test]
fn deep_or_long_input_is_refused_without_exhausting_the_stack() {
    let cases = [
        ("(".repeat(2_000), MAX_DEPTH + 1, "levels deep"),
        ("(".repeat(10_000), MAX_TEXT_BYTES + 1, "too long"),
        (
            format!("{}role = ADMIN", "NOT ".repeat(500)),
            5,
            "NOT (NOT ...)",
        ),
        ("NOT ".repeat(10_000), MAX_TEXT_BYTES + 1, "too long"),
        ("-".repeat(2_000), 2, "expected a comparison"),
        (
            format!("{}role = ADMIN", "-(".repeat(1_000)),
            2 * MAX_DEPTH + 2,
            "levels deep",
        ),
    ];
    for (text, position, message) in cases {
        let error = refused(&text);
        assert_eq!(error.position, position, "{error}");
        assert!(error.message.contains(message), "{error}");
    }
}

#[test]
fn more_than_the_allowed_comparisons_are_refused_at_the_first_one_too_many() {
    let comparisons = |count: usize| "role = ADMIN ".repeat(count);
    assert!(
        Filter::parse(&comparisons(MAX_COMPARISONS)).is_ok(),
        "{MAX_COMPARISONS} comparisons are allowed"
    );
    let error = refused(&comparisons(MAX_COMPARISONS + 1));
    assert_eq!(error.position, 13 * MAX_COMPARISONS + 1, "{error}");
    assert!(error.message.contains("at most 64 comparisons"), "{error}");
}

#[test]
fn text_over_the_byte_limit_is_refused_at_the_first_character_past_it() {
    let ascii = format!("username = \"{}\"", "a".repeat(MAX_TEXT_BYTES));
    assert_eq!(
        refused(&ascii).position,
        MAX_TEXT_BYTES + 1,
        "one-byte characters: the first past the limit"
    );
    let two_byte_letters = format!("full_name = \"{}\"", "é".repeat(MAX_TEXT_BYTES / 2));
    // 13 one-byte characters, then 1017 two-byte ones fit in 2,047 bytes.
    assert_eq!(
        refused(&two_byte_letters).position,
        13 + 1017 + 1,
        "two-byte characters: the first that does not fit whole"
    );
}

#[test]
fn a_filter_whose_canonical_form_would_pass_the_limit_is_refused() {
    // 'Ⱥ' takes two bytes and its lower case 'ⱥ' three.
    let text = format!("full_name = \"{}\"", "Ⱥ".repeat(1_000));
    assert!(
        text.len() <= MAX_TEXT_BYTES,
        "the text itself is within the limit"
    );
    let error = refused(&text);
    assert!(error.message.contains("canonical form"), "{error}");
}

#[test]
fn canonical_text_normalises_spelling_spacing_and_grouping() {
    let cases = [
        (
            "username=\"Ann*\"  status=user_status_active",
            "username = \"ann*\" AND status = ACTIVE",
        ),
        (
            "role=ADMIN AND (status=ACTIVE OR status=INACTIVE)",
            "role = ADMIN AND status = ACTIVE OR status = INACTIVE",
        ),
        (
            "(role=ADMIN AND status=ACTIVE) OR role=user",
            "(role = ADMIN AND status = ACTIVE) OR role = USER",
        ),
        (
            "role=USER OR (role=ADMIN OR role=MODERATOR)",
            "role = USER OR role = ADMIN OR role = MODERATOR",
        ),
        (
            "role=USER AND (role=ADMIN role=MODERATOR)",
            "role = USER AND role = ADMIN AND role = MODERATOR",
        ),
        ("((role = ADMIN))", "role = ADMIN"),
        ("-metadata.team:*", "NOT metadata:team"),
        ("metadata:\"a b\"", "metadata:\"a b\""),
        ("metadata:\"AND\"", "metadata:\"AND\""),
        (
            "-(role = ADMIN OR role = USER)",
            "NOT (role = ADMIN OR role = USER)",
        ),
        ("NOT (NOT role = ADMIN)", "NOT (NOT role = ADMIN)"),
        (
            "created_at >= \"2024-01-01T01:00:00+01:00\"",
            "created_at >= \"2024-01-01T00:00:00Z\"",
        ),
        (
            "updated_at < \"2024-01-01T00:00:00.5Z\"",
            "updated_at < \"2024-01-01T00:00:00.500Z\"",
        ),
        (
            "full_name = \"Zoë \\\"Z\\\" O\\\\Brien\"",
            "full_name = \"zoë \\\"z\\\" o\\\\brien\"",
        ),
        ("metadata.\"odd key\" = X", "metadata.\"odd key\" = \"X\""),
        ("metadata.a.b-c != \"x*\"", "metadata.a.b-c != \"x*\""),
        ("email_verified = TRUE", "email_verified = true"),
    ];
    for (text, canonical) in cases {
        let filter = parsed(text);
        assert_eq!(filter.canonical(), canonical, "{text}");
        assert_eq!(parsed(canonical), filter, "{canonical} parses back");
    }
}

#[test]
fn narrowing_lists_each_top_level_conjunct_an_index_could_serve() {
    let filter = parsed(
        "status = ACTIVE AND role = ADMIN created_at >= \"2024-01-01T00:00:00Z\" \
         username = \"Ann*\" username < M updated_at = \"2024-06-01T00:00:00Z\" \
         username != x email = y role != USER (status = ACTIVE OR role = USER) \
         NOT status = ACTIVE updated_at != \"2024-06-01T00:00:00Z\" username != \"a*\"",
    );
    assert_eq!(
        filter.narrowing(),
        vec![
            Some(Narrow::Status(UserStatus::Active)),
            Some(Narrow::Role(Role::Admin)),
            Some(Narrow::CreatedAt(Bound::Ge(nanos("2024-01-01T00:00:00Z")))),
            Some(Narrow::Username(Bound::Prefix("ann".to_owned()))),
            Some(Narrow::Username(Bound::Lt("m".to_owned()))),
            Some(Narrow::UpdatedAt(Bound::Eq(nanos("2024-06-01T00:00:00Z")))),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ]
    );
}

#[test]
fn a_single_comparison_or_a_disjunction_is_one_conjunct() {
    assert_eq!(
        parsed("role = MODERATOR").narrowing(),
        vec![Some(Narrow::Role(Role::Moderator))]
    );
    assert_eq!(
        parsed("role = USER OR role = ADMIN").narrowing(),
        vec![None]
    );
}

// ---- properties ----

/// Values from a small pool, so that generated filters and users often meet, or anything
/// without a '*' (which only ends a prefix) or a control character (which no filter holds).
fn text_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "ann",
            "ANN_LEE",
            "b",
            "ann.lee@example.com",
            "Zoë",
            "core",
            "",
            "ΣΑΣ"
        ])
        .prop_map(str::to_owned),
        "[^*\\p{Cc}]{0,8}",
    ]
}

fn op() -> impl Strategy<Value = Op> {
    select(vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge])
}

fn equality() -> impl Strategy<Value = Equality> {
    prop_oneof![Just(Equality::Eq), Just(Equality::Ne)]
}

fn instant() -> impl Strategy<Value = i64> {
    prop_oneof![
        select(vec![
            nanos("2024-01-01T00:00:00Z"),
            nanos("2024-03-01T12:00:00Z"),
            nanos("1970-01-01T00:00:00Z"),
        ]),
        any::<i64>(),
    ]
}

fn metadata_key() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec!["team", "tier", "a.b-c"]).prop_map(str::to_owned),
        "[^*\\p{Cc}]{1,6}",
    ]
}

fn text_test(fold: fn(&str) -> String) -> impl Strategy<Value = TextTest> {
    prop_oneof![
        (op(), text_value()).prop_map(move |(op, value)| TextTest::Compare(op, fold(&value))),
        (equality(), text_value())
            .prop_map(move |(equality, prefix)| TextTest::Prefix(equality, fold(&prefix))),
    ]
}

fn ascii_folded(text: &str) -> String {
    fold_ascii(text).collect()
}

fn unicode_folded(text: &str) -> String {
    fold_unicode(text).collect()
}

fn arb_test() -> impl Strategy<Value = Test> {
    prop_oneof![
        text_test(ascii_folded).prop_map(Test::Username),
        text_test(unicode_folded).prop_map(Test::Email),
        text_test(unicode_folded).prop_map(Test::FullName),
        (metadata_key(), text_test(str::to_owned))
            .prop_map(|(key, test)| Test::Metadata(key, test)),
        metadata_key().prop_map(Test::MetadataHas),
        (equality(), select(Role::ALL.to_vec())).prop_map(|(e, role)| Test::Role(e, role)),
        (equality(), select(UserStatus::ALL.to_vec()))
            .prop_map(|(e, status)| Test::Status(e, status)),
        (op(), instant()).prop_map(|(op, at)| Test::CreatedAt(op, at)),
        (op(), instant()).prop_map(|(op, at)| Test::UpdatedAt(op, at)),
        (equality(), any::<bool>()).prop_map(|(e, verified)| Test::EmailVerified(e, verified)),
    ]
}

/// At most 3 levels of AND, OR and NOT with at most 3 operands each: 27 comparisons and 3
/// parentheses deep, inside every limit.
fn arb_filter() -> impl Strategy<Value = Filter> {
    arb_test()
        .prop_map(Expr::Test)
        .prop_recursive(3, 27, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..=3).prop_map(Expr::all),
                prop::collection::vec(inner.clone(), 2..=3).prop_map(Expr::any),
                inner.prop_map(|operand| Expr::Not(Box::new(operand))),
            ]
        })
        .prop_map(|expr| Filter { expr })
}

fn arb_user() -> impl Strategy<Value = User> {
    let username = prop_oneof![
        select(vec!["ann", "Ann_Lee", "bob", "ZED_9"]).prop_map(str::to_owned),
        "[A-Za-z0-9_]{3,12}",
    ];
    let email = prop_oneof![
        select(vec![
            "Ann.Lee@Example.com",
            "bob@example.com",
            "σας@example.gr"
        ])
        .prop_map(str::to_owned),
        "[A-Za-z0-9.Σσ]{1,8}@[a-z]{1,6}\\.com",
    ];
    let full_name = prop_oneof![
        select(vec!["Ann Lee", "Zoë", ""]).prop_map(str::to_owned),
        "[^\\x00-\\x1f]{0,12}",
    ];
    let metadata = prop::collection::btree_map(metadata_key(), "[^\\x00-\\x1f]{1,6}", 0..3);
    (
        (username, email, full_name),
        select(Role::ALL.to_vec()),
        select(UserStatus::ALL.to_vec()),
        instant(),
        instant(),
        metadata,
        any::<bool>(),
    )
        .prop_map(
            |((username, email, full_name), role, status, created, updated, metadata, verified)| {
                User {
                    id: UserId::new(),
                    username: Username::from_trusted(username),
                    email: Email::from_trusted(email),
                    full_name: FullName::from_trusted(full_name),
                    role,
                    status,
                    created_at_ns: created,
                    updated_at_ns: updated,
                    metadata: Metadata::from_trusted(metadata),
                    revision: 1,
                    email_verified: verified,
                }
            },
        )
}

/// Text that looks enough like a filter to reach deep into the grammar: tokens strung
/// together, and canonical filters respaced or with a token spliced in.
fn filter_like_text() -> impl Strategy<Value = String> {
    let tokens = vec![
        "username",
        "email",
        "role",
        "status",
        "created_at",
        "metadata",
        "metadata.",
        ".",
        "team",
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        ":",
        "*",
        "\"",
        "\\",
        "(",
        ")",
        " ",
        "\t",
        "AND",
        "OR",
        "NOT",
        "-",
        "ann",
        "ADMIN",
        "\"2024-01-01T00:00:00Z\"",
        "é",
        "true",
    ];
    let soup = prop::collection::vec(select(tokens.clone()), 0..80).prop_map(|t| t.concat());
    let respaced = (arb_filter(), select(vec!["", "  ", "\n"]))
        .prop_map(|(filter, space)| filter.canonical().replace(" = ", "=").replace(' ', space));
    let spliced = (arb_filter(), any::<prop::sample::Index>(), select(tokens)).prop_map(
        |(filter, at, token)| {
            let mut text = filter.canonical();
            let boundaries: Vec<usize> = (0..=text.len())
                .filter(|i| text.is_char_boundary(*i))
                .collect();
            text.insert_str(*at.get(&boundaries), token);
            text
        },
    );
    prop_oneof![soup, respaced, spliced]
}

/// What an index holds for `narrow`, worked out from the user alone.
fn narrow_holds(narrow: &Narrow, user: &User) -> bool {
    fn bound_holds<T: Ord>(bound: &Bound<T>, field: &T) -> bool {
        match bound {
            Bound::Eq(value) => field == value,
            Bound::Lt(value) => field < value,
            Bound::Le(value) => field <= value,
            Bound::Gt(value) => field > value,
            Bound::Ge(value) => field >= value,
            Bound::Prefix(_) => false,
        }
    }
    match narrow {
        Narrow::Status(status) => user.status == *status,
        Narrow::Role(role) => user.role == *role,
        Narrow::CreatedAt(bound) => bound_holds(bound, &user.created_at_ns),
        Narrow::UpdatedAt(bound) => bound_holds(bound, &user.updated_at_ns),
        Narrow::Username(Bound::Prefix(prefix)) => user.username.key().starts_with(prefix.as_str()),
        Narrow::Username(bound) => bound_holds(bound, &user.username.key()),
    }
}

proptest! {
    #[test]
    fn any_text_is_parsed_or_refused_at_a_position_inside_it(
        text in prop_oneof![
            ".{0,300}",
            "\\PC{0,300}",
            filter_like_text(),
            "[0-9T:+.Zz -]{0,35}".prop_map(|value| format!("created_at < \"{value}\"")),
        ]
    ) {
        match Filter::parse(&text) {
            Ok(Some(filter)) => {
                prop_assert_eq!(Filter::parse(&filter.canonical()), Ok(Some(filter)));
            }
            Ok(None) => prop_assert!(text.trim().is_empty()),
            Err(error) => {
                let chars = text.chars().count();
                prop_assert!(
                    (1..=chars + 1).contains(&error.position),
                    "position {} outside 1..={} for {:?}", error.position, chars + 1, text
                );
            }
        }
    }

    #[test]
    fn a_canonical_filter_parses_back_to_the_same_filter(filter in arb_filter()) {
        let text = filter.canonical();
        prop_assert_eq!(Filter::parse(&text), Ok(Some(filter)), "{}", text);
    }

    #[test]
    fn not_f_matches_exactly_the_users_f_does_not(filter in arb_filter(), user in arb_user()) {
        let negated = parsed(&format!("NOT ({})", filter.canonical()));
        prop_assert_eq!(negated.matches(&user), !filter.matches(&user));
    }

    #[test]
    fn every_narrowing_conjunct_holds_for_every_matching_user(
        tests in prop::collection::vec(arb_test().prop_map(Expr::Test), 0..3),
        rest in arb_filter(),
        user in arb_user()
    ) {
        // Comparisons at the top level, where narrowing looks, and anything beside them.
        let filter = Filter { expr: Expr::all(tests.into_iter().chain([rest.expr]).collect()) };
        if filter.matches(&user) {
            for narrow in filter.narrowing().iter().flatten() {
                prop_assert!(narrow_holds(narrow, &user), "{:?} fails for {:?}", narrow, user);
            }
        }
    }

    #[test]
    fn a_conjunction_of_narrowable_comparisons_is_narrowed_in_full(
        tests in prop::collection::vec(arb_test(), 2..6),
        user in arb_user()
    ) {
        // Each conjunct that narrows agrees with the comparison it came from, for every user.
        let filter = Filter { expr: Expr::all(tests.into_iter().map(Expr::Test).collect()) };
        for (conjunct, narrow) in filter.expr.conjuncts().iter().zip(filter.narrowing()) {
            if let Some(narrow) = narrow {
                prop_assert_eq!(narrow_holds(&narrow, &user), conjunct.matches(&user));
            }
        }
    }
}
