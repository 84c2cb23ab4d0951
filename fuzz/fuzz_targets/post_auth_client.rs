#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sansh::testing::fuzz::post_auth_client(data));
