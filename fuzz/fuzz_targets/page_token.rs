//! The page token decoder on arbitrary text, as a token and as the text inside a sealed one:
//! nothing panics, and a token it accepts encodes back to one that decodes to the same
//! position.

#![no_main]

use libfuzzer_sys::fuzz_target;
use user_service::grpc::page_token::{Filters, TokenSeal, decode, encode};

fuzz_target!(|text: &str| {
    let seal = TokenSeal::new(&[7; 32]);
    let filters = Filters {
        status: None,
        role: None,
    };
    for token in [text.to_owned(), seal.seal(text)] {
        if let Ok(cursor) = decode(&seal, &token, filters) {
            assert_eq!(decode(&seal, &encode(&seal, cursor, filters), filters), Ok(cursor));
        }
    }
});
