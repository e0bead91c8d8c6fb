//! userctl's import and sync parsers, CSV and JSON Lines, on arbitrary input: nothing
//! panics; a bad row is a row's error, never the process's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use user_service::cli::fuzzing::{import_csv, import_json_line, sync_json_line};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        for line in text.lines() {
            let _ = import_json_line(line);
            let _ = sync_json_line(line);
        }
    }
    let _ = import_csv(bytes);
});
