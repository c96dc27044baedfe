#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    assert!(nexar_proto::fuzz_checks::check("tagged_start", data));
});
