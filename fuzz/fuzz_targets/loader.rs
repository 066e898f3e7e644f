//! The loader must never panic: any bytes, read as a YAML file, give diagnostics at worst.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mesh_config::Loader::new().check_str("fuzz.yaml", text);
    }
});
