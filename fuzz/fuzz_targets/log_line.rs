#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cascade_host::fuzz::log_line(data));
