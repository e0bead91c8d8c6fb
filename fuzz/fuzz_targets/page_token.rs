//! The page token decoder on arbitrary text: nothing panics, and a token it accepts encodes
//! back to one that decodes to the same position.

#![no_main]

use libfuzzer_sys::fuzz_target;
use user_service::grpc::page_token::{Filters, decode, encode};

fuzz_target!(|token: &str| {
    let filters = Filters {
        status: None,
        role: None,
    };
    if let Ok(cursor) = decode(token, filters) {
        assert_eq!(decode(&encode(cursor, filters), filters), Ok(cursor));
    }
});
