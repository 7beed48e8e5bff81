//! The config loader (the `config` crate, `config/src/lib.rs`): any text gives a config or a
//! report, never a panic; a rejected file always carries at least one error; printing the report
//! (what `maas-vip check` shows, with line, column and caret) never panics either.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(Path::new("fuzz.toml"), text.to_owned()) {
        Ok((_config, report)) => {
            assert!(!report.has_errors());
            let _ = report.to_string();
        }
        Err(report) => {
            assert!(report.errors() > 0, "rejected without an error");
            let _ = report.to_string();
        }
    }
});
