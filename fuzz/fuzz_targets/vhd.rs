#![no_main]
//! Fuzzes the vhd entry point of the format layer.

use libfuzzer_sys::fuzz_target;
#[allow(unused_imports)]
use vmrepo_format::Format;

fuzz_target!(|data: &[u8]| {
    vmrepo_fuzz::exercise(data, Some(Format::Vhd));
});
