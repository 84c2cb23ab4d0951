#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sansh::testing::fuzz::private_key_parse(data));
