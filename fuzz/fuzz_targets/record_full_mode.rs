//! Sealed records in full-request mode: as `record_header_mode`, with the `Full`
//! binding by default and Binary HTTP bodies (a sealed `FullRequest` must open and
//! decode to what was sealed). See `sessioncert_fuzz::records`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::records::{run, Input};

fuzz_target!(|input: Input| run(input, true));
